//! Challenges, the hub's side (ADR 0022, ADR 0027): which member is due a challenge and why, the
//! ComputeJob that carries it, and the verdict on its answer. Pure: the loop in
//! [`crate::hub::challenge_controller`] feeds it the caches and the clock and writes what it says.
//!
//! A challenge is an ordinary ComputeJob in the hub's namespace [`HUB_JOBS_NAMESPACE`], pinned to
//! one member (label [`LABEL_VERIFIES`], which stays on the hub: the Placement carries only the
//! labels every Placement has). Its answer comes back as the first exit's termination message; the
//! hub draws the row groups it checks only after it has the answer, applies its own deadline (from
//! the Placement's creation, by the hub's clock) and the per-model time band, and keeps a
//! canonical evidence record whose sha256 the verdict names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gpu_probe::challenge::{self as probe, Challenge, Refusal};
use gpufed_crds::naming::{HUB_JOBS_NAMESPACE, LABEL_VERIFIES};
use gpufed_crds::{
    ChallengeBackend, ComputeJob, ComputeJobSpec, GpuPool, Inventory, JobPhase, KubeDuration,
    MemberCluster, MemberVerification, Verification, VerificationVerdict,
};
use gpufed_scheduler::VerificationState;

use crate::hub::challenge_gpus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Annotation on a challenge ComputeJob (hub only): the nonce, hex.
pub const ANNOTATION_NONCE: &str = "gpufed.io/nonce";
/// Annotation on a challenge ComputeJob (hub only): the inventory fingerprint it verifies.
pub const ANNOTATION_INVENTORY: &str = "gpufed.io/inventory";
/// Annotation on a challenge ComputeJob (hub only): what triggered it.
pub const ANNOTATION_TRIGGER: &str = "gpufed.io/trigger";
/// Where the challenge program lives in the pool's image.
pub const PROBE_PATH: &str = "/usr/local/bin/gpu-probe";
/// Row groups of each GPU the hub recomputes (of [`probe::GROUPS`]).
pub const CHECKED_GROUPS: usize = 2;
/// Version of [`EvidenceRecord`]'s layout.
pub const EVIDENCE_VERSION: u32 = 1;

/// Why a member is due a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// It has no verdict yet (it just joined, or the pool just turned verification on).
    Join,
    /// Its GPU inventory differs from the one its last verdict was for.
    InventoryChanged,
    /// The random time the last verdict drew has come.
    Random,
}

impl Trigger {
    /// Stable name, for the annotation and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Join => "Join",
            Trigger::InventoryChanged => "InventoryChanged",
            Trigger::Random => "Random",
        }
    }
}

/// The GPUs a challenge is given: every healthy GPU of one node of the member ([`target_for`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Normalised model.
    pub model: String,
    /// GPUs.
    pub gpus: u32,
}

/// Fingerprint of what a member claims to have: per node its name, model, memory and allocatable
/// GPUs (not what is free or its utilisation, which change with load). 16 hex digits of sha256.
pub fn inventory_fingerprint(inventory: &Inventory) -> String {
    let mut nodes: Vec<_> = inventory
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{}\0{}\0{}\0{}",
                n.name, n.model, n.gpu_memory_mib, n.allocatable_gpus
            )
        })
        .collect();
    nodes.sort_unstable();
    let mut h = Sha256::new();
    for n in nodes {
        h.update(n.as_bytes());
        h.update([b'\n']);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// What a challenge of `member` sent for `trigger` is given. At join and after an inventory change,
/// the largest node ([`target`]): the biggest claim is checked first. A random challenge draws one
/// of the ready nodes with a healthy GPU uniformly (`unit` in `[0, 1)`), so that over time every
/// node is challenged, not only the largest (issue 13): a member cannot keep one honest node for
/// challenges and report others it does not have.
pub fn target_for(member: &MemberCluster, trigger: Trigger, unit: f64) -> Option<Target> {
    if trigger != Trigger::Random {
        return target(member);
    }
    let mut nodes: Vec<_> = challengeable(member).collect();
    nodes.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let last = nodes.len().checked_sub(1)?;
    // Truncation towards zero is the draw: `unit` < 1 picks each node with probability 1/len.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((unit.clamp(0.0, 1.0) * nodes.len() as f64) as usize).min(last);
    let (gpus, n) = nodes[i];
    Some(Target {
        model: n.model.clone(),
        gpus,
    })
}

/// The nodes of `member` a challenge can be given, with their healthy GPUs: ready, with fresh
/// telemetry and at least one healthy GPU. None without an inventory.
fn challengeable(
    member: &MemberCluster,
) -> impl Iterator<Item = (u32, &gpufed_crds::NodeInventory)> {
    member
        .status
        .as_ref()
        .and_then(|s| s.inventory.as_ref())
        .into_iter()
        .flat_map(|i| &i.nodes)
        .filter(|n| n.ready && !n.telemetry_stale)
        .map(|n| (n.allocatable_gpus.saturating_sub(n.unhealthy_gpus), n))
        .filter(|(gpus, _)| *gpus > 0)
}

/// What a challenge of `member` is given: the ready node with the most healthy GPUs (ties: first
/// name), all of them. `None` without an inventory or a healthy GPU.
pub fn target(member: &MemberCluster) -> Option<Target> {
    challengeable(member)
        .max_by(|(a, x), (b, y)| a.cmp(b).then_with(|| y.name.cmp(&x.name)))
        .map(|(gpus, n)| Target {
            model: n.model.clone(),
            gpus,
        })
}

/// Why `member` is due a challenge now, if it is. `fingerprint` is its current inventory's;
/// `next` the random time drawn for it (kept by the hub alone: the member can read its own status
/// and must not know when the next challenge comes).
pub fn due(
    member: &MemberCluster,
    fingerprint: &str,
    next: Option<&Time>,
    now: &Time,
) -> Option<Trigger> {
    let Some(v) = member.status.as_ref().and_then(|s| s.verification.as_ref()) else {
        return Some(Trigger::Join);
    };
    if v.inventory != fingerprint {
        return Some(Trigger::InventoryChanged);
    }
    next.filter(|next| next.0 <= now.0).map(|_| Trigger::Random)
}

/// When the next random challenge of a member is due after a verdict at `now`: uniformly between
/// half and one and a half of the pool's `every` (`unit` in `[0, 1)`), so a member cannot predict
/// it. `None` without `every`.
pub fn next_challenge(spec: &Verification, now: &Time, unit: f64) -> Option<Time> {
    let every = spec.every?.as_duration();
    let factor = 0.5 + unit.clamp(0.0, 1.0);
    let after = Duration::from_secs_f64(every.as_secs_f64() * factor);
    let span = k8s_openapi::jiff::SignedDuration::try_from(after).ok()?;
    now.0.checked_add(span).ok().map(Time)
}

/// Whether `member` joined by stake through the registration endpoint (ADR 0031).
pub fn joined_by_stake(member: &MemberCluster) -> bool {
    member
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(gpufed_crds::join::LABEL_ADMISSION))
        .map(String::as_str)
        == Some(gpufed_crds::join::ADMISSION_OPEN)
}

/// How the scheduler must treat `member` in `pool` (ADR 0027): a pool without required
/// verification places anywhere; otherwise only a member whose latest verdict passed for its
/// current inventory, or, for jobs that opt in (ADR 0031), one without a verdict for it yet.
/// The message of an unverified member says whether it is on probation (joined by stake) and how
/// a job accepts it, or that the pool allows no job to.
pub fn verification_state(pool: &GpuPool, member: &MemberCluster) -> VerificationState {
    let Some(spec) = pool.spec.verification.as_ref().filter(|v| v.required) else {
        return VerificationState::NotRequired;
    };
    let hint = if spec.allow_unverified_jobs {
        "; set spec.allowUnverified: true on the job to accept it"
    } else {
        "; this pool allows no jobs on unverified members (spec.verification.allowUnverifiedJobs: false)"
    };
    let status = member.status.as_ref();
    let Some(v) = status.and_then(|s| s.verification.as_ref()) else {
        let why = if joined_by_stake(member) {
            "on probation (joined by stake, no challenge passed yet)"
        } else {
            "no challenge answered yet"
        };
        return VerificationState::Unverified {
            message: format!("{why}{hint}"),
        };
    };
    let current = status
        .and_then(|s| s.inventory.as_ref())
        .map(inventory_fingerprint);
    if current.as_deref() != Some(v.inventory.as_str()) {
        return VerificationState::Unverified {
            message: format!(
                "its GPU inventory changed since challenge {} ({}); a new challenge is due{hint}",
                v.challenge,
                v.verdict_word()
            ),
        };
    }
    match v.verdict {
        VerificationVerdict::Passed => VerificationState::Passed,
        VerificationVerdict::Failed => VerificationState::Failed {
            message: verdict_message(v),
        },
    }
}

/// A verdict in a sentence, for the `Verified` condition, Events and the scheduler's
/// explanations: `challenge <name>: <message> (<reason>)`, or for a lost result dispute (ADR 0034)
/// `lost the dispute over job <namespace>/<name>: <message> (<reason>)`.
pub fn verdict_message(v: &MemberVerification) -> String {
    let subject = if crate::hub::result_check::lost_dispute(v) {
        format!("lost the dispute over job {}", v.challenge)
    } else {
        format!("challenge {}", v.challenge)
    };
    format!("{subject}: {} ({})", v.message, v.reason)
}

trait VerdictWord {
    fn verdict_word(&self) -> &'static str;
}

impl VerdictWord for MemberVerification {
    fn verdict_word(&self) -> &'static str {
        match self.verdict {
            VerificationVerdict::Passed => "passed",
            VerificationVerdict::Failed => "failed",
        }
    }
}

/// The command `gpu-probe challenge` runs with for `challenge` under `spec`, given `gpus`.
pub fn command(spec: &Verification, challenge: &Challenge, gpus: u32) -> Vec<String> {
    let mut cmd = vec![
        PROBE_PATH.to_string(),
        "challenge".into(),
        "--backend".into(),
        match spec.backend {
            ChallengeBackend::Cuda => "cuda".into(),
            ChallengeBackend::Cpu => "cpu".into(),
        },
        "--id".into(),
        challenge.id.clone(),
        "--nonce".into(),
        hex::encode(challenge.nonce),
        "--n".into(),
        challenge.n.to_string(),
    ];
    if spec.backend == ChallengeBackend::Cpu {
        // The CPU backend stands in for as many devices as GPUs were given.
        cmd.extend(["--cpu-devices".into(), gpus.to_string()]);
    }
    cmd
}

/// The ComputeJob `name` carrying a challenge of `member` (in `pool`) on `target`, with `nonce`.
/// Nothing in what the member sees names it a challenge: its Placement has the shape, labels and
/// annotations of any other (`lifecycle::placement_for`); the labels and annotations here stay
/// on the hub.
pub fn challenge_job(
    pool: &GpuPool,
    member: &str,
    target: &Target,
    name: &str,
    nonce: [u8; 32],
    fingerprint: &str,
    trigger: Trigger,
) -> Option<ComputeJob> {
    let spec = pool.spec.verification.as_ref()?;
    let challenge = Challenge {
        id: name.to_string(),
        nonce,
        n: spec.matrix_size as usize,
    };
    challenge.validate().ok()?;
    // Through serde, so every field a tenant's job leaves out has the same default here.
    let spec: ComputeJobSpec = serde_json::from_value(serde_json::json!({
        "pool": pool.metadata.name.clone().unwrap_or_default(),
        "replicas": 1,
        "gpusPerReplica": target.gpus,
        "gpu": {"models": [target.model]},
        "maxDuration": spec.deadline,
        "retry": {"maxAttempts": 1},
        "template": {"containers": [{
            "name": "main",
            "image": spec.image,
            "command": command(spec, &challenge, target.gpus),
        }]},
    }))
    .ok()?;
    Some(ComputeJob {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(HUB_JOBS_NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([(LABEL_VERIFIES.into(), member.into())])),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_NONCE.into(), hex::encode(nonce)),
                (ANNOTATION_INVENTORY.into(), fingerprint.into()),
                (ANNOTATION_TRIGGER.into(), trigger.as_str().into()),
            ])),
            ..Default::default()
        },
        spec,
        status: None,
    })
}

/// The member a hub ComputeJob verifies, if it is a challenge.
pub fn verifies(job: &ComputeJob) -> Option<&str> {
    if job.metadata.namespace.as_deref() != Some(HUB_JOBS_NAMESPACE) {
        return None;
    }
    job.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_VERIFIES))
        .map(String::as_str)
}

/// How long the loop waits for its caches to show its own last write about a member (the
/// challenge it created, or the verdict it recorded) before it acts on that member again. Far
/// beyond a watch's usual lag; if the write never shows (the object was removed meanwhile), the
/// loop goes on from what the caches say.
pub const CACHE_GRACE: Duration = Duration::from_secs(30);

/// The loop's last write about one member, which its caches may not show yet (leader memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// It created challenge `.0`.
    Sent(String),
    /// It recorded the verdict on challenge `.0` in the member's status.
    Judged(String),
    /// It abandoned challenge `.0` (never placed, see [`abandoned`]) and deleted it.
    Abandoned(String),
}

/// Whether the caches show the loop's last write `written` about `member` (made `ago`): a sent
/// challenge is among `jobs`, a recorded verdict is the member's. Until they do, and for at most
/// [`CACHE_GRACE`], the member is left alone: acting on caches that lag the loop's own writes
/// would send a second challenge for the first (a member with no verdict in the cache is due a
/// `Join` challenge), or judge a challenge twice.
pub fn caught_up(
    written: &Written,
    ago: Duration,
    member: &MemberCluster,
    jobs: &[Arc<ComputeJob>],
) -> bool {
    if ago >= CACHE_GRACE {
        return true;
    }
    match written {
        Written::Sent(name) => jobs
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(name) && verifies(j).is_some()),
        Written::Judged(name) => member
            .status
            .as_ref()
            .and_then(|s| s.verification.as_ref())
            .is_some_and(|v| &v.challenge == name),
        Written::Abandoned(name) => !jobs.iter().any(|j| {
            j.metadata.name.as_deref() == Some(name) && j.metadata.deletion_timestamp.is_none()
        }),
    }
}

/// Names of the challenges among `jobs` that have no one to verify any more: their member is gone,
/// moved to another pool, or its pool no longer verifies. The loop deletes them (a pending one
/// would otherwise wait for ever).
pub fn orphans(
    jobs: &[Arc<ComputeJob>],
    members: &[Arc<MemberCluster>],
    pools: &[Arc<GpuPool>],
) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| {
            let member = verifies(j)?;
            let live = members.iter().any(|m| {
                m.metadata.name.as_deref() == Some(member)
                    && m.metadata.deletion_timestamp.is_none()
                    && m.spec.pool == j.spec.pool
            }) && pools.iter().any(|p| {
                p.metadata.name.as_deref() == Some(j.spec.pool.as_str())
                    && p.spec.verification.is_some()
            });
            (!live).then(|| j.metadata.name.clone()).flatten()
        })
        .collect()
}

/// Whether `job` is one of the hub's own (a challenge): never charged, never counted against a
/// tenant's quota, allowed on members not verified yet.
pub fn is_hub_job(job: &ComputeJob) -> bool {
    job.metadata.namespace.as_deref() == Some(HUB_JOBS_NAMESPACE)
}

/// `pool` as the scheduler sees it for the hub's own jobs: no chain (no escrow, no bond), no
/// payers, priority classes, quotas, fair share or required verification.
pub fn hub_pool(pool: &GpuPool) -> GpuPool {
    let mut p = pool.clone();
    p.spec.chain = None;
    p.spec.min_bond = None;
    p.spec.payers.clear();
    p.spec.priority_classes.clear();
    p.spec.quotas.clear();
    p.spec.fair_sharing = None;
    p.spec.verification = None;
    p.spec.reputation_floor = None;
    p
}

/// The canonical record a verdict is reached on; its sha256 is the verdict's evidence hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRecord {
    /// [`EVIDENCE_VERSION`].
    pub version: u32,
    /// The member.
    pub member: String,
    /// Its pool.
    pub pool: String,
    /// Model and GPUs the challenge was given.
    pub model: String,
    /// GPUs the challenge was given.
    pub gpus: u32,
    /// Inventory fingerprint the challenge was sent for.
    pub inventory: String,
    /// When the challenge's Placement was created (hub clock, RFC 3339), if it was.
    pub placed: Option<String>,
    /// When the hub judged (hub clock, RFC 3339).
    pub judged: String,
    /// Seconds from `placed` to `judged`.
    pub answer_seconds: Option<u64>,
    /// The pool's deadline in seconds.
    pub deadline_seconds: u64,
    /// `Passed` or `Failed`.
    pub verdict: VerificationVerdict,
    /// One-word reason.
    pub reason: String,
    /// The reason in a sentence.
    pub message: String,
    /// What `gpu_probe::challenge::verify` saw and checked (inputs, received answer, expected and
    /// received digests of the drawn groups); absent when there was no answer to check.
    pub check: Option<probe::Evidence>,
    /// The node the challenge was planned on (absent in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The GPU UUIDs the member's inventory reported on that node when the hub judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported_gpus: Vec<String>,
}

impl EvidenceRecord {
    /// The canonical bytes (JSON, fields in declaration order).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// sha256 of [`EvidenceRecord::canonical`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }
}

/// A verdict on a challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// The record it rests on.
    pub evidence: EvidenceRecord,
}

/// The one-word reason of a refusal.
pub fn refusal_reason(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Oversize(_) => "Oversize",
        Refusal::Malformed(_) => "Malformed",
        Refusal::UnsupportedVersion(_) => "UnsupportedVersion",
        Refusal::WrongChallenge { .. } => "WrongChallenge",
        Refusal::DuplicateGpu(_) => "DuplicateGpu",
        Refusal::TooFewGpus { .. } => "TooFewGpus",
        Refusal::TooManyGpus { .. } => "TooManyGpus",
        Refusal::TooSlow { .. } => "TooSlow",
        Refusal::WrongResult { .. } => "WrongResult",
    }
}

/// The per-GPU time band for `model` at size `n` under `backend`, in ms: the profile's bound
/// (the CPU profile for the CPU backend), or the whole deadline where no profile is committed.
pub fn max_ms(backend: ChallengeBackend, model: &str, n: usize, deadline: KubeDuration) -> u64 {
    let profiled = match backend {
        ChallengeBackend::Cpu => "CPU",
        ChallengeBackend::Cuda => model,
    };
    probe::profile_for(profiled, n)
        .map(|p| p.max_ms)
        .unwrap_or_else(|| u64::try_from(deadline.as_duration().as_millis()).unwrap_or(u64::MAX))
}

fn seconds_between(from: &Time, to: &Time) -> u64 {
    u64::try_from(to.0.duration_since(from.0).as_secs()).unwrap_or(0)
}

/// The verdict on challenge `job` at `now`, if one is due: its answer arrived (checked on the
/// `groups` the caller drew *after* reading it), or its deadline passed without one, or it ended
/// without one. `None` while it waits to be placed or runs within its deadline. A correct answer
/// passes only if the GPUs it names are among those `inventory` (the member's) reports on the node
/// the challenge was planned on (`UnknownGpu` or `UnreportedGpus` otherwise, see
/// [`challenge_gpus`]).
pub fn judge(
    job: &ComputeJob,
    pool: &GpuPool,
    inventory: Option<&Inventory>,
    groups: &[usize],
    now: &Time,
) -> Option<Judgement> {
    let spec = pool.spec.verification.as_ref()?;
    let member = verifies(job)?.to_string();
    let annotations = job.metadata.annotations.as_ref()?;
    let nonce = annotations.get(ANNOTATION_NONCE)?;
    let fingerprint = annotations.get(ANNOTATION_INVENTORY)?.clone();
    let name = job.metadata.name.clone()?;
    let st = job.status.as_ref()?;
    let attempt = st.attempts.iter().max_by_key(|a| a.attempt);
    let placed = attempt.and_then(|a| a.placed_time.clone());
    let elapsed = placed.as_ref().map(|p| seconds_between(p, now));
    let deadline = spec.deadline.as_secs_ceil();
    let late = elapsed.is_some_and(|e| e > deadline);
    let answer = attempt
        .and_then(|a| a.exits.first())
        .and_then(|e| e.message.clone());
    let finished = st.phase.is_finished();
    let reported = challenge_gpus::reported(attempt, inventory);
    let mut record = EvidenceRecord {
        version: EVIDENCE_VERSION,
        member,
        pool: job.spec.pool.clone(),
        model: job.spec.gpu.models.first().cloned().unwrap_or_default(),
        gpus: job.spec.gpus_per_replica,
        inventory: fingerprint,
        placed: placed.as_ref().map(|p| p.0.to_string()),
        judged: now.0.to_string(),
        answer_seconds: elapsed,
        deadline_seconds: deadline,
        verdict: VerificationVerdict::Failed,
        reason: String::new(),
        message: String::new(),
        check: None,
        node: reported.node.clone(),
        reported_gpus: reported.uuids.clone(),
    };
    let fail = |mut record: EvidenceRecord, reason: &str, message: String| {
        record.reason = reason.into();
        record.message = message;
        Some(Judgement { evidence: record })
    };
    match answer {
        Some(raw) if finished || late => {
            let n = spec.matrix_size as usize;
            let challenge = Challenge::new(&name, nonce, n).ok()?;
            let bound = max_ms(spec.backend, &record.model, n, spec.deadline);
            let verdict = probe::verify(
                &challenge,
                job.spec.gpus_per_replica as usize,
                bound,
                &raw,
                groups,
            );
            record.check = Some(verdict.evidence);
            if late {
                let took = elapsed.unwrap_or(0);
                return fail(
                    record,
                    "DeadlineExceeded",
                    format!(
                        "answered {took}s after the challenge was placed, the deadline is {deadline}s"
                    ),
                );
            }
            match verdict.result {
                Ok(v) => {
                    if let Err((reason, message)) = challenge_gpus::check(&v.gpus, &reported) {
                        return fail(record, reason, message);
                    }
                    record.verdict = VerificationVerdict::Passed;
                    record.reason = "Verified".into();
                    record.message = format!(
                        "{} {} GPUs answered correctly within {}s",
                        v.gpus.len(),
                        record.model,
                        elapsed.unwrap_or(0)
                    );
                    Some(Judgement { evidence: record })
                }
                Err(refusal) => fail(record, refusal_reason(&refusal), refusal.to_string()),
            }
        }
        _ if late => fail(
            record,
            "DeadlineExceeded",
            format!("no answer {deadline}s after the challenge was placed"),
        ),
        None if finished => {
            let why = attempt
                .and_then(|a| a.message.clone().or(a.reason.clone()))
                .or(st.message.clone())
                .unwrap_or_else(|| "no reason given".into());
            let phase = if st.phase == JobPhase::Succeeded {
                "succeeded"
            } else {
                "failed"
            };
            fail(
                record,
                "NoAnswer",
                format!("the challenge {phase} without an answer: {why}"),
            )
        }
        _ => None,
    }
}

/// The hold a challenge waiting to be placed puts on its member (ADR 0027, amendment of
/// 2026-12-05): every GPU still free (after `reservations`) on the node it waits for, so the
/// pass's tenant jobs do not take them while that node drains. The node is one of the challenge's
/// model at least one replica large (the challenge is sized for one node, [`target_for`]), the one
/// with the most GPUs free, then by name. `None` when no node could ever take it or none has a
/// GPU free to hold. Recomputed every pass: it ends when the challenge is placed or abandoned.
pub fn hold(
    challenge: &ComputeJob,
    cluster: &gpufed_scheduler::ClusterState,
    reservations: &[gpufed_scheduler::Reservation],
) -> Option<gpufed_scheduler::Reservation> {
    let need = challenge.spec.gpus_per_replica;
    let reserved = crate::hub::snapshot::reserved_by_node(reservations);
    cluster
        .nodes
        .iter()
        .filter(|n| challenge.spec.gpu.models.contains(&n.model))
        .filter(|n| n.size_gpus() >= need)
        .map(|n| {
            let taken = reserved
                .get(&(cluster.name.as_str(), n.name.as_str()))
                .copied()
                .unwrap_or(0);
            (n.offered_gpus().saturating_sub(taken), n.name.as_str())
        })
        .filter(|(free, _)| *free > 0)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(free, node)| gpufed_scheduler::Reservation {
            cluster: cluster.name.clone(),
            node: node.to_string(),
            gpus: free,
        })
}

/// Why challenge `job` is abandoned at `now`: it has waited more than `deadline_secs` since it
/// was created and no attempt of it was ever placed. `None` once any attempt was placed (then
/// [`judge`] and `spec.verification.deadline` decide) or while it is within the bound.
pub fn abandoned(job: &ComputeJob, now: &Time, deadline_secs: u64) -> Option<String> {
    let member = verifies(job)?;
    let created = job.metadata.creation_timestamp.as_ref()?;
    let placed = job
        .status
        .as_ref()
        .is_some_and(|s| s.attempts.iter().any(|a| a.placed_time.is_some()));
    if placed {
        return None;
    }
    let waited = seconds_between(created, now);
    (waited > deadline_secs).then(|| {
        format!(
            "challenge not placed on {member} {waited}s after it was sent (placement deadline \
             {deadline_secs}s): abandoned without a verdict, the next challenge can be sent"
        )
    })
}

/// `MemberCluster.status.verification` for `judgement` of challenge `name`, with the evidence kept
/// in ConfigMap `evidence`.
pub fn member_verification(
    judgement: &Judgement,
    name: &str,
    evidence: &str,
    now: &Time,
) -> MemberVerification {
    let e = &judgement.evidence;
    MemberVerification {
        verdict: e.verdict,
        reason: e.reason.clone(),
        message: crate::hub::context::truncate(&e.message, 1024),
        time: now.clone(),
        challenge: name.to_string(),
        evidence_sha256: e.sha256(),
        evidence: evidence.to_string(),
        inventory: e.inventory.clone(),
        gpus: e.gpus,
        model: e.model.clone(),
        answer_seconds: e.answer_seconds,
        last_passed_time: (e.verdict == VerificationVerdict::Passed).then(|| now.clone()),
    }
}

#[cfg(test)]
#[path = "challenges_tests.rs"]
mod tests;
