#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use gpufed_crds::testing::{attempt, job, member};
use gpufed_crds::{
    AttemptPhase, ComputeJobStatus, MemberClusterStatus, MemberSlash, Settlement, SettlementState,
};
use k8s_openapi::jiff::Timestamp;

use super::*;
use std::sync::Arc;

use crate::hub::at_rest::{JobAtRest, JobRef, cached};
use gpufed_crds::ComputeJob;
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use kube::ResourceExt;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn addr(i: u8) -> EvmAddress {
    EvmAddress::from_str(&format!("0x{:040x}", u32::from(i) + 1)).unwrap()
}

fn tok(s: &str) -> TokenAmount {
    s.parse().unwrap()
}

fn verdict(v: VerificationVerdict, reason: &str, evidence: &str) -> MemberVerification {
    MemberVerification {
        verdict: v,
        reason: reason.into(),
        message: "m".into(),
        time: at(100),
        challenge: "j-1".into(),
        evidence_sha256: evidence.into(),
        evidence: format!("evidence-{evidence}"),
        inventory: "f00d".into(),
        gpus: 2,
        model: "L4".into(),
        answer_seconds: Some(3),
        last_passed_time: None,
    }
}

fn on_record(phase: SlashPhase, evidence: &str) -> MemberSlash {
    MemberSlash {
        phase,
        challenge: "j-0".into(),
        reason: "WrongResult".into(),
        evidence_sha256: evidence.into(),
        amount: Some(tok("5")),
        tenants: vec![],
        executable_at: Some(10),
        propose_tx: None,
        execute_tx: None,
        message: "m".into(),
        time: at(0),
    }
}

fn metal(v: Option<MemberVerification>, s: Option<MemberSlash>) -> MemberCluster {
    let mut m = member("metal", "L4", "1").build();
    m.status = Some(MemberClusterStatus {
        verification: v,
        reputation: None,
        outages: vec![],
        slash: s,
        ..Default::default()
    });
    m
}

#[test]
fn only_verdicts_that_prove_cheating_slash() {
    // An answer for GPUs the member does not report is cheating; a missing report is not proof.
    assert!(slashes(&verdict(
        VerificationVerdict::Failed,
        "UnknownGpu",
        "e"
    )));
    for r in SLASHING_REASONS {
        assert!(
            slashes(&verdict(VerificationVerdict::Failed, r, "e")),
            "{r}"
        );
    }
    for r in [
        "DeadlineExceeded",
        "NoAnswer",
        "Malformed",
        "Oversize",
        "UnsupportedVersion",
        "UnreportedGpus",
    ] {
        assert!(
            !slashes(&verdict(VerificationVerdict::Failed, r, "e")),
            "{r}"
        );
    }
    assert!(!slashes(&verdict(
        VerificationVerdict::Passed,
        "Verified",
        "e"
    )));
    // A Passed verdict with a slashing word (never written, but the verdict decides).
    assert!(!slashes(&verdict(
        VerificationVerdict::Passed,
        "WrongResult",
        "e"
    )));
}

#[test]
fn a_failed_verdict_is_proposed_once_and_holds_the_next_challenge_until_it_is() {
    let failed = verdict(VerificationVerdict::Failed, "WrongResult", "e1");
    let m = metal(Some(failed.clone()), None);
    assert_eq!(next_step(&m), Step::Propose(Box::new(failed.clone())));
    assert!(holds_challenges(&m));
    // Once on record, it is followed, never proposed again.
    let m = metal(
        Some(failed.clone()),
        Some(on_record(SlashPhase::Proposed, "e1")),
    );
    assert_eq!(
        next_step(&m),
        Step::Follow {
            evidence: "e1".into()
        }
    );
    assert!(!holds_challenges(&m));
    for done in [
        SlashPhase::Executed,
        SlashPhase::Cancelled,
        SlashPhase::NotSlashed,
    ] {
        let m = metal(Some(failed.clone()), Some(on_record(done, "e1")));
        assert_eq!(next_step(&m), Step::Nothing, "{done:?}");
        assert!(!holds_challenges(&m));
    }
}

#[test]
fn a_pending_slash_is_followed_before_a_newer_failed_verdict_is_proposed() {
    let newer = verdict(VerificationVerdict::Failed, "TooFewGpus", "e2");
    let m = metal(
        Some(newer.clone()),
        Some(on_record(SlashPhase::Appealed, "e1")),
    );
    assert_eq!(
        next_step(&m),
        Step::Follow {
            evidence: "e1".into()
        }
    );
    let m = metal(
        Some(newer.clone()),
        Some(on_record(SlashPhase::Executed, "e1")),
    );
    assert_eq!(next_step(&m), Step::Propose(Box::new(newer)));
}

#[test]
fn honest_late_or_silent_members_are_never_proposed() {
    for v in [
        verdict(VerificationVerdict::Passed, "Verified", "e"),
        verdict(VerificationVerdict::Failed, "DeadlineExceeded", "e"),
        verdict(VerificationVerdict::Failed, "NoAnswer", "e"),
    ] {
        assert_eq!(next_step(&metal(Some(v), None)), Step::Nothing);
    }
    assert_eq!(next_step(&metal(None, None)), Step::Nothing);
    assert_eq!(next_step(&member("x", "L4", "1").build()), Step::Nothing);
}

#[test]
fn the_last_pass_is_carried_over_failed_verdicts() {
    let mut passed = verdict(VerificationVerdict::Passed, "Verified", "e0");
    passed.time = at(50);
    assert_eq!(last_passed(&passed, None), Some(at(50)));
    passed.last_passed_time = Some(at(50));
    let failed = verdict(VerificationVerdict::Failed, "WrongResult", "e1");
    assert_eq!(last_passed(&failed, Some(&passed)), Some(at(50)));
    assert_eq!(last_passed(&failed, None), None);
}

/// A job of `payer` with attempts (cluster, placed, finished, paid).
fn paid_job(
    name: &str,
    ns: &str,
    payer: EvmAddress,
    attempts: &[(&str, i64, Option<i64>, Option<&str>)],
) -> Arc<ComputeJob> {
    let mut j = job(name).namespace(ns).build();
    j.status = Some(ComputeJobStatus {
        payer: Some(payer),
        attempts: attempts
            .iter()
            .enumerate()
            .map(
                |(i, (cluster, placed, finished, paid))| gpufed_crds::AttemptRecord {
                    placed_time: Some(at(*placed)),
                    finish_time: finished.map(at),
                    settlement: paid.map(|p| {
                        Box::new(Settlement {
                            state: SettlementState::Settled,
                            job_id: "0x00".into(),
                            paid: Some(tok(p)),
                            ..Default::default()
                        })
                    }),
                    ..attempt(i as u32 + 1, cluster, AttemptPhase::Succeeded)
                },
            )
            .collect(),
        ..Default::default()
    });
    Arc::new(j)
}

#[test]
fn the_harmed_are_the_payers_of_attempts_on_the_member_since_its_last_pass() {
    let provider = addr(9);
    let jobs = vec![
        // Ran in the window on metal: harmed, twice.
        paid_job(
            "a",
            "team-a",
            addr(1),
            &[
                ("metal", 20, Some(40), Some("2")),
                ("metal", 60, Some(90), Some("1")),
            ],
        ),
        // Finished before the last pass: not harmed.
        paid_job("b", "team-b", addr(2), &[("metal", 0, Some(9), Some("7"))]),
        // On another member: not harmed.
        paid_job(
            "c",
            "team-c",
            addr(3),
            &[("other", 20, Some(40), Some("7"))],
        ),
        // Placed after the verdict: not harmed.
        paid_job("d", "team-d", addr(4), &[("metal", 101, None, Some("7"))]),
        // Still running across the window, nothing paid yet: not named.
        paid_job("e", "team-e", addr(5), &[("metal", 5, None, None)]),
        // Finished after the pass though placed before it: harmed.
        paid_job("f", "team-f", addr(6), &[("metal", 5, Some(30), Some("4"))]),
        // The provider paying itself is never compensated.
        paid_job(
            "g",
            "team-g",
            provider.clone(),
            &[("metal", 20, Some(30), Some("3"))],
        ),
        // A challenge (hub namespace) is never a tenant.
        paid_job(
            "h",
            HUB_JOBS_NAMESPACE,
            addr(7),
            &[("metal", 20, Some(30), Some("3"))],
        ),
    ];
    let mut h = harmed(cached(&jobs), "metal", &provider, Some(&at(10)), &at(100));
    h.sort();
    // The same jobs at rest, as the hub keeps them (ADR 0041): the same payers.
    let records: Vec<JobAtRest> = jobs
        .iter()
        .map(|j| {
            let mut j = ComputeJob::clone(j);
            j.metadata.uid = Some(format!("uid-{}", j.name_any()));
            JobAtRest::of(&j).unwrap()
        })
        .collect();
    let mut from_records = harmed(
        records.iter().map(JobRef::AtRest),
        "metal",
        &provider,
        Some(&at(10)),
        &at(100),
    );
    from_records.sort();
    assert_eq!(from_records, h);
    assert_eq!(
        h,
        vec![
            (addr(1), tok("1")),
            (addr(1), tok("2")),
            (addr(6), tok("4")),
        ]
    );
    // Never passed: from the start, so b counts too.
    let h = harmed(cached(&jobs), "metal", &provider, None, &at(100));
    assert!(h.contains(&(addr(2), tok("7"))));
}

#[test]
fn the_amount_is_capped_by_bonded_and_unbonding_tokens() {
    assert_eq!(slash_amount(tok("5"), tok("10"), tok("0")), Some(tok("5")));
    assert_eq!(slash_amount(tok("5"), tok("3"), tok("1")), Some(tok("4")));
    assert_eq!(slash_amount(tok("5"), tok("0"), tok("2")), Some(tok("2")));
    assert_eq!(slash_amount(tok("5"), tok("0"), tok("0")), None);
}

#[test]
fn an_unappealed_slash_executes_after_its_window_and_an_appealed_one_waits_for_the_referee() {
    assert_eq!(
        chain_step(SlashState::Proposed, 100, 99),
        ChainStep::Wait(SlashPhase::Proposed)
    );
    assert_eq!(
        chain_step(SlashState::Proposed, 100, 100),
        ChainStep::Execute
    );
    assert_eq!(
        chain_step(SlashState::Appealed, 100, 10_000),
        ChainStep::Wait(SlashPhase::Appealed)
    );
    assert_eq!(chain_step(SlashState::Upheld, 100, 0), ChainStep::Execute);
    assert_eq!(
        chain_step(SlashState::Executed, 100, 0),
        ChainStep::Done(SlashPhase::Executed)
    );
    assert_eq!(
        chain_step(SlashState::Cancelled, 100, 1000),
        ChainStep::Done(SlashPhase::Cancelled)
    );
}
