//! Failing fast a gang that cannot start: whether a multi-replica placement's local Job has a
//! replica that kube-scheduler could not place for longer than a grace, as a pure function of its
//! pods.
//!
//! The hub placed the gang on free GPUs it saw in the member's inventory, but the member may have
//! changed since (another workload took the GPUs, a node went away). The replicas that did start
//! then hold their GPUs while the rest wait — until the pool's `startTimeout` on the hub, minutes
//! later. Once a replica has been `PodScheduled=False` with reason `Unschedulable` for longer than
//! the grace (`--gang-unschedulable-grace`), [`super::plan`] reports the placement `Failed`
//! (`GangUnschedulable`) and deletes the local Job; the hub runs the job elsewhere. A shorter
//! Unschedulable spell is kube-scheduler retrying (a pod that just finished, a preemption) and is
//! left alone. A single-replica job holds nothing while it waits and is left to the start timeout.

use std::time::Duration;

use super::cached::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The `PodScheduled` reason kube-scheduler sets when no node fits a pod.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// A gang that cannot start: how many of its replicas have been unschedulable past the grace, and
/// the scheduler's word on the first of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Replicas unschedulable for longer than the grace.
    pub replicas: u32,
    /// `pod P: <the scheduler's message>` of the first one.
    pub first: String,
}

/// Since when `pod` has been waiting for a node that kube-scheduler cannot find, if it has.
fn unschedulable_since(pod: &Pod) -> Option<&Time> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
    {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref().is_some_and(|p| p != "Pending") {
        return None;
    }
    let c = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(UNSCHEDULABLE)
    })?;
    // Without a transition time it is unknown how long it has waited: not stuck yet.
    c.last_transition_time.as_ref()
}

/// Whether the gang of `replicas` replicas whose pods are `pods` cannot start: some replica has
/// been unschedulable for at least `grace` at `now`. Never for a single replica, nor with a zero
/// `grace` (fast failing off).
pub fn stuck(replicas: u32, pods: &[&Pod], now: &Time, grace: Duration) -> Option<Stuck> {
    if replicas < 2 || grace.is_zero() {
        return None;
    }
    let grace = grace.as_secs_f64();
    let mut out: Option<Stuck> = None;
    for pod in pods {
        let Some(since) = unschedulable_since(pod) else {
            continue;
        };
        if now.0.duration_since(since.0).as_secs_f64() < grace {
            continue;
        }
        match out.as_mut() {
            Some(s) => s.replicas += 1,
            None => {
                let name = pod.metadata.name.as_deref().unwrap_or("?");
                let said = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
                    .and_then(|c| c.message.clone())
                    .unwrap_or_else(|| UNSCHEDULABLE.to_string());
                out = Some(Stuck {
                    replicas: 1,
                    first: format!("pod {name}: {}", said.trim()),
                });
            }
        }
    }
    out
}

/// How long until the first replica of the gang that is unschedulable but still within `grace`
/// at `now` passes it: when [`stuck`] would next change its answer without any new event. `None`
/// when no replica is waiting (or fast failing is off, or the gang has one replica).
pub fn until_stuck(replicas: u32, pods: &[&Pod], now: &Time, grace: Duration) -> Option<Duration> {
    if replicas < 2 || grace.is_zero() {
        return None;
    }
    pods.iter()
        .filter_map(|pod| unschedulable_since(pod))
        .filter_map(|since| {
            let waited = now.0.duration_since(since.0).as_secs_f64().max(0.0);
            let left = grace.as_secs_f64() - waited;
            (left > 0.0).then(|| Duration::from_secs_f64(left))
        })
        .min()
}

/// The message of a placement failed as `GangUnschedulable`.
pub fn message(stuck: &Stuck, replicas: u32, job: &str, grace: Duration) -> String {
    format!(
        "{} of {replicas} replicas of local Job {job} could not be scheduled on the member for {}s ({}); the gang cannot start, so the Job was stopped and the started replicas released their GPUs",
        stuck.replicas,
        grace.as_secs(),
        stuck.first
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{at, pod, unschedulable};

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn a_replica_unschedulable_past_the_grace_makes_the_gang_stuck() {
        let running = pod("r-0", Some(100), None);
        let waiting = unschedulable("r-1", 100);
        let s = stuck(2, &[&running, &waiting], &at(160), GRACE).unwrap();
        assert_eq!(s.replicas, 1);
        assert_eq!(
            s.first,
            "pod r-1: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
        );
        let m = message(&s, 2, "gpufed-x-1", GRACE);
        assert!(m.starts_with("1 of 2 replicas of local Job gpufed-x-1 could not be scheduled"));
        assert!(m.contains("Insufficient nvidia.com/gpu"));
    }

    #[test]
    fn a_momentary_unschedulable_is_kube_scheduler_retrying_and_is_left_alone() {
        let running = pod("r-0", Some(100), None);
        let waiting = unschedulable("r-1", 100);
        assert_eq!(stuck(2, &[&running, &waiting], &at(159), GRACE), None);
    }

    #[test]
    fn every_replica_past_the_grace_is_counted() {
        let (a, b, c) = (
            unschedulable("r-0", 10),
            unschedulable("r-1", 20),
            unschedulable("r-2", 150),
        );
        let s = stuck(3, &[&a, &b, &c], &at(100), GRACE).unwrap();
        assert_eq!(s.replicas, 2);
        assert!(s.first.starts_with("pod r-0:"));
    }

    #[test]
    fn single_replicas_bound_pods_and_a_zero_grace_are_never_stuck() {
        let waiting = unschedulable("r-0", 0);
        assert_eq!(stuck(1, &[&waiting], &at(1000), GRACE), None);
        assert_eq!(stuck(2, &[&waiting], &at(1000), Duration::ZERO), None);

        // Bound to a node (the condition is stale until the kubelet reports), or going away.
        let mut bound = unschedulable("r-0", 0);
        if let Some(s) = bound.spec.as_mut() {
            s.node_name = Some("n1".into());
        }
        let mut deleted = unschedulable("r-1", 0);
        deleted.metadata.deletion_timestamp = Some(at(500));
        assert_eq!(stuck(2, &[&bound, &deleted], &at(1000), GRACE), None);

        // Waiting for something else than a node (e.g. scheduling gates).
        let mut gated = unschedulable("r-0", 0);
        if let Some(c) = gated
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.first_mut())
        {
            c.reason = Some("SchedulingGated".into());
        }
        assert_eq!(stuck(2, &[&gated], &at(1000), GRACE), None);
    }

    #[test]
    fn the_next_check_is_due_when_the_first_waiting_replica_passes_the_grace() {
        let running = pod("r-0", Some(100), None);
        let (a, b) = (unschedulable("r-1", 120), unschedulable("r-2", 110));
        let pods = [&running, &a, &b];
        assert_eq!(
            until_stuck(3, &pods, &at(150), GRACE),
            Some(Duration::from_secs(20))
        );
        // r-2 is past it (stuck answers now); r-1 is next.
        assert_eq!(
            until_stuck(3, &pods, &at(175), GRACE),
            Some(Duration::from_secs(5))
        );
        assert!(stuck(3, &pods, &at(175), GRACE).is_some());
        assert_eq!(until_stuck(3, &pods, &at(180), GRACE), None);
        // Nothing waits, one replica, or fast failing off: nothing to come back for.
        assert_eq!(until_stuck(2, &[&running], &at(150), GRACE), None);
        assert_eq!(until_stuck(1, &[&a], &at(150), GRACE), None);
        assert_eq!(until_stuck(2, &[&a], &at(150), Duration::ZERO), None);
    }
}
