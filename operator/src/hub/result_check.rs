//! Result checks by replication (ADR 0034), the pure part: what a run's result is, what the hub
//! does next for a job with `spec.resultCheck`, the check runs it makes, and the evidence of a
//! verdict. [`crate::hub::result_check_controller`] feeds it the caches and the clock and makes
//! the writes.
//!
//! A check follows the job: once it succeeds, a replica (`<name>-replica`) runs on a member that
//! ran no earlier run and is paid to no wallet that was; if the two results differ, a referee
//! (`<name>-referee`) runs the same way. The runs are ordinary ComputeJobs of the job's namespace,
//! owned by it; the hub trusts only a run whose UID it recorded when it made it (or, after a
//! crash between making it and recording it, one that carries its labels and owner and the spec
//! it would make).

use std::collections::{BTreeMap, BTreeSet};

use gpufed_crds::conditions::job as jc;
use gpufed_crds::naming::{LABEL_MANAGED_BY, MANAGED_BY, short_hash};
use gpufed_crds::result_check::{LABEL_RESULT_CHECK_OF, LABEL_RESULT_CHECK_ROLE};
use gpufed_crds::{
    AttemptPhase, ComputeJob, ComputeJobSpec, EvmAddress, JobPhase, MemberCluster,
    ResultCheckPhase, ResultCheckStatus, ResultRun, RunRole,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of [`DisputeEvidence`]'s layout.
pub const EVIDENCE_VERSION: u32 = 1;

/// How long a run the hub made may be missing from its cache before the check is abandoned
/// (seconds): a watch may show a new object a little late.
pub const MISSING_GRACE_SECS: i64 = 60;

/// Reason of the member verdict written for a lost dispute (ADR 0034); slashed like a wrong
/// challenge answer.
pub const WRONG_TENANT_RESULT: &str = "WrongTenantResult";

/// Whether `v` is a member's lost result dispute rather than a challenge verdict.
pub fn lost_dispute(v: &gpufed_crds::MemberVerification) -> bool {
    v.reason == WRONG_TENANT_RESULT
}

/// One workload container's termination message, as compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultMessage {
    /// Replica index.
    pub replica: u32,
    /// Container name.
    pub container: String,
    /// The message as the member reported it (empty when the container wrote none).
    pub message: String,
}

/// One stored object of an output, as compared: its key relative to the run's own prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultObject {
    /// Output name in the template.
    pub output: String,
    /// Replica that uploaded it.
    pub replica: u32,
    /// Key below the run's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 the member reported.
    pub sha256: String,
}

/// The canonical result of a succeeded run: what two runs must share to agree.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// Workload containers' termination messages, by replica and container.
    pub messages: Vec<ResultMessage>,
    /// Output objects (empty unless `includeOutputs`), by output, replica and key; per output
    /// record, objects the member's report left out are counted as `omitted`.
    pub objects: Vec<ResultObject>,
    /// Objects uploaded but not listed, per `output/replica` (compared as counts).
    pub omitted: BTreeMap<String, u32>,
}

impl RunResult {
    /// Whether there is nothing to compare: no container wrote a message and nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.messages.iter().all(|m| m.message.is_empty())
            && self.objects.is_empty()
            && self.omitted.values().all(|n| *n == 0)
    }

    /// sha256 (hex) of the canonical JSON.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }
}

/// A job's succeeded attempt, as a run of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The attempt.
    pub attempt: u32,
    /// Its member.
    pub cluster: String,
    /// The wallet it paid.
    pub provider: Option<EvmAddress>,
    /// GPU model it ran on.
    pub model: String,
    /// What it produced.
    pub result: RunResult,
}

/// How a job stands for a check: still going, ended without success (why), or succeeded.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Not finished.
    Going,
    /// Finished without success: the reason and message.
    Failed(String),
    /// Succeeded.
    Succeeded(Box<Outcome>),
}

/// Where `job` stands, and its result when it succeeded (`include_outputs` as the checked job
/// asks). The result of a succeeded job is its last succeeded attempt's.
pub fn run_state(job: &ComputeJob, include_outputs: bool) -> RunState {
    let Some(st) = job.status.as_ref() else {
        return RunState::Going;
    };
    match st.phase {
        JobPhase::Succeeded => {}
        JobPhase::Failed => {
            return RunState::Failed(format!(
                "{}: {}",
                st.reason.as_deref().unwrap_or("Failed"),
                st.message.as_deref().unwrap_or("")
            ));
        }
        _ => return RunState::Going,
    }
    let Some(a) = st
        .attempts
        .iter()
        .rev()
        .find(|a| a.phase == AttemptPhase::Succeeded)
    else {
        return RunState::Failed("Succeeded without a succeeded attempt".into());
    };
    let mut messages: Vec<ResultMessage> = a
        .exits
        .iter()
        .filter(|e| !crate::agent::job_data::is_helper(&e.container))
        .map(|e| ResultMessage {
            replica: e.replica,
            container: e.container.clone(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    messages.sort();
    let mut objects = vec![];
    let mut omitted = BTreeMap::new();
    if include_outputs {
        for rec in &st.outputs {
            let prefix = job
                .spec
                .template
                .outputs
                .iter()
                .find(|o| o.name == rec.name)
                .map(|o| o.object_key(job.spec.replicas, rec.replica, ""))
                .unwrap_or_default();
            for obj in &rec.objects {
                objects.push(ResultObject {
                    output: rec.name.clone(),
                    replica: rec.replica,
                    key: obj
                        .key
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&obj.key)
                        .to_string(),
                    size: obj.size,
                    sha256: obj.sha256.clone(),
                });
            }
            if rec.omitted > 0 {
                omitted.insert(format!("{}/{}", rec.name, rec.replica), rec.omitted);
            }
        }
        objects.sort();
    }
    RunState::Succeeded(Box::new(Outcome {
        attempt: a.attempt,
        cluster: a.cluster.clone(),
        provider: a.provider.clone(),
        model: a.model.clone(),
        result: RunResult {
            messages,
            objects,
            omitted,
        },
    }))
}

/// Whether the hub's cache must keep `job`'s pod template after it finished: a job whose check is
/// not over (its runs are made from it), and a check run (compared with it when adopted).
pub fn needs_template(job: &ComputeJob) -> bool {
    let checking = job.spec.result_check.is_some()
        && !job
            .status
            .as_ref()
            .and_then(|s| s.result_check.as_ref())
            .is_some_and(|c| c.phase.is_final());
    checking || job.labels().contains_key(LABEL_RESULT_CHECK_OF)
}

/// Name of the check run `role` of job `name`: `<name>-<role>`, or a cut name with a hash of the
/// whole when that would pass the 253 characters of an object name.
pub fn run_name(name: &str, role: RunRole) -> String {
    let suffix = role.as_str();
    if name.len() + 1 + suffix.len() <= 253 {
        return format!("{name}-{suffix}");
    }
    let hash = short_hash(name, 8);
    let keep = 253 - suffix.len() - hash.len() - 2;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = name[..cut].trim_end_matches(['-', '.']);
    format!("{head}-{hash}-{suffix}")
}

/// The members a new run must avoid: those the job excludes, those earlier runs ran on, and every
/// member paid into the wallet of an earlier run (one provider's two clusters are not two
/// opinions). Sorted.
pub fn excluded(
    job: &ComputeJob,
    runs: &[(String, Option<EvmAddress>)],
    members: &[std::sync::Arc<MemberCluster>],
) -> Vec<String> {
    let mut out: BTreeSet<String> = job
        .spec
        .exclude_clusters
        .iter()
        .flatten()
        .cloned()
        .collect();
    let wallets: BTreeSet<String> = runs
        .iter()
        .filter_map(|(_, w)| w.as_ref())
        .map(|w| w.as_str().to_lowercase())
        .collect();
    for (cluster, _) in runs {
        out.insert(cluster.clone());
    }
    for m in members {
        let wallet = m.spec.wallet.as_ref().map(|w| w.as_str().to_lowercase());
        if wallet.is_some_and(|w| wallets.contains(&w)) {
            out.insert(m.name_any());
        }
    }
    out.into_iter().collect()
}

/// The spec of a check run of `job`: the job's, without `resultCheck`, excluding `exclude`, and
/// with each output stored under `<prefix>gpufed-<role>/` so that it does not overwrite the job's
/// own.
pub fn run_spec(job: &ComputeJob, role: RunRole, exclude: Vec<String>) -> ComputeJobSpec {
    let mut spec = job.spec.clone();
    spec.result_check = None;
    spec.exclude_clusters = (!exclude.is_empty()).then_some(exclude);
    for o in &mut spec.template.outputs {
        if !o.prefix.is_empty() && !o.prefix.ends_with('/') {
            o.prefix.push('/');
        }
        o.prefix.push_str(&format!("gpufed-{}/", role.as_str()));
    }
    spec
}

/// The check run `role` of `job` (which must have a UID), excluding `exclude`.
pub fn run_job(job: &ComputeJob, role: RunRole, exclude: Vec<String>) -> Option<ComputeJob> {
    let uid = job.metadata.uid.clone()?;
    let mut labels = BTreeMap::from([
        (LABEL_RESULT_CHECK_OF.to_string(), uid.clone()),
        (
            LABEL_RESULT_CHECK_ROLE.to_string(),
            role.as_str().to_string(),
        ),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    // The job's own labels travel (a team's cost labels, say), never over the check's.
    for (k, v) in job.labels() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Some(ComputeJob {
        metadata: ObjectMeta {
            name: Some(run_name(&job.name_any(), role)),
            namespace: job.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "gpufed.io/v1alpha1".into(),
                kind: "ComputeJob".into(),
                name: job.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]),
            ..Default::default()
        },
        spec: run_spec(job, role, exclude),
        status: None,
    })
}

/// Whether `found` is the check run `role` of `job` the hub would make: its labels and owner name
/// the job, its spec is the one made from the job (priority aside, which the namespace may change),
/// and it excludes at least `must_exclude`.
pub fn is_run_of(
    job: &ComputeJob,
    found: &ComputeJob,
    role: RunRole,
    must_exclude: &[String],
) -> bool {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return false;
    };
    let labels = found.labels();
    let owned = found
        .owner_references()
        .iter()
        .any(|o| o.kind == "ComputeJob" && o.uid == uid);
    if labels.get(LABEL_RESULT_CHECK_OF).map(String::as_str) != Some(uid)
        || labels.get(LABEL_RESULT_CHECK_ROLE).map(String::as_str) != Some(role.as_str())
        || !owned
    {
        return false;
    }
    let excludes = found.spec.exclude_clusters.clone().unwrap_or_default();
    if !must_exclude.iter().all(|c| excludes.contains(c)) {
        return false;
    }
    let mut want = run_spec(job, role, excludes);
    want.priority = found.spec.priority;
    want.priority_class_name = found.spec.priority_class_name.clone();
    want == found.spec
}

/// What the hub does next about a job's check.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing now.
    Nothing,
    /// Write the check's status (and its condition).
    Write(ResultCheckStatus),
    /// Make the check run `job` (role `role`), then record it in `status` with its UID; when a
    /// run of that name exists already, look again at the next pass.
    Create {
        /// The run.
        job: Box<ComputeJob>,
        /// Its role.
        role: RunRole,
        /// The status to write once made (the run's UID filled in).
        status: ResultCheckStatus,
    },
    /// The referee decided (or three results differ): keep the evidence, tell the loser, write.
    Verdict(Box<Verdict>),
}

/// The end of a dispute.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The job's check status to write (its `evidence` and `evidenceSha256` filled in).
    pub status: ResultCheckStatus,
    /// The record.
    pub evidence: DisputeEvidence,
    /// The member that lost, with the attempt's model and GPUs.
    pub loser: Option<Loser>,
}

/// The member that lost a dispute.
#[derive(Clone, Debug, PartialEq)]
pub struct Loser {
    /// Member name.
    pub cluster: String,
    /// GPU model of its run.
    pub model: String,
    /// GPUs of its run.
    pub gpus: u32,
}

/// One run in a dispute's evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRun {
    /// Which run.
    pub role: String,
    /// ComputeJob name.
    pub job: String,
    /// Its UID.
    pub uid: String,
    /// Member it ran on.
    pub cluster: String,
    /// Wallet it paid.
    pub provider: Option<String>,
    /// Succeeded attempt.
    pub attempt: u32,
    /// GPU model.
    pub model: String,
    /// The result compared.
    pub result: RunResult,
    /// sha256 of `result`.
    pub digest: String,
}

/// The canonical record a dispute is decided on; its sha256 keys a slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeEvidence {
    /// [`EVIDENCE_VERSION`].
    pub version: u32,
    /// Always `ResultDispute` (a challenge's record has none).
    pub kind: String,
    /// The pool.
    pub pool: String,
    /// Namespace of the job.
    pub namespace: String,
    /// The checked job.
    pub job: String,
    /// Its UID.
    pub uid: String,
    /// sha256 of the canonical JSON of the job's spec (what every run ran).
    pub spec_sha256: String,
    /// Whether outputs were compared.
    pub include_outputs: bool,
    /// The job, its replica and its referee.
    pub runs: Vec<EvidenceRun>,
    /// `Resolved` or `Inconclusive`.
    pub verdict: String,
    /// The member the two others contradict (`Resolved`).
    pub loser: Option<String>,
    /// The verdict in a sentence.
    pub message: String,
    /// When the hub decided (RFC 3339).
    pub judged: String,
}

impl DisputeEvidence {
    /// The canonical bytes (JSON, fields in declaration order).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// sha256 of [`DisputeEvidence::canonical`], hex.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    /// Name of the ConfigMap that keeps it in the hub's jobs namespace.
    pub fn config_map_name(&self) -> String {
        format!("dispute-{}", short_hash(&self.uid, 16))
    }
}

fn ended(mut st: ResultCheckStatus, phase: ResultCheckPhase, message: String, now: &Time) -> Step {
    st.phase = phase;
    st.message = Some(crate::hub::context::truncate(&message, 1024));
    st.time = Some(now.clone());
    Step::Write(st)
}

fn secs_since(t: Option<&Time>, now: &Time) -> i64 {
    t.map_or(i64::MAX, |t| now.0.as_second() - t.0.as_second())
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// `st` moved to `phase` with `runs` and a new, unfinished run `role` (`name`, `uid`) after them.
#[allow(clippy::too_many_arguments)]
fn with_run(
    st: &ResultCheckStatus,
    runs: &[ResultRun],
    phase: ResultCheckPhase,
    role: RunRole,
    name: String,
    uid: String,
    message: String,
    now: &Time,
) -> ResultCheckStatus {
    let mut next = st.clone();
    next.phase = phase;
    next.runs = runs.to_vec();
    next.runs.push(ResultRun {
        role,
        job: name,
        uid,
        cluster: None,
        attempt: None,
        digest: None,
    });
    next.time = Some(now.clone());
    next.message = Some(message);
    next
}

/// What the hub does next for `job` (which has `spec.resultCheck`). `find` looks a ComputeJob of
/// the job's namespace up by name in the cache; `members` are the hub's members.
pub fn next_step(
    job: &ComputeJob,
    find: &dyn Fn(&str) -> Option<std::sync::Arc<ComputeJob>>,
    members: &[std::sync::Arc<MemberCluster>],
    now: &Time,
) -> Step {
    let Some(check) = job.spec.result_check.as_ref() else {
        return Step::Nothing;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Step::Nothing;
    }
    let st = job
        .status
        .as_ref()
        .and_then(|s| s.result_check.as_deref().cloned())
        .unwrap_or_default();
    if st.phase.is_final() {
        return Step::Nothing;
    }
    let include = check.include_outputs;
    let original = match run_state(job, include) {
        RunState::Going => return Step::Nothing,
        RunState::Failed(why) => {
            return ended(
                st,
                ResultCheckPhase::Abandoned,
                format!("the job did not succeed ({why}): there is no result to check"),
                now,
            );
        }
        RunState::Succeeded(o) => o,
    };
    if original.result.is_empty() {
        return ended(
            st,
            ResultCheckPhase::Abandoned,
            "nothing to compare: the job's containers wrote no termination message and stored \
             no output; write the result (e.g. its sha256) to /dev/termination-log"
                .into(),
            now,
        );
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let mut runs = vec![ResultRun {
        role: RunRole::Original,
        job: job.name_any(),
        uid,
        cluster: Some(original.cluster.clone()),
        attempt: Some(original.attempt),
        digest: Some(original.result.digest()),
    }];
    let mut outcomes = vec![(*original).clone()];
    for role in [RunRole::Replica, RunRole::Referee] {
        let done: Vec<(String, Option<EvmAddress>)> = outcomes
            .iter()
            .map(|o| (o.cluster.clone(), o.provider.clone()))
            .collect();
        let must_exclude: Vec<String> = done.iter().map(|(c, _)| c.clone()).collect();
        let recorded = st.runs.iter().find(|r| r.role == role).cloned();
        let name = run_name(&job.name_any(), role);
        let found = find(&name);
        let phase = match role {
            RunRole::Referee => ResultCheckPhase::Refereeing,
            _ => ResultCheckPhase::Replicating,
        };
        let run = match (recorded, found) {
            (None, Some(f)) if is_run_of(job, &f, role, &must_exclude) => {
                // Made by a pass that did not live to record it.
                let uid = f.metadata.uid.clone().unwrap_or_default();
                let message = format!("{} {} adopted", role.as_str(), f.name_any());
                return Step::Write(with_run(&st, &runs, phase, role, name, uid, message, now));
            }
            (None, Some(_)) => {
                return ended(
                    st,
                    ResultCheckPhase::Abandoned,
                    format!(
                        "a ComputeJob named {name} exists and is not this job's {}: the check \
                         cannot run it; delete or rename that job and re-create this one",
                        role.as_str()
                    ),
                    now,
                );
            }
            (None, None) => {
                let exclude = excluded(job, &done, members);
                if exclude.len() > 64 {
                    return ended(
                        st,
                        ResultCheckPhase::Abandoned,
                        format!(
                            "the {} would have to exclude {} members, more than \
                             spec.excludeClusters holds (64)",
                            role.as_str(),
                            exclude.len()
                        ),
                        now,
                    );
                }
                let Some(child) = run_job(job, role, exclude) else {
                    return Step::Nothing;
                };
                let message = match role {
                    RunRole::Referee => format!(
                        "the job's result ({}…, on {}) and its replica's ({}…, on {}) differ: a \
                         referee runs on a member that ran neither",
                        short(runs[0].digest.as_deref().unwrap_or("")),
                        runs[0].cluster.as_deref().unwrap_or(""),
                        short(runs[1].digest.as_deref().unwrap_or("")),
                        runs[1].cluster.as_deref().unwrap_or(""),
                    ),
                    _ => format!(
                        "the job succeeded on {}: its replica runs on another member",
                        original.cluster
                    ),
                };
                return Step::Create {
                    job: Box::new(child),
                    role,
                    status: with_run(&st, &runs, phase, role, name, String::new(), message, now),
                };
            }
            (Some(r), found) => {
                let ours = found.filter(|f| f.metadata.uid.as_deref() == Some(r.uid.as_str()));
                match ours {
                    Some(f) => f,
                    None if secs_since(st.time.as_ref(), now) < MISSING_GRACE_SECS => {
                        return Step::Nothing;
                    }
                    None => {
                        return ended(
                            st,
                            ResultCheckPhase::Abandoned,
                            format!(
                                "the {} {} was deleted before it finished: no verdict",
                                role.as_str(),
                                r.job
                            ),
                            now,
                        );
                    }
                }
            }
        };
        let outcome = match run_state(&run, include) {
            RunState::Going => return Step::Nothing,
            RunState::Failed(why) => {
                return ended(
                    st,
                    ResultCheckPhase::Abandoned,
                    format!(
                        "the {} {} did not succeed ({why}): no verdict",
                        role.as_str(),
                        run.name_any()
                    ),
                    now,
                );
            }
            RunState::Succeeded(o) => o,
        };
        if must_exclude.contains(&outcome.cluster) {
            return ended(
                st,
                ResultCheckPhase::Abandoned,
                format!(
                    "the {} {} ran on {}, which ran an earlier run: no verdict",
                    role.as_str(),
                    run.name_any(),
                    outcome.cluster
                ),
                now,
            );
        }
        runs.push(ResultRun {
            role,
            job: run.name_any(),
            uid: run.metadata.uid.clone().unwrap_or_default(),
            cluster: Some(outcome.cluster.clone()),
            attempt: Some(outcome.attempt),
            digest: Some(outcome.result.digest()),
        });
        outcomes.push(*outcome);
        if role == RunRole::Replica && outcomes[0].result == outcomes[1].result {
            let mut next = st.clone();
            next.runs = runs;
            return ended(
                next,
                ResultCheckPhase::Agreed,
                format!(
                    "the results on {} and {} agree (sha256 {}…)",
                    outcomes[0].cluster,
                    outcomes[1].cluster,
                    short(&outcomes[0].result.digest())
                ),
                now,
            );
        }
    }
    Step::Verdict(Box::new(verdict(job, st, runs, &outcomes, now)))
}

fn verdict(
    job: &ComputeJob,
    st: ResultCheckStatus,
    runs: Vec<ResultRun>,
    outcomes: &[Outcome],
    now: &Time,
) -> Verdict {
    let [orig, replica, referee] = [&outcomes[0], &outcomes[1], &outcomes[2]];
    let gpus = job.status.as_ref().map_or(0, |s| s.gpus);
    let (phase, loser, message) = if referee.result == orig.result {
        (
            ResultCheckPhase::Resolved,
            Some(replica),
            format!(
                "the referee on {} agrees with the job's result on {}: the replica's result on \
                 {} is wrong",
                referee.cluster, orig.cluster, replica.cluster
            ),
        )
    } else if referee.result == replica.result {
        (
            ResultCheckPhase::Resolved,
            Some(orig),
            format!(
                "the referee on {} agrees with the replica on {}: the job's result on {} is \
                 wrong; the replica's ({}) is right",
                referee.cluster, replica.cluster, orig.cluster, runs[1].job
            ),
        )
    } else {
        (
            ResultCheckPhase::Inconclusive,
            None,
            format!(
                "three results: the job's on {}, the replica's on {} and the referee's on {} all \
                 differ; the job is not deterministic or more than one member is wrong, and \
                 nobody is blamed",
                orig.cluster, replica.cluster, referee.cluster
            ),
        )
    };
    let evidence = DisputeEvidence {
        version: EVIDENCE_VERSION,
        kind: "ResultDispute".into(),
        pool: job.spec.pool.clone(),
        namespace: job.namespace().unwrap_or_default(),
        job: job.name_any(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        spec_sha256: hex::encode(Sha256::digest(
            serde_json::to_vec(&job.spec).unwrap_or_default(),
        )),
        include_outputs: job
            .spec
            .result_check
            .as_ref()
            .is_some_and(|c| c.include_outputs),
        runs: runs
            .iter()
            .zip(outcomes)
            .map(|(r, o)| EvidenceRun {
                role: r.role.as_str().into(),
                job: r.job.clone(),
                uid: r.uid.clone(),
                cluster: o.cluster.clone(),
                provider: o.provider.as_ref().map(|p| p.as_str().to_string()),
                attempt: o.attempt,
                model: o.model.clone(),
                result: o.result.clone(),
                digest: o.result.digest(),
            })
            .collect(),
        verdict: format!("{phase:?}"),
        loser: loser.map(|l| l.cluster.clone()),
        message: message.clone(),
        judged: now.0.to_string(),
    };
    let mut status = st;
    status.phase = phase;
    status.runs = runs;
    status.loser = loser.map(|l| l.cluster.clone());
    status.evidence = Some(evidence.config_map_name());
    status.evidence_sha256 = Some(evidence.sha256());
    status.message = Some(crate::hub::context::truncate(&message, 1024));
    status.time = Some(now.clone());
    Verdict {
        status,
        loser: loser.map(|l| Loser {
            cluster: l.cluster.clone(),
            model: l.model.clone(),
            gpus,
        }),
        evidence,
    }
}

/// The job condition [`jc::RESULT_VERIFIED`] for a check in `st`.
pub fn condition(st: &ResultCheckStatus, generation: Option<i64>, now: &Time) -> Condition {
    let (status, reason) = match st.phase {
        ResultCheckPhase::Agreed => ("True", "ResultsAgree"),
        ResultCheckPhase::Resolved
            if st.runs.first().and_then(|r| r.cluster.as_ref()) != st.loser.as_ref() =>
        {
            ("True", "ResultUpheld")
        }
        ResultCheckPhase::Resolved => ("False", "ResultContradicted"),
        ResultCheckPhase::Inconclusive => ("False", "ResultsDiffer"),
        ResultCheckPhase::Abandoned => ("False", "CheckAbandoned"),
        ResultCheckPhase::Waiting => ("Unknown", "Waiting"),
        ResultCheckPhase::Replicating => ("Unknown", "Replicating"),
        ResultCheckPhase::Refereeing => ("Unknown", "Refereeing"),
    };
    Condition {
        type_: jc::RESULT_VERIFIED.into(),
        status: status.into(),
        reason: reason.into(),
        message: st.message.clone().unwrap_or_default(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The member verdict for losing the dispute in `verdict`: failed, [`WRONG_TENANT_RESULT`], keyed
/// by the evidence hash; `inventory` is the member's current inventory fingerprint, so the verdict
/// holds until its GPUs change or it passes a challenge; the harm is counted from the previous
/// verdict's last pass.
pub fn member_verdict(
    job: &ComputeJob,
    verdict: &Verdict,
    loser: &Loser,
    inventory: String,
    previous: Option<&gpufed_crds::MemberVerification>,
    now: &Time,
) -> gpufed_crds::MemberVerification {
    gpufed_crds::MemberVerification {
        verdict: gpufed_crds::VerificationVerdict::Failed,
        reason: WRONG_TENANT_RESULT.into(),
        message: crate::hub::context::truncate(&verdict.evidence.message, 1024),
        time: now.clone(),
        challenge: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        evidence_sha256: verdict.evidence.sha256(),
        evidence: verdict.evidence.config_map_name(),
        inventory,
        gpus: loser.gpus,
        model: loser.model.clone(),
        answer_seconds: None,
        last_passed_time: previous.and_then(|p| p.last_passed_time.clone()),
    }
}

#[cfg(test)]
#[path = "result_check_tests.rs"]
mod tests;
