//! The `billfold` binary: a shim over [`billfold::cli`].

fn main() -> std::process::ExitCode {
    billfold::cli::main()
}
