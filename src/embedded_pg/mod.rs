//! Embedded PostgreSQL: the server billfold runs for itself when `DATABASE_URL` is unset
//! (DESIGN.md, "Embedded PostgreSQL default").
//!
//! Owns `DATA_DIR/pg` (the cluster, its `billfold.conf` with the remembered port, the
//! Unix socket and the server `log`) and the lock file `DATA_DIR/pg.lock`. It uses the
//! system's server binaries (`initdb`, `pg_ctl`, `postgres`) and never downloads
//! anything. The server listens on a loopback port, where it requires the superuser's
//! password (SCRAM; generated at `initdb`, kept in `DATA_DIR/pg.password`, mode 0600),
//! and on a Unix socket inside the cluster directory (mode 0700, trusted).
//!
//! When billfold runs as root, the server runs as the owner of an existing cluster, else
//! as the `postgres` system user, else as a `billfold-pg` system user created here,
//! because `initdb` and `postgres` refuse to run as root.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use tokio::process::Command;

/// Superuser created by `initdb`; the URL names it.
const SUPERUSER: &str = "postgres";
/// Database created for billfold on first start.
const DATABASE: &str = "billfold";
/// Cluster directory, relative to `DATA_DIR`.
const CLUSTER_DIR: &str = "pg";
/// `initdb` works here and the result is renamed to [`CLUSTER_DIR`] when complete,
/// so an interrupted init never leaves a half-made cluster behind.
const INIT_DIR: &str = "pg.init";
/// The superuser's password, relative to `DATA_DIR` (mode 0600).
const PASSWORD_FILE: &str = "pg.password";
/// Lock file, relative to `DATA_DIR`, held around init and start.
const LOCK_FILE: &str = "pg.lock";
/// billfold's settings for the cluster (port, listen address, socket directory),
/// included from `postgresql.conf` and rewritten before each start.
const CONF_FILE: &str = "billfold.conf";
/// Server log inside the cluster directory (`pg_ctl -l`).
const LOG_FILE: &str = "log";
/// The log is moved to `log.1` before a start once it is larger than this.
const LOG_ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// System user created to run the server when running as root and `postgres` is absent.
const FALLBACK_USER: &str = "billfold-pg";
/// Where Debian and Ubuntu install versioned server binaries.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// How long `pg_ctl` waits for start and stop, and how long we wait for connections.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest Unix socket directory: `sun_path` holds 107 bytes plus NUL, and postgres
/// appends `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 107 - "/.s.PGSQL.65535".len();

/// Errors from finding, initialising, starting or stopping the embedded server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    /// No directory on `PATH` or under `/usr/lib/postgresql/*/bin` has `initdb`,
    /// `pg_ctl` and `postgres`.
    #[error(
        "postgresql server binaries (initdb, pg_ctl, postgres) not found on PATH or in \
         /usr/lib/postgresql/*/bin: install them (Debian: `apt-get install postgresql`) \
         or set DATABASE_URL to use another postgresql server"
    )]
    BinariesNotFound,
    /// The existing cluster was made by a major version whose binaries are not installed.
    #[error(
        "{path} holds a postgresql {version} cluster but no postgresql {version} server \
         binaries were found: install them (Debian: `apt-get install postgresql-{version}`) \
         or set DATABASE_URL",
        path = cluster.display()
    )]
    VersionMismatch {
        /// The cluster directory.
        cluster: PathBuf,
        /// Its `PG_VERSION`.
        version: String,
    },
    /// A file system operation in the data directory failed.
    #[error("could not {action} {path}", path = path.display())]
    Io {
        /// What was attempted, e.g. "create directory".
        action: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program could not be run at all.
    #[error("could not run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program failed; `output` is the end of what it printed.
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        /// The program and its subcommand, e.g. "pg_ctl start".
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stderr and stdout, joined with " | ".
        output: String,
    },
    /// The server did not start; `log_tail` is the end of the server log.
    #[error("postgresql did not start (see {log}): {log_tail}", log = log.display())]
    StartFailed {
        /// The server log file.
        log: PathBuf,
        /// Its last lines, joined with " | ".
        log_tail: String,
    },
    /// Running as root, and no system user could be found or created to run the server.
    #[error("running as root, but no system user to run postgresql as: {0}")]
    NoServerUser(String),
    /// The server did not accept connections in time.
    #[error("could not connect to the embedded postgresql on port {port}")]
    Connect {
        /// The server's port.
        port: u16,
        /// The last connection error.
        #[source]
        source: sqlx::Error,
    },
    /// Checking for or creating database `billfold` failed.
    #[error("could not create database {DATABASE}")]
    CreateDatabase(#[source] sqlx::Error),
}

type Result<T, E = EmbeddedPgError> = std::result::Result<T, E>;

/// A handle on the embedded server running from `DATA_DIR/pg`.
///
/// Dropping the handle leaves the server running; call [`EmbeddedPostgres::stop`] on
/// shutdown. Only the handle that started the server stops it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster: PathBuf,
    /// `None` for clusters made before passwords were introduced (trust auth).
    password: Option<String>,
    port: u16,
    bin: PathBuf,
    server_user: Option<ServerUser>,
    started_here: bool,
}

impl EmbeddedPostgres {
    /// Finds the binaries, runs `initdb` once, starts the server unless it already runs
    /// (another billfold process or an earlier `billfold db url` may have started it),
    /// waits until it accepts connections, and creates database `billfold` if missing.
    ///
    /// `data_dir` is billfold's data directory (`DATA_DIR`, default `.billfold`); it is
    /// created if missing. Holds `DATA_DIR/pg.lock` throughout, so concurrent starts
    /// from several processes are safe.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        create_dir_all(data_dir)?;
        let data_dir = fs::canonicalize(data_dir).map_err(io_err("resolve", data_dir))?;
        let _lock = lock(data_dir.join(LOCK_FILE)).await?;

        let cluster = data_dir.join(CLUSTER_DIR);
        let cluster_version = read_pg_version(&cluster)?;
        let bin = find_binaries(&cluster, cluster_version.as_deref()).await?;
        let server_user = server_user(&cluster).await?;
        if let Some(user) = &server_user {
            make_traversable(&data_dir, user)?;
        }

        let password_file = data_dir.join(PASSWORD_FILE);
        let mut pg = Self {
            cluster,
            password: None,
            port: 0,
            bin,
            server_user,
            started_here: false,
        };
        if cluster_version.is_none() {
            pg.init(&data_dir).await?;
        }
        pg.password = fs::read_to_string(&password_file)
            .ok()
            .map(|p| p.trim().to_owned());
        if let Some(port) = pg.running_port().await? {
            tracing::info!(port, cluster = %pg.cluster.display(), "embedded postgresql already running");
            pg.port = port;
        } else {
            pg.start_server().await?;
            pg.started_here = true;
        }
        pg.create_database().await?;
        Ok(pg)
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/billfold` (no password for a
    /// cluster made before passwords, which trusts loopback).
    pub fn database_url(&self) -> String {
        match &self.password {
            Some(pw) => format!(
                "postgres://{SUPERUSER}:{pw}@127.0.0.1:{}/{DATABASE}",
                self.port
            ),
            None => format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port),
        }
    }

    /// Whether this handle started the server (only then [`EmbeddedPostgres::stop`]
    /// stops it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the server with `pg_ctl stop -m fast` (open connections are closed) if this
    /// handle started it; does nothing otherwise. Close the app's pool first.
    pub async fn stop(self) -> Result<()> {
        if !self.started_here {
            return Ok(());
        }
        tracing::info!(port = self.port, "stopping embedded postgresql");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.cluster)
            .args(["-m", "fast", "-w", "-s", "-t"])
            .arg(SERVER_TIMEOUT.as_secs().to_string());
        let Err(err) = run(cmd, "pg_ctl stop").await else {
            return Ok(());
        };
        // Someone else stopped it already: the goal is reached.
        if self.running_port().await?.is_none() {
            tracing::debug!(error = %err, "embedded postgresql was already stopped");
            return Ok(());
        }
        Err(err)
    }

    /// Runs `initdb` in `DATA_DIR/pg.init` and renames it to `DATA_DIR/pg` when done.
    async fn init(&self, data_dir: &Path) -> Result<()> {
        let tmp = data_dir.join(INIT_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_err("create directory", &tmp))?;
        self.chown(&tmp)?;

        tracing::info!(cluster = %self.cluster.display(), "initialising embedded postgresql");
        // The superuser's password: written for initdb (readable by the server user,
        // removed right after) and kept for billfold in DATA_DIR/pg.password (0600).
        let password = {
            use rand::RngCore as _;
            let mut bytes = [0u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        };
        let pwfile = data_dir.join("pg.pwfile");
        fs::write(&pwfile, &password).map_err(io_err("write", &pwfile))?;
        self.chown(&pwfile)?;
        let password_file = data_dir.join(PASSWORD_FILE);
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&password_file)
                .map_err(io_err("create", &password_file))?;
            f.write_all(password.as_bytes())
                .map_err(io_err("write", &password_file))?;
        }
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&tmp)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            // The socket lives in the 0700 cluster directory: only the server user
            // (and root) reach it. TCP (127.0.0.1 only) needs the password.
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        let result = run(cmd, "initdb").await;
        let _ = fs::remove_file(&pwfile);
        let output = result?;
        tracing::debug!(output = %String::from_utf8_lossy(&output.stdout), "initdb done");

        let conf = tmp.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err("open", &conf))?;
        writeln!(
            file,
            "\n# billfold: port, listen address and socket directory\ninclude_if_exists = '{CONF_FILE}'"
        )
        .map_err(io_err("write", &conf))?;

        fs::rename(&tmp, &self.cluster).map_err(io_err("rename to", &self.cluster))
    }

    /// The server's port if a server runs from this cluster, per `pg_ctl status` and
    /// `postmaster.pid`.
    async fn running_port(&self) -> Result<Option<u16>> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.cluster);
        let output = output(cmd, "pg_ctl status").await?;
        match output.status.code() {
            Some(0) => {}
            Some(3) => return Ok(None),
            _ => return Err(command_failed("pg_ctl status", &output)),
        }
        let pid_file = self.cluster.join("postmaster.pid");
        let pid = fs::read_to_string(&pid_file).map_err(io_err("read", &pid_file))?;
        // Line 4 of postmaster.pid is the port.
        match pid.lines().nth(3).and_then(|l| l.trim().parse().ok()) {
            Some(port) => Ok(Some(port)),
            None => Err(EmbeddedPgError::Io {
                action: "find the port in",
                path: pid_file,
                source: io::Error::new(io::ErrorKind::InvalidData, "no port on line 4"),
            }),
        }
    }

    /// Starts the server on the remembered port, or a new free one if that is busy.
    async fn start_server(&mut self) -> Result<()> {
        let conf = self.cluster.join(CONF_FILE);
        let mut remembered = fs::read_to_string(&conf)
            .ok()
            .and_then(|text| parse_port(&text));
        let log = self.cluster.join(LOG_FILE);
        rotate_log(&log)?;

        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = choose_port(remembered)?;
            self.write_conf(port)?;
            tracing::info!(port, cluster = %self.cluster.display(), "starting embedded postgresql");

            let mut cmd = self.command("pg_ctl");
            cmd.arg("start")
                .arg("-D")
                .arg(&self.cluster)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-s", "-t"])
                .arg(SERVER_TIMEOUT.as_secs().to_string())
                // Keep terminal signals (Ctrl-C) away from the server: the app stops it
                // after draining its own work.
                .process_group(0);
            let out = output(cmd, "pg_ctl start").await?;
            if out.status.success() {
                self.port = port;
                return Ok(());
            }
            // Another program may have taken the port between our check and the start.
            if attempt < ATTEMPTS && !port_is_free(port) {
                tracing::warn!(
                    port,
                    "port taken while starting embedded postgresql, retrying"
                );
                remembered = None;
                continue;
            }
            let log_tail = fs::read_to_string(&log)
                .map(|text| tail(&text))
                .unwrap_or_else(|_| tail(&String::from_utf8_lossy(&out.stderr)));
            return Err(EmbeddedPgError::StartFailed { log, log_tail });
        }
        Err(EmbeddedPgError::StartFailed {
            log,
            log_tail: String::from("no free port"),
        })
    }

    /// Writes `billfold.conf`: the port, loopback only, and the socket in the cluster
    /// directory when its path is short enough for a Unix socket.
    fn write_conf(&self, port: u16) -> Result<()> {
        let socket_dir = self.cluster.to_string_lossy();
        let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR_LEN {
            conf_string(&socket_dir)
        } else {
            tracing::warn!(
                cluster = %self.cluster.display(),
                "data directory path too long for a unix socket, using tcp only"
            );
            conf_string("")
        };
        let text = format!(
            "# written by billfold before each start of the embedded server; edits are lost\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {socket_dir}\n"
        );
        let path = self.cluster.join(CONF_FILE);
        fs::write(&path, text).map_err(io_err("write", &path))?;
        self.chown(&path)
    }

    /// Connects to the maintenance database, waiting until the server accepts
    /// connections, and creates database `billfold` unless it exists.
    async fn create_database(&self) -> Result<()> {
        let mut options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(SUPERUSER)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable);
        if let Some(pw) = &self.password {
            options = options.password(pw);
        }
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let mut conn = loop {
            match PgConnection::connect_with(&options).await {
                Ok(conn) => break conn,
                Err(err) if Instant::now() < deadline => {
                    tracing::debug!(error = %err, "waiting for embedded postgresql");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(EmbeddedPgError::Connect {
                        port: self.port,
                        source,
                    });
                }
            }
        };
        // Against the maintenance database: does billfold's database exist yet?
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await
                .map_err(EmbeddedPgError::CreateDatabase)?;
        if !exists {
            tracing::info!("creating database {DATABASE}");
            match sqlx::query(&format!("create database {DATABASE}"))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {}
                // 42P04 duplicate_database: a process without our lock won the race.
                Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {}
                Err(err) => return Err(EmbeddedPgError::CreateDatabase(err)),
            }
        }
        conn.close().await.ok();
        Ok(())
    }

    /// A command for one of the server binaries, run as the server user when root.
    fn command(&self, program: &str) -> Command {
        server_command(&self.bin.join(program), self.server_user.as_ref())
    }

    fn chown(&self, path: &Path) -> Result<()> {
        match &self.server_user {
            Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(io_err("change the owner of", path)),
            None => Ok(()),
        }
    }
}

/// The user the server runs as when billfold runs as root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
}

fn server_command(program: &Path, user: Option<&ServerUser>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir("/").stdin(Stdio::null());
    // libpq variables from the caller's environment must not redirect pg_ctl's checks.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    if let Some(user) = user {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

/// Takes the exclusive lock on `DATA_DIR/pg.lock`; released when the file is dropped.
async fn lock(path: PathBuf) -> Result<File> {
    let shown = path.clone();
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for another billfold process to start postgresql");
                file.lock().map_err(io_err("lock", &path))?;
            }
            Err(fs::TryLockError::Error(err)) => return Err(io_err("lock", &path)(err)),
        }
        Ok(file)
    })
    .await
    .map_err(|err| EmbeddedPgError::Io {
        action: "lock",
        path: shown,
        source: io::Error::other(err),
    })?
}

/// The cluster's `PG_VERSION` (major version), or `None` if there is no cluster yet.
fn read_pg_version(cluster: &Path) -> Result<Option<String>> {
    let path = cluster.join("PG_VERSION");
    match fs::read_to_string(&path) {
        Ok(version) => Ok(Some(version.trim().to_owned())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err("read", &path)(err)),
    }
}

/// The first binary directory with `initdb`, `pg_ctl` and `postgres`: `PATH` first, then
/// `/usr/lib/postgresql/*/bin` from the highest version down. For an existing cluster,
/// the first one of the cluster's major version.
async fn find_binaries(cluster: &Path, version: Option<&str>) -> Result<PathBuf> {
    let candidates = candidate_dirs(
        std::env::var_os("PATH").as_deref(),
        Path::new(VERSIONED_ROOT),
    );
    let Some(version) = version else {
        return candidates
            .into_iter()
            .next()
            .ok_or(EmbeddedPgError::BinariesNotFound);
    };
    if candidates.is_empty() {
        return Err(EmbeddedPgError::BinariesNotFound);
    }
    for dir in candidates {
        let mut cmd = server_command(&dir.join("postgres"), None);
        cmd.arg("--version");
        let out = output(cmd, "postgres --version").await?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && version_matches(&text, version) {
            return Ok(dir);
        }
        tracing::debug!(dir = %dir.display(), found = %text.trim(), wanted = version, "skipping postgresql binaries");
    }
    Err(EmbeddedPgError::VersionMismatch {
        cluster: cluster.to_owned(),
        version: version.to_owned(),
    })
}

/// Directories holding all three server binaries, in search order, without duplicates.
fn candidate_dirs(path_var: Option<&OsStr>, versioned_root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for dir in path_var.map(std::env::split_paths).into_iter().flatten() {
        // Follow symlinks (e.g. /usr/local/bin/initdb) to the real binary directory,
        // where pg_ctl finds the matching postgres.
        if let Ok(initdb) = fs::canonicalize(dir.join("initdb"))
            && let Some(real) = initdb.parent()
        {
            dirs.push(real.to_owned());
        }
    }
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));

    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let complete = ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|bin| is_executable(&dir.join(bin)));
        if complete && !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
}

/// Whether `postgres --version` output (`postgres (PostgreSQL) 15.14 (Debian …)`) is of
/// major version `major` (a `PG_VERSION` such as `15` or `9.6`).
fn version_matches(version_output: &str, major: &str) -> bool {
    version_output
        .split_whitespace()
        .nth(2)
        .is_some_and(|v| v == major || v.starts_with(&format!("{major}.")))
}

/// When running as root: the user the server runs as. `None` otherwise.
async fn server_user(cluster: &Path) -> Result<Option<ServerUser>> {
    if effective_uid().await? != 0 {
        return Ok(None);
    }
    // An existing cluster keeps its owner, even if a `postgres` user appeared since.
    if let Ok(meta) = fs::metadata(cluster)
        && meta.uid() != 0
    {
        let name = format!("uid {}", meta.uid());
        return Ok(Some(ServerUser {
            name,
            uid: meta.uid(),
            gid: meta.gid(),
        }));
    }
    if let Some(user) = lookup_user("postgres").await? {
        return Ok(Some(user));
    }
    if let Some(user) = lookup_user(FALLBACK_USER).await? {
        return Ok(Some(user));
    }
    tracing::info!("creating system user {FALLBACK_USER} to run the embedded postgresql");
    let mut cmd = Command::new("useradd");
    cmd.args([
        "--system",
        "--no-create-home",
        "--user-group",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "billfold embedded PostgreSQL",
        FALLBACK_USER,
    ]);
    let out = output(cmd, "useradd").await?;
    // Exit status 9: the user exists (another process created it meanwhile).
    if !out.status.success() && out.status.code() != Some(9) {
        return Err(EmbeddedPgError::NoServerUser(
            command_failed("useradd", &out).to_string(),
        ));
    }
    lookup_user(FALLBACK_USER).await?.map(Some).ok_or_else(|| {
        EmbeddedPgError::NoServerUser(format!("{FALLBACK_USER} missing after useradd"))
    })
}

async fn effective_uid() -> Result<u32> {
    // Linux: the second field of `Uid:` is the effective uid.
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(euid) = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok())
    {
        return Ok(euid);
    }
    let mut cmd = Command::new("id");
    cmd.arg("-u");
    let out = run(cmd, "id -u").await?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| command_failed("id -u", &out))
}

/// Looks `name` up with `getent passwd`; `None` if there is no such user.
async fn lookup_user(name: &str) -> Result<Option<ServerUser>> {
    let mut cmd = Command::new("getent");
    cmd.args(["passwd", name]);
    let out = output(cmd, "getent passwd").await?;
    match out.status.code() {
        Some(0) => {}
        // 2: no such key.
        Some(2) => return Ok(None),
        _ => return Err(command_failed("getent passwd", &out)),
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (
        fields.get(2).and_then(|f| f.parse().ok()),
        fields.get(3).and_then(|f| f.parse().ok()),
    ) {
        (Some(uid), Some(gid)) => Ok(Some(ServerUser {
            name: name.to_owned(),
            uid,
            gid,
        })),
        _ => Err(command_failed("getent passwd", &out)),
    }
}

/// Lets the server user reach the cluster: adds search (execute) permission for others
/// to `data_dir` and each parent the user cannot traverse (e.g. `/root`).
fn make_traversable(data_dir: &Path, user: &ServerUser) -> Result<()> {
    for dir in data_dir.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
        let mode = meta.mode();
        let can_search = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_search {
            tracing::warn!(
                dir = %dir.display(),
                user = %user.name,
                "adding search permission for others so the embedded postgresql can reach its data"
            );
            fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o001) & 0o7777))
                .map_err(io_err("add search permission to", dir))?;
        }
    }
    Ok(())
}

/// The remembered port if it is free, else a free port picked by the kernel.
fn choose_port(remembered: Option<u16>) -> Result<u16> {
    if let Some(port) = remembered {
        if port_is_free(port) {
            return Ok(port);
        }
        tracing::info!(port, "remembered port is busy, picking a new one");
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_err("bind a port on", Path::new("127.0.0.1")))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The `port = N` line of `billfold.conf`.
fn parse_port(conf: &str) -> Option<u16> {
    conf.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "port").then(|| value.trim().parse().ok())?
    })
}

/// A `postgresql.conf` string literal.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn rotate_log(log: &Path) -> Result<()> {
    if fs::metadata(log).is_ok_and(|meta| meta.len() > LOG_ROTATE_BYTES) {
        let old = log.with_extension("1");
        fs::rename(log, &old).map_err(io_err("rotate", log))?;
    }
    Ok(())
}

async fn output(mut cmd: Command, program: &str) -> Result<Output> {
    cmd.output().await.map_err(|source| EmbeddedPgError::Spawn {
        program: program.to_owned(),
        source,
    })
}

/// Runs `cmd` and fails unless it exits successfully.
async fn run(cmd: Command, program: &str) -> Result<Output> {
    let out = output(cmd, program).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(program, &out))
    }
}

fn command_failed(program: &str, out: &Output) -> EmbeddedPgError {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    EmbeddedPgError::CommandFailed {
        program: program.to_owned(),
        status: out.status,
        output: tail(&text),
    }
}

/// The last few non-empty lines of `text`, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedPgError {
    let path = path.to_owned();
    move |source| EmbeddedPgError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
// No clippy.toml `allow-unwrap-in-tests` yet; tests may unwrap.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_remembered_port() {
        let conf = "# comment\nport = 54321\nlisten_addresses = '127.0.0.1'\n";
        assert_eq!(parse_port(conf), Some(54321));
        assert_eq!(parse_port("listen_addresses = '127.0.0.1'\n"), None);
        assert_eq!(parse_port("port = lots\n"), None);
    }

    #[test]
    fn quotes_conf_strings() {
        assert_eq!(conf_string("/tmp/a'b\\c"), "'/tmp/a''b\\\\c'");
        assert_eq!(conf_string(""), "''");
    }

    #[test]
    fn matches_major_versions() {
        let v15 = "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n";
        assert!(version_matches(v15, "15"));
        assert!(!version_matches(v15, "1"));
        assert!(!version_matches(v15, "16"));
        assert!(version_matches("postgres (PostgreSQL) 9.6.24\n", "9.6"));
        assert!(!version_matches("postgres (PostgreSQL) 9.5.1\n", "9.6"));
    }

    #[test]
    fn tail_keeps_the_last_lines_on_one_line() {
        let text = (1..=20)
            .map(|i| format!("line {i}\n\n"))
            .collect::<String>();
        assert_eq!(
            tail(&text),
            "line 13 | line 14 | line 15 | line 16 | line 17 | line 18 | line 19 | line 20"
        );
    }

    #[test]
    fn missing_binaries_message_is_one_actionable_line() {
        let message = EmbeddedPgError::BinariesNotFound.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[tokio::test]
    async fn unknown_system_users_are_none() {
        let user = lookup_user("billfold-no-such-user").await.unwrap();
        assert!(user.is_none());
    }

    #[test]
    fn versioned_directories_come_highest_first() {
        let root = std::env::temp_dir().join(format!("billfold-pgbins-{}", rand::random::<u64>()));
        for version in ["9.6", "15", "13", "notaversion"] {
            let bin = root.join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for name in ["initdb", "pg_ctl", "postgres"] {
                fs::write(bin.join(name), "").unwrap();
                fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        // Incomplete: no postgres.
        fs::remove_file(root.join("13/bin/postgres")).unwrap();

        let dirs = candidate_dirs(None, &root);
        assert_eq!(dirs, vec![root.join("15/bin"), root.join("9.6/bin")]);

        // PATH comes first, and is not repeated.
        let path = std::env::join_paths([root.join("9.6/bin")]).unwrap();
        let dirs = candidate_dirs(Some(&path), &root);
        assert_eq!(dirs, vec![root.join("9.6/bin"), root.join("15/bin")]);
        fs::remove_dir_all(&root).unwrap();
    }
}
