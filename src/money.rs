//! Money: integer minor units plus an ISO 4217 currency code. No floats anywhere.

use std::fmt;

/// An amount of money, e.g. `Money { minor: 4000, currency: "eur" }` = €40.00.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Amount in the currency's minor unit (cents for EUR and USD).
    pub minor: i64,
    /// Lowercase ISO 4217 code, as Stripe writes it.
    pub currency: String,
}

impl Money {
    /// Builds an amount from minor units and a currency code (any case).
    pub fn new(minor: i64, currency: &str) -> Self {
        Self {
            minor,
            currency: currency.to_ascii_lowercase(),
        }
    }
}

/// "€40.00", "$1,234.50", "1,000.00 CHF": two minor digits (every currency billfold
/// sells in has two; zero-decimal currencies are not supported yet).
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        let major = group_thousands(abs / 100);
        let cents = abs % 100;
        match self.currency.as_str() {
            "eur" => write!(f, "{sign}€{major}.{cents:02}"),
            "usd" => write!(f, "{sign}${major}.{cents:02}"),
            "gbp" => write!(f, "{sign}£{major}.{cents:02}"),
            other => write!(f, "{sign}{major}.{cents:02} {}", other.to_ascii_uppercase()),
        }
    }
}

/// `1234567` → `"1,234,567"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a signed credit amount with thousands separators: `-1234` → `"-1,234"`.
pub fn format_credits(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", group_thousands(n.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_minor_units_without_floats() {
        assert_eq!(Money::new(4000, "EUR").to_string(), "€40.00");
        assert_eq!(Money::new(123_456_789, "usd").to_string(), "$1,234,567.89");
        assert_eq!(Money::new(-5, "eur").to_string(), "-€0.05");
        assert_eq!(Money::new(100_000, "chf").to_string(), "1,000.00 CHF");
    }

    #[test]
    fn groups_credits() {
        assert_eq!(format_credits(0), "0");
        assert_eq!(format_credits(999), "999");
        assert_eq!(format_credits(1000), "1,000");
        assert_eq!(format_credits(-1_234_567), "-1,234,567");
    }
}
