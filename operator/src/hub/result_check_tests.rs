use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use gpufed_crds::testing::{attempt, job, member};
use gpufed_crds::{
    AttemptPhase, ContainerExit, EvmAddress, JobPhase, MemberCluster, OutputRecord, ResultCheck,
    StoredObject,
};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn wallet(i: u8) -> EvmAddress {
    EvmAddress::from_str(&format!("0x{:040x}", u32::from(i) + 1)).unwrap()
}

fn exit(replica: u32, container: &str, message: Option<&str>) -> ContainerExit {
    ContainerExit {
        replica,
        container: container.into(),
        exit_code: 0,
        reason: Some("Completed".into()),
        message: message.map(String::from),
        started_at: None,
        finished_at: None,
    }
}

/// `j` succeeded on `cluster` (paid into wallet `w`), its container writing `message`.
fn succeeded(mut j: ComputeJob, cluster: &str, w: u8, message: &str) -> ComputeJob {
    let st = j.status.get_or_insert_with(Default::default);
    st.phase = JobPhase::Succeeded;
    st.gpus = 1;
    st.attempts = vec![AttemptRecord {
        provider: Some(wallet(w)),
        exits: vec![
            exit(0, "main", Some(message)),
            exit(0, "gpufed-push-0", Some("{\"uploaded\":1}")),
        ],
        ..attempt(1, cluster, AttemptPhase::Succeeded)
    }];
    j
}

use gpufed_crds::AttemptRecord;

fn checked() -> ComputeJob {
    let mut j = job("train").build();
    j.spec.result_check = Some(ResultCheck {
        include_outputs: true,
    });
    j
}

fn members() -> Vec<Arc<MemberCluster>> {
    let m = |name: &str, w: u8| {
        let mut m = member(name, "H100", "1").build();
        m.spec.wallet = Some(wallet(w));
        Arc::new(m)
    };
    // beta and beta-2 belong to one provider.
    vec![m("alpha", 1), m("beta", 2), m("beta-2", 2), m("gamma", 3)]
}

/// The cache: jobs by name.
struct Cache(HashMap<String, Arc<ComputeJob>>);

impl Cache {
    fn new(jobs: &[&ComputeJob]) -> Self {
        Cache(
            jobs.iter()
                .map(|j| (j.name_any(), Arc::new((*j).clone())))
                .collect(),
        )
    }
    fn step(&self, j: &ComputeJob, now: i64) -> Step {
        next_step(j, &|n| self.0.get(n).cloned(), &members(), &at(now))
    }
}

fn with_uid(mut j: ComputeJob, uid: &str) -> ComputeJob {
    j.metadata.uid = Some(uid.into());
    j
}

/// Runs `j`'s check through its steps as the controller would, with the runs succeeding with the
/// given messages on the members the test names; returns the last step.
fn apply(j: &mut ComputeJob, step: &Step) {
    match step {
        Step::Write(st) => j.status.as_mut().unwrap().result_check = Some(Box::new(st.clone())),
        Step::Create { status, .. } => {
            let mut st = status.clone();
            st.runs.last_mut().unwrap().uid = format!("uid-{}", st.runs.last().unwrap().job);
            j.status.as_mut().unwrap().result_check = Some(Box::new(st));
        }
        Step::Verdict(v) => {
            j.status.as_mut().unwrap().result_check = Some(Box::new(v.status.clone()))
        }
        Step::Nothing => {}
    }
}

fn made(step: &Step) -> ComputeJob {
    let Step::Create { job, .. } = step else {
        panic!("expected a run to be made, got {step:?}");
    };
    let mut run = (**job).clone();
    run.metadata.uid = Some(format!("uid-{}", run.name_any()));
    run
}

#[test]
fn a_result_is_the_workload_messages_by_replica_without_the_data_helpers() {
    let mut j = succeeded(checked(), "beta", 2, "sha256:aa");
    j.status.as_mut().unwrap().attempts[0]
        .exits
        .insert(0, exit(1, "main", Some("sha256:bb")));
    let RunState::Succeeded(o) = run_state(&j, true) else {
        panic!()
    };
    assert_eq!(o.cluster, "beta");
    assert_eq!(
        o.result.messages,
        vec![
            ResultMessage {
                replica: 0,
                container: "main".into(),
                message: "sha256:aa".into()
            },
            ResultMessage {
                replica: 1,
                container: "main".into(),
                message: "sha256:bb".into()
            },
        ]
    );
    assert!(!o.result.is_empty());
    let mut silent = succeeded(checked(), "beta", 2, "");
    silent.status.as_mut().unwrap().attempts[0].exits[0].message = None;
    let RunState::Succeeded(o) = run_state(&silent, true) else {
        panic!()
    };
    assert!(o.result.is_empty(), "{o:?}");
}

#[test]
fn outputs_compare_by_key_below_each_runs_own_prefix() {
    let output: gpufed_crds::DataOutput = serde_json::from_value(serde_json::json!({
        "name": "model", "path": "/output", "endpoint": "https://s3.example",
        "bucket": "team-a-out", "prefix": "runs/42"
    }))
    .unwrap();
    let mut j = checked();
    j.spec.template.outputs = vec![output];
    let replica = run_job(&with_uid(j.clone(), "u"), RunRole::Replica, vec![]).unwrap();
    assert_eq!(
        replica.spec.template.outputs[0].prefix,
        "runs/42/gpufed-replica/"
    );
    let with_outputs = |mut j: ComputeJob, key: &str, sha: &str| {
        j = succeeded(j, "alpha", 1, "m");
        j.status.as_mut().unwrap().outputs = vec![OutputRecord {
            name: "model".into(),
            replica: 0,
            bucket: "team-a-out".into(),
            objects: vec![StoredObject {
                key: key.into(),
                size: 3,
                sha256: sha.into(),
            }],
            omitted: 0,
        }];
        j
    };
    let a = with_outputs(j.clone(), "runs/42/w.bin", "aa");
    let b = with_outputs(replica.clone(), "runs/42/gpufed-replica/w.bin", "aa");
    let c = with_outputs(replica, "runs/42/gpufed-replica/w.bin", "bb");
    let result = |j: &ComputeJob, outputs: bool| match run_state(j, outputs) {
        RunState::Succeeded(o) => o.result,
        other => panic!("{other:?}"),
    };
    assert_eq!(result(&a, true), result(&b, true));
    assert_eq!(result(&a, true).objects[0].key, "w.bin");
    assert_ne!(result(&a, true), result(&c, true));
    assert_eq!(
        result(&a, false),
        result(&c, false),
        "includeOutputs: false"
    );
}

#[test]
fn nothing_until_the_job_succeeds_and_no_check_without_a_result_or_success() {
    let cache = Cache::new(&[]);
    let mut j = with_uid(checked(), "u1");
    assert_eq!(cache.step(&j, 0), Step::Nothing);
    j.status = Some(gpufed_crds::ComputeJobStatus {
        phase: JobPhase::Running,
        ..Default::default()
    });
    assert_eq!(cache.step(&j, 0), Step::Nothing);
    j.status.as_mut().unwrap().phase = JobPhase::Failed;
    let Step::Write(st) = cache.step(&j, 0) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
    let mut silent = succeeded(with_uid(checked(), "u1"), "beta", 2, "");
    silent.status.as_mut().unwrap().attempts[0].exits[0].message = None;
    let Step::Write(st) = cache.step(&silent, 0) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
    assert!(
        st.message.unwrap().contains("/dev/termination-log"),
        "names the fix"
    );
    // A job without a check has none.
    let plain = succeeded(with_uid(job("plain").build(), "u2"), "beta", 2, "x");
    assert_eq!(cache.step(&plain, 0), Step::Nothing);
}

#[test]
fn agreeing_results_end_the_check_after_one_replica_on_another_provider() {
    let mut j = succeeded(with_uid(checked(), "u1"), "beta", 2, "sha256:aa");
    let step = Cache::new(&[]).step(&j, 0);
    let replica = made(&step);
    assert_eq!(replica.name_any(), "train-replica");
    assert_eq!(replica.namespace().as_deref(), Some("team-a"));
    assert_eq!(
        replica.spec.exclude_clusters,
        Some(vec!["beta".into(), "beta-2".into()]),
        "the member that ran it and every member paid into the same wallet"
    );
    assert!(replica.spec.result_check.is_none());
    assert_eq!(replica.labels()[LABEL_RESULT_CHECK_OF], "u1");
    assert_eq!(replica.owner_references()[0].uid, "u1");
    apply(&mut j, &step);
    let st = j.status.as_ref().unwrap().result_check.clone().unwrap();
    assert_eq!(st.phase, ResultCheckPhase::Replicating);
    assert_eq!(st.runs.len(), 2);
    // Running: nothing to do.
    let cache = Cache::new(&[&replica]);
    assert_eq!(cache.step(&j, 5), Step::Nothing);
    let done = succeeded(replica, "alpha", 1, "sha256:aa");
    let step = Cache::new(&[&done]).step(&j, 10);
    let Step::Write(st) = &step else {
        panic!("{step:?}")
    };
    assert_eq!(st.phase, ResultCheckPhase::Agreed);
    assert_eq!(st.runs[1].cluster.as_deref(), Some("alpha"));
    assert_eq!(st.runs[0].digest, st.runs[1].digest);
    let c = condition(st, Some(1), &at(10));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ResultsAgree")
    );
    apply(&mut j, &step);
    assert_eq!(Cache::new(&[&done]).step(&j, 20), Step::Nothing, "final");
}

/// The job on `first`, its replica on `second`, and the referee on `third`, each writing its
/// message; returns the verdict step.
fn dispute(first: (&str, u8, &str), second: (&str, u8, &str), third: (&str, u8, &str)) -> Verdict {
    let mut j = succeeded(with_uid(checked(), "u1"), first.0, first.1, first.2);
    let step = Cache::new(&[]).step(&j, 0);
    let replica = succeeded(made(&step), second.0, second.1, second.2);
    apply(&mut j, &step);
    let step = Cache::new(&[&replica]).step(&j, 10);
    let referee = made(&step);
    assert_eq!(referee.name_any(), "train-referee");
    let excluded = referee.spec.exclude_clusters.clone().unwrap();
    assert!(
        excluded.contains(&first.0.to_string()) && excluded.contains(&second.0.to_string()),
        "{excluded:?}"
    );
    apply(&mut j, &step);
    assert_eq!(
        j.status
            .as_ref()
            .unwrap()
            .result_check
            .as_ref()
            .unwrap()
            .phase,
        ResultCheckPhase::Refereeing
    );
    let referee = succeeded(referee, third.0, third.1, third.2);
    match Cache::new(&[&replica, &referee]).step(&j, 20) {
        Step::Verdict(v) => *v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_referee_that_agrees_with_the_replica_makes_the_jobs_member_the_loser() {
    let v = dispute(
        ("beta", 2, "bad"),
        ("alpha", 1, "good"),
        ("gamma", 3, "good"),
    );
    assert_eq!(v.status.phase, ResultCheckPhase::Resolved);
    assert_eq!(v.status.loser.as_deref(), Some("beta"));
    assert_eq!(v.loser.as_ref().unwrap().cluster, "beta");
    let c = condition(&v.status, None, &at(0));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ResultContradicted")
    );
    assert_eq!(v.evidence.runs.len(), 3);
    assert_eq!(v.evidence.loser.as_deref(), Some("beta"));
    assert_eq!(
        v.status.evidence_sha256.as_deref(),
        Some(v.evidence.sha256().as_str())
    );
    assert_eq!(v.status.evidence, Some(v.evidence.config_map_name()));
    assert_eq!(v.evidence.runs[0].result.messages[0].message, "bad");
    let mv = member_verdict(
        &succeeded(with_uid(checked(), "u1"), "beta", 2, "bad"),
        &v,
        v.loser.as_ref().unwrap(),
        "inv".into(),
        None,
        &at(20),
    );
    assert_eq!(mv.reason, WRONG_TENANT_RESULT);
    assert_eq!(mv.challenge, "team-a/train");
    assert_eq!(mv.evidence_sha256, v.evidence.sha256());
    assert!(crate::hub::slashing::slashes(&mv), "a lost dispute slashes");
}

#[test]
fn a_referee_that_agrees_with_the_job_makes_the_replicas_member_the_loser() {
    let v = dispute(
        ("alpha", 1, "good"),
        ("beta", 2, "bad"),
        ("gamma", 3, "good"),
    );
    assert_eq!(v.status.loser.as_deref(), Some("beta"));
    let c = condition(&v.status, None, &at(0));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ResultUpheld")
    );
}

#[test]
fn three_different_results_blame_nobody() {
    let v = dispute(("alpha", 1, "a"), ("beta", 2, "b"), ("gamma", 3, "c"));
    assert_eq!(v.status.phase, ResultCheckPhase::Inconclusive);
    assert!(v.loser.is_none() && v.status.loser.is_none());
    let c = condition(&v.status, None, &at(0));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ResultsDiffer")
    );
}

#[test]
fn a_run_deleted_or_replaced_by_another_job_of_its_name_gives_no_verdict() {
    let mut j = succeeded(with_uid(checked(), "u1"), "beta", 2, "x");
    let step = Cache::new(&[]).step(&j, 0);
    let replica = made(&step);
    apply(&mut j, &step);
    // Not in the cache yet: a watch may be late.
    assert_eq!(Cache::new(&[]).step(&j, 30), Step::Nothing);
    let Step::Write(st) = Cache::new(&[]).step(&j, 61) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
    assert!(st.message.unwrap().contains("deleted"));
    // The tenant deleted it and made its own of that name, which would run what it likes.
    let mut impostor = succeeded(replica, "gamma", 3, "x");
    impostor.metadata.uid = Some("other".into());
    let Step::Write(st) = Cache::new(&[&impostor]).step(&j, 61) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
}

#[test]
fn a_run_made_by_a_pass_that_died_is_adopted_and_a_foreign_one_refused() {
    let j = succeeded(with_uid(checked(), "u1"), "beta", 2, "x");
    let replica = made(&Cache::new(&[]).step(&j, 0));
    let Step::Write(st) = Cache::new(&[&replica]).step(&j, 1) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Replicating);
    assert_eq!(st.runs[1].uid, "uid-train-replica");
    // Same name, another template: not the check's run.
    let mut foreign = replica.clone();
    foreign.spec.template.containers[0].image = "evil:1".into();
    let Step::Write(st) = Cache::new(&[&foreign]).step(&j, 1) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
    assert!(st.message.unwrap().contains("is not this job's replica"));
    // Same spec but not owned by the job.
    let mut unowned = replica;
    unowned.metadata.owner_references = None;
    assert!(!is_run_of(&j, &unowned, RunRole::Replica, &["beta".into()]));
}

#[test]
fn a_run_on_a_member_that_ran_an_earlier_run_is_no_second_opinion() {
    let mut j = succeeded(with_uid(checked(), "u1"), "beta", 2, "x");
    let step = Cache::new(&[]).step(&j, 0);
    let replica = succeeded(made(&step), "beta", 2, "x");
    apply(&mut j, &step);
    let Step::Write(st) = Cache::new(&[&replica]).step(&j, 5) else {
        panic!()
    };
    assert_eq!(st.phase, ResultCheckPhase::Abandoned);
}

#[test]
fn run_names_fit_an_object_name() {
    assert_eq!(run_name("train", RunRole::Referee), "train-referee");
    let long = "a".repeat(250);
    let n = run_name(&long, RunRole::Replica);
    assert!(n.len() <= 253 && n.ends_with("-replica"), "{n}");
    assert_ne!(n, run_name(&"a".repeat(249), RunRole::Replica));
}

#[test]
fn the_cache_keeps_the_template_of_a_job_being_checked_and_of_its_runs() {
    let mut j = succeeded(with_uid(checked(), "u1"), "beta", 2, "x");
    assert!(needs_template(&j));
    let step = Cache::new(&[]).step(&j, 0);
    assert!(needs_template(&made(&step)), "a run");
    j.status.as_mut().unwrap().result_check = Some(Box::new(ResultCheckStatus {
        phase: ResultCheckPhase::Agreed,
        ..Default::default()
    }));
    assert!(!needs_template(&j), "the check is over");
    assert!(!needs_template(&job("plain").build()));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Walks a check to its end with the job, replica and referee reporting results drawn from a
    /// few values (so that agreement and every kind of disagreement occur), the runs on beta,
    /// alpha and gamma; returns the final status and the verdict's loser when a referee decided.
    fn walk(results: [u8; 3]) -> (ResultCheckStatus, Option<Option<Loser>>) {
        let msg = |i: usize| format!("sha256:{}", results[i]);
        let mut j = succeeded(with_uid(checked(), "u1"), "beta", 2, &msg(0));
        let step = Cache::new(&[]).step(&j, 0);
        let replica = succeeded(made(&step), "alpha", 1, &msg(1));
        apply(&mut j, &step);
        let step = Cache::new(&[&replica]).step(&j, 10);
        if let Step::Write(st) = &step {
            return (st.clone(), None);
        }
        let referee = succeeded(made(&step), "gamma", 3, &msg(2));
        apply(&mut j, &step);
        match Cache::new(&[&replica, &referee]).step(&j, 20) {
            Step::Verdict(v) => (v.status.clone(), Some(v.loser.clone())),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn the_majority_decides_and_nobody_else_is_ever_blamed(results in prop::array::uniform3(0u8..3)) {
            let (st, verdict) = walk(results);
            let [job, replica, referee] = results;
            if job == replica {
                prop_assert_eq!(st.phase, ResultCheckPhase::Agreed);
                prop_assert!(verdict.is_none() && st.loser.is_none());
                prop_assert_eq!(st.runs.len(), 2);
            } else {
                let loser = verdict.expect("a referee ran").map(|l| l.cluster);
                let want = if referee == job {
                    Some("alpha".to_string())
                } else if referee == replica {
                    Some("beta".to_string())
                } else {
                    None
                };
                prop_assert_eq!(&loser, &want);
                prop_assert_eq!(&st.loser, &want);
                prop_assert_eq!(st.phase, if want.is_some() {
                    ResultCheckPhase::Resolved
                } else {
                    ResultCheckPhase::Inconclusive
                });
                // The referee is never blamed, and a loser is always contradicted by two.
                prop_assert_ne!(st.loser.as_deref(), Some("gamma"));
                prop_assert_eq!(st.runs.len(), 3);
                prop_assert!(st.evidence_sha256.is_some());
            }
        }
    }
}
