//! What the reseller dashboard and the reseller API read. Every query takes the
//! reseller id the caller resolved (from the session's user or the API key) and is
//! scoped by it: another reseller's customer, commission or payout is `None`, as if it
//! did not exist (a 404, never a 403 that would confirm it).
//!
//! Lists use keyset pagination on `(time, id)` descending ([`Cursor`]); the same
//! cursor serves the pages and the API.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::AttributionChannel;
use super::commissions::{CommissionKind, CommissionStatus, Source};
use crate::ids::{CommissionId, PayoutId, ResellerId, WorkspaceId};
use crate::money::Money;

/// A position in a list ordered by `(time, id)` descending: `<unix nanos>.<uuid>` in
/// URLs and API responses, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last row's time.
    pub at: OffsetDateTime,
    /// The last row's id.
    pub id: Uuid,
}

impl Cursor {
    /// Reads a cursor written by [`Cursor::encode`]; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (nanos, id) = raw.split_once('.')?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
        Some(Self {
            at,
            id: id.parse().ok()?,
        })
    }

    /// The URL-safe form.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at.unix_timestamp_nanos(), self.id)
    }
}

/// One page of a list and where the next starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<Cursor>,
}

fn page<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next }
}

/// Figures of one currency for the dashboard's headline.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Figures {
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Revenue of referred customers (net of tax and refunds), minor units: today
    /// (Stripe's clock, UTC), 7 days, 30 days, this month, all time.
    pub revenue_today: i64,
    /// See `revenue_today`.
    pub revenue_7d: i64,
    /// See `revenue_today`.
    pub revenue_30d: i64,
    /// See `revenue_today`.
    pub revenue_month: i64,
    /// See `revenue_today`.
    pub revenue_all: i64,
    /// Commission earned (net of reversals), minor units, same windows.
    pub commission_today: i64,
    /// See `commission_today`.
    pub commission_7d: i64,
    /// See `commission_today`.
    pub commission_30d: i64,
    /// See `commission_today`.
    pub commission_month: i64,
    /// See `commission_today`.
    pub commission_all: i64,
    /// Net of commissions still in their hold period.
    pub pending: i64,
    /// Net approved and not paid yet: the next payout's estimate.
    pub approved: i64,
    /// Net paid out.
    pub paid: i64,
}

impl Figures {
    /// An amount of this currency (askama hands fields over by reference).
    pub fn money(&self, minor: impl std::borrow::Borrow<i64>) -> Money {
        Money::new(*minor.borrow(), &self.currency)
    }
}

/// Headline figures per currency (most commission first), as of `now`.
pub async fn figures(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<Figures>> {
    Ok(sqlx::query_as::<_, Figures>(
        "with w as (select date_trunc('day', $2::timestamptz, 'UTC') as today,
                           $2::timestamptz - interval '7 days' as d7,
                           $2::timestamptz - interval '30 days' as d30,
                           date_trunc('month', $2::timestamptz, 'UTC') as month)
         select c.currency,
                coalesce(sum(c.base_minor) filter (where c.earned_at >= w.today), 0)::bigint as revenue_today,
                coalesce(sum(c.base_minor) filter (where c.earned_at >= w.d7), 0)::bigint as revenue_7d,
                coalesce(sum(c.base_minor) filter (where c.earned_at >= w.d30), 0)::bigint as revenue_30d,
                coalesce(sum(c.base_minor) filter (where c.earned_at >= w.month), 0)::bigint as revenue_month,
                coalesce(sum(c.base_minor), 0)::bigint as revenue_all,
                coalesce(sum(c.amount_minor) filter (where c.earned_at >= w.today), 0)::bigint as commission_today,
                coalesce(sum(c.amount_minor) filter (where c.earned_at >= w.d7), 0)::bigint as commission_7d,
                coalesce(sum(c.amount_minor) filter (where c.earned_at >= w.d30), 0)::bigint as commission_30d,
                coalesce(sum(c.amount_minor) filter (where c.earned_at >= w.month), 0)::bigint as commission_month,
                coalesce(sum(c.amount_minor), 0)::bigint as commission_all,
                coalesce(sum(c.amount_minor) filter (where c.status = 'pending'), 0)::bigint as pending,
                coalesce(sum(c.amount_minor) filter (where c.status = 'approved'), 0)::bigint as approved,
                coalesce(sum(c.amount_minor) filter (where c.status = 'paid'), 0)::bigint as paid
           from commissions c, w
          where c.reseller_id = $1
          group by c.currency
          order by sum(c.amount_minor) desc, c.currency",
    )
    .bind(reseller_id)
    .bind(now)
    .fetch_all(conn)
    .await?)
}

/// One bar of the revenue chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Point {
    /// The day, or the first day of the month.
    pub day: Date,
    /// Revenue, minor units.
    pub revenue: i64,
    /// Commission, minor units.
    pub commission: i64,
}

/// How the chart groups time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// One bar per day.
    Day,
    /// One bar per month.
    Month,
}

/// Revenue and commission in `currency` per day (or month) for the `count` buckets
/// ending with `now`'s, oldest first, empty buckets included.
pub async fn series(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    currency: &str,
    now: OffsetDateTime,
    bucket: Bucket,
    count: i32,
) -> anyhow::Result<Vec<Point>> {
    let unit = match bucket {
        Bucket::Day => "day",
        Bucket::Month => "month",
    };
    Ok(sqlx::query_as::<_, Point>(
        "with b as (select generate_series(
                        date_trunc($4, $3::timestamptz, 'UTC') - ($5 - 1) * ('1 ' || $4)::interval,
                        date_trunc($4, $3::timestamptz, 'UTC'),
                        ('1 ' || $4)::interval) as start)
         select (b.start at time zone 'UTC')::date as day,
                coalesce(sum(c.base_minor), 0)::bigint as revenue,
                coalesce(sum(c.amount_minor), 0)::bigint as commission
           from b left join commissions c
             on c.reseller_id = $1 and c.currency = $2
            and c.earned_at >= b.start and c.earned_at < b.start + ('1 ' || $4)::interval
          group by b.start order by b.start",
    )
    .bind(reseller_id)
    .bind(currency)
    .bind(now)
    .bind(unit)
    .bind(count)
    .fetch_all(conn)
    .await?)
}

/// The referral funnel since a time: links followed, sign-ups attributed, and of those
/// the ones that paid at least once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Funnel {
    /// Referral links followed.
    pub clicks: i64,
    /// Workspaces attributed.
    pub signups: i64,
    /// Of those, workspaces with a commissioned payment.
    pub paying: i64,
}

/// The funnel since `since` (`None`: all time).
pub async fn funnel(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    since: Option<OffsetDateTime>,
) -> anyhow::Result<Funnel> {
    Ok(sqlx::query_as::<_, Funnel>(
        "select (select count(*) from referral_clicks
                  where reseller_id = $1 and ($2::timestamptz is null or clicked_at >= $2)) as clicks,
                (select count(*) from workspaces
                  where reseller_id = $1 and ($2::timestamptz is null or attributed_at >= $2)) as signups,
                (select count(*) from workspaces w
                  where w.reseller_id = $1 and ($2::timestamptz is null or w.attributed_at >= $2)
                    and exists (select 1 from commissions c
                                 where c.workspace_id = w.workspace_id and c.reseller_id = $1
                                   and c.kind = 'commission')) as paying",
    )
    .bind(reseller_id)
    .bind(since)
    .fetch_one(conn)
    .await?)
}

/// A referred customer as the reseller sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Customer {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Its plan's name.
    pub plan_name: String,
    /// Monthly recurring revenue: its plan's monthly price while a subscription is
    /// live, else 0; minor units of `currency`.
    pub mrr_minor: i64,
    /// The plan's currency.
    pub currency: String,
    /// Credits bought in paid top-ups.
    pub credits_bought: i64,
    /// When it was attributed.
    pub joined_at: OffsetDateTime,
    /// How.
    pub attributed_via: AttributionChannel,
    /// Its latest subscription's Stripe status, if it ever subscribed.
    pub subscription_status: Option<String>,
    /// The owner's email, masked as `j***@example.com` (first letter and domain) unless
    /// the customer shares it; masked in SQL, so the full address never leaves the
    /// database for a reseller who may not see it.
    pub email: String,
    /// Whether `email` is shown in full.
    pub email_shared: bool,
}

impl Customer {
    /// "Paying", "Past due", "Canceled" or "Free".
    pub fn status_label(&self) -> &'static str {
        match self.subscription_status.as_deref() {
            Some("active" | "trialing") => "Paying",
            Some("past_due" | "unpaid") => "Past due",
            Some("canceled" | "incomplete_expired") => "Canceled",
            _ => "Free",
        }
    }

    /// MRR as money.
    pub fn mrr(&self) -> Money {
        Money::new(self.mrr_minor, &self.currency)
    }
}

const CUSTOMER_SELECT: &str = "select w.workspace_id, w.name, p.name as plan_name,
        case when s.status in ('active', 'trialing', 'past_due') then p.monthly_price_minor else 0 end as mrr_minor,
        p.currency,
        coalesce((select sum(t.credits) from top_ups t
                   where t.workspace_id = w.workspace_id and t.status = 'paid'), 0)::bigint as credits_bought,
        w.attributed_at as joined_at, w.attributed_via, s.status::text as subscription_status,
        case when w.share_email_with_reseller then o.email
             else coalesce(left(o.email, 1) || '***@' || split_part(o.email, '@', 2), '***') end as email,
        w.share_email_with_reseller as email_shared
   from workspaces w
   join plans p on p.plan_code = w.plan_code
   left join lateral (select s.status from subscriptions s where s.workspace_id = w.workspace_id
                       order by s.current_period_start desc limit 1) s on true
   left join lateral (select u.email from memberships m join users u using (user_id)
                       where m.workspace_id = w.workspace_id
                       order by (m.role = 'owner') desc, m.created_at limit 1) o on true";

/// A page of referred customers, newest first. `search` matches the workspace name,
/// or the email of customers who share it (a masked email is not searchable: the
/// search must not tell whether an address is a customer).
pub async fn customers(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    search: &str,
    after: Option<Cursor>,
    limit: i64,
) -> anyhow::Result<Page<Customer>> {
    let pattern = format!(
        "%{}%",
        search
            .trim()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows = sqlx::query_as::<_, Customer>(&format!(
        "{CUSTOMER_SELECT}
          where w.reseller_id = $1
            and ($2 = '%%' or w.name ilike $2 or (w.share_email_with_reseller and o.email ilike $2))
            and ($3::timestamptz is null or (w.attributed_at, w.workspace_id) < ($3, $4))
          order by w.attributed_at desc, w.workspace_id desc
          limit $5"
    ))
    .bind(reseller_id)
    .bind(&pattern)
    .bind(after.map(|c| c.at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    Ok(page(rows, limit, |c| Cursor {
        at: c.joined_at,
        id: c.workspace_id.0,
    }))
}

/// One referred customer (`None`: not this reseller's).
pub async fn customer(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    workspace_id: WorkspaceId,
) -> anyhow::Result<Option<Customer>> {
    Ok(sqlx::query_as::<_, Customer>(&format!(
        "{CUSTOMER_SELECT} where w.reseller_id = $1 and w.workspace_id = $2"
    ))
    .bind(reseller_id)
    .bind(workspace_id)
    .fetch_optional(conn)
    .await?)
}

/// A commission or reversal as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommissionRow {
    /// Primary key.
    pub commission_id: CommissionId,
    /// The customer.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub workspace_name: String,
    /// Commission or reversal.
    pub kind: CommissionKind,
    /// Top-up or invoice.
    pub source: Source,
    /// `cs_...` or `in_...`.
    pub source_id: String,
    /// The payment net of tax (a reversal: the share withdrawn, negative), minor units.
    pub base_minor: i64,
    /// Basis points.
    pub rate_bps: i32,
    /// Minor units; negative for a reversal that takes back.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// Lifecycle.
    pub status: CommissionStatus,
    /// When the payment (or refund) was made.
    pub earned_at: OffsetDateTime,
    /// When it is (or was) approved.
    pub approve_after: OffsetDateTime,
    /// The payout that pays it.
    pub payout_id: Option<PayoutId>,
    /// When paid.
    pub paid_at: Option<OffsetDateTime>,
}

impl CommissionRow {
    /// The amount as money.
    pub fn amount(&self) -> Money {
        Money::new(self.amount_minor, &self.currency)
    }

    /// The rate for people (`"20 %"`).
    pub fn rate_label(&self) -> String {
        super::rate_label(self.rate_bps)
    }

    /// The payment (or withdrawn share) as money.
    pub fn base(&self) -> Money {
        Money::new(self.base_minor, &self.currency)
    }

    /// "Top-up", "Invoice", or "Refund of a top-up" for people.
    pub fn description(&self) -> &'static str {
        match (self.kind, self.source, self.amount_minor >= 0) {
            (CommissionKind::Commission, Source::TopUp, _) => "Credit top-up",
            (CommissionKind::Commission, Source::Invoice, _) => "Subscription invoice",
            (CommissionKind::Reversal, Source::TopUp, false) => "Refund of a top-up",
            (CommissionKind::Reversal, Source::Invoice, false) => "Refund of an invoice",
            (CommissionKind::Reversal, _, true) => "Dispute won: restored",
        }
    }
}

/// Filters of the commission list.
#[derive(Debug, Clone, Default)]
pub struct CommissionFilter {
    /// Only this status.
    pub status: Option<CommissionStatus>,
    /// Only payments in this month (its first day).
    pub month: Option<Date>,
    /// Only this customer.
    pub workspace_id: Option<WorkspaceId>,
    /// Only this payout's.
    pub payout_id: Option<PayoutId>,
}

const COMMISSION_SELECT: &str =
    "select c.commission_id, c.workspace_id, w.name as workspace_name, c.kind,
        c.source, c.source_id, c.base_minor, c.rate_bps, c.amount_minor, c.currency, c.status,
        c.earned_at, c.approve_after, c.payout_id, c.paid_at
   from commissions c join workspaces w using (workspace_id)";

/// A page of the reseller's commissions and reversals, newest first.
pub async fn commissions(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    filter: &CommissionFilter,
    after: Option<Cursor>,
    limit: i64,
) -> anyhow::Result<Page<CommissionRow>> {
    let rows = sqlx::query_as::<_, CommissionRow>(&format!(
        "{COMMISSION_SELECT}
          where c.reseller_id = $1
            and ($2::commission_status is null or c.status = $2)
            and ($3::date is null or (c.earned_at >= ($3::date at time zone 'UTC')
                                      and c.earned_at < (($3::date + interval '1 month') at time zone 'UTC')))
            and ($4::uuid is null or c.workspace_id = $4)
            and ($5::uuid is null or c.payout_id = $5)
            and ($6::timestamptz is null or (c.earned_at, c.commission_id) < ($6, $7))
          order by c.earned_at desc, c.commission_id desc
          limit $8"
    ))
    .bind(reseller_id)
    .bind(filter.status)
    .bind(filter.month)
    .bind(filter.workspace_id)
    .bind(filter.payout_id)
    .bind(after.map(|c| c.at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    Ok(page(rows, limit, |c| Cursor {
        at: c.earned_at,
        id: c.commission_id.0,
    }))
}

/// A payout as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    /// Primary key.
    pub payout_id: PayoutId,
    /// ISO 4217.
    pub currency: String,
    /// Net amount, minor units.
    pub amount_minor: i64,
    /// `draft` or `paid`.
    pub status: String,
    /// The transfer's reference once paid.
    pub reference: Option<String>,
    /// Drafted at (Stripe's clock).
    pub created_at: OffsetDateTime,
    /// When marked paid.
    pub paid_at: Option<OffsetDateTime>,
    /// How many commission lines it holds.
    pub lines: i64,
}

impl PayoutRow {
    /// The amount as money.
    pub fn amount(&self) -> Money {
        Money::new(self.amount_minor, &self.currency)
    }

    /// Whether it was marked paid.
    pub fn is_paid(&self) -> bool {
        self.status == "paid"
    }
}

const PAYOUT_SELECT: &str =
    "select p.payout_id, p.currency, p.amount_minor, p.status::text as status,
        p.reference, p.created_at, p.paid_at,
        (select count(*) from commissions c where c.payout_id = p.payout_id) as lines
   from payouts p";

/// A page of the reseller's payouts, newest first.
pub async fn payouts(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    after: Option<Cursor>,
    limit: i64,
) -> anyhow::Result<Page<PayoutRow>> {
    let rows = sqlx::query_as::<_, PayoutRow>(&format!(
        "{PAYOUT_SELECT}
          where p.reseller_id = $1
            and ($2::timestamptz is null or (p.created_at, p.payout_id) < ($2, $3))
          order by p.created_at desc, p.payout_id desc
          limit $4"
    ))
    .bind(reseller_id)
    .bind(after.map(|c| c.at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(conn)
    .await?;
    Ok(page(rows, limit, |p| Cursor {
        at: p.created_at,
        id: p.payout_id.0,
    }))
}

/// One payout (`None`: not this reseller's).
pub async fn payout(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    payout_id: PayoutId,
) -> anyhow::Result<Option<PayoutRow>> {
    Ok(sqlx::query_as::<_, PayoutRow>(&format!(
        "{PAYOUT_SELECT} where p.reseller_id = $1 and p.payout_id = $2"
    ))
    .bind(reseller_id)
    .bind(payout_id)
    .fetch_optional(conn)
    .await?)
}

/// Every line of a payout, oldest first (the CSV).
pub async fn payout_lines(
    conn: &mut PgConnection,
    reseller_id: ResellerId,
    payout_id: PayoutId,
) -> anyhow::Result<Vec<CommissionRow>> {
    Ok(sqlx::query_as::<_, CommissionRow>(&format!(
        "{COMMISSION_SELECT}
          where c.reseller_id = $1 and c.payout_id = $2
          order by c.earned_at, c.commission_id"
    ))
    .bind(reseller_id)
    .bind(payout_id)
    .fetch_all(conn)
    .await?)
}

/// A customer-written value made inert for spreadsheets: one starting with `=`, `+`,
/// `-`, `@`, tab or carriage return gets a leading `'` (OWASP "CSV Injection").
fn csv_text(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// A payout as CSV for the accountant: one line per commission, header
/// `commission_id,kind,customer,source,source_id,earned_at,approved_after,payment_net_minor,rate_bps,amount_minor,currency,payout_id,payout_reference`
/// (times RFC 3339 UTC; amounts in minor units, reversals negative), then a total line.
pub fn payout_csv(payout: &PayoutRow, lines: &[CommissionRow]) -> anyhow::Result<Vec<u8>> {
    let rfc = |t: &OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "commission_id",
        "kind",
        "customer",
        "source",
        "source_id",
        "earned_at",
        "approved_after",
        "payment_net_minor",
        "rate_bps",
        "amount_minor",
        "currency",
        "payout_id",
        "payout_reference",
    ])?;
    let reference = payout.reference.clone().unwrap_or_default();
    for c in lines {
        w.write_record([
            c.commission_id.to_string(),
            c.kind.as_str().to_owned(),
            csv_text(&c.workspace_name),
            c.source.as_str().to_owned(),
            c.source_id.clone(),
            rfc(&c.earned_at)?,
            rfc(&c.approve_after)?,
            c.base_minor.to_string(),
            c.rate_bps.to_string(),
            c.amount_minor.to_string(),
            c.currency.clone(),
            payout.payout_id.to_string(),
            reference.clone(),
        ])?;
    }
    w.write_record([
        "total".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        payout.amount_minor.to_string(),
        payout.currency.clone(),
        payout.payout_id.to_string(),
        reference,
    ])?;
    Ok(w.into_inner()?)
}

/// The reseller whose referral code is `code`, whatever its status (the back office
/// still pays a paused or closed one): `None` when there is none.
pub async fn reseller_by_code(
    conn: &mut PgConnection,
    code: &str,
) -> anyhow::Result<Option<ResellerId>> {
    Ok(
        sqlx::query_scalar("select reseller_id from resellers where referral_code = $1")
            .bind(code)
            .fetch_optional(conn)
            .await?,
    )
}

/// The reseller a payout belongs to, to scope the other queries by (`None`: no such
/// payout). For the back office only (`billfold payouts csv`): a reseller's own pages
/// resolve the reseller from the session and never ask this.
pub async fn payout_reseller(
    conn: &mut PgConnection,
    payout_id: PayoutId,
) -> anyhow::Result<Option<ResellerId>> {
    Ok(
        sqlx::query_scalar("select reseller_id from payouts where payout_id = $1")
            .bind(payout_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// A payout as the back office lists it: with its reseller's referral code.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackOfficePayout {
    /// The reseller's `{code}` of `/r/{code}`.
    pub referral_code: String,
    /// The payout.
    #[sqlx(flatten)]
    pub payout: PayoutRow,
}

/// Every payout of every reseller, or of one (`reseller`), newest first. For the back
/// office only (`billfold payouts list`): it crosses resellers, unlike [`payouts`].
pub async fn back_office_payouts(
    conn: &mut PgConnection,
    reseller: Option<ResellerId>,
) -> anyhow::Result<Vec<BackOfficePayout>> {
    Ok(sqlx::query_as::<_, BackOfficePayout>(
        "select r.referral_code, p.payout_id, p.currency, p.amount_minor, p.status::text as status,
                p.reference, p.created_at, p.paid_at,
                (select count(*) from commissions c where c.payout_id = p.payout_id) as lines
           from payouts p join resellers r using (reseller_id)
          where $1::uuid is null or p.reseller_id = $1
          order by p.created_at desc, p.payout_id desc",
    )
    .bind(reseller)
    .fetch_all(conn)
    .await?)
}
