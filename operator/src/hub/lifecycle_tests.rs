use super::*;
use gpufed_crds::testing::job;
use gpufed_crds::{PlacementRef, PlannedNode};
use k8s_openapi::jiff::Timestamp;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn world_ready(placement: Option<Option<PlacementStatus>>) -> World {
    World {
        pool_exists: true,
        member_ready: Some(true),
        placement,
        start_timeout: std::time::Duration::from_secs(600),
        ..Default::default()
    }
}

/// A job whose attempt `n` was placed on `cluster` by the scheduling loop.
fn placed(n: u32, cluster: &str, phase: AttemptPhase) -> ComputeJob {
    let mut j = job("train").gpus(2).replicas(2).max_attempts(3).build();
    let mut attempts: Vec<AttemptRecord> = (1..n)
        .map(|k| record(k, &format!("old{k}"), AttemptPhase::Lost))
        .collect();
    attempts.push(record(n, cluster, phase));
    j.status = Some(ComputeJobStatus {
        phase: JobPhase::Placed,
        attempt: n,
        placement: Some(Box::new(PlacementRef {
            cluster: cluster.into(),
            namespace: member_namespace(cluster),
            name: format!("train-{n}"),
            model: "H100".into(),
            price_per_gpu_hour: "2".parse().unwrap(),
        })),
        attempts,
        ..Default::default()
    });
    j
}

fn record(n: u32, cluster: &str, phase: AttemptPhase) -> AttemptRecord {
    AttemptRecord {
        placement: format!("train-{n}"),
        price_per_gpu_hour: "2".parse().unwrap(),
        placed_time: Some(at(10)),
        planned_nodes: vec![PlannedNode {
            node: "n1".into(),
            replicas: 2,
        }],
        ..gpufed_crds::testing::attempt(n, cluster, phase)
    }
}

/// The Placement status of an attempt that succeeded: 120 GPU-seconds from 20 s to 50 s.
fn succeeded() -> PlacementStatus {
    PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        gpu_seconds: 120,
        start_time: Some(at(20)),
        finish_time: Some(at(50)),
        ..Default::default()
    }
}

fn running(gpu_seconds: u64) -> PlacementStatus {
    PlacementStatus {
        phase: Some(PlacementPhase::Running),
        active_replicas: 2,
        start_time: Some(at(20)),
        gpu_seconds,
        ..Default::default()
    }
}

#[test]
fn a_job_in_a_missing_pool_waits_with_a_fix_in_the_explanation() {
    let out = reconcile(&job("j").pool("nope").build(), &World::default(), &at(1));
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.reason.as_deref(), Some("PoolNotFound"));
    assert!(
        out.status
            .explanation
            .unwrap()
            .contains("GpuPool \"nope\" does not exist")
    );
    assert!(!conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(
        out.actions.is_empty(),
        "nothing is scheduled before admission"
    );
}

#[test]
fn a_job_in_a_pool_with_a_chain_needs_a_price_cap() {
    let w = World {
        pool_exists: true,
        pool_has_chain: true,
        ..Default::default()
    };
    let out = reconcile(&job("j").build(), &w, &at(1));
    assert_eq!(out.status.reason.as_deref(), Some("MaxPriceRequired"));
    assert!(
        out.status
            .explanation
            .unwrap()
            .contains("spec.maxPricePerGpuHour")
    );
}

#[test]
fn a_namespace_without_a_payer_cannot_spend_in_a_pool_with_a_chain() {
    let w = World {
        pool_exists: true,
        pool_has_chain: true,
        ..Default::default()
    };
    let out = reconcile(&job("j").max_price("2").build(), &w, &at(1));
    assert_eq!(out.status.reason.as_deref(), Some("NoPayerBinding"));
    assert!(out.status.explanation.unwrap().contains("spec.payers"));
}

#[test]
fn a_priority_the_pool_does_not_grant_keeps_a_waiting_job_out_of_the_queue() {
    let refused = World {
        pool_exists: true,
        priority_refused: Some((
            "PriorityAboveCeiling",
            "spec.priority 900 is above 0".into(),
        )),
        ..Default::default()
    };
    let out = reconcile(&job("j").build(), &refused, &at(1));
    assert_eq!(out.status.reason.as_deref(), Some("PriorityAboveCeiling"));
    assert!(!conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(!out.actions.contains(&Action::Schedule));
    // A running attempt is left alone: the priority only orders waiting jobs.
    let busy = placed(1, "alpha", AttemptPhase::Running);
    let out = reconcile(
        &busy,
        &World {
            priority_refused: refused.priority_refused.clone(),
            ..world_ready(Some(Some(running(10))))
        },
        &at(100),
    );
    assert_eq!(out.status.attempts[0].phase, AttemptPhase::Running);
    // Granted: the job is queued at the class's value.
    let granted = World {
        pool_exists: true,
        priority: 500,
        ..Default::default()
    };
    let out = reconcile(&job("j").build(), &granted, &at(1));
    assert_eq!(out.status.priority, Some(500));
    assert!(out.actions.contains(&Action::Schedule));
}

#[test]
fn a_new_job_is_admitted_queued_and_handed_to_the_scheduler() {
    let out = reconcile(
        &job("j").gpus(4).replicas(2).build(),
        &world_ready(None),
        &at(5),
    );
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.gpus, 8);
    assert_eq!(out.status.queued_time, Some(at(5)));
    assert!(conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert_eq!(out.actions, [Action::Schedule]);
}

#[test]
fn a_decided_attempt_gets_its_placement_in_the_member_namespace() {
    let j = placed(1, "alpha", AttemptPhase::Placed);
    // Placed at t=10: the scheduling loop creates the Placement; the controller waits its grace.
    let out = reconcile(&j, &world_ready(None), &at(11));
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert_eq!(out.status.phase, JobPhase::Placed);
    let rec = &j.status.as_ref().unwrap().attempts[0];
    assert_eq!(
        placement_grace(rec, &world_ready(None), &at(11)),
        Some(PLACEMENT_GRACE - std::time::Duration::from_secs(1))
    );
    // Still missing after the grace: the controller creates it.
    let out = reconcile(&j, &world_ready(None), &at(16));
    let [Action::CreatePlacement(p)] = &out.actions[..] else {
        panic!("{:?}", out.actions)
    };
    assert_eq!(p.metadata.namespace.as_deref(), Some("gpufed-member-alpha"));
    assert_eq!(p.metadata.name.as_deref(), Some("train-1"));
    assert_eq!(p.spec.attempt, 1);
    assert_eq!(p.spec.total_gpus, 4);
    assert_eq!(p.spec.job.uid, "uid-train");
    assert_eq!(
        p.metadata.labels.as_ref().unwrap()[LABEL_JOB_UID],
        "uid-train"
    );
    assert_eq!(out.status.phase, JobPhase::Placed);
}

#[test]
fn a_running_placement_makes_the_job_running_once() {
    let j = placed(1, "alpha", AttemptPhase::Accepted);
    let out = reconcile(&j, &world_ready(Some(Some(running(40)))), &at(30));
    assert_eq!(out.status.phase, JobPhase::Running);
    let rec = &out.status.attempts[0];
    assert_eq!(rec.phase, AttemptPhase::Running);
    assert_eq!(rec.start_time, Some(at(20)));
    assert_eq!(out.status.usage.as_ref().unwrap().gpu_seconds, 40);
    assert_eq!(out.events.len(), 1);
    // Already running: no second event.
    let mut again = j.clone();
    again.status = Some(out.status);
    let out2 = reconcile(&again, &world_ready(Some(Some(running(80)))), &at(40));
    assert!(out2.events.is_empty());
    assert_eq!(out2.status.usage.unwrap().gpu_seconds, 80);
}

#[test]
fn a_succeeded_placement_finishes_the_job_with_its_usage() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    let done = succeeded();
    let out = reconcile(&j, &world_ready(Some(Some(done))), &at(51));
    assert_eq!(out.status.phase, JobPhase::Succeeded);
    assert_eq!(out.status.completion_time, Some(at(51)));
    let usage = out.status.usage.unwrap();
    assert_eq!((usage.gpu_seconds, usage.finish_time), (120, Some(at(50))));
    assert!(conditions::is_true(&out.status.conditions, jc::FINISHED));
    assert!(!out.actions.iter().any(|a| matches!(a, Action::Schedule)));
}

#[test]
fn a_succeeded_attempts_outputs_become_the_jobs_and_a_failed_upload_lists_none() {
    let stored = vec![gpufed_crds::OutputRecord {
        name: "checkpoint".into(),
        replica: 0,
        bucket: "runs".into(),
        objects: vec![gpufed_crds::StoredObject {
            key: "runs/1/model.bin".into(),
            size: 4,
            sha256: "ab".repeat(32),
        }],
        omitted: 0,
    }];
    let j = placed(1, "alpha", AttemptPhase::Running);
    let done = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        outputs: stored.clone(),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(done))), &at(51));
    assert_eq!(out.status.phase, JobPhase::Succeeded);
    assert_eq!(out.status.outputs, stored);
    let failed = PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some("OutputUploadFailed".into()),
        message: Some(
            "output \"checkpoint\" of replica 0: PUT s3://runs/runs/1/model.bin: HTTP 403".into(),
        ),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(failed))), &at(51));
    assert_eq!(out.status.phase, JobPhase::Failed);
    assert_eq!(
        out.status.attempts[0].reason.as_deref(),
        Some("OutputUploadFailed")
    );
    assert!(out.status.message.unwrap().contains("HTTP 403"));
    assert!(out.status.outputs.is_empty());
}

#[test]
fn an_attempt_on_a_member_that_stopped_heartbeating_is_lost_and_replaced() {
    let mut j = placed(1, "alpha", AttemptPhase::Running);
    j.status.as_mut().unwrap().attempts[0].gpu_seconds = 30;
    let w = World {
        member_ready: Some(false),
        ..world_ready(Some(Some(running(60))))
    };
    let out = reconcile(&j, &w, &at(100));
    let rec = &out.status.attempts[0];
    assert_eq!(rec.phase, AttemptPhase::Lost);
    assert_eq!(rec.reason.as_deref(), Some("HeartbeatExpired"));
    assert_eq!(
        rec.gpu_seconds, 60,
        "usage reported before the loss is kept"
    );
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert!(out.status.placement.is_none());
    assert!(out.actions.contains(&Action::DeletePlacement {
        namespace: "gpufed-member-alpha".into(),
        name: "train-1".into()
    }));
    assert!(out.actions.contains(&Action::Schedule));
    assert_eq!(out.events[0].reason, "FailedOver");
}

#[test]
fn losing_the_last_attempt_fails_the_job() {
    let j = placed(3, "gamma", AttemptPhase::Running);
    let w = World {
        member_ready: None,
        ..world_ready(None)
    };
    let out = reconcile(&j, &w, &at(100));
    assert_eq!(out.status.phase, JobPhase::Failed);
    assert_eq!(
        out.status.attempts[2].reason.as_deref(),
        Some("MemberRemoved")
    );
    assert!(
        out.status
            .message
            .unwrap()
            .contains("no attempts left (retry.maxAttempts = 3)")
    );
}

#[test]
fn attempts_whose_lock_was_refused_do_not_use_up_retries() {
    // Attempt 1 was refused by the escrow (never ran); attempt 3 is the second that ran.
    let mut j = placed(3, "gamma", AttemptPhase::Running);
    let st = j.status.as_mut().unwrap();
    st.attempts[0].phase = AttemptPhase::Cancelled;
    st.attempts[0].reason = Some(crate::hub::settlement::LOCK_REFUSED.into());
    let w = World {
        member_ready: None,
        ..world_ready(None)
    };
    let out = reconcile(&j, &w, &at(100));
    assert_eq!(
        out.status.phase,
        JobPhase::Pending,
        "a third attempt may run"
    );
    assert!(out.actions.contains(&Action::Schedule));
}

#[test]
fn a_placement_deleted_under_a_running_attempt_counts_as_lost() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    let out = reconcile(&j, &world_ready(None), &at(100));
    assert_eq!(
        out.status.attempts[0].reason.as_deref(),
        Some("PlacementDeleted")
    );
    assert_eq!(out.status.phase, JobPhase::Pending);
}

#[test]
fn a_failed_workload_is_not_retried_unless_asked() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    let failed = PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some("BackoffLimitExceeded".into()),
        message: Some("pod exited with 1".into()),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(failed.clone()))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Failed);
    assert!(
        out.status
            .message
            .unwrap()
            .contains("retry.retryOnFailure is false")
    );

    let mut retried = j.clone();
    retried.spec.retry.retry_on_failure = true;
    let out = reconcile(&retried, &world_ready(Some(Some(failed))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Pending);
}

#[test]
fn a_rejected_placement_is_always_tried_elsewhere() {
    let j = placed(1, "alpha", AttemptPhase::Placed);
    let rejected = PlacementStatus {
        phase: Some(PlacementPhase::Rejected),
        reason: Some("InsufficientGPUs".into()),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(rejected))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.attempts[0].phase, AttemptPhase::Failed);
}

#[test]
fn finished_jobs_are_left_alone() {
    let mut j = placed(1, "alpha", AttemptPhase::Succeeded);
    j.status.as_mut().unwrap().phase = JobPhase::Succeeded;
    let out = reconcile(
        &j,
        &World {
            member_ready: Some(false),
            ..world_ready(None)
        },
        &at(99),
    );
    assert!(out.actions.is_empty());
    assert_eq!(out.status.phase, JobPhase::Succeeded);
}

#[test]
fn an_attempt_stopped_by_fencing_is_retried_even_without_retry_on_failure() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    let fenced = PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some(FENCED.into()),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(fenced))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.attempts[0].reason.as_deref(), Some("Fenced"));
}

#[test]
fn no_placement_is_written_before_the_escrow_holds_the_funds() {
    let mut j = placed(1, "alpha", AttemptPhase::Placed);
    j.spec.max_price_per_gpu_hour = Some("3".parse().unwrap());
    j.status.as_mut().unwrap().attempts[0].settlement =
        Some(Box::new(crate::hub::settlement::unfunded("0xab".into())));
    let w = World {
        pool_has_chain: true,
        payer: Some(
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
        ),
        ..world_ready(None)
    };
    let out = reconcile(&j, &w, &at(12));
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert_eq!(out.status.phase, JobPhase::Funding);

    j.status.as_mut().unwrap().attempts[0]
        .settlement
        .as_mut()
        .unwrap()
        .state = gpufed_crds::SettlementState::Locked;
    let out = reconcile(&j, &w, &at(13));
    let [Action::CreatePlacement(p)] = &out.actions[..] else {
        panic!("{:?}", out.actions)
    };
    assert_eq!(p.spec.chain_job_id.as_deref(), Some("0xab"));
}

#[test]
fn a_member_cannot_report_more_gpu_seconds_than_its_gpus_could_have_run() {
    // 4 GPUs placed at t=10; at t=110 at most 4 × (100 + 1) GPU-seconds are possible: one
    // second of margin for the member's clock.
    let j = placed(1, "alpha", AttemptPhase::Accepted);
    let out = reconcile(&j, &world_ready(Some(Some(running(100_000)))), &at(110));
    assert_eq!(out.status.attempts[0].gpu_seconds, 404);
    assert!(
        out.events.iter().any(|e| e.reason == "UsageCapped"),
        "{:?}",
        out.events
    );
    // Honest reports pass through unchanged.
    let out = reconcile(&j, &world_ready(Some(Some(running(300)))), &at(110));
    assert_eq!(out.status.attempts[0].gpu_seconds, 300);
    assert!(!out.events.iter().any(|e| e.reason == "UsageCapped"));
    assert_eq!(
        usage_recheck(&j, &out.status, &world_ready(Some(Some(running(300))))),
        None
    );
}

#[test]
fn a_report_ahead_of_the_hubs_clock_is_looked_at_again_once_it_can_be_true() {
    // 4 GPUs placed at t=10; at t=12 a report of 40 GPU-seconds is capped at 4 × (2 + 1). The
    // hub comes back once 28 more GPU-seconds can have passed (7 s, plus one), without another
    // report.
    let j = placed(1, "alpha", AttemptPhase::Running);
    let w = world_ready(Some(Some(running(40))));
    let out = reconcile(&j, &w, &at(12));
    assert_eq!(out.status.attempts[0].gpu_seconds, 12);
    let again = usage_recheck(&j, &out.status, &w).unwrap();
    assert_eq!(again, std::time::Duration::from_secs(8));
    let mut later = j.clone();
    later.status = Some(out.status);
    let out = reconcile(&later, &w, &at(12 + 8));
    assert_eq!(out.status.attempts[0].gpu_seconds, 40);
}

#[test]
fn an_honest_report_one_second_ahead_of_the_hubs_clock_is_recorded_in_full() {
    // 4 GPUs placed at t=10. The agent reads its member's clock up to half a second ahead and
    // counts from a whole-second container start: at the hub's t=13.4 it may have counted 4 s.
    let j = placed(1, "alpha", AttemptPhase::Running);
    let mut now = at(13);
    now.0 += std::time::Duration::from_millis(400);
    let out = reconcile(&j, &world_ready(Some(Some(running(16)))), &now);
    assert_eq!(out.status.attempts[0].gpu_seconds, 16);
    assert!(!out.events.iter().any(|e| e.reason == "UsageCapped"));
}

#[test]
fn usage_never_exceeds_all_gpus_for_the_whole_max_duration() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    // Placed at t=10, maxDuration 1h, 4 GPUs: a day later the cap is still 4 × 3600.
    let rec = &j.status.as_ref().unwrap().attempts[0];
    assert_eq!(usage_cap(&j, rec, &at(10 + 86_400)), 4 * 3600);
}

#[test]
fn an_attempt_whose_pods_never_start_is_given_up_after_the_start_timeout() {
    let j = placed(1, "alpha", AttemptPhase::Accepted);
    let waiting = PlacementStatus {
        phase: Some(PlacementPhase::Accepted),
        message: Some("ImagePullBackOff".into()),
        ..Default::default()
    };
    // Placement written at t=10 with a 600 s timeout: still waiting at t=600, given up at t=611.
    let w = World {
        placement_created: Some(at(10)),
        ..world_ready(Some(Some(waiting.clone())))
    };
    let out = reconcile(&j, &w, &at(600));
    assert_eq!(out.status.phase, JobPhase::Placed);
    assert_eq!(
        start_deadline(&j, &w, &at(600)),
        Some(std::time::Duration::from_secs(11))
    );
    let out = reconcile(&j, &w, &at(611));
    let rec = &out.status.attempts[0];
    assert_eq!(
        (rec.phase, rec.reason.as_deref()),
        (AttemptPhase::Failed, Some(START_TIMEOUT))
    );
    assert!(rec.message.as_ref().unwrap().contains("ImagePullBackOff"));
    assert_eq!(out.status.phase, JobPhase::Pending, "tried elsewhere");
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::DeletePlacement { .. }))
    );
    // A running attempt is never timed out, however long it has run.
    let out = reconcile(&j, &world_ready(Some(Some(running(100)))), &at(5000));
    assert_eq!(out.status.phase, JobPhase::Running);
}

#[test]
fn a_placement_names_its_job_by_uid_only() {
    // Whatever the member reads (name, labels, annotations, spec) carries no trace of the job's
    // namespace or name, so it cannot tell whose job it runs nor a challenge from a tenant's job.
    let mut j = placed(1, "alpha", AttemptPhase::Placed);
    j.metadata.namespace = Some("zz-tenant-ns".into());
    j.metadata.name = Some("zz-secret-job".into());
    let uid = j.metadata.uid.clone().unwrap();
    let st = j.status.as_mut().unwrap();
    st.attempts[0].placement = gpufed_crds::naming::placement_name(&uid, 1);
    let out = reconcile(&j, &world_ready(None), &at(16));
    let [Action::CreatePlacement(p)] = &out.actions[..] else {
        panic!("{:?}", out.actions)
    };
    assert_eq!(p.spec.job, JobReference { uid: uid.clone() });
    assert_eq!(
        p.metadata.name.as_deref(),
        Some(gpufed_crds::naming::placement_name(&uid, 1).as_str())
    );
    assert!(p.metadata.annotations.is_none());
    let keys: Vec<&str> = p
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            LABEL_MANAGED_BY,
            LABEL_ATTEMPT,
            LABEL_CLUSTER,
            LABEL_JOB_UID
        ]
    );
    let seen = serde_json::to_string(p.as_ref()).unwrap();
    assert!(!seen.contains("zz-tenant-ns"), "{seen}");
    assert!(!seen.contains("zz-secret-job"), "{seen}");
    assert!(seen.contains(&uid));
}

#[test]
fn a_local_job_that_vanished_is_retried_like_fencing() {
    let j = placed(1, "alpha", AttemptPhase::Running);
    let missing = PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some(LOCAL_JOB_MISSING.into()),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(missing))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Pending);
}

#[test]
fn a_gang_the_member_could_not_schedule_is_retried_elsewhere_and_counts_as_an_attempt() {
    let j = placed(1, "alpha", AttemptPhase::Accepted);
    assert!(!j.spec.retry.retry_on_failure);
    let stuck = PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some(GANG_UNSCHEDULABLE.into()),
        message: Some("1 of 2 replicas of local Job gpufed-x-1 could not be scheduled".into()),
        ..Default::default()
    };
    let out = reconcile(&j, &world_ready(Some(Some(stuck.clone()))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Pending);
    let rec = &out.status.attempts[0];
    assert_eq!(rec.phase, AttemptPhase::Failed);
    assert_eq!(rec.reason.as_deref(), Some(GANG_UNSCHEDULABLE));
    assert_eq!(rec.gpu_seconds, 0);
    assert!(out.actions.contains(&Action::Schedule));

    // It used up an attempt: with none left, the job fails.
    let mut last = j.clone();
    last.spec.retry.max_attempts = 1;
    let out = reconcile(&last, &world_ready(Some(Some(stuck))), &at(60));
    assert_eq!(out.status.phase, JobPhase::Failed);
    assert!(out.status.message.unwrap().contains("no attempts left"));
}

#[test]
fn time_spent_waiting_for_the_escrow_lock_does_not_count_against_the_member() {
    // Decided at t=10, the lock took until t=700, the Placement was written then: not timed out.
    let j = placed(1, "alpha", AttemptPhase::Placed);
    let waiting = PlacementStatus {
        phase: Some(PlacementPhase::Accepted),
        ..Default::default()
    };
    let w = World {
        placement_created: Some(at(700)),
        ..world_ready(Some(Some(waiting)))
    };
    let out = reconcile(&j, &w, &at(720));
    assert_eq!(out.status.phase, JobPhase::Placed);
}

#[test]
fn only_a_plain_first_admission_in_a_pool_without_a_chain_is_left_to_the_scheduler() {
    let open = World {
        pool_exists: true,
        priority: 100,
        ..Default::default()
    };
    let new = job("j").build();
    let out = reconcile(&new, &open, &at(1));
    assert!(admission_deferred(&new, &open, &out));
    assert_eq!(out.status.priority, Some(100), "the loop queues it at this");

    // A pool with a chain: the money step needs the admitted job first.
    let chain = World {
        pool_has_chain: true,
        payer: Some(
            "0x1111111111111111111111111111111111111111"
                .parse()
                .unwrap(),
        ),
        ..open.clone()
    };
    let priced = job("j").max_price("2").build();
    let out = reconcile(&priced, &chain, &at(1));
    assert!(conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(!admission_deferred(&priced, &chain, &out));

    // A refusal is the controller's to write.
    let refused = World {
        priority_refused: Some(("PriorityAboveCeiling", "too high".into())),
        ..open.clone()
    };
    let out = reconcile(&new, &refused, &at(1));
    assert!(!admission_deferred(&new, &refused, &out));

    // Already admitted (waiting), or refused before and fixed in place: not a first admission.
    let mut waiting = new.clone();
    waiting.status = Some(reconcile(&new, &open, &at(1)).status);
    let out = reconcile(&waiting, &open, &at(2));
    assert!(!admission_deferred(&waiting, &open, &out));
    let mut fixed = new.clone();
    fixed.status = Some(reconcile(&new, &refused, &at(1)).status);
    let out = reconcile(&fixed, &open, &at(2));
    assert!(conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(!admission_deferred(&fixed, &open, &out));
}

#[test]
fn a_placement_of_a_lost_attempt_the_job_moved_past_is_removed_and_others_stay() {
    // Attempts 1 and 2 were lost (their Placements deleted then), 3 failed and was retried (its
    // Placement keeps the final report and receipt), 4 is current.
    let mut j = placed(4, "beta", AttemptPhase::Placed);
    let st = j.status.as_mut().unwrap();
    st.attempts[2].phase = AttemptPhase::Failed;
    let ps = [
        ("gpufed-member-alpha", "p-1", 1),
        ("gpufed-member-gamma", "p-2", 2),
        ("gpufed-member-delta", "p-3", 3),
        ("gpufed-member-beta", "p-4", 4),
        // A later attempt than the cache's job shows: the decision is newer than the cache.
        ("gpufed-member-beta", "p-5", 5),
    ];
    assert_eq!(
        superseded(j.status.as_ref(), ps),
        vec![
            ("gpufed-member-alpha".to_string(), "p-1".to_string()),
            ("gpufed-member-gamma".to_string(), "p-2".to_string()),
        ]
    );
    assert!(
        superseded(None, ps).is_empty(),
        "no status, nothing decided"
    );
}

#[test]
fn only_the_current_placed_attempt_of_an_unfinished_job_wants_its_placement() {
    let j = placed(2, "beta", AttemptPhase::Placed);
    assert!(wants_placement(j.status.as_ref(), 2));
    // A stale cache's attempt 1: the fresh job has moved on to 2.
    assert!(!wants_placement(j.status.as_ref(), 1));
    let running = placed(2, "beta", AttemptPhase::Running);
    assert!(
        !wants_placement(running.status.as_ref(), 2),
        "a running attempt's Placement was deleted, not never written: not recreated"
    );
    let mut finished = placed(2, "beta", AttemptPhase::Placed);
    finished.status.as_mut().unwrap().phase = JobPhase::Failed;
    assert!(!wants_placement(finished.status.as_ref(), 2));
    assert!(!wants_placement(None, 1), "no status, nothing decided");
}

#[test]
fn a_job_whose_secret_is_missing_waits_unadmitted_with_the_reason_and_one_event() {
    let why = crate::sealing::Unavailable {
        reason: "SecretNotFound",
        message:
            "container \"main\" env \"TOKEN\" refers to Secret team-a/hf, which does not exist"
                .into(),
    };
    let w = World {
        secrets_unavailable: Some(why.clone()),
        ..world_ready(None)
    };
    let j = job("j").build();
    let out = reconcile(&j, &w, &at(1));
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.reason.as_deref(), Some("SecretNotFound"));
    assert_eq!(
        out.status.explanation.as_deref(),
        Some(why.message.as_str())
    );
    assert!(!conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(
        !out.actions.contains(&Action::Schedule),
        "nothing is placed"
    );
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].reason, "SecretNotFound");
    // The same reason again: no second Event.
    let mut again = j.clone();
    again.status = Some(out.status);
    assert!(reconcile(&again, &w, &at(2)).events.is_empty());
    // The Secret appears: admitted and queued.
    let out = reconcile(&again, &world_ready(None), &at(3));
    assert!(conditions::is_true(&out.status.conditions, jc::ADMITTED));
    assert!(out.actions.contains(&Action::Schedule));
}

#[test]
fn a_job_with_secrets_is_admitted_by_the_controller_not_deferred_to_the_loop() {
    let mut j = job("j").build();
    let plain = reconcile(&j, &world_ready(None), &at(1));
    assert!(admission_deferred(&j, &world_ready(None), &plain));
    j.spec.template.image_pull_secrets = vec![gpufed_crds::workload::SecretReference {
        name: "registry".into(),
    }];
    let out = reconcile(&j, &world_ready(None), &at(1));
    assert!(!admission_deferred(&j, &world_ready(None), &out));
}

/// A job whose running attempt `n` on alpha the hub marked preempted (ADR 0025).
fn being_preempted(n: u32) -> ComputeJob {
    let mut j = placed(n, "alpha", AttemptPhase::Running);
    let rec = j.status.as_mut().unwrap().attempts.last_mut().unwrap();
    rec.reason = Some(PREEMPTED.into());
    rec.message = Some("preempted by team-a/urgent (priority 1000 > 10)".into());
    j
}

fn stopped(gpu_seconds: u64) -> PlacementStatus {
    PlacementStatus {
        phase: Some(PlacementPhase::Failed),
        reason: Some(PREEMPTED.into()),
        message: Some("preempted by team-a/urgent (priority 1000 > 10)".into()),
        finish_time: Some(at(90)),
        gpu_seconds,
        ..running(0)
    }
}

#[test]
fn a_preempted_attempt_ends_preempted_with_its_final_usage_and_the_job_is_requeued() {
    // Attempt 3 of 3: were it counted like a failure, the job would fail now.
    let j = being_preempted(3);
    let out = reconcile(&j, &world_ready(Some(Some(stopped(140)))), &at(100));
    let rec = &out.status.attempts[2];
    assert_eq!(rec.phase, AttemptPhase::Preempted);
    assert_eq!(rec.reason.as_deref(), Some(PREEMPTED));
    assert_eq!(rec.gpu_seconds, 140, "the final report is what is paid");
    assert_eq!(rec.finish_time, Some(at(90)));
    assert!(rec.message.as_deref().unwrap().contains("team-a/urgent"));
    assert_eq!(out.status.phase, JobPhase::Pending);
    assert_eq!(out.status.reason.as_deref(), Some(PREEMPTED));
    assert!(out.status.placement.is_none());
    assert!(
        out.status
            .explanation
            .as_deref()
            .unwrap()
            .contains("preempted by team-a/urgent")
    );
    assert!(out.actions.contains(&Action::Schedule));
    assert_eq!(out.events[0].reason, "Requeued");
    assert!(
        !crate::hub::settlement::attempt_ran(rec),
        "not counted against retry.maxAttempts"
    );
    let mut after = j.clone();
    after.status = Some(out.status.clone());
    assert!(
        crate::hub::snapshot::failed_on(&after)
            .iter()
            .all(|c| c != "alpha"),
        "the next attempt may go back to alpha"
    );
}

#[test]
fn a_member_claiming_preemption_the_hub_never_asked_for_is_an_ordinary_failure() {
    let mut j = placed(1, "alpha", AttemptPhase::Running);
    j.spec.retry.max_attempts = 1;
    let out = reconcile(&j, &world_ready(Some(Some(stopped(10)))), &at(100));
    assert_eq!(out.status.attempts[0].phase, AttemptPhase::Failed);
    assert_eq!(out.status.phase, JobPhase::Failed);
}

#[test]
fn an_attempt_being_preempted_whose_member_went_away_still_ends_preempted() {
    let j = being_preempted(3);
    let w = World {
        member_ready: Some(false),
        ..world_ready(Some(Some(running(60))))
    };
    let out = reconcile(&j, &w, &at(100));
    let rec = &out.status.attempts[2];
    assert_eq!(rec.phase, AttemptPhase::Preempted);
    assert_eq!(rec.gpu_seconds, 60);
    assert_eq!(
        out.status.phase,
        JobPhase::Pending,
        "not the job's last attempt"
    );
    assert!(out.actions.contains(&Action::DeletePlacement {
        namespace: "gpufed-member-alpha".into(),
        name: "train-3".into()
    }));
}

fn spans(list: &[(i64, i64, bool)]) -> gpufed_crds::UsageTelemetry {
    gpufed_crds::UsageTelemetry {
        nodes: vec![gpufed_crds::NodeTelemetry {
            node: "n1".into(),
            gpu_uuids: vec!["GPU-a".into()],
            last_reading: list.last().map_or(0, |s| s.1),
            spans: list
                .iter()
                .map(|&(from, to, busy)| gpufed_crds::TelemetrySpan { from, to, busy })
                .collect(),
        }],
    }
}

fn checking(placement: PlacementStatus) -> World {
    World {
        usage_check: Some(gpufed_crds::UsageCheck {
            idle_grace: gpufed_crds::KubeDuration::from_secs(10),
            ..Default::default()
        }),
        placement_records_usage: true,
        ..world_ready(Some(Some(placement)))
    }
}

#[test]
fn a_claim_its_telemetry_does_not_support_is_flagged_and_settles_only_the_supported_part() {
    // 4 GPUs from 20 to 120: busy 20..60, idle 60..120 (50 s beyond the 10 s grace).
    let j = placed(1, "alpha", AttemptPhase::Running);
    let done = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        gpu_seconds: 400,
        start_time: Some(at(20)),
        finish_time: Some(at(120)),
        telemetry: Some(spans(&[(15, 60, true), (60, 130, false)])),
        ..Default::default()
    };
    let out = reconcile(&j, &checking(done.clone()), &at(121));
    let rec = &out.status.attempts[0];
    assert_eq!(rec.gpu_seconds, 400);
    let check = rec.usage_check.clone().expect("checked");
    assert_eq!(
        (
            check.claimed_gpu_seconds,
            check.supported_gpu_seconds,
            check.unsupported_gpu_seconds,
            check.idle_seconds
        ),
        (400, 4 * 50, 200, 50)
    );
    assert_eq!(paid_gpu_seconds(rec), 200);
    let c = conditions::find(&out.status.conditions, jc::USAGE_SUPPORTED).expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", USAGE_UNSUPPORTED)
    );
    assert!(
        c.message.contains("supports 200 of the 400 GPU-seconds"),
        "{}",
        c.message
    );
    let events: Vec<_> = out
        .events
        .iter()
        .filter(|e| e.reason == USAGE_UNSUPPORTED)
        .collect();
    assert_eq!(events.len(), 1, "{:?}", out.events);
    assert!(events[0].warning);

    // The same report again: no second Event.
    let mut again = j.clone();
    again.status = Some(out.status.clone());
    let out2 = reconcile(&again, &checking(done.clone()), &at(122));
    assert!(!out2.events.iter().any(|e| e.reason == USAGE_UNSUPPORTED));

    // Busy throughout: supported in full, the condition True, no Event.
    let busy = PlacementStatus {
        telemetry: Some(spans(&[(15, 130, true)])),
        ..done.clone()
    };
    let out = reconcile(&j, &checking(busy), &at(121));
    assert_eq!(paid_gpu_seconds(&out.status.attempts[0]), 400);
    assert!(conditions::is_true(
        &out.status.conditions,
        jc::USAGE_SUPPORTED
    ));
    assert!(!out.events.iter().any(|e| e.reason == USAGE_UNSUPPORTED));

    // No telemetry reported: nothing supported (silence is not paid by default).
    let silent = PlacementStatus {
        telemetry: None,
        ..done.clone()
    };
    let out = reconcile(&j, &checking(silent), &at(121));
    assert_eq!(paid_gpu_seconds(&out.status.attempts[0]), 0);

    // A Placement made before the pool turned the check on records nothing: it is not checked.
    let before = World {
        placement_records_usage: false,
        ..checking(done.clone())
    };
    let out = reconcile(&j, &before, &at(121));
    assert_eq!(out.status.attempts[0].usage_check, None);
    assert_eq!(paid_gpu_seconds(&out.status.attempts[0]), 400);

    // A pool without usageCheck pays the report and records no verdict.
    let out = reconcile(&j, &world_ready(Some(Some(done))), &at(121));
    assert_eq!(out.status.attempts[0].usage_check, None);
    assert_eq!(paid_gpu_seconds(&out.status.attempts[0]), 400);
    assert!(conditions::find(&out.status.conditions, jc::USAGE_SUPPORTED).is_none());
}

#[test]
fn placements_record_telemetry_only_in_pools_that_check_usage_and_never_for_serving() {
    let j = placed(1, "alpha", AttemptPhase::Placed);
    let rec = &j.status.as_ref().unwrap().attempts[0];
    let usage = gpufed_crds::UsageCheck::default();
    let p = placement_for(&j, rec, Some(&usage));
    assert_eq!(
        p.spec.usage_recording,
        Some(gpufed_crds::UsageRecording {
            idle_below_percent: 5,
            idle_grace_seconds: 600,
            max_sample_age_seconds: 60
        })
    );
    assert_eq!(placement_for(&j, rec, None).spec.usage_recording, None);
    let mut serving = j.clone();
    serving.spec.serving = Some(Box::new(gpufed_crds::ServingSpec {
        port: 8080,
        readiness_path: "/".into(),
        settlement_period: gpufed_crds::KubeDuration::from_secs(3600),
    }));
    assert_eq!(
        placement_for(&serving, rec, Some(&usage))
            .spec
            .usage_recording,
        None
    );
}

#[test]
fn a_finished_job_is_at_rest_only_once_every_attempts_money_is() {
    let settled = |state| {
        Some(Box::new(gpufed_crds::Settlement {
            state,
            job_id: "0x01".into(),
            ..Default::default()
        }))
    };
    let mut j = placed(2, "beta", AttemptPhase::Succeeded);
    assert!(!at_rest(j.status.as_ref().unwrap()), "not finished yet");
    let st = j.status.as_mut().unwrap();
    st.phase = JobPhase::Succeeded;
    assert!(at_rest(st), "finished, nothing on chain");
    st.attempts[0].settlement = settled(SettlementState::Closed);
    st.attempts[1].settlement = settled(SettlementState::Settling);
    assert!(!at_rest(st), "a settlement transaction is in flight");
    for busy in [
        SettlementState::Unfunded,
        SettlementState::Locking,
        SettlementState::Locked,
    ] {
        st.attempts[1].settlement = settled(busy);
        assert!(!at_rest(st), "{busy:?} is not at rest");
    }
    for done in [
        SettlementState::Settled,
        SettlementState::Expired,
        SettlementState::Closed,
    ] {
        st.attempts[1].settlement = settled(done);
        assert!(at_rest(st), "{done:?} is at rest");
    }
}

/// A job whose second attempt succeeded on alpha (the first lost) and was paid: at rest.
fn paid_job(running: &ComputeJob) -> ComputeJob {
    let mut j = running.clone();
    j.metadata.namespace = Some("team-a".into());
    j.metadata.generation = Some(1);
    j.metadata.finalizers = Some(vec![crate::hub::job_controller::FINALIZER.into()]);
    let mut st = reconcile(&j, &world_ready(Some(Some(succeeded()))), &at(51)).status;
    st.payer = Some(
        "0x00000000000000000000000000000000000000aa"
            .parse()
            .unwrap(),
    );
    st.attempts[1].settlement = Some(Box::new(gpufed_crds::Settlement {
        state: SettlementState::Settled,
        job_id: "0x01".into(),
        paid: Some("0.08".parse().unwrap()),
        ..Default::default()
    }));
    st.attempts[0].message = Some("the member stopped heartbeating".into());
    j.status = Some(st);
    j
}

#[test]
fn a_job_at_rest_is_cached_trimmed_and_every_reader_of_finished_jobs_sees_the_same() {
    use crate::hub::{at_rest_in_cache, slim_job};
    use std::sync::Arc;
    let running = placed(2, "alpha", AttemptPhase::Running);
    let j = paid_job(&running);
    assert!(at_rest(j.status.as_ref().unwrap()));
    assert!(at_rest_in_cache(&j));

    let mut cached = j.clone();
    slim_job(&mut cached);
    assert!(
        at_rest_in_cache(&cached),
        "the trimmed copy still reads as at rest"
    );
    let st = cached.status.as_ref().unwrap();
    assert!(st.conditions.is_empty() && st.explanation.is_none() && st.placement.is_none());
    assert!(
        st.attempts
            .iter()
            .all(|a| a.message.is_none() && a.planned_nodes.is_empty())
    );
    assert_eq!(
        st.observed_generation,
        Some(1),
        "an edit is still told apart"
    );
    // Without its conditions it is still no job for the scheduling loop (which takes a job with
    // the finalizer and no `Admitted` condition for a new one).
    assert!(!crate::hub::scheduling::is_queued(&cached));
    // The job store keeps it no longer (ADR 0041), unless it was edited since the hub observed it
    // or is being deleted: then the controller still has work on it.
    use crate::hub::keep_job;
    assert!(!keep_job(&cached) && keep_job(&running));
    let mut edited = cached.clone();
    edited.metadata.generation = Some(2);
    assert!(keep_job(&edited), "edited");
    let mut deleting = cached.clone();
    deleting.metadata.deletion_timestamp = Some(at(120));
    assert!(keep_job(&deleting), "being deleted");

    // Quotas, the quota ledger, reputation, compensation and a leaving member's count read the
    // same from the trimmed copy, and from the record the hub keeps of the job once its store
    // drops it (ADR 0041).
    use crate::hub::at_rest::{JobAtRest, JobRef, cached as refs};
    let mut with_uid = cached.clone();
    with_uid.metadata.uid = Some("uid-1".into());
    let record = JobAtRest::of(&with_uid).unwrap();
    let period = |j: JobRef<'_>| crate::hub::period_usage::job_usage(j, 60, true);
    assert_eq!(period(JobRef::Cached(&j)), period(JobRef::Cached(&cached)));
    assert_eq!(period(JobRef::Cached(&j)), period(JobRef::AtRest(&record)));
    let retired = |j: &ComputeJob| crate::hub::period_usage::retired_usage(j, 60, true);
    assert_eq!(retired(&j), retired(&cached));
    let starts: std::collections::HashMap<String, i64> =
        [("alpha".to_string(), 0), ("old1".to_string(), 0)].into();
    let (whole, trimmed) = (vec![Arc::new(j.clone())], vec![Arc::new(cached.clone())]);
    let tally = |jobs: Vec<JobRef<'_>>| crate::hub::reputation::tally(jobs, &starts);
    assert_eq!(
        tally(refs(&whole).collect()),
        tally(refs(&trimmed).collect())
    );
    assert_eq!(
        tally(refs(&whole).collect()),
        tally(vec![JobRef::AtRest(&record)])
    );
    let provider: gpufed_crds::EvmAddress = "0x00000000000000000000000000000000000000bb"
        .parse()
        .unwrap();
    let harmed = |jobs: Vec<JobRef<'_>>| {
        crate::hub::slashing::harmed(jobs, "alpha", &provider, None, &at(100))
    };
    assert_eq!(
        harmed(refs(&whole).collect()),
        harmed(refs(&trimmed).collect())
    );
    assert_eq!(
        harmed(refs(&whole).collect()),
        harmed(vec![JobRef::AtRest(&record)])
    );
    assert!(
        !harmed(refs(&whole).collect()).is_empty(),
        "the paid attempt is counted"
    );
    let on = |jobs: &[Arc<ComputeJob>]| crate::hub::member_controller::attempts_on(jobs, "alpha");
    assert_eq!(on(&whole), on(&trimmed));

    // Kept whole: a job whose money is in flight, one with a result check, the hub's challenges.
    let mut busy = j.clone();
    busy.status.as_mut().unwrap().attempts[1]
        .settlement
        .as_mut()
        .unwrap()
        .state = SettlementState::Settling;
    let mut checked = j.clone();
    checked.spec.result_check = Some(Default::default());
    let mut challenge = j.clone();
    challenge.metadata.namespace = Some(gpufed_crds::naming::HUB_JOBS_NAMESPACE.into());
    for (what, whole) in [
        ("busy", busy),
        ("checked", checked),
        ("challenge", challenge),
    ] {
        assert!(!at_rest_in_cache(&whole), "{what}");
        let mut copy = whole.clone();
        slim_job(&mut copy);
        assert_eq!(
            copy.status.as_ref().unwrap().conditions,
            whole.status.as_ref().unwrap().conditions,
            "{what}"
        );
    }
    // Neither a job in progress.
    let mut copy = running.clone();
    slim_job(&mut copy);
    assert_eq!(copy, running);
}

#[test]
fn a_job_at_rest_is_marked_in_the_uid_index_once_and_its_placements_leave_the_cache() {
    use crate::hub::context::JobUids;
    use crate::hub::keep_placement;
    let mut running = placed(2, "alpha", AttemptPhase::Running);
    running.metadata.namespace = Some("team-a".into());
    running.metadata.uid = Some("uid-1".into());
    let rec = &running.status.as_ref().unwrap().attempts[1];
    let p = placement_for(&running, rec, None);
    assert_eq!(p.spec.job.uid, "uid-1");
    let (store, mut writer) = kube::runtime::reflector::store::<ComputeJob>();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(running.clone()));
    let uids = JobUids::default();
    assert!(!uids.insert(&running), "in progress: not at rest");
    assert!(!uids.insert(&running));
    assert!(uids.get("uid-1", &store).is_some() && keep_placement(&p, &uids));

    let rest = paid_job(&running);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(rest.clone()));
    assert!(
        uids.insert(&rest),
        "the first event that shows it at rest says so"
    );
    assert!(!uids.insert(&rest), "once");
    let mut trimmed = rest.clone();
    crate::hub::slim_job(&mut trimmed);
    assert!(!uids.insert(&trimmed), "nor again for its trimmed copy");
    assert!(uids.at_rest("uid-1") && !keep_placement(&p, &uids));
    assert!(
        uids.get("uid-1", &store).is_none(),
        "its Placements map to nothing"
    );
    assert_eq!(uids.len(), 1);
    // Its record (ADR 0041) is what readers of every job find once the store drops it.
    let records = uids.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        *records[0],
        crate::hub::at_rest::JobAtRest::of(&trimmed).unwrap()
    );
    // A full list of the jobs that shows the job keeps its record; one that does not drops it
    // (the job was deleted while the watch was down: no delete event comes).
    uids.listed(false);
    assert!(!uids.insert(&trimmed));
    uids.listed(true);
    assert_eq!(uids.records_len(), 1);
    uids.listed(false);
    uids.listed(true);
    assert_eq!(uids.records_len(), 0);
    assert!(!uids.at_rest("uid-1"));
    assert!(uids.insert(&rest), "recorded at rest again");
    // Another job's Placement is kept; once the job is deleted, so would its own be.
    let mut other = p.clone();
    other.spec.job.uid = "uid-2".into();
    assert!(keep_placement(&other, &uids));
    uids.remove(&rest);
    assert!(!uids.at_rest("uid-1") && uids.is_empty());
}
