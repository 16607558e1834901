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

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// When stale keys were last dropped (at most every [`FORGET_EVERY`]).
    forgotten_at: Mutex<Instant>,
}

/// How often stale counters are dropped: a sweep walks every key, so it is not done
/// per attempt (an attacker's many addresses would make each attempt slower).
const FORGET_EVERY: Duration = Duration::from_secs(10);

/// The key a client address is counted under: an IPv6 address by its /64 network (one
/// subscriber usually holds a whole /64, so counting single addresses would let one
/// machine rotate through 2^64 of them; RFC 6177), an IPv4-mapped one as IPv4.
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
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
            forgotten_at: Mutex::new(Instant::now()),
        }
    }

    /// Counts a sign-in attempt from `address`, whatever the account: checked first,
    /// before anything is looked up.
    pub fn check_login_address(&self, address: IpAddr) -> Result<(), Refused> {
        self.forget_stale();
        self.login_address
            .check_key(&client_key(address))
            .map_err(|_| Refused::Address)
    }

    /// Counts a sign-in attempt at `email` (normalised, at most 254 bytes) from
    /// `address`; `known_address`: the account signed in from this address before.
    pub fn check_login_account(
        &self,
        email: &str,
        address: IpAddr,
        known_address: bool,
    ) -> Result<(), Refused> {
        self.login_pair
            .check_key(&(email.to_owned(), client_key(address)))
            .map_err(|_| Refused::AccountAndAddress)?;
        if !known_address {
            self.login_account
                .check_key(&email.to_owned())
                .map_err(|_| Refused::AccountFromNewAddresses)?;
        }
        Ok(())
    }

    /// Counts a sign-up from `address`.
    pub fn check_signup(&self, address: IpAddr) -> Result<(), Refused> {
        self.forget_stale();
        self.signup_address
            .check_key(&client_key(address))
            .map_err(|_| Refused::Address)
    }

    /// Drops counters that are full again, at most every [`FORGET_EVERY`].
    fn forget_stale(&self) {
        {
            let mut at = self.forgotten_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.elapsed() < FORGET_EVERY {
                return;
            }
            *at = Instant::now();
        }
        self.login_address.retain_recent();
        self.login_pair.retain_recent();
        self.login_account.retain_recent();
        self.signup_address.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let a = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        assert_eq!(
            client_key("::ffff:203.0.113.9".parse().unwrap()),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            client_key("203.0.113.9".parse().unwrap()),
            "203.0.113.9".parse::<std::net::IpAddr>().unwrap()
        );
    }
}
