//! The scheduling loop's reclaim of lent quota (ADR 0025, `spec.reclaimWithinCohort`): a team of
//! a cohort whose job waits within its own nominal quota takes back GPUs another team of the
//! cohort borrowed, through the preemption's stops, never driving the borrower below its nominal
//! quota and only under the pool's policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gpufed_crds::{AttemptPhase, ComputeJob, GpuPool, JobPhase, ReclaimWithinCohort};
use gpufed_scheduler::quota::namespace_of;
use gpufed_scheduler::{ClusterState, Running};
use proptest::prelude::*;

use super::props::{at, full, pending, placed, stops, waits};
use super::*;

const NODES: [(&str, &str); 4] = [
    ("alpha", "alpha-n0"),
    ("alpha", "alpha-n1"),
    ("beta", "beta-n0"),
    ("beta", "beta-n1"),
];

/// A pool of cohort `research`: team-a and team-b with `nominal_a` and `nominal_b` GPUs (16 GPUs
/// in all), priority preemption off.
fn cohort_pool(policy: ReclaimWithinCohort, nominal_a: u32, nominal_b: u32) -> GpuPool {
    let mut p = super::props::pool();
    p.spec.quotas = serde_json::from_value(serde_json::json!([
        {"namespace": "team-a", "cohort": "research", "groups": [{"name": "all", "gpus": nominal_a}]},
        {"namespace": "team-b", "cohort": "research", "groups": [{"name": "all", "gpus": nominal_b}]},
    ]))
    .unwrap();
    p.spec.reclaim_within_cohort = policy;
    p.spec.preemption_grace_period = Some(gpufed_crds::KubeDuration::from_secs(30));
    p
}

/// Job `i` of `ns` running attempt 1 with 4 GPUs on `NODES[node]` since `started`.
fn running(
    i: usize,
    ns: &str,
    node: usize,
    priority: i32,
    started: i64,
) -> (Arc<ComputeJob>, Running) {
    let mut j = pending(i, 4);
    j.metadata.namespace = Some(ns.into());
    let st = j.status.as_mut().unwrap();
    st.phase = JobPhase::Running;
    st.attempt = 1;
    st.priority = Some(priority);
    let (cluster, node) = NODES[node];
    let mut rec = gpufed_crds::testing::attempt(1, cluster, AttemptPhase::Running);
    rec.model = "H100".into();
    st.attempts = vec![rec];
    let r = Running {
        job: snapshot::job_key(&j),
        attempt: 1,
        priority,
        cluster: cluster.into(),
        nodes: vec![(node.into(), 4)],
        started: started as u64,
    };
    (Arc::new(j), r)
}

/// A waiting job `i` of `ns` of priority `priority` that needs `gpus` GPUs.
fn waiting(i: usize, ns: &str, gpus: u32, priority: i32) -> Arc<ComputeJob> {
    let mut j = pending(i, gpus);
    j.metadata.namespace = Some(ns.into());
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
    /// team-b runs four 4-GPU attempts of priority 0 on the four nodes (all 16 GPUs), the
    /// youngest on beta-n1.
    fn new(pool: GpuPool) -> Self {
        let placed: Vec<_> = (0..4)
            .map(|n| running(10 + n, "team-b", n, 0, 100 + n as i64))
            .collect();
        World {
            clusters: full(&pool),
            pool,
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
fn a_lender_takes_back_the_youngest_borrowed_attempt_and_is_placed_once_it_stops() {
    let mut w = World::new(cohort_pool(ReclaimWithinCohort::Any, 8, 8));
    let claimant = waiting(1, "team-a", 4, 0);
    let key = snapshot::job_key(&claimant);
    w.jobs.push(Arc::clone(&claimant));

    let round = w.pass(200);
    let stopped = stops(&round);
    let [(victim, 1, message)] = stopped.as_slice() else {
        panic!("one stop expected: {stopped:?}")
    };
    assert_eq!(victim, &w.running[3].job, "team-b's youngest, on beta-n1");
    assert_eq!(
        message,
        &format!(
            "lent quota reclaimed by {key} (reclaimWithinCohort: Any): team-b borrowed 8 GPUs \
             beyond its nominal 8 in cohort research; {key} needs 4 GPUs of team-a's nominal \
             quota on beta; stopping with a 30s grace period"
        )
    );
    let w_now = waits(&round);
    let [(who, WAIT_PREEMPTING, text)] = w_now.as_slice() else {
        panic!("{w_now:?}")
    };
    assert_eq!(who, &key);
    assert!(
        text.contains(
            "reclaiming 4 GPUs of team-a's nominal quota lent within cohort research \
             (reclaimWithinCohort: Any) on beta"
        ),
        "{text}"
    );
    assert!(!text.contains("lower priority"), "{text}");

    // While the victim stops nobody else is evicted and nothing is rewritten.
    assert!(w.pass(201).writes.is_empty());
    // Its GPUs show free: the claimant is placed there.
    for n in w.clusters.iter_mut().flat_map(|c| c.nodes.iter_mut()) {
        if n.name == "beta-n1" {
            n.free_gpus = 4;
        }
    }
    w.running.pop();
    assert_eq!(placed(&w.pass(202)), [(key, "beta-n1".to_string())]);
}

#[test]
fn with_never_the_lender_waits_and_nobody_is_evicted() {
    let mut w = World::new(cohort_pool(ReclaimWithinCohort::Never, 8, 8));
    w.jobs.push(waiting(1, "team-a", 4, 0));
    let round = w.pass(200);
    assert!(stops(&round).is_empty());
    let w_now = waits(&round);
    let [(_, WAIT_NO_FIT, text)] = w_now.as_slice() else {
        panic!("{w_now:?}")
    };
    assert!(
        text.ends_with(
            "team-a is within its nominal quota of 8 GPUs in group all, lent within cohort \
             research: team-b holds 16 GPUs, 8 beyond its nominal 8; the pool's \
             reclaimWithinCohort is Never: lent GPUs come back only as the borrowers' jobs end"
        ),
        "{text}"
    );

    // team-b is of another cohort: it borrowed nothing of team-a's, no such note.
    let mut p = cohort_pool(ReclaimWithinCohort::Never, 8, 8);
    p.spec.quotas[1].cohort = Some("other".into());
    let mut w = World::new(p);
    w.jobs.push(waiting(1, "team-a", 4, 0));
    let round = w.pass(200);
    let w_now = waits(&round);
    let [(_, WAIT_NO_FIT, text)] = w_now.as_slice() else {
        panic!("{w_now:?}")
    };
    assert!(!text.contains("lent within cohort"), "{text}");
}

#[test]
fn lower_priority_spares_borrowers_of_equal_priority() {
    let mut w = World::new(cohort_pool(ReclaimWithinCohort::LowerPriority, 8, 8));
    w.jobs.push(waiting(1, "team-a", 4, 0));
    assert!(stops(&w.pass(200)).is_empty());

    let mut w = World::new(cohort_pool(ReclaimWithinCohort::LowerPriority, 8, 8));
    w.jobs.push(waiting(1, "team-a", 4, 5));
    assert_eq!(stops(&w.pass(200)).len(), 1);
}

#[test]
fn reclaim_stops_at_the_borrowers_nominal_and_never_helps_a_lender_borrow() {
    // team-b's nominal 12 of its 16: only 4 GPUs are borrowed.
    let mut w = World::new(cohort_pool(ReclaimWithinCohort::Any, 4, 12));
    // 8 GPUs are beyond team-a's own nominal 4: no reclaim.
    w.jobs.push(waiting(1, "team-a", 8, 0));
    assert!(stops(&w.pass(200)).is_empty());

    let mut w = World::new(cohort_pool(ReclaimWithinCohort::Any, 4, 12));
    w.jobs.push(waiting(1, "team-a", 4, 0));
    w.jobs.push(waiting(2, "team-a", 4, 0));
    let stopped = stops(&w.pass(200));
    assert_eq!(stopped.len(), 1, "team-b keeps its nominal 12: {stopped:?}");
}

#[test]
fn a_team_outside_the_cohort_is_never_a_victim() {
    let mut p = cohort_pool(ReclaimWithinCohort::Any, 8, 8);
    p.spec.quotas[1].cohort = Some("other".into());
    let mut w = World::new(p);
    w.jobs.push(waiting(1, "team-a", 4, 0));
    assert!(stops(&w.pass(200)).is_empty());
}

proptest! {
    /// Whatever the quotas, attempts and policy, the reclaims planned evict only attempts of
    /// other namespaces of the claimant's cohort, never one of higher or equal priority under
    /// LowerPriority, never anything under Never, never an attempt twice, and leave every borrower
    /// holding at least its nominal quota.
    #[test]
    fn reclaims_never_go_below_nominal_and_respect_the_policy(
        nominals in proptest::collection::vec(0u32..=12, 3),
        owners in proptest::collection::vec((0usize..3, -2i32..3), 4),
        claimants in proptest::collection::vec((0usize..3, 1u32..=8, -2i32..3), 1..4),
        policy in prop_oneof![
            Just(ReclaimWithinCohort::Never),
            Just(ReclaimWithinCohort::LowerPriority),
            Just(ReclaimWithinCohort::Any),
        ],
    ) {
        const NS: [&str; 3] = ["team-a", "team-b", "team-c"];
        let mut pool = cohort_pool(policy, nominals[0], nominals[1]);
        pool.spec.quotas.push(serde_json::from_value(serde_json::json!(
            {"namespace": "team-c", "cohort": "other", "groups": [{"name": "all", "gpus": nominals[2]}]}
        )).unwrap());
        let placed: Vec<_> = owners
            .iter()
            .enumerate()
            .map(|(n, (o, prio))| running(10 + n, NS[*o], n, *prio, 100 + n as i64))
            .collect();
        let jobs: Vec<Arc<ComputeJob>> = placed.iter().map(|(j, _)| Arc::clone(j)).collect();
        let run: Vec<Running> = placed.into_iter().map(|(_, r)| r).collect();
        let requests: Vec<JobRequest> = claimants
            .iter()
            .enumerate()
            .map(|(i, (o, gpus, prio))| {
                let j = waiting(i, NS[*o], *gpus, *prio);
                let mut r = snapshot::job_request(&j, i as u64);
                r.priority = *prio;
                r
            })
            .collect();
        let quotas = snapshot::quotas(&pool);
        let plans = reclaim::plan_reclaims(
            &requests,
            &quotas,
            &full(&pool),
            &[],
            &run,
            &reclaim::models_of(&jobs),
            reclaim::policy(&pool),
            &snapshot::policy(&pool),
        )
        .unwrap();
        if policy == ReclaimWithinCohort::Never {
            prop_assert!(plans.is_empty());
        }
        let mut holds: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &run {
            *holds.entry(namespace_of(&r.job)).or_default() += r.gpus();
        }
        let mut seen: HashMap<(String, u32), ()> = HashMap::new();
        for plan in &plans {
            let claimant = requests.iter().find(|r| r.key == plan.plan.job).unwrap();
            let cns = namespace_of(&claimant.key);
            prop_assert_eq!(plan.plan.victims.len(), plan.why.len());
            for v in &plan.plan.victims {
                let vns = namespace_of(&v.job);
                prop_assert!(vns != cns);
                prop_assert!(vns != "team-c" && cns != "team-c", "cohort other has one team");
                if policy == ReclaimWithinCohort::LowerPriority {
                    prop_assert!(v.priority < claimant.priority);
                }
                prop_assert!(seen.insert((v.job.clone(), v.attempt), ()).is_none());
                let h = holds.get_mut(vns).unwrap();
                *h -= v.gpus;
            }
        }
        for (q, ns) in quotas.iter().zip(NS) {
            let before: u64 = run.iter().filter(|r| namespace_of(&r.job) == ns).map(Running::gpus).sum();
            let after = holds.get(ns).copied().unwrap_or(0);
            if after < before {
                prop_assert!(after >= q.groups[0].nominal, "{ns}: {after} < nominal");
            }
        }
    }
}
