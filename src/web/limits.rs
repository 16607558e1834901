//! Throttles for sign-in and sign-up (OWASP Authentication Cheat Sheet, "protect
//! against automated attacks"; OWASP "Blocking Brute Force Attacks"), kept so they
//! cannot be turned against the user they protect:
//!
//! - per client address, across accounts: one address cannot try many accounts;
//! - per account and address: one address cannot guess one password quickly;
//! - per account, across addresses, but only for addresses that never signed in to
//!   it: an attacker elsewhere can exhaust this looser cap, yet the owner still signs
//!   in from an address they used before (`login_addresses`).
//! - sign-ups per client address (each creates a workspace with free credits).
//!
//! The counters live in this process (governor's GCRA): behind a load balancer each
//! process counts on its own, which still bounds guessing per process.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Config;

/// Sign-in attempts one address may make per minute, whatever the account.
pub const LOGIN_PER_ADDRESS_PER_MINUTE: u32 = 20;
/// Sign-in attempts per account and address per minute.
pub const LOGIN_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE: u32 = 5;
/// Sign-in attempts per account per hour from addresses that never signed in to it.
pub const LOGIN_PER_ACCOUNT_FROM_NEW_ADDRESSES_PER_HOUR: u32 = 30;

/// Which throttle refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many attempts from this address.
    Address,
    /// Too many attempts at this account from this address.
    AccountAndAddress,
    /// Too many attempts at this account from new addresses.
    AccountFromNewAddresses,
}

impl Refused {
    /// Seconds to tell the client to wait.
    pub fn retry_after(self) -> u64 {
        match self {
            Self::Address | Self::AccountAndAddress => 60,
            Self::AccountFromNewAddresses => 120,
        }
    }
}

/// The process's throttles.
#[derive(Debug)]
pub struct Limits {
    login_address: DefaultKeyedRateLimiter<IpAddr>,
    login_pair: DefaultKeyedRateLimiter<(String, IpAddr)>,
    login_account: DefaultKeyedRateLimiter<String>,
    signup_address: DefaultKeyedRateLimiter<IpAddr>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

fn per_hour(n: u32) -> Quota {
    Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    /// Throttles with the configured sign-up rate.
    pub fn new(config: &Config) -> Self {
        Self {
            login_address: RateLimiter::keyed(per_minute(LOGIN_PER_ADDRESS_PER_MINUTE)),
            login_pair: RateLimiter::keyed(per_minute(LOGIN_PER_ACCOUNT_AND_ADDRESS_PER_MINUTE)),
            login_account: RateLimiter::keyed(per_hour(
                LOGIN_PER_ACCOUNT_FROM_NEW_ADDRESSES_PER_HOUR,
            )),
            signup_address: RateLimiter::keyed(per_hour(config.signups_per_address_per_hour)),
        }
    }

    /// Counts a sign-in attempt at `email` (normalised) from `address`;
    /// `known_address`: the account signed in from this address before.
    pub fn check_login(
        &self,
        email: &str,
        address: IpAddr,
        known_address: bool,
    ) -> Result<(), Refused> {
        self.login_address
            .check_key(&address)
            .map_err(|_| Refused::Address)?;
        self.login_pair
            .check_key(&(email.to_owned(), address))
            .map_err(|_| Refused::AccountAndAddress)?;
        if !known_address {
            self.login_account
                .check_key(&email.to_owned())
                .map_err(|_| Refused::AccountFromNewAddresses)?;
        }
        self.forget_stale();
        Ok(())
    }

    /// Counts a sign-up from `address`.
    pub fn check_signup(&self, address: IpAddr) -> Result<(), Refused> {
        self.signup_address
            .check_key(&address)
            .map_err(|_| Refused::Address)?;
        self.signup_address.retain_recent();
        Ok(())
    }

    fn forget_stale(&self) {
        self.login_address.retain_recent();
        self.login_pair.retain_recent();
        self.login_account.retain_recent();
    }
}
