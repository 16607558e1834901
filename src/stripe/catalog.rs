//! Products and prices: the Stripe side of `billfold stripe sync`. Prices are never
//! edited in place (Stripe does not allow changing an amount): a changed price is a
//! new price that takes over the lookup key (`transfer_lookup_key`), and the old one is
//! deactivated (<https://docs.stripe.com/products-prices/manage-prices#lookup-keys>).

use std::collections::HashMap;

use stripe::StripeRequest;
use stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, ListPrice, UpdatePrice,
};
use stripe_product::product::{CreateProduct, RetrieveProduct, UpdateProduct};

use super::{StripeCallError, StripeClient};

/// One sellable catalog entry as Stripe should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    /// Our deterministic product id, e.g. `billfold_plan_pro`.
    pub product_id: String,
    /// Product name shown on Checkout, invoices and the portal.
    pub name: String,
    /// The stable handle of the current price, e.g. `billfold_plan_pro_monthly`.
    pub lookup_key: String,
    /// Price in minor units.
    pub unit_amount: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Billed monthly (a plan) or once (a credit pack).
    pub monthly: bool,
    /// Echoed on product and price (e.g. `plan_code`).
    pub metadata: HashMap<String, String>,
}

/// What syncing one item did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedItem {
    /// Stripe product id.
    pub product_id: String,
    /// The active price carrying the lookup key.
    pub price_id: String,
    /// Whether a price was created, and which it replaced.
    pub change: PriceChange,
}

/// The price part of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceChange {
    /// The price under the lookup key already matched.
    Unchanged,
    /// A new price was created; the replaced one (if any) is now inactive.
    Created {
        /// The price that held the lookup key before.
        replaced: Option<String>,
    },
}

impl StripeClient {
    /// Makes Stripe hold `item`: the product exists with this name, and the active
    /// price under `item.lookup_key` has this amount, currency and interval.
    /// Running it twice changes nothing the second time.
    #[tracing::instrument(skip_all, fields(lookup_key = %item.lookup_key))]
    pub async fn sync_catalog_item(
        &self,
        item: &CatalogItem,
    ) -> Result<SyncedItem, StripeCallError> {
        self.sync_product(item).await?;
        let current = ListPrice::new()
            .lookup_keys(vec![item.lookup_key.clone()])
            .send(&self.client)
            .await?
            .data
            .into_iter()
            .next();
        let matches = current.as_ref().is_some_and(|p| {
            let interval_ok = match (&p.recurring, item.monthly) {
                (Some(r), true) => r.interval.as_str() == "month" && r.interval_count == 1,
                (None, false) => true,
                _ => false,
            };
            p.active
                && interval_ok
                && p.unit_amount == Some(item.unit_amount)
                && p.currency.to_string() == item.currency
                && p.product.id().as_str() == item.product_id
        });
        if let (true, Some(price)) = (matches, &current) {
            return Ok(SyncedItem {
                product_id: item.product_id.clone(),
                price_id: price.id.to_string(),
                change: PriceChange::Unchanged,
            });
        }
        let currency = item
            .currency
            .parse::<stripe_types::Currency>()
            .map_err(|_| {
                StripeCallError::Unavailable(format!("unsupported currency {}", item.currency))
            })?;
        let mut create = CreatePrice::new(currency)
            .product(item.product_id.clone())
            .unit_amount(item.unit_amount)
            .lookup_key(item.lookup_key.clone())
            .transfer_lookup_key(true)
            .nickname(item.name.clone())
            .metadata(item.metadata.clone());
        if item.monthly {
            create = create.recurring(CreatePriceRecurring::new(
                CreatePriceRecurringInterval::Month,
            ));
        }
        let created = create
            .customize()
            .request_strategy(super::idempotent(&uuid::Uuid::new_v4().to_string())?)
            .send(&self.client)
            .await?;
        let replaced = match current {
            Some(old) if old.id != created.id => {
                if old.active {
                    UpdatePrice::new(old.id.clone())
                        .active(false)
                        .send(&self.client)
                        .await?;
                }
                Some(old.id.to_string())
            }
            _ => None,
        };
        Ok(SyncedItem {
            product_id: item.product_id.clone(),
            price_id: created.id.to_string(),
            change: PriceChange::Created { replaced },
        })
    }

    async fn sync_product(&self, item: &CatalogItem) -> Result<(), StripeCallError> {
        match RetrieveProduct::new(item.product_id.clone())
            .send(&self.client)
            .await
        {
            Ok(product) => {
                if product.name != item.name || !product.active {
                    UpdateProduct::new(item.product_id.clone())
                        .name(item.name.clone())
                        .active(true)
                        .metadata(item.metadata.clone())
                        .send(&self.client)
                        .await?;
                }
                Ok(())
            }
            Err(stripe::StripeError::Stripe(_, 404)) => {
                CreateProduct::new(item.name.clone())
                    .id(item.product_id.clone())
                    .metadata(item.metadata.clone())
                    .customize()
                    .request_strategy(super::idempotent(&uuid::Uuid::new_v4().to_string())?)
                    .send(&self.client)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
