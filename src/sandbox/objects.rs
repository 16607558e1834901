//! Stripe objects in their real JSON shapes (API version `2026-09-30.endive`).
//!
//! Each object starts from Stripe's official example in `fixtures/` (copied verbatim
//! from stripe/openapi `openapi/fixtures3.json`, MIT, Copyright (c) 2011- Stripe, Inc.;
//! see `fixtures/SOURCE.md`) and is patched: ids, timestamps, amounts, urls and
//! metadata are set, and the generator's placeholder values are replaced by what a
//! fresh object really holds. A patch may only overwrite a field the fixture has, so
//! a typo cannot invent a field async-stripe would not read.

use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::{Map, Value, json};

use super::error::SandboxError;

/// The Stripe API version whose shapes the sandbox serves.
pub(crate) const API_VERSION: &str = "2026-09-30.endive";

/// How long a checkout session stays open (Stripe's default: 24 hours).
const CHECKOUT_SESSION_LIFETIME_SECS: i64 = 24 * 60 * 60;

const CUSTOMER_FIXTURE: &str = include_str!("fixtures/customer.json");
const CHECKOUT_SESSION_FIXTURE: &str = include_str!("fixtures/checkout.session.json");
const EVENT_FIXTURE: &str = include_str!("fixtures/event.json");
const PRODUCT_FIXTURE: &str = include_str!("fixtures/product.json");
const PRICE_FIXTURE: &str = include_str!("fixtures/price.json");

/// A new Stripe-style id: `prefix` followed by `len` random letters and digits.
pub(crate) fn new_id(prefix: &str, len: usize) -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{random}")
}

/// A fixture whose fields may be overwritten.
struct Fixture {
    name: &'static str,
    fields: Map<String, Value>,
}

impl Fixture {
    fn load(name: &'static str, text: &str) -> Result<Self, SandboxError> {
        match serde_json::from_str(text)? {
            Value::Object(fields) => Ok(Self { name, fields }),
            _ => Err(SandboxError::Corrupt(format!("fixture {name}"))),
        }
    }

    fn set(&mut self, field: &str, value: Value) -> Result<&mut Self, SandboxError> {
        match self.fields.get_mut(field) {
            Some(slot) => {
                *slot = value;
                Ok(self)
            }
            None => Err(SandboxError::Corrupt(format!(
                "fixture {} has no field {field}",
                self.name
            ))),
        }
    }

    fn into_value(self) -> Value {
        Value::Object(self.fields)
    }
}

/// Parameters of `POST /v1/customers` the sandbox keeps.
#[derive(Debug)]
pub(crate) struct NewCustomer {
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) metadata: Map<String, Value>,
}

pub(crate) fn customer(id: &str, created: i64, new: NewCustomer) -> Result<Value, SandboxError> {
    let mut customer = Fixture::load("customer", CUSTOMER_FIXTURE)?;
    customer
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("email", json!(new.email))?
        .set("name", json!(new.name))?
        .set("description", json!(new.description))?
        .set("phone", json!(new.phone))?
        .set("metadata", Value::Object(new.metadata))?
        // a new customer has no address, currency, discount or shipping yet
        .set("address", Value::Null)?
        .set("currency", Value::Null)?
        .set("discount", Value::Null)?
        .set("shipping", Value::Null)?
        .set("invoice_prefix", json!(new_id("", 8).to_uppercase()))?;
    Ok(customer.into_value())
}

/// Parameters of `POST /v1/products` the sandbox keeps.
#[derive(Debug)]
pub(crate) struct NewProduct {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) active: bool,
    pub(crate) metadata: Map<String, Value>,
}

/// A product as Stripe creates it through the API: a `service` with no default
/// price, images, marketing features, dimensions, tax code or statement descriptor.
pub(crate) fn product(id: &str, created: i64, new: NewProduct) -> Result<Value, SandboxError> {
    let mut product = Fixture::load("product", PRODUCT_FIXTURE)?;
    product
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("updated", json!(created))?
        .set("name", json!(new.name))?
        .set("description", json!(new.description))?
        .set("active", json!(new.active))?
        .set("metadata", Value::Object(new.metadata))?
        .set("livemode", json!(false))?
        .set("type", json!("service"))?
        .set("default_price", Value::Null)?
        .set("images", json!([]))?
        .set("marketing_features", json!([]))?
        .set("package_dimensions", Value::Null)?
        .set("shippable", Value::Null)?
        .set("statement_descriptor", Value::Null)?
        .set("tax_code", Value::Null)?
        .set("unit_label", Value::Null)?
        .set("url", Value::Null)?;
    Ok(product.into_value())
}

/// `recurring[...]` of `POST /v1/prices`.
#[derive(Debug)]
pub(crate) struct NewRecurring {
    /// `day`, `week`, `month` or `year`.
    pub(crate) interval: String,
    pub(crate) interval_count: i64,
}

/// Parameters of `POST /v1/prices` the sandbox keeps.
#[derive(Debug)]
pub(crate) struct NewPrice {
    pub(crate) product: String,
    pub(crate) currency: String,
    pub(crate) unit_amount: i64,
    /// `None` makes a `one_time` price.
    pub(crate) recurring: Option<NewRecurring>,
    pub(crate) lookup_key: Option<String>,
    pub(crate) nickname: Option<String>,
    pub(crate) active: bool,
    pub(crate) metadata: Map<String, Value>,
}

/// A `per_unit` price with a whole `unit_amount`, licensed usage when recurring, no
/// tiers, tax behaviour, quantity transform or custom amount.
pub(crate) fn price(id: &str, created: i64, new: NewPrice) -> Result<Value, SandboxError> {
    let (price_type, recurring) = match new.recurring {
        Some(recurring) => (
            "recurring",
            json!({
                "interval": recurring.interval,
                "interval_count": recurring.interval_count,
                "meter": null,
                "usage_type": "licensed",
                "trial_period_days": null,
            }),
        ),
        None => ("one_time", Value::Null),
    };
    let mut price = Fixture::load("price", PRICE_FIXTURE)?;
    price
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("product", json!(new.product))?
        .set("currency", json!(new.currency))?
        .set("unit_amount", json!(new.unit_amount))?
        .set("unit_amount_decimal", json!(new.unit_amount.to_string()))?
        .set("type", json!(price_type))?
        .set("recurring", recurring)?
        .set("lookup_key", json!(new.lookup_key))?
        .set("nickname", json!(new.nickname))?
        .set("active", json!(new.active))?
        .set("metadata", Value::Object(new.metadata))?
        .set("livemode", json!(false))?
        .set("billing_scheme", json!("per_unit"))?
        .set("custom_unit_amount", Value::Null)?
        .set("tax_behavior", json!("unspecified"))?
        .set("tiers_mode", Value::Null)?
        .set("transform_quantity", Value::Null)?;
    Ok(price.into_value())
}

/// A page of a list endpoint: `{"object": "list", "data", "has_more", "url"}`.
pub(crate) fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "url": url,
    })
}

/// An update event's `data.previous_attributes`: the old value of every top-level
/// field that changed; for `metadata`, only the keys that changed (`null` for a key
/// that was added), as Stripe reports them.
pub(crate) fn previous_attributes(old: &Value, new: &Value) -> Value {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return json!({});
    };
    let mut previous = Map::new();
    for (field, new_value) in new {
        let old_value = old.get(field).unwrap_or(&Value::Null);
        if old_value == new_value {
            continue;
        }
        let changed = match (field.as_str(), old_value, new_value) {
            ("metadata", Value::Object(old_map), Value::Object(new_map)) => Value::Object(
                old_map
                    .keys()
                    .chain(new_map.keys())
                    .filter(|key| old_map.get(*key) != new_map.get(*key))
                    .map(|key| {
                        (
                            key.clone(),
                            old_map.get(key).cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            ),
            _ => old_value.clone(),
        };
        previous.insert(field.clone(), changed);
    }
    Value::Object(previous)
}

/// One `line_items[i]` of a checkout session, from inline `price_data`.
#[derive(Debug)]
pub(crate) struct NewLineItem {
    /// The product name.
    pub(crate) description: String,
    pub(crate) quantity: i64,
    /// `unit_amount × quantity` in minor units.
    pub(crate) amount: i64,
}

/// What a `mode=subscription` checkout session subscribes to.
#[derive(Debug)]
pub(crate) struct NewSubscriptionData {
    /// The recurring price object of `line_items[0][price]`.
    pub(crate) price: Value,
    /// `subscription_data[metadata]`.
    pub(crate) metadata: Map<String, Value>,
}

/// Where a `mode=subscription` session keeps what it subscribes to (never shown).
pub(crate) const SUBSCRIPTION_DATA_FIELD: &str = "_sandbox_subscription_data";

/// Parameters of `POST /v1/checkout/sessions` the sandbox keeps.
#[derive(Debug)]
pub(crate) struct NewCheckoutSession {
    /// `Some` for `mode=subscription`, `None` for `mode=payment`.
    pub(crate) subscription: Option<NewSubscriptionData>,
    pub(crate) currency: String,
    pub(crate) line_items: Vec<NewLineItem>,
    pub(crate) customer: Option<String>,
    pub(crate) customer_email: Option<String>,
    pub(crate) client_reference_id: Option<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) success_url: Option<String>,
    pub(crate) cancel_url: Option<String>,
}

/// An open, unpaid checkout session whose hosted page is `url`.
pub(crate) fn checkout_session(
    id: &str,
    created: i64,
    url: &str,
    amount_total: i64,
    new: NewCheckoutSession,
) -> Result<Value, SandboxError> {
    let items: Vec<Value> = new
        .line_items
        .iter()
        .map(|item| {
            json!({
                "id": new_id("li_", 24),
                "object": "item",
                "adjustable_quantity": null,
                "amount_discount": 0,
                "amount_subtotal": item.amount,
                "amount_tax": 0,
                "amount_total": item.amount,
                "currency": new.currency,
                "description": item.description,
                "metadata": {},
                "price": new.subscription.as_ref().map(|data| data.price.clone()),
                "quantity": item.quantity,
            })
        })
        .collect();
    let mut session = Fixture::load("checkout.session", CHECKOUT_SESSION_FIXTURE)?;
    session
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set(
            "expires_at",
            json!(created + CHECKOUT_SESSION_LIFETIME_SECS),
        )?
        .set("url", json!(url))?
        .set(
            "mode",
            json!(if new.subscription.is_some() {
                "subscription"
            } else {
                "payment"
            }),
        )?
        .set("ui_mode", json!("hosted_page"))?
        .set("status", json!("open"))?
        .set("payment_status", json!("unpaid"))?
        .set("payment_intent", Value::Null)?
        .set("currency", json!(new.currency))?
        .set("amount_subtotal", json!(amount_total))?
        .set("amount_total", json!(amount_total))?
        .set(
            "total_details",
            json!({"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}),
        )?
        .set("customer", json!(new.customer))?
        .set("customer_email", json!(new.customer_email))?
        .set(
            "customer_creation",
            json!(if new.customer.is_some() {
                None
            } else {
                Some("if_required")
            }),
        )?
        .set("customer_details", Value::Null)?
        .set("client_reference_id", json!(new.client_reference_id))?
        .set("metadata", Value::Object(new.metadata))?
        .set("success_url", json!(new.success_url))?
        .set("cancel_url", json!(new.cancel_url))?
        // no tax, shipping, consent, currency conversion or invoice in the sandbox
        .set("adaptive_pricing", json!({"enabled": false}))?
        .set("after_expiration", Value::Null)?
        .set(
            "automatic_tax",
            json!({"enabled": false, "liability": null, "status": null, "provider": null}),
        )?
        .set("collected_information", Value::Null)?
        .set("consent", Value::Null)?
        .set("consent_collection", Value::Null)?
        .set("currency_conversion", Value::Null)?
        .set(
            "custom_text",
            json!({"after_submit": null, "shipping_address": null, "submit": null,
                   "terms_of_service_acceptance": null}),
        )?
        .set(
            "invoice_creation",
            json!({"enabled": false, "invoice_data": {
                "account_tax_ids": null, "custom_fields": null, "description": null,
                "footer": null, "issuer": null, "metadata": {}, "rendering_options": null}}),
        )?
        .set("managed_payments", json!({"enabled": false}))?
        .set("payment_method_configuration_details", Value::Null)?
        .set("shipping_address_collection", Value::Null)?
        .set("shipping_cost", Value::Null)?;
    session.fields.insert(
        "line_items".into(),
        json!({
            "object": "list",
            "data": items,
            "has_more": false,
            "url": format!("/v1/checkout/sessions/{id}/line_items"),
        }),
    );
    if let Some(data) = new.subscription {
        session.fields.insert(
            SUBSCRIPTION_DATA_FIELD.into(),
            json!({"price": data.price, "metadata": data.metadata}),
        );
    }
    Ok(session.into_value())
}

/// Marks a checkout session paid: complete, with the buyer's details and (in
/// `payment` mode) the payment intent that paid it, as Stripe leaves it after a
/// successful card payment. Like Stripe, a session that is no longer open has no `url`.
pub(crate) fn complete_checkout_session(
    session: &mut Value,
    email: Option<String>,
    payment_intent: Option<&str>,
) {
    session["status"] = json!("complete");
    session["url"] = Value::Null;
    session["payment_status"] = json!("paid");
    // a subscription's first payment belongs to its invoice, not to the session
    if let Some(payment_intent) = payment_intent {
        session["payment_intent"] = json!(payment_intent);
    }
    session["customer_details"] = json!({
        "address": null,
        "business_name": null,
        "email": email,
        "individual_name": null,
        "name": null,
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": [],
    });
}

/// Marks an open checkout session expired.
pub(crate) fn expire_checkout_session(session: &mut Value) {
    session["status"] = json!("expired");
    session["url"] = Value::Null;
}

/// The API request that caused an event (`event.request`).
#[derive(Debug, Clone, Default)]
pub(crate) struct EventRequest {
    pub(crate) id: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

/// An event about `object` (already in its public view); `*.updated` events carry
/// the changed fields' old values in `previous_attributes`.
pub(crate) fn event(
    id: &str,
    created: i64,
    event_type: &str,
    object: Value,
    previous_attributes: Option<Value>,
    request: EventRequest,
) -> Result<Value, SandboxError> {
    let mut data = json!({ "object": object });
    if let Some(previous) = previous_attributes {
        data["previous_attributes"] = previous;
    }
    let mut event = Fixture::load("event", EVENT_FIXTURE)?;
    event
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("api_version", json!(API_VERSION))?
        .set("type", json!(event_type))?
        .set("data", data)?
        .set("livemode", json!(false))?
        .set("pending_webhooks", json!(1))?
        .set(
            "request",
            json!({"id": request.id, "idempotency_key": request.idempotency_key}),
        )?;
    Ok(event.into_value())
}

/// Fields Stripe includes only when a request expands them, by object type: a
/// session's `line_items`, and a charge's `refunds` (not expanded by default since
/// API version 2022-11-15).
const EXPANDABLE_ONLY: &[(&str, &str)] =
    &[("checkout.session", "line_items"), ("charge", "refunds")];

/// The object as the API returns it: expandable-only fields ([`EXPANDABLE_ONLY`]) are
/// left out unless the request asked for them with `expand[]`, and fields only the
/// sandbox reads ([`HIDDEN_FIELD_PREFIX`]) always. Events carry this view too.
pub(crate) fn public_view(mut object: Value, expand: &[&str]) -> Value {
    if let Value::Object(fields) = &mut object {
        let object_type = fields
            .get("object")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for (of_type, field) in EXPANDABLE_ONLY {
            if *of_type == object_type && !expand.contains(field) {
                fields.remove(*field);
            }
        }
        fields.retain(|field, _| !field.starts_with(HIDDEN_FIELD_PREFIX));
    }
    object
}

const SUBSCRIPTION_FIXTURE: &str = include_str!("fixtures/subscription.json");
const INVOICE_FIXTURE: &str = include_str!("fixtures/invoice.json");
const PORTAL_SESSION_FIXTURE: &str = include_str!("fixtures/billing_portal.session.json");

/// Fields of a stored object that only the sandbox reads (e.g. a customer's test
/// card); [`public_view`] leaves them out of every reply and event.
pub(crate) const HIDDEN_FIELD_PREFIX: &str = "_sandbox_";

/// A new subscription with one item.
#[derive(Debug)]
pub(crate) struct NewSubscription {
    pub(crate) customer: String,
    /// The price object, embedded in the item as Stripe does.
    pub(crate) price: Value,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) period_start: i64,
    pub(crate) period_end: i64,
    pub(crate) latest_invoice: String,
}

/// The legacy `plan` Stripe still embeds in a subscription item, derived from its price.
pub(crate) fn plan_from_price(price: &Value) -> Value {
    json!({
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "id": price["id"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": null,
        "nickname": price["nickname"],
        "object": "plan",
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed",
    })
}

/// An active subscription: no trial, discount, tax, schedule or pending update.
pub(crate) fn subscription(
    id: &str,
    item_id: &str,
    created: i64,
    new: NewSubscription,
) -> Result<Value, SandboxError> {
    let item = json!({
        "billing_thresholds": null,
        "created": created,
        "current_period_end": new.period_end,
        "current_period_start": new.period_start,
        "discounts": [],
        "id": item_id,
        "metadata": {},
        "object": "subscription_item",
        "plan": plan_from_price(&new.price),
        "price": new.price,
        "quantity": 1,
        "subscription": id,
        "tax_rates": [],
    });
    let mut subscription = Fixture::load("subscription", SUBSCRIPTION_FIXTURE)?;
    subscription
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("start_date", json!(created))?
        .set("billing_cycle_anchor", json!(new.period_start))?
        .set("billing_cycle_anchor_config", Value::Null)?
        .set("currency", item["price"]["currency"].clone())?
        .set("customer", json!(new.customer))?
        .set("status", json!("active"))?
        .set("metadata", Value::Object(new.metadata))?
        .set("latest_invoice", json!(new.latest_invoice))?
        .set(
            "items",
            json!({
                "object": "list",
                "data": [item],
                "has_more": false,
                "url": format!("/v1/subscription_items?subscription={id}"),
            }),
        )?
        .set("cancel_at", Value::Null)?
        .set("canceled_at", Value::Null)?
        .set("cancel_at_period_end", json!(false))?
        .set(
            "cancellation_details",
            json!({"comment": null, "feedback": null, "reason": null}),
        )?
        .set("ended_at", Value::Null)?
        .set("livemode", json!(false))?
        .set(
            "automatic_tax",
            json!({"enabled": false, "liability": null, "disabled_reason": null}),
        )?
        .set(
            "invoice_settings",
            json!({"account_tax_ids": null, "issuer": {"type": "self"}}),
        )?
        .set("next_pending_invoice_item_invoice", Value::Null)?
        .set("pause_collection", Value::Null)?
        .set(
            "payment_settings",
            json!({"payment_method_options": null, "payment_method_types": null,
                   "save_default_payment_method": "off"}),
        )?
        .set("pending_invoice_item_interval", Value::Null)?
        .set("pending_update", Value::Null)?
        .set("transfer_data", Value::Null)?
        .set("trial_end", Value::Null)?
        .set("trial_start", Value::Null)?
        .set("billing_thresholds", Value::Null)?
        .set("billing_mode", json!({"type": "classic", "flexible": null}))?
        .set("managed_payments", json!({"enabled": false}))?
        .set("billing_schedules", json!([]))?;
    Ok(subscription.into_value())
}

/// One line of a new invoice.
#[derive(Debug, Clone)]
pub(crate) struct NewInvoiceLine {
    pub(crate) description: String,
    /// Minor units; negative for unused time credited back.
    pub(crate) amount: i64,
    pub(crate) price_id: String,
    pub(crate) product_id: String,
    pub(crate) unit_amount: i64,
    pub(crate) period_start: i64,
    pub(crate) period_end: i64,
    /// A proration (an invoice item) rather than the item's regular charge.
    pub(crate) proration: bool,
    pub(crate) subscription_item: String,
}

/// A new subscription invoice.
#[derive(Debug)]
pub(crate) struct NewInvoice {
    pub(crate) customer: String,
    pub(crate) customer_email: Option<String>,
    pub(crate) customer_name: Option<String>,
    pub(crate) currency: String,
    pub(crate) subscription: String,
    pub(crate) subscription_metadata: Value,
    /// `subscription_create`, `subscription_cycle` or `subscription_update`.
    pub(crate) billing_reason: String,
    pub(crate) period_start: i64,
    pub(crate) period_end: i64,
    pub(crate) lines: Vec<NewInvoiceLine>,
}

/// A draft invoice (`id` `None` makes a preview, which has no id, as on Stripe).
pub(crate) fn invoice(
    id: Option<&str>,
    created: i64,
    new: NewInvoice,
) -> Result<Value, SandboxError> {
    let total: i64 = new.lines.iter().map(|line| line.amount).sum();
    // a negative total is credited to the customer's balance; nothing is due
    let amount_due = total.max(0);
    let lines: Vec<Value> = new
        .lines
        .iter()
        .map(|line| {
            let parent = if line.proration {
                json!({
                    "type": "invoice_item_details",
                    "invoice_item_details": {
                        "invoice_item": new_id("ii_", 24),
                        "proration": true,
                        "proration_details": {"credited_items": null},
                        "subscription": new.subscription,
                    },
                    "subscription_item_details": null,
                })
            } else {
                json!({
                    "type": "subscription_item_details",
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null,
                        "proration": false,
                        "proration_details": {"credited_items": null},
                        "subscription": new.subscription,
                        "subscription_item": line.subscription_item,
                    },
                })
            };
            json!({
                "id": new_id("il_", 24),
                "object": "line_item",
                "amount": line.amount,
                "currency": new.currency,
                "description": line.description,
                "discount_amounts": [],
                "discountable": !line.proration,
                "discounts": [],
                "invoice": id,
                "livemode": false,
                "metadata": {},
                "parent": parent,
                "period": {"start": line.period_start, "end": line.period_end},
                "pretax_credit_amounts": [],
                "pricing": {
                    "type": "price_details",
                    "price_details": {"price": line.price_id, "product": line.product_id},
                    "unit_amount_decimal": line.unit_amount.to_string(),
                },
                "quantity": 1,
                "quantity_decimal": "1",
                "subscription": new.subscription,
                "subtotal": line.amount,
                "taxes": [],
            })
        })
        .collect();
    let lines_url = match id {
        Some(id) => format!("/v1/invoices/{id}/lines"),
        None => "/v1/invoices/create_preview/lines".to_owned(),
    };
    let mut invoice = Fixture::load("invoice", INVOICE_FIXTURE)?;
    invoice
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("account_country", json!("DE"))?
        .set("account_name", json!("billfold"))?
        .set("currency", json!(new.currency))?
        .set("customer", json!(new.customer))?
        .set("customer_email", json!(new.customer_email))?
        .set("customer_name", json!(new.customer_name))?
        .set("customer_address", Value::Null)?
        .set("customer_shipping", Value::Null)?
        .set("billing_reason", json!(new.billing_reason))?
        .set("amount_due", json!(amount_due))?
        .set("amount_paid", json!(0))?
        .set("amount_remaining", json!(amount_due))?
        .set("amount_overpaid", json!(0))?
        .set("subtotal", json!(total))?
        .set("subtotal_excluding_tax", json!(total))?
        .set("total", json!(total))?
        .set("total_excluding_tax", json!(total))?
        .set("total_pretax_credit_amounts", json!([]))?
        .set("total_taxes", json!([]))?
        .set("starting_balance", json!(0))?
        .set("ending_balance", Value::Null)?
        .set("attempt_count", json!(0))?
        .set("attempted", json!(false))?
        .set("auto_advance", json!(id.is_some()))?
        .set(
            "automatic_tax",
            json!({"enabled": false, "liability": null, "status": null,
                   "disabled_reason": null, "provider": null}),
        )?
        .set("due_date", Value::Null)?
        .set("effective_at", Value::Null)?
        .set("from_invoice", Value::Null)?
        .set("hosted_invoice_url", Value::Null)?
        .set("invoice_pdf", Value::Null)?
        .set("last_finalization_error", Value::Null)?
        .set("livemode", json!(false))?
        .set("next_payment_attempt", Value::Null)?
        .set("number", Value::Null)?
        .set(
            "parent",
            json!({
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {
                    "metadata": new.subscription_metadata,
                    "subscription": new.subscription,
                },
            }),
        )?
        .set("subscription", Value::Null)?
        .set("period_start", json!(new.period_start))?
        .set("period_end", json!(new.period_end))?
        .set(
            "payment_settings",
            json!({"default_mandate": null, "payment_method_options": null,
                   "payment_method_types": null}),
        )?
        .set(
            "rendering",
            json!({"amount_tax_display": null, "pdf": {"page_size": "auto"},
                   "template": null, "template_version": null}),
        )?
        .set("shipping_cost", Value::Null)?
        .set("shipping_details", Value::Null)?
        .set("status", json!("draft"))?
        .set(
            "status_transitions",
            json!({"finalized_at": null, "marked_uncollectible_at": null,
                   "paid_at": null, "voided_at": null}),
        )?
        .set("webhooks_delivered_at", Value::Null)?
        .set(
            "lines",
            json!({
                "object": "list",
                "data": lines,
                "has_more": false,
                "url": lines_url,
            }),
        )?;
    Ok(invoice.into_value())
}

/// Finalizes a draft invoice: `open`, numbered, with its hosted page and PDF.
pub(crate) fn finalize_invoice(
    invoice: &mut Value,
    number: &str,
    hosted_url: &str,
    pdf_url: &str,
    now: i64,
) {
    invoice["status"] = json!("open");
    invoice["number"] = json!(number);
    invoice["hosted_invoice_url"] = json!(hosted_url);
    invoice["invoice_pdf"] = json!(pdf_url);
    invoice["effective_at"] = json!(now);
    invoice["webhooks_delivered_at"] = json!(now);
    invoice["status_transitions"]["finalized_at"] = json!(now);
}

/// Records a successful payment of an open invoice.
pub(crate) fn pay_invoice(invoice: &mut Value, now: i64) {
    let due = invoice["amount_due"].as_i64().unwrap_or(0);
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0);
    invoice["status"] = json!("paid");
    invoice["amount_paid"] = json!(due);
    invoice["amount_remaining"] = json!(0);
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(attempts + 1);
    invoice["auto_advance"] = json!(false);
    invoice["next_payment_attempt"] = Value::Null;
    invoice["status_transitions"]["paid_at"] = json!(now);
}

/// Records a declined payment: the invoice stays open.
pub(crate) fn fail_invoice_payment(invoice: &mut Value) {
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0);
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(attempts + 1);
}

/// A billing portal session whose hosted page is `url`.
pub(crate) fn portal_session(
    id: &str,
    created: i64,
    customer: &str,
    return_url: Option<&str>,
    url: &str,
) -> Result<Value, SandboxError> {
    let mut session = Fixture::load("billing_portal.session", PORTAL_SESSION_FIXTURE)?;
    session
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("customer", json!(customer))?
        .set("return_url", json!(return_url))?
        .set("url", json!(url))?
        .set("configuration", json!("bpc_billfold_sandbox"))?
        .set("flow", Value::Null)?
        .set("livemode", json!(false))?
        .set("locale", Value::Null)?
        .set("on_behalf_of", Value::Null)?
        .set("customer_account", Value::Null)?;
    Ok(session.into_value())
}

const PAYMENT_INTENT_FIXTURE: &str = include_str!("fixtures/payment_intent.json");
const CHARGE_FIXTURE: &str = include_str!("fixtures/charge.json");
const REFUND_FIXTURE: &str = include_str!("fixtures/refund.json");
const DISPUTE_FIXTURE: &str = include_str!("fixtures/dispute.json");

/// How long a merchant has to answer a dispute, from its creation (Stripe gives
/// about 7 to 21 days depending on the network; the sandbox uses 7).
const DISPUTE_RESPONSE_WINDOW_SECS: i64 = 7 * 86_400;

/// A card payment that succeeded: the ids and amounts shared by its payment intent and
/// charge.
#[derive(Debug)]
pub(crate) struct NewPayment {
    pub(crate) payment_intent: String,
    pub(crate) charge: String,
    /// Minor units of `currency`.
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) customer: Option<String>,
    /// The buyer's email, shown in the charge's `billing_details`.
    pub(crate) email: Option<String>,
    /// The `pm_...` the test card became.
    pub(crate) payment_method: String,
}

/// A payment intent that succeeded with one automatic card charge, as Checkout
/// leaves it in `payment` mode.
pub(crate) fn payment_intent(created: i64, payment: &NewPayment) -> Result<Value, SandboxError> {
    let mut intent = Fixture::load("payment_intent", PAYMENT_INTENT_FIXTURE)?;
    intent
        .set("id", json!(payment.payment_intent))?
        .set("created", json!(created))?
        .set("amount", json!(payment.amount))?
        .set("amount_capturable", json!(0))?
        .set("amount_received", json!(payment.amount))?
        .set("currency", json!(payment.currency))?
        .set("customer", json!(payment.customer))?
        .set("latest_charge", json!(payment.charge))?
        .set("payment_method", json!(payment.payment_method))?
        .set("status", json!("succeeded"))?
        .set(
            "client_secret",
            json!(format!(
                "{}_secret_{}",
                payment.payment_intent,
                new_id("", 25)
            )),
        )?
        .set("livemode", json!(false))?
        .set("metadata", json!({}))?
        .set("capture_method", json!("automatic_async"))?
        .set("confirmation_method", json!("automatic"))?
        // Checkout chooses payment methods itself: no automatic payment methods
        .set("automatic_payment_methods", Value::Null)?
        .set("payment_method_types", json!(["card"]))?
        .set(
            "payment_method_options",
            json!({"card": {"installments": null, "mandate_options": null,
                            "network": null, "request_three_d_secure": "automatic"}}),
        )?
        .set("payment_method_configuration_details", Value::Null)?
        // the generator's placeholders: a fresh, paid intent has none of these
        .set("canceled_at", Value::Null)?
        .set("last_payment_error", Value::Null)?
        .set("next_action", Value::Null)?
        .set("processing", Value::Null)?
        .set("shipping", Value::Null)?
        .set("transfer_data", Value::Null)?
        .set("managed_payments", json!({"enabled": false}))?;
    Ok(intent.into_value())
}

/// A captured, succeeded card charge with nothing refunded or disputed; `refunds`
/// (expandable only) lists its refunds.
pub(crate) fn charge(created: i64, payment: &NewPayment) -> Result<Value, SandboxError> {
    let mut charge = Fixture::load("charge", CHARGE_FIXTURE)?;
    let card = json!({
        "amount_authorized": payment.amount,
        "authorization_code": new_id("", 6).to_uppercase(),
        "brand": "visa",
        "checks": {
            "address_line1_check": null,
            "address_postal_code_check": null,
            "cvc_check": "pass",
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": 2034,
        "extended_authorization": {"status": "disabled"},
        "fingerprint": "sbxBillfold4242Vs",
        "funding": "credit",
        "incremental_authorization": {"status": "unavailable"},
        "installments": null,
        "last4": "4242",
        "mandate": null,
        "multicapture": {"status": "unavailable"},
        "network": "visa",
        "network_token": {"used": false},
        "network_transaction_id": new_id("", 15),
        "overcapture": {"maximum_amount_capturable": payment.amount, "status": "unavailable"},
        "regulated_status": "unregulated",
        "three_d_secure": null,
        "transaction_link_id": null,
        "wallet": null,
    });
    charge
        .set("id", json!(payment.charge))?
        .set("created", json!(created))?
        .set("amount", json!(payment.amount))?
        .set("amount_captured", json!(payment.amount))?
        .set("amount_refunded", json!(0))?
        .set("captured", json!(true))?
        .set("paid", json!(true))?
        .set("refunded", json!(false))?
        .set("disputed", json!(false))?
        .set("status", json!("succeeded"))?
        .set("currency", json!(payment.currency))?
        .set("customer", json!(payment.customer))?
        .set("payment_intent", json!(payment.payment_intent))?
        .set("payment_method", json!(payment.payment_method))?
        .set(
            "payment_method_details",
            json!({"card": card, "type": "card"}),
        )?
        .set("balance_transaction", json!(new_id("txn_", 24)))?
        .set(
            "billing_details",
            json!({
                "address": {"city": null, "country": null, "line1": null, "line2": null,
                            "postal_code": null, "state": null},
                "email": payment.email,
                "name": null,
                "phone": null,
                "tax_id": null,
            }),
        )?
        .set("calculated_statement_descriptor", json!("BILLFOLD"))?
        .set("description", Value::Null)?
        .set("livemode", json!(false))?
        .set("metadata", json!({}))?
        .set(
            "outcome",
            json!({
                "advice_code": null,
                "network_advice_code": null,
                "network_decline_code": null,
                "network_status": "approved_by_network",
                "reason": null,
                "risk_level": "normal",
                "risk_score": 21,
                "seller_message": "Payment complete.",
                "type": "authorized",
            }),
        )?
        // the sandbox hosts no receipts
        .set("receipt_url", Value::Null)?
        .set(
            "refunds",
            json!({
                "object": "list",
                "data": [],
                "has_more": false,
                "url": format!("/v1/charges/{}/refunds", payment.charge),
            }),
        )?
        // the generator's placeholders: a card charge has no source, shipping or transfer
        .set("shipping", Value::Null)?
        .set("source", Value::Null)?
        .set("transfer_data", Value::Null)?;
    Ok(charge.into_value())
}

/// `reason` of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

impl RefundReason {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "duplicate" => Some(Self::Duplicate),
            "fraudulent" => Some(Self::Fraudulent),
            "requested_by_customer" => Some(Self::RequestedByCustomer),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
            Self::RequestedByCustomer => "requested_by_customer",
        }
    }
}

/// Parameters of `POST /v1/refunds` the sandbox keeps.
#[derive(Debug)]
pub(crate) struct NewRefund {
    /// Minor units of the charge's currency.
    pub(crate) amount: i64,
    pub(crate) reason: Option<RefundReason>,
    pub(crate) metadata: Map<String, Value>,
}

/// A card refund of `charge` that succeeded at once (as test-mode card refunds do).
pub(crate) fn refund(
    id: &str,
    created: i64,
    charge: &Value,
    new: NewRefund,
) -> Result<Value, SandboxError> {
    let mut refund = Fixture::load("refund", REFUND_FIXTURE)?;
    refund
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("amount", json!(new.amount))?
        .set("currency", charge["currency"].clone())?
        .set("charge", charge["id"].clone())?
        .set("payment_intent", charge["payment_intent"].clone())?
        .set("customer", charge["customer"].clone())?
        .set("payment_method", charge["payment_method"].clone())?
        .set("reason", json!(new.reason.map(RefundReason::as_str)))?
        .set("metadata", Value::Object(new.metadata))?
        .set("status", json!("succeeded"))?
        .set("balance_transaction", json!(new_id("txn_", 24)))?
        .set(
            "destination_details",
            json!({
                "card": {
                    "reference": null,
                    "reference_status": "pending",
                    "reference_type": "acquirer_reference_number",
                    "type": "refund",
                },
                "type": "card",
            }),
        )?
        .set("receipt_number", Value::Null)?
        .set("source_transfer_reversal", Value::Null)?
        .set("transfer_reversal", Value::Null)?
        .set("customer_account", Value::Null)?;
    Ok(refund.into_value())
}

/// A card dispute of `charge` for `amount` (minor units), reason `fraudulent`,
/// awaiting the merchant's response; no evidence yet.
pub(crate) fn dispute(
    id: &str,
    created: i64,
    charge: &Value,
    amount: i64,
) -> Result<Value, SandboxError> {
    let evidence_fields = [
        "access_activity_log",
        "billing_address",
        "cancellation_policy",
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "customer_communication",
        "customer_email_address",
        "customer_name",
        "customer_purchase_ip",
        "customer_signature",
        "duplicate_charge_documentation",
        "duplicate_charge_explanation",
        "duplicate_charge_id",
        "product_description",
        "receipt",
        "refund_policy",
        "refund_policy_disclosure",
        "refund_refusal_explanation",
        "service_date",
        "service_documentation",
        "shipping_address",
        "shipping_carrier",
        "shipping_date",
        "shipping_documentation",
        "shipping_tracking_number",
        "uncategorized_file",
        "uncategorized_text",
    ];
    let mut evidence: Map<String, Value> = evidence_fields
        .iter()
        .map(|field| ((*field).to_owned(), Value::Null))
        .collect();
    evidence.insert("enhanced_evidence".into(), json!({}));
    let mut dispute = Fixture::load("dispute", DISPUTE_FIXTURE)?;
    dispute
        .set("id", json!(id))?
        .set("created", json!(created))?
        .set("amount", json!(amount))?
        .set("currency", charge["currency"].clone())?
        .set("charge", charge["id"].clone())?
        .set("payment_intent", charge["payment_intent"].clone())?
        .set("reason", json!("fraudulent"))?
        .set("status", json!("needs_response"))?
        .set("evidence", Value::Object(evidence))?
        .set(
            "evidence_details",
            json!({
                "due_by": created + DISPUTE_RESPONSE_WINDOW_SECS,
                "enhanced_eligibility": {},
                "has_evidence": false,
                "past_due": false,
                "submission_count": 0,
            }),
        )?
        // a chargeback: the money is withdrawn, a refund cannot stop it
        .set("is_charge_refundable", json!(false))?
        .set("livemode", json!(false))?
        .set("metadata", json!({}))?
        .set(
            "payment_method_details",
            json!({
                "card": {"brand": "visa", "case_type": "chargeback", "network": "visa",
                         "network_reason_code": "10.4"},
                "type": "card",
            }),
        )?
        .set("balance_transactions", json!([]))?
        .set("enhanced_eligibility_types", json!([]))?;
    Ok(dispute.into_value())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_objects_test";

    fn payment() -> NewPayment {
        NewPayment {
            payment_intent: "pi_test".to_owned(),
            charge: "ch_test".to_owned(),
            amount: 4000,
            currency: "eur".to_owned(),
            customer: Some("cus_test".to_owned()),
            email: Some("owner@example.com".to_owned()),
            payment_method: "pm_test".to_owned(),
        }
    }

    /// Parses `object` as async-stripe does: in an event, signed and verified.
    fn parse_event(event_type: &str, object: &Value) -> stripe_webhook::EventObject {
        let event = event(
            "evt_test",
            1_800_000_000,
            event_type,
            public_view(object.clone(), &[]),
            None,
            EventRequest::default(),
        )
        .unwrap();
        let payload = event.to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = stripe_webhook::Webhook::generate_test_header(
            &payload,
            SECRET,
            Some(i64::try_from(now).unwrap()),
        );
        stripe_webhook::Webhook::construct_event(&payload, &header, SECRET)
            .unwrap_or_else(|error| panic!("{error:?}: {payload}"))
            .data
            .object
    }

    #[test]
    fn a_payment_intent_and_its_charge_read_as_async_stripe_types() {
        let intent = payment_intent(1_800_000_000, &payment()).unwrap();
        let parsed: stripe_shared::PaymentIntent = serde_json::from_value(intent.clone()).unwrap();
        assert_eq!(parsed.status, stripe_shared::PaymentIntentStatus::Succeeded);
        assert!(matches!(
            parse_event("payment_intent.succeeded", &intent),
            stripe_webhook::EventObject::PaymentIntentSucceeded(_)
        ));
        let charge = charge(1_800_000_000, &payment()).unwrap();
        let parsed: stripe_shared::Charge = serde_json::from_value(charge.clone()).unwrap();
        assert_eq!(parsed.amount_captured, 4000);
        assert!(matches!(
            parse_event("charge.refunded", &charge),
            stripe_webhook::EventObject::ChargeRefunded(_)
        ));
    }

    #[test]
    fn a_refund_and_a_dispute_read_as_async_stripe_types() {
        let charge = charge(1_800_000_000, &payment()).unwrap();
        let refund = refund(
            "re_test",
            1_800_000_100,
            &charge,
            NewRefund {
                amount: 1500,
                reason: Some(RefundReason::RequestedByCustomer),
                metadata: Map::new(),
            },
        )
        .unwrap();
        let parsed: stripe_shared::Refund = serde_json::from_value(refund.clone()).unwrap();
        assert_eq!(parsed.amount, 1500);
        assert!(matches!(
            parse_event("refund.created", &refund),
            stripe_webhook::EventObject::RefundCreated(_)
        ));
        let dispute = dispute("dp_test", 1_800_000_200, &charge, 2500).unwrap();
        let parsed: stripe_shared::Dispute = serde_json::from_value(dispute.clone()).unwrap();
        assert_eq!(parsed.status, stripe_shared::DisputeStatus::NeedsResponse);
        assert!(matches!(
            parse_event("charge.dispute.created", &dispute),
            stripe_webhook::EventObject::ChargeDisputeCreated(_)
        ));
    }
}
