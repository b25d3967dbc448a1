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
