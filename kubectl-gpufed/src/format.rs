//! Small pure formatters shared by the views: kubectl's ages (`5s`, `3m`, `2h`, `4d`), `<none>`
//! for missing values, timestamps, shortened hashes, condition statuses and shell quoting.

use gpufed_crds::conditions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// What kubectl prints for a missing value.
pub const NONE: &str = "<none>";

/// `value` as text, or `<none>`.
pub fn or_none<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| NONE.to_string(), |v| v.to_string())
}

/// Text, or `<none>` when empty.
pub fn text_or_none(value: &str) -> String {
    if value.is_empty() {
        NONE.to_string()
    } else {
        value.to_string()
    }
}

/// How long ago `then` was, as kubectl prints ages (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`).
pub fn age(then: Timestamp, now: Timestamp) -> String {
    human_duration(now.as_second() - then.as_second())
}

/// [`age`] of an optional time, `<none>` when absent.
pub fn age_of(then: Option<&Time>, now: Timestamp) -> String {
    then.map_or_else(|| NONE.to_string(), |t| age(t.0, now))
}

/// A duration of `seconds` the way kubectl shows it: two significant units at most, coarser as it
/// grows (`90s`, `5m30s`, `45m`, `3h20m`, `20h`, `3d4h`, `30d`, `2y10d`).
pub fn human_duration(seconds: i64) -> String {
    // kubectl tolerates a little clock skew between client and server.
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

/// A point in time as RFC 3339 in UTC to the second, `<none>` when absent.
pub fn timestamp(t: Option<&Time>) -> String {
    t.map_or_else(
        || NONE.to_string(),
        |t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// A long `0x…` hash cut to its first 8 hex digits (`0x1a2b3c4d…`) for narrow tables.
pub fn short_hash(hash: &str) -> String {
    match hash.strip_prefix("0x") {
        Some(hex) if hex.len() > 10 => format!("0x{}…", &hex[..8]),
        _ => hash.to_string(),
    }
}

/// The status (`True`/`False`/`Unknown`) of the condition `type_`, `<none>` when absent.
pub fn condition_status(conds: &[Condition], type_: &str) -> String {
    conditions::find(conds, type_).map_or_else(|| NONE.to_string(), |c| c.status.clone())
}

/// `s` as one shell word: unchanged when it needs no quoting, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@+%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `n` followed by `one` or `many`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, shown) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (20 * 3600, "20h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (4 * 86400 + 5 * 3600, "4d5h"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
            (365 * 2 * 86400, "2y"),
            (3000 * 86400, "8y"),
        ] {
            assert_eq!(human_duration(secs), shown, "{secs}s");
        }
    }

    #[test]
    fn age_counts_from_then_to_now() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let then = Timestamp::from_second(1_000_000 - 4 * 86400).unwrap();
        assert_eq!(age(then, now), "4d");
        assert_eq!(age_of(None, now), "<none>");
    }

    #[test]
    fn timestamps_are_utc_to_the_second() {
        let t = Time(Timestamp::from_second(1_767_261_600).unwrap());
        assert_eq!(timestamp(Some(&t)), "2026-01-01T10:00:00Z");
        assert_eq!(timestamp(None), "<none>");
    }

    #[test]
    fn long_hashes_are_shortened_and_short_text_kept() {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(short_hash(&h), "0xabababab…");
        assert_eq!(short_hash("0x1234"), "0x1234");
        assert_eq!(short_hash("pending"), "pending");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("./alpha.kubeconfig"), "./alpha.kubeconfig");
        assert_eq!(shell_quote("my file"), "'my file'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn missing_values_print_as_none() {
        assert_eq!(or_none(None::<u32>), "<none>");
        assert_eq!(or_none(Some(3)), "3");
        assert_eq!(text_or_none(""), "<none>");
        assert_eq!(condition_status(&[], "Ready"), "<none>");
        assert_eq!(plural(1, "attempt", "attempts"), "1 attempt");
        assert_eq!(plural(2, "attempt", "attempts"), "2 attempts");
    }
}
