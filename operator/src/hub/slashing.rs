//! Automatic slashing on a failed challenge (ADR 0023, ADR 0027), the pure part: which verdicts
//! slash, what the hub does next for a member, who was harmed and by how much, how much can be
//! slashed, and what a slash's on-chain state asks of the hub.
//! [`crate::hub::slash_controller`] feeds it the caches, the chain and the clock and makes the
//! writes.
//!
//! Exactly once: the bond contract refuses a second proposal on the same evidence hash, and the
//! hub reads `getSlash(evidence)` before proposing, so the chain itself records that a proposal was
//! made; a new leader that finds one adopts it instead of proposing again (see the controller).

use gpufed_crds::{
    EvmAddress, MemberCluster, MemberVerification, SlashPhase, TokenAmount, VerificationVerdict,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::hub::at_rest::JobRef;
use crate::hub::chain::SlashState;

/// Verdict reasons that prove a member cheated, and are slashed: the answer is wrong, names GPUs
/// it was not given or fewer than it was, is for another challenge, or the member's own timings
/// fall outside the claimed model's band, or a correct answer names GPUs the member's own inventory
/// does not report on that node (`UnknownGpu`). A late or missing answer (`DeadlineExceeded`,
/// `NoAnswer`) is not slashed: a busy, crashed or partitioned member is not proven to cheat, and
/// it already loses its verification. Nor are `Malformed`, `Oversize` and `UnsupportedVersion`:
/// the pool's own image writes the answer, so these can come from the pool changing its image
/// version or from the kubelet truncating the termination message, not only from the provider.
/// Nor is `UnreportedGpus` (the inventory names no UUIDs to compare with: a probe that has not
/// reported yet, or an older agent). A lost result dispute (`WrongTenantResult`, ADR 0034) is
/// slashed: it is written as a verdict only where the pool asks (`lostDisputes: Fail`).
pub const SLASHING_REASONS: &[&str] = &[
    "WrongResult",
    "TooSlow",
    "TooFewGpus",
    "TooManyGpus",
    "DuplicateGpu",
    "WrongChallenge",
    "UnknownGpu",
    crate::hub::result_check::WRONG_TENANT_RESULT,
];

/// What a slashed verdict was, in words: `challenge <name> failed`, or `lost the dispute over job
/// <namespace>/<name>` (ADR 0034).
pub fn what_failed(v: &MemberVerification) -> String {
    if crate::hub::result_check::lost_dispute(v) {
        format!("lost the dispute over job {}", v.challenge)
    } else {
        format!("challenge {} failed", v.challenge)
    }
}

/// Whether a verdict is slashed.
pub fn slashes(v: &MemberVerification) -> bool {
    v.verdict == VerificationVerdict::Failed && SLASHING_REASONS.contains(&v.reason.as_str())
}

/// What the hub does next about slashing a member.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// Follow the slash already on record (not final) on chain: execute it when due.
    Follow {
        /// Its evidence hash (hex).
        evidence: String,
    },
    /// Propose a slash on the latest verdict, which failed for a slashing reason and has no
    /// slash on record yet.
    Propose(Box<MemberVerification>),
}

/// The next step for `member`: a slash on record that is not final is followed first (a newer
/// failed verdict waits for it); otherwise the latest verdict is proposed when it slashes and is
/// not the one on record.
pub fn next_step(member: &MemberCluster) -> Step {
    let Some(status) = member.status.as_ref() else {
        return Step::Nothing;
    };
    if let Some(s) = status.slash.as_ref().filter(|s| !s.phase.is_final()) {
        return Step::Follow {
            evidence: s.evidence_sha256.clone(),
        };
    }
    match status.verification.as_ref() {
        Some(v)
            if slashes(v)
                && status.slash.as_ref().map(|s| s.evidence_sha256.as_str())
                    != Some(v.evidence_sha256.as_str()) =>
        {
            Step::Propose(Box::new(v.clone()))
        }
        _ => Step::Nothing,
    }
}

/// Whether the challenge loop must hold the member's next challenge: its latest verdict waits
/// to be proposed, and a new verdict would replace it in the status before it is.
pub fn holds_challenges(member: &MemberCluster) -> bool {
    matches!(next_step(member), Step::Propose(_))
}

/// `last_passed_time` of a new verdict: its own time when it passed, else the previous one's.
pub fn last_passed(
    new: &MemberVerification,
    previous: Option<&MemberVerification>,
) -> Option<Time> {
    if new.verdict == VerificationVerdict::Passed {
        Some(new.time.clone())
    } else {
        previous.and_then(|p| p.last_passed_time.clone())
    }
}

/// The payers harmed by a member found cheating at `until`: for every tenant attempt that ran on
/// `member` between its last passed challenge `since` (from the start when it never passed) and
/// `until`, the job's payer and what the attempt paid (settled attempts only: an attempt still
/// running or unsettled paid nothing yet). Challenges (the hub's namespace) and the provider's own
/// account are left out.
pub fn harmed<'a>(
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    member: &str,
    provider: &EvmAddress,
    since: Option<&Time>,
    until: &Time,
) -> Vec<(EvmAddress, TokenAmount)> {
    let mut out = vec![];
    for job in jobs {
        if job.is_hub_job() {
            continue;
        }
        let Some(payer) = job.payer().filter(|p| *p != provider) else {
            continue;
        };
        for a in job.attempts().iter().filter(|a| a.cluster == member) {
            let Some(placed) = a.placed_time.as_ref() else {
                continue;
            };
            let ran_after = a
                .finish_time
                .as_ref()
                .is_none_or(|f| since.is_none_or(|s| f.0 >= s.0));
            if placed.0 > until.0 || !ran_after {
                continue;
            }
            if let Some(paid) = a.settlement.as_ref().and_then(|s| s.paid) {
                out.push((payer.clone(), paid));
            }
        }
    }
    out
}

/// What a slash of `policy` tokens takes from a bond with `bonded` and `unbonding` tokens: the
/// policy's amount, capped by both together (the contract refuses more, `SlashExceedsBond`).
/// `None`: nothing is bonded.
pub fn slash_amount(
    policy: TokenAmount,
    bonded: TokenAmount,
    unbonding: TokenAmount,
) -> Option<TokenAmount> {
    let available = bonded
        .checked_add(unbonding)
        .unwrap_or(TokenAmount::from_atto(u128::MAX));
    let amount = TokenAmount::from_atto(policy.atto().min(available.atto()));
    (amount.atto() > 0).then_some(amount)
}

/// What the hub does about a slash the chain has in `state`, executable from `executable_at`,
/// at unix time `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainStep {
    /// Send `executeSlash`.
    Execute,
    /// Wait: for the appeal window to pass, or for the referee. The phase to show.
    Wait(SlashPhase),
    /// Nothing will change any more: the phase to show.
    Done(SlashPhase),
}

/// See [`ChainStep`]. An appealed slash is left to the referee: the hub does not execute it (the
/// contract would refuse) and does not cancel it on its own.
pub fn chain_step(state: SlashState, executable_at: u64, now: u64) -> ChainStep {
    match state {
        SlashState::Proposed if now >= executable_at => ChainStep::Execute,
        SlashState::Proposed => ChainStep::Wait(SlashPhase::Proposed),
        SlashState::Appealed => ChainStep::Wait(SlashPhase::Appealed),
        SlashState::Upheld => ChainStep::Execute,
        SlashState::Executed => ChainStep::Done(SlashPhase::Executed),
        SlashState::Cancelled => ChainStep::Done(SlashPhase::Cancelled),
    }
}

/// The `state` label of `gpufed_hub_slashes_total` for a phase.
pub fn phase_word(p: SlashPhase) -> &'static str {
    match p {
        SlashPhase::Proposed => "Proposed",
        SlashPhase::Appealed => "Appealed",
        SlashPhase::Upheld => "Upheld",
        SlashPhase::Executed => "Executed",
        SlashPhase::Cancelled => "Cancelled",
        SlashPhase::NotSlashed => "NotSlashed",
    }
}

#[cfg(test)]
#[path = "slashing_tests.rs"]
mod tests;
