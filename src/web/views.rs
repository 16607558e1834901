//! What every page shares: the chrome (nav, flash, CSRF token, sandbox banner),
//! flash messages, and askama filters for credits, money and dates.

use tower_sessions::Session;

/// Chrome of every page (rendered by `templates/base.html`).
#[derive(Debug, Clone, Default)]
pub struct PageCtx {
    /// Signed-in user's email; `None` on public pages.
    pub email: Option<String>,
    /// Current workspace name.
    pub workspace_name: Option<String>,
    /// CSRF token for forms and htmx (`hx-headers`).
    pub csrf_token: String,
    /// Which nav item is active.
    pub active: &'static str,
    /// Show the "Stripe sandbox" banner.
    pub sandbox: bool,
    /// One-time message from the previous request.
    pub flash: Option<String>,
    /// Show the failed-payment banner (with a button to the customer portal).
    pub past_due: bool,
    /// The user may manage billing and keys (owner or admin): buttons that lead to
    /// owner-only actions show only then.
    pub can_manage: bool,
    /// The workspace's time zone (IANA name; empty means UTC): customer pages show
    /// times and days in it (`{{ t|local_datetime(page.time_zone) }}`).
    pub time_zone: String,
    /// The reseller whose branding the page shows ("with …", logo, accent colour):
    /// the workspace's, or on public pages the one serving the request's host.
    pub branding: Option<crate::resellers::Branding>,
    /// The user works for a reseller: the nav links its dashboard.
    pub reseller: bool,
    /// The user is staff: the nav links the back office.
    pub staff: bool,
    /// A staff member is viewing the workspace as its customer: read-only banner.
    pub view_as: bool,
}

/// One CSV record (the `csv` crate's quoting), every cell a spreadsheet would run as a
/// formula neutralised (OWASP CSV Injection): the customer's CSV downloads.
pub fn csv_record(fields: &[&str]) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let cells: Vec<String> = fields
        .iter()
        .map(|f| super::admin::list::neutralise(f))
        .collect();
    let _ = w.write_record(&cells);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// The confirmation an irreversible action asks for before it runs
/// (`templates/confirm.html`): the action's form posts once more with `confirm=yes`.
/// Without JavaScript as with it, nothing happens until the second post.
#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    /// Page chrome.
    pub page: PageCtx,
    /// The question ("Revoke the key “Backend”?").
    pub title: String,
    /// What happens, one paragraph each.
    pub lines: Vec<String>,
    /// Where the confirmed form posts (the action's own address).
    pub action: String,
    /// The confirming button's label.
    pub button: String,
    /// Where "keep" leads.
    pub back: String,
    /// The link that changes nothing ("Keep the key").
    pub back_label: String,
}

/// The confirmation field of an irreversible action's form: `confirm=yes` once the
/// user confirmed on [`ConfirmPage`].
#[derive(Debug, Default, serde::Deserialize)]
pub struct ConfirmForm {
    confirm: Option<String>,
}

impl ConfirmForm {
    /// Whether the user confirmed.
    pub fn confirmed(&self) -> bool {
        self.confirm.as_deref() == Some("yes")
    }
}

const FLASH_KEY: &str = "web.flash";

/// Stores a message shown once on the next page.
pub async fn set_flash(session: &Session, message: impl Into<String>) {
    if let Err(e) = session.insert(FLASH_KEY, message.into()).await {
        tracing::warn!(error = %e, "could not store flash message");
    }
}

/// Takes the pending flash message, if any. Reads first: `Session::remove` marks the
/// session modified even when the key is absent, and a modified session is written back
/// to PostgreSQL at the end of the request, so removing unconditionally would cost every
/// page view a durable write.
pub async fn take_flash(session: &Session) -> Option<String> {
    let message = session.get::<String>(FLASH_KEY).await.ok().flatten()?;
    if let Err(e) = session.remove::<String>(FLASH_KEY).await {
        tracing::warn!(error = %e, "could not clear flash message");
    }
    Some(message)
}

/// askama filters: `{{ n|credits }}`, `{{ n|signed_credits }}`, `{{ t|datetime }}`,
/// `{{ t|date }}`. Money renders through [`crate::money::Money`]'s `Display`.
pub mod filters {
    use time::OffsetDateTime;
    use time::macros::format_description;

    /// A credit count however askama hands it over (`i64`, `&i64`, `&&i64`).
    pub trait Credits {
        /// The count.
        fn get(&self) -> i64;
    }
    impl Credits for i64 {
        fn get(&self) -> i64 {
            *self
        }
    }
    impl<T: Credits + ?Sized> Credits for &T {
        fn get(&self) -> i64 {
            (**self).get()
        }
    }

    /// `1234` → `1,234`.
    #[askama::filter_fn]
    pub fn credits<N: Credits>(n: N, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(crate::money::format_credits(n.get()))
    }

    /// `1234` → `+1,234`, `-5` → `-5`, `0` → `0`.
    #[askama::filter_fn]
    pub fn signed_credits<N: Credits>(n: N, _: &dyn askama::Values) -> askama::Result<String> {
        let n = n.get();
        let s = crate::money::format_credits(n);
        Ok(if n > 0 { format!("+{s}") } else { s })
    }

    /// A calendar day however askama hands it over: a `time::Date`, or an instant
    /// (its UTC day).
    pub trait Day {
        /// The day.
        fn day(&self) -> time::Date;
    }
    impl Day for time::Date {
        fn day(&self) -> time::Date {
            *self
        }
    }
    impl Day for OffsetDateTime {
        fn day(&self) -> time::Date {
            self.to_offset(time::UtcOffset::UTC).date()
        }
    }
    impl<T: Day + ?Sized> Day for &T {
        fn day(&self) -> time::Date {
            (**self).day()
        }
    }

    /// `21 Nov 2026`.
    #[askama::filter_fn]
    pub fn date<D: Day>(t: D, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(day_label(&t))
    }

    /// `21 Nov 2026 15:05 CET`: an instant in the time zone `tz` (IANA name; unknown
    /// or empty names show UTC).
    #[askama::filter_fn]
    pub fn local_datetime(
        t: &OffsetDateTime,
        _: &dyn askama::Values,
        tz: &str,
    ) -> askama::Result<String> {
        Ok(datetime_in(t, tz))
    }

    /// `21 Nov 2026`: the day of an instant in the time zone `tz`.
    #[askama::filter_fn]
    pub fn local_date(
        t: &OffsetDateTime,
        _: &dyn askama::Values,
        tz: &str,
    ) -> askama::Result<String> {
        Ok(local_day(t, tz))
    }

    /// `21 Nov 2026`: the day of an instant in the time zone `tz`.
    pub fn local_day(t: &OffsetDateTime, tz: &str) -> String {
        day_label(&in_zone(t, tz).0.date())
    }

    /// The instant as a local date-time in `tz`, and the zone's abbreviation then.
    fn in_zone(t: &OffsetDateTime, tz: &str) -> (time::PrimitiveDateTime, String) {
        let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
        let stamp =
            jiff::Timestamp::from_second(t.unix_timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let info = zone.to_offset_info(stamp);
        let offset = time::UtcOffset::from_whole_seconds(info.offset().seconds())
            .unwrap_or(time::UtcOffset::UTC);
        let local = t.to_offset(offset);
        (
            time::PrimitiveDateTime::new(local.date(), local.time()),
            info.abbreviation().to_owned(),
        )
    }

    /// `21 Nov 2026 15:05 CET`.
    pub fn datetime_in(t: &OffsetDateTime, tz: &str) -> String {
        let (local, zone) = in_zone(t, tz);
        let f = format_description!("[hour]:[minute]");
        format!(
            "{} {} {zone}",
            day_label(&local.date()),
            local.format(&f).unwrap_or_default()
        )
    }

    /// `21 Nov 2026`: the one date format of every page.
    pub fn day_label<D: Day>(t: &D) -> String {
        let f = format_description!("[day padding:none] [month repr:short] [year]");
        t.day().format(&f).unwrap_or_default()
    }

    /// `21 Nov 2026 14:05 UTC`: the same format as [`local_datetime`], in UTC (the
    /// back office and reseller pages, which no single workspace's zone fits).
    #[askama::filter_fn]
    pub fn datetime(t: &OffsetDateTime, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(datetime_in(t, "UTC"))
    }
}
