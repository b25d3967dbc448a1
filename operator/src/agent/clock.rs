//! The member's clock: the agent measures time on its member's control plane, not on its own host.
//!
//! Every time the agent compares "now" with a time the member stamped — a pod's container start
//! (GPU-seconds of a running job), the lease Job's start (whether the member's lease ran out), a
//! pod's `Unschedulable` transition (a gang's grace) — a host clock that is off would be read as
//! time that passed or did not: an agent 2 minutes ahead would bill 2 minutes no GPU served, and
//! take its own live lease for lapsed, which stops every Job on the member. So the agent keeps the
//! offset between its wall clock and its member's kube-apiserver, read from the `Date` header of
//! the apiserver's answers (RFC 9110: the time the response was generated, whole seconds), and
//! reads "now" as the apiserver's time at the last reading plus the time since on its own
//! monotonic clock — so not even a step of the host's wall clock between two readings (an NTP
//! correction) is taken for time that passed. Before the first reading, "now" is the host's
//! wall clock at start-up plus monotonic time since.
//!
//! The hub needs none of this: it judges a member by when *it* saw the heartbeat change, on its own
//! monotonic clock (`hub::member_controller::heartbeat`).

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::Client;

use super::state::Shared;
use crate::metrics::Metrics;

/// How often the offset is read again.
pub const MEASURE_EVERY: Duration = Duration::from_secs(30);
/// An offset beyond this is logged as a warning (NTP keeps hosts within milliseconds).
const WARN_BEYOND: SignedDuration = SignedDuration::from_secs(2);
/// How long one reading may take; a slower answer says little about the time it was made.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of the member's clock: the apiserver's time at the monotonic instant `at`, and how
/// far it is from our wall clock then (for the metric and the log only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// The member's time at `at`.
    pub member: Timestamp,
    /// When, on our monotonic clock.
    pub at: Instant,
    /// The member's time minus our wall clock's, at `at`.
    pub offset: SignedDuration,
}

/// A reading from one exchange: the request went out at `sent` and the answer, stamped `date` (an
/// HTTP-date), came back at `received` (monotonic), when our wall clock said `wall_received`. The
/// `Date` header drops the fraction of its second, so the apiserver's time is taken as the middle
/// of that second, at the middle of the exchange: good to about half a second plus half the round
/// trip.
pub fn reading(
    date: &str,
    sent: Instant,
    received: Instant,
    wall_received: Timestamp,
) -> Result<Reading, String> {
    let stamped = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date.trim())
        .map_err(|e| format!("the apiserver's Date header {date:?} is not an HTTP-date: {e}"))?;
    let member = stamped
        .checked_add(SignedDuration::from_millis(500))
        .map_err(|e| format!("the Date's midpoint: {e}"))?;
    let half = received.saturating_duration_since(sent) / 2;
    let at = sent + half;
    let wall_at = wall_received
        .checked_sub(SignedDuration::try_from(half).unwrap_or(SignedDuration::ZERO))
        .map_err(|e| format!("our wall clock at the exchange's midpoint: {e}"))?;
    Ok(Reading {
        member,
        at,
        offset: member.duration_since(wall_at),
    })
}

/// Asks the member's apiserver for `/version` and reads its clock from the answer.
pub async fn measure(local: &Client) -> Result<Reading, String> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| format!("building the request: {e}"))?;
    let sent = Instant::now();
    let response = tokio::time::timeout(READ_TIMEOUT, local.send(request))
        .await
        .map_err(|_| format!("no answer from the member's apiserver within {READ_TIMEOUT:?}"))?
        .map_err(|e| format!("asking the member's apiserver for /version: {e}"))?;
    let (received, wall) = (Instant::now(), Timestamp::now());
    let date = response
        .headers()
        .get(http::header::DATE)
        .ok_or("the member's apiserver sent no Date header")?
        .to_str()
        .map_err(|e| format!("the member's Date header: {e}"))?;
    reading(date, sent, received, wall)
}

/// Reads the member's clock once and keeps the reading; logs what it found. Returns whether it
/// succeeded.
pub async fn update(local: &Client, shared: &Shared, metrics: &Metrics) -> bool {
    match measure(local).await {
        Ok(r) => {
            let before = shared.clock_offset();
            shared.set_member_clock(r);
            metrics.agent_clock_offset.set(r.offset.as_secs_f64());
            if r.offset.abs() > WARN_BEYOND && (r.offset - before).abs() > WARN_BEYOND / 2 {
                tracing::warn!(
                    offset_seconds = r.offset.as_secs_f64(),
                    "this host's clock is off the member's apiserver; the agent measures time on the apiserver's clock"
                );
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the member's clock; keeping the last reading");
            false
        }
    }
}

/// Keeps the reading current until the process ends.
pub async fn run(local: Client, shared: std::sync::Arc<Shared>, metrics: Metrics) {
    // The first reading was taken at start-up.
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + MEASURE_EVERY, MEASURE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        update(&local, &shared, &metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_apiserver_two_minutes_ahead_is_read_at_the_middle_of_the_exchange() {
        let sent = Instant::now();
        let received = sent + Duration::from_millis(200);
        // Our wall clock said 12:00:00.300 when the answer came; the apiserver said 12:02:00.
        let r = reading(
            "Fri, 04 Dec 2026 12:02:00 GMT",
            sent,
            received,
            ts("2026-12-04T12:00:00.300Z"),
        )
        .unwrap();
        assert_eq!(r.member, ts("2026-12-04T12:02:00.500Z"));
        assert_eq!(r.at, sent + Duration::from_millis(100));
        assert_eq!(r.offset, SignedDuration::from_millis(120_300));
    }

    #[test]
    fn an_apiserver_behind_gives_a_negative_offset_and_agreeing_clocks_about_zero() {
        let sent = Instant::now();
        let r = reading(
            "Fri, 04 Dec 2026 11:59:30 GMT",
            sent,
            sent + Duration::from_millis(10),
            ts("2026-12-04T12:00:00.010Z"),
        )
        .unwrap();
        assert_eq!(r.offset, SignedDuration::from_millis(-29_505));
        let same = reading(
            "Fri, 04 Dec 2026 12:00:00 GMT",
            sent,
            sent + Duration::from_millis(200),
            ts("2026-12-04T12:00:00.600Z"),
        )
        .unwrap();
        assert!(
            same.offset.abs() <= SignedDuration::from_millis(500),
            "{same:?}"
        );
    }

    #[test]
    fn a_bad_date_is_refused_with_the_reason() {
        let sent = Instant::now();
        let e = reading("yesterday", sent, sent, ts("2026-12-04T12:00:00Z")).unwrap_err();
        assert!(e.contains("is not an HTTP-date"), "{e}");
    }
}
