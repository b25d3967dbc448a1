//! Token amounts as text: the scheduler holds prices and bonds as integer atto-tokens
//! (10^-18 token, the usual ERC-20 precision) and only turns them into decimal strings for
//! explanations. No floats anywhere: `0.1 + 0.2` must be exactly `0.3` when money is involved.
//!
//! The crate does not depend on `gpufed-crds` (whose `TokenAmount` is the wire type), so this module
//! carries its own small formatter and parser with the same rules.

use crate::error::MoneyError;

/// Decimal places of a token amount.
pub const TOKEN_DECIMALS: u32 = 18;
/// One whole token in atto-tokens.
pub const ONE_TOKEN: u128 = 10u128.pow(TOKEN_DECIMALS);

/// Formats atto-tokens as whole tokens with at least two decimals and no trailing zeros beyond
/// them: `2.40`, `0.00`, `0.000001`, `1.23456`.
pub fn format_tokens(atto: u128) -> String {
    let int = atto / ONE_TOKEN;
    let frac = format!("{:018}", atto % ONE_TOKEN);
    let trimmed = frac.trim_end_matches('0');
    let shown = if trimmed.len() < 2 {
        frac.get(..2).unwrap_or("00")
    } else {
        trimmed
    };
    format!("{int}.{shown}")
}

/// Parses a plain non-negative decimal number of tokens (`"2.40"`, `"3"`, `"0.000001"`) into
/// atto-tokens. At most 18 decimals; no sign, exponent, spaces or leading zeros.
pub fn parse_tokens(text: &str) -> Result<u128, MoneyError> {
    let err = || MoneyError::Malformed(text.to_string());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) {
        return Err(err());
    }
    let whole = int
        .parse::<u128>()
        .ok()
        .and_then(|i| i.checked_mul(ONE_TOKEN))
        .ok_or_else(err)?;
    let part = match frac {
        None => 0,
        Some(f) if digits(f) && f.len() <= TOKEN_DECIMALS as usize => {
            let scale = 10u128.pow(TOKEN_DECIMALS - f.len() as u32);
            f.parse::<u128>().map_err(|_| err())? * scale
        }
        Some(_) => return Err(err()),
    };
    whole.checked_add(part).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_at_least_two_decimals_and_trim_the_rest() {
        for (atto, shown) in [
            (0, "0.00"),
            (2_400_000_000_000_000_000, "2.40"),
            (12 * ONE_TOKEN, "12.00"),
            (1_000_000_000_000, "0.000001"),
            (1_234_560_000_000_000_000, "1.23456"),
            (1, "0.000000000000000001"),
            (ONE_TOKEN + 10_000_000_000_000_000, "1.01"),
        ] {
            assert_eq!(format_tokens(atto), shown, "{atto}");
        }
    }

    #[test]
    fn the_largest_amount_formats_without_overflow() {
        assert_eq!(
            format_tokens(u128::MAX),
            "340282366920938463463.374607431768211455"
        );
    }

    #[test]
    fn decimal_text_parses_exactly_and_round_trips() {
        assert_eq!(parse_tokens("2.40"), Ok(2_400_000_000_000_000_000));
        assert_eq!(parse_tokens("3"), Ok(3 * ONE_TOKEN));
        assert_eq!(parse_tokens("0.000000000000000001"), Ok(1));
        let sum = parse_tokens("0.1").unwrap() + parse_tokens("0.2").unwrap();
        assert_eq!(sum, parse_tokens("0.3").unwrap());
        for text in ["2.40", "0.00", "0.000001", "1.23456", "150.00"] {
            assert_eq!(format_tokens(parse_tokens(text).unwrap()), text);
        }
    }

    #[test]
    fn malformed_text_is_rejected_with_the_offending_input() {
        for bad in [
            "",
            "-1",
            "+1",
            "1e3",
            "1.",
            ".5",
            "01",
            "1.2.3",
            " 1",
            "1,5",
            "abc",
            "0.0000000000000000001",
        ] {
            let err = parse_tokens(bad).unwrap_err();
            assert_eq!(err, MoneyError::Malformed(bad.to_string()));
            assert!(
                err.to_string().contains("decimal number of tokens"),
                "{bad}"
            );
        }
        assert!(parse_tokens("999999999999999999999999").is_err());
    }
}
