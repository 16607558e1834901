//! Catalog: plans, entitlements, credit packs and feature costs. Owns tables `plans`,
//! `plan_entitlements`, `credit_packs`, `features` (SQL in [`db`]). Seeded with
//! DESIGN.md's default catalog on an empty database; admins edit it later.

pub mod db;
pub mod sync;

use sqlx::PgPool;

use crate::ids::PlanCode;
use crate::money::Money;

/// A plan as shown to customers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Plan {
    /// Stable code (`free`, `pro`, ...).
    pub plan_code: PlanCode,
    /// Display name.
    pub name: String,
    /// Price per month in minor units.
    pub monthly_price_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
    /// Credits per month; `None` = unlimited.
    pub monthly_credits: Option<i64>,
    /// Metering API calls per minute; `None` = unlimited.
    pub rate_limit_per_min: Option<i32>,
    /// Members allowed; `None` = unlimited.
    pub max_members: Option<i32>,
    /// Active API keys allowed; `None` = unlimited.
    pub max_api_keys: Option<i32>,
    /// The Stripe price it is sold at (`None` until `billfold stripe sync` ran, and for
    /// the free plan).
    pub stripe_price_id: Option<String>,
}

impl Plan {
    /// The monthly price.
    pub fn price(&self) -> Money {
        Money::new(self.monthly_price_minor, &self.currency)
    }

    /// Whether the plan is paid (sold through Stripe).
    pub fn is_paid(&self) -> bool {
        self.monthly_price_minor > 0
    }
}

/// A fixed credit top-up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CreditPack {
    /// Stable code, e.g. `pack_500`.
    pub credit_pack_code: String,
    /// Display name.
    pub name: String,
    /// Credits bought.
    pub credits: i64,
    /// Price in minor units.
    pub price_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

impl CreditPack {
    /// The pack's price.
    pub fn price(&self) -> Money {
        Money::new(self.price_minor, &self.currency)
    }
}

/// A metered operation and its cost per call.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Feature {
    /// `group.operation`, e.g. `planner.create_plan`.
    pub feature_code: String,
    /// What customers read (`Graph query`): the catalog's description.
    pub name: String,
    /// Credits per unit of quantity.
    pub credit_cost: i64,
}

/// A feature group as customers read it: `ux_expert` → "UX expert", `ai_agent` →
/// "AI agent", `graph` → "Graph".
pub fn group_name(group: &str) -> String {
    let words: Vec<String> = group
        .split('_')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| match w {
            "ai" | "ux" | "api" => w.to_uppercase(),
            _ if i == 0 => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
            _ => w.to_owned(),
        })
        .collect();
    words.join(" ")
}

/// Everything the pricing page compares: plans (cheapest first), features (by group,
/// then code) and which plan includes which feature group.
#[derive(Debug, Clone)]
pub struct PriceList {
    /// Every plan, in the catalog's order.
    pub plans: Vec<Plan>,
    /// Every feature with its credit cost.
    pub features: Vec<Feature>,
    /// `(plan code, feature group)` pairs.
    pub entitled: Vec<(String, String)>,
}

impl PriceList {
    /// Whether `plan` includes the features of `group`.
    pub fn includes(&self, plan: &Plan, group: &str) -> bool {
        self.entitled
            .iter()
            .any(|(p, g)| p == plan.plan_code.as_str() && g == group)
    }

    /// The feature groups `plan` includes, as names ("Graph", "UX expert").
    pub fn group_names_of(&self, plan: &Plan) -> Vec<String> {
        let mut groups: Vec<&str> = self
            .features
            .iter()
            .map(|f| f.group())
            .filter(|g| self.includes(plan, g))
            .collect();
        groups.dedup();
        groups.into_iter().map(group_name).collect()
    }

    /// The cheapest plan that includes `feature`.
    pub fn first_plan_with(&self, feature: &Feature) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| self.includes(p, feature.group()))
    }
}

impl Feature {
    /// The part of the code before the dot: what plans are entitled to.
    pub fn group(&self) -> &str {
        self.feature_code
            .split_once('.')
            .map_or(self.feature_code.as_str(), |(g, _)| g)
    }

    /// Credits per unit at `quality`.
    pub fn cost_at(&self, quality: crate::ledger::Quality) -> i64 {
        self.credit_cost * quality.multiplier()
    }
}

/// Custom top-up bounds (DESIGN.md): 5 to 1,000 EUR, 10 credits per EUR.
pub mod custom_top_up {
    /// Currency of custom top-ups.
    pub const CURRENCY: &str = "eur";
    /// Smallest custom amount, in whole euros.
    pub const MIN_EUR: i64 = 5;
    /// Largest custom amount, in whole euros.
    pub const MAX_EUR: i64 = 1_000;
    /// Credits bought per euro.
    pub const CREDITS_PER_EUR: i64 = 10;
}

/// Inserts DESIGN.md's default catalog unless plans exist already. Returns whether it
/// seeded. Idempotent and safe when two processes start together (one transaction,
/// `on conflict do nothing`).
pub async fn seed_default(db: &PgPool) -> anyhow::Result<bool> {
    // A startup step with its own transaction: it runs before anything else uses the
    // catalog, under an advisory lock so concurrent starts seed once.
    let mut tx = db.begin().await?;
    // Serialise concurrent seeders; released at commit.
    sqlx::query("select pg_advisory_xact_lock(7242100001)")
        .execute(&mut *tx)
        .await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from plans)")
        .fetch_one(&mut *tx)
        .await?;
    if exists {
        return Ok(false);
    }
    // (code, name, price cents, credits, rate limit/min, max members, max api keys)
    type PlanRow<'a> = (
        &'a str,
        &'a str,
        i64,
        Option<i64>,
        Option<i32>,
        Option<i32>,
        Option<i32>,
    );
    let plans: [PlanRow; 6] = [
        ("free", "Free", 0, Some(100), Some(10), Some(1), Some(2)),
        (
            "starter",
            "Starter",
            2_900,
            Some(500),
            Some(30),
            Some(3),
            Some(5),
        ),
        (
            "pro",
            "Pro",
            4_900,
            Some(2_000),
            Some(100),
            Some(10),
            Some(20),
        ),
        (
            "business",
            "Business",
            9_900,
            Some(10_000),
            Some(200),
            Some(25),
            Some(50),
        ),
        (
            "plus",
            "Plus",
            19_900,
            Some(50_000),
            Some(500),
            Some(100),
            Some(200),
        ),
        ("enterprise", "Enterprise", 49_900, None, None, None, None),
    ];
    for (i, (code, name, price, credits, rate, members, keys)) in plans.iter().enumerate() {
        sqlx::query(
            "insert into plans (plan_code, name, monthly_price_minor, currency, monthly_credits,
                    rate_limit_per_min, max_members, max_api_keys, sort_order)
             values ($1, $2, $3, 'eur', $4, $5, $6, $7, $8) on conflict do nothing",
        )
        .bind(code)
        .bind(name)
        .bind(price)
        .bind(credits)
        .bind(rate)
        .bind(members)
        .bind(keys)
        .bind(i as i32)
        .execute(&mut *tx)
        .await?;
    }
    let free = ["manager", "validator", "synthesizer", "graph", "risk"];
    let starter = ["planner", "architect", "ux_expert", "report"];
    let rest = ["visual", "trace", "pattern", "ai_agent", "wallet"];
    for (plan, _) in plans.iter().map(|p| (p.0, ())) {
        let groups: Vec<&str> = match plan {
            "free" => free.to_vec(),
            "starter" => free.iter().chain(&starter).copied().collect(),
            _ => free.iter().chain(&starter).chain(&rest).copied().collect(),
        };
        for group in groups {
            sqlx::query("insert into plan_entitlements (plan_code, feature_group) values ($1, $2) on conflict do nothing")
                .bind(plan)
                .bind(group)
                .execute(&mut *tx)
                .await?;
        }
    }
    let features: [(&str, &str, i64); 17] = [
        ("manager.process", "Process a request", 1),
        ("planner.create_plan", "Create a plan", 3),
        ("planner.refine_plan", "Refine a plan", 2),
        ("architect.generate_flow", "Generate a flow", 3),
        ("architect.update_flow", "Update a flow", 2),
        ("validator.validate", "Validate", 1),
        ("ux_expert.consultation", "UX consultation", 2),
        ("visual.interpret_image", "Interpret an image", 5),
        ("synthesizer.generate_response", "Generate a response", 1),
        ("trace.start", "Start a trace", 10),
        ("trace.expand", "Expand a trace", 5),
        ("graph.query", "Graph query", 3),
        ("pattern.detect", "Detect patterns", 8),
        ("ai_agent.query", "Agent query", 5),
        ("risk.score", "Risk score", 2),
        ("wallet.scan", "Wallet scan", 7),
        ("report.generate", "Generate a report", 4),
    ];
    for (code, description, cost) in features {
        sqlx::query("insert into features (feature_code, description, credit_cost) values ($1, $2, $3) on conflict do nothing")
            .bind(code)
            .bind(description)
            .bind(cost)
            .execute(&mut *tx)
            .await?;
    }
    let packs: [(&str, &str, i64, i64); 3] = [
        ("pack_100", "100 credits", 100, 1_000),
        ("pack_500", "500 credits", 500, 4_000),
        ("pack_1000", "1,000 credits", 1_000, 7_000),
    ];
    for (i, (code, name, credits, price)) in packs.iter().enumerate() {
        sqlx::query(
            "insert into credit_packs (credit_pack_code, name, credits, price_minor, currency, sort_order)
             values ($1, $2, $3, $4, 'eur', $5) on conflict do nothing",
        )
        .bind(code)
        .bind(name)
        .bind(credits)
        .bind(price)
        .bind(i as i32)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
