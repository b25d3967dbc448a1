#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Unix seconds of `y-m-d hh:mm:ss` UTC.
fn at(y: i16, m: i8, d: i8, hh: i8, mm: i8, ss: i8) -> u64 {
    let t = jiff::civil::date(y, m, d)
        .at(hh, mm, ss, 0)
        .to_zoned(TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second();
    u64::try_from(t).unwrap()
}

#[test]
fn dates_match_known_unix_times() {
    assert_eq!(at(1970, 1, 1, 0, 0, 0), 0);
    // 2000-03-01 and 2024-02-29 (leap days) as `date -u +%s` gives them.
    assert_eq!(at(2000, 3, 1, 0, 0, 0), 951_868_800);
    assert_eq!(at(2024, 2, 29, 12, 0, 0), 1_709_208_000);
    assert_eq!(format_utc(1_709_208_000), "2024-02-29T12:00:00Z");
    assert_eq!(utc_date(1_709_208_000), jiff::civil::date(2024, 2, 29));
}

#[test]
fn a_day_runs_from_midnight_to_midnight_utc() {
    let now = at(2026, 12, 4, 22, 17, 4);
    assert_eq!(
        Period::Day.window(now),
        (at(2026, 12, 4, 0, 0, 0), at(2026, 12, 5, 0, 0, 0))
    );
    // The first second of a day starts it; the last second of the day before does not.
    let midnight = at(2026, 12, 5, 0, 0, 0);
    assert_eq!(Period::Day.window(midnight).0, midnight);
    assert_eq!(Period::Day.window(midnight - 1).1, midnight);
}

#[test]
fn a_week_runs_from_monday_to_monday_utc() {
    // 2026-12-04 is a Friday; its week started on Monday 2026-11-30.
    let (start, end) = Period::Week.window(at(2026, 12, 4, 22, 0, 0));
    assert_eq!(start, at(2026, 11, 30, 0, 0, 0));
    assert_eq!(end, at(2026, 12, 7, 0, 0, 0));
    // A Sunday's last second is still in the week; Monday's first starts the next.
    assert_eq!(Period::Week.window(end - 1), (start, end));
    assert_eq!(Period::Week.window(end).0, end);
    // The week that crosses a year: Monday 2024-12-30 to Monday 2025-01-06.
    assert_eq!(
        Period::Week.window(at(2025, 1, 1, 0, 0, 0)),
        (at(2024, 12, 30, 0, 0, 0), at(2025, 1, 6, 0, 0, 0))
    );
    // 1970-01-01 was a Thursday: its week is cut at the epoch.
    assert_eq!(Period::Week.window(10), (0, at(1970, 1, 5, 0, 0, 0)));
}

#[test]
fn a_month_has_its_calendar_length_leap_years_included() {
    let len = |y, m| {
        let (s, e) = Period::Month.window(at(y, m, 15, 12, 0, 0));
        assert_eq!(s, at(y, m, 1, 0, 0, 0));
        (e - s) / DAY
    };
    assert_eq!(len(2026, 1), 31);
    assert_eq!(len(2026, 2), 28);
    assert_eq!(len(2024, 2), 29);
    assert_eq!(len(2000, 2), 29);
    assert_eq!(len(2100, 2), 28);
    assert_eq!(len(2026, 4), 30);
    assert_eq!(len(2026, 12), 31);
    // December ends at the next year's January.
    assert_eq!(
        Period::Month.window(at(2026, 12, 31, 23, 59, 59)).1,
        at(2027, 1, 1, 0, 0, 0)
    );
    assert_eq!(
        Period::Month.window(at(2027, 1, 1, 0, 0, 0)).0,
        at(2027, 1, 1, 0, 0, 0)
    );
}

#[test]
fn gpu_hours_are_shown_with_two_decimals_rounded_down() {
    assert_eq!(format_gpu_hours(0), "0.00");
    assert_eq!(format_gpu_hours(27_000), "7.50");
    assert_eq!(format_gpu_hours(3599), "0.99");
    assert_eq!(format_gpu_hours(3600 * 1000), "1000.00");
}

#[test]
fn overlap_counts_shared_seconds_only() {
    assert_eq!(overlap(0, 10, 5, 20), 5);
    assert_eq!(overlap(0, 10, 10, 20), 0);
    assert_eq!(overlap(12, 30, 5, 20), 8);
    assert_eq!(overlap(7, 3, 0, 10), 0);
}
