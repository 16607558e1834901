//! Checkout sessions: the API (`POST /v1/checkout/sessions`, `GET .../{id}`,
//! `POST .../{id}/expire`) and the hosted page a buyer pays on
//! (`GET /checkout/{id}`, `POST /checkout/{id}/pay`).

use crate::money::Money;
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::error::{ApiError, ErrorType, SandboxError};
use super::middleware::RequestId;

use super::objects::{self, EventRequest, NewCheckoutSession, NewLineItem, NewSubscriptionData};
use super::params::{self, Param};
use super::{MOUNT_PATH, SandboxState, billing, db, events, payments};

const OBJECT_TYPE: &str = "checkout.session";

/// The placeholder Stripe replaces with the session id in `success_url`.
const SESSION_ID_PLACEHOLDER: &str = "{CHECKOUT_SESSION_ID}";

pub(crate) async fn create_session(
    State(state): State<SandboxState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = params::parse(&body);
    let form = Param::root(&form);
    let expand = expanded_fields(&form)?;
    let mut conn = state.db.acquire().await?;
    let new = read_new_session(&mut conn, &form).await?;
    let amount_total = new
        .line_items
        .iter()
        .try_fold(0_i64, |total, item| total.checked_add(item.amount))
        .ok_or_else(|| amount_too_large(&form.get("line_items")))?;

    let id = objects::new_id("cs_test_a1", 56);
    let url = format!("{}{MOUNT_PATH}/checkout/{id}", state.config.public_base_url);
    let session =
        objects::checkout_session(&id, db::now(&mut conn).await?, &url, amount_total, new)?;
    db::insert_object(&mut conn, &id, OBJECT_TYPE, &session).await?;
    Ok(Json(objects::public_view(session, &expand)))
}

/// Validates the create parameters as Stripe does, for `mode=payment` with inline
/// `price_data` (line items that name a catalog `price` or `product` come with
/// subscription support).
async fn read_new_session(
    conn: &mut PgConnection,
    form: &Param<'_>,
) -> Result<NewCheckoutSession, ApiError> {
    let mode = form.get("mode");
    match mode.required_string()? {
        "payment" => {}
        "subscription" => return read_new_subscription_session(conn, form).await,
        _ => {
            return Err(ApiError::invalid(
                None,
                mode.name(),
                "The billfold Stripe sandbox supports only mode=payment and \
                 mode=subscription."
                    .to_owned(),
            ));
        }
    }

    let items = form.get("line_items").list()?;
    if items.is_empty() {
        return Err(ApiError::missing_param("line_items"));
    }
    let mut currency: Option<String> = None;
    let mut line_items = Vec::with_capacity(items.len());
    for item in &items {
        let price_data = item.get("price_data");
        let unsupported = [
            item.get("price"),
            price_data.get("product"),
            price_data.get("unit_amount_decimal"),
        ];
        if let Some(param) = unsupported.iter().find(|param| param.is_present()) {
            return Err(ApiError::invalid(
                None,
                param.name(),
                format!(
                    "The billfold Stripe sandbox does not support {} yet; use price_data \
                     with unit_amount and product_data[name].",
                    param.name()
                ),
            ));
        }
        if !price_data.is_present() {
            return Err(ApiError::missing_param(price_data.name()));
        }
        let currency_param = price_data.get("currency");
        let item_currency = currency_param
            .currency()?
            .ok_or_else(|| ApiError::missing_param(currency_param.name()))?;
        match &currency {
            Some(first) if *first != item_currency => {
                return Err(ApiError::invalid(
                    None,
                    currency_param.name(),
                    "All line items must have the same currency.".to_owned(),
                ));
            }
            Some(_) => {}
            None => currency = Some(item_currency),
        }
        let unit_amount = integer_at_least(&price_data.get("unit_amount"), 0)?;
        let quantity = integer_at_least(&item.get("quantity"), 1)?;
        let description = price_data
            .get("product_data")
            .get("name")
            .required_string()?
            .to_owned();
        let amount = unit_amount
            .checked_mul(quantity)
            .ok_or_else(|| amount_too_large(item))?;
        line_items.push(NewLineItem {
            description,
            quantity,
            amount,
        });
    }

    let customer = form.get("customer").string()?.map(str::to_owned);
    let customer_email = form.get("customer_email").string()?.map(str::to_owned);
    if let Some(id) = &customer {
        if customer_email.is_some() {
            return Err(ApiError::invalid(
                Some("parameters_exclusive"),
                "customer_email",
                "You may only specify one of these parameters: customer, customer_email."
                    .to_owned(),
            ));
        }
        if db::find_object(conn, "customer", id).await?.is_none() {
            return Err(ApiError::invalid(
                Some("resource_missing"),
                "customer",
                format!("No such customer: '{id}'"),
            ));
        }
    }

    Ok(NewCheckoutSession {
        subscription: None,
        currency: currency.unwrap_or_default(),
        line_items,
        customer,
        customer_email,
        client_reference_id: form.get("client_reference_id").string()?.map(str::to_owned),
        metadata: form.get("metadata").metadata()?,
        success_url: http_url(&form.get("success_url"))?,
        cancel_url: http_url(&form.get("cancel_url"))?,
    })
}

/// `mode=subscription`: one line item naming a recurring catalog `price` (quantity
/// 1) for an existing `customer`, with `subscription_data[metadata]`.
async fn read_new_subscription_session(
    conn: &mut PgConnection,
    form: &Param<'_>,
) -> Result<NewCheckoutSession, ApiError> {
    let items = form.get("line_items").list()?;
    let [item] = items.as_slice() else {
        return Err(ApiError::invalid(
            None,
            "line_items",
            "The billfold Stripe sandbox supports exactly one line item with \
             mode=subscription."
                .to_owned(),
        ));
    };
    let price_param = item.get("price");
    let price_id = price_param.required_string()?;
    let price = billing::recurring_price(conn, price_param.name(), price_id).await?;
    let quantity = item.get("quantity");
    if quantity.integer()?.unwrap_or(1) != 1 {
        return Err(ApiError::invalid(
            None,
            quantity.name(),
            "The billfold Stripe sandbox supports only quantity 1 for subscriptions.".to_owned(),
        ));
    }
    let terms = billing::PriceTerms::read(&price)
        .ok_or_else(|| SandboxError::Corrupt("recurring price".to_owned()))?;
    let customer_param = form.get("customer");
    let customer = customer_param.required_string()?;
    if db::find_object(conn, "customer", customer).await?.is_none() {
        return Err(ApiError::invalid(
            Some("resource_missing"),
            customer_param.name(),
            format!("No such customer: '{customer}'"),
        ));
    }
    let description = db::find_object(conn, "product", &terms.product)
        .await?
        .and_then(|product| product["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| terms.id.clone());
    Ok(NewCheckoutSession {
        subscription: Some(NewSubscriptionData {
            price,
            metadata: form.get("subscription_data").get("metadata").metadata()?,
        }),
        currency: terms.currency,
        line_items: vec![NewLineItem {
            description,
            quantity: 1,
            amount: terms.unit_amount,
        }],
        customer: Some(customer.to_owned()),
        customer_email: None,
        client_reference_id: form.get("client_reference_id").string()?.map(str::to_owned),
        metadata: form.get("metadata").metadata()?,
        success_url: http_url(&form.get("success_url"))?,
        cancel_url: http_url(&form.get("cancel_url"))?,
    })
}

/// A required integer of at least `min`.
fn integer_at_least(param: &Param<'_>, min: i64) -> Result<i64, ApiError> {
    let value = param
        .integer()?
        .ok_or_else(|| ApiError::missing_param(param.name()))?;
    if value < min {
        return Err(ApiError::invalid(
            None,
            param.name(),
            format!("Invalid {}: must be at least {min}", param.name()),
        ));
    }
    Ok(value)
}

fn amount_too_large(param: &Param<'_>) -> ApiError {
    ApiError::invalid(
        Some("amount_too_large"),
        param.name(),
        "The total amount is too large.".to_owned(),
    )
}

/// An optional absolute http(s) URL, kept as given (with any `{CHECKOUT_SESSION_ID}`).
fn http_url(param: &Param<'_>) -> Result<Option<String>, ApiError> {
    let Some(text) = param.string()? else {
        return Ok(None);
    };
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(text.to_owned())),
        _ => Err(ApiError::invalid(
            Some("url_invalid"),
            param.name(),
            format!("Not a valid URL: {text}"),
        )),
    }
}

/// The `expand[]` list of a request.
fn expanded_fields<'a>(form: &Param<'a>) -> Result<Vec<&'a str>, ApiError> {
    let mut fields = Vec::new();
    for field in form.get("expand").list()? {
        fields.extend(field.string()?);
    }
    Ok(fields)
}

pub(crate) async fn retrieve_session(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = params::parse(query.unwrap_or_default().as_bytes());
    let mut conn = state.db.acquire().await?;
    let session = db::find_object(&mut conn, OBJECT_TYPE, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("checkout.session", &id))?;
    Ok(Json(objects::public_view(
        session,
        &expanded_fields(&Param::root(&query))?,
    )))
}

/// Expires an open session (`checkout.session.expired`); any other status is a 400.
pub(crate) async fn expire_session(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mut tx = state.db.begin().await?;
    let mut session = db::lock_object(&mut tx, OBJECT_TYPE, &id)
        .await?
        .ok_or_else(|| ApiError::no_such("checkout.session", &id))?;
    let status = StoredSession::read(&session)?.status;
    if status != "open" {
        return Err(ApiError::refused(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            Some("status_transition_invalid"),
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This \
                 Checkout Session has a status of \"{status}\"."
            ),
        ));
    }
    objects::expire_checkout_session(&mut session);
    db::update_object(&mut tx, &id, &session).await?;
    let request = events::api_request(request_id, &headers);
    events::emit(&mut tx, "checkout.session.expired", &session, request).await?;
    tx.commit().await?;
    state.new_event.notify_one();
    Ok(Json(objects::public_view(session, &[])))
}

/// The fields of a stored session the hosted page needs.
#[derive(Debug, Deserialize)]
struct StoredSession {
    status: String,
    currency: String,
    amount_total: i64,
    expires_at: i64,
    customer: Option<String>,
    customer_email: Option<String>,
    success_url: Option<String>,
    cancel_url: Option<String>,
    line_items: StoredList,
}

#[derive(Debug, Deserialize)]
struct StoredList {
    data: Vec<StoredItem>,
}

#[derive(Debug, Deserialize)]
struct StoredItem {
    description: Option<String>,
    quantity: i64,
    amount_total: i64,
    /// The catalog price of a subscription's item.
    price: Option<Value>,
}

impl StoredSession {
    fn read(session: &Value) -> Result<Self, SandboxError> {
        Self::deserialize(session).map_err(|_| SandboxError::Corrupt("checkout session".to_owned()))
    }
}

/// What the hosted page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageState {
    Open,
    Complete,
    Expired,
    NotFound,
}

struct ItemRow {
    description: String,
    quantity: i64,
    amount: String,
}

/// The hosted Checkout page.
#[derive(Template, WebTemplate)]
#[template(path = "sandbox/checkout.html")]
struct CheckoutPage {
    state: PageState,
    items: Vec<ItemRow>,
    total: String,
    customer_email: Option<String>,
    pay_action: String,
    /// Where "Cancel" (open) or "Back" (expired) leads.
    cancel_url: Option<String>,
    /// Where "Continue" leads once paid.
    return_url: Option<String>,
}

impl CheckoutPage {
    fn not_found() -> Response {
        let page = Self {
            state: PageState::NotFound,
            items: Vec::new(),
            total: String::new(),
            customer_email: None,
            pay_action: String::new(),
            cancel_url: None,
            return_url: None,
        };
        (StatusCode::NOT_FOUND, page).into_response()
    }

    fn new(id: &str, session: &StoredSession, now: i64) -> Self {
        let state = match session.status.as_str() {
            "complete" => PageState::Complete,
            "open" if now < session.expires_at => PageState::Open,
            _ => PageState::Expired,
        };
        Self {
            state,
            items: session
                .line_items
                .data
                .iter()
                .map(|item| ItemRow {
                    description: item.description.clone().unwrap_or_default(),
                    quantity: item.quantity,
                    // a plan shows its recurring price, e.g. "€49.00 / month"
                    amount: match item.price.as_ref().and_then(billing::PriceTerms::read) {
                        Some(terms) => billing::price_label(&terms),
                        None => Money::new(item.amount_total, &session.currency).to_string(),
                    },
                })
                .collect(),
            total: Money::new(session.amount_total, &session.currency).to_string(),
            customer_email: session.customer_email.clone(),
            pay_action: format!("{MOUNT_PATH}/checkout/{id}/pay"),
            cancel_url: session.cancel_url.clone(),
            return_url: session
                .success_url
                .as_ref()
                .map(|url| success_redirect(url, id)),
        }
    }
}

/// `success_url` with Stripe's `{CHECKOUT_SESSION_ID}` placeholder filled in.
fn success_redirect(success_url: &str, id: &str) -> String {
    success_url.replace(SESSION_ID_PLACEHOLDER, id)
}

pub(crate) async fn checkout_page(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let mut conn = state.db.acquire().await?;
    let Some(session) = db::find_object(&mut conn, OBJECT_TYPE, &id).await? else {
        return Ok(CheckoutPage::not_found());
    };
    let session = StoredSession::read(&session)?;
    Ok(CheckoutPage::new(&id, &session, db::now(&mut conn).await?).into_response())
}

/// Pays an open session with the test card: marks it complete and paid (in `payment`
/// mode with a succeeded payment intent and charge), emits
/// `checkout.session.completed` and redirects to `success_url`. Paying a completed
/// session again only redirects; an expired one shows the page again.
pub(crate) async fn pay(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
) -> Result<Response, SandboxError> {
    let mut tx = state.db.begin().await?;
    let Some(mut session) = db::lock_object(&mut tx, OBJECT_TYPE, &id).await? else {
        return Ok(CheckoutPage::not_found());
    };
    let stored = StoredSession::read(&session)?;
    let page = CheckoutPage::new(&id, &stored, db::now(&mut tx).await?);
    match page.state {
        PageState::Open => {
            let email = match (&stored.customer_email, &stored.customer) {
                (Some(email), _) => Some(email.clone()),
                (None, Some(customer)) => db::find_object(&mut tx, "customer", customer)
                    .await?
                    .and_then(|customer| customer["email"].as_str().map(str::to_owned)),
                (None, None) => None,
            };
            let subscription_data = session[objects::SUBSCRIPTION_DATA_FIELD].clone();
            if let (Value::Object(_), Some(customer)) = (&subscription_data, &stored.customer) {
                let metadata = match &subscription_data["metadata"] {
                    Value::Object(metadata) => metadata.clone(),
                    _ => serde_json::Map::new(),
                };
                let (subscription, invoice) = billing::subscribe_from_checkout(
                    &mut tx,
                    &state.config.public_base_url,
                    customer,
                    subscription_data["price"].clone(),
                    metadata,
                )
                .await?;
                session["subscription"] = Value::String(subscription);
                session["invoice"] = Value::String(invoice);
            }
            // a subscription's first payment belongs to its invoice, not to the session
            let payment_intent = if session["mode"] == "payment" {
                Some(payments::record_checkout_payment(&mut tx, &session, email.clone()).await?)
            } else {
                None
            };
            objects::complete_checkout_session(&mut session, email, payment_intent.as_deref());
            db::update_object(&mut tx, &id, &session).await?;
            events::emit(
                &mut tx,
                "checkout.session.completed",
                &session,
                EventRequest::default(),
            )
            .await?;
            tx.commit().await?;
            state.new_event.notify_one();
        }
        PageState::Complete => tx.rollback().await?,
        PageState::Expired | PageState::NotFound => {
            tx.rollback().await?;
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
    }
    let after_payment = page
        .return_url
        .unwrap_or_else(|| format!("{MOUNT_PATH}/checkout/{id}"));
    Ok(Redirect::to(&after_payment).into_response())
}
