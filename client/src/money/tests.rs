//! Decimal amounts and percentages: exact both ways, strict about what they accept.

use piazza_protocol::{Currency, Money};

use super::{AmountError, format_amount, format_money, format_percent, parse_money, parse_percent};

fn currency(code: &str) -> Currency {
    code.parse().unwrap()
}

fn check(text: &str, code: &str, minor: i64, printed: &str) {
    let money = parse_money(text, currency(code)).unwrap();
    assert_eq!(money, Money::new(minor, currency(code)), "{text} {code}");
    assert_eq!(format_money(money), printed, "{text} {code}");
}

#[test]
fn amounts_follow_the_currency_exponent() {
    check("12.50", "EUR", 1250, "12.50 EUR");
    check("12.5", "EUR", 1250, "12.50 EUR");
    check("12", "EUR", 1200, "12.00 EUR");
    check("0.01", "USD", 1, "0.01 USD");
    check("0", "EUR", 0, "0.00 EUR");
    check("007.10", "EUR", 710, "7.10 EUR");
    check("1500", "JPY", 1500, "1500 JPY");
    check("1.234", "KWD", 1234, "1.234 KWD");
    check("0.0001", "CLF", 1, "0.0001 CLF");
    // Codes outside the table have two decimals.
    check("3.99", "ZZZ", 399, "3.99 ZZZ");
}

#[test]
fn amounts_are_exact_where_floats_are_not() {
    // 0.29 * 100 is 28.999999999999996 as a float.
    check("0.29", "EUR", 29, "0.29 EUR");
    check("1.10", "EUR", 110, "1.10 EUR");
    // The largest representable amount, and one minor unit more.
    check(
        "92233720368547758.07",
        "EUR",
        i64::MAX,
        "92233720368547758.07 EUR",
    );
    assert!(matches!(
        parse_money("92233720368547758.08", currency("EUR")),
        Err(AmountError::Overflow { .. })
    ));
    assert!(matches!(
        parse_money("99999999999999999999999", currency("EUR")),
        Err(AmountError::Overflow { .. })
    ));
}

#[test]
fn too_many_decimals_are_refused_not_rounded() {
    for (text, code) in [("1.005", "EUR"), ("1.5", "JPY"), ("0.12345", "KWD")] {
        assert!(
            matches!(
                parse_money(text, currency(code)),
                Err(AmountError::TooManyDecimals { .. })
            ),
            "{text} {code}"
        );
    }
}

#[test]
fn anything_but_plain_decimals_is_refused() {
    for text in [
        "", ".", ".5", "5.", "-1", "+1", "1e3", " 1", "1 ", "1,50", "1.2.3", "١٢", "0x10", "NaN",
    ] {
        assert!(
            matches!(
                parse_money(text, currency("EUR")),
                Err(AmountError::NotDecimal { .. })
            ),
            "{text:?}"
        );
    }
}

#[test]
fn negative_amounts_print_with_a_sign() {
    assert_eq!(format_amount(Money::new(-5, currency("EUR"))), "-0.05");
    assert_eq!(format_amount(Money::new(-1250, currency("EUR"))), "-12.50");
    assert_eq!(format_amount(Money::new(-7, currency("JPY"))), "-7");
    assert_eq!(
        format_amount(Money::new(i64::MIN, currency("EUR"))),
        "-92233720368547758.08"
    );
}

#[test]
fn percentages_are_basis_points_within_range() {
    assert_eq!(parse_percent("15"), Ok(1500));
    assert_eq!(parse_percent("12.5"), Ok(1250));
    assert_eq!(parse_percent("0.01"), Ok(1));
    assert_eq!(parse_percent("100"), Ok(10_000));
    assert_eq!(parse_percent("100.00"), Ok(10_000));
    for text in ["0", "0.00", "100.01", "101", "70000"] {
        assert!(
            matches!(parse_percent(text), Err(AmountError::PercentRange { .. })),
            "{text}"
        );
    }
    assert!(matches!(
        parse_percent("12.345"),
        Err(AmountError::TooManyDecimals { max: 2, .. })
    ));
    assert!(matches!(
        parse_percent("15%"),
        Err(AmountError::NotDecimal { .. })
    ));
}

#[test]
fn percentages_print_without_needless_zeros() {
    assert_eq!(format_percent(1500), "15%");
    assert_eq!(format_percent(1250), "12.5%");
    assert_eq!(format_percent(1), "0.01%");
    assert_eq!(format_percent(10_000), "100%");
    assert_eq!(format_percent(1205), "12.05%");
}
