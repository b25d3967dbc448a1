//! Value types shared by the API: token amounts, Kubernetes durations and EVM addresses.
//!
//! Each type is a string on the wire (what users write in YAML) and a parsed value in Rust, so a
//! bad value fails in one place with a message that says what is allowed. The JSON schemas carry
//! the same rules as patterns, so the apiserver rejects bad values at admission and the Rust parse
//! never sees them in practice; the parse is still strict because examples and tests go through it.
//!
//! Money is never a float: [`TokenAmount`] is a fixed-point number with 18 decimals (the usual
//! ERC-20 precision), stored as an integer count of the smallest unit ("atto-tokens").

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Number of decimal places of a [`TokenAmount`].
pub const TOKEN_DECIMALS: u32 = 18;
/// One whole token in atto-tokens.
pub const ONE_TOKEN: u128 = 10u128.pow(TOKEN_DECIMALS);
/// At most this many digits before the decimal point (10^15 tokens), so that a price times GPUs
/// times seconds stays inside `u128` for every value the schema admits.
pub const MAX_INTEGER_DIGITS: usize = 15;

/// The regular expression the apiserver checks for token amounts (kept equal to [`TokenAmount::from_str`]).
pub const TOKEN_AMOUNT_PATTERN: &str = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,18})?$";
/// The regular expression for Kubernetes (Go) duration strings that we accept.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// The regular expression for EVM addresses.
pub const ADDRESS_PATTERN: &str = r"^0x[0-9a-fA-F]{40}$";

/// Why a value could not be parsed. Each message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A token amount that is not a plain non-negative decimal.
    #[error(
        "invalid token amount {0:?}: write a non-negative decimal number of tokens such as \"2.40\" (at most 15 digits before and 18 after the point, no sign, no exponent)"
    )]
    TokenAmount(String),
    /// A duration that is not a Kubernetes duration string.
    #[error(
        "invalid duration {0:?}: write a Kubernetes duration such as \"90s\", \"30m\", \"1h30m\" (units ms, s, m, h)"
    )]
    Duration(String),
    /// An address that is not `0x` followed by 40 hex digits.
    #[error("invalid EVM address {0:?}: write 0x followed by 40 hexadecimal digits")]
    Address(String),
}

/// An amount of tokens, e.g. a price per GPU-hour or a bond. Written as a decimal string in whole
/// tokens (`"2.40"`), held as an integer count of atto-tokens (10^-18 token).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenAmount(u128);

impl TokenAmount {
    /// Zero tokens.
    pub const ZERO: TokenAmount = TokenAmount(0);

    /// An amount from a count of atto-tokens.
    pub const fn from_atto(atto: u128) -> Self {
        TokenAmount(atto)
    }

    /// An amount of whole tokens.
    pub const fn from_tokens(tokens: u64) -> Self {
        TokenAmount(tokens as u128 * ONE_TOKEN)
    }

    /// The amount in atto-tokens.
    pub const fn atto(self) -> u128 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: TokenAmount) -> Option<TokenAmount> {
        self.0.checked_add(other.0).map(TokenAmount)
    }

    /// `self - other`, or `None` when `other` is larger.
    pub fn checked_sub(self, other: TokenAmount) -> Option<TokenAmount> {
        self.0.checked_sub(other.0).map(TokenAmount)
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: TokenAmount) -> TokenAmount {
        TokenAmount(self.0.saturating_sub(other.0))
    }

    /// The cost of `gpu_seconds` GPU-seconds at `self` per GPU-hour, rounded down to the atto-token.
    /// `None` on overflow, which cannot happen for amounts the schema admits and the largest job
    /// (512 GPUs for 168 h): the price is split into whole and partial 3600ths so the product stays small.
    pub fn cost_of_gpu_seconds(self, gpu_seconds: u64) -> Option<TokenAmount> {
        let secs = u128::from(gpu_seconds);
        let whole = (self.0 / 3600).checked_mul(secs)?;
        let part = (self.0 % 3600) * secs / 3600;
        whole.checked_add(part).map(TokenAmount)
    }
}

impl FromStr for TokenAmount {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::TokenAmount(s.to_string());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || int.len() > MAX_INTEGER_DIGITS || (int.len() > 1 && int.starts_with('0'))
        {
            return Err(err());
        }
        let mut atto = int.parse::<u128>().map_err(|_| err())? * ONE_TOKEN;
        if let Some(frac) = frac {
            if !digits(frac) || frac.len() > TOKEN_DECIMALS as usize {
                return Err(err());
            }
            let scale = 10u128.pow(TOKEN_DECIMALS - frac.len() as u32);
            atto += frac.parse::<u128>().map_err(|_| err())? * scale;
        }
        Ok(TokenAmount(atto))
    }
}

impl fmt::Display for TokenAmount {
    /// Whole tokens with at least two decimals and no trailing zeros beyond them: `2.40`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / ONE_TOKEN;
        let frac = format!("{:018}", self.0 % ONE_TOKEN);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        // pad() honours width and alignment, so amounts line up in tables.
        f.pad(&format!("{int}.{shown}"))
    }
}

impl Serialize for TokenAmount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TokenAmount {
    fn schema_name() -> Cow<'static, str> {
        "TokenAmount".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": TOKEN_AMOUNT_PATTERN,
            "maxLength": 34,
        })
    }
}

/// A Kubernetes (Go-style) duration such as `"90s"`, `"30m"` or `"1h30m"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeDuration(Duration);

impl KubeDuration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        KubeDuration(Duration::from_secs(secs))
    }

    /// The parsed duration.
    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Whole seconds, rounded up (a job that may run 1.5 s is charged and limited as 2 s).
    pub fn as_secs_ceil(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

impl From<Duration> for KubeDuration {
    fn from(d: Duration) -> Self {
        KubeDuration(d)
    }
}

impl FromStr for KubeDuration {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::Duration(s.to_string());
        if s.is_empty() {
            return Err(err());
        }
        let mut rest = s;
        let mut total_ms: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(err)?;
            let (num, tail) = rest.split_at(num_len);
            let (unit_ms, unit_len): (u128, usize) = if tail.starts_with("ms") {
                (1, 2)
            } else if tail.starts_with('s') {
                (1_000, 1)
            } else if tail.starts_with('m') {
                (60_000, 1)
            } else if tail.starts_with('h') {
                (3_600_000, 1)
            } else {
                return Err(err());
            };
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if int.is_empty()
                || !int.bytes().all(|b| b.is_ascii_digit())
                || !frac.bytes().all(|b| b.is_ascii_digit())
                || (num.contains('.') && frac.is_empty())
            {
                return Err(err());
            }
            let int: u128 = int.parse().map_err(|_| err())?;
            let mut part = int.checked_mul(unit_ms).ok_or_else(err)?;
            if !frac.is_empty() {
                // Milliseconds are our resolution; finer fractions are truncated.
                let digits = frac.len().min(9) as u32;
                let f: u128 = frac[..digits as usize].parse().map_err(|_| err())?;
                part += f * unit_ms / 10u128.pow(digits);
            }
            total_ms = total_ms.checked_add(part).ok_or_else(err)?;
            rest = &tail[unit_len..];
        }
        let ms = u64::try_from(total_ms).map_err(|_| err())?;
        Ok(KubeDuration(Duration::from_millis(ms)))
    }
}

impl fmt::Display for KubeDuration {
    /// Go's format, e.g. `1h30m0s`, `90ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms < 1000 {
            return write!(f, "{ms}ms");
        }
        let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, milli) = (rem / 1000, rem % 1000);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if milli > 0 {
            let frac = format!("{milli:03}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for KubeDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for KubeDuration {
    fn schema_name() -> Cow<'static, str> {
        "KubeDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

/// An EVM account address: `0x` followed by 40 hex digits. Compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EvmAddress(String);

impl EvmAddress {
    /// The lower-case `0x…` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 20 address bytes.
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, chunk) in self.0.as_bytes()[2..].chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16).unwrap_or(0);
            let lo = (chunk[1] as char).to_digit(16).unwrap_or(0);
            out[i] = (hi * 16 + lo) as u8;
        }
        out
    }
}

impl FromStr for EvmAddress {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == 42
            && (s.starts_with("0x") || s.starts_with("0X"))
            && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(EvmAddress(format!("0x{}", s[2..].to_ascii_lowercase())))
        } else {
            Err(ParseError::Address(s.to_string()))
        }
    }
}

impl fmt::Display for EvmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EvmAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EvmAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for EvmAddress {
    fn schema_name() -> Cow<'static, str> {
        "EvmAddress".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": ADDRESS_PATTERN,
            "maxLength": 42,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> Result<TokenAmount, ParseError> {
        s.parse()
    }

    #[test]
    fn token_amounts_parse_exactly_without_floats() {
        assert_eq!(amount("0").unwrap(), TokenAmount::ZERO);
        assert_eq!(amount("2.40").unwrap().atto(), 2_400_000_000_000_000_000);
        assert_eq!(amount("0.35").unwrap().atto(), 350_000_000_000_000_000);
        assert_eq!(amount("0.000000000000000001").unwrap().atto(), 1);
        assert_eq!(
            amount("999999999999999").unwrap().atto(),
            999_999_999_999_999 * ONE_TOKEN
        );
        // 0.1 + 0.2 is exactly 0.3 here, unlike in binary floating point.
        let sum = amount("0.1").unwrap().checked_add(amount("0.2").unwrap());
        assert_eq!(sum, Some(amount("0.3").unwrap()));
    }

    #[test]
    fn bad_token_amounts_are_rejected_with_a_hint() {
        for bad in [
            "",
            "abc",
            "-1",
            "+1",
            "1e3",
            "1.",
            ".5",
            "01",
            "1.2.3",
            " 1",
            "1,5",
            "NaN",
            "0.0000000000000000001",
            "1000000000000000",
        ] {
            let err = amount(bad).unwrap_err();
            assert!(
                err.to_string().contains("non-negative decimal"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn token_amounts_display_with_two_decimals_at_least() {
        for (input, shown) in [
            ("2.4", "2.40"),
            ("0", "0.00"),
            ("12", "12.00"),
            ("0.000001", "0.000001"),
            ("1.23456", "1.23456"),
        ] {
            assert_eq!(amount(input).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn token_amounts_line_up_in_tables() {
        assert_eq!(format!("[{:>8}]", amount("2.4").unwrap()), "[    2.40]");
        assert_eq!(format!("[{:<8}]", amount("2.4").unwrap()), "[2.40    ]");
    }

    #[test]
    fn cost_of_gpu_seconds_is_price_per_hour_prorated() {
        let price = amount("3.60").unwrap();
        assert_eq!(price.cost_of_gpu_seconds(3600), Some(price));
        assert_eq!(
            price.cost_of_gpu_seconds(1).unwrap(),
            amount("0.001").unwrap()
        );
        assert_eq!(price.cost_of_gpu_seconds(0), Some(TokenAmount::ZERO));
        // Rounds down to the atto-token, never up.
        assert_eq!(
            TokenAmount::from_atto(3599).cost_of_gpu_seconds(1),
            Some(TokenAmount::ZERO)
        );
        assert_eq!(
            TokenAmount::from_atto(7201).cost_of_gpu_seconds(1),
            Some(TokenAmount::from_atto(2))
        );
        // The largest admitted price for the largest job (512 GPUs for 168 h) still fits.
        let max = amount("999999999999999.999999999999999999").unwrap();
        let cost = max.cost_of_gpu_seconds(512 * 168 * 3600).unwrap();
        assert_eq!(
            cost.atto() / ONE_TOKEN,
            999_999_999_999_999 * 512 * 168 + 512 * 168 - 1
        );
    }

    #[test]
    fn token_amount_pattern_agrees_with_the_parser() {
        let re = regex_lite::Regex::new(TOKEN_AMOUNT_PATTERN).unwrap();
        for s in [
            "0",
            "1",
            "2.40",
            "0.000000000000000001",
            "999999999999999.5",
            "01",
            "-1",
            "1.",
            "abc",
        ] {
            assert_eq!(re.is_match(s), amount(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn durations_parse_like_kubernetes() {
        let d = |s: &str| s.parse::<KubeDuration>().map(|d| d.as_duration());
        assert_eq!(d("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("0s"), Ok(Duration::ZERO));
        for bad in [
            "", "10", "1d", "h", "-1s", "1.h", "1 h", "1hh", "abc", ".5s",
        ] {
            assert!(d(bad).is_err(), "{bad} should be rejected");
        }
        assert!(
            d("1d")
                .unwrap_err()
                .to_string()
                .contains("units ms, s, m, h")
        );
    }

    #[test]
    fn durations_display_in_go_format_and_round_trip() {
        for (input, shown) in [
            ("90s", "1m30s"),
            ("1h", "1h0m0s"),
            ("250ms", "250ms"),
            ("1.5s", "1.5s"),
        ] {
            let parsed: KubeDuration = input.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<KubeDuration>().unwrap(), parsed);
        }
        assert_eq!("1.5s".parse::<KubeDuration>().unwrap().as_secs_ceil(), 2);
    }

    #[test]
    fn duration_pattern_agrees_with_the_parser() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for s in ["90s", "1h30m", "1.5h", "250ms", "1d", "10", "", "1.h"] {
            assert_eq!(re.is_match(s), s.parse::<KubeDuration>().is_ok(), "{s}");
        }
    }

    #[test]
    fn addresses_need_0x_and_40_hex_digits() {
        let a: EvmAddress = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
            .parse()
            .unwrap();
        assert_eq!(a.as_str(), "0xabcdef0123456789abcdef0123456789abcdef01");
        assert_eq!(a.to_bytes()[0], 0xab);
        assert_eq!(a.to_bytes()[19], 0x01);
        for bad in [
            "",
            "0x",
            "abcdef0123456789abcdef0123456789abcdef0123",
            "0xabcdef0123456789abcdef0123456789abcdef0",
            "0xabcdef0123456789abcdef0123456789abcdef012",
            "0xgbcdef0123456789abcdef0123456789abcdef01",
        ] {
            let err = bad.parse::<EvmAddress>().unwrap_err();
            assert!(err.to_string().contains("0x followed by 40"), "{bad}");
        }
    }
}
