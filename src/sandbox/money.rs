//! Amounts in minor units shown the way a checkout page shows them ("€40.00").

/// ISO 4217 currencies without a minor unit, as Stripe lists them: an amount of 500
/// in `jpy` is ¥500.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Formats `minor` units of `currency` (lowercase ISO code, as Stripe sends it) with
/// the currency's symbol, or its uppercase code when it has no common symbol.
pub(crate) fn format_amount(minor: i64, currency: &str) -> String {
    let prefix = match currency {
        "eur" => "€".to_owned(),
        "usd" => "$".to_owned(),
        "gbp" => "£".to_owned(),
        "jpy" => "¥".to_owned(),
        other => format!("{} ", other.to_uppercase()),
    };
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    if ZERO_DECIMAL.contains(&currency) {
        format!("{sign}{prefix}{}", group_thousands(minor))
    } else {
        format!(
            "{sign}{prefix}{}.{:02}",
            group_thousands(minor / 100),
            minor % 100
        )
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::format_amount;

    #[test]
    fn formats_two_decimal_currencies_with_symbol() {
        assert_eq!(format_amount(4000, "eur"), "€40.00");
        assert_eq!(format_amount(5, "usd"), "$0.05");
        assert_eq!(format_amount(123_456_789, "gbp"), "£1,234,567.89");
    }

    #[test]
    fn formats_zero_decimal_and_unknown_currencies() {
        assert_eq!(format_amount(500, "jpy"), "¥500");
        assert_eq!(format_amount(1050, "chf"), "CHF 10.50");
        assert_eq!(format_amount(-1050, "eur"), "-€10.50");
    }
}
