//! Resellers (DESIGN.md "Resellers"): partners who bring customers through a referral
//! link (`/r/{code}`) or a branded host name and earn a commission on every payment
//! those customers make. Owns tables `resellers`, `reseller_members`, `reseller_rates`,
//! `reseller_payout_minimums`, `reseller_logos`, `referral_clicks`, `commissions`,
//! `payouts` and `reseller_api_keys`, and the attribution columns of `workspaces`.
//!
//! - [`commissions`]: the money path. A commission is written in the transaction that
//!   applies its payment, reversed by the transaction that applies a refund or dispute,
//!   approved by a job when the hold period has passed, and paid with a payout.
//! - [`db`]: what the reseller dashboard and the reseller API read, every query scoped
//!   by the reseller id the caller resolved from the session or the API key.
//!
//! Only an `active` reseller attributes new sign-ups and earns new commissions; a
//! `paused` or `closed` one keeps what it earned (approvals and payouts go on).

pub mod commissions;
pub mod db;
pub mod logo;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ids::{ResellerApiKeyId, ResellerId, UserId, WorkspaceId};

/// How long a referral cookie attributes a sign-up (30 days; the last link followed
/// wins).
pub const REFERRAL_WINDOW_DAYS: i64 = 30;

/// Prefix of reseller API keys (`bfr_` + 40 hex characters), distinct from the
/// metering API's `bf_` so a leaked key says which it is.
pub const API_KEY_PREFIX: &str = "bfr_";

/// A reseller's state (Postgres enum `reseller_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, Deserialize)]
#[sqlx(type_name = "reseller_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ResellerStatus {
    /// Attributes sign-ups and earns commissions.
    Active,
    /// Temporarily earns nothing new; keeps what it earned.
    Paused,
    /// Ended; keeps what it earned.
    Closed,
}

/// A reseller user's role (Postgres enum `reseller_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, Deserialize)]
#[sqlx(type_name = "reseller_role", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ResellerRole {
    /// Manages branding and API keys.
    Owner,
    /// Sees the dashboard.
    Member,
}

/// How a workspace came to a reseller (Postgres enum `attribution_channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, Serialize, Deserialize)]
#[sqlx(type_name = "attribution_channel", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AttributionChannel {
    /// Signed up within [`REFERRAL_WINDOW_DAYS`] of following `/r/{code}`.
    ReferralLink,
    /// Signed up on the reseller's own host name.
    Host,
    /// Attributed by staff.
    Admin,
    /// Attributed through an API.
    Api,
}

/// A reseller as its dashboard and the back office see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reseller {
    /// Primary key.
    pub reseller_id: ResellerId,
    /// Its name.
    pub name: String,
    /// The `{code}` of `/r/{code}`.
    pub referral_code: String,
    /// Commission rate in force now, basis points (1,000 = 10 %).
    pub commission_rate_bps: i32,
    /// Days between a payment and its commission's approval.
    pub hold_days: i32,
    /// The least a payout may be, minor units (per-currency overrides aside).
    pub minimum_payout_minor: i64,
    /// Its state.
    pub status: ResellerStatus,
    /// Branding: the name customers see ("with …"); `None`: its name.
    pub display_name: Option<String>,
    /// Branding: `#rrggbb`.
    pub accent_color: Option<String>,
    /// Branding: requests for this host show the branding and attribute sign-ups.
    pub host_name: Option<String>,
    /// Whether it uploaded a logo, and its hash (the logo URL's version).
    pub logo_sha256: Option<String>,
}

impl Reseller {
    /// The rate as a percentage for people: `1250` → `"12.5 %"`.
    pub fn rate_label(&self) -> String {
        rate_label(self.commission_rate_bps)
    }

    /// The least a payout in `currency` is drafted for (the per-currency overrides of
    /// `reseller_payout_minimums` aside).
    pub fn minimum_payout(&self, currency: &str) -> crate::money::Money {
        crate::money::Money::new(self.minimum_payout_minor, currency)
    }

    /// The name customers see.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }

    /// Its branding as pages show it.
    pub fn branding(&self) -> Branding {
        Branding {
            reseller_id: self.reseller_id,
            name: self.shown_name().to_owned(),
            accent_color: self.accent_color.clone(),
            logo_sha256: self.logo_sha256.clone(),
        }
    }
}

/// `1250` → `"12.5 %"`, `2000` → `"20 %"`.
pub fn rate_label(bps: i32) -> String {
    if bps % 100 == 0 {
        format!("{} %", bps / 100)
    } else {
        let s = format!("{:.2}", f64::from(bps) / 100.0);
        format!("{} %", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// What a page shows of the reseller behind a workspace or a host name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Branding {
    /// The reseller (the logo's and theme's URL name it).
    pub reseller_id: ResellerId,
    /// Display name.
    pub name: String,
    /// `#rrggbb`, if set.
    pub accent_color: Option<String>,
    /// The logo's SHA-256 (hex), if it has one.
    pub logo_sha256: Option<String>,
}

impl Branding {
    /// `/brand/{reseller}/logo?v={sha}`: changes with the logo, so it is cached for long.
    pub fn logo_url(&self) -> Option<String> {
        self.logo_sha256
            .as_ref()
            .map(|sha| format!("/brand/{}/logo?v={}", self.reseller_id, &sha[..16]))
    }

    /// `/brand/{reseller}/theme.css?c=…`: the accent colour as a stylesheet (the CSP
    /// allows no inline style).
    pub fn theme_url(&self) -> Option<String> {
        self.accent_color
            .as_ref()
            .map(|c| format!("/brand/{}/theme.css?c={}", self.reseller_id, &c[1..]))
    }
}

/// A user's seat at a reseller.
#[derive(Debug, Clone)]
pub struct ResellerMember {
    /// The reseller.
    pub reseller: Reseller,
    /// The user's role there.
    pub role: ResellerRole,
}

/// `floor(base × rate_bps / 10000)`: the commission on `base` minor units (a payment
/// net of tax) at `rate_bps` basis points, rounded down so it never exceeds the rate.
/// 0 for a non-positive base.
pub fn commission_amount(base_minor: i64, rate_bps: i32) -> i64 {
    if base_minor <= 0 || rate_bps <= 0 {
        return 0;
    }
    let v = i128::from(base_minor) * i128::from(rate_bps.min(10_000)) / 10_000;
    i64::try_from(v).unwrap_or(0)
}

/// A referral code as `/r/{code}` takes it: 3 to 32 of `a-z0-9-`, starting with a
/// letter or digit; anything else is no code (`None`), never an error page.
pub fn parse_referral_code(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_lowercase();
    let ok = (3..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !code.starts_with('-');
    ok.then_some(code)
}

/// An active reseller by referral code (`None`: unknown, paused or closed).
pub async fn active_by_code(
    conn: &mut PgConnection,
    code: &str,
) -> anyhow::Result<Option<ResellerId>> {
    Ok(sqlx::query_scalar(
        "select reseller_id from resellers where referral_code = $1 and status = 'active'",
    )
    .bind(code)
    .fetch_optional(conn)
    .await?)
}

/// Counts a followed referral link (the funnel's first step).
pub async fn record_click(conn: &mut PgConnection, reseller_id: ResellerId) -> anyhow::Result<()> {
    sqlx::query("insert into referral_clicks (reseller_id) values ($1)")
        .bind(reseller_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Attributes a workspace to an active reseller, in the caller's transaction, unless it
/// already has one (a workspace is attributed at most once). Returns whether it did.
pub async fn attribute(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    reseller_id: ResellerId,
    via: AttributionChannel,
) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "update workspaces w
            set reseller_id = $2, attributed_at = now(), attributed_via = $3
          where w.workspace_id = $1 and w.reseller_id is null
            and exists (select 1 from resellers r where r.reseller_id = $2 and r.status = 'active')",
    )
    .bind(workspace_id)
    .bind(reseller_id)
    .bind(via)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The branding of an active reseller serving `host` (its configured host name).
pub async fn branding_for_host(
    conn: &mut PgConnection,
    host: &str,
) -> anyhow::Result<Option<Branding>> {
    Ok(sqlx::query_as::<_, Branding>(
        "select r.reseller_id, coalesce(r.display_name, r.name) as name, r.accent_color,
                l.sha256 as logo_sha256
           from resellers r left join reseller_logos l using (reseller_id)
          where r.host_name = $1 and r.status = 'active'",
    )
    .bind(host.to_ascii_lowercase())
    .fetch_optional(conn)
    .await?)
}

/// The reseller a user works for, if any.
pub async fn member_of(
    conn: &mut PgConnection,
    user_id: UserId,
) -> anyhow::Result<Option<ResellerMember>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        reseller: Reseller,
        role: ResellerRole,
    }
    let row = sqlx::query_as::<_, Row>(&format!(
        "select {RESELLER_COLUMNS}, m.role
           from resellers r left join reseller_logos l using (reseller_id)
           join reseller_members m using (reseller_id)
          where m.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| ResellerMember {
        reseller: r.reseller,
        role: r.role,
    }))
}

/// A reseller by id.
pub async fn find(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
) -> anyhow::Result<Option<Reseller>> {
    Ok(sqlx::query_as::<_, Reseller>(&format!(
        "select {RESELLER_COLUMNS}
           from resellers r left join reseller_logos l using (reseller_id)
          where r.reseller_id = $1"
    ))
    .bind(reseller_id)
    .fetch_optional(conn)
    .await?)
}

const RESELLER_COLUMNS: &str = "r.reseller_id, r.name, r.referral_code, r.commission_rate_bps,
        r.hold_days, r.minimum_payout_minor, r.status, r.display_name, r.accent_color,
        r.host_name, l.sha256 as logo_sha256";

/// What a new reseller needs.
#[derive(Debug, Clone)]
pub struct NewReseller<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its referral code (see [`parse_referral_code`]).
    pub referral_code: &'a str,
    /// Basis points.
    pub commission_rate_bps: i32,
    /// Days.
    pub hold_days: i32,
}

/// Creates a reseller (the back office's and the demo seed's path).
pub async fn create(conn: &mut PgConnection, r: &NewReseller<'_>) -> anyhow::Result<ResellerId> {
    Ok(sqlx::query_scalar(
        "insert into resellers (name, referral_code, commission_rate_bps, hold_days)
         values ($1, $2, $3, $4) returning reseller_id",
    )
    .bind(r.name)
    .bind(r.referral_code)
    .bind(r.commission_rate_bps)
    .bind(r.hold_days)
    .fetch_one(conn)
    .await?)
}

/// Makes a user a member of a reseller (a user belongs to at most one).
pub async fn add_member(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    user_id: UserId,
    role: ResellerRole,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into reseller_members (user_id, reseller_id, role) values ($1, $2, $3)
         on conflict (user_id) do update set reseller_id = excluded.reseller_id, role = excluded.role",
    )
    .bind(user_id)
    .bind(reseller_id)
    .bind(role)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why branding settings were refused (the form shows the message, 422).
#[derive(Debug, thiserror::Error)]
pub enum BrandingError {
    /// Display name empty or too long.
    #[error("the display name must be 1 to 60 characters")]
    DisplayName,
    /// Not `#rrggbb`.
    #[error("the accent colour must be a hex colour such as #4f46e5")]
    AccentColor,
    /// Too light for white text on it.
    #[error(
        "white text on this colour is hard to read (contrast {0:.1}:1); choose a darker one (at least 4.5:1)"
    )]
    AccentContrast(f64),
    /// Not a host name.
    #[error("the host name must be a host such as partner.example.com (no scheme, no path)")]
    HostName,
    /// Another reseller uses this host name.
    #[error("another reseller already uses this host name")]
    HostNameTaken,
    /// Database failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Branding as submitted: empty fields clear the setting.
#[derive(Debug, Clone, Default)]
pub struct BrandingForm {
    /// Display name.
    pub display_name: String,
    /// `#rrggbb` (any case).
    pub accent_color: String,
    /// A host name, or empty.
    pub host_name: String,
}

/// Validates and stores a reseller's branding.
pub async fn update_branding(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    form: &BrandingForm,
) -> Result<(), BrandingError> {
    let display = form.display_name.trim();
    if display.chars().count() > 60 || display.chars().any(char::is_control) {
        return Err(BrandingError::DisplayName);
    }
    let accent = form.accent_color.trim().to_ascii_lowercase();
    let is_hex_colour = accent.len() == 7
        && accent.starts_with('#')
        && accent[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !accent.is_empty() && !is_hex_colour {
        return Err(BrandingError::AccentColor);
    }
    if is_hex_colour {
        let ratio = contrast_with_white(&accent);
        if ratio < 4.5 {
            return Err(BrandingError::AccentContrast(ratio));
        }
    }
    let host = form
        .host_name
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !host.is_empty() && !is_host_name(&host) {
        return Err(BrandingError::HostName);
    }
    let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let result = sqlx::query(
        "update resellers set display_name = $2, accent_color = $3, host_name = $4
          where reseller_id = $1",
    )
    .bind(reseller_id)
    .bind(none_if_empty(display))
    .bind(none_if_empty(&accent))
    .bind(none_if_empty(&host))
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(BrandingError::HostNameTaken)
        }
        Err(e) => Err(BrandingError::Unexpected(e.into())),
    }
}

/// The contrast ratio of white on `#rrggbb` (WCAG 2.1 "contrast ratio" and "relative
/// luminance"): buttons and links take the accent colour with white text, and AA asks
/// 4.5:1 for text.
fn contrast_with_white(hex: &str) -> f64 {
    let channel = |i: usize| {
        let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0)) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    1.05 / (l + 0.05)
}

/// A DNS host name: labels of `a-z0-9-` (not starting or ending with `-`), at least
/// two labels, at most 253 characters (RFC 1123).
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.contains('.')
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A reseller API key as listed (never the key itself).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResellerApiKey {
    /// Primary key (`reseller_api_key_id`; named as workspace keys' is, so one
    /// template lists both).
    pub api_key_id: ResellerApiKeyId,
    /// Name given at creation.
    pub name: String,
    /// First characters of the key.
    pub key_prefix: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last API call.
    pub last_used_at: Option<OffsetDateTime>,
    /// Set once revoked; revoked keys answer 401.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Most active API keys a reseller may hold.
pub const MAX_API_KEYS: i64 = 10;

/// Creates a reseller API key (`bfr_…`, shown once; only its SHA-256 is stored). The
/// name: 1 to 100 characters without control characters; at most [`MAX_API_KEYS`]
/// active keys (the reseller row is locked so two creations cannot both pass).
pub async fn create_api_key(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    created_by: UserId,
    name: &str,
) -> Result<(ResellerApiKey, String), crate::api_keys::ApiKeyError> {
    use crate::api_keys::ApiKeyError;
    let name = crate::api_keys::check_name(name)?;
    sqlx::query("select 1 from resellers where reseller_id = $1 for update")
        .bind(reseller_id)
        .execute(&mut *conn)
        .await
        .map_err(anyhow::Error::from)?;
    let active: i64 = sqlx::query_scalar(
        "select count(*) from reseller_api_keys where reseller_id = $1 and revoked_at is null",
    )
    .bind(reseller_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(anyhow::Error::from)?;
    if active >= MAX_API_KEYS {
        return Err(ApiKeyError::LimitReached(MAX_API_KEYS as i32));
    }
    let new = crate::api_keys::NewKey::generate(API_KEY_PREFIX);
    let key = sqlx::query_as::<_, ResellerApiKey>(
        "insert into reseller_api_keys (reseller_id, name, key_prefix, key_hash, created_by)
         values ($1, $2, $3, $4, $5)
         returning reseller_api_key_id as api_key_id, name, key_prefix, created_at, last_used_at, revoked_at",
    )
    .bind(reseller_id)
    .bind(name)
    .bind(&new.key_prefix)
    .bind(&new.key_hash)
    .bind(created_by)
    .fetch_one(conn)
    .await
    .map_err(anyhow::Error::from)?;
    Ok((key, new.plaintext))
}

/// A reseller's API keys, newest first.
pub async fn api_keys(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
) -> anyhow::Result<Vec<ResellerApiKey>> {
    Ok(sqlx::query_as::<_, ResellerApiKey>(
        "select reseller_api_key_id as api_key_id, name, key_prefix, created_at, last_used_at,
                revoked_at
           from reseller_api_keys where reseller_id = $1 order by created_at desc",
    )
    .bind(reseller_id)
    .fetch_all(conn)
    .await?)
}

/// Revokes one of the reseller's keys; `false` if it has no such active key.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    key_id: ResellerApiKeyId,
) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "update reseller_api_keys set revoked_at = now()
          where reseller_api_key_id = $1 and reseller_id = $2 and revoked_at is null",
    )
    .bind(key_id)
    .bind(reseller_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The reseller an API key belongs to (`None`: unknown or revoked); notes its use at
/// most once a minute.
pub async fn authenticate_api_key(
    conn: &mut PgConnection,
    plaintext: &str,
) -> anyhow::Result<Option<ResellerId>> {
    if !plaintext.starts_with(API_KEY_PREFIX) {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "with k as (select reseller_api_key_id, reseller_id, last_used_at from reseller_api_keys
                     where key_hash = $1 and revoked_at is null),
              touched as (update reseller_api_keys r set last_used_at = now() from k
                           where r.reseller_api_key_id = k.reseller_api_key_id
                             and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute'))
         select reseller_id from k",
    )
    .bind(crate::api_keys::hash_key(plaintext))
    .fetch_optional(conn)
    .await?)
}

/// Records whether the workspace shares its owner's email with its reseller.
pub async fn set_share_email(
    conn: &mut PgConnection,
    workspace_id: WorkspaceId,
    share: bool,
) -> anyhow::Result<()> {
    sqlx::query("update workspaces set share_email_with_reseller = $2 where workspace_id = $1")
        .bind(workspace_id)
        .bind(share)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commission_is_floored_and_never_above_the_rate() {
        assert_eq!(commission_amount(4_000, 2_000), 800);
        assert_eq!(commission_amount(999, 1_250), 124, "floor(124.875)");
        assert_eq!(commission_amount(1, 9_999), 0);
        assert_eq!(commission_amount(-5, 2_000), 0);
        assert_eq!(commission_amount(100, 20_000), 100, "rate capped at 100 %");
    }

    #[test]
    fn referral_codes_are_lowercase_slugs() {
        assert_eq!(
            parse_referral_code("Acme-Partners"),
            Some("acme-partners".into())
        );
        assert_eq!(parse_referral_code("ab"), None);
        assert_eq!(parse_referral_code("-abc"), None);
        assert_eq!(parse_referral_code("a/b/c"), None);
        assert_eq!(parse_referral_code(&"x".repeat(33)), None);
    }

    #[test]
    fn rates_read_as_percentages() {
        assert_eq!(rate_label(2_000), "20 %");
        assert_eq!(rate_label(1_250), "12.5 %");
        assert_eq!(rate_label(1_234), "12.34 %");
    }

    #[test]
    fn accent_colours_must_carry_white_text() {
        assert!(contrast_with_white("#0f766e") >= 4.5);
        assert!(contrast_with_white("#4f46e5") >= 4.5);
        assert!(contrast_with_white("#facc15") < 4.5);
        assert!((contrast_with_white("#000000") - 21.0).abs() < 0.01);
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        assert!(is_host_name("partner.example.com"));
        assert!(!is_host_name("localhost"));
        assert!(!is_host_name("-a.example.com"));
        assert!(!is_host_name("a..b"));
    }
}
