//! The result-check loop (ADR 0034): every [`TICK`], for each job with `spec.resultCheck` whose
//! check is not over, asks [`crate::hub::result_check::next_step`] what to do and does it: makes
//! the replica or referee ComputeJob, records a run's result, or, once the referee has run, keeps
//! the evidence record in the hub's jobs namespace, tells the member that lost (a warning Event,
//! and where the pool says `verification.lostDisputes: Fail`, a failed verdict the slashing loop
//! acts on) and writes the verdict on the job.
//!
//! Writes go through the hub's fenced client (ADR 0016). The job's status is written guarded by
//! the resourceVersion it was computed from, like every status write of the hub: a pass that lost
//! a race writes nothing and the next pass decides again from fresh state. The evidence record is
//! kept before the verdict that names it, and a record of that name found kept already is used
//! as is, so a pass repeated after a crash changes nothing.

use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::conditions;
use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::{ComputeJob, LostDisputes, MemberCluster, ResultCheckStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use crate::error::{Error, Result};
use crate::hub::challenge_controller::Kept;
use crate::hub::context::{Context, now};
use crate::hub::result_check::{self, DisputeEvidence, Step, Verdict};
use crate::hub::status::write_namespaced;

/// How often the loop looks at the checked jobs.
pub const TICK: Duration = Duration::from_secs(2);

/// Label on a dispute's evidence ConfigMap holding the checked job's UID.
pub const LABEL_DISPUTE_OF: &str = "gpufed.io/dispute-of";

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    loop {
        tokio::time::sleep(TICK).await;
        let members = ctx.stores.members.state();
        for job in ctx.stores.jobs.state() {
            if job.spec.result_check.is_none() {
                continue;
            }
            if let Err(e) = job_pass(&ctx, &job, &members).await {
                tracing::warn!(job = %job.name_any(), namespace = %job.namespace().unwrap_or_default(),
                    error = %e, "checking a job's result; retrying");
            }
        }
    }
}

async fn job_pass(ctx: &Context, job: &ComputeJob, members: &[Arc<MemberCluster>]) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    let jobs = ctx.stores.jobs.clone();
    let find = |name: &str| jobs.get(&ObjectRef::new(name).within(&ns));
    let now = now();
    match result_check::next_step(job, &find, members, &now) {
        Step::Nothing => Ok(()),
        Step::Write(st) => write(ctx, job, st, &now).await,
        Step::Create {
            job: run,
            role,
            mut status,
        } => {
            let made = match Api::<ComputeJob>::namespaced(ctx.client.clone(), &ns)
                .create(&PostParams::default(), &run)
                .await
            {
                Ok(made) => made,
                // Made by an earlier pass (or by someone else): the next pass adopts or refuses it.
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 403 => {
                    // The apiserver refused the run itself: say why, once, and stop.
                    status.phase = gpufed_crds::ResultCheckPhase::Abandoned;
                    status.runs.pop();
                    status.message = Some(crate::hub::context::truncate(
                        &format!("the {} could not be made: {}", role.as_str(), s.message),
                        1024,
                    ));
                    return write(ctx, job, status, &now).await;
                }
                Err(e) => {
                    return Err(Error::kube(format!(
                        "making the {} of a job",
                        role.as_str()
                    ))(e));
                }
            };
            if let Some(r) = status.runs.last_mut() {
                r.uid = made.metadata.uid.clone().unwrap_or_default();
            }
            tracing::info!(job = %job.name_any(), namespace = %ns, run = %made.name_any(),
                role = role.as_str(), "result check run made");
            ctx.event(
                job,
                false,
                "ResultCheckRun",
                "ResultCheck",
                format!(
                    "{}; made the {} {}",
                    status.message.clone().unwrap_or_default(),
                    role.as_str(),
                    made.name_any()
                ),
            );
            write(ctx, job, status, &now).await
        }
        Step::Verdict(v) => verdict(ctx, job, *v, &now).await,
    }
}

/// Writes `st` as the job's check status, with its condition; Events for a final phase.
async fn write(ctx: &Context, job: &ComputeJob, st: ResultCheckStatus, now: &Time) -> Result<()> {
    let mut status = job.status.clone().unwrap_or_default();
    let cond = result_check::condition(&st, job.metadata.generation, now);
    let final_phase = st.phase.is_final();
    let (warning, message) = (
        cond.status != "True",
        st.message.clone().unwrap_or_default(),
    );
    let reason = cond.reason.clone();
    conditions::set_condition(&mut status.conditions, cond);
    status.result_check = Some(Box::new(st));
    if write_namespaced(&ctx.client, job, &status).await? == crate::hub::status::Written::Yes
        && final_phase
    {
        ctx.event(job, warning, &reason, "ResultCheck", message);
    }
    Ok(())
}

async fn verdict(ctx: &Context, job: &ComputeJob, mut v: Verdict, now: &Time) -> Result<()> {
    // A record kept by an earlier pass (whose later writes were lost) stands: its hash may
    // already key a verdict or a slash.
    v.evidence = keep_evidence(ctx, &v).await?;
    v.status.evidence_sha256 = Some(v.evidence.sha256());
    v.status.message = Some(crate::hub::context::truncate(&v.evidence.message, 1024));
    if let Some(loser) = v.loser.as_ref() {
        let member = ctx.stores.member(&loser.cluster);
        let pool = ctx.stores.pool(&job.spec.pool);
        let fails = pool
            .as_ref()
            .and_then(|p| p.spec.verification.as_ref())
            .is_some_and(|s| s.lost_disputes == LostDisputes::Fail);
        if let Some(member) = member {
            let already = member
                .status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|x| x.evidence_sha256 == v.evidence.sha256());
            let slashing = pool
                .as_ref()
                .and_then(|p| p.spec.verification.as_ref())
                .is_some_and(|s| s.slash.is_some());
            if fails && !already && slashing && crate::hub::slashing::holds_challenges(&member) {
                // The member's latest verdict still waits to be proposed as a slash: writing this
                // one over it would lose it. The next pass tries again.
                tracing::info!(member = %loser.cluster, job = %job.name_any(),
                    "a lost dispute waits for the member's previous verdict to be proposed");
                return Ok(());
            }
            if fails && !already {
                let status = member.status.as_ref();
                let inventory = status
                    .and_then(|s| s.inventory.as_ref())
                    .map(crate::hub::challenges::inventory_fingerprint)
                    .unwrap_or_default();
                let verification = result_check::member_verdict(
                    job,
                    &v,
                    loser,
                    inventory,
                    status.and_then(|s| s.verification.as_ref()),
                    now,
                );
                crate::hub::challenge_controller::apply_verdict(
                    ctx,
                    &member,
                    verification,
                    "ResultDispute",
                    now,
                )
                .await?;
            } else if !already {
                ctx.event(
                    member.as_ref(),
                    true,
                    "LostDispute",
                    "ResultDispute",
                    format!(
                        "lost the dispute over job {}/{}: {}; evidence sha256 {}",
                        job.namespace().unwrap_or_default(),
                        job.name_any(),
                        v.evidence.message,
                        v.evidence.sha256()
                    ),
                );
            }
        }
        tracing::warn!(job = %job.name_any(), loser = %loser.cluster,
            evidence = %v.evidence.sha256(), "result dispute resolved");
    }
    write(ctx, job, v.status, now).await
}

/// Keeps the evidence record as ConfigMap `dispute-<hash of the job's UID>` in the hub's jobs
/// namespace; returns the record kept, which is an earlier pass's when one was kept already.
async fn keep_evidence(ctx: &Context, v: &Verdict) -> Result<DisputeEvidence> {
    let name = v.evidence.config_map_name();
    let kept = crate::hub::challenge_controller::keep_evidence(
        ctx,
        &name,
        (LABEL_DISPUTE_OF, &v.evidence.uid),
        v.evidence.canonical(),
        v.evidence.sha256(),
    )
    .await?;
    match kept {
        Kept::Created => Ok(v.evidence.clone()),
        Kept::Existing => {
            let kept = Api::<ConfigMap>::namespaced(ctx.client.clone(), HUB_JOBS_NAMESPACE)
                .get(&name)
                .await
                .map_err(Error::kube(format!("reading evidence {name}")))?;
            let json = kept
                .data
                .as_ref()
                .and_then(|d| d.get("evidence.json"))
                .ok_or_else(|| Error::Config(format!("evidence {name} has no evidence.json")))?;
            let record: DisputeEvidence =
                serde_json::from_str(json).map_err(|source| Error::Serde {
                    context: format!("evidence {name}"),
                    source,
                })?;
            if record.uid != v.evidence.uid {
                return Err(Error::Config(format!(
                    "evidence {name} is about job UID {}, not {}",
                    record.uid, v.evidence.uid
                )));
            }
            Ok(record)
        }
    }
}
