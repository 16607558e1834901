//! billfold: a self-hostable billing portal.
//!
//! Customers buy plans and prepaid credits through Stripe, the operator's product
//! consumes credits through the metering API, and everyone watches balances, ledgers
//! and usage in server-rendered pages. See `README.md` for the run book and
//! `DESIGN.md`'s vocabulary for the words used here.
//!
//! Dependency direction: `web` → domain modules (`accounts`, `catalog`, `ledger`,
//! `allowances`, `api_keys`, `top_ups`, `subscriptions`, `resellers`, `stripe_events`) → their
//! `db` submodules → PostgreSQL; `jobs` runs domain work in the background. Domain
//! functions that write take `&mut PgConnection` (the caller owns the transaction);
//! workflows that call Stripe take the pool and open short transactions around the
//! call. `stripe` is the only module that imports async-stripe; `charts` imports
//! neither sqlx nor axum.

pub mod accounts;
pub mod admin;
pub mod allowances;
pub mod api_keys;
pub mod audit;
pub mod catalog;
pub mod charts;
pub mod cli;
pub mod config;
pub mod database;
pub mod demo;
pub mod embedded_pg;
pub mod ids;
pub mod jobs;
pub mod ledger;
pub mod money;
pub mod resellers;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secrets;
pub mod startup;
pub mod stripe;
pub mod stripe_events;
pub mod subscriptions;
pub mod telemetry;
pub mod top_ups;
pub mod usage;
pub mod web;
