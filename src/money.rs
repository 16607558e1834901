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

/// ISO 4217 currencies without a minor unit, as Stripe lists them: 500 `jpy` is ¥500
/// (<https://docs.stripe.com/currencies#zero-decimal>).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// "€40.00", "$1,234.50", "¥500", "CHF 1,000.00": the currency's symbol where common,
/// else its uppercase code; two minor digits except for zero-decimal currencies.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let prefix = match self.currency.as_str() {
            "eur" => "€".to_owned(),
            "usd" => "$".to_owned(),
            "gbp" => "£".to_owned(),
            "jpy" => "¥".to_owned(),
            other => format!("{} ", other.to_ascii_uppercase()),
        };
        let abs = self.minor.unsigned_abs();
        if ZERO_DECIMAL.contains(&self.currency.as_str()) {
            write!(f, "{sign}{prefix}{}", group_thousands(abs))
        } else {
            write!(
                f,
                "{sign}{prefix}{}.{:02}",
                group_thousands(abs / 100),
                abs % 100
            )
        }
    }
}

/// Reads a non-negative decimal with at most `decimals` digits after the point
/// (`"12.5"`, `"1,200"`, `"50.00"`) as an integer count of its smallest unit
/// (`"12.5"` with 2 decimals → 1250). `None` for anything else, or beyond `i64`.
pub fn parse_decimal(raw: &str, decimals: u32) -> Option<i64> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '_')
        .collect();
    let (whole, fraction) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.len() > decimals as usize
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = 10_i64.checked_pow(decimals)?;
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().ok()? * 10_i64.pow(decimals - fraction.len() as u32)
    };
    whole.checked_mul(scale)?.checked_add(fraction)
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

/// The share of `whole` that `part` of `total` stands for, rounded up:
/// `ceil(whole × min(part, total) / total)`; 0 when `total` or `part` is not positive.
/// What a refund of `part` of a payment of `total` takes back of something worth
/// `whole` (credits, a commission): rounded against the one who is refunded or paid
/// less, so a refund in full takes back exactly `whole` and a partial one never
/// leaves more than the unrefunded share.
pub fn share_ceil(whole: i64, total: i64, part: i64) -> i64 {
    if total <= 0 || part <= 0 || whole <= 0 {
        return 0;
    }
    let part = i128::from(part.min(total));
    let (whole, total) = (i128::from(whole), i128::from(total));
    i64::try_from((whole * part + total - 1) / total).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_exactly_or_refused() {
        assert_eq!(parse_decimal("12.5", 2), Some(1250));
        assert_eq!(parse_decimal("50", 2), Some(5000));
        assert_eq!(parse_decimal("1,200.05", 2), Some(120_005));
        assert_eq!(parse_decimal(".5", 2), Some(50));
        for bad in [
            "",
            ".",
            "-1",
            "1.234",
            "1e3",
            "1.2.3",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad, 2), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_minor_units_without_floats() {
        assert_eq!(Money::new(4000, "EUR").to_string(), "€40.00");
        assert_eq!(Money::new(123_456_789, "usd").to_string(), "$1,234,567.89");
        assert_eq!(Money::new(-5, "eur").to_string(), "-€0.05");
        assert_eq!(Money::new(100_000, "chf").to_string(), "CHF 1,000.00");
        assert_eq!(Money::new(500, "JPY").to_string(), "¥500");
    }

    #[test]
    fn groups_credits() {
        assert_eq!(format_credits(0), "0");
        assert_eq!(format_credits(999), "999");
        assert_eq!(format_credits(1000), "1,000");
        assert_eq!(format_credits(-1_234_567), "-1,234,567");
    }
}
