//! Invoices: `GET /v1/invoices/{id}`, `GET /v1/invoices?customer=&subscription=`,
//! `POST /v1/invoices/create_preview`, and the hosted invoice page
//! (`GET /invoices/{id}`) and PDF (`GET /invoices/{id}/pdf`) that an invoice's
//! `hosted_invoice_url` and `invoice_pdf` point to.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::billing::{self, Proration};
use super::error::{ApiError, SandboxError};
use super::objects;
use super::params::{self, Param};
use super::{SandboxState, db, lists};
use crate::money::Money;

pub(crate) async fn retrieve_invoice(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    db::find_object(&mut conn, billing::INVOICE, &id)
        .await?
        .map(|invoice| Json(objects::public_view(invoice, &[])))
        .ok_or_else(|| ApiError::no_such("invoice", &id))
}

/// `GET /v1/invoices` with `customer`, `subscription`, `status`, `limit` and
/// `starting_after`, newest first.
pub(crate) async fn list_invoices(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let query = Param::root(&query);
    query.reject_unknown(
        &[
            "customer",
            "subscription",
            "status",
            "limit",
            "starting_after",
            "expand",
        ],
        &["created", "ending_before", "collection_method", "due_date"],
    )?;
    query.reject_expand()?;
    let mut matching = Map::new();
    if let Some(customer) = query.get("customer").string()? {
        matching.insert("customer".into(), json!(customer));
    }
    if let Some(subscription) = query.get("subscription").string()? {
        matching.insert(
            "parent".into(),
            json!({"subscription_details": {"subscription": subscription}}),
        );
    }
    if let Some(status) = query.get("status").string()? {
        matching.insert("status".into(), json!(status));
    }
    let mut conn = state.db.acquire().await?;
    let page = lists::page(
        &mut conn,
        &query,
        db::ObjectQuery {
            object_type: billing::INVOICE,
            matching: Value::Object(matching),
            ids: None,
            lookup_keys: None,
            starting_after: None,
            limit: 0,
        },
        "/v1/invoices",
    )
    .await?;
    Ok(Json(page))
}

/// `POST /v1/invoices/create_preview` for a subscription, optionally with a price
/// change (`subscription_details[items][0][id|price]`, `[proration_behavior]`,
/// `[proration_date]`). With `always_invoice` the preview is the invoice the change
/// would charge now (its proration lines); otherwise it is the next renewal invoice,
/// with any prorations added to it. The preview has no id and is not stored.
pub(crate) async fn create_preview(
    State(state): State<SandboxState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    form.reject_unknown(
        &["customer", "subscription", "subscription_details", "expand"],
        &[
            "invoice_items",
            "schedule",
            "schedule_details",
            "discounts",
            "automatic_tax",
        ],
    )?;
    form.reject_expand()?;
    let subscription_param = form.get("subscription");
    let subscription_id = subscription_param.required_string()?;
    let mut conn = state.db.acquire().await?;
    let subscription = db::find_object(&mut conn, billing::SUBSCRIPTION, subscription_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                Some("resource_missing"),
                subscription_param.name(),
                format!("No such subscription: '{subscription_id}'"),
            )
        })?;
    if let Some(customer) = form.get("customer").string()?
        && subscription["customer"] != json!(customer)
    {
        return Err(ApiError::invalid(
            None,
            "customer",
            format!("The subscription {subscription_id} does not belong to customer {customer}."),
        ));
    }
    let details = form.get("subscription_details");
    details.reject_unknown(
        &["items", "proration_behavior", "proration_date"],
        &[
            "cancel_at_period_end",
            "billing_cycle_anchor",
            "trial_end",
            "cancel_at",
        ],
    )?;
    let proration_param = details.get("proration_behavior");
    let proration = match proration_param.string()? {
        None => Proration::Create,
        Some(text) => Proration::parse(text).ok_or_else(|| {
            ApiError::invalid(
                None,
                proration_param.name(),
                format!("Invalid proration_behavior: {text}"),
            )
        })?,
    };
    let now = db::now(&mut conn).await?;
    let at = details.get("proration_date").integer()?.unwrap_or(now);
    let mut new_price = None;
    for item in details.get("items").list()? {
        let price = item.get("price");
        if let Some(price_id) = price.string()? {
            new_price = Some(billing::recurring_price(&mut conn, price.name(), price_id).await?);
        }
    }
    let period_end = billing::item(&subscription)["current_period_end"]
        .as_i64()
        .ok_or_else(|| SandboxError::Corrupt("subscription period".to_owned()))?;

    let mut lines = Vec::new();
    let mut after = subscription.clone();
    if let Some(price) = new_price
        && let Some(terms) = billing::PriceTerms::read(&price)
        && terms.id != billing::item_terms(&subscription)?.id
    {
        if proration != Proration::None {
            lines = billing::proration_lines(&mut conn, &subscription, &terms, at).await?;
        }
        after["items"]["data"][0]["price"] = price;
    }
    let preview = if proration == Proration::AlwaysInvoice {
        billing::draft_invoice(
            &mut conn,
            None,
            &subscription,
            "subscription_update",
            lines,
            (at, period_end),
        )
        .await?
    } else {
        let renewal = billing::renewal_preview(&mut conn, &after, lines).await?;
        let period = (period_end, renewal.1);
        billing::draft_invoice(
            &mut conn,
            None,
            &after,
            "subscription_cycle",
            renewal.0,
            period,
        )
        .await?
    };
    Ok(Json(preview))
}

struct LineRow {
    description: String,
    period: String,
    amount: String,
}

/// The hosted invoice page.
#[derive(Template, WebTemplate)]
#[template(path = "sandbox/invoice.html")]
struct InvoicePage {
    number: String,
    status: String,
    customer: String,
    created: String,
    lines: Vec<LineRow>,
    total: String,
    amount_due: String,
    pdf_url: String,
}

fn date(unix: Option<i64>) -> String {
    unix.and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
        .and_then(|at| {
            at.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_default()
}

pub(crate) async fn invoice_page(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let mut conn = state.db.acquire().await?;
    let Some(invoice) = db::find_object(&mut conn, billing::INVOICE, &id).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such invoice").into_response());
    };
    let currency = invoice["currency"].as_str().unwrap_or("eur");
    let money = |field: &Value| Money::new(field.as_i64().unwrap_or(0), currency).to_string();
    let lines = invoice["lines"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|line| LineRow {
            description: line["description"].as_str().unwrap_or_default().to_owned(),
            period: format!(
                "{} – {}",
                date(line["period"]["start"].as_i64()),
                date(line["period"]["end"].as_i64())
            ),
            amount: money(&line["amount"]),
        })
        .collect();
    let page = InvoicePage {
        number: invoice["number"].as_str().unwrap_or("draft").to_owned(),
        status: invoice["status"].as_str().unwrap_or_default().to_owned(),
        customer: invoice["customer_email"]
            .as_str()
            .or(invoice["customer"].as_str())
            .unwrap_or_default()
            .to_owned(),
        created: date(invoice["created"].as_i64()),
        lines,
        total: money(&invoice["total"]),
        amount_due: money(&invoice["amount_remaining"]),
        pdf_url: invoice["invoice_pdf"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    Ok(page.into_response())
}

/// The invoice as a one-page PDF (Helvetica text, no images).
pub(crate) async fn invoice_pdf(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let mut conn = state.db.acquire().await?;
    let Some(invoice) = db::find_object(&mut conn, billing::INVOICE, &id).await? else {
        return Ok((StatusCode::NOT_FOUND, "no such invoice").into_response());
    };
    let currency = invoice["currency"].as_str().unwrap_or("eur");
    let money = |field: &Value| Money::new(field.as_i64().unwrap_or(0), currency).to_string();
    let mut text = vec![
        format!("Invoice {}", invoice["number"].as_str().unwrap_or("draft")),
        format!("Status: {}", invoice["status"].as_str().unwrap_or_default()),
        format!("Date: {}", date(invoice["created"].as_i64())),
        String::new(),
    ];
    for line in invoice["lines"]["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        text.push(format!(
            "{}  {}",
            line["description"].as_str().unwrap_or_default(),
            money(&line["amount"])
        ));
    }
    text.push(String::new());
    text.push(format!("Total: {}", money(&invoice["total"])));
    text.push("billfold Stripe sandbox - no real money moves".to_owned());
    let filename = format!("{}.pdf", invoice["number"].as_str().unwrap_or("invoice"));
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        pdf(&text),
    )
        .into_response())
}

/// A minimal valid PDF 1.4 with one A4 page listing `lines` (non-ASCII characters
/// become `?`, as the built-in fonts are not Unicode).
fn pdf(lines: &[String]) -> Vec<u8> {
    let mut content = String::from("BT /F1 11 Tf 50 790 Td 14 TL\n");
    for line in lines {
        let escaped: String = line
            .chars()
            .map(|c| match c {
                '€' => "EUR ".to_owned(),
                '(' | ')' | '\\' => format!("\\{c}"),
                c if c.is_ascii() && !c.is_ascii_control() => c.to_string(),
                _ => "?".to_owned(),
            })
            .collect();
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
