//! The embedded PostgreSQL against the machine's real server binaries: start, reuse by a
//! second handle, stop, restart on the same data, and concurrent starts.
//!
//! Each test skips (with a message) only when the binaries are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use billfold::embedded_pg::{EmbeddedPgError, EmbeddedPostgres};
use sqlx::{Connection as _, PgConnection};

/// A fresh directory under the system temp dir, mode 0755 so the `postgres` user can
/// traverse it when the tests run as root. Removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("billfold-{name}-{}", rand::random::<u64>()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the server, or `None` when the binaries are missing on this machine.
async fn start_or_skip(data_dir: &Path) -> Option<EmbeddedPostgres> {
    match EmbeddedPostgres::start(data_dir).await {
        Ok(pg) => Some(pg),
        Err(err @ EmbeddedPgError::BinariesNotFound) => {
            eprintln!("skipping embedded postgresql test: {err}");
            None
        }
        Err(err) => panic!("embedded postgresql did not start: {err:?}"),
    }
}

#[tokio::test]
async fn starts_reuses_stops_and_keeps_data() {
    let dir = TempDir::new("pg-lifecycle");
    let data_dir = dir.path().join(".billfold");
    let Some(pg) = start_or_skip(&data_dir).await else {
        return;
    };
    assert!(pg.started_here());
    let url = pg.database_url();
    assert!(url.starts_with("postgres://postgres:"), "{url}");
    // Loopback TCP needs the generated password; it is kept private in DATA_DIR.
    let password = std::fs::read_to_string(data_dir.join("pg.password")).unwrap();
    assert!(url.contains(&format!(":{password}@127.0.0.1:")), "{url}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.join("pg.password"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let without_password = url.replacen(&format!(":{password}@"), "@", 1);
    assert!(
        sqlx::PgConnection::connect(&without_password)
            .await
            .is_err(),
        "loopback connections without the password are refused"
    );
    assert!(url.ends_with("/billfold"), "{url}");
    assert!(
        data_dir.join("pg/log").exists(),
        "server log in DATA_DIR/pg/log"
    );

    let mut conn = PgConnection::connect(&url).await.unwrap();
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    sqlx::query("create table kept (note text not null)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("insert into kept (note) values ('still here')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    // A second process (or `billfold db url`) finds the running server.
    let second = EmbeddedPostgres::start(&data_dir).await.unwrap();
    assert_eq!(second.database_url(), url);
    assert!(!second.started_here());
    second.stop().await.unwrap();
    // Stopping a handle that did not start the server leaves it running.
    PgConnection::connect(&url)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    pg.stop().await.unwrap();
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "server still accepts connections after stop"
    );

    // The next start reuses the cluster, its data and (the port being free) its port.
    let again = EmbeddedPostgres::start(&data_dir).await.unwrap();
    assert!(again.started_here());
    assert_eq!(again.database_url(), url);
    let mut conn = PgConnection::connect(&again.database_url()).await.unwrap();
    let note: String = sqlx::query_scalar("select note from kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(note, "still here");
    conn.close().await.unwrap();
    again.stop().await.unwrap();
}

#[tokio::test]
async fn picks_a_new_port_when_the_remembered_one_is_busy() {
    let dir = TempDir::new("pg-port");
    let data_dir = dir.path().join(".billfold");
    let Some(pg) = start_or_skip(&data_dir).await else {
        return;
    };
    let url = pg.database_url();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(port, _)| port.parse().unwrap())
        .unwrap();
    pg.stop().await.unwrap();

    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let pg = EmbeddedPostgres::start(&data_dir).await.unwrap();
    assert_ne!(pg.database_url(), url);
    PgConnection::connect(&pg.database_url())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    drop(squatter);
    pg.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_starts_share_one_server() {
    let dir = TempDir::new("pg-race");
    let data_dir = dir.path().join(".billfold");
    let (a, b) = tokio::join!(
        EmbeddedPostgres::start(&data_dir),
        EmbeddedPostgres::start(&data_dir)
    );
    let (a, b) = match (a, b) {
        (Err(EmbeddedPgError::BinariesNotFound), _)
        | (_, Err(EmbeddedPgError::BinariesNotFound)) => {
            eprintln!("skipping embedded postgresql test: binaries not found");
            return;
        }
        (a, b) => (a.unwrap(), b.unwrap()),
    };
    assert_eq!(a.database_url(), b.database_url());
    assert!(
        a.started_here() ^ b.started_here(),
        "exactly one handle starts the server"
    );
    PgConnection::connect(&a.database_url())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
