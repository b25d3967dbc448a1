use super::*;
use crate::agent::fixtures::{at, gpu_node, local_job, placement, pod, uid, unschedulable};
use k8s_openapi::api::batch::v1::JobStatus;

struct World {
    placements: Vec<Arc<Placement>>,
    jobs: Vec<Arc<Job>>,
    pods: BTreeMap<String, Vec<Arc<Pod>>>,
    nodes: Vec<NodeInventory>,
    fenced_placements: BTreeMap<String, Time>,
    highest: BTreeMap<String, u32>,
    gang_services: BTreeSet<String>,
    gang_grace: Duration,
    lease_owner: Option<OwnerReference>,
    data_image: Option<String>,
    readings: BTreeMap<String, crate::agent::telemetry::Readings>,
}

fn lease_owner() -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: super::super::member_lease::LEASE_JOB.into(),
        uid: "lease-uid-1".into(),
        ..Default::default()
    }
}

impl World {
    fn new() -> Self {
        World {
            placements: vec![],
            jobs: vec![],
            pods: BTreeMap::new(),
            nodes: vec![gpu_node("h1", "H100", 8, 8)],
            fenced_placements: BTreeMap::new(),
            highest: BTreeMap::new(),
            gang_services: BTreeSet::new(),
            gang_grace: Duration::from_secs(60),
            lease_owner: Some(lease_owner()),
            data_image: None,
            readings: BTreeMap::new(),
        }
    }
    fn placement(mut self, p: Placement) -> Self {
        self.placements.push(Arc::new(p));
        self
    }
    fn job(mut self, j: Job) -> Self {
        self.jobs.push(Arc::new(j));
        self
    }
    fn plan(&self) -> Plan {
        plan(&View {
            cluster: "alpha",
            jobs_namespace: "gpufed-jobs",
            image_pull_policy: PullPolicy::IfNotPresent,
            data_image: self.data_image.as_deref(),
            lease_owner: self.lease_owner.as_ref(),
            placements: &self.placements,
            jobs: &self.jobs,
            pods: &self.pods,
            nodes: &self.nodes,
            readings: &self.readings,
            gang_services: &self.gang_services,
            serving_exposure: (crate::cli::ServingExposure::PodNetwork, None),
            serving_hosts: &BTreeMap::new(),
            fenced_placements: &self.fenced_placements,
            highest: &self.highest,
            now: at(1000),
            refresh: Duration::from_secs(10),
            gang_grace: self.gang_grace,
        })
    }
}

fn status(phase: PlacementPhase) -> PlacementStatus {
    PlacementStatus {
        phase: Some(phase),
        gpu_seconds: 42,
        last_update_time: Some(at(999)),
        ..Default::default()
    }
}

fn created(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateJob { job, .. } => job.metadata.name.clone(),
            _ => None,
        })
        .collect()
}

fn deleted(plan: &Plan) -> Vec<(String, DeleteReason)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::DeleteJob { name, why, .. } => Some((name.clone(), *why)),
            _ => None,
        })
        .collect()
}

fn written(plan: &Plan, placement: &Placement) -> Option<PlacementStatus> {
    plan.steps.iter().find_map(|s| match s {
        Step::WriteStatus {
            placement: p,
            status,
            ..
        } if Some(p) == placement.metadata.name.as_ref() => Some(status.clone()),
        _ => None,
    })
}

#[test]
fn a_new_placement_becomes_a_local_job_then_reports_accepted() {
    let p = placement("train", 1).build();
    let plan = World::new().placement(p.clone()).plan();
    let [Step::CreateJob { job, status, .. }] = &plan.steps[..] else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(job.metadata.namespace.as_deref(), Some("gpufed-jobs"));
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(local_job_name(&uid("train"), 1).as_str())
    );
    assert_eq!(status.phase, Some(PlacementPhase::Accepted));
    assert_eq!(status.local_job, job.metadata.name);
    // Owned by the member's lease (it goes when the lease lapses); its own deadline is the
    // attempt's maxDuration, which the annotation keeps too.
    assert_eq!(
        job.metadata.owner_references.as_deref(),
        Some(&[lease_owner()][..])
    );
    let max = p.spec.max_duration.as_secs_ceil();
    assert_eq!(
        job.spec.as_ref().unwrap().active_deadline_seconds,
        Some(i64::try_from(max).unwrap())
    );
    assert_eq!(job_builder::max_duration_of(&**job), Some(max));
}

#[test]
fn without_a_live_member_lease_a_new_placement_waits() {
    let p = placement("train", 1).build();
    let mut world = World::new().placement(p);
    world.lease_owner = None;
    assert_eq!(world.plan().steps, vec![]);
}

#[test]
fn an_existing_local_job_is_never_created_again() {
    let p = placement("train", 1).build();
    let plan = World::new()
        .placement(p.clone())
        .job(local_job(&p, JobStatus::default()))
        .plan();
    assert!(created(&plan).is_empty());
    assert_eq!(
        written(&plan, &p).unwrap().phase,
        Some(PlacementPhase::Accepted)
    );
}

#[test]
fn a_placement_this_member_cannot_run_is_rejected_with_the_reason() {
    let p = placement("train", 1).model("A100").build();
    let plan = World::new().placement(p.clone()).plan();
    assert!(created(&plan).is_empty());
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Rejected));
    assert_eq!(st.reason.as_deref(), Some("ModelUnavailable"));
}

#[test]
fn a_placement_with_data_gets_the_helpers_only_on_a_member_with_a_data_image() {
    let mut p = placement("train", 1).build();
    p.spec.template.outputs = vec![gpufed_crds::DataOutput {
        name: "ckpt".into(),
        path: "/out".into(),
        endpoint: "https://s3.example.com".into(),
        bucket: "runs".into(),
        ..Default::default()
    }];
    let plan = World::new().placement(p.clone()).plan();
    assert!(created(&plan).is_empty());
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Rejected));
    assert_eq!(st.reason.as_deref(), Some(job_data::DATA_UNSUPPORTED));
    let mut world = World::new().placement(p.clone());
    world.data_image = Some("ghcr.io/gpufed/gpufed-data:0.1.0".into());
    let plan = world.plan();
    let [Step::CreateJob { job, .. }] = &plan.steps[..] else {
        panic!("{:?}", plan.steps)
    };
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.last().unwrap().name, "gpufed-push-ckpt");
}

#[test]
fn a_placement_for_another_cluster_is_rejected_once() {
    let p = placement("train", 1).cluster("beta").build();
    let plan = World::new().placement(p.clone()).plan();
    assert_eq!(
        written(&plan, &p).unwrap().reason.as_deref(),
        Some("WrongCluster")
    );
    let again = placement("train", 1)
        .cluster("beta")
        .status(status(PlacementPhase::Rejected))
        .build();
    assert!(World::new().placement(again).plan().steps.is_empty());
}

#[test]
fn a_stale_attempt_is_never_run_and_is_rejected() {
    let old = placement("train", 1).build();
    let new = placement("train", 2).build();
    let plan = World::new()
        .placement(old.clone())
        .placement(new.clone())
        .plan();
    assert_eq!(created(&plan), [local_job_name(&uid("train"), 2)]);
    let st = written(&plan, &old).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Rejected));
    assert_eq!(st.reason.as_deref(), Some(STALE_ATTEMPT));
    assert_eq!(plan.highest[&uid("train")], 2);
}

#[test]
fn a_stale_attempt_that_is_running_loses_its_local_job_but_keeps_its_usage() {
    let old = placement("train", 1)
        .status(status(PlacementPhase::Running))
        .build();
    let new = placement("train", 2).build();
    let plan = World::new()
        .placement(old.clone())
        .placement(new)
        .job(local_job(&old, JobStatus::default()))
        .plan();
    assert_eq!(
        deleted(&plan),
        [(local_job_name(&uid("train"), 1), DeleteReason::Stale)]
    );
    let st = written(&plan, &old).unwrap();
    assert_eq!(st.reason.as_deref(), Some(STALE_ATTEMPT));
    assert_eq!(st.gpu_seconds, 42);
}

#[test]
fn an_attempt_lower_than_one_seen_before_is_stale_even_when_alone() {
    let old = placement("train", 1).build();
    let mut w = World::new().placement(old.clone());
    w.highest.insert(uid("train"), 3);
    let plan = w.plan();
    assert!(created(&plan).is_empty());
    assert_eq!(
        written(&plan, &old).unwrap().reason.as_deref(),
        Some(STALE_ATTEMPT)
    );
}

#[test]
fn a_local_job_of_a_higher_attempt_makes_a_lower_placement_stale() {
    let old = placement("train", 1).build();
    let newer = placement("train", 2).build();
    let plan = World::new()
        .placement(old.clone())
        .job(local_job(&newer, JobStatus::default()))
        .plan();
    assert!(created(&plan).is_empty());
    assert_eq!(
        written(&plan, &old).unwrap().reason.as_deref(),
        Some(STALE_ATTEMPT)
    );
}

#[test]
fn a_finished_stale_attempt_keeps_its_final_report() {
    let old = placement("train", 1)
        .status(status(PlacementPhase::Succeeded))
        .build();
    let new = placement("train", 2).build();
    let plan = World::new().placement(old.clone()).placement(new).plan();
    assert_eq!(written(&plan, &old), None);
}

#[test]
fn a_local_job_without_its_placement_is_deleted() {
    let gone = placement("gone", 1).build();
    let plan = World::new()
        .job(local_job(&gone, JobStatus::default()))
        .plan();
    assert_eq!(
        deleted(&plan),
        [(local_job_name(&uid("gone"), 1), DeleteReason::Orphan)]
    );
}

#[test]
fn among_many_placements_only_the_local_jobs_whose_placement_is_gone_are_deleted() {
    let mut world = World::new();
    let mut gone = vec![];
    for i in 0..60 {
        let p = placement(&format!("job-{i}"), 1 + i % 3).build();
        world = world.job(local_job(&p, JobStatus::default()));
        if i % 7 == 3 {
            gone.push((
                local_job_name(&p.spec.job.uid, p.spec.attempt),
                DeleteReason::Orphan,
            ));
        } else {
            world = world.placement(p);
        }
    }
    let mut deleted = deleted(&world.plan());
    deleted.sort_by(|a, b| a.0.cmp(&b.0));
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(deleted.len(), 9);
    assert_eq!(deleted, gone);
}

#[test]
fn a_job_already_being_deleted_is_left_alone() {
    let gone = placement("gone", 1).build();
    let mut job = local_job(&gone, JobStatus::default());
    job.metadata.deletion_timestamp = Some(at(990));
    assert!(World::new().job(job).plan().steps.is_empty());
}

#[test]
fn fencing_stops_every_unfinished_local_job_but_keeps_finished_ones() {
    let running = placement("a", 1).build();
    let done = placement("b", 1).build();
    let gone = placement("c", 1).build();
    let mut deleting = local_job(&gone, JobStatus::default());
    deleting.metadata.deletion_timestamp = Some(at(990));
    let jobs = vec![
        Arc::new(local_job(&running, JobStatus::default())),
        Arc::new(local_job(
            &done,
            JobStatus {
                conditions: Some(vec![crate::agent::fixtures::condition(
                    "Complete", "", "", 900,
                )]),
                ..Default::default()
            },
        )),
        Arc::new(deleting),
    ];
    let victims: Vec<String> = fence_victims(&jobs).iter().map(|j| j.name_any()).collect();
    assert_eq!(victims, [local_job_name(&uid("a"), 1)]);
}

#[test]
fn after_fencing_a_placement_still_on_the_hub_is_reported_fenced_not_rerun() {
    let p = placement("a", 1)
        .status(status(PlacementPhase::Running))
        .build();
    let mut w = World::new().placement(p.clone());
    w.fenced_placements
        .insert(p.metadata.name.clone().unwrap(), at(900));
    let plan = w.plan();
    assert!(created(&plan).is_empty());
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some(FENCED));
    assert_eq!(st.finish_time, Some(at(900)));
    assert_eq!(st.gpu_seconds, 42);
}

#[test]
fn an_accepted_placement_whose_job_vanished_is_confirmed_then_failed() {
    let p = placement("a", 1)
        .status(status(PlacementPhase::Accepted))
        .build();
    let plan = World::new().placement(p.clone()).plan();
    let [Step::ConfirmMissing { job, status, .. }] = &plan.steps[..] else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(job, &local_job_name(&uid("a"), 1));
    assert_eq!(status.reason.as_deref(), Some(LOCAL_JOB_MISSING));
}

#[test]
fn running_pods_are_reported_and_unchanged_reports_are_not_rewritten() {
    let p = placement("a", 1).build();
    let job = local_job(&p, JobStatus::default());
    let mut w = World::new().placement(p.clone()).job(job.clone());
    w.pods.insert(
        job.metadata.name.clone().unwrap(),
        vec![Arc::new(pod("a-0", Some(995), None))],
    );
    let plan = w.plan();
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Running));
    assert_eq!(st.gpu_seconds, 5);
    let Step::WriteStatus { note, .. } = &plan.steps[0] else {
        panic!()
    };
    assert_eq!(note.as_ref().unwrap().reason, "Running");

    let reported = PlacementStatus {
        last_update_time: Some(at(998)),
        gpu_seconds: 3,
        ..st
    };
    let mut w2 = World::new()
        .placement(placement("a", 1).status(reported).build())
        .job(job);
    w2.pods = w.pods.clone();
    assert!(
        w2.plan().steps.is_empty(),
        "only the GPU-seconds moved, within the refresh interval"
    );
}

#[test]
fn finished_placements_are_frozen() {
    let p = placement("a", 1)
        .status(status(PlacementPhase::Succeeded))
        .build();
    let plan = World::new()
        .placement(p.clone())
        .job(local_job(&p, JobStatus::default()))
        .plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
}

fn gang_job(job: &str, replicas: i32, status: JobStatus) -> Job {
    let p = placement(job, 1).replicas(replicas as u32).build();
    let mut j = job_builder::build(&p, "gpufed-jobs", PullPolicy::IfNotPresent);
    j.metadata.uid = Some(format!("local-{job}"));
    j.status = Some(status);
    Job::from(&j)
}

fn gang_networks(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateGangNetwork { service, policy } => {
                assert_eq!(service.metadata.name, policy.metadata.name);
                service.metadata.name.clone()
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_running_gang_without_its_service_gets_its_network_and_one_with_it_does_not() {
    let p = placement("g", 1)
        .replicas(2)
        .status(status(PlacementPhase::Running))
        .build();
    let mut w = World::new()
        .placement(p)
        .job(gang_job("g", 2, JobStatus::default()));
    assert_eq!(gang_networks(&w.plan()), vec![local_job_name("uid-g", 1)]);
    w.gang_services.insert(local_job_name("uid-g", 1));
    assert!(gang_networks(&w.plan()).is_empty());
}

#[test]
fn single_replica_and_finished_gangs_get_no_network() {
    let done = JobStatus {
        conditions: Some(vec![crate::agent::fixtures::condition(
            "Complete", "Done", "", 900,
        )]),
        ..Default::default()
    };
    let w = World::new()
        .placement(
            placement("one", 1)
                .status(status(PlacementPhase::Running))
                .build(),
        )
        .job(gang_job("one", 1, JobStatus::default()))
        .placement(
            placement("done", 1)
                .replicas(2)
                .status(status(PlacementPhase::Succeeded))
                .build(),
        )
        .job(gang_job("done", 2, done));
    assert!(gang_networks(&w.plan()).is_empty());
}

/// A 2-replica gang accepted on this member whose replica 0 runs since t=900 and replica 1 has
/// been unschedulable since `since`.
fn half_started_gang(since: i64) -> (World, Placement) {
    let mut w = accepted_with(vec![
        pod("train-0", Some(900), None),
        unschedulable("train-1", since),
    ]);
    w.nodes = vec![gpu_node("h1", "H100", 8, 0), gpu_node("h2", "H100", 8, 0)];
    let p = w.placements[0].as_ref().clone();
    (w, p)
}

#[test]
fn a_gang_with_a_replica_unschedulable_past_the_grace_fails_and_stops_its_job() {
    // Unschedulable since t=940, now t=1000, grace 60 s.
    let (w, p) = half_started_gang(940);
    let plan = w.plan();
    let job = local_job_name(&uid("train"), 1);
    let [
        Step::WriteStatus {
            placement,
            status: st,
            note: Some(note),
        },
        Step::DeleteJob { name, why, .. },
    ] = &plan.steps[..]
    else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(Some(placement), p.metadata.name.as_ref());
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some(GANG_UNSCHEDULABLE));
    let message = st.message.as_deref().unwrap();
    assert!(message.starts_with(&format!("1 of 2 replicas of local Job {job}")));
    assert!(message.contains("pod train-1: 0/2 nodes are available"));
    assert_eq!(st.gpu_seconds, 0, "the gang never started: nothing to bill");
    assert_eq!(st.finish_time, Some(at(1000)));
    assert_eq!(note.reason, GANG_UNSCHEDULABLE);
    assert_eq!(
        (name.as_str(), *why),
        (job.as_str(), DeleteReason::GangUnschedulable)
    );
}

#[test]
fn a_gang_unschedulable_for_less_than_the_grace_keeps_waiting() {
    let (w, p) = half_started_gang(941);
    let plan = w.plan();
    assert!(deleted(&plan).is_empty());
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Accepted));
    assert_eq!(st.reason.as_deref(), Some("Unschedulable"));
    // Nothing will announce t=1001, when the grace runs out: the plan asks to be run again then.
    assert_eq!(plan.recheck_in, Some(Duration::from_secs(1)));

    let (mut w, _) = half_started_gang(0);
    w.gang_grace = Duration::ZERO;
    let plan = w.plan();
    assert!(deleted(&plan).is_empty(), "a zero grace turns it off");
    assert_eq!(plan.recheck_in, None);
}

#[test]
fn the_job_of_a_gang_reported_unschedulable_is_deleted_until_it_is_gone() {
    let failed = |reason: &str| PlacementStatus {
        reason: Some(reason.into()),
        ..status(PlacementPhase::Failed)
    };
    let p = placement("train", 1)
        .replicas(2)
        .status(failed(GANG_UNSCHEDULABLE))
        .build();
    let plan = World::new()
        .placement(p.clone())
        .job(local_job(&p, JobStatus::default()))
        .plan();
    assert_eq!(
        deleted(&plan),
        [(
            local_job_name(&uid("train"), 1),
            DeleteReason::GangUnschedulable
        )]
    );
    assert_eq!(written(&plan, &p), None, "the report is frozen");

    // Other finished placements keep their Jobs (for the final report).
    let p = placement("train", 1)
        .replicas(2)
        .status(failed("BackoffLimitExceeded"))
        .build();
    let plan = World::new()
        .placement(p.clone())
        .job(local_job(&p, JobStatus::default()))
        .plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
}

#[test]
fn a_burst_of_new_placements_is_created_a_bounded_number_per_plan_in_name_order() {
    let mut world = World::new();
    let n = MAX_NEW_JOBS_PER_PLAN + 5;
    for i in 0..n {
        world = world.placement(placement(&format!("p{i:04}"), 1).build());
    }
    let plan = world.plan();
    let created: Vec<&String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateJob { placement, .. } => Some(placement),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), MAX_NEW_JOBS_PER_PLAN);
    assert_eq!(plan.deferred, 5);
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted);
    // Once those Jobs exist, the next plan creates the rest and defers nothing.
    let mut next = World::new();
    for p in world.placements.iter() {
        let made = created.iter().any(|c| Some(*c) == p.metadata.name.as_ref());
        next = next.placement((**p).clone());
        if made {
            next = next.job(local_job(p, JobStatus::default()));
        }
    }
    let plan = next.plan();
    let again = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::CreateJob { .. }))
        .count();
    assert_eq!((again, plan.deferred), (5, 0));
}

fn gated_pod(name: &str, other: Option<&str>) -> Pod {
    let mut p = pod(name, None, None);
    let mut gates = vec![crate::agent::cached::SchedulingGate {
        name: job_builder::LEASE_GATE.into(),
    }];
    gates.extend(other.map(|o| crate::agent::cached::SchedulingGate { name: o.into() }));
    p.spec.get_or_insert_with(Default::default).scheduling_gates = Some(gates);
    p
}

fn ungated(plan: &Plan) -> Vec<(String, Vec<String>)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Ungate { pod, keep, .. } => Some((pod.clone(), keep.clone())),
            _ => None,
        })
        .collect()
}

/// A current attempt whose local Job has `pods`, accepted.
fn accepted_with(pods: Vec<Pod>) -> World {
    let p = placement("train", 1)
        .replicas(2)
        .status(PlacementStatus {
            phase: Some(PlacementPhase::Accepted),
            last_update_time: Some(at(999)),
            ..Default::default()
        })
        .build();
    let job = local_job(&p, JobStatus::default());
    let mut w = World::new().placement(p).job(job);
    w.pods.insert(
        local_job_name(&uid("train"), 1),
        pods.into_iter().map(Arc::new).collect(),
    );
    w
}

#[test]
fn a_current_attempts_gated_pods_are_ungated_while_the_lease_is_live_keeping_other_gates() {
    let w = accepted_with(vec![
        gated_pod("train-0", None),
        gated_pod("train-1", Some("example.com/quota")),
        pod("train-2", Some(900), None),
    ]);
    assert_eq!(
        ungated(&w.plan()),
        [
            ("train-0".to_string(), vec![]),
            ("train-1".to_string(), vec!["example.com/quota".to_string()])
        ]
    );
}

#[test]
fn without_a_live_lease_or_for_a_stale_or_orphaned_job_no_pod_is_ungated() {
    // No live lease: the pods stay gated (and so never start) until there is one.
    let mut w = accepted_with(vec![gated_pod("train-0", None)]);
    w.lease_owner = None;
    assert!(ungated(&w.plan()).is_empty());

    // The hub deleted the Placement (it moved the attempt): the Job is deleted, never ungated.
    let p = placement("train", 1).build();
    let mut w = World::new().job(local_job(&p, JobStatus::default()));
    w.pods.insert(
        local_job_name(&uid("train"), 1),
        vec![Arc::new(gated_pod("train-0", None))],
    );
    let plan = w.plan();
    assert!(ungated(&plan).is_empty());
    assert_eq!(deleted(&plan).len(), 1);

    // A deleted pod is left alone.
    let mut going = gated_pod("train-0", None);
    going.metadata.deletion_timestamp = Some(at(990));
    assert!(ungated(&accepted_with(vec![going]).plan()).is_empty());
}

#[test]
fn a_running_serving_job_gets_its_service_once_and_a_gang_serving_job_gets_both_networks() {
    let serving_job = |job: &str, replicas: u32| {
        let mut p = placement(job, 1).replicas(replicas).build();
        p.spec.serving = Some(gpufed_crds::ServingSpec {
            port: 8080,
            readiness_path: "/".into(),
            settlement_period: gpufed_crds::KubeDuration::from_secs(3600),
        });
        let mut j = job_builder::build(&p, "gpufed-jobs", PullPolicy::IfNotPresent);
        j.metadata.uid = Some(format!("local-{job}"));
        p.status = Some(status(PlacementPhase::Running));
        (p, j)
    };
    let (p, j) = serving_job("s", 1);
    let (pg, jg) = serving_job("sg", 2);
    let mut w = World::new()
        .placement(p)
        .job(Job::from(&j))
        .placement(pg)
        .job(Job::from(&jg));
    let serve = |job: &str| format!("{}-serve", local_job_name(&uid(job), 1));
    let mut want = vec![local_job_name(&uid("sg"), 1), serve("s"), serve("sg")];
    want.sort();
    let mut got = gang_networks(&w.plan());
    got.sort();
    assert_eq!(got, want);
    for name in want {
        w.gang_services.insert(name);
    }
    assert!(gang_networks(&w.plan()).is_empty());
}

fn stop() -> gpufed_crds::PlacementStop {
    gpufed_crds::PlacementStop {
        reason: gpufed_crds::placement::reasons::PREEMPTED.into(),
        message: Some("preempted by team-a/urgent".into()),
        grace_period_seconds: 45,
    }
}

/// Two running replicas (since t=900) whose Placement the hub asked to stop.
fn running_and_stopped() -> (World, Placement) {
    let mut w = accepted_with(vec![
        pod("train-0", Some(900), None),
        pod("train-1", Some(900), None),
    ]);
    let mut p = w.placements[0].as_ref().clone();
    p.spec.stop = Some(Box::new(stop()));
    w.placements = vec![Arc::new(p.clone())];
    (w, p)
}

#[test]
fn a_stopped_placement_reports_its_final_usage_then_deletes_the_pods_with_the_hubs_grace() {
    let (w, p) = running_and_stopped();
    let plan = w.plan();
    let job = local_job_name(&uid("train"), 1);
    let [
        Step::WriteStatus {
            status: st,
            note: Some(note),
            ..
        },
        Step::StopJob {
            name,
            pods,
            grace_seconds,
            ..
        },
    ] = &plan.steps[..]
    else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some("Preempted"));
    assert_eq!(st.message.as_deref(), Some("preempted by team-a/urgent"));
    assert_eq!(st.gpu_seconds, 2 * 100, "both GPUs from t=900 to t=1000");
    assert_eq!(st.finish_time, Some(at(1000)));
    assert_eq!(note.reason, STOPPED);
    assert_eq!(name, &job);
    assert_eq!(pods, &["train-0".to_string(), "train-1".to_string()]);
    assert_eq!(
        *grace_seconds, 45,
        "the pool's grace, not the pod spec's 3 s"
    );
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Ungate { .. })),
        "nothing of a stopped attempt starts"
    );
    let _ = p;
}

#[test]
fn a_stopped_placement_whose_job_survived_the_stop_is_stopped_again_and_its_report_kept() {
    let (w, p) = running_and_stopped();
    let mut p = p;
    p.status = Some(PlacementStatus {
        reason: Some("Preempted".into()),
        ..status(PlacementPhase::Failed)
    });
    let w = World {
        placements: vec![Arc::new(p.clone())],
        ..w
    };
    let plan = w.plan();
    assert!(
        matches!(&plan.steps[..], [Step::StopJob { .. }]),
        "{:?}",
        plan.steps
    );
}

#[test]
fn a_stop_for_a_placement_that_never_started_reports_it_ended_with_nothing_used() {
    let mut p = placement("train", 1).build();
    p.spec.stop = Some(Box::new(stop()));
    let plan = World::new().placement(p.clone()).plan();
    assert!(created(&plan).is_empty(), "never started once stopped");
    let st = written(&plan, &p).unwrap();
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some("Preempted"));
    assert_eq!(st.gpu_seconds, 0);
}

#[test]
fn a_job_that_completed_before_its_stop_is_reported_succeeded() {
    let (mut w, p) = running_and_stopped();
    let done = JobStatus {
        conditions: Some(vec![crate::agent::fixtures::condition(
            "Complete", "", "", 990,
        )]),
        succeeded: Some(2),
        completion_time: Some(at(990)),
        ..Default::default()
    };
    w.jobs = vec![Arc::new(local_job(&p, done))];
    let plan = w.plan();
    assert_eq!(
        written(&plan, &p).unwrap().phase,
        Some(PlacementPhase::Succeeded)
    );
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::StopJob { .. })));
}

fn deadlines(plan: &Plan) -> Vec<(String, i64)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::SetDeadline { job, seconds, .. } => Some((job.clone(), *seconds)),
            _ => None,
        })
        .collect()
}

/// A serving attempt whose local Job started at 880 (deadline `deadline`) and whose two replicas
/// started at 900, funded for `funded` seconds.
fn serving_running(funded: Option<u64>, deadline: i64) -> World {
    let mut w = accepted_with(vec![
        pod("train-0", Some(900), None),
        pod("train-1", Some(900), None),
    ]);
    let mut p = w.placements[0].as_ref().clone();
    p.spec.serving = Some(gpufed_crds::ServingSpec {
        port: 8080,
        readiness_path: "/".into(),
        settlement_period: gpufed_crds::KubeDuration::from_secs(60),
    });
    p.spec.funded_seconds = funded;
    let mut j = w.jobs[0].as_ref().clone();
    j.spec = Some(crate::agent::cached::JobSpec {
        active_deadline_seconds: Some(deadline),
        ..Default::default()
    });
    j.status = Some(JobStatus {
        start_time: Some(at(880)),
        active: Some(2),
        ..Default::default()
    });
    w.placements = vec![Arc::new(p)];
    w.jobs = vec![Arc::new(j)];
    w
}

#[test]
fn a_serving_jobs_deadline_follows_its_funded_time_from_its_first_pods_start() {
    let job = local_job_name(&uid("train"), 1);
    // Unrenewed: maxDuration (3600 s) of running, counted from the pods' start 20 s after the
    // Job's, so the member does not stop it before the hub's first renewal is due.
    assert_eq!(
        deadlines(&serving_running(None, 3600).plan()),
        vec![(job.clone(), 3620)]
    );
    // Renewed to two windows.
    assert_eq!(
        deadlines(&serving_running(Some(7200), 3620).plan()),
        vec![(job.clone(), 7220)]
    );
    // Already there, or further: never lowered.
    assert!(deadlines(&serving_running(Some(7200), 7220).plan()).is_empty());
    assert!(deadlines(&serving_running(Some(7200), 9000).plan()).is_empty());
    // A batch Job keeps the deadline it was built with.
    let mut w = serving_running(Some(7200), 3600);
    let mut p = w.placements[0].as_ref().clone();
    p.spec.serving = None;
    w.placements = vec![Arc::new(p)];
    assert!(deadlines(&w.plan()).is_empty());
    // A finished serving Job is left alone.
    let mut w = serving_running(Some(7200), 3620);
    let mut j = w.jobs[0].as_ref().clone();
    j.status.as_mut().unwrap().conditions = Some(vec![crate::agent::fixtures::condition(
        "Failed",
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
        990,
    )]);
    w.jobs = vec![Arc::new(j)];
    assert!(deadlines(&w.plan()).is_empty());
}

#[test]
fn a_placement_that_records_usage_reports_its_nodes_readings_with_its_gpu_seconds() {
    let mut p = placement("train", 1)
        .status(PlacementStatus {
            phase: Some(PlacementPhase::Running),
            start_time: Some(at(900)),
            gpu_seconds: 90,
            last_update_time: Some(at(990)),
            ..Default::default()
        })
        .build();
    p.spec.usage_recording = Some(gpufed_crds::UsageRecording {
        idle_below_percent: 5,
        idle_grace_seconds: 60,
        max_sample_age_seconds: 30,
    });
    let job = local_job(&p, JobStatus::default());
    let mut running = pod("train-0", Some(900), None);
    running.spec.get_or_insert_with(Default::default).node_name = Some("h1".into());
    let mut w = World::new().placement(p.clone()).job(job);
    w.pods
        .insert(local_job_name(&uid("train"), 1), vec![Arc::new(running)]);
    let readings: Vec<(u64, u32)> = (850..1000).step_by(10).map(|t| (t, 80)).collect();
    w.readings.insert("h1".into(), Arc::new(readings));
    // Written 10 s ago: the refresh (10 s) is due, and the readings come with the GPU-seconds.
    let st = written(&w.plan(), &p).expect("the refresh writes the status");
    assert_eq!(st.gpu_seconds, 100);
    let t = st.telemetry.expect("telemetry");
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.nodes[0].node, "h1");
    assert_eq!(t.nodes[0].last_reading, 990);
    assert_eq!(
        t.nodes[0].spans,
        vec![gpufed_crds::TelemetrySpan {
            from: 880,
            to: 1020,
            busy: true
        }]
    );
    // Without `usageRecording` nothing is recorded.
    let mut p2 = p.clone();
    p2.spec.usage_recording = None;
    let mut w2 = World::new()
        .placement(p2.clone())
        .job(local_job(&p2, JobStatus::default()));
    w2.pods = w.pods.clone();
    w2.readings = w.readings.clone();
    assert_eq!(written(&w2.plan(), &p2).and_then(|s| s.telemetry), None);
}
