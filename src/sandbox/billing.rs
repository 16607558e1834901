//! The life of a subscription, shared by the API, the hosted pages and the clock:
//! creating a subscription from a paid checkout session, invoicing (draft → open →
//! paid, or left open when the card is declined), plan changes with proration,
//! cancellation at period end, renewal, and the customer's test card.
//!
//! Every step runs in the caller's transaction and emits the events Stripe would, in
//! Stripe's order; the caller notifies the webhook worker after commit.

use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use time::{Month, OffsetDateTime};

use super::error::{ApiError, SandboxError};
use super::objects::{self, EventRequest, NewInvoice, NewInvoiceLine, NewSubscription};
use super::{MOUNT_PATH, db, events};

pub(crate) const SUBSCRIPTION: &str = "subscription";
pub(crate) const INVOICE: &str = "invoice";

/// The customer field that makes the customer's payments fail (`true`) or succeed.
const CARD_FAILS_FIELD: &str = "_sandbox_card_fails";

/// Proration lines a `create_prorations` change left for the next invoice.
const PENDING_LINES_FIELD: &str = "_sandbox_pending_lines";

/// How a subscription change is billed (`proration_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proration {
    /// Prorations wait for the next invoice.
    Create,
    /// Prorations are invoiced and charged at once.
    AlwaysInvoice,
    None,
}

impl Proration {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "create_prorations" => Some(Self::Create),
            "always_invoice" => Some(Self::AlwaysInvoice),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// The test cards a customer can pay with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    /// 4242 4242 4242 4242: every payment succeeds.
    Succeeding,
    /// 4000 0000 0000 0341: attaches, but every payment is declined.
    Declining,
}

/// The part of a price a subscription bills.
#[derive(Debug, Clone)]
pub(crate) struct PriceTerms {
    pub(crate) id: String,
    pub(crate) product: String,
    pub(crate) currency: String,
    pub(crate) unit_amount: i64,
    pub(crate) interval: String,
    pub(crate) interval_count: i64,
}

impl PriceTerms {
    /// The terms of a recurring price; `None` for a one-time or malformed price.
    pub(crate) fn read(price: &Value) -> Option<Self> {
        Some(Self {
            id: price["id"].as_str()?.to_owned(),
            product: price["product"].as_str()?.to_owned(),
            currency: price["currency"].as_str()?.to_owned(),
            unit_amount: price["unit_amount"].as_i64()?,
            interval: price["recurring"]["interval"].as_str()?.to_owned(),
            interval_count: price["recurring"]["interval_count"].as_i64()?,
        })
    }
}

/// `start` moved by `count` intervals. Months and years keep the day of the month,
/// clamped to the month's last day (Jan 31 + 1 month = Feb 28/29), as Stripe does.
pub(crate) fn add_interval(start: i64, interval: &str, count: i64) -> Result<i64, SandboxError> {
    let months = match interval {
        "day" => return Ok(start + count * 86_400),
        "week" => return Ok(start + count * 7 * 86_400),
        "month" => count,
        "year" => count * 12,
        _ => return Err(SandboxError::Corrupt(format!("price interval {interval}"))),
    };
    let at = OffsetDateTime::from_unix_timestamp(start)
        .map_err(|_| SandboxError::Unexpected("sandbox time out of range"))?;
    let month_index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1 + months;
    let year = i32::try_from(month_index.div_euclid(12))
        .map_err(|_| SandboxError::Unexpected("sandbox time out of range"))?;
    let month = u8::try_from(month_index.rem_euclid(12) + 1)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or(SandboxError::Unexpected("sandbox month out of range"))?;
    let day = at.day().min(time::util::days_in_month(month, year));
    let date = time::Date::from_calendar_date(year, month, day)
        .map_err(|_| SandboxError::Unexpected("sandbox date out of range"))?;
    Ok(at.replace_date(date).unix_timestamp())
}

/// The end of the billing period that starts at `period_start` for a subscription
/// anchored at `anchor`: the first `anchor + n` intervals after `period_start`.
fn next_period_end(
    anchor: i64,
    period_start: i64,
    terms: &PriceTerms,
) -> Result<i64, SandboxError> {
    let mut n = 1;
    loop {
        let end = add_interval(anchor, &terms.interval, n * terms.interval_count)?;
        if end > period_start {
            return Ok(end);
        }
        n += 1;
    }
}

/// `amount × remaining / period`, rounded half away from zero to minor units.
/// Stripe rounds each proration line this way and sums the rounded lines.
pub(crate) fn prorate(amount: i64, remaining: i64, period: i64) -> i64 {
    if period <= 0 {
        return 0;
    }
    let numerator = i128::from(amount) * i128::from(remaining.clamp(0, period));
    let period = i128::from(period);
    let half = period / 2;
    let rounded = if numerator >= 0 {
        (numerator + half) / period
    } else {
        (numerator - half) / period
    };
    i64::try_from(rounded).unwrap_or(0)
}

/// A product's name, or the price id when the product is gone.
async fn product_name(conn: &mut PgConnection, terms: &PriceTerms) -> Result<String, SandboxError> {
    Ok(db::find_object(conn, "product", &terms.product)
        .await?
        .and_then(|product| product["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| terms.id.clone()))
}

/// "€49.00 / month" style label of a price.
pub(crate) fn price_label(terms: &PriceTerms) -> String {
    let amount = crate::money::Money::new(terms.unit_amount, &terms.currency);
    if terms.interval_count == 1 {
        format!("{amount} / {}", terms.interval)
    } else {
        format!("{amount} / {} {}s", terms.interval_count, terms.interval)
    }
}

/// The subscription's single item.
pub(crate) fn item(subscription: &Value) -> &Value {
    &subscription["items"]["data"][0]
}

fn item_i64(subscription: &Value, field: &str) -> Result<i64, SandboxError> {
    item(subscription)[field]
        .as_i64()
        .ok_or_else(|| SandboxError::Corrupt(format!("subscription item {field}")))
}

pub(crate) fn item_terms(subscription: &Value) -> Result<PriceTerms, SandboxError> {
    PriceTerms::read(&item(subscription)["price"])
        .ok_or_else(|| SandboxError::Corrupt("subscription item price".to_owned()))
}

fn str_field<'a>(object: &'a Value, field: &str) -> Result<&'a str, SandboxError> {
    object[field]
        .as_str()
        .ok_or_else(|| SandboxError::Corrupt(format!("{} {field}", object["object"])))
}

/// A recurring price the customer may subscribe to, or the API error Stripe gives.
pub(crate) async fn recurring_price(
    conn: &mut PgConnection,
    param: &str,
    price_id: &str,
) -> Result<Value, ApiError> {
    let price = db::find_object(conn, "price", price_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                Some("resource_missing"),
                param,
                format!("No such price: '{price_id}'"),
            )
        })?;
    if PriceTerms::read(&price).is_none() {
        return Err(ApiError::invalid(
            None,
            param,
            format!("The price specified ({price_id}) is not a recurring price."),
        ));
    }
    if price["active"] != json!(true) {
        return Err(ApiError::invalid(
            None,
            param,
            format!("The price specified ({price_id}) is inactive."),
        ));
    }
    Ok(price)
}

/// The regular charge of a subscription item for one period.
async fn period_line(
    conn: &mut PgConnection,
    subscription: &Value,
) -> Result<NewInvoiceLine, SandboxError> {
    let terms = item_terms(subscription)?;
    Ok(NewInvoiceLine {
        description: format!(
            "1 × {} (at {})",
            product_name(conn, &terms).await?,
            price_label(&terms)
        ),
        amount: terms.unit_amount,
        price_id: terms.id.clone(),
        product_id: terms.product.clone(),
        unit_amount: terms.unit_amount,
        period_start: item_i64(subscription, "current_period_start")?,
        period_end: item_i64(subscription, "current_period_end")?,
        proration: false,
        subscription_item: str_field(item(subscription), "id")?.to_owned(),
    })
}

/// The two proration lines of switching `subscription`'s item to `new_price` at
/// `at`: unused time on the old price (negative) and remaining time on the new one.
pub(crate) async fn proration_lines(
    conn: &mut PgConnection,
    subscription: &Value,
    new_price: &PriceTerms,
    at: i64,
) -> Result<Vec<NewInvoiceLine>, SandboxError> {
    let old = item_terms(subscription)?;
    let start = item_i64(subscription, "current_period_start")?;
    let end = item_i64(subscription, "current_period_end")?;
    let at = at.clamp(start, end);
    let item_id = str_field(item(subscription), "id")?.to_owned();
    let when = OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|at| {
            at.format(time::macros::format_description!(
                "[day] [month repr:short] [year]"
            ))
            .ok()
        })
        .unwrap_or_default();
    Ok(vec![
        NewInvoiceLine {
            description: format!(
                "Unused time on {} after {when}",
                product_name(conn, &old).await?
            ),
            amount: -prorate(old.unit_amount, end - at, end - start),
            price_id: old.id.clone(),
            product_id: old.product.clone(),
            unit_amount: old.unit_amount,
            period_start: at,
            period_end: end,
            proration: true,
            subscription_item: item_id.clone(),
        },
        NewInvoiceLine {
            description: format!(
                "Remaining time on {} after {when}",
                product_name(conn, new_price).await?
            ),
            amount: prorate(new_price.unit_amount, end - at, end - start),
            price_id: new_price.id.clone(),
            product_id: new_price.product.clone(),
            unit_amount: new_price.unit_amount,
            period_start: at,
            period_end: end,
            proration: true,
            subscription_item: item_id,
        },
    ])
}

/// A draft invoice for `subscription` (not stored); `id` `None` makes a preview.
pub(crate) async fn draft_invoice(
    conn: &mut PgConnection,
    id: Option<&str>,
    subscription: &Value,
    billing_reason: &str,
    lines: Vec<NewInvoiceLine>,
    period: (i64, i64),
) -> Result<Value, SandboxError> {
    let customer_id = str_field(subscription, "customer")?;
    let customer = db::find_object(conn, "customer", customer_id).await?;
    let customer_field = |field: &str| {
        customer
            .as_ref()
            .and_then(|customer| customer[field].as_str().map(str::to_owned))
    };
    let new = NewInvoice {
        customer: customer_id.to_owned(),
        customer_email: customer_field("email"),
        customer_name: customer_field("name"),
        currency: str_field(subscription, "currency")?.to_owned(),
        subscription: str_field(subscription, "id")?.to_owned(),
        subscription_metadata: subscription["metadata"].clone(),
        billing_reason: billing_reason.to_owned(),
        period_start: period.0,
        period_end: period.1,
        lines,
    };
    objects::invoice(id, db::now(conn).await?, new)
}

/// Whether payments of `customer_id` are declined.
async fn card_fails(conn: &mut PgConnection, customer_id: &str) -> Result<bool, SandboxError> {
    Ok(db::find_object(conn, "customer", customer_id)
        .await?
        .is_some_and(|customer| customer[CARD_FAILS_FIELD] == json!(true)))
}

/// How an invoice is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payment {
    /// With the card just entered on the Checkout page: succeeds.
    CheckoutCard,
    /// With the customer's saved card: may be declined.
    SavedCard,
}

/// The events of an invoice just paid: the payment (a payment intent and charge,
/// announced by `invoice_payment.paid`), then `invoice.paid` and
/// `invoice.payment_succeeded`.
async fn emit_paid(
    conn: &mut PgConnection,
    invoice: &Value,
    request: &EventRequest,
) -> Result<(), SandboxError> {
    if let Some(invoice_payment) = super::payments::record_invoice_payment(conn, invoice).await? {
        events::emit(
            conn,
            "invoice_payment.paid",
            &invoice_payment,
            request.clone(),
        )
        .await?;
    }
    events::emit(conn, "invoice.paid", invoice, request.clone()).await?;
    events::emit(conn, "invoice.payment_succeeded", invoice, request.clone()).await?;
    Ok(())
}

/// Stores, finalizes and charges a draft invoice (hosted page and PDF under
/// `base_url`, the app's public base URL), emitting `invoice.created`,
/// `invoice.finalized` and then `invoice.paid` + `invoice.payment_succeeded`, or
/// `invoice.payment_failed` (the invoice stays open). Returns whether it was paid.
async fn issue_invoice(
    conn: &mut PgConnection,
    base_url: &str,
    mut invoice: Value,
    payment: Payment,
    request: &EventRequest,
) -> Result<bool, SandboxError> {
    let id = str_field(&invoice, "id")?.to_owned();
    let customer = str_field(&invoice, "customer")?.to_owned();
    db::insert_object(conn, &id, INVOICE, &invoice).await?;
    events::emit(conn, "invoice.created", &invoice, request.clone()).await?;

    // numbers count per customer; the customer row lock serialises numbering
    db::lock_object(conn, "customer", &customer).await?;
    let count = db::count_customer_invoices_numbered(conn, &customer).await?;
    let number = format!("SANDBOX-{:04}", count + 1);
    let now = db::now(conn).await?;
    objects::finalize_invoice(
        &mut invoice,
        &number,
        &format!("{base_url}{MOUNT_PATH}/invoices/{id}"),
        &format!("{base_url}{MOUNT_PATH}/invoices/{id}/pdf"),
        now,
    );
    db::update_object(conn, &id, &invoice).await?;
    events::emit(conn, "invoice.finalized", &invoice, request.clone()).await?;

    let declined = payment == Payment::SavedCard
        && invoice["amount_due"].as_i64().unwrap_or(0) > 0
        && card_fails(conn, &customer).await?;
    if declined {
        objects::fail_invoice_payment(&mut invoice);
        db::update_object(conn, &id, &invoice).await?;
        events::emit(conn, "invoice.payment_failed", &invoice, request.clone()).await?;
        return Ok(false);
    }
    objects::pay_invoice(&mut invoice, now);
    db::update_object(conn, &id, &invoice).await?;
    emit_paid(conn, &invoice, request).await?;
    Ok(true)
}

/// Creates the subscription a paid `mode=subscription` checkout session bought and
/// its first, paid invoice; emits `customer.subscription.created` and the invoice
/// events. Returns the subscription and invoice ids.
pub(crate) async fn subscribe_from_checkout(
    conn: &mut PgConnection,
    base_url: &str,
    customer: &str,
    price: Value,
    metadata: Map<String, Value>,
) -> Result<(String, String), SandboxError> {
    let terms = PriceTerms::read(&price)
        .ok_or_else(|| SandboxError::Corrupt("checkout subscription price".to_owned()))?;
    let now = db::now(conn).await?;
    let id = objects::new_id("sub_", 24);
    let invoice_id = objects::new_id("in_", 24);
    let new = NewSubscription {
        customer: customer.to_owned(),
        price,
        metadata,
        period_start: now,
        period_end: add_interval(now, &terms.interval, terms.interval_count)?,
        latest_invoice: invoice_id.clone(),
    };
    let subscription = objects::subscription(&id, &objects::new_id("si_", 14), now, new)?;
    db::insert_object(conn, &id, SUBSCRIPTION, &subscription).await?;
    let request = EventRequest::default();
    events::emit(
        conn,
        "customer.subscription.created",
        &subscription,
        request.clone(),
    )
    .await?;

    let line = period_line(conn, &subscription).await?;
    let period = (line.period_start, line.period_end);
    let invoice = draft_invoice(
        conn,
        Some(&invoice_id),
        &subscription,
        "subscription_create",
        vec![line],
        period,
    )
    .await?;
    issue_invoice(conn, base_url, invoice, Payment::CheckoutCard, &request).await?;
    Ok((id, invoice_id))
}

/// What an update of a subscription asks for.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionChange {
    /// The new price of the (single) item.
    pub(crate) price: Option<Value>,
    pub(crate) proration: Option<Proration>,
    /// When prorations are computed; now by default.
    pub(crate) proration_date: Option<i64>,
    pub(crate) cancel_at_period_end: Option<bool>,
    /// Metadata after the update.
    pub(crate) metadata: Option<Map<String, Value>>,
    /// `payment_behavior=pending_if_incomplete` (Stripe "pending updates"): a price
    /// change invoiced at once is applied only once that invoice is paid; until then
    /// it waits in `pending_update` and the subscription keeps its price and status.
    pub(crate) pending_if_incomplete: bool,
}

/// Seconds a pending update waits for its invoice to be paid (Stripe: 23 hours).
const PENDING_UPDATE_LIFETIME: i64 = 23 * 3600;

/// Applies `change` to a locked, stored `subscription`: emits
/// `customer.subscription.updated` when anything changed and, for a price change
/// with `always_invoice`, invoices and charges the prorations at once
/// (`billing_reason` `subscription_update`). Returns the updated subscription.
pub(crate) async fn update_subscription(
    conn: &mut PgConnection,
    base_url: &str,
    before: Value,
    change: SubscriptionChange,
    request: &EventRequest,
) -> Result<Value, SandboxError> {
    let id = str_field(&before, "id")?.to_owned();
    let now = db::now(conn).await?;
    let mut subscription = before.clone();
    let mut proration_invoice = None;

    if let Some(metadata) = change.metadata {
        subscription["metadata"] = Value::Object(metadata);
    }
    if let Some(cancel) = change.cancel_at_period_end {
        set_cancel_at_period_end(&mut subscription, cancel, now)?;
    }
    if let Some(price) = change.price {
        let new_terms = PriceTerms::read(&price)
            .ok_or_else(|| SandboxError::Corrupt("subscription update price".to_owned()))?;
        if new_terms.id != item_terms(&subscription)?.id {
            let proration = change.proration.unwrap_or(Proration::Create);
            let at = change.proration_date.unwrap_or(now);
            let lines = if proration == Proration::None {
                Vec::new()
            } else {
                proration_lines(conn, &subscription, &new_terms, at).await?
            };
            let charged = lines.iter().map(|l| l.amount).sum::<i64>() > 0;
            let customer = str_field(&subscription, "customer")?.to_owned();
            let pending = change.pending_if_incomplete
                && proration == Proration::AlwaysInvoice
                && charged
                && card_fails(conn, &customer).await?;
            let mut item = subscription["items"]["data"][0].clone();
            item["plan"] = objects::plan_from_price(&price);
            item["price"] = price;
            if pending {
                subscription["pending_update"] = json!({
                    "billing_cycle_anchor": null,
                    "expires_at": now + PENDING_UPDATE_LIFETIME,
                    "subscription_items": [item],
                    "trial_end": null,
                    "trial_from_plan": null,
                });
            } else {
                subscription["items"]["data"][0] = item;
            }
            match proration {
                Proration::None => {}
                Proration::Create => {
                    let mut pending = pending_lines(&subscription);
                    pending.extend(lines.iter().map(line_to_json));
                    subscription[PENDING_LINES_FIELD] = Value::Array(pending);
                }
                Proration::AlwaysInvoice => {
                    let mut all = take_pending_lines(&mut subscription)?;
                    all.extend(lines);
                    let invoice_id = objects::new_id("in_", 24);
                    subscription["latest_invoice"] = json!(invoice_id);
                    proration_invoice = Some((invoice_id, all, at));
                }
            }
        }
    }

    if subscription == before {
        return Ok(subscription);
    }
    db::update_object(conn, &id, &subscription).await?;
    events::emit_updated(
        conn,
        "customer.subscription.updated",
        &before,
        &subscription,
        request.clone(),
    )
    .await?;
    if let Some((invoice_id, lines, at)) = proration_invoice {
        let period = (at, item_i64(&subscription, "current_period_end")?);
        let invoice = draft_invoice(
            conn,
            Some(&invoice_id),
            &subscription,
            "subscription_update",
            lines,
            period,
        )
        .await?;
        let paid = issue_invoice(conn, base_url, invoice, Payment::SavedCard, request).await?;
        if !paid && subscription["pending_update"].is_null() {
            subscription = set_status(conn, subscription, "past_due", request).await?;
        }
    }
    Ok(subscription)
}

fn set_cancel_at_period_end(
    subscription: &mut Value,
    cancel: bool,
    now: i64,
) -> Result<(), SandboxError> {
    let end = item_i64(subscription, "current_period_end")?;
    subscription["cancel_at_period_end"] = json!(cancel);
    if cancel {
        subscription["cancel_at"] = json!(end);
        subscription["canceled_at"] = json!(now);
        subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    } else {
        subscription["cancel_at"] = Value::Null;
        subscription["canceled_at"] = Value::Null;
        subscription["cancellation_details"]["reason"] = Value::Null;
    }
    Ok(())
}

fn line_to_json(line: &NewInvoiceLine) -> Value {
    json!({
        "description": line.description,
        "amount": line.amount,
        "price_id": line.price_id,
        "product_id": line.product_id,
        "unit_amount": line.unit_amount,
        "period_start": line.period_start,
        "period_end": line.period_end,
        "subscription_item": line.subscription_item,
    })
}

fn pending_lines(subscription: &Value) -> Vec<Value> {
    subscription[PENDING_LINES_FIELD]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Removes and returns the prorations waiting for the next invoice.
fn take_pending_lines(subscription: &mut Value) -> Result<Vec<NewInvoiceLine>, SandboxError> {
    let pending = pending_lines(subscription);
    if let Value::Object(fields) = subscription {
        fields.remove(PENDING_LINES_FIELD);
    }
    pending
        .iter()
        .map(|line| {
            let text = |field: &str| line[field].as_str().map(str::to_owned);
            let number = |field: &str| line[field].as_i64();
            Some(NewInvoiceLine {
                description: text("description")?,
                amount: number("amount")?,
                price_id: text("price_id")?,
                product_id: text("product_id")?,
                unit_amount: number("unit_amount")?,
                period_start: number("period_start")?,
                period_end: number("period_end")?,
                proration: true,
                subscription_item: text("subscription_item")?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| SandboxError::Corrupt("pending proration line".to_owned()))
}

/// Changes the status and emits `customer.subscription.updated`.
async fn set_status(
    conn: &mut PgConnection,
    before: Value,
    status: &str,
    request: &EventRequest,
) -> Result<Value, SandboxError> {
    if before["status"] == json!(status) {
        return Ok(before);
    }
    let mut subscription = before.clone();
    subscription["status"] = json!(status);
    db::update_object(conn, str_field(&before, "id")?, &subscription).await?;
    events::emit_updated(
        conn,
        "customer.subscription.updated",
        &before,
        &subscription,
        request.clone(),
    )
    .await?;
    Ok(subscription)
}

/// Cancels a subscription at once (`DELETE /v1/subscriptions/{id}`, or at the end of
/// a period with `cancel_at_period_end`); emits `customer.subscription.deleted`.
pub(crate) async fn cancel_now(
    conn: &mut PgConnection,
    mut subscription: Value,
    at: i64,
    request: &EventRequest,
) -> Result<Value, SandboxError> {
    subscription["status"] = json!("canceled");
    subscription["ended_at"] = json!(at);
    if subscription["canceled_at"].is_null() {
        subscription["canceled_at"] = json!(at);
    }
    subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    if let Value::Object(fields) = &mut subscription {
        fields.remove(PENDING_LINES_FIELD);
    }
    db::update_object(conn, str_field(&subscription, "id")?, &subscription).await?;
    events::emit(
        conn,
        "customer.subscription.deleted",
        &subscription,
        request.clone(),
    )
    .await?;
    Ok(subscription)
}

/// Runs what is due at the end of `subscription`'s current period: deletion when it
/// cancels at period end, otherwise renewal — the period moves on, a
/// `subscription_cycle` invoice (with any pending prorations) is charged, and the
/// subscription is updated (active, or past_due when the card is declined).
pub(crate) async fn end_period(
    conn: &mut PgConnection,
    base_url: &str,
    subscription: Value,
) -> Result<(), SandboxError> {
    let request = EventRequest::default();
    let end = item_i64(&subscription, "current_period_end")?;
    if subscription["cancel_at_period_end"] == json!(true) {
        cancel_now(conn, subscription, end, &request).await?;
        return Ok(());
    }
    let before = subscription.clone();
    let mut subscription = subscription;
    let terms = item_terms(&subscription)?;
    let anchor = subscription["billing_cycle_anchor"].as_i64().unwrap_or(end);
    let new_end = next_period_end(anchor, end, &terms)?;
    subscription["items"]["data"][0]["current_period_start"] = json!(end);
    subscription["items"]["data"][0]["current_period_end"] = json!(new_end);
    let mut lines = take_pending_lines(&mut subscription)?;
    lines.push(period_line(conn, &subscription).await?);
    let invoice_id = objects::new_id("in_", 24);
    subscription["latest_invoice"] = json!(invoice_id);
    let invoice = draft_invoice(
        conn,
        Some(&invoice_id),
        &subscription,
        "subscription_cycle",
        lines,
        (end, new_end),
    )
    .await?;
    let paid = issue_invoice(conn, base_url, invoice, Payment::SavedCard, &request).await?;
    subscription["status"] = json!(if paid { "active" } else { "past_due" });
    db::update_object(conn, str_field(&subscription, "id")?, &subscription).await?;
    events::emit_updated(
        conn,
        "customer.subscription.updated",
        &before,
        &subscription,
        request,
    )
    .await?;
    Ok(())
}

/// The lines of `subscription`'s next renewal invoice — pending prorations, `extra`
/// lines, then the next period's charge — and that period's end.
pub(crate) async fn renewal_preview(
    conn: &mut PgConnection,
    subscription: &Value,
    extra: Vec<NewInvoiceLine>,
) -> Result<(Vec<NewInvoiceLine>, i64), SandboxError> {
    let mut next = subscription.clone();
    let end = item_i64(subscription, "current_period_end")?;
    let terms = item_terms(subscription)?;
    let anchor = subscription["billing_cycle_anchor"].as_i64().unwrap_or(end);
    let new_end = next_period_end(anchor, end, &terms)?;
    next["items"]["data"][0]["current_period_start"] = json!(end);
    next["items"]["data"][0]["current_period_end"] = json!(new_end);
    let mut lines = take_pending_lines(&mut next)?;
    lines.extend(extra);
    lines.push(period_line(conn, &next).await?);
    Ok((lines, new_end))
}

/// Gives `customer_id` a test card. A working card pays the customer's open
/// invoices at once (`invoice.paid`, `invoice.payment_succeeded`) and returns their
/// past_due subscriptions to active.
pub(crate) async fn set_test_card(
    conn: &mut PgConnection,
    customer_id: &str,
    card: TestCard,
    request: &EventRequest,
) -> Result<bool, SandboxError> {
    let Some(mut customer) = db::lock_object(conn, "customer", customer_id).await? else {
        return Ok(false);
    };
    customer[CARD_FAILS_FIELD] = json!(card == TestCard::Declining);
    db::update_object(conn, customer_id, &customer).await?;
    if card == TestCard::Declining {
        return Ok(true);
    }
    let now = db::now(conn).await?;
    let mut paid = Vec::new();
    for mut invoice in db::lock_open_invoices(conn, customer_id).await? {
        objects::pay_invoice(&mut invoice, now);
        let id = str_field(&invoice, "id")?.to_owned();
        db::update_object(conn, &id, &invoice).await?;
        emit_paid(conn, &invoice, request).await?;
        paid.push(id);
    }
    for mut subscription in db::lock_customer_subscriptions(conn, customer_id).await? {
        // A pending update whose invoice is now paid is applied (unless it expired).
        let waiting = subscription["pending_update"]["expires_at"]
            .as_i64()
            .is_some_and(|expires| expires > now);
        let its_invoice = subscription["latest_invoice"]
            .as_str()
            .is_some_and(|id| paid.iter().any(|p| p == id));
        if waiting && its_invoice {
            let before = subscription.clone();
            subscription["items"]["data"][0] =
                subscription["pending_update"]["subscription_items"][0].clone();
            subscription["pending_update"] = Value::Null;
            db::update_object(conn, str_field(&subscription, "id")?, &subscription).await?;
            events::emit_updated(
                conn,
                "customer.subscription.updated",
                &before,
                &subscription,
                request.clone(),
            )
            .await?;
        }
        if subscription["status"] == json!("past_due") {
            set_status(conn, subscription, "active", request).await?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn months_clamp_to_the_last_day() {
        // 2026-01-31 12:00:00 UTC
        let jan31 = 1_769_860_800;
        let feb = add_interval(jan31, "month", 1).unwrap();
        let feb = OffsetDateTime::from_unix_timestamp(feb).unwrap();
        assert_eq!(
            (feb.month(), feb.day(), feb.hour()),
            (Month::February, 28, 12)
        );
        let mar = add_interval(jan31, "month", 2).unwrap();
        assert_eq!(OffsetDateTime::from_unix_timestamp(mar).unwrap().day(), 31);
    }

    #[test]
    fn prorations_round_half_away_from_zero() {
        assert_eq!(prorate(4900, 15, 30), 2450);
        assert_eq!(prorate(1, 1, 2), 1);
        assert_eq!(prorate(-1, 1, 2), -1);
        assert_eq!(prorate(9900, 20, 30), 6600);
        assert_eq!(prorate(4900, 40, 30), 4900);
    }
}
