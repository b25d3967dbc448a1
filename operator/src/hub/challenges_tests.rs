#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gpu_probe::challenge::run::{Misbehaviour, run_cpu};
use gpu_probe::challenge::{Challenge, GpuAnswer};
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::testing::{attempt, member, pool};
use gpufed_crds::{
    AttemptPhase, ChainSpec, ContainerExit, EvmAddress, Inventory, JobPhase, MemberClusterStatus,
    NodeInventory, PayerBinding, PlannedNode, SecretKeyRef,
};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn node(name: &str, model: &str, gpus: u32) -> NodeInventory {
    NodeInventory {
        name: name.into(),
        model: model.into(),
        gpu_memory_mib: 23_034,
        allocatable_gpus: gpus,
        free_gpus: gpus,
        ready: true,
        ..Default::default()
    }
}

fn inventory(nodes: Vec<NodeInventory>) -> Inventory {
    Inventory {
        update_time: None,
        nodes,
    }
}

fn spec(required: bool) -> Verification {
    serde_json::from_value(serde_json::json!({
        "required": required, "image": "probe:1", "backend": "Cpu", "matrixSize": 16,
        "deadline": "60s", "every": "10m"
    }))
    .unwrap()
}

fn verifying_pool(required: bool) -> GpuPool {
    let mut p = pool("default");
    p.spec.verification = Some(spec(required));
    p
}

fn with_inventory(nodes: Vec<NodeInventory>) -> MemberCluster {
    let mut m = member("metal", "L4", "0.80").build();
    m.status = Some(MemberClusterStatus {
        inventory: Some(inventory(nodes)),
        ..Default::default()
    });
    m
}

fn verdict(v: VerificationVerdict, fingerprint: &str) -> MemberVerification {
    MemberVerification {
        verdict: v,
        reason: "WrongResult".into(),
        message: "GPU CPU-0 row group 3: digest 00 does not match the product (11)".into(),
        time: at(0),
        challenge: "j-1".into(),
        evidence_sha256: "ab".into(),
        evidence: "evidence-j-1".into(),
        inventory: fingerprint.into(),
        gpus: 2,
        model: "L4".into(),
        answer_seconds: Some(3),
        last_passed_time: None,
    }
}

/// The challenge job for `metal`'s 2 L4s, placed at `at(10)`, in `phase` with `answer`.
fn challenge_at(phase: JobPhase, answer: Option<String>) -> (ComputeJob, Challenge) {
    let target = Target {
        model: "L4".into(),
        gpus: 2,
    };
    let nonce = [7u8; 32];
    let mut job = challenge_job(
        &verifying_pool(true),
        "metal",
        &target,
        "j-0a1b2c",
        nonce,
        "f00d",
        Trigger::Join,
    )
    .unwrap();
    job.metadata.uid = Some("uid-1".into());
    let mut a = attempt(1, "metal", AttemptPhase::Succeeded);
    a.placed_time = Some(at(10));
    a.planned_nodes = vec![PlannedNode {
        node: "n1".into(),
        replicas: 1,
    }];
    a.exits = vec![ContainerExit {
        replica: 0,
        container: "main".into(),
        exit_code: 0,
        reason: None,
        message: answer,
        started_at: None,
        finished_at: None,
    }];
    job.status = Some(gpufed_crds::ComputeJobStatus {
        phase,
        attempt: 1,
        attempts: vec![a],
        ..Default::default()
    });
    let challenge = Challenge {
        id: "j-0a1b2c".into(),
        nonce,
        n: 16,
    };
    (job, challenge)
}

/// The member's inventory as the CPU backend's answer names its GPUs: node `n1`, where
/// [`challenge_at`] plans the challenge, reports `CPU-0`… `CPU-3`.
fn answering() -> Inventory {
    let mut n1 = node("n1", "L4", 4);
    n1.gpu_uuids = (0..4).map(|i| format!("CPU-{i}")).collect();
    inventory(vec![n1, node("n2", "L4", 4)])
}

fn honest(challenge: &Challenge, devices: usize) -> String {
    serde_json::to_string(&run_cpu(challenge, devices, Misbehaviour::default())).unwrap()
}

#[test]
fn the_fingerprint_follows_what_a_member_claims_not_its_load() {
    let a = inventory(vec![node("n1", "L4", 4), node("n2", "H100", 8)]);
    let mut busy = a.clone();
    busy.nodes[0].free_gpus = 0;
    busy.nodes[1].utilization_percent = 97;
    busy.nodes.reverse();
    assert_eq!(inventory_fingerprint(&a), inventory_fingerprint(&busy));
    let mut more = a.clone();
    more.nodes[0].allocatable_gpus = 8;
    assert_ne!(inventory_fingerprint(&a), inventory_fingerprint(&more));
    let mut other = a.clone();
    other.nodes[1].model = "A100".into();
    assert_ne!(inventory_fingerprint(&a), inventory_fingerprint(&other));
}

#[test]
fn random_challenges_reach_every_ready_node_and_the_first_goes_to_the_largest() {
    let mut sick = node("n3", "H100", 16);
    sick.unhealthy_gpus = 16;
    let mut down = node("n4", "H100", 32);
    down.ready = false;
    let m = with_inventory(vec![node("n2", "H100", 8), node("n1", "L4", 4), sick, down]);
    let largest = Target {
        model: "H100".into(),
        gpus: 8,
    };
    let small = Target {
        model: "L4".into(),
        gpus: 4,
    };
    for trigger in [Trigger::Join, Trigger::InventoryChanged] {
        assert_eq!(target_for(&m, trigger, 0.0), Some(largest.clone()));
    }
    // Nodes by name: n1 (L4 ×4), n2 (H100 ×8); the sick and the down node never.
    assert_eq!(target_for(&m, Trigger::Random, 0.0), Some(small.clone()));
    assert_eq!(target_for(&m, Trigger::Random, 0.49), Some(small));
    assert_eq!(target_for(&m, Trigger::Random, 0.5), Some(largest.clone()));
    assert_eq!(
        target_for(&m, Trigger::Random, 0.999_999),
        Some(largest.clone())
    );
    assert_eq!(target_for(&m, Trigger::Random, 1.0), Some(largest));
    assert_eq!(
        target_for(&with_inventory(vec![]), Trigger::Random, 0.3),
        None
    );
}

#[test]
fn a_challenge_gets_every_healthy_gpu_of_the_largest_ready_node() {
    let mut sick = node("n3", "H100", 16);
    sick.unhealthy_gpus = 10;
    let mut down = node("n4", "H100", 32);
    down.ready = false;
    let m = with_inventory(vec![node("n1", "L4", 4), node("n2", "H100", 8), sick, down]);
    assert_eq!(
        target(&m),
        Some(Target {
            model: "H100".into(),
            gpus: 8
        })
    );
    assert_eq!(target(&with_inventory(vec![])), None);
    assert_eq!(target(&member("x", "L4", "1").build()), None);
}

#[test]
fn challenges_are_due_at_join_after_an_inventory_change_and_at_the_random_time() {
    let mut m = with_inventory(vec![node("n1", "L4", 4)]);
    let fp = inventory_fingerprint(m.status.as_ref().unwrap().inventory.as_ref().unwrap());
    assert_eq!(due(&m, &fp, None, &at(0)), Some(Trigger::Join));
    m.status.as_mut().unwrap().verification = Some(verdict(VerificationVerdict::Passed, &fp));
    assert_eq!(due(&m, &fp, None, &at(0)), None);
    assert_eq!(due(&m, &fp, Some(&at(5)), &at(4)), None);
    assert_eq!(due(&m, &fp, Some(&at(5)), &at(5)), Some(Trigger::Random));
    assert_eq!(
        due(&m, "another", Some(&at(5)), &at(0)),
        Some(Trigger::InventoryChanged)
    );
}

#[test]
fn the_random_time_falls_between_half_and_one_and_a_half_of_every() {
    let s = spec(false);
    let secs = |unit| {
        next_challenge(&s, &at(0), unit)
            .unwrap()
            .0
            .duration_since(at(0).0)
            .as_secs()
    };
    assert_eq!(secs(0.0), 300);
    assert_eq!(secs(0.5), 600);
    assert_eq!(secs(0.999_999), 899);
    let mut none = s.clone();
    none.every = None;
    assert_eq!(next_challenge(&none, &at(0), 0.5), None);
}

#[test]
fn only_a_pass_for_the_current_inventory_lets_tenant_jobs_in_a_pool_that_requires_it() {
    let mut m = with_inventory(vec![node("n1", "L4", 4)]);
    let fp = inventory_fingerprint(m.status.as_ref().unwrap().inventory.as_ref().unwrap());
    assert_eq!(
        verification_state(&verifying_pool(false), &m),
        VerificationState::NotRequired
    );
    assert_eq!(
        verification_state(&pool("default"), &m),
        VerificationState::NotRequired
    );
    let required = verifying_pool(true);
    assert_eq!(
        verification_state(&required, &m),
        VerificationState::Unverified {
            message:
                "no challenge answered yet; set spec.allowUnverified: true on the job to accept it"
                    .into()
        }
    );
    m.status.as_mut().unwrap().verification = Some(verdict(VerificationVerdict::Passed, &fp));
    assert_eq!(verification_state(&required, &m), VerificationState::Passed);
    // More GPUs than the challenge saw: not verified until the next challenge.
    m.status.as_mut().unwrap().inventory = Some(inventory(vec![node("n1", "L4", 8)]));
    let VerificationState::Unverified { message } = verification_state(&required, &m) else {
        panic!()
    };
    assert!(
        message.contains("inventory changed since challenge j-1"),
        "{message}"
    );
    m.status.as_mut().unwrap().inventory = Some(inventory(vec![node("n1", "L4", 4)]));
    m.status.as_mut().unwrap().verification = Some(verdict(VerificationVerdict::Failed, &fp));
    assert_eq!(
        verification_state(&required, &m),
        VerificationState::Failed {
            message: "challenge j-1: GPU CPU-0 row group 3: digest 00 does not match the \
                      product (11) (WrongResult)"
                .into()
        }
    );
}

#[test]
fn the_member_sees_a_challenge_as_an_ordinary_placement() {
    let (job, _) = challenge_at(JobPhase::Placed, None);
    assert_eq!(job.metadata.namespace.as_deref(), Some(HUB_JOBS_NAMESPACE));
    assert_eq!(verifies(&job), Some("metal"));
    assert!(is_hub_job(&job));
    let record = &job.status.as_ref().unwrap().attempts[0];
    // In a pool that checks usage both record telemetry alike.
    let usage = gpufed_crds::UsageCheck::default();
    let placement = crate::hub::lifecycle::placement_for(&job, record, Some(&usage));
    // A tenant job's Placement has the same label and annotation keys.
    let tenant = gpufed_crds::testing::job("train").build();
    let tenant_placement = crate::hub::lifecycle::placement_for(&tenant, record, Some(&usage));
    assert_eq!(
        placement.spec.usage_recording,
        tenant_placement.spec.usage_recording
    );
    assert!(placement.spec.usage_recording.is_some());
    let keys = |m: &Option<BTreeMap<String, String>>| {
        m.clone()
            .unwrap_or_default()
            .into_keys()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&placement.metadata.labels),
        keys(&tenant_placement.metadata.labels)
    );
    assert_eq!(
        keys(&placement.metadata.annotations),
        keys(&tenant_placement.metadata.annotations)
    );
    // Nothing but the program's own command line (its subcommand, and the id its answer is bound
    // to) names it a challenge: a recognisable program is what is left (ADR 0037).
    let mut seen = serde_json::to_value(&placement).unwrap();
    seen["spec"]["template"]["containers"][0]["command"] = serde_json::json!([]);
    let text = seen.to_string().to_lowercase();
    assert!(!text.contains("challenge"), "{text}");
    // Nor its namespace or name: the member sees the job's UID only (ADR 0037).
    assert!(!text.contains(HUB_JOBS_NAMESPACE), "{text}");
    assert!(
        !text.contains(&job.metadata.name.clone().unwrap()),
        "{text}"
    );
    assert!(!text.contains("verif"), "{text}");
    assert_eq!(placement.spec.chain_job_id, None);
    let cmd = &job.spec.template.containers[0].command;
    assert_eq!(&cmd[..4], &[PROBE_PATH, "challenge", "--backend", "cpu"]);
    assert_eq!(&cmd[cmd.len() - 2..], &["--cpu-devices", "2"]);
}

#[test]
fn a_challenge_is_never_charged_even_in_a_pool_with_a_chain_and_a_payer_for_its_namespace() {
    let mut p = verifying_pool(true);
    let addr: EvmAddress = "0x00000000000000000000000000000000000000aa"
        .parse()
        .unwrap();
    p.spec.chain = Some(ChainSpec {
        rpc_url: "http://127.0.0.1:8545".into(),
        chain_id: 31337,
        token: addr.clone(),
        escrow: addr.clone(),
        bond: None,
        hub_key_secret_ref: SecretKeyRef {
            namespace: "gpufed-system".into(),
            name: "k".into(),
            key: "k".into(),
        },
        lock_grace: gpufed_crds::KubeDuration::from_secs(60),
        tx_timeout: gpufed_crds::KubeDuration::from_secs(60),
        confirmations: 1,
        log_block_range: 100,
    });
    p.spec.payers = vec![PayerBinding {
        namespace: HUB_JOBS_NAMESPACE.into(),
        account: addr,
    }];
    let (job, _) = challenge_at(JobPhase::Pending, None);
    let world = crate::hub::lifecycle::admission_world(&job, Some(&p));
    assert!(!world.pool_has_chain);
    assert_eq!(world.payer, None);
    let hub = hub_pool(&p);
    assert!(hub.spec.chain.is_none() && hub.spec.payers.is_empty());
    assert!(hub.spec.verification.is_none());
}

#[test]
fn an_honest_answer_within_the_deadline_passes_with_evidence() {
    let (mut job, challenge) = challenge_at(JobPhase::Succeeded, None);
    let raw = honest(&challenge, 2);
    job.status.as_mut().unwrap().attempts[0].exits[0].message = Some(raw.clone());
    let j = judge(
        &job,
        &verifying_pool(true),
        Some(&answering()),
        &[1, 6],
        &at(40),
    )
    .unwrap();
    let e = &j.evidence;
    assert_eq!(e.verdict, VerificationVerdict::Passed, "{e:?}");
    assert_eq!(e.reason, "Verified");
    assert_eq!(e.answer_seconds, Some(30));
    assert_eq!(e.check.as_ref().unwrap().checked.len(), 4);
    assert_eq!(e.check.as_ref().unwrap().received, raw);
    assert_eq!(e.member, "metal");
    assert_eq!(e.inventory, "f00d");
    assert_eq!(e.sha256(), hex::encode(Sha256::digest(e.canonical())));
    let v = member_verification(&j, "j-0a1b2c", "evidence-j-0a1b2c", &at(40));
    assert_eq!(v.evidence_sha256, e.sha256());
    assert_eq!(v.verdict, VerificationVerdict::Passed);
}

#[test]
fn a_correct_answer_from_gpus_the_member_does_not_report_fails_unknown_gpu() {
    let (mut job, challenge) = challenge_at(JobPhase::Succeeded, None);
    job.status.as_mut().unwrap().attempts[0].exits[0].message = Some(honest(&challenge, 2));
    // gpu-probe reports other UUIDs on n1 (and the CPU backend's on n2, where it did not run).
    let mut n1 = node("n1", "L4", 2);
    n1.gpu_uuids = vec!["GPU-1111".into(), "GPU-2222".into()];
    let mut n2 = node("n2", "L4", 2);
    n2.gpu_uuids = vec!["CPU-0".into(), "CPU-1".into()];
    let inv = inventory(vec![n1, n2]);
    let e = judge(&job, &verifying_pool(true), Some(&inv), &[1, 6], &at(40))
        .unwrap()
        .evidence;
    assert_eq!(e.verdict, VerificationVerdict::Failed, "{e:?}");
    assert_eq!(e.reason, "UnknownGpu");
    assert!(e.message.contains("CPU-0, CPU-1"), "{}", e.message);
    assert!(e.message.contains("node n1"), "{}", e.message);
    assert_eq!(e.node.as_deref(), Some("n1"));
    assert_eq!(e.reported_gpus, vec!["GPU-1111", "GPU-2222"]);
    assert!(e.check.is_some(), "the answer is kept as evidence");
    let canonical = String::from_utf8(e.canonical()).unwrap();
    assert!(
        canonical.contains("\"reportedGpus\":[\"GPU-1111\""),
        "{canonical}"
    );
    // A member whose inventory names no UUIDs cannot pass either, but is not proven to cheat.
    let e = judge(&job, &verifying_pool(true), None, &[1, 6], &at(40))
        .unwrap()
        .evidence;
    assert_eq!(e.verdict, VerificationVerdict::Failed);
    assert_eq!(e.reason, "UnreportedGpus");
}

#[test]
fn wrong_short_duplicated_replayed_and_malformed_answers_fail_with_their_reason() {
    let p = verifying_pool(true);
    let (job, challenge) = challenge_at(JobPhase::Succeeded, None);
    let judge_raw = |raw: String| {
        let mut j = job.clone();
        j.status.as_mut().unwrap().attempts[0].exits[0].message = Some(raw);
        let out = judge(&j, &p, Some(&answering()), &[0, 7], &at(20))
            .unwrap()
            .evidence;
        assert_eq!(out.verdict, VerificationVerdict::Failed);
        (out.reason.clone(), out.message.clone())
    };
    let wrong = serde_json::to_string(&run_cpu(
        &challenge,
        2,
        Misbehaviour {
            wrong: true,
            ..Default::default()
        },
    ))
    .unwrap();
    let (reason, message) = judge_raw(wrong);
    assert_eq!(reason, "WrongResult");
    assert!(message.contains("does not match the product"), "{message}");
    assert_eq!(judge_raw(honest(&challenge, 1)).0, "TooFewGpus");
    let mut twice = run_cpu(&challenge, 2, Misbehaviour::default());
    twice.gpus[1] = twice.gpus[0].clone();
    assert_eq!(
        judge_raw(serde_json::to_string(&twice).unwrap()).0,
        "DuplicateGpu"
    );
    let other = Challenge {
        id: "j-other".into(),
        ..challenge.clone()
    };
    let (reason, message) = judge_raw(honest(&other, 2));
    assert_eq!(reason, "WrongChallenge");
    assert!(message.contains("replayed"), "{message}");
    assert_eq!(judge_raw("{not json".into()).0, "Malformed");
    assert_eq!(judge_raw("x".repeat(5000)).0, "Oversize");
    // A member's own clock says 10 minutes per GPU: beyond the CPU profile's band.
    let mut slow = run_cpu(&challenge, 2, Misbehaviour::default());
    slow.gpus[0] = GpuAnswer {
        ms: 600_000,
        ..slow.gpus[0].clone()
    };
    assert_eq!(
        judge_raw(serde_json::to_string(&slow).unwrap()).0,
        "TooSlow"
    );
}

#[test]
fn the_hub_clock_decides_the_deadline_and_silence_fails_too() {
    let p = verifying_pool(true);
    let (mut job, challenge) = challenge_at(JobPhase::Succeeded, None);
    job.status.as_mut().unwrap().attempts[0].exits[0].message = Some(honest(&challenge, 2));
    // Placed at 10, deadline 60s: an answer seen at 71 is late, however fast it says it was.
    let late = judge(&job, &p, Some(&answering()), &[0, 1], &at(71))
        .unwrap()
        .evidence;
    assert_eq!(late.reason, "DeadlineExceeded");
    assert_eq!(late.answer_seconds, Some(61));
    assert!(late.check.is_some(), "the late answer is kept as evidence");
    assert_eq!(
        judge(&job, &p, Some(&answering()), &[0, 1], &at(70))
            .unwrap()
            .evidence
            .reason,
        "Verified"
    );

    let (running, _) = challenge_at(JobPhase::Running, None);
    assert_eq!(
        judge(&running, &p, Some(&answering()), &[0], &at(30)),
        None,
        "still within its deadline"
    );
    let silent = judge(&running, &p, Some(&answering()), &[0], &at(80))
        .unwrap()
        .evidence;
    assert_eq!(silent.reason, "DeadlineExceeded");
    assert!(
        silent.message.contains("no answer 60s after"),
        "{}",
        silent.message
    );

    let (mut failed, _) = challenge_at(JobPhase::Failed, None);
    failed.status.as_mut().unwrap().attempts[0].message = Some("exit code 1".into());
    let e = judge(&failed, &p, Some(&answering()), &[0], &at(20))
        .unwrap()
        .evidence;
    assert_eq!(e.reason, "NoAnswer");
    assert!(e.message.contains("exit code 1"), "{}", e.message);

    // Not placed yet (the member is full): no deadline runs.
    let (mut pending, _) = challenge_at(JobPhase::Pending, None);
    pending.status.as_mut().unwrap().attempts.clear();
    assert_eq!(
        judge(&pending, &p, Some(&answering()), &[0], &at(10_000)),
        None
    );
}

#[test]
fn challenges_whose_member_or_pool_verification_is_gone_are_orphans() {
    let (job, _) = challenge_at(JobPhase::Pending, None);
    let jobs = vec![Arc::new(job.clone())];
    let m = Arc::new(with_inventory(vec![node("n1", "L4", 2)]));
    let verifying = Arc::new(verifying_pool(true));
    assert!(
        orphans(
            &jobs,
            std::slice::from_ref(&m),
            std::slice::from_ref(&verifying)
        )
        .is_empty()
    );
    assert_eq!(
        orphans(&jobs, &[], std::slice::from_ref(&verifying)),
        vec!["j-0a1b2c"]
    );
    assert_eq!(
        orphans(
            &jobs,
            std::slice::from_ref(&m),
            &[Arc::new(pool("default"))]
        ),
        vec!["j-0a1b2c"]
    );
    let mut moved = with_inventory(vec![]);
    moved.spec.pool = "other".into();
    assert_eq!(
        orphans(&jobs, &[Arc::new(moved)], std::slice::from_ref(&verifying)),
        vec!["j-0a1b2c"]
    );
    // Tenant jobs are never touched.
    let tenant = Arc::new(gpufed_crds::testing::job("train").build());
    assert!(orphans(&[tenant], &[], &[]).is_empty());
}

#[test]
fn the_loop_leaves_a_member_alone_until_its_caches_show_its_own_last_write() {
    let (job, _) = challenge_at(JobPhase::Running, None);
    let jobs = vec![Arc::new(job)];
    let fresh = with_inventory(vec![node("n1", "L4", 2)]);
    let soon = Duration::from_secs(1);
    // A challenge it created: not yet in the job cache, then there.
    let sent = Written::Sent("j-0a1b2c".into());
    assert!(!caught_up(&sent, soon, &fresh, &[]));
    assert!(caught_up(&sent, soon, &fresh, &jobs));
    // A verdict it recorded: the cached member has no verdict yet (it would look due a Join
    // challenge), then has it; a verdict on another challenge is not this one.
    let judged = Written::Judged("j-1".into());
    assert!(!caught_up(&judged, soon, &fresh, &jobs));
    let mut seen = fresh.clone();
    seen.status.as_mut().unwrap().verification = Some(verdict(VerificationVerdict::Passed, "f"));
    assert!(caught_up(&judged, soon, &seen, &jobs));
    assert!(!caught_up(
        &Written::Judged("j-2".into()),
        soon,
        &seen,
        &jobs
    ));
    // Never for longer than the grace: a write that never shows does not stop the loop.
    assert!(caught_up(&sent, CACHE_GRACE, &fresh, &[]));
}

#[test]
fn an_unplaced_challenge_is_abandoned_once_past_the_placement_deadline_and_never_slashes() {
    let (mut job, _) = challenge_at(JobPhase::Pending, None);
    job.metadata.creation_timestamp = Some(at(0));
    // Placed: the placement deadline no longer applies, whatever the time.
    assert_eq!(abandoned(&job, &at(100_000), 60), None);
    // Never placed: within the bound it waits, past it it is abandoned, naming member and bound.
    if let Some(st) = job.status.as_mut() {
        st.attempts.clear();
    }
    assert_eq!(abandoned(&job, &at(60), 60), None);
    let why = abandoned(&job, &at(61), 60).unwrap();
    assert!(
        why.contains("metal") && why.contains("placement deadline 60s"),
        "{why}"
    );
    // An attempt that was tried but not placed still counts as unplaced.
    let mut a = attempt(1, "metal", AttemptPhase::Failed);
    a.placed_time = None;
    job.status.as_mut().unwrap().attempts = vec![a];
    assert!(abandoned(&job, &at(61), 60).is_some());
    // Abandoning writes no verdict, so no slashing reason can ever name it.
    assert!(
        !crate::hub::slashing::SLASHING_REASONS
            .iter()
            .any(|r| why.contains(r))
    );
}

#[test]
fn after_abandoning_a_challenge_the_loop_waits_until_its_cache_shows_it_gone() {
    let (mut job, _) = challenge_at(JobPhase::Pending, None);
    job.metadata.name = Some("j-gone".into());
    let m = with_inventory(vec![node("n1", "L4", 2)]);
    let written = Written::Abandoned("j-gone".into());
    let still = vec![Arc::new(job.clone())];
    assert!(!caught_up(&written, Duration::from_secs(1), &m, &still));
    job.metadata.deletion_timestamp = Some(at(5));
    assert!(caught_up(
        &written,
        Duration::from_secs(1),
        &m,
        &[Arc::new(job)]
    ));
    assert!(caught_up(&written, Duration::from_secs(1), &m, &[]));
}

#[test]
fn a_waiting_challenge_holds_what_is_free_on_the_node_it_needs_and_nothing_else() {
    let pool = verifying_pool(true);
    let busy = |name: &str, model: &str, gpus: u32, free: u32| {
        let mut n = node(name, model, gpus);
        n.free_gpus = free;
        n
    };
    // The challenge wants all 8 GPUs of an H100 node; n2 has 5 free, n3 has 3, the L4 node and
    // the 4-GPU H100 node can never take it.
    let m = with_inventory(vec![
        busy("n1", "L4", 8, 8),
        busy("n2", "H100", 8, 5),
        busy("n3", "H100", 8, 3),
        busy("n4", "H100", 4, 4),
    ]);
    let target = Target {
        model: "H100".into(),
        gpus: 8,
    };
    let job = challenge_job(&pool, "metal", &target, "j-1", [1; 32], "f", Trigger::Join).unwrap();
    let cluster = crate::hub::snapshot::cluster_state(&hub_pool(&pool), &m, None);
    let r = |cluster: &str, node: &str, gpus| gpufed_scheduler::Reservation {
        cluster: cluster.into(),
        node: node.into(),
        gpus,
    };
    assert_eq!(hold(&job, &cluster, &[]), Some(r("metal", "n2", 5)));
    // What is already promised is not held twice: n2 has 1 left, so n3's 3 are held.
    assert_eq!(
        hold(&job, &cluster, &[r("metal", "n2", 4)]),
        Some(r("metal", "n3", 3))
    );
    // Nothing free on a node that could take it: nothing to hold.
    let full = with_inventory(vec![busy("n2", "H100", 8, 0), busy("n1", "L4", 8, 8)]);
    let cluster = crate::hub::snapshot::cluster_state(&hub_pool(&pool), &full, None);
    assert_eq!(hold(&job, &cluster, &[]), None);
}
