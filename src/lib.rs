//! billfold: a self-hostable billing portal.
//!
//! Customers buy plans and prepaid credits through Stripe, the operator's product
//! consumes credits through the metering API, and everyone watches balances, ledgers
//! and usage in server-rendered pages. See `README.md` for the run book.

#[cfg(feature = "sandbox")]
pub mod sandbox;
