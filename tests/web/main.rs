//! HTTP behaviour of the real router, served on 127.0.0.1:0 against a fresh
//! PostgreSQL database per test (`#[sqlx::test]`) and the built-in Stripe sandbox.
// These tests drive the built-in Stripe sandbox.
#![cfg(feature = "sandbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod api;
mod audit;
mod auth;
mod billing;
mod browser;
mod catalog;
mod jobs;
mod pricing;
mod refunds;
mod resellers;
mod security;
mod settings;
mod slow_stripe;
mod statement;
mod top_up;
mod usage;
mod webhooks;
