//! Sign-up, login and logout. axum-login over tower-sessions: signing in cycles the
//! session id and the CSRF token (session fixation, OWASP Session Management Cheat
//! Sheet); sessions end 30 days after sign-in whatever the activity; the session auth
//! hash is the password hash, so changing a password ends other sessions.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_login::{AuthUser, AuthnBackend};
use serde::Deserialize;
use sqlx::PgPool;
use tower_sessions::Session;

use super::AppState;
use super::error::{AppError, Result};
use super::extract::{ClientAddr, Form, Query};
use super::limits::Refused;
use super::referral::HostBranding;
use super::views::PageCtx;
use crate::accounts::password::{PasswordError, PasswordHasher};
use crate::accounts::{self, Authentication, SignupError, User};
use crate::ids::UserId;
use crate::resellers::AttributionChannel;

impl AuthUser for User {
    type Id = UserId;

    fn id(&self) -> UserId {
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
    hasher: PasswordHasher,
}

impl Backend {
    /// A backend reading users from `db`, verifying passwords with `hasher`.
    pub fn new(db: PgPool, hasher: PasswordHasher) -> Self {
        Self { db, hasher }
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

/// A failure while authenticating (database, or no hashing slot free).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(#[from] anyhow::Error);

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        match accounts::authenticate(&self.db, &self.hasher, &creds.email, &creds.password).await {
            Ok(Authentication::Verified(user)) => Ok(Some(user)),
            Ok(Authentication::Refused { .. }) => Ok(None),
            Err(e) => Err(BackendError(anyhow::anyhow!(e))),
        }
    }

    async fn get_user(&self, user_id: &UserId) -> Result<Option<User>, BackendError> {
        let mut conn = self.db.acquire().await.map_err(anyhow::Error::from)?;
        Ok(accounts::db::find_by_id(&mut conn, *user_id).await?)
    }
}

/// The auth session extractor for this backend.
pub type AuthSession = axum_login::AuthSession<Backend>;

/// Session key of the sign-in time (unix seconds).
const SIGNED_IN_AT: &str = "auth.signed_in_at";

/// Session key of the last time the session's idle expiry was renewed (unix seconds).
const RENEWED_AT: &str = "auth.renewed_at";

/// How often a signed-in session's idle expiry is pushed forward. tower-sessions writes a
/// session back only when its data changed; changing this stamp at most once an hour
/// renews the 7-day idle expiry without a durable write on every request.
const RENEW_EVERY_SECS: i64 = 3600;

/// Middleware: a signed-in session older than `Config::session_lifetime` (30 days;
/// OWASP Session Management Cheat Sheet, "absolute timeout"; besides the 7-day idle
/// expiry), or from before sign-in times were kept, is ended and sent to sign in again.
/// A live one has its idle expiry renewed at most once an hour ([`RENEW_EVERY_SECS`]),
/// so it ends after 7 days (less up to an hour) without a request.
pub async fn enforce_session_lifetime(
    State(state): State<AppState>,
    mut auth: AuthSession,
    session: Session,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if auth.user.is_some() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signed_in_at = session.get::<i64>(SIGNED_IN_AT).await.ok().flatten();
        let lifetime = i64::try_from(state.config.session_lifetime.as_secs()).unwrap_or(i64::MAX);
        let expired = signed_in_at.is_none_or(|at| now - at >= lifetime);
        if expired {
            if let Err(e) = auth.logout().await {
                return AppError::Internal(anyhow::anyhow!("end an expired session: {e}"))
                    .into_response();
            }
            let next_path = req
                .uri()
                .path_and_query()
                .map_or("/dashboard", |p| p.as_str());
            let target = format!(
                "/login?next={}",
                url::form_urlencoded::byte_serialize(safe_next(Some(next_path)).as_bytes())
                    .collect::<String>()
            );
            return Redirect::to(&target).into_response();
        }
        let renewed_at = session.get::<i64>(RENEWED_AT).await.ok().flatten();
        if renewed_at.is_none_or(|at| now - at >= RENEW_EVERY_SECS)
            && let Err(e) = session.insert(RENEWED_AT, now).await
        {
            tracing::warn!(error = %e, "could not renew the session's idle expiry");
        }
    }
    next.run(req).await
}

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

async fn public_page(session: &Session, sandbox: bool, branding: &HostBranding) -> Result<PageCtx> {
    Ok(PageCtx {
        csrf_token: super::csrf::token(session).await?,
        sandbox,
        branding: branding.0.clone(),
        flash: super::views::take_flash(session).await,
        ..PageCtx::default()
    })
}

/// `GET /signup`.
pub async fn signup_form(
    State(state): State<AppState>,
    auth: AuthSession,
    session: Session,
    host: HostBranding,
    Query(q): Query<NextQuery>,
) -> Result<Response> {
    if auth.user.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    Ok(SignupPage {
        page: public_page(&session, state.config.stripe_sandbox(), &host).await?,
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

/// Ends the anonymous session's identity and signs `user` in: a new session id
/// (session fixation, OWASP Session Management Cheat Sheet), a new CSRF token, the
/// sign-in time for the absolute lifetime, and the address remembered.
async fn sign_in(
    state: &AppState,
    auth: &mut AuthSession,
    session: &Session,
    user: &User,
    client: ClientAddr,
) -> Result<()> {
    // axum-login cycles the id only for a session without a user; cycle it always.
    session
        .cycle_id()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cycle session: {e}")))?;
    auth.login(user)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("login: {e}")))?;
    super::csrf::renew(session).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for key in [SIGNED_IN_AT, RENEWED_AT] {
        session
            .insert(key, now)
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))?;
    }
    accounts::remember_login_address(&state.db, user.user_id, client.0).await?;
    Ok(())
}

/// `POST /signup`: creates the account and its workspace, signs in, redirects.
/// Invalid input re-renders the form with 422 and writes nothing; more sign-ups from
/// one address than `SIGNUPS_PER_ADDRESS_PER_HOUR` get 429.
pub async fn sign_up(
    State(state): State<AppState>,
    mut auth: AuthSession,
    session: Session,
    client: ClientAddr,
    host: HostBranding,
    headers: HeaderMap,
    Form(form): Form<SignupForm>,
) -> Result<Response> {
    let next = safe_next(form.next.as_deref());
    let page = |email_error: Option<String>, password_error: Option<String>| async {
        Ok::<_, AppError>(SignupPage {
            page: public_page(&session, state.config.stripe_sandbox(), &host).await?,
            email: form
                .email
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
            email_error,
            password_error,
            next: next.clone(),
        })
    };
    // A refusal the form shows next to its field (422, nothing written).
    let refuse = |e: SignupError| {
        let (email_error, password_error) = match e {
            SignupError::InvalidPassword => (None, Some(e.to_string())),
            _ => (Some(e.to_string()), None),
        };
        let page = &page;
        async move {
            Ok::<_, AppError>(
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    page(email_error, password_error).await?,
                )
                    .into_response(),
            )
        }
    };
    // Validate before counting: a typo does not use up the address's sign-ups.
    if let Err(e) =
        accounts::parse_email(&form.email).and_then(|_| accounts::check_password(&form.password))
    {
        return refuse(e).await;
    }
    if let Err(refused) = state.limits.check_signup(client.0) {
        tracing::warn!(client = %client.0, "sign-up refused: too many from this address");
        let message =
            "Too many accounts were created from your network recently. Please try again later.";
        let retry = [(header::RETRY_AFTER, refused.retry_after().to_string())];
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            retry,
            page(Some(message.into()), None).await?,
        )
            .into_response());
    }
    let referral = referral_of(&state, &host, &headers).await?;
    let user = match accounts::sign_up_referred(
        &state.db,
        &state.hasher,
        &form.email,
        &form.password,
        false,
        referral,
    )
    .await
    {
        Ok(user) => user,
        Err(SignupError::Unexpected(e)) => return Err(AppError::Internal(e)),
        Err(SignupError::Busy) => return Err(AppError::Busy),
        Err(e) => return refuse(e).await,
    };
    sign_in(&state, &mut auth, &session, &user, client).await?;
    audit_auth(
        &state,
        "auth.sign_up",
        Some((user.user_id, &user.email)),
        &headers,
        &client,
    )
    .await?;
    super::views::set_flash(
        &session,
        "Welcome to billfold! Your free plan's 100 credits are ready.",
    )
    .await;
    let mut res = Redirect::to(&next).into_response();
    if referral.is_some() {
        let (name, value) = super::referral::clear_cookie();
        res.headers_mut().insert(name, value);
    }
    Ok(res)
}

/// Records an authentication event in the audit log, in its own short transaction
/// (the change it records is the session's, which lives outside it).
async fn audit_auth(
    state: &AppState,
    action: &str,
    user: Option<(UserId, &str)>,
    headers: &HeaderMap,
    client: &ClientAddr,
) -> Result<()> {
    let request_id = headers.get(super::REQUEST_ID).and_then(|v| v.to_str().ok());
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    crate::audit::record(
        &mut conn,
        &crate::audit::NewAuditEvent {
            actor_user_id: user.map(|(id, _)| id),
            actor_email: user.map(|(_, email)| email),
            action,
            subject: user.map(|(id, _)| ("user", id.to_string())),
            request_id,
            client_address: Some(client.0),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Who a sign-up is attributed to: the reseller owning the host name it was sent to,
/// else the one whose referral link set the cookie (if still active).
async fn referral_of(
    state: &AppState,
    host: &HostBranding,
    headers: &HeaderMap,
) -> Result<Option<(crate::ids::ResellerId, AttributionChannel)>> {
    if let Some(b) = &host.0 {
        return Ok(Some((b.reseller_id, AttributionChannel::Host)));
    }
    let Some(code) = super::referral::referral_code(headers) else {
        return Ok(None);
    };
    let mut conn = state.db.acquire().await.map_err(anyhow::Error::from)?;
    Ok(crate::resellers::active_by_code(&mut conn, &code)
        .await?
        .map(|id| (id, AttributionChannel::ReferralLink)))
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    auth: AuthSession,
    session: Session,
    host: HostBranding,
    Query(q): Query<NextQuery>,
) -> Result<Response> {
    if auth.user.is_some() {
        return Ok(Redirect::to(&safe_next(q.next.as_deref())).into_response());
    }
    Ok(LoginPage {
        page: public_page(&session, state.config.stripe_sandbox(), &host).await?,
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
/// does not say which was wrong, and is logged. Throttled per address, per account and
/// address, and per account from addresses that never signed in to it ([`super::limits`]):
/// 429 with `Retry-After`.
pub async fn log_in(
    State(state): State<AppState>,
    mut auth: AuthSession,
    session: Session,
    client: ClientAddr,
    host: HostBranding,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let next = safe_next(form.next.as_deref());
    let email = form.email.trim().to_lowercase();
    let page = |error: String| async {
        Ok::<_, AppError>(LoginPage {
            page: public_page(&session, state.config.stripe_sandbox(), &host).await?,
            email: form
                .email
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
            error: Some(error),
            next: next.clone(),
        })
    };
    let throttled = |refused: Refused| async move {
        tracing::warn!(client = %client.0, ?refused, "sign-in throttled");
        let message = match refused {
            Refused::AccountFromNewAddresses => {
                "Too many sign-in attempts for this account from new places. Sign in from a device you used before, or wait a few minutes."
            }
            _ => "Too many sign-in attempts. Wait a minute and try again.",
        };
        let retry = [(header::RETRY_AFTER, refused.retry_after().to_string())];
        Ok::<_, AppError>(
            (
                StatusCode::TOO_MANY_REQUESTS,
                retry,
                page(message.into()).await?,
            )
                .into_response(),
        )
    };
    let wrong = || async {
        Ok::<_, AppError>(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                page("The email or password is not right.".into()).await?,
            )
                .into_response(),
        )
    };
    // The address's own limit first: it needs no database.
    if let Err(r) = state.limits.check_login_address(client.0) {
        return throttled(r).await;
    }
    // What no account can match (an overlong or malformed email, a password longer
    // than any accepted at sign-up) is refused without a lookup, a hash or a counter.
    if accounts::parse_email(&email).is_err()
        || form.password.chars().count() > accounts::MAX_PASSWORD_LEN
    {
        tracing::warn!(client = %client.0, account = "unknown", "failed sign-in");
        return wrong().await;
    }
    let known = accounts::db::is_known_login_address(
        &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
        &email,
        client.0,
    )
    .await?;
    if let Err(r) = state.limits.check_login_account(&email, client.0, known) {
        return throttled(r).await;
    }
    let user = match accounts::authenticate(&state.db, &state.hasher, &email, &form.password).await
    {
        Ok(Authentication::Verified(user)) => user,
        Ok(Authentication::Refused { account }) => {
            // An existing account's failures are audited (someone tried to get in);
            // guesses at unknown emails stay in the logs only.
            if let Some(id) = account {
                audit_auth(
                    &state,
                    "auth.sign_in_failed",
                    Some((id, &email)),
                    &headers,
                    &client,
                )
                .await?;
            }
            let account = account.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
            tracing::warn!(client = %client.0, account, "failed sign-in");
            return wrong().await;
        }
        Err(PasswordError::Busy) => return Err(AppError::Busy),
        Err(PasswordError::Unexpected(e)) => return Err(AppError::Internal(e)),
    };
    sign_in(&state, &mut auth, &session, &user, client).await?;
    audit_auth(
        &state,
        "auth.sign_in",
        Some((user.user_id, &user.email)),
        &headers,
        &client,
    )
    .await?;
    // A reseller's home is its dashboard, unless the form was sent somewhere else.
    if form
        .next
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == "/dashboard")
        && crate::resellers::member_of(
            &mut *state.db.acquire().await.map_err(anyhow::Error::from)?,
            user.user_id,
        )
        .await?
        .is_some()
    {
        return Ok(Redirect::to("/reseller").into_response());
    }
    Ok(Redirect::to(&next).into_response())
}

/// `POST /logout`: ends the session and returns to the login page.
pub async fn log_out(
    State(state): State<AppState>,
    mut auth: AuthSession,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Redirect> {
    let user = auth
        .logout()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("logout: {e}")))?;
    if let Some(user) = user {
        audit_auth(
            &state,
            "auth.sign_out",
            Some((user.user_id, &user.email)),
            &headers,
            &client,
        )
        .await?;
    }
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
