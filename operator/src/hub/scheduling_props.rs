//! Property test of the scheduling loop's accounting with many writes in flight: passes run while
//! earlier decisions are still being written, writes finish in any order or lose a race, and the
//! cache shows each job's new status late and at its own time. Whatever the order, the decisions
//! the apiserver accepted never promise a node more GPUs than it has, a job never has two
//! decisions in flight, and a job new to the hub (never admitted) is admitted by the very write
//! that records its decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gpufed_crds::conditions::{self, job as jc, member as mc};
use gpufed_crds::testing::{job, member};
use gpufed_crds::{
    ComputeJob, ComputeJobStatus, GpuPool, Inventory, JobPhase, MemberCluster, MemberClusterStatus,
    NodeInventory,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use super::*;
use crate::hub::snapshot;

const NODE_GPUS: u32 = 4;
const CLUSTERS: [&str; 2] = ["alpha", "beta"];
const NODES: [&str; 2] = ["n0", "n1"];

pub(super) fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

pub(super) fn pool() -> GpuPool {
    gpufed_crds::testing::pool("default")
}

pub(super) fn members() -> BTreeMap<String, Arc<MemberCluster>> {
    CLUSTERS
        .iter()
        .map(|name| {
            let mut m = member(name, "H100", "2.40").build();
            m.status = Some(MemberClusterStatus {
                conditions: vec![conditions::condition(
                    mc::READY,
                    true,
                    "Heartbeat",
                    "",
                    None,
                    at(1),
                )],
                inventory: Some(Inventory {
                    update_time: Some(at(100)),
                    nodes: NODES
                        .iter()
                        .map(|n| NodeInventory {
                            name: format!("{name}-{n}"),
                            model: "H100".into(),
                            gpu_memory_mib: 81559,
                            allocatable_gpus: NODE_GPUS,
                            free_gpus: NODE_GPUS,
                            unhealthy_gpus: 0,
                            telemetry_stale: false,
                            utilization_percent: 0,
                            ready: true,
                            gpu_uuids: Vec::new(),
                        })
                        .collect(),
                }),
                ..Default::default()
            });
            (name.to_string(), Arc::new(m))
        })
        .collect()
}

/// An admitted job waiting for the scheduler.
/// Every node of every member full.
pub(super) fn full(p: &GpuPool) -> Vec<gpufed_scheduler::ClusterState> {
    let mut clusters: Vec<gpufed_scheduler::ClusterState> = members()
        .values()
        .map(|m| snapshot::cluster_state(p, m, None))
        .collect();
    for c in &mut clusters {
        for n in &mut c.nodes {
            n.free_gpus = 0;
        }
    }
    clusters
}

/// The stops `round` writes: (job, attempt, message).
pub(super) fn stops(round: &Round) -> Vec<(String, u32, String)> {
    round
        .writes
        .iter()
        .filter_map(|p| match &p.write {
            Write::Stop(s) => Some((snapshot::job_key(&p.job), s.attempt, s.message.clone())),
            _ => None,
        })
        .collect()
}

/// The placements `round` writes: (job, first node).
pub(super) fn placed(round: &Round) -> Vec<(String, String)> {
    round
        .writes
        .iter()
        .filter_map(|p| match &p.write {
            Write::Place(a) => Some((snapshot::job_key(&p.job), a.nodes[0].0.clone())),
            _ => None,
        })
        .collect()
}

/// The waits `round` writes: (job, reason, explanation).
pub(super) fn waits(round: &Round) -> Vec<(String, &'static str, String)> {
    round
        .writes
        .iter()
        .filter_map(|p| match &p.write {
            Write::Wait(reason, text) => Some((snapshot::job_key(&p.job), *reason, text.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn pending(i: usize, gpus: u32) -> ComputeJob {
    let mut j = job(&format!("j{i}")).gpus(gpus).models(&["H100"]).build();
    j.metadata.uid = Some(format!("uid-{i}"));
    j.metadata.resource_version = Some("1".into());
    j.metadata.creation_timestamp = Some(at(i as i64));
    let mut st = ComputeJobStatus {
        phase: JobPhase::Pending,
        ..Default::default()
    };
    conditions::set_condition(
        &mut st.conditions,
        conditions::condition(jc::ADMITTED, true, "Accepted", "", None, at(1)),
    );
    j.status = Some(st);
    j
}

/// A job new to the hub: its finalizer is on, it was never admitted (no status yet).
fn new_job(i: usize, gpus: u32) -> ComputeJob {
    let mut j = pending(i, gpus);
    j.status = None;
    j.metadata.finalizers = Some(vec![crate::hub::job_controller::FINALIZER.to_string()]);
    j
}

#[derive(Clone, Debug)]
enum Op {
    /// A scheduling pass over the cache.
    Pass,
    /// The `n`th write in flight ends: accepted by the apiserver (if the job did not change
    /// since it was read) or failed.
    Complete { n: usize, ok: bool },
    /// The cache catches up with the apiserver for job `n`.
    Sync { n: usize },
    /// Job `n`'s attempt ends on the member (its GPUs are free again).
    Finish { n: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Pass),
        3 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(n, ok)| Op::Complete { n, ok }),
        3 => any::<usize>().prop_map(|n| Op::Sync { n }),
        1 => any::<usize>().prop_map(|n| Op::Finish { n }),
    ]
}

/// A write in flight: the job it was computed from and the status it writes.
struct Pending {
    uid: String,
    index: usize,
    read_version: String,
    status: ComputeJobStatus,
}

/// GPUs the apiserver's jobs hold per node (active attempts' planned nodes).
fn held(server: &[ComputeJob]) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for j in server {
        let Some(st) = j.status.as_ref() else {
            continue;
        };
        if st.phase.is_finished() {
            continue;
        }
        for a in st.attempts.iter().filter(|a| a.attempt == st.attempt) {
            if a.phase.is_finished() {
                continue;
            }
            for n in &a.planned_nodes {
                *out.entry(n.node.clone()).or_default() += n.replicas * j.spec.gpus_per_replica;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn promises_in_flight_never_overcommit_a_node(
        sizes in prop::collection::vec((1u32..=NODE_GPUS, any::<bool>()), 1..12),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let pool = pool();
        let members = members();
        let mut server: Vec<ComputeJob> = sizes
            .iter()
            .enumerate()
            .map(|(i, (g, new))| if *new { new_job(i, *g) } else { pending(i, *g) })
            .collect();
        let mut cache: Vec<Arc<ComputeJob>> = server.iter().cloned().map(Arc::new).collect();
        let mut in_flight = InFlight::default();
        let mut writes: Vec<Pending> = vec![];
        let mut version = 1u64;
        let mut bump = |j: &mut ComputeJob| {
            version += 1;
            j.metadata.resource_version = Some(version.to_string());
        };
        for op in ops {
            match op {
                Op::Pass => {
                    let mut reservations = snapshot::reservations(&cache, &members);
                    in_flight.prune(&cache);
                    reservations.extend(in_flight.reservations().cloned());
                    let clusters: Vec<_> = members
                        .values()
                        .map(|m| snapshot::cluster_state(&pool, m, None))
                        .collect();
                    let round = decide(&cache, &pool, &clusters, &[], &mut reservations, &mut in_flight, &at(150)).unwrap();
                    for Planned { job: j, admitted, write } in round.writes {
                        let Write::Place(a) = write else { continue };
                        // The write starts from the admitted status of a job new to the hub.
                        let base = match admitted {
                            Some(st) => {
                                let mut c = ComputeJob::clone(&j);
                                c.status = Some(*st);
                                c
                            }
                            None => ComputeJob::clone(&j),
                        };
                        let uid = j.uid().unwrap();
                        prop_assert!(
                            !writes.iter().any(|w| w.uid == uid),
                            "two decisions in flight for {uid}"
                        );
                        let index = cache.iter().position(|c| c.uid() == j.uid()).unwrap();
                        writes.push(Pending {
                            uid,
                            index,
                            read_version: j.resource_version().unwrap(),
                            status: placed_status(&base, &pool, &a, None, None, String::new(), &at(200)),
                        });
                        let written = &writes[writes.len() - 1].status;
                        prop_assert!(
                            conditions::is_true(&written.conditions, jc::ADMITTED),
                            "a decision written without the job's admission"
                        );
                    }
                }
                Op::Complete { n, ok } => {
                    if writes.is_empty() {
                        continue;
                    }
                    let w = writes.remove(n % writes.len());
                    let target = &mut server[w.index];
                    if ok && target.resource_version().as_deref() == Some(w.read_version.as_str()) {
                        target.status = Some(w.status);
                        bump(target);
                    } else {
                        // A conflict or a failed write: the loop gives the GPUs back.
                        in_flight.release(&w.uid);
                    }
                }
                Op::Sync { n } => {
                    let i = n % server.len();
                    cache[i] = Arc::new(server[i].clone());
                }
                Op::Finish { n } => {
                    let i = n % server.len();
                    let j = &mut server[i];
                    let Some(st) = j.status.as_mut() else { continue };
                    if st.attempt == 0 || st.phase.is_finished() {
                        continue;
                    }
                    st.phase = JobPhase::Succeeded;
                    for a in st.attempts.iter_mut() {
                        a.phase = gpufed_crds::AttemptPhase::Succeeded;
                    }
                    bump(j);
                }
            }
            for (node, gpus) in held(&server) {
                prop_assert!(gpus <= NODE_GPUS, "{node} holds {gpus} GPUs > {NODE_GPUS}");
            }
        }
    }
}

#[test]
fn a_job_with_secrets_is_placed_only_on_members_that_published_a_sealing_key() {
    let members = members();
    let clusters: Vec<_> = members
        .values()
        .map(|m| snapshot::cluster_state(&pool(), m, None))
        .collect();
    let mut with_secrets = pending(1, 1);
    with_secrets.spec.template.image_pull_secrets = vec![gpufed_crds::workload::SecretReference {
        name: "registry".into(),
    }];
    let jobs = vec![Arc::new(with_secrets), Arc::new(pending(2, 1))];
    let decide_with = |keyless: &[String]| {
        let mut reservations = vec![];
        let mut in_flight = InFlight::default();
        let round = decide(
            &jobs,
            &pool(),
            &clusters,
            keyless,
            &mut reservations,
            &mut in_flight,
            &at(150),
        )
        .unwrap();
        round
            .writes
            .into_iter()
            .map(|p| {
                (
                    p.job.name_any(),
                    match p.write {
                        Write::Place(a) => a.cluster,
                        Write::Wait(_, why) => format!("wait: {why}"),
                        Write::Stop(s) => format!("stop: {}", s.attempt),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    // alpha has no key: the job with secrets goes to beta; the plain job may go anywhere.
    let placed = decide_with(&["alpha".to_string()]);
    assert_eq!(placed["j1"], "beta", "{placed:?}");
    // No member has a key: it waits, and says why.
    let placed = decide_with(&["alpha".to_string(), "beta".to_string()]);
    assert!(placed["j1"].starts_with("wait: "), "{placed:?}");
    assert!(!placed["j2"].starts_with("wait: "), "{placed:?}");
}

/// A pool where namespace team-a may hold `gpus` GPUs.
fn pool_with_quota(gpus: u32) -> GpuPool {
    let mut p = pool();
    p.spec.quotas = serde_json::from_value(serde_json::json!([
        {"namespace": "team-a", "groups": [{"name": "all", "gpus": gpus}]}
    ]))
    .unwrap();
    p
}

#[test]
fn a_decision_still_being_written_counts_against_its_namespaces_quota() {
    let members = members();
    let p = pool_with_quota(4);
    let clusters: Vec<_> = members
        .values()
        .map(|m| snapshot::cluster_state(&p, m, None))
        .collect();
    let mut in_flight = InFlight::default();
    let first = vec![Arc::new(pending(0, 4))];
    let mut reservations = vec![];
    let round = decide(
        &first,
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(200),
    )
    .unwrap();
    assert!(matches!(round.writes[0].write, Write::Place(_)));
    // The next pass: the cache does not show j0's attempt yet, j1 asks for 4 more.
    let both = vec![Arc::new(pending(0, 4)), Arc::new(pending(1, 4))];
    let round = decide(
        &both,
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(201),
    )
    .unwrap();
    let [planned] = round.writes.as_slice() else {
        panic!("one write expected, got {}", round.writes.len());
    };
    match &planned.write {
        Write::Wait(reason, text) => {
            assert_eq!(*reason, WAIT_OVER_QUOTA);
            assert_eq!(
                text,
                "over quota: namespace team-a holds 4 of its 4 GPUs of group all and needs 4 \
                 more; no cohort to borrow from"
            );
        }
        Write::Place(a) => panic!("placed on {} over quota", a.cluster),
        Write::Stop(s) => panic!("stopped attempt {} over quota", s.attempt),
    }
    // The same reason is not written again at the next pass.
    let round = decide(
        &both,
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(202),
    )
    .unwrap();
    assert!(round.writes.is_empty());
    // Once j0's write failed and was given back, j1 fits the quota.
    in_flight.release("uid-0");
    let round = decide(
        &both[1..],
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(203),
    )
    .unwrap();
    assert!(matches!(round.writes[0].write, Write::Place(_)));
}

#[test]
fn the_pool_status_reports_each_namespaces_quota_use() {
    let p = pool_with_quota(4);
    let mut running = pending(0, 2);
    let st = running.status.as_mut().unwrap();
    st.phase = JobPhase::Running;
    st.attempt = 1;
    st.attempts = vec![gpufed_crds::testing::attempt(
        1,
        "alpha",
        gpufed_crds::AttemptPhase::Running,
    )];
    st.attempts[0].model = "H100".into();
    let report = snapshot::quota_report(
        &p,
        &crate::hub::at_rest::Jobs::cached_only(vec![Arc::new(running), Arc::new(pending(1, 4))]),
        0,
    );
    assert_eq!(report.len(), 1);
    assert_eq!(
        (report[0].used, report[0].nominal, report[0].borrowed),
        (2, 4, 0)
    );
}

/// A pool where team-a may use 2 GPU-hours a day, and its clusters.
fn two_gpu_hours_a_day() -> (GpuPool, Vec<gpufed_scheduler::ClusterState>) {
    let mut p = pool();
    p.spec.quotas = serde_json::from_value(serde_json::json!([
        {"namespace": "team-a", "groups": [
            {"name": "all", "gpus": 100, "period": "Day", "gpuHours": 2}]}
    ]))
    .unwrap();
    let clusters = members()
        .values()
        .map(|m| snapshot::cluster_state(&p, m, None))
        .collect();
    (p, clusters)
}

#[test]
fn gpu_hours_committed_by_decisions_in_flight_count_and_the_next_job_waits_naming_the_period() {
    let (p, clusters) = two_gpu_hours_a_day();
    let mut in_flight = InFlight::default();
    let mut reservations = vec![];
    // One GPU for its default maxDuration of 1h each: two fit the 2 GPU-hours of the day.
    let jobs: Vec<_> = (0..3).map(|i| Arc::new(pending(i, 1))).collect();
    let round = decide(
        &jobs,
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(200),
    )
    .unwrap();
    let kinds: Vec<String> = round
        .writes
        .iter()
        .map(|w| match &w.write {
            Write::Place(_) => "place".to_string(),
            Write::Wait(reason, text) => format!("{reason}: {text}"),
            Write::Stop(s) => format!("stop: {}", s.attempt),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "place",
            "place",
            "OverQuota: over quota: namespace team-a has used or committed 2.00 of its 2.00 \
             GPU-hours of group all this day (since 1970-01-01T00:00:00Z) and needs up to 1.00 \
             more (GPUs × maxDuration within the day); 0.00 left until 1970-01-02T00:00:00Z; no \
             cohort to borrow from"
        ]
    );
    // The next pass, with both decisions still being written (the cache shows no attempt): their
    // worst case still counts, so j2 is not placed, and its reason is not written again.
    let round = decide(
        &jobs,
        &p,
        &clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(201),
    )
    .unwrap();
    assert!(round.writes.is_empty(), "{} writes", round.writes.len());
}

#[test]
fn gpu_hours_of_jobs_at_rest_count_from_their_records() {
    let (p, clusters) = two_gpu_hours_a_day();
    // A job that used the day's 2 GPU-hours and is at rest: the store no longer holds it, only its
    // record (ADR 0041).
    let mut done = pending(9, 1);
    let mut a = gpufed_crds::testing::attempt(1, "alpha", AttemptPhase::Succeeded);
    a.start_time = Some(at(100));
    a.finish_time = Some(at(7_300));
    a.gpu_seconds = 7_200;
    let st = done.status.as_mut().unwrap();
    st.phase = JobPhase::Succeeded;
    st.attempt = 1;
    st.attempts = vec![a];
    st.observed_generation = done.metadata.generation;
    assert!(crate::hub::at_rest_in_cache(&done) && !crate::hub::keep_job(&done));
    let records = [Arc::new(JobAtRest::of(&done).unwrap())];
    let jobs = [Arc::new(pending(0, 1))];
    let decide_at = |at_rest: &[Arc<JobAtRest>]| {
        let round = decide_counting(
            &jobs,
            at_rest,
            &p,
            &clusters,
            &[],
            &mut vec![],
            &mut InFlight::default(),
            &at(10_000),
            &[],
        )
        .unwrap();
        match &round.writes[0].write {
            Write::Place(_) => "place".to_string(),
            Write::Wait(reason, _) => reason.to_string(),
            Write::Stop(_) => "stop".to_string(),
        }
    };
    assert_eq!(decide_at(&records), WAIT_OVER_QUOTA);
    assert_eq!(decide_at(&[]), "place");
}

/// A pool that requires verification, with `alpha` on probation (joined by stake, no challenge
/// yet) and `beta` with a failed challenge for its current inventory; opt-in allowed or not.
fn probation_pool(allow: bool) -> (GpuPool, Vec<gpufed_scheduler::ClusterState>) {
    let mut p = pool();
    p.spec.verification = Some(
        serde_json::from_value(serde_json::json!({
            "required": true, "image": "probe:1", "allowUnverifiedJobs": allow
        }))
        .unwrap(),
    );
    let mut members = members();
    if let Some(alpha) = members.get_mut("alpha") {
        Arc::make_mut(alpha).metadata.labels = Some(
            [(
                gpufed_crds::join::LABEL_ADMISSION.to_string(),
                gpufed_crds::join::ADMISSION_OPEN.to_string(),
            )]
            .into(),
        );
    }
    if let Some(beta) = members.get_mut("beta") {
        let beta = Arc::make_mut(beta);
        let inventory = beta
            .status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .map(crate::hub::challenges::inventory_fingerprint)
            .unwrap();
        beta.status.as_mut().unwrap().verification = Some(
            serde_json::from_value(serde_json::json!({
                "challenge": "j-beta-1", "verdict": "Failed", "reason": "WrongResult",
                "message": "digest mismatch", "inventory": inventory, "time": "1970-01-01T00:00:01Z",
                "evidenceSha256": "00", "evidence": "e", "gpus": 8, "model": "H100"
            }))
            .unwrap(),
        );
    }
    let clusters = members
        .values()
        .map(|m| snapshot::cluster_state(&p, m, None))
        .collect();
    (p, clusters)
}

/// Where each job went (`wait: why` for the waiting ones).
fn outcome(p: &GpuPool, clusters: &[gpufed_scheduler::ClusterState], j: ComputeJob) -> String {
    let mut reservations = vec![];
    let mut in_flight = InFlight::default();
    let round = decide(
        &[Arc::new(j)],
        p,
        clusters,
        &[],
        &mut reservations,
        &mut in_flight,
        &at(150),
    )
    .unwrap();
    match round.writes.into_iter().next().map(|w| w.write) {
        Some(Write::Place(a)) => a.cluster,
        Some(Write::Wait(_, why)) => format!("wait: {why}"),
        Some(Write::Stop(s)) => format!("stop: {}", s.attempt),
        None => "nothing".into(),
    }
}

#[test]
fn a_job_that_opts_in_runs_on_a_member_on_probation_where_the_pool_allows_it() {
    let (p, clusters) = probation_pool(true);
    let plain = pending(1, 1);
    let why = outcome(&p, &clusters, plain.clone());
    assert!(
        why.contains(
            "alpha: GPUs not verified yet: on probation (joined by stake, no challenge passed \
             yet); set spec.allowUnverified: true on the job to accept it"
        ),
        "{why}"
    );
    assert!(why.contains("beta: failed GPU verification"), "{why}");
    let mut opted = plain;
    opted.spec.allow_unverified = true;
    assert_eq!(outcome(&p, &clusters, opted.clone()), "alpha");
    // The pool forbids it: the job waits whatever it asks, and the explanation says so.
    let (p, clusters) = probation_pool(false);
    let why = outcome(&p, &clusters, opted);
    assert!(
        why.contains("this pool allows no jobs on unverified members"),
        "{why}"
    );
}
