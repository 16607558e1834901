//! Typed ids (docs.rs's `decl_id!` style): a workspace id cannot be passed where a user
//! id is expected. Each is a `uuid` in Postgres (`#[sqlx(transparent)]`), a string in
//! JSON and in URLs. [`PlanCode`] types the catalog's plan codes where code compares them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, Serialize,
            Deserialize,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id (v4).
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// `workspaces.workspace_id`: the billing entity (plan, credits, Stripe customer).
    WorkspaceId
);
uuid_id!(
    /// `users.user_id`.
    UserId
);
uuid_id!(
    /// `api_keys.api_key_id`.
    ApiKeyId
);
uuid_id!(
    /// `top_ups.top_up_id`: one Checkout session of a credit purchase.
    TopUpId
);
uuid_id!(
    /// `plan_changes.plan_change_id`: an upgrade asked for on `/billing`.
    PlanChangeId
);

uuid_id!(
    /// `resellers.reseller_id`: a partner who brings customers and earns commissions.
    ResellerId
);
uuid_id!(
    /// `commissions.commission_id`: a commission on one payment, or a reversal of one.
    CommissionId
);
uuid_id!(
    /// `payouts.payout_id`: approved commissions of one reseller and currency, paid together.
    PayoutId
);
uuid_id!(
    /// `reseller_api_keys.reseller_api_key_id`.
    ResellerApiKeyId
);

/// A plan's stable code (`plans.plan_code`): `free`, `starter`, `pro`, ...
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, Serialize, Deserialize,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct PlanCode(pub String);

impl PlanCode {
    /// The plan every workspace starts on and returns to when its subscription ends.
    pub const FREE: &'static str = "free";

    /// The free plan's code.
    pub fn free() -> Self {
        Self(Self::FREE.to_owned())
    }

    /// Whether this is the free plan.
    pub fn is_free(&self) -> bool {
        self.0 == Self::FREE
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PlanCode {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl PartialEq<str> for PlanCode {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PlanCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
