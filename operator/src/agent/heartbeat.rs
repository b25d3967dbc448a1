//! The heartbeat: the agent renews its Lease `<cluster>-heartbeat` in `gpufed-member-<cluster>` on
//! the hub every `--heartbeat-interval`. The hub created the Lease empty and the agent may only
//! get, update and patch that one Lease, so the renewal is a merge patch of three fields:
//! `holderIdentity`, `renewTime` and `leaseDurationSeconds` (the pool's heartbeat timeout, for
//! anyone reading the Lease).
//!
//! A failed renewal is counted and retried sooner (1 s, 2 s, … up to the interval); the fence task
//! reads the time of the last success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::api::timed;
use super::fence::DEFAULT_POOL_TIMEOUT;
use super::state::Shared;
use crate::backoff;
use crate::metrics::Metrics;

/// The merge patch that renews the Lease.
pub fn renewal(identity: &str, now: Timestamp, lease_duration: Duration) -> serde_json::Value {
    let secs = i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    serde_json::json!({
        "spec": {
            "holderIdentity": identity,
            "renewTime": MicroTime(now),
            "leaseDurationSeconds": secs,
        }
    })
}

/// The renewal interval: the flag, but never more than a quarter of the pool's heartbeat timeout,
/// so several renewals fit in the fence timeout (two thirds of it) even with short pool timeouts.
pub fn effective_interval(flag: Duration, pool_timeout: Duration) -> Duration {
    flag.min(pool_timeout / 4).max(Duration::from_millis(200))
}

/// Deadline of one renewal: at least 2 s, at most 10 s, else the interval.
pub fn call_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// Renews the Lease forever.
pub async fn run(
    leases: Api<Lease>,
    lease: String,
    identity: String,
    interval: Duration,
    shared: Arc<Shared>,
    metrics: Metrics,
) {
    let mut failures: u32 = 0;
    loop {
        let duration = shared.pool_timeout().unwrap_or(DEFAULT_POOL_TIMEOUT);
        let interval = effective_interval(interval, duration);
        // The fence clock starts when the renewal was sent, never later than the renewTime the
        // hub sees, so a slow answer cannot make the agent fence late.
        let sent = Instant::now();
        let patch = renewal(&identity, Timestamp::now(), duration);
        let result = timed(
            format!("renewing the heartbeat Lease {lease}"),
            call_timeout(interval),
            leases.patch(&lease, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        let wait = match result {
            Ok(_) => {
                if failures > 0 || !shared.has_heartbeat() {
                    tracing::info!(lease = %lease, after_failures = failures, "heartbeat renewed");
                }
                shared.heartbeat_succeeded(sent);
                failures = 0;
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.agent_heartbeat_failures.inc();
                tracing::warn!(lease = %lease, error = %e, kind = e.kind(), failures, "heartbeat failed");
                backoff::delay(failures).min(interval)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_at_least_four_times_per_pool_timeout() {
        let s = Duration::from_secs;
        assert_eq!(effective_interval(s(5), s(40)), s(5));
        assert_eq!(effective_interval(s(5), s(15)), Duration::from_millis(3750));
        assert_eq!(effective_interval(s(1), s(15)), s(1));
    }

    #[test]
    fn the_renewal_sets_exactly_holder_renew_time_and_duration() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let p = renewal("agent-alpha-7", now, Duration::from_secs(40));
        let spec = p["spec"].as_object().unwrap();
        assert_eq!(p.as_object().unwrap().len(), 1, "only spec");
        assert_eq!(spec.len(), 3);
        assert_eq!(spec["holderIdentity"], "agent-alpha-7");
        assert_eq!(spec["leaseDurationSeconds"], 40);
        assert!(
            spec["renewTime"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20"),
            "{p}"
        );
    }

    #[test]
    fn a_renewal_waits_between_two_and_ten_seconds() {
        assert_eq!(call_timeout(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(call_timeout(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            call_timeout(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
    }
}
