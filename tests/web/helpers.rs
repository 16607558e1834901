//! `TestApp`: the real application on a random port, a cookie-keeping client that
//! does not follow redirects, and helpers to sign up, post forms with the CSRF token
//! and check the ledger invariant.

use std::sync::Mutex;

use billfold::config::{Config, LogFormat};
use billfold::ids::WorkspaceId;
use billfold::startup::Application;
use reqwest::StatusCode;
use scraper::{Html, Selector};
use secrecy::SecretString;
use sqlx::PgPool;

pub const WEBHOOK_SECRET: &str = "whsec_test_billfold_0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    /// The test database as its owner (a superuser): for arranging and asserting.
    pub db: PgPool,
    /// The pool the app itself uses (the restricted `billfold_app` role).
    pub app_db: PgPool,
    pub client: reqwest::Client,
    csrf: Mutex<Option<String>>,
}

/// The configuration every test app starts from (sandbox mode, fast retries).
pub fn test_config() -> Config {
    Config {
        // Only used to derive the app role's password from the owner's.
        database_url: std::env::var("DATABASE_URL").ok().map(SecretString::from),
        database_app_url: None,
        bind: "127.0.0.1:0".parse().unwrap(),
        base_url: None,
        data_dir: std::path::PathBuf::from(".billfold"),
        stripe_secret_key: None,
        stripe_sandbox: true,
        stripe_api_base: None,
        stripe_webhook_secret: Some(SecretString::from(WEBHOOK_SECRET)),
        session_secure: false,
        log_format: LogFormat::Text,
        sandbox_retry_base: std::time::Duration::from_millis(50),
        trusted_proxies: 0,
        signups_per_address_per_hour: 1_000,
        job_workers: 4,
        job_retry_base: std::time::Duration::from_millis(50),
        password_hash_concurrency: 4,
        metering_timeout: std::time::Duration::from_secs(10),
        session_lifetime: std::time::Duration::from_secs(30 * 86_400),
        admin_approval_above_credits: 10_000,
        sudo_window: std::time::Duration::from_secs(15 * 60),
    }
}

impl TestApp {
    /// The app on `db` (the test database, owned by its superuser) with
    /// [`test_config`]; returns once it is ready (the sandbox catalog on sale).
    pub async fn spawn(db: PgPool) -> TestApp {
        Self::spawn_with(db, test_config()).await
    }

    /// Like [`TestApp::spawn`] with another configuration.
    pub async fn spawn_with(db: PgPool, config: Config) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            billfold::telemetry::init(LogFormat::Text);
        }
        let app = Application::build_with_pool(config, db.clone())
            .await
            .expect("build app");
        let base = app.base_url().to_owned();
        let app_db = app.db().clone();
        let ready = app.ready_flag();
        tokio::spawn(app.run_until_stopped());
        for _ in 0..400 {
            if ready.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(
            ready.load(std::sync::atomic::Ordering::SeqCst),
            "app never became ready"
        );
        TestApp {
            base,
            db,
            app_db,
            client: client(),
            csrf: Mutex::new(None),
        }
    }

    /// Another browser on the same app: no cookies, no session.
    pub fn visitor(&self) -> TestApp {
        TestApp {
            base: self.base.clone(),
            db: self.db.clone(),
            app_db: self.app_db.clone(),
            client: client(),
            csrf: Mutex::new(None),
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET a page: status and parsed HTML.
    pub async fn get_html(&self, path: &str) -> (StatusCode, Html) {
        let res = self.get(path).await;
        let status = res.status();
        (status, Html::parse_document(&res.text().await.unwrap()))
    }

    /// The session's CSRF token (fetched once from a page's form: `/login` for a
    /// visitor, the dashboard once signed in).
    pub async fn csrf(&self) -> String {
        if let Some(t) = self.csrf.lock().unwrap().clone() {
            return t;
        }
        let mut token = None;
        for page in ["/login", "/dashboard"] {
            let (_, html) = self.get_html(page).await;
            token = attr(&html, "input[name=csrf_token]", "value");
            if token.is_some() {
                break;
            }
        }
        let token = token.expect("a csrf token on /login or /dashboard");
        *self.csrf.lock().unwrap() = Some(token.clone());
        token
    }

    /// POSTs a form with the CSRF token added. Signing in or up renews the token.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf().await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &token));
        let res = self
            .client
            .post(self.url(path))
            .form(&form)
            .send()
            .await
            .unwrap();
        if matches!(path, "/login" | "/signup" | "/logout") && res.status() == StatusCode::SEE_OTHER
        {
            *self.csrf.lock().unwrap() = None;
        }
        res
    }

    /// Signs up through the form; the client is then signed in.
    pub async fn sign_up(&self, email: &str) -> WorkspaceId {
        let res = self
            .post_form("/signup", &[("email", email), ("password", PASSWORD)])
            .await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "sign-up failed: {}",
            res.text().await.unwrap()
        );
        self.workspace_of(email).await
    }

    pub async fn workspace_of(&self, email: &str) -> WorkspaceId {
        sqlx::query_scalar(
            "select m.workspace_id from memberships m join users u using (user_id) where u.email = $1",
        )
        .bind(email)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Creates an API key through the settings page and returns the key shown once.
    pub async fn create_api_key(&self, name: &str) -> String {
        let res = self
            .post_form("/settings/api-keys", &[("name", name)])
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let html = Html::parse_document(&res.text().await.unwrap());
        text(&html, "#new-key-value").expect("new key shown")
    }

    pub async fn consume(
        &self,
        key: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let res = self
            .client
            .post(self.url("/api/v1/usage"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Asserts balance = Σ ledger for the workspace and returns (plan, purchased).
    pub async fn assert_ledger_consistent(&self, workspace_id: WorkspaceId) -> (i64, i64) {
        let mut conn = self.db.acquire().await.unwrap();
        match billfold::ledger::db::check_balance(&mut conn, workspace_id)
            .await
            .unwrap()
        {
            Ok(b) => {
                assert!(
                    b.plan >= 0 && b.purchased >= 0 && b.debt >= 0,
                    "negative balance {b:?}"
                );
                (b.plan, b.purchased)
            }
            Err((stored, summed)) => {
                panic!("balance {stored:?} differs from ledger sum {summed:?}")
            }
        }
    }

    /// A delivery of `body` to the webhook endpoint, signed now as Stripe would; a
    /// `'static` future so tests can spawn many at once.
    pub fn deliver_signed(
        &self,
        body: String,
    ) -> impl Future<Output = StatusCode> + Send + 'static {
        let sig = billfold::stripe::webhooks::sign(
            &body,
            &SecretString::from(WEBHOOK_SECRET),
            time::OffsetDateTime::now_utc().unix_timestamp(),
        );
        let (client, url) = (self.client.clone(), self.url("/webhooks/stripe"));
        async move {
            client
                .post(url)
                .header("stripe-signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    }

    /// Every Stripe event billfold stored, oldest first.
    pub async fn received_events(&self) -> Vec<serde_json::Value> {
        sqlx::query_scalar("select payload from stripe_events order by received_at")
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    /// Removes every plan's rate limit (tests that make many calls about something
    /// else).
    pub async fn lift_rate_limits(&self) {
        sqlx::query("update plans set rate_limit_per_min = null")
            .execute(&self.db)
            .await
            .unwrap();
    }

    /// The workspace's balance.
    /// The workspace's plan code.
    pub async fn plan_of(&self, ws: WorkspaceId) -> String {
        sqlx::query_scalar("select plan_code from workspaces where workspace_id = $1")
            .bind(ws)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn balance(&self, ws: WorkspaceId) -> billfold::ledger::Balance {
        let mut conn = self.db.acquire().await.unwrap();
        billfold::ledger::db::balance(&mut conn, ws).await.unwrap()
    }

    /// Waits (up to 10 s) until every sandbox event is delivered and every webhook job
    /// is done: webhook events applied.
    pub async fn settle(&self) {
        // One statement, so one snapshot: a delivery is marked succeeded only after
        // billfold committed its job, so no job can slip in between the two counts.
        const OPEN: &str = "select (select count(*) from sandbox_webhook_deliveries where status = 'pending')
                                  + (select count(*) from jobs where kind = 'stripe_event' and status in ('queued', 'running'))";
        for _ in 0..400 {
            if self.count(OPEN).await == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("jobs still open after 10 s");
    }
}

/// Polls `check` every 25 ms for up to 10 s until it is true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client with cookies and without redirects (tests assert on 303s).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn select<'a>(html: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    let sel = Selector::parse(css).unwrap();
    html.select(&sel).collect()
}

pub fn text(html: &Html, css: &str) -> Option<String> {
    select(html, css)
        .first()
        .map(|e| e.text().collect::<String>().trim().to_owned())
}

pub fn attr(html: &Html, css: &str, name: &str) -> Option<String> {
    select(html, css)
        .first()
        .and_then(|e| e.value().attr(name))
        .map(str::to_owned)
}

/// The statuses of spawned requests, in spawn order.
pub async fn statuses_of(
    calls: impl IntoIterator<Item = tokio::task::JoinHandle<StatusCode>>,
) -> Vec<StatusCode> {
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// How many of `statuses` are `status`.
pub fn how_many(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .expect("location header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// `1234` → `"1,234"` (as the pages print credits).
pub fn group(n: i64) -> String {
    billfold::money::format_credits(n)
}
