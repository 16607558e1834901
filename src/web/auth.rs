//! Sign-up, login and logout. axum-login over tower-sessions: `login` cycles the
//! session id (session fixation, OWASP Session Management Cheat Sheet); the session
//! auth hash is the password hash, so changing a password ends other sessions.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_login::{AuthUser, AuthnBackend};
use serde::Deserialize;
use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

use super::AppState;
use super::error::{AppError, Result};
use super::views::PageCtx;
use crate::accounts::{self, SignupError, User};

impl AuthUser for User {
    type Id = Uuid;

    fn id(&self) -> Uuid {
        self.user_id
    }

    fn session_auth_hash(&self) -> &[u8] {
        self.password_hash.as_bytes()
    }
}

/// axum-login backend over the `users` table.
#[derive(Debug, Clone)]
pub struct Backend {
    db: PgPool,
}

impl Backend {
    /// A backend reading users from `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

/// Email and password from the login form.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    /// As typed; normalised before lookup.
    pub email: String,
    /// As typed.
    pub password: String,
}

/// A database failure while authenticating.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(#[from] anyhow::Error);

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        Ok(accounts::authenticate(&self.db, &creds.email, &creds.password).await?)
    }

    async fn get_user(&self, user_id: &Uuid) -> Result<Option<User>, BackendError> {
        Ok(accounts::find_by_id(&self.db, *user_id).await?)
    }
}

/// Rate limiter of login attempts, keyed by normalised email.
pub type LoginLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Login attempts allowed per email and minute.
pub const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 5;

/// A limiter allowing [`LOGIN_ATTEMPTS_PER_MINUTE`] per email.
pub fn login_limiter() -> LoginLimiter {
    let per_minute =
        std::num::NonZeroU32::new(LOGIN_ATTEMPTS_PER_MINUTE).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))
}

/// The auth session extractor for this backend.
pub type AuthSession = axum_login::AuthSession<Backend>;

/// Accepts `next` only as a local path: starts with `/`, not `//` or `/\`
/// (open-redirect prevention, OWASP Unvalidated Redirects Cheat Sheet).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from `Location` and read `\` as `/`, so
        // `/\t/evil.example` would become `//evil.example`: refuse both outright.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/dashboard".to_owned(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/signup.html")]
struct SignupPage {
    page: PageCtx,
    email: String,
    email_error: Option<String>,
    password_error: Option<String>,
    next: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "auth/login.html")]
struct LoginPage {
    page: PageCtx,
    email: String,
    error: Option<String>,
    next: String,
}

async fn public_page(session: &Session, sandbox: bool) -> Result<PageCtx> {
    Ok(PageCtx {
        csrf_token: super::csrf::token(session).await?,
        sandbox,
        flash: super::views::take_flash(session).await,
        ..PageCtx::default()
    })
}

/// `GET /signup`.
pub async fn signup_form(
    State(state): State<AppState>,
    auth: AuthSession,
    session: Session,
    Query(q): Query<NextQuery>,
) -> Result<Response> {
    if auth.user.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    Ok(SignupPage {
        page: public_page(&session, state.config.stripe_sandbox()).await?,
        email: String::new(),
        email_error: None,
        password_error: None,
        next: safe_next(q.next.as_deref()),
    }
    .into_response())
}

/// The sign-up form's fields.
#[derive(Deserialize)]
pub struct SignupForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /signup`: creates the account and its workspace, signs in, redirects.
/// Invalid input re-renders the form with 422 and writes nothing.
pub async fn sign_up(
    State(state): State<AppState>,
    mut auth: AuthSession,
    session: Session,
    Form(form): Form<SignupForm>,
) -> Result<Response> {
    let next = safe_next(form.next.as_deref());
    let user = match accounts::sign_up(&state.db, &form.email, &form.password, false).await {
        Ok(user) => user,
        Err(SignupError::Unexpected(e)) => return Err(AppError::Internal(e)),
        Err(e) => {
            let (email_error, password_error) = match e {
                SignupError::InvalidPassword => (None, Some(e.to_string())),
                _ => (Some(e.to_string()), None),
            };
            let page = SignupPage {
                page: public_page(&session, state.config.stripe_sandbox()).await?,
                email: form.email.trim().to_owned(),
                email_error,
                password_error,
                next,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    // axum-login cycles the id only for a session without a user; cycle it always.
    session
        .cycle_id()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cycle session: {e}")))?;
    auth.login(&user)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("login after signup: {e}")))?;
    super::views::set_flash(
        &session,
        "Welcome to billfold! Your free plan's 100 credits are ready.",
    )
    .await;
    Ok(Redirect::to(&next).into_response())
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    auth: AuthSession,
    session: Session,
    Query(q): Query<NextQuery>,
) -> Result<Response> {
    if auth.user.is_some() {
        return Ok(Redirect::to(&safe_next(q.next.as_deref())).into_response());
    }
    Ok(LoginPage {
        page: public_page(&session, state.config.stripe_sandbox()).await?,
        email: String::new(),
        error: None,
        next: safe_next(q.next.as_deref()),
    }
    .into_response())
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /login`: a wrong email or password re-renders with one message (422) that
/// does not say which was wrong.
pub async fn log_in(
    State(state): State<AppState>,
    mut auth: AuthSession,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let next = safe_next(form.next.as_deref());
    let key = form.email.trim().to_lowercase();
    if state.login_limiter.check_key(&key).is_err() {
        let page = LoginPage {
            page: public_page(&session, state.config.stripe_sandbox()).await?,
            email: form.email.trim().to_owned(),
            error: Some(
                "Too many sign-in attempts for this email. Wait a minute and try again.".into(),
            ),
            next,
        };
        let retry = [(axum::http::header::RETRY_AFTER, "60")];
        return Ok((StatusCode::TOO_MANY_REQUESTS, retry, page).into_response());
    }
    state.login_limiter.retain_recent();
    let creds = Credentials {
        email: form.email.clone(),
        password: form.password,
    };
    let user = auth
        .authenticate(creds)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("authenticate: {e}")))?;
    let Some(user) = user else {
        let page = LoginPage {
            page: public_page(&session, state.config.stripe_sandbox()).await?,
            email: form.email.trim().to_owned(),
            error: Some("The email or password is not right.".into()),
            next,
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    };
    // axum-login cycles the id only for a session without a user; cycle it always.
    session
        .cycle_id()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cycle session: {e}")))?;
    auth.login(&user)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("login: {e}")))?;
    Ok(Redirect::to(&next).into_response())
}

/// `POST /logout`: ends the session and returns to the login page.
pub async fn log_out(mut auth: AuthSession) -> Result<Redirect> {
    auth.logout()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("logout: {e}")))?;
    Ok(Redirect::to("/login"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(super::safe_next(Some("/credits?x=1")), "/credits?x=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/x",
            "credits",
            "",
        ] {
            assert_eq!(super::safe_next(Some(bad)), "/dashboard", "{bad}");
        }
        assert_eq!(super::safe_next(None), "/dashboard");
    }
}
