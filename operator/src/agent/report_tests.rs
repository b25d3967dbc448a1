use super::*;
use crate::agent::cached::ContainerStatus;
use crate::agent::fixtures::{at, condition, local_job, placement, pod};
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PodCondition};

fn job_with(p: &gpufed_crds::Placement, status: JobStatus) -> Job {
    local_job(p, status)
}

#[test]
fn a_job_whose_pods_have_not_started_is_accepted() {
    let p = placement("t", 1).replicas(2).build();
    let job = job_with(&p, JobStatus::default());
    let pending = pod("a", None, None);
    let st = observe(&p.spec, &job, &[&pending], None, &at(100));
    assert_eq!(st.phase, Some(PlacementPhase::Accepted));
    assert_eq!(st.local_job, job.metadata.name);
    assert_eq!(st.gpu_seconds, 0);
    assert_eq!(st.start_time, None);
}

#[test]
fn the_placement_runs_once_every_replica_has_started() {
    let p = placement("t", 1).replicas(2).gpus(4).build();
    let job = job_with(&p, JobStatus::default());
    let a = pod("a", Some(100), None);
    let b = pod("b", None, None);
    let st = observe(&p.spec, &job, &[&a, &b], None, &at(110));
    assert_eq!(
        st.phase,
        Some(PlacementPhase::Accepted),
        "one of two started"
    );
    assert_eq!(
        st.gpu_seconds, 0,
        "a gang is billed only once every replica has started"
    );
    let b = pod("b", Some(105), None);
    let st = observe(&p.spec, &job, &[&a, &b], None, &at(110));
    assert_eq!(st.phase, Some(PlacementPhase::Running));
    assert_eq!(st.active_replicas, 2);
    assert_eq!(st.start_time, Some(at(100)));
    assert_eq!(
        st.gpu_seconds,
        4 * (5 + 5),
        "both from 105, when the gang was whole"
    );
}

#[test]
fn a_complete_job_succeeds_with_its_completion_time_and_frozen_usage() {
    let p = placement("t", 1).gpus(2).build();
    let job = job_with(
        &p,
        JobStatus {
            succeeded: Some(1),
            completion_time: Some(at(160)),
            conditions: Some(vec![condition("Complete", "CompletionsReached", "", 160)]),
            ..Default::default()
        },
    );
    let done = pod("a", Some(100), Some((160, 0)));
    let st = observe(&p.spec, &job, &[&done], None, &at(500));
    assert_eq!(st.phase, Some(PlacementPhase::Succeeded));
    assert_eq!(st.finish_time, Some(at(160)));
    assert_eq!(st.succeeded_replicas, 1);
    assert_eq!(st.gpu_seconds, 120, "not counted up to now");
}

#[test]
fn a_job_past_its_deadline_fails_with_deadline_exceeded() {
    let p = placement("t", 1).build();
    let job = job_with(
        &p,
        JobStatus {
            conditions: Some(vec![condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                200,
            )]),
            ..Default::default()
        },
    );
    let st = observe(&p.spec, &job, &[], None, &at(300));
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        st.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    assert_eq!(st.finish_time, Some(at(200)));
}

#[test]
fn a_deadline_short_of_max_duration_is_a_lease_no_one_renewed() {
    let p = placement("t", 1).build();
    let mut job = job_with(
        &p,
        JobStatus {
            conditions: Some(vec![condition(
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                200,
            )]),
            ..Default::default()
        },
    );
    job.spec
        .get_or_insert_with(Default::default)
        .active_deadline_seconds = Some(20);
    let running = pod("t-0", Some(100), None);
    let st = observe(&p.spec, &job, &[&running], None, &at(300));
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some(LEASE_EXPIRED));
    assert!(st.message.unwrap().contains("stopped renewing"));
    assert_eq!(st.finish_time, Some(at(200)));
    assert_eq!(st.gpu_seconds, 100, "paid until the pods were stopped");
}

#[test]
fn a_failed_pod_explains_the_failure() {
    let p = placement("t", 1).build();
    let job = job_with(
        &p,
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                130,
            )]),
            ..Default::default()
        },
    );
    let failed = pod("t-0-abc", Some(100), Some((130, 3)));
    let st = observe(&p.spec, &job, &[&failed], None, &at(300));
    assert_eq!(st.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        st.message.as_deref(),
        Some(
            "Job has reached the specified backoff limit; pod t-0-abc: container main exited with code 3 (Error)"
        )
    );
    assert_eq!(st.gpu_seconds, 30);
}

fn with_index(mut p: Pod, index: u32, message: Option<&str>) -> Pod {
    p.metadata.annotations = Some(
        [(COMPLETION_INDEX.to_string(), index.to_string())]
            .into_iter()
            .collect(),
    );
    if let Some(m) = message {
        for cs in p
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .iter_mut()
            .flatten()
        {
            if let Some(t) = cs.state.as_mut().unwrap().terminated.as_mut() {
                t.message = Some(m.to_string());
            }
        }
    }
    p
}

#[test]
fn exits_list_failures_first_with_their_code_message_and_times() {
    let ok = with_index(pod("t-0", Some(100), Some((130, 0))), 0, None);
    let bad = with_index(
        pod("t-1", Some(101), Some((120, 3))),
        1,
        Some("  out of data\n"),
    );
    let running = with_index(pod("t-2", Some(102), None), 2, None);
    let ex = exits(&[&ok, &bad, &running]);
    assert_eq!(ex.len(), 2, "a running container has not exited");
    assert_eq!(
        (ex[0].replica, ex[0].exit_code, ex[0].message.as_deref()),
        (1, 3, Some("out of data"))
    );
    assert_eq!(ex[0].reason.as_deref(), Some("Error"));
    assert_eq!(ex[0].started_at, Some(at(101)));
    assert_eq!(ex[0].finished_at, Some(at(120)));
    assert_eq!(
        (ex[1].replica, ex[1].exit_code, ex[1].message.as_deref()),
        (0, 0, None)
    );
}

#[test]
fn exits_are_bounded_and_long_messages_cut_on_a_character_boundary() {
    let long = "é".repeat(3000);
    let pods: Vec<Pod> = (0..40)
        .map(|i| {
            with_index(
                pod(&format!("t-{i}"), Some(1), Some((2, 1))),
                i,
                Some(&long),
            )
        })
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let ex = exits(&refs);
    assert_eq!(ex.len(), gpufed_crds::placement::MAX_EXITS);
    assert_eq!(
        ex.iter().map(|e| e.replica).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    let first = ex[0].message.as_deref().unwrap();
    let limit = gpufed_crds::placement::MAX_FIRST_TERMINATION_MESSAGE;
    assert!(
        first.len() <= limit && first.len() >= limit - 2,
        "{}",
        first.len()
    );
    assert!(first.chars().all(|c| c == 'é'));
    for e in &ex[1..] {
        let m = e.message.as_deref().unwrap();
        assert!(m.len() <= gpufed_crds::placement::MAX_TERMINATION_MESSAGE && m.len() >= 254);
        assert!(m.chars().all(|c| c == 'é'));
    }
}

#[test]
fn the_status_carries_the_exits_of_a_finished_job() {
    let p = placement("t", 1).build();
    let job = job_with(
        &p,
        JobStatus {
            failed: Some(1),
            conditions: Some(vec![condition(
                "Failed",
                "BackoffLimitExceeded",
                "limit",
                130,
            )]),
            ..Default::default()
        },
    );
    let failed = with_index(pod("t-0-abc", Some(100), Some((130, 7))), 0, Some("bye"));
    let st = observe(&p.spec, &job, &[&failed], None, &at(300));
    assert_eq!(st.exits.len(), 1);
    assert_eq!(st.exits[0].exit_code, 7);
    assert_eq!(st.exits[0].message.as_deref(), Some("bye"));
}

#[test]
fn reported_gpu_seconds_and_start_never_go_back() {
    let p = placement("t", 1).build();
    let job = job_with(&p, JobStatus::default());
    let prev = PlacementStatus {
        gpu_seconds: 500,
        start_time: Some(at(50)),
        ..Default::default()
    };
    // The pod that ran is gone (deleted, garbage-collected); a new one just started.
    let fresh = pod("b", Some(100), None);
    let st = observe(&p.spec, &job, &[&fresh], Some(&prev), &at(110));
    assert_eq!(st.gpu_seconds, 500);
    assert_eq!(st.start_time, Some(at(50)));
}

#[test]
fn an_unschedulable_pod_is_explained_while_accepted() {
    let p = placement("t", 1).build();
    let job = job_with(&p, JobStatus::default());
    let mut stuck = pod("t-0", None, None);
    stuck.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
        ..Default::default()
    }]);
    let st = observe(&p.spec, &job, &[&stuck], None, &at(110));
    assert_eq!(st.phase, Some(PlacementPhase::Accepted));
    assert_eq!(st.reason.as_deref(), Some("Unschedulable"));
    assert!(st.message.unwrap().contains("Insufficient nvidia.com/gpu"));
}

#[test]
fn an_image_that_cannot_be_pulled_is_explained_while_accepted() {
    let mut stuck = pod("t-0", None, None);
    stuck.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "main".into(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image".into()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    assert_eq!(
        pod_waiting(&stuck),
        Some((
            "ImagePullBackOff".to_string(),
            "pod t-0: ImagePullBackOff: Back-off pulling image".to_string()
        ))
    );
    stuck
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state
        .as_mut()
        .unwrap()
        .waiting
        .as_mut()
        .unwrap()
        .reason = Some("ContainerCreating".into());
    assert_eq!(pod_waiting(&stuck), None, "starting is not stuck");
}

#[test]
fn an_ended_status_keeps_the_usage_reported_so_far() {
    let prev = PlacementStatus {
        phase: Some(PlacementPhase::Running),
        local_job: Some("gpufed-x-1".into()),
        gpu_seconds: 77,
        active_replicas: 2,
        start_time: Some(at(10)),
        ..Default::default()
    };
    let st = ended(
        Some(&prev),
        PlacementPhase::Failed,
        "Fenced",
        "lost the hub".into(),
        &at(99),
    );
    assert_eq!(st.phase, Some(PlacementPhase::Failed));
    assert_eq!(st.reason.as_deref(), Some("Fenced"));
    assert_eq!(st.gpu_seconds, 77);
    assert_eq!(st.active_replicas, 0);
    assert_eq!(st.finish_time, Some(at(99)));
    assert_eq!(st.start_time, Some(at(10)));
}

#[test]
fn a_new_phase_is_written_at_once_but_ticking_gpu_seconds_once_per_interval() {
    let refresh = Duration::from_secs(10);
    let written = PlacementStatus {
        phase: Some(PlacementPhase::Running),
        gpu_seconds: 10,
        last_update_time: Some(at(100)),
        ..Default::default()
    };
    let ticking = PlacementStatus {
        gpu_seconds: 15,
        last_update_time: None,
        ..written.clone()
    };
    assert!(needs_write(None, &ticking, &at(100), refresh));
    assert!(!needs_write(Some(&written), &ticking, &at(105), refresh));
    assert!(needs_write(Some(&written), &ticking, &at(110), refresh));
    let same = PlacementStatus {
        last_update_time: None,
        ..written.clone()
    };
    assert!(
        !needs_write(Some(&written), &same, &at(500), refresh),
        "nothing new, nothing written"
    );
    let done = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        ..ticking.clone()
    };
    assert!(needs_write(Some(&written), &done, &at(101), refresh));
}

#[test]
fn log_answers_on_the_status_never_make_the_sync_write_it() {
    let refresh = Duration::from_secs(10);
    let next = PlacementStatus {
        phase: Some(PlacementPhase::Running),
        gpu_seconds: 10,
        ..Default::default()
    };
    // What the cache shows: the sync's own status plus answers written by agent::logs.
    let cached = PlacementStatus {
        last_update_time: Some(at(100)),
        logs: vec![gpufed_crds::LogChunk {
            request: "u".into(),
            poll: 1,
            lines: "hello\n".into(),
            ..Default::default()
        }],
        ..next.clone()
    };
    assert!(!needs_write(Some(&cached), &next, &at(500), refresh));
}

#[test]
fn checkpoints_are_paced_to_the_members_rate_once_it_runs_many_jobs() {
    let base = Duration::from_secs(60);
    // Up to rate × base running jobs: the interval as set.
    assert_eq!(checkpoint_interval(base, 0, 20.0), base);
    assert_eq!(checkpoint_interval(base, 1_200, 20.0), base);
    // Beyond: every (running ÷ rate) seconds, so at most `rate` checkpoints a second.
    assert_eq!(
        checkpoint_interval(base, 10_000, 20.0),
        Duration::from_secs(500)
    );
    assert_eq!(
        checkpoint_interval(base, 3_000, 2.5),
        Duration::from_secs(1_200)
    );
    // 0 (or anything not a positive rate) is no limit.
    assert_eq!(checkpoint_interval(base, 10_000, 0.0), base);
    assert_eq!(checkpoint_interval(base, 10_000, f64::NAN), base);
    // A rate so small the interval overflows never panics.
    assert_eq!(checkpoint_interval(base, 10_000, 1e-300), Duration::MAX);
}

#[test]
fn a_paced_interval_holds_a_running_checkpoint_back_but_not_a_final_figure() {
    let refresh = checkpoint_interval(Duration::from_secs(60), 10_000, 20.0);
    let written = PlacementStatus {
        phase: Some(PlacementPhase::Running),
        gpu_seconds: 100,
        last_update_time: Some(at(100)),
        ..Default::default()
    };
    let ticking = PlacementStatus {
        gpu_seconds: 500,
        ..written.clone()
    };
    // 400 s later: due at the set 60 s, not yet at the paced 500 s.
    assert!(!needs_write(Some(&written), &ticking, &at(500), refresh));
    assert!(needs_write(Some(&written), &ticking, &at(600), refresh));
    let done = PlacementStatus {
        phase: Some(PlacementPhase::Succeeded),
        ..ticking
    };
    assert!(needs_write(Some(&written), &done, &at(101), refresh));
}
