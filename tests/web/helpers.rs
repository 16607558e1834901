//! `TestApp`: the real application on a random port, a cookie-keeping client that
//! does not follow redirects, and helpers to sign up, post forms with the CSRF token
//! and check the ledger invariant.

use std::sync::Mutex;

use billfold::config::{Config, LogFormat};
use billfold::startup::Application;
use reqwest::StatusCode;
use scraper::{Html, Selector};
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

pub const WEBHOOK_SECRET: &str = "whsec_test_billfold_0123456789abcdef";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub db: PgPool,
    pub client: reqwest::Client,
    csrf: Mutex<Option<String>>,
}

impl TestApp {
    pub async fn spawn(db: PgPool) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            billfold::telemetry::init(LogFormat::Text);
        }
        let data_dir = std::env::temp_dir().join(format!("billfold-test-{}", Uuid::new_v4()));
        let config = Config {
            database_url: None,
            bind: "127.0.0.1:0".parse().unwrap(),
            base_url: None,
            data_dir,
            stripe_secret_key: None,
            stripe_api_base: None,
            stripe_webhook_secret: Some(SecretString::from(WEBHOOK_SECRET)),
            session_secure: false,
            log_format: LogFormat::Text,
            sandbox_retry_base: std::time::Duration::from_millis(50),
        };
        let app = Application::build_with_pool(config, db.clone())
            .await
            .expect("build app");
        let base = app.base_url().to_owned();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            db,
            client: client(),
            csrf: Mutex::new(None),
        }
    }

    /// Another browser on the same app: no cookies, no session.
    pub fn visitor(&self) -> TestApp {
        TestApp {
            base: self.base.clone(),
            db: self.db.clone(),
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

    /// The session's CSRF token (fetched once from a page's form).
    pub async fn csrf(&self) -> String {
        if let Some(t) = self.csrf.lock().unwrap().clone() {
            return t;
        }
        let (_, html) = self.get_html("/login").await;
        let token = attr(&html, "input[name=csrf_token]", "value").expect("csrf token on /login");
        *self.csrf.lock().unwrap() = Some(token.clone());
        token
    }

    /// POSTs a form with the CSRF token added.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf().await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &token));
        self.client
            .post(self.url(path))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Signs up through the form; the client is then signed in.
    pub async fn sign_up(&self, email: &str) -> Uuid {
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

    pub async fn workspace_of(&self, email: &str) -> Uuid {
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
    pub async fn assert_ledger_consistent(&self, workspace_id: Uuid) -> (i64, i64) {
        match billfold::ledger::check_balance(&self.db, workspace_id)
            .await
            .unwrap()
        {
            Ok(b) => {
                assert!(b.plan >= 0 && b.purchased >= 0, "negative balance {b:?}");
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
