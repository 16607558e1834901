//! The `billfold` binary's commands against a real database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use sqlx::PgPool;

fn command(db_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_billfold"));
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("DATA_DIR", std::env::temp_dir().join("billfold-cli-test"))
        .env("STRIPE_SANDBOX", "true")
        .env_remove("STRIPE_SECRET_KEY")
        .env_remove("DATABASE_APP_URL");
    cmd
}

/// Runs a command in sandbox mode.
fn billfold(db_url: &str, args: &[&str]) -> std::process::Output {
    command(db_url, args).output().expect("run billfold")
}

/// The URL of the database `#[sqlx::test]` made for this test.
async fn url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

#[sqlx::test]
async fn create_user_and_api_key_create_make_a_working_key(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = billfold(
        &url,
        &[
            "create-user",
            "--email",
            "Ops@Example.com",
            "--password",
            "a long enough password",
            "--staff",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created ops@example.com (staff)"
    );
    let granted: Vec<(String, String)> = sqlx::query_as(
        "select action, request_id from audit_events where action = 'user.staff_granted'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        granted,
        [(
            "user.staff_granted".to_owned(),
            "billfold command line".to_owned()
        )],
        "a staff grant from the command line is audited"
    );

    let out = billfold(
        &url,
        &[
            "create-user",
            "--email",
            "ops@example.com",
            "--password",
            "a long enough password",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: an account with this email already exists"
    );

    let out = billfold(
        &url,
        &[
            "api-key",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "CLI key",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("bf_"));
    let hash = billfold::api_keys::hash_key(&key);
    let outcome = billfold::ledger::db::consume(
        &mut pool.acquire().await.unwrap(),
        &billfold::ledger::Consumption {
            key_hash: &hash,
            feature: "manager.process",
            quantity: 5,
            idempotency_key: "cli",
            quality: billfold::ledger::Quality::Standard,
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcome,
            billfold::ledger::ConsumeOutcome::Charged { charged: 5, .. }
        ),
        "{outcome:?}"
    );

    let out = billfold(&url, &["db", "url"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), url);
}

#[sqlx::test]
async fn seed_demo_creates_the_demo_logins_once_with_a_consistent_ledger(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["seed-demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("customer@billfold.test"));
    let out = billfold(&url, &["seed-demo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo users exist already"));

    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        users,
        3 + 8,
        "the demo logins and the demo reseller's customers"
    );
    let workspaces: Vec<billfold::ids::WorkspaceId> =
        sqlx::query_scalar("select workspace_id from workspaces")
            .fetch_all(&pool)
            .await
            .unwrap();
    for ws in workspaces {
        let check = billfold::ledger::db::check_balance(&mut pool.acquire().await.unwrap(), ws)
            .await
            .unwrap();
        assert!(check.is_ok(), "{check:?}");
    }
    let usage: i64 = sqlx::query_scalar("select count(*) from usage_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(usage, 14, "two weeks of demo usage for the chart");
}

#[sqlx::test]
async fn seed_demo_gives_the_demo_reseller_a_living_dashboard(pool: PgPool) {
    use billfold::resellers::commissions::CommissionStatus;
    let url = url_of(&pool).await;
    let out = billfold(&url, &["seed-demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = pool.acquire().await.unwrap();
    let user = billfold::accounts::db::find_by_email(&mut conn, "reseller@billfold.test")
        .await
        .unwrap()
        .unwrap();
    let member = billfold::resellers::member_of(&mut conn, user.user_id)
        .await
        .unwrap()
        .expect("the demo reseller user belongs to a reseller");
    assert_eq!(member.role, billfold::resellers::ResellerRole::Owner);
    assert_eq!(member.reseller.referral_code, "acme");
    let reseller = member.reseller.reseller_id;

    let funnel = billfold::resellers::db::funnel(&mut conn, reseller, None)
        .await
        .unwrap();
    assert!(funnel.signups >= 6, "{funnel:?}");
    assert!(funnel.clicks > funnel.signups, "{funnel:?}");
    let months: i64 = sqlx::query_scalar(
        "select count(distinct date_trunc('month', attributed_at)) from workspaces
          where reseller_id = $1",
    )
    .bind(reseller)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(months >= 3, "attributed over months, not all today");

    let states: Vec<CommissionStatus> = sqlx::query_scalar(
        "select distinct status from commissions where reseller_id = $1 and kind = 'commission'",
    )
    .bind(reseller)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for state in [
        CommissionStatus::Pending,
        CommissionStatus::Approved,
        CommissionStatus::Paid,
    ] {
        assert!(
            states.contains(&state),
            "no {state:?} commission: {states:?}"
        );
    }
    let payouts = billfold::resellers::db::payouts(&mut conn, reseller, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(payouts.len(), 1, "{payouts:?}");
    assert!(payouts[0].is_paid() && payouts[0].reference.is_some());
    let clawbacks: i64 = sqlx::query_scalar(
        "select count(*) from commissions
          where reseller_id = $1 and kind = 'reversal' and amount_minor < 0
            and status = 'approved' and payout_id is null",
    )
    .bind(reseller)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(
        clawbacks >= 1,
        "a refund's reversal waits for the next payout"
    );

    let workspaces: Vec<billfold::ids::WorkspaceId> =
        sqlx::query_scalar("select workspace_id from workspaces")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    for ws in workspaces {
        let check = billfold::ledger::db::check_balance(&mut conn, ws)
            .await
            .unwrap();
        assert!(check.is_ok(), "{check:?}");
    }
}

#[sqlx::test]
async fn seed_demo_refuses_outside_sandbox_mode_with_one_clear_line(pool: PgPool) {
    let url = url_of(&pool).await;
    let live = command(&url, &["seed-demo"])
        .env_remove("STRIPE_SANDBOX")
        .env("STRIPE_SECRET_KEY", "sk_live_x")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_x")
        .output()
        .unwrap();
    let unconfigured = command(&url, &["seed-demo"])
        .env_remove("STRIPE_SANDBOX")
        .output()
        .unwrap();
    for out in [live, unconfigured] {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("STRIPE_SANDBOX=true"), "{stderr}");
        assert!(out.stdout.is_empty(), "no logins printed");
    }
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0, "no demo users beside a real Stripe key");
}

#[cfg(feature = "sandbox")]
#[sqlx::test]
async fn stripe_sync_runs_against_the_in_process_sandbox_and_is_idempotent(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = billfold(&url, &["stripe", "sync"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(first.lines().count(), 8, "{first}");
    assert!(first.lines().all(|l| l.ends_with(" created")), "{first}");
    assert!(first.contains("billfold_plan_pro_monthly"));

    let out = billfold(&url, &["stripe", "sync"]);
    let second = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        second.lines().all(|l| l.ends_with(" unchanged")),
        "{second}"
    );
}

#[cfg(feature = "sandbox")]
#[sqlx::test]
async fn sandbox_advance_moves_the_sandbox_clock(pool: PgPool) {
    let url = url_of(&pool).await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = billfold(&url, &["sandbox", "advance", "--days", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let shown = line.strip_prefix("sandbox time is now ").expect(&line);
    let now =
        time::OffsetDateTime::parse(shown, &time::format_description::well_known::Rfc3339).unwrap();
    let moved = now.unix_timestamp() - before;
    assert!(
        (3 * 86_400..3 * 86_400 + 60).contains(&moved),
        "moved {moved} s"
    );
    let out = billfold(&url, &["sandbox", "advance", "--days=-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--days must be from 0 to 3650"));
}

#[sqlx::test]
async fn serve_without_stripe_or_the_sandbox_refuses_with_one_clear_line(pool: PgPool) {
    let url = url_of(&pool).await;
    let out = command(&url, &["serve"])
        .env_remove("STRIPE_SANDBOX")
        .env("BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("STRIPE_SANDBOX=true"), "{stderr}");
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    // `#[sqlx::test]` migrated the database: the table is there, and stays empty.
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0, "no demo users without the sandbox");

    let out = command(&url, &["serve"])
        .env("STRIPE_SECRET_KEY", "sk_test_x")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a key and the sandbox together are refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("STRIPE_SANDBOX"));
}

#[sqlx::test]
async fn the_worker_runs_the_background_jobs_alone(pool: PgPool) {
    let url = url_of(&pool).await;
    assert!(
        billfold(
            &url,
            &[
                "create-user",
                "--email",
                "ada@example.com",
                "--password",
                "a long enough password"
            ]
        )
        .status
        .success()
    );
    // Ada signed up a month and a day ago and spent 30 of her free credits.
    let ws: billfold::ids::WorkspaceId = sqlx::query_scalar("select workspace_id from workspaces")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("update workspaces set created_at = now() - interval '1 month 1 day'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("update allowance_periods set period_start = now() - interval '1 month 1 day', period_end = now() - interval '1 day'")
        .execute(&mut *tx)
        .await
        .unwrap();
    billfold::ledger::reset_plan_credits(&mut tx, ws, 70, "spent", "test:spent")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    struct Worker(std::process::Child);
    impl Drop for Worker {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut worker = Worker(command(&url, &["worker"]).spawn().unwrap());
    // A debug build starting, migrating and running its first job on a loaded machine
    // can take a while: wait generously, and not a moment longer than needed.
    let started = std::time::Instant::now();
    let mut plan = 0_i64;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        plan = sqlx::query_scalar("select plan_credits from balances")
            .fetch_one(&pool)
            .await
            .unwrap();
        if plan == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(plan, 100, "the worker opened the new free month");
    // SIGTERM: the worker finishes and exits cleanly.
    Command::new("kill")
        .arg(worker.0.id().to_string())
        .status()
        .unwrap();
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[sqlx::test]
async fn a_burst_of_two_hundred_logins_keeps_memory_bounded_and_answers_busy_not_500(pool: PgPool) {
    use std::io::BufRead;
    let url = url_of(&pool).await;
    let mut server = command(&url, &["serve"])
        .env("BIND", "127.0.0.1:0")
        .env("TRUSTED_PROXIES", "1")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = server.stdout.take().unwrap();
    let server = Kill(server);
    // Read the banner on a thread that keeps draining stdout (a closed pipe would make
    // the server's next print fail).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(base) = line.trim().strip_prefix("billfold is running at ") {
                let _ = tx.send(base.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the banner");
    let before = peak_rss_kib(server.0.id());

    let logins = (0..200).map(|i| {
        let base = base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let from = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            let html = client
                .get(format!("{base}/login"))
                .header("x-forwarded-for", &from)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let token = html
                .split("name=\"csrf_token\" value=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_owned();
            let email = format!("nobody{i}@example.com");
            let res = client
                .post(format!("{base}/login"))
                .header("x-forwarded-for", &from)
                .form(&[
                    ("email", email.as_str()),
                    ("password", "not the password"),
                    ("csrf_token", &token),
                ])
                .send()
                .await
                .unwrap();
            (res.status(), res.headers().contains_key("retry-after"))
        })
    });
    let answers: Vec<(reqwest::StatusCode, bool)> = futures_util::future::join_all(logins)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let peak = peak_rss_kib(server.0.id());
    eprintln!(
        "peak RSS: {} MiB before, {} MiB after 200 logins",
        before / 1024,
        peak / 1024
    );
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(
        answers
            .iter()
            .all(|(s, retry)| *s == reqwest::StatusCode::UNPROCESSABLE_ENTITY
                || (*s == reqwest::StatusCode::SERVICE_UNAVAILABLE && *retry)),
        "wrong password (422) or busy with Retry-After (503): {answers:?}"
    );
}

/// `billfold serve` started by [`serve_logged`].
struct Serving {
    child: std::process::Child,
    /// The base URL, once the banner prints.
    banner: std::sync::mpsc::Receiver<String>,
    /// Each line of stderr as it comes.
    log_lines: std::sync::mpsc::Receiver<String>,
    /// All of stderr, once the process ends.
    logs: Option<std::thread::JoinHandle<String>>,
}

impl Serving {
    /// Stops the server with SIGTERM: its exit status and all it logged.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let status = sigterm(&mut self.child);
        let logs = self
            .logs
            .take()
            .map(|l| l.join().unwrap())
            .unwrap_or_default();
        (status, logs)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // a failed test leaves no server behind (a no-op once stopped)
        if self.logs.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `billfold serve` in sandbox mode with the default log filter.
fn serve_logged(url: &str) -> Serving {
    use std::io::BufRead;
    let mut child = command(url, &["serve"])
        .env("BIND", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, log_lines) = std::sync::mpsc::channel();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            all.push_str(&line);
            all.push('\n');
            let _ = line_tx.send(line);
        }
        all
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, banner) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(base) = line.trim().strip_prefix("billfold is running at ") {
                let _ = tx.send(base.to_owned());
            }
        }
    });
    Serving {
        child,
        banner,
        log_lines,
        logs: Some(logs),
    }
}

/// Asserts that `logs` hold no warning, error or panic.
fn assert_quiet(logs: &str, when: &str) {
    for line in logs.lines() {
        assert!(
            !line.contains("WARN") && !line.contains("ERROR") && !line.contains("panicked"),
            "{when}, logged: {line}\n\nall:\n{logs}"
        );
    }
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap()
}

#[sqlx::test]
async fn a_clean_first_start_is_ready_with_the_catalog_on_sale_and_logs_no_warning(pool: PgPool) {
    let url = url_of(&pool).await;
    let mut serving = serve_logged(&url);
    let base = serving
        .banner
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the banner");
    // Ready when the banner is out: /readyz answers and every paid plan has a price.
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    let unsold: i64 = sqlx::query_scalar(
        "select count(*) from plans where monthly_price_minor > 0 and stripe_price_id is null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unsold, 0, "the catalog is on sale before the banner");
    let (status, logs) = serving.stop();
    assert!(status.success(), "{status:?}\n\nlogs:\n{logs}");
    assert_quiet(&logs, "a clean start");
}

#[sqlx::test]
async fn stopping_the_server_while_it_starts_is_quiet(pool: PgPool) {
    let url = url_of(&pool).await;
    let mut serving = serve_logged(&url);
    // "listening" comes once SIGTERM is handled and before the sandbox catalog is put
    // on sale (which the banner waits for): stop it there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let line = serving
            .log_lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("a \"listening\" log line");
        if line.contains(" listening") {
            break;
        }
    }
    let (status, logs) = serving.stop();
    assert!(status.success(), "{status:?}\n\nlogs:\n{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert_quiet(&logs, "stopped while starting");
}

/// Asserts a command succeeded; returns its stdout.
fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a command failed with exit code 1 and one line on stderr; returns the line.
fn failed_with_one_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[sqlx::test]
async fn resellers_create_makes_a_reseller_owned_by_an_existing_user(pool: PgPool) {
    let url = url_of(&pool).await;
    succeeded(&billfold(
        &url,
        &[
            "create-user",
            "--email",
            "owner@example.com",
            "--password",
            "a long enough password",
        ],
    ));

    let out = billfold(
        &url,
        &[
            "resellers",
            "create",
            "--name",
            "Acme Partners",
            "--code",
            "acme",
            "--rate-bps",
            "2000",
            "--hold-days",
            "14",
            "--owner-email",
            "Owner@Example.com",
        ],
    );
    assert_eq!(succeeded(&out).trim(), "/r/acme");
    let (rate, hold, role): (i32, i32, String) = sqlx::query_as(
        "select r.commission_rate_bps, r.hold_days, m.role::text
           from resellers r join reseller_members m using (reseller_id)
           join users u using (user_id)
          where r.referral_code = 'acme' and u.email = 'owner@example.com'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rate, hold, role.as_str()), (2000, 14, "owner"));

    let create = |code: &'static str, owner: &'static str| {
        let mut args = vec![
            "resellers",
            "create",
            "--name",
            "Other",
            "--code",
            code,
            "--rate-bps",
            "1000",
        ];
        if !owner.is_empty() {
            args.extend(["--owner-email", owner]);
        }
        billfold(&url, &args)
    };
    assert_eq!(
        failed_with_one_line(&create("other", "nobody@example.com")),
        "error: no user with email nobody@example.com"
    );
    assert_eq!(
        failed_with_one_line(&create("acme", "")),
        "error: a reseller with code acme exists already"
    );
    assert!(failed_with_one_line(&create("a/b", "")).contains("--code"));
    assert!(
        failed_with_one_line(&create("other", "owner@example.com"))
            .contains("already belongs to reseller acme")
    );
    let resellers: i64 = sqlx::query_scalar("select count(*) from resellers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(resellers, 1, "a refused creation leaves nothing behind");
}

/// A reseller `acme` (20 %) whose one customer paid €400 forty days ago: €80 of
/// commission past its 30-day hold, not approved yet.
async fn reseller_with_a_commission_due(pool: &PgPool, url: &str) {
    succeeded(&billfold(
        url,
        &[
            "create-user",
            "--email",
            "ada@example.com",
            "--password",
            "a long enough password",
        ],
    ));
    succeeded(&billfold(
        url,
        &[
            "resellers",
            "create",
            "--name",
            "Acme Partners",
            "--code",
            "acme",
            "--rate-bps",
            "2000",
        ],
    ));
    let (ws, reseller): (billfold::ids::WorkspaceId, billfold::ids::ResellerId) =
        sqlx::query_as("select w.workspace_id, r.reseller_id from workspaces w, resellers r")
            .fetch_one(pool)
            .await
            .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(
        billfold::resellers::attribute(
            &mut tx,
            ws,
            reseller,
            billfold::resellers::AttributionChannel::Admin
        )
        .await
        .unwrap()
    );
    let earned = billfold::resellers::commissions::record_payment(
        &mut tx,
        &billfold::resellers::commissions::Payment {
            source: billfold::resellers::commissions::Source::Invoice,
            source_id: "in_cli_1",
            payment_intent_id: None,
            workspace_id: ws,
            amount_paid: 40_000,
            tax: 0,
            currency: "eur",
            paid_at: time::OffsetDateTime::now_utc() - time::Duration::days(40),
        },
    )
    .await
    .unwrap();
    assert!(earned.is_some());
    tx.commit().await.unwrap();
}

#[sqlx::test]
async fn payouts_draft_then_mark_paid_is_idempotent_and_an_unknown_payout_is_one_line(
    pool: PgPool,
) {
    let url = url_of(&pool).await;
    reseller_with_a_commission_due(&pool, &url).await;

    let drafted = succeeded(&billfold(&url, &["payouts", "draft"]));
    assert!(
        drafted.starts_with("1 commission(s) approved as of "),
        "{drafted}"
    );
    let line = drafted
        .lines()
        .find_map(|l| l.strip_prefix("drafted "))
        .expect(&drafted)
        .to_owned();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[1..5], ["acme", "eur", "€80.00", "draft"], "{line}");
    assert_eq!(fields[6], "-", "no reference before it is paid");
    let id = fields[0].to_owned();
    let again = succeeded(&billfold(&url, &["payouts", "draft"]));
    assert!(again.contains("no payout due"), "{again}");

    let listed = succeeded(&billfold(&url, &["payouts", "list", "--reseller", "acme"]));
    assert_eq!(listed.trim(), line);
    assert_eq!(
        failed_with_one_line(&billfold(&url, &["payouts", "list", "--reseller", "nope"])),
        "error: no reseller with code nope"
    );

    let mark = |id: &str, reference: &str| {
        billfold(
            &url,
            &["payouts", "mark-paid", id, "--reference", reference],
        )
    };
    assert!(failed_with_one_line(&mark(&id, " ")).contains("reference"));
    assert_eq!(succeeded(&mark(&id, "SEPA-2026-12")).trim(), "marked paid");
    assert_eq!(
        succeeded(&mark(&id, "SEPA-OTHER")).trim(),
        "already paid with reference SEPA-2026-12"
    );
    let (status, reference): (String, String) =
        sqlx::query_as("select status::text, reference from payouts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reference.as_str()),
        ("paid", "SEPA-2026-12")
    );
    let unpaid: i64 = sqlx::query_scalar("select count(*) from commissions where status <> 'paid'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unpaid, 0, "its commissions are paid with it");
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_events where action = 'payout.paid'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 1, "marked paid once, audited once");

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        failed_with_one_line(&mark(&unknown, "SEPA-1")),
        format!("error: no payout {unknown}")
    );
    assert!(failed_with_one_line(&mark("not-an-id", "SEPA-1")).contains("not a payout id"));
}

#[sqlx::test]
async fn payouts_csv_writes_the_payout_with_its_header_and_total(pool: PgPool) {
    let url = url_of(&pool).await;
    reseller_with_a_commission_due(&pool, &url).await;
    succeeded(&billfold(&url, &["payouts", "draft"]));
    let id: billfold::ids::PayoutId = sqlx::query_scalar("select payout_id from payouts")
        .fetch_one(&pool)
        .await
        .unwrap();

    let csv = succeeded(&billfold(&url, &["payouts", "csv", &id.to_string()]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "commission_id,kind,customer,source,source_id,earned_at,approved_after,payment_net_minor,rate_bps,amount_minor,currency,payout_id,payout_reference"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].contains(",in_cli_1,"), "{csv}");
    assert_eq!(lines[2], format!("total,,,,,,,,,8000,eur,{id},"));

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        failed_with_one_line(&billfold(&url, &["payouts", "csv", &unknown])),
        format!("error: no payout {unknown}")
    );
}

#[sqlx::test]
async fn audit_verify_exits_zero_on_an_intact_log_and_names_the_first_bad_event(pool: PgPool) {
    let url = url_of(&pool).await;
    succeeded(&billfold(&url, &["migrate"]));
    let mut conn = pool.acquire().await.unwrap();
    for action in ["auth.sign_in", "user.staff_granted", "auth.sign_out"] {
        billfold::audit::record(
            &mut conn,
            &billfold::audit::NewAuditEvent {
                action,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let out = succeeded(&billfold(&url, &["audit", "verify"]));
    assert!(out.contains("audit log intact: 3 events"), "{out}");

    for sql in [
        "alter table audit_events disable trigger user",
        "update audit_events set action = 'auth.sign_in' where seq = 2",
        "alter table audit_events enable trigger user",
    ] {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }
    let line = failed_with_one_line(&billfold(&url, &["audit", "verify"]));
    assert!(
        line.contains("audit log broken at event 2") && line.contains("changed"),
        "{line}"
    );
}
