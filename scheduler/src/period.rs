//! Calendar periods for GPU-hours and spend quotas (ADR 0019): the current day, week (Monday to
//! Monday) or month in UTC, from a Unix time the caller gives (the hub's clock: this crate reads
//! none), and what one namespace used or committed in each.
//!
//! Calendar dates (month lengths, leap years) come from `jiff`'s civil calendar in UTC.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Seconds in a day.
const DAY: u64 = 86_400;

/// A calendar period in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// From 00:00 UTC to the next 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC to the next Monday 00:00 UTC (ISO weeks).
    Week,
    /// From the 1st 00:00 UTC to the 1st of the next month.
    Month,
}

impl Period {
    /// Every period, in the order [`PeriodUsage`] keeps their numbers.
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    /// Position in [`Period::ALL`].
    pub fn index(self) -> usize {
        match self {
            Period::Day => 0,
            Period::Week => 1,
            Period::Month => 2,
        }
    }

    /// The period containing `now` (Unix seconds): `[start, end)` in Unix seconds.
    pub fn window(self, now: u64) -> (u64, u64) {
        let days = now / DAY;
        match self {
            Period::Day => (days * DAY, (days + 1) * DAY),
            Period::Week => {
                // 1970-01-01 was a Thursday: Monday is 3 days before it.
                let since_monday = (days + 3) % 7;
                match days.checked_sub(since_monday) {
                    Some(start) => (start * DAY, (start + 7) * DAY),
                    // Before the first Monday of 1970: the week started in 1969.
                    None => (0, (days + 7 - since_monday) * DAY),
                }
            }
            Period::Month => {
                let first = utc_date(now).first_of_month();
                let next = first.last_of_month().tomorrow().unwrap_or(Date::MAX);
                (unix_seconds(first), unix_seconds(next))
            }
        }
    }

    /// `day`, `week` or `month`, for explanations (`this day`, `this month`).
    pub fn noun(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

impl fmt::Display for Period {
    /// `Day`, `Week` or `Month`, as in the GpuPool spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Period::Day => "Day",
            Period::Week => "Week",
            Period::Month => "Month",
        })
    }
}

/// The UTC date of Unix time `secs` (the last date jiff knows for times beyond it).
fn utc_date(secs: u64) -> Date {
    timestamp(secs).to_zoned(TimeZone::UTC).date()
}

/// Unix time `secs` as a timestamp, saturating at jiff's range.
fn timestamp(secs: u64) -> Timestamp {
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Unix seconds of `date`'s 00:00 UTC (0 before the epoch).
fn unix_seconds(date: Date) -> u64 {
    date.to_zoned(TimeZone::UTC)
        .map(|z| u64::try_from(z.timestamp().as_second()).unwrap_or(0))
        .unwrap_or(u64::MAX)
}

/// `2026-12-04T00:00:00Z`: a Unix time as RFC 3339 in UTC, for explanations.
pub fn format_utc(secs: u64) -> String {
    timestamp(secs).to_string()
}

/// GPU-seconds as GPU-hours with two decimals, rounded down: `7.50`, `0.00`.
pub fn format_gpu_hours(gpu_seconds: u64) -> String {
    let hundredths = gpu_seconds / 36;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The seconds `[a0, a1)` and `[b0, b1)` share.
pub fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// Limits of one quota group per calendar period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodQuota {
    /// The period the limits count over.
    pub period: Period,
    /// GPU-seconds the namespace may use per period (lent within its cohort like GPUs); `None`:
    /// not limited.
    pub gpu_seconds: Option<u64>,
    /// Atto-tokens the namespace may spend or have locked per period (never borrowed); `None`:
    /// not limited.
    pub spend: Option<u128>,
}

/// What one namespace used or committed of one model in the current day, week and month (indexed
/// by [`Period::index`]): GPU-seconds (finished attempts' use inside the period, and for attempts
/// still placed or running their worst case, GPUs × maxDuration, inside it) and atto-tokens
/// (settled amounts, and locks of attempts not settled yet, of attempts placed in the period).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodUsage {
    /// The namespace.
    pub namespace: String,
    /// The model.
    pub model: String,
    /// GPU-seconds per period.
    pub gpu_seconds: [u64; 3],
    /// Atto-tokens per period.
    pub spend: [u128; 3],
}

#[cfg(test)]
mod tests;
