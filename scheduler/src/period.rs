//! Calendar periods for GPU-hours and spend quotas (ADR 0019): the current day, week (Monday to
//! Monday) or month in UTC, from a Unix time the caller gives (the hub's clock: this crate reads
//! none), and what one namespace used or committed in each.
//!
//! Dates are worked out with integer civil-calendar arithmetic (Howard Hinnant's `days_from_civil`
//! and its inverse), so month lengths and leap years need no table and no dependency.

use std::fmt;

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
                let (y, m, _) = civil_from_days(days);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start * DAY, days_from_civil(ny, nm, 1) * DAY)
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

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (dates from 1970 on).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The date (year, month 1–12, day 1–31) of `days` since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `2026-12-04T00:00:00Z`: a Unix time as RFC 3339 in UTC, for explanations.
pub fn format_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days(secs / DAY);
    let s = secs % DAY;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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
