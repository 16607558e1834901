//! SQL of the catalog: free functions on a connection.

use sqlx::PgConnection;

use super::{CreditPack, Feature, Plan};
use crate::ids::PlanCode;

const PLAN_COLUMNS: &str = "plan_code, name, monthly_price_minor, currency, monthly_credits, \
     rate_limit_per_min, max_members, max_api_keys, stripe_price_id";

/// Every plan, cheapest first.
pub async fn plans(conn: &mut PgConnection) -> anyhow::Result<Vec<Plan>> {
    let sql = format!("select {PLAN_COLUMNS} from plans order by sort_order, monthly_price_minor");
    Ok(sqlx::query_as::<_, Plan>(&sql).fetch_all(conn).await?)
}

/// One plan by code.
pub async fn plan(conn: &mut PgConnection, plan_code: &PlanCode) -> anyhow::Result<Option<Plan>> {
    let sql = format!("select {PLAN_COLUMNS} from plans where plan_code = $1");
    Ok(sqlx::query_as::<_, Plan>(&sql)
        .bind(plan_code)
        .fetch_optional(conn)
        .await?)
}

/// The plan sold at a Stripe price, if any.
pub async fn plan_by_price(
    conn: &mut PgConnection,
    price_id: &str,
) -> anyhow::Result<Option<Plan>> {
    let sql = format!("select {PLAN_COLUMNS} from plans where stripe_price_id = $1");
    Ok(sqlx::query_as::<_, Plan>(&sql)
        .bind(price_id)
        .fetch_optional(conn)
        .await?)
}

/// Active credit packs, smallest first.
pub async fn credit_packs(conn: &mut PgConnection) -> anyhow::Result<Vec<CreditPack>> {
    Ok(sqlx::query_as::<_, CreditPack>(
        "select credit_pack_code, name, credits, price_minor, currency
           from credit_packs where active order by sort_order, credits",
    )
    .fetch_all(conn)
    .await?)
}

/// One active credit pack by code.
pub async fn credit_pack(
    conn: &mut PgConnection,
    code: &str,
) -> anyhow::Result<Option<CreditPack>> {
    Ok(sqlx::query_as::<_, CreditPack>(
        "select credit_pack_code, name, credits, price_minor, currency
           from credit_packs where active and credit_pack_code = $1",
    )
    .bind(code)
    .fetch_optional(conn)
    .await?)
}

/// A credit pack by code, active or not (pricing a payment made earlier).
pub async fn any_credit_pack(
    conn: &mut PgConnection,
    code: &str,
) -> anyhow::Result<Option<CreditPack>> {
    Ok(sqlx::query_as::<_, CreditPack>(
        "select credit_pack_code, name, credits, price_minor, currency
           from credit_packs where credit_pack_code = $1",
    )
    .bind(code)
    .fetch_optional(conn)
    .await?)
}

/// Every feature with its cost, by code.
pub async fn features(conn: &mut PgConnection) -> anyhow::Result<Vec<Feature>> {
    Ok(sqlx::query_as::<_, Feature>(
        "select feature_code, description as name, credit_cost from features
          order by feature_group, feature_code",
    )
    .fetch_all(conn)
    .await?)
}

/// Feature groups a plan includes.
pub async fn entitlements(
    conn: &mut PgConnection,
    plan_code: &PlanCode,
) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select feature_group from plan_entitlements where plan_code = $1 order by 1",
    )
    .bind(plan_code)
    .fetch_all(conn)
    .await?)
}

/// Paid plans and active packs to put on sale: (code, name, amount minor, currency).
pub async fn sellable_plans(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<(PlanCode, String, i64, String)>> {
    Ok(sqlx::query_as(
        "select plan_code, name, monthly_price_minor, currency from plans
          where monthly_price_minor > 0 order by sort_order",
    )
    .fetch_all(conn)
    .await?)
}

/// Active packs to put on sale: (code, name, amount minor, currency).
pub async fn sellable_packs(
    conn: &mut PgConnection,
) -> anyhow::Result<Vec<(String, String, i64, String)>> {
    Ok(sqlx::query_as(
        "select credit_pack_code, name, price_minor, currency from credit_packs
          where active order by sort_order",
    )
    .fetch_all(conn)
    .await?)
}

/// Stores where a plan lives in Stripe.
pub async fn set_plan_stripe_ids(
    conn: &mut PgConnection,
    plan_code: &PlanCode,
    product_id: &str,
    price_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "update plans set stripe_product_id = $2, stripe_price_id = $3 where plan_code = $1",
    )
    .bind(plan_code)
    .bind(product_id)
    .bind(price_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores where a credit pack lives in Stripe.
pub async fn set_pack_stripe_ids(
    conn: &mut PgConnection,
    code: &str,
    product_id: &str,
    price_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "update credit_packs set stripe_product_id = $2, stripe_price_id = $3 where credit_pack_code = $1",
    )
    .bind(code)
    .bind(product_id)
    .bind(price_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether every paid plan has a Stripe price (the catalog is on sale).
pub async fn all_plans_on_sale(conn: &mut PgConnection) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "select not exists (select 1 from plans where monthly_price_minor > 0 and stripe_price_id is null)",
    )
    .fetch_one(conn)
    .await?)
}

/// The whole price list in three round trips: plans, features, entitlements.
pub async fn price_list(conn: &mut PgConnection) -> anyhow::Result<super::PriceList> {
    Ok(super::PriceList {
        plans: plans(&mut *conn).await?,
        features: features(&mut *conn).await?,
        entitled: sqlx::query_as(
            "select plan_code, feature_group from plan_entitlements order by 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?,
    })
}
