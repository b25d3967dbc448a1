//! The scheduling loop's preemption (ADR 0025), pass after pass: who is evicted, that nobody is
//! evicted twice for the same preemptor while its victims stop, that the GPUs they free are kept
//! for it, and that it is placed once they are free.

use std::sync::Arc;

use gpufed_crds::{AttemptPhase, ComputeJob, GpuPool, JobPhase, Preemption};
use gpufed_scheduler::{ClusterState, Running};

use super::props::{at, full, pending, placed, stops, waits};
use super::*;

/// A pool that lets higher priorities preempt, with a 30 s grace.
fn preempting_pool() -> GpuPool {
    let mut p = super::props::pool();
    p.spec.preemption = Preemption::LowerPriority;
    p.spec.preemption_grace_period = Some(gpufed_crds::KubeDuration::from_secs(30));
    p
}

fn free(clusters: &mut [ClusterState], cluster: &str, node: &str, gpus: u32) {
    for c in clusters.iter_mut().filter(|c| c.name == cluster) {
        for n in c.nodes.iter_mut().filter(|n| n.name == node) {
            n.free_gpus = gpus;
        }
    }
}

/// Job `i` running attempt 1 with 4 GPUs on `node` of `cluster` since `started`, priority 0.
fn low(i: usize, cluster: &str, node: &str, started: i64) -> (Arc<ComputeJob>, Running) {
    let mut j = pending(i, 4);
    let st = j.status.as_mut().unwrap();
    st.phase = JobPhase::Running;
    st.attempt = 1;
    st.priority = Some(0);
    let mut rec = gpufed_crds::testing::attempt(1, cluster, AttemptPhase::Running);
    rec.model = "H100".into();
    st.attempts = vec![rec];
    let key = snapshot::job_key(&j);
    let r = Running {
        job: key,
        attempt: 1,
        priority: 0,
        cluster: cluster.into(),
        nodes: vec![(node.into(), 4)],
        started: started as u64,
    };
    (Arc::new(j), r)
}

/// A waiting job of priority `priority` that needs `gpus` GPUs.
fn waiting(i: usize, gpus: u32, priority: i32) -> Arc<ComputeJob> {
    let mut j = pending(i, gpus);
    j.status.as_mut().unwrap().priority = Some(priority);
    Arc::new(j)
}

struct World {
    pool: GpuPool,
    clusters: Vec<ClusterState>,
    jobs: Vec<Arc<ComputeJob>>,
    running: Vec<Running>,
    in_flight: InFlight,
}

impl World {
    /// Four low-priority 4-GPU attempts fill the four nodes; the youngest runs on beta-n1.
    fn new(pool: GpuPool) -> Self {
        let clusters = full(&pool);
        let placed = [
            low(10, "alpha", "alpha-n0", 100),
            low(11, "alpha", "alpha-n1", 101),
            low(12, "beta", "beta-n0", 102),
            low(13, "beta", "beta-n1", 103),
        ];
        World {
            pool,
            clusters,
            jobs: placed.iter().map(|(j, _)| Arc::clone(j)).collect(),
            running: placed.into_iter().map(|(_, r)| r).collect(),
            in_flight: InFlight::default(),
        }
    }

    fn pass(&mut self, t: i64) -> Round {
        let mut reservations = vec![];
        decide_with(
            &self.jobs,
            &self.pool,
            &self.clusters,
            &[],
            &mut reservations,
            &mut self.in_flight,
            &at(t),
            &self.running,
        )
        .unwrap()
    }
}

#[test]
fn a_job_that_fits_nowhere_evicts_the_youngest_lower_attempt_once_and_takes_its_gpus() {
    let mut w = World::new(preempting_pool());
    let urgent = waiting(1, 4, 100);
    let key = snapshot::job_key(&urgent);
    w.jobs.push(Arc::clone(&urgent));

    let round = w.pass(200);
    let stopped = stops(&round);
    let [(victim, 1, message)] = stopped.as_slice() else {
        panic!("one stop expected: {stopped:?}")
    };
    // Either cluster frees 4 GPUs with one attempt: alpha by name, and there its youngest.
    assert_eq!(
        victim, &w.running[1].job,
        "the youngest attempt of alpha goes"
    );
    assert_eq!(
        message,
        &format!(
            "preempted by {key} (priority 100 > 0), which needs 4 GPUs on alpha; stopping with a \
             30s grace period"
        )
    );
    let waits_now = waits(&round);
    let [(who, WAIT_PREEMPTING, text)] = waits_now.as_slice() else {
        panic!("{waits_now:?}")
    };
    assert_eq!(who, &key);
    assert!(text.contains("preempting 1 attempt of lower priority on alpha to free 4 GPUs"));
    assert!(w.in_flight.preemption(&key).is_some());

    // Next pass: the victim is still stopping (its mark is not in the cache yet either): nobody
    // else is evicted and nothing is rewritten.
    let round = w.pass(201);
    assert!(round.writes.is_empty(), "{:?}", round.writes.len());

    // Half of the victim's GPUs show free: a waiting 1-GPU job of lower priority does not take
    // them, they are kept for the preemptor.
    free(&mut w.clusters, "alpha", "alpha-n1", 2);
    w.running.remove(1);
    let small = waiting(2, 1, 0);
    w.jobs.push(Arc::clone(&small));
    let round = w.pass(202);
    assert!(placed(&round).is_empty(), "{:?}", placed(&round));
    assert!(stops(&round).is_empty());

    // All four free: the preemptor is placed there, decided before the rest of the pass.
    free(&mut w.clusters, "alpha", "alpha-n1", 4);
    let round = w.pass(203);
    assert_eq!(placed(&round), [(key.clone(), "alpha-n1".to_string())]);
    assert!(w.in_flight.preemption(&key).is_none(), "over once placed");
}

#[test]
fn an_outstanding_preemption_is_forgotten_after_the_grace_and_the_patience() {
    let mut w = World::new(preempting_pool());
    let urgent = waiting(1, 4, 100);
    w.jobs.push(Arc::clone(&urgent));
    assert_eq!(stops(&w.pass(200)).len(), 1);
    // The victim never stopped (its member did not act); 30 s + 60 s later the preemptor plans
    // again, never evicting the attempt already being stopped: once the cache shows its mark it
    // is no candidate (`preemption::candidates`), before that the outstanding preemption names it.
    assert!(stops(&w.pass(250)).is_empty());
    w.running.remove(1);
    assert!(stops(&w.pass(290)).is_empty());
    let again = stops(&w.pass(291));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, w.running[0].job, "the next youngest of alpha");
}

#[test]
fn nobody_is_evicted_unless_the_pool_and_the_class_allow_it_and_the_victim_is_lower() {
    // The pool does not allow preemption.
    let mut w = World::new(super::props::pool());
    w.jobs.push(waiting(1, 4, 100));
    let round = w.pass(200);
    assert!(stops(&round).is_empty());
    assert_eq!(waits(&round)[0].1, WAIT_NO_FIT);

    // The pool allows it, the job's class does not.
    let mut p = preempting_pool();
    p.spec.priority_classes = serde_json::from_value(serde_json::json!([
        {"name": "polite", "value": 100, "preemptionPolicy": "Never"}
    ]))
    .unwrap();
    let mut w = World::new(p);
    let mut j = ComputeJob::clone(&waiting(1, 4, 100));
    j.spec.priority_class_name = Some("polite".into());
    w.jobs.push(Arc::new(j));
    assert!(stops(&w.pass(200)).is_empty());

    // Same priority as the running attempts: nobody is lower.
    let mut w = World::new(preempting_pool());
    w.jobs.push(waiting(1, 4, 0));
    assert!(stops(&w.pass(200)).is_empty());
}

#[test]
fn a_later_preemptor_never_evicts_an_attempt_already_being_stopped() {
    // Each urgent job needs half of what a victim frees.
    let mut w = World::new(preempting_pool());
    w.jobs.push(waiting(1, 2, 100));
    let first = stops(&w.pass(200));
    assert_eq!(first.len(), 1);
    // A second urgent job, while the cache still shows the first victim running unmarked.
    w.jobs.push(waiting(2, 2, 100));
    let second = stops(&w.pass(201));
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0].0, first[0].0, "not the same victim twice");
}
