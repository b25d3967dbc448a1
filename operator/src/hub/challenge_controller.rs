//! The challenge loop (ADR 0027): every [`TICK`], for each member of a pool with
//! `spec.verification`, judges its open challenge (answer in, deadline passed, or ended without
//! one), records the verdict, and sends a new challenge when one is due (no verdict yet, inventory
//! changed, or its random time came). What to do is decided by [`crate::hub::challenges`]; this
//! module reads the caches and the clock, draws the randomness and makes the writes.
//!
//! Writes go through the hub's fenced client (ADR 0016): a replica that lost the Lease writes
//! nothing. The verdict is applied to `MemberCluster.status` under its own field manager
//! [`MANAGER`], so the member controller's status writes never take it over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpufed_crds::conditions::{self, member as mc};
use gpufed_crds::naming::{
    HUB_JOBS_NAMESPACE, LABEL_MANAGED_BY, LABEL_VERIFIES, MANAGED_BY, short_hash,
};
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, VerificationVerdict};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use rand::Rng;

use crate::error::{Error, Result};
use crate::hub::challenges::{self, Judgement, Written};
use crate::hub::context::{Context, now};

/// How often the loop looks at every member. The hub-side deadline is measured at the pass that
/// first sees an answer, so it may run up to this much late.
pub const TICK: Duration = Duration::from_secs(2);

/// Field manager of the verdicts in `MemberCluster.status`.
pub const MANAGER: &str = "gpufed-hub-verification";

/// What the loop remembers between passes (leader memory; a new leader draws again).
#[derive(Default)]
struct Memory {
    /// Member → when its next random challenge is due. Kept here, not in the member's status,
    /// which the member can read.
    next: HashMap<String, Time>,
    /// Member → the loop's last write about it and when, until the caches show it
    /// ([`challenges::caught_up`]).
    written: HashMap<String, (Written, Instant)>,
}

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let mut memory = Memory::default();
    loop {
        tokio::time::sleep(TICK).await;
        if let Err(e) = pass(&ctx, &mut memory).await {
            tracing::warn!(error = %e, "challenge pass failed; retrying");
        }
    }
}

async fn pass(ctx: &Context, memory: &mut Memory) -> Result<()> {
    let jobs = ctx.stores.jobs.state();
    let members = ctx.stores.members.state();
    let all_pools = ctx.stores.pools.state();
    for orphan in challenges::orphans(&jobs, &members, &all_pools) {
        tracing::info!(challenge = %orphan, "removing a challenge whose member or pool verification is gone");
        delete(ctx, &orphan).await?;
    }
    let pools: Vec<Arc<GpuPool>> = all_pools
        .into_iter()
        .filter(|p| p.spec.verification.is_some())
        .collect();
    if pools.is_empty() {
        return Ok(());
    }
    for member in members {
        let Some(pool) = pools.iter().find(|p| p.name_any() == member.spec.pool) else {
            continue;
        };
        if let Err(e) = member_pass(ctx, memory, &member, pool, &jobs).await {
            tracing::warn!(member = %member.name_any(), error = %e, "challenging a member");
        }
    }
    Ok(())
}

/// Judges the open challenges of `member`, then sends a new one if it is due.
async fn member_pass(
    ctx: &Context,
    memory: &mut Memory,
    member: &MemberCluster,
    pool: &GpuPool,
    jobs: &[Arc<ComputeJob>],
) -> Result<()> {
    let name = member.name_any();
    if let Some((written, at)) = memory.written.get(&name) {
        if !challenges::caught_up(written, at.elapsed(), member, jobs) {
            return Ok(());
        }
        memory.written.remove(&name);
    }
    let now = now();
    let judged = member
        .status
        .as_ref()
        .and_then(|s| s.verification.as_ref())
        .map(|v| v.challenge.clone());
    let mut open = false;
    // A verdict recorded in this pass: the member in hand predates it, so whether a new challenge
    // is due is decided in a later pass, once the cache shows the verdict.
    let mut judged_now = false;
    for job in jobs
        .iter()
        .filter(|j| challenges::verifies(j) == Some(name.as_str()))
    {
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let job_name = job.name_any();
        if judged.as_deref() == Some(job_name.as_str()) {
            // Judged in an earlier pass whose delete did not happen.
            delete(ctx, &job_name).await?;
            continue;
        }
        // How long it may wait to be placed (it needs a whole node free) before it is abandoned:
        // not a verdict, nothing recorded on the member, nothing slashed; the next one is sent.
        let placement_deadline = pool
            .spec
            .verification
            .as_ref()
            .map_or(30 * 60, |v| v.placement_deadline.as_secs_ceil());
        if let Some(why) = challenges::abandoned(job, &now, placement_deadline) {
            ctx.event(member, true, "ChallengeNotPlaced", "Challenge", why.clone());
            tracing::info!(member = %name, challenge = %job_name, %why, "challenge abandoned");
            memory.written.insert(
                name.clone(),
                (Written::Abandoned(job_name.clone()), Instant::now()),
            );
            memory.next.remove(&name);
            judged_now = true;
            delete(ctx, &job_name).await?;
            continue;
        }
        // The groups are drawn now, after the answer (if any) is in.
        let groups = draw_groups();
        let inventory = member.status.as_ref().and_then(|s| s.inventory.as_ref());
        match challenges::judge(job, pool, inventory, &groups, &now) {
            Some(judgement) => {
                record(ctx, member, pool, &job_name, &judgement, &now).await?;
                memory.written.insert(
                    name.clone(),
                    (Written::Judged(job_name.clone()), Instant::now()),
                );
                memory.next.remove(&name);
                judged_now = true;
                delete(ctx, &job_name).await?;
            }
            None => open = true,
        }
    }
    if open || judged_now {
        return Ok(());
    }
    let Some(spec) = pool.spec.verification.as_ref() else {
        return Ok(());
    };
    let status = member.status.as_ref();
    let ready = status.is_some_and(|s| conditions::is_true(&s.conditions, mc::READY));
    let Some(inventory) = status.and_then(|s| s.inventory.as_ref()) else {
        return Ok(());
    };
    if !ready || member.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    // A failed verdict waiting to be slashed stays in the status until the slash is proposed.
    if spec.slash.is_some() && crate::hub::slashing::holds_challenges(member) {
        return Ok(());
    }
    let fingerprint = challenges::inventory_fingerprint(inventory);
    if !memory.next.contains_key(&name)
        && let Some(next) = challenges::next_challenge(spec, &now, rand::rng().random::<f64>())
    {
        memory.next.insert(name.clone(), next);
    }
    let Some(trigger) = challenges::due(member, &fingerprint, memory.next.get(&name), &now) else {
        return Ok(());
    };
    let Some(target) = challenges::target_for(member, trigger, rand::rng().random::<f64>()) else {
        return Ok(());
    };
    let nonce: [u8; 32] = rand::rng().random();
    // A name like any other: nothing in it says challenge.
    let job_name = format!("j-{}", short_hash(&hex::encode(nonce), 12));
    let Some(job) = challenges::challenge_job(
        pool,
        &name,
        &target,
        &job_name,
        nonce,
        &fingerprint,
        trigger,
    ) else {
        return Ok(());
    };
    Api::<ComputeJob>::namespaced(ctx.client.clone(), HUB_JOBS_NAMESPACE)
        .create(&PostParams::default(), &job)
        .await
        .map_err(Error::kube(format!("creating challenge {job_name}")))?;
    memory.written.insert(
        name.clone(),
        (Written::Sent(job_name.clone()), Instant::now()),
    );
    memory.next.remove(&name);
    tracing::info!(member = %name, challenge = %job_name, trigger = trigger.as_str(),
        gpus = target.gpus, model = %target.model, "challenge sent");
    ctx.schedule.notify_one();
    Ok(())
}

/// [`challenges::CHECKED_GROUPS`] distinct row groups, drawn from the hub's CSPRNG.
fn draw_groups() -> Vec<usize> {
    let mut rng = rand::rng();
    rand::seq::index::sample(
        &mut rng,
        gpu_probe::challenge::GROUPS,
        challenges::CHECKED_GROUPS,
    )
    .into_vec()
}

/// Keeps the evidence, writes the verdict into the member's status, and tells people.
async fn record(
    ctx: &Context,
    member: &MemberCluster,
    pool: &GpuPool,
    challenge: &str,
    judgement: &Judgement,
    now: &Time,
) -> Result<()> {
    let name = member.name_any();
    let evidence_name = format!("evidence-{challenge}");
    let record = &judgement.evidence;
    keep_evidence(
        ctx,
        &evidence_name,
        (LABEL_VERIFIES, &name),
        record.canonical(),
        record.sha256(),
    )
    .await?;
    let mut verification =
        challenges::member_verification(judgement, challenge, &evidence_name, now);
    verification.last_passed_time = crate::hub::slashing::last_passed(
        &verification,
        member.status.as_ref().and_then(|s| s.verification.as_ref()),
    );
    let passed = verification.verdict == VerificationVerdict::Passed;
    let evidence = verification.evidence_sha256.clone();
    let reason = verification.reason.clone();
    apply_verdict(ctx, member, verification, "Challenge", now).await?;
    let verdict = if passed { "Passed" } else { "Failed" };
    ctx.metrics
        .challenges
        .with_label_values(&[&pool.name_any(), verdict])
        .inc();
    tracing::info!(member = %name, %challenge, verdict, %reason, %evidence, "challenge judged");
    Ok(())
}

/// Whether [`keep_evidence`] made the ConfigMap or found one of that name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Made now.
    Created,
    /// One of that name was kept already (by an earlier pass); it was left as it is.
    Existing,
}

/// Keeps an evidence record (`canonical` JSON and its `sha256`) as ConfigMap `name` in the hub's
/// jobs namespace, labelled managed-by gpufed and `label`; one of that name already kept is left
/// as it is. Shared by challenge verdicts and result disputes (ADR 0034).
pub(crate) async fn keep_evidence(
    ctx: &Context,
    name: &str,
    label: (&str, &str),
    canonical: Vec<u8>,
    sha256: String,
) -> Result<Kept> {
    let canonical = String::from_utf8(canonical)
        .map_err(|e| Error::Config(format!("evidence {name} is not UTF-8: {e}")))?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(HUB_JOBS_NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                (label.0.to_string(), label.1.to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("evidence.json".to_string(), canonical),
            ("sha256".to_string(), sha256),
        ])),
        ..Default::default()
    };
    match Api::<ConfigMap>::namespaced(ctx.client.clone(), HUB_JOBS_NAMESPACE)
        .create(&PostParams::default(), &cm)
        .await
    {
        Ok(_) => Ok(Kept::Created),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Kept::Existing),
        Err(e) => Err(Error::kube(format!("keeping evidence {name}"))(e)),
    }
}

/// Writes `verification` as `member`'s verdict (and its `Verified` condition, saying
/// [`challenges::verdict_message`]) under [`MANAGER`], with an Event (`action`) and a scheduling
/// pass, since a verdict changes where tenant jobs may go. Shared by challenges and lost result
/// disputes (ADR 0034).
pub(crate) async fn apply_verdict(
    ctx: &Context,
    member: &MemberCluster,
    verification: gpufed_crds::MemberVerification,
    action: &str,
    now: &Time,
) -> Result<()> {
    let name = member.name_any();
    let message = challenges::verdict_message(&verification);
    let passed = verification.verdict == VerificationVerdict::Passed;
    let mut conds = member
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions::set_condition(
        &mut conds,
        conditions::condition(
            mc::VERIFIED,
            passed,
            &verification.reason,
            message.clone(),
            member.metadata.generation,
            now.clone(),
        ),
    );
    let verified = conds
        .into_iter()
        .filter(|c| c.type_ == mc::VERIFIED)
        .collect::<Vec<_>>();
    let evidence = verification.evidence_sha256.clone();
    let body = serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": name},
        "status": {"verification": verification, "conditions": verified},
    });
    Api::<MemberCluster>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!("writing the verdict on {name}")))?;
    ctx.event(
        member,
        !passed,
        if passed {
            "Verified"
        } else {
            "VerificationFailed"
        },
        action,
        format!("{message}; evidence sha256 {evidence}"),
    );
    ctx.schedule.notify_one();
    Ok(())
}

async fn delete(ctx: &Context, job: &str) -> Result<()> {
    match Api::<ComputeJob>::namespaced(ctx.client.clone(), HUB_JOBS_NAMESPACE)
        .delete(job, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting challenge {job}"))(e)),
    }
}
