//! Amounts as people write them: `"12.50"` with [`Currency`] EUR is a [`Money`] of 1250 minor
//! units, by the currency's ISO 4217 exponent ([`Currency::minor_exponent`]); percentages as
//! people write them (`"12.5"`) are basis points (1250), the unit of the commerce protocol.
//!
//! Parsing reads the decimal digits themselves and never goes through a float, so every amount
//! is exact: `"0.10"` is 10 cents, not 9.999… of them. The grammar is deliberately strict (digits,
//! optionally a point and at most the currency's number of decimals; no sign, exponent, spaces
//! or thousands separators): an amount of money that is not plainly readable is refused rather
//! than guessed.

use piazza_protocol::{Currency, Money};

/// Why a decimal amount was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not `digits[.digits]`.
    #[error("{text:?} is not a decimal amount like 12 or 12.50")]
    NotDecimal {
        /// What was given.
        text: String,
    },
    /// More decimals than the unit has (`"1.005"` EUR, `"1.5"` JPY).
    #[error("{text:?} has more than {max} decimals")]
    TooManyDecimals {
        /// What was given.
        text: String,
        /// Decimals the unit allows.
        max: u32,
    },
    /// Too large to represent.
    #[error("{text:?} is too large")]
    Overflow {
        /// What was given.
        text: String,
    },
    /// A percentage outside 0.01..=100.
    #[error("{text:?} is not a percentage from 0.01 to 100")]
    PercentRange {
        /// What was given.
        text: String,
    },
}

/// Parses a non-negative decimal amount of `currency`: `"12.50"` EUR → 1250 minor units,
/// `"12.5"` → 1250, `"12"` → 1200, `"1500"` JPY → 1500.
pub fn parse_money(text: &str, currency: Currency) -> Result<Money, AmountError> {
    let minor = parse_scaled(text, currency.minor_exponent())?;
    let minor = i64::try_from(minor).map_err(|_| AmountError::Overflow {
        text: text.to_owned(),
    })?;
    Ok(Money::new(minor, currency))
}

/// The amount without its currency, with the currency's decimals: `"12.50"`, `"1500"` (JPY),
/// `"-0.05"`.
pub fn format_amount(money: Money) -> String {
    let exponent = money.currency().minor_exponent();
    let minor = money.minor();
    let sign = if minor < 0 { "-" } else { "" };
    let digits = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let scale = 10u64.pow(exponent);
    let width = exponent as usize;
    format!("{sign}{}.{:0width$}", digits / scale, digits % scale)
}

/// The amount with its currency: `"12.50 EUR"`.
pub fn format_money(money: Money) -> String {
    format!("{} {}", format_amount(money), money.currency())
}

/// Parses a percentage from 0.01 to 100 with at most two decimals into basis points:
/// `"15"` → 1500, `"12.5"` → 1250, `"0.01"` → 1.
pub fn parse_percent(text: &str) -> Result<u16, AmountError> {
    let basis_points = parse_scaled(text, 2)?;
    match u16::try_from(basis_points) {
        Ok(basis_points @ 1..=10_000) => Ok(basis_points),
        _ => Err(AmountError::PercentRange {
            text: text.to_owned(),
        }),
    }
}

/// Basis points as a percentage: 1500 → `"15%"`, 1250 → `"12.5%"`, 1 → `"0.01%"`.
pub fn format_percent(basis_points: u16) -> String {
    let whole = basis_points / 100;
    match basis_points % 100 {
        0 => format!("{whole}%"),
        cents if cents % 10 == 0 => format!("{whole}.{}%", cents / 10),
        cents => format!("{whole}.{cents:02}%"),
    }
}

/// `digits[.digits]` × 10^`exponent`, exactly.
fn parse_scaled(text: &str, exponent: u32) -> Result<u64, AmountError> {
    let not_decimal = || AmountError::NotDecimal {
        text: text.to_owned(),
    };
    let overflow = || AmountError::Overflow {
        text: text.to_owned(),
    };
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return Err(not_decimal());
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > exponent as usize {
        return Err(AmountError::TooManyDecimals {
            text: text.to_owned(),
            max: exponent,
        });
    }
    let scale = 10u64.checked_pow(exponent).ok_or_else(overflow)?;
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    // Right-pad the fraction to `exponent` digits: "5" with exponent 2 is 50 hundredths.
    let padding = exponent - fraction.len() as u32;
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u64>().map_err(|_| overflow())? * 10u64.pow(padding)
    };
    whole
        .checked_mul(scale)
        .and_then(|scaled| scaled.checked_add(fraction))
        .ok_or_else(overflow)
}

#[cfg(test)]
mod tests;
