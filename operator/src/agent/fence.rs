//! Fencing, as pure decisions: when an agent that cannot renew its heartbeat must stop its Jobs.
//!
//! The hub declares a member lost once its heartbeat Lease is older than the pool's heartbeat
//! timeout, and then runs the member's attempts elsewhere. If the member kept running them, the same
//! attempt would run twice and be paid twice. So the agent stops every local Job of gpufed *before*
//! the hub's timeout can run out: by default after two thirds of it, counted from the agent's last
//! successful renewal (which is never later than the `renewTime` the hub sees).
//!
//! The clock is `std::time::Instant` (monotonic): wall-clock jumps on the member must not fence it
//! or keep it from fencing.

use std::time::{Duration, Instant};

/// Heartbeat timeout assumed while the hub has not yet copied the pool's into the MemberCluster
/// status (the GpuPool default).
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(40);

/// The fence timeout: the `--fence-timeout` flag if given, else two thirds of the pool's heartbeat
/// timeout (`MemberCluster.status.heartbeatTimeout`, [`DEFAULT_POOL_TIMEOUT`] until it is known).
pub fn fence_timeout(flag: Option<Duration>, pool_timeout: Option<Duration>) -> Duration {
    flag.unwrap_or_else(|| pool_timeout.unwrap_or(DEFAULT_POOL_TIMEOUT) * 2 / 3)
}

/// How long the member's work may run without the agent renewing the member's lease
/// ([`super::member_lease`], ADR 0021): half the fence timeout. When the agent dies (so no one
/// fences), the member's control plane fails the lease Job once its `activeDeadlineSeconds` passes,
/// deletes it, and garbage-collects every local Job it owns. With the fence timeout at ⅔ of the
/// pool's heartbeat timeout `T` and heartbeats every `T/4` at most, the pods are stopped `T/3`
/// after the agent's last renewal, plus the controllers' reaction and the pods' 3 s grace, before
/// the hub can give the attempts away (`¾ T` at the earliest; `T` is at least 15 s).
pub fn job_lease(fence_timeout: Duration) -> Duration {
    (fence_timeout / 2).max(Duration::from_secs(1))
}

/// The `activeDeadlineSeconds` to write on the lease Job, or `None` if it needs no renewal yet:
/// `elapsed` seconds since it started, `current` its deadline. Renewed to `elapsed + lease` once a
/// third of the lease has passed since the last renewal (two thirds or less left), so a renewal
/// that meets a slow apiserver still has most of a lease to get through: one late renewal now
/// stops every Job of the member, not one.
pub fn lease_renewal(elapsed: u64, current: Option<i64>, lease: Duration) -> Option<i64> {
    let lease = lease.as_secs().max(1);
    let current = current.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
    if current.saturating_sub(elapsed) > lease * 2 / 3 {
        return None;
    }
    let next = elapsed.saturating_add(lease);
    (next > current).then(|| i64::try_from(next).unwrap_or(i64::MAX))
}

/// Whether the agent must be fenced off: its last successful renewal (or, before the first one,
/// its start) is at least `timeout` old.
pub fn must_fence(last_success: Instant, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(last_success) >= timeout
}

/// A change of the fence state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    Unchanged,
    /// The agent just lost the hub for too long: stop every local Job, start nothing.
    Fenced,
    /// A heartbeat got through again: report stopped Placements as `Fenced`, run new ones.
    Recovered,
}

/// The fence state of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FenceState {
    fenced: bool,
}

impl FenceState {
    /// Whether the agent is fenced off now.
    pub fn is_fenced(self) -> bool {
        self.fenced
    }

    /// Re-evaluates the state at `now` and says what changed.
    pub fn update(&mut self, last_success: Instant, now: Instant, timeout: Duration) -> Transition {
        let fenced = must_fence(last_success, now, timeout);
        let transition = match (self.fenced, fenced) {
            (false, true) => Transition::Fenced,
            (true, false) => Transition::Recovered,
            _ => Transition::Unchanged,
        };
        self.fenced = fenced;
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_fence_timeout_is_two_thirds_of_the_pools_heartbeat_timeout() {
        assert_eq!(fence_timeout(None, Some(S(30))), S(20));
        assert_eq!(fence_timeout(None, Some(S(18))), S(12));
    }

    #[test]
    fn without_a_pool_timeout_the_default_forty_seconds_apply() {
        assert_eq!(fence_timeout(None, None), S(40) * 2 / 3);
    }

    #[test]
    fn the_flag_overrides_the_pool() {
        assert_eq!(fence_timeout(Some(S(5)), Some(S(30))), S(5));
    }

    #[test]
    fn the_lease_is_renewed_once_a_third_of_it_has_passed() {
        let lease = Duration::from_secs(12);
        // Plenty left: nothing to do.
        assert_eq!(lease_renewal(0, Some(12), lease), None);
        assert_eq!(lease_renewal(3, Some(12), lease), None);
        // Two thirds or less left: pushed to elapsed + lease.
        assert_eq!(lease_renewal(4, Some(12), lease), Some(16));
        assert_eq!(lease_renewal(100, Some(12), lease), Some(112));
        // No deadline yet counts as none left.
        assert_eq!(lease_renewal(0, None, lease), Some(12));
        // A one-second lease is renewed once it runs out, every second.
        assert_eq!(lease_renewal(5, Some(6), Duration::from_secs(1)), None);
        assert_eq!(lease_renewal(6, Some(6), Duration::from_secs(1)), Some(7));
    }

    #[test]
    fn the_pods_of_a_dead_agent_stop_before_the_hub_can_give_their_attempt_away() {
        for t in [15u64, 30, 40, 120] {
            let pool = Duration::from_secs(t);
            let lease = job_lease(fence_timeout(None, Some(pool)));
            // Last renewal at most one heartbeat interval (T/4) before the hub's last renewTime.
            let hub_gives_up = pool.as_secs_f64() * 3.0 / 4.0;
            // Grace, plus the reaction of three controllers: the Job controller fails the lease
            // Job, the TTL controller deletes it, the garbage collector deletes the Jobs it owns.
            let pods_gone = lease.as_secs_f64() + 3.0 + 2.0;
            assert!(
                pods_gone < hub_gives_up,
                "T={t}s: {pods_gone} >= {hub_gives_up}"
            );
        }
    }

    #[test]
    fn the_agent_fences_once_the_last_success_is_as_old_as_the_timeout() {
        let t0 = Instant::now();
        assert!(!must_fence(t0, t0 + S(11), S(12)));
        assert!(must_fence(t0, t0 + S(12), S(12)));
        assert!(must_fence(t0, t0 + S(60), S(12)));
    }

    #[test]
    fn a_clock_reading_before_the_last_success_never_fences() {
        let t0 = Instant::now() + S(100);
        assert!(!must_fence(t0, t0 - S(50), S(12)));
    }

    #[test]
    fn fencing_and_recovery_are_reported_once_each() {
        let t0 = Instant::now();
        let mut f = FenceState::default();
        assert_eq!(f.update(t0, t0 + S(1), S(10)), Transition::Unchanged);
        assert_eq!(f.update(t0, t0 + S(10), S(10)), Transition::Fenced);
        assert!(f.is_fenced());
        assert_eq!(f.update(t0, t0 + S(11), S(10)), Transition::Unchanged);
        let renewed = t0 + S(12);
        assert_eq!(f.update(renewed, renewed, S(10)), Transition::Recovered);
        assert!(!f.is_fenced());
        assert_eq!(
            f.update(renewed, renewed + S(1), S(10)),
            Transition::Unchanged
        );
    }
}
