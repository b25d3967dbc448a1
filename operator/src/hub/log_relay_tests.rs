use super::*;
use gpufed_crds::joblog::{JobLogSpec, LogChunk};
use gpufed_crds::testing::job;
use gpufed_crds::{AttemptPhase, ComputeJobStatus, JobPhase, PlacementRef, PlacementStatus};
use k8s_openapi::jiff::Timestamp;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn log(replica: u32, poll: u64) -> JobLog {
    let mut l = JobLog::new(
        "train-logs-x",
        JobLogSpec {
            job: "train".into(),
            replica,
            poll,
            ..Default::default()
        },
    );
    l.metadata.namespace = Some("team-a".into());
    l.metadata.uid = Some("log-uid".into());
    l
}

/// `train` (2 replicas) running attempt 1 on alpha.
fn running_job() -> ComputeJob {
    let mut j = job("train").replicas(2).build();
    j.status = Some(ComputeJobStatus {
        phase: JobPhase::Running,
        attempt: 1,
        placement: Some(Box::new(PlacementRef {
            cluster: "alpha".into(),
            namespace: "gpufed-member-alpha".into(),
            name: "train-1".into(),
            model: "L4".into(),
            price_per_gpu_hour: "1".parse().unwrap(),
        })),
        attempts: vec![gpufed_crds::testing::attempt(
            1,
            "alpha",
            AttemptPhase::Running,
        )],
        ..Default::default()
    });
    j
}

fn placement(annotations: &[(&str, &LogRequest)], answers: Vec<LogChunk>) -> Placement {
    let mut p = Placement::new(
        "train-1",
        serde_json::from_value(serde_json::json!({
            "job": {"uid": "u"}, "attempt": 1,
            "cluster": "alpha", "replicas": 2, "gpusPerReplica": 1, "totalGpus": 2,
            "model": "L4", "pricePerGpuHour": "1", "maxDuration": "1h",
            "template": {"containers": [{"name": "main", "image": "busybox"}]}
        }))
        .unwrap(),
    );
    p.metadata.namespace = Some("gpufed-member-alpha".into());
    p.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, r)| (k.to_string(), serde_json::to_string(r).unwrap()))
            .collect(),
    );
    p.status = Some(PlacementStatus {
        logs: answers,
        ..Default::default()
    });
    p
}

fn reason(d: &Decision) -> (Option<&str>, String) {
    let st = d.status.as_ref().unwrap();
    (st.reason.as_deref(), st.message.clone().unwrap_or_default())
}

#[test]
fn a_missing_job_is_answered_job_not_found() {
    let d = decide(&log(0, 1), None, None, &at(100));
    assert_eq!(d.request, None);
    assert_eq!(
        reason(&d),
        (
            Some(reasons::JOB_NOT_FOUND),
            "computejob \"train\" not found in namespace \"team-a\"".into()
        )
    );
    assert_eq!(d.status.unwrap().observed_poll, Some(1));
}

#[test]
fn a_replica_past_the_last_is_out_of_range_with_the_valid_range() {
    let d = decide(&log(2, 1), Some(&running_job()), None, &at(100));
    assert_eq!(
        reason(&d),
        (
            Some(reasons::REPLICA_OUT_OF_RANGE),
            "replica 2 is out of range: job \"train\" has 2 replicas (0 to 1)".into()
        )
    );
}

#[test]
fn a_job_never_placed_has_no_attempt_to_read() {
    let mut j = job("train").build();
    j.status = Some(ComputeJobStatus::default());
    let d = decide(&log(0, 1), Some(&j), None, &at(100));
    let (r, m) = reason(&d);
    assert_eq!(r, Some(reasons::NO_ATTEMPT));
    assert!(m.contains("has no attempt yet (phase Pending)"), "{m}");
}

#[test]
fn a_new_poll_is_passed_on_to_the_placement_and_the_time_recorded() {
    let stale = LogRequest {
        at: at(0).0.to_string(),
        ..Default::default()
    };
    let fresh = LogRequest {
        at: at(900).0.to_string(),
        ..Default::default()
    };
    let p = placement(
        &[
            ("log.gpufed.io/old-uid", &stale),
            ("log.gpufed.io/other-uid", &fresh),
        ],
        vec![],
    );
    let mut l = log(1, 3);
    l.spec.after = Some("2026-12-04T10:00:00Z".into());
    let now = at(1000);
    let d = decide(&l, Some(&running_job()), Some(&p), &now);
    let (ns, name, patch) = d.request.unwrap();
    assert_eq!(
        (ns.as_str(), name.as_str()),
        ("gpufed-member-alpha", "train-1")
    );
    let annotations = &patch["metadata"]["annotations"];
    let sent: LogRequest =
        serde_json::from_str(annotations["log.gpufed.io/log-uid"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        LogRequest {
            replica: 1,
            container: None,
            after: Some("2026-12-04T10:00:00Z".into()),
            poll: 3,
            at: now.0.to_string(),
        }
    );
    // A request not renewed for ten minutes is removed; a recent one of another reader stays.
    assert!(annotations["log.gpufed.io/old-uid"].is_null());
    assert!(annotations.get("log.gpufed.io/other-uid").is_none());
    let st = d.status.unwrap();
    assert_eq!((st.requested_poll, st.requested_time), (Some(3), Some(now)));
    assert_eq!(st.observed_poll, None);
}

#[test]
fn the_members_answer_to_this_poll_is_copied_into_the_status() {
    let req = LogRequest {
        poll: 2,
        at: at(99).0.to_string(),
        ..Default::default()
    };
    let answer = LogChunk {
        request: "log-uid".into(),
        poll: 2,
        lines: "hello\n".into(),
        cursor: Some("2026-12-04T10:00:00Z".into()),
        more: true,
        running: true,
        error: None,
    };
    // An answer to the previous poll does not count.
    let old = placement(
        &[("log.gpufed.io/log-uid", &req)],
        vec![LogChunk {
            poll: 1,
            ..answer.clone()
        }],
    );
    let d = decide(&log(0, 2), Some(&running_job()), Some(&old), &at(100));
    assert_eq!(d.request, None);
    assert_eq!(d.status.unwrap().observed_poll, None);

    let p = placement(&[("log.gpufed.io/log-uid", &req)], vec![answer]);
    let st = decide(&log(0, 2), Some(&running_job()), Some(&p), &at(100))
        .status
        .unwrap();
    assert_eq!(st.observed_poll, Some(2));
    assert_eq!(st.lines.as_deref(), Some("hello\n"));
    assert_eq!(st.cursor.as_deref(), Some("2026-12-04T10:00:00Z"));
    assert!(st.more && st.running);
    assert_eq!(
        (st.attempt, st.cluster.as_deref()),
        (Some(1), Some("alpha"))
    );
    assert_eq!(st.reason, None);
    // Answered: nothing more to do for this poll.
    let mut done = log(0, 2);
    done.status = Some(st);
    assert_eq!(
        decide(&done, Some(&running_job()), Some(&p), &at(101)),
        Decision::default()
    );
}

#[test]
fn a_member_that_does_not_answer_in_time_is_reported_not_responding() {
    let req = LogRequest {
        poll: 1,
        at: at(100).0.to_string(),
        ..Default::default()
    };
    let p = placement(&[("log.gpufed.io/log-uid", &req)], vec![]);
    let mut l = log(0, 1);
    l.status = Some(JobLogStatus {
        requested_poll: Some(1),
        requested_time: Some(at(100)),
        ..Default::default()
    });
    assert_eq!(
        decide(&l, Some(&running_job()), Some(&p), &at(110)),
        Decision::default()
    );
    let d = decide(&l, Some(&running_job()), Some(&p), &at(116));
    assert_eq!(
        reason(&d),
        (
            Some(reasons::MEMBER_NOT_RESPONDING),
            "member \"alpha\" did not answer within 15s: its agent may be down or cut off from the hub; try again later".into()
        )
    );
}

#[test]
fn the_last_attempts_placement_is_read_after_the_job_ended_and_a_gone_one_is_named() {
    let mut j = running_job();
    let st = j.status.as_mut().unwrap();
    st.placement = None;
    st.phase = JobPhase::Failed;
    let d = decide(&log(0, 1), Some(&j), None, &at(100));
    let (r, m) = reason(&d);
    assert_eq!(r, Some(reasons::PLACEMENT_GONE));
    assert!(m.contains("the Placement p1 of attempt 1 is gone"), "{m}");
    assert_eq!(
        attempt_placement(&j),
        Some(("gpufed-member-alpha".into(), "p1".into()))
    );
}
