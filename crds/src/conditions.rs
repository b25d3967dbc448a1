//! Kubernetes-shaped status conditions and the condition types each kind uses.
//!
//! Conditions use the upstream `metav1.Condition` type (type, status, reason, message,
//! lastTransitionTime, observedGeneration), so `kubectl describe` and generic tooling understand
//! them. [`set_condition`] keeps `lastTransitionTime` when the status does not change, as the
//! Kubernetes API conventions require.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of a `MemberCluster`.
pub mod member {
    /// The hub made the member's namespace and credentials.
    pub const JOINED: &str = "Joined";
    /// The member's agent renewed its heartbeat Lease within the pool's heartbeat timeout.
    pub const READY: &str = "Ready";
    /// The provider's on-chain bond covers the pool minimum (always true in pools without a chain).
    pub const BONDED: &str = "Bonded";
    /// New jobs may be placed here: Ready, Bonded, not cordoned, with an inventory.
    pub const SCHEDULABLE: &str = "Schedulable";
    /// The member's latest challenge passed for its current GPU inventory (pools with
    /// `spec.verification` only; ADR 0027).
    pub const VERIFIED: &str = "Verified";
}

/// Condition types of a `ComputeJob`.
pub mod job {
    /// The hub accepted the spec (pool exists, payer resolved, limits respected).
    pub const ADMITTED: &str = "Admitted";
    /// A cluster was chosen for the current attempt.
    pub const SCHEDULED: &str = "Scheduled";
    /// The escrow lock for the current attempt exists (or the pool has no chain).
    pub const FUNDED: &str = "Funded";
    /// The member reports the job's pods running.
    pub const RUNNING: &str = "Running";
    /// The job ended: status True with reason Succeeded or Failed.
    pub const FINISHED: &str = "Finished";
    /// Pools with `spec.usageCheck`: False when the member's telemetry does not support every
    /// GPU-second claimed for an attempt (reason `UsageUnsupported`; settlement pays only the
    /// supported part).
    pub const USAGE_SUPPORTED: &str = "UsageSupported";
    /// Jobs with `spec.resultCheck` (ADR 0034): True when a second member's run gave the same
    /// result (reason `ResultsAgree`) or a referee upheld the job's result (`ResultUpheld`);
    /// False when the referee contradicted it (`ResultContradicted`), three runs gave three
    /// results (`ResultsDiffer`) or the check could not finish (`CheckAbandoned`); Unknown while
    /// it runs.
    pub const RESULT_VERIFIED: &str = "ResultVerified";
}

/// Condition types of a `GpuPool`.
pub mod pool {
    /// The pool's chain settings are usable (contracts reachable, hub key present).
    pub const CHAIN_READY: &str = "ChainReady";
}

/// Condition types of a `ProviderBond`.
pub mod bond {
    /// The bond covers the pool minimum and the provider may be chosen.
    pub const ELIGIBLE: &str = "Eligible";
}

/// `"True"` or `"False"`.
pub fn status_str(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

/// Builds a condition dated `now`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status_str(ok).to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or replaces `new` in `conditions` by type. When the status is unchanged the old
/// `lastTransitionTime` is kept. Returns whether anything changed (status, reason or message).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_the_transition_time() {
        let mut cs = vec![condition("Ready", true, "Heartbeat", "ok", Some(1), at(10))];
        let changed = set_condition(
            &mut cs,
            condition("Ready", true, "Heartbeat", "ok", Some(1), at(20)),
        );
        assert!(!changed);
        assert_eq!(cs[0].last_transition_time, at(10));
    }

    #[test]
    fn new_status_moves_the_transition_time() {
        let mut cs = vec![condition("Ready", true, "Heartbeat", "ok", None, at(10))];
        assert!(set_condition(
            &mut cs,
            condition("Ready", false, "HeartbeatExpired", "late", None, at(20))
        ));
        assert_eq!(cs[0].last_transition_time, at(20));
        assert!(!is_true(&cs, "Ready"));
    }

    #[test]
    fn new_message_is_a_change_but_keeps_the_time() {
        let mut cs = vec![condition("Ready", false, "X", "a", None, at(10))];
        assert!(set_condition(
            &mut cs,
            condition("Ready", false, "X", "b", None, at(20))
        ));
        assert_eq!(cs[0].last_transition_time, at(10));
        assert_eq!(cs[0].message, "b");
    }

    #[test]
    fn conditions_are_added_by_type() {
        let mut cs = vec![];
        set_condition(&mut cs, condition("A", true, "R", "", None, at(1)));
        set_condition(&mut cs, condition("B", false, "R", "", None, at(1)));
        assert_eq!(cs.len(), 2);
        assert!(is_true(&cs, "A"));
        assert!(find(&cs, "C").is_none());
    }
}
