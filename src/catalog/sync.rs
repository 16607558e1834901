//! `billfold stripe sync`: makes Stripe hold the catalog. Every paid plan becomes a
//! product `billfold_plan_<code>` with a monthly price under the lookup key
//! `billfold_plan_<code>_monthly`; every credit pack a product `billfold_pack_<code>`
//! with a one-time price under `billfold_pack_<code>`. Idempotent: a second run changes
//! nothing; a changed amount creates a new price that takes over the lookup key.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::stripe::StripeClient;
use crate::stripe::catalog::{CatalogItem, PriceChange};

/// One line of the sync report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLine {
    /// `plan pro`, `pack pack_500`.
    pub subject: String,
    /// The lookup key.
    pub lookup_key: String,
    /// The active price id.
    pub price_id: String,
    /// What happened to the price.
    pub change: PriceChange,
}

impl std::fmt::Display for SyncLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.change {
            PriceChange::Unchanged => "unchanged".to_owned(),
            PriceChange::Created { replaced: None } => "created".to_owned(),
            PriceChange::Created {
                replaced: Some(old),
            } => format!("created, replaces {old} (deactivated)"),
        };
        write!(
            f,
            "{:<18} {:<32} {} {what}",
            self.subject, self.lookup_key, self.price_id
        )
    }
}

/// Lookup key of a plan's monthly price.
pub fn plan_lookup_key(plan_code: &str) -> String {
    format!("billfold_plan_{plan_code}_monthly")
}

/// Syncs every paid plan and every credit pack; stores the Stripe ids on the catalog
/// rows. Free plans (price 0) are not sold through Stripe and are skipped. No
/// connection is held while Stripe is called.
pub async fn sync(db: &PgPool, stripe: &StripeClient) -> anyhow::Result<Vec<SyncLine>> {
    let plans = super::db::sellable_plans(&mut *db.acquire().await?).await?;
    let packs = super::db::sellable_packs(&mut *db.acquire().await?).await?;
    let mut report = Vec::new();
    for (code, name, amount, currency) in plans {
        let item = CatalogItem {
            product_id: format!("billfold_plan_{code}"),
            name: format!("{name} plan"),
            lookup_key: plan_lookup_key(code.as_str()),
            unit_amount: amount,
            currency,
            monthly: true,
            metadata: HashMap::from([("plan_code".to_owned(), code.to_string())]),
        };
        let synced = stripe.sync_catalog_item(&item).await?;
        super::db::set_plan_stripe_ids(
            &mut *db.acquire().await?,
            &code,
            &synced.product_id,
            &synced.price_id,
        )
        .await?;
        report.push(SyncLine {
            subject: format!("plan {code}"),
            lookup_key: item.lookup_key,
            price_id: synced.price_id,
            change: synced.change,
        });
    }
    for (code, name, amount, currency) in packs {
        let item = CatalogItem {
            product_id: format!("billfold_pack_{code}"),
            name,
            lookup_key: format!("billfold_pack_{code}"),
            unit_amount: amount,
            currency,
            monthly: false,
            metadata: HashMap::from([("credit_pack".to_owned(), code.clone())]),
        };
        let synced = stripe.sync_catalog_item(&item).await?;
        super::db::set_pack_stripe_ids(
            &mut *db.acquire().await?,
            &code,
            &synced.product_id,
            &synced.price_id,
        )
        .await?;
        report.push(SyncLine {
            subject: format!("pack {code}"),
            lookup_key: item.lookup_key,
            price_id: synced.price_id,
            change: synced.change,
        });
    }
    Ok(report)
}
