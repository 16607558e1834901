//! Tracing setup and `spawn_blocking` that keeps the current span.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`, quieter for
/// sqlx, tower-sessions and async-stripe's HTTP client). Safe to call
/// twice: the second call is ignored (tests).
pub fn init(format: LogFormat) {
    // async-stripe logs every non-2xx answer at WARN, including the 404s billfold
    // expects (a catalog lookup before the product exists); billfold logs the
    // failures that matter itself.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,tower_sessions=warn,stripe::hyper::client=error")
    });
    // Logs go to stderr so stdout stays for command output (`billfold db url`).
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs CPU-bound work (password hashing, chart rendering) off the async runtime,
/// inside the caller's span.
pub async fn spawn_blocking_with_tracing<F, R>(f: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await
}
