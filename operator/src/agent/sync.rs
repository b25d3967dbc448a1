//! The placement sync: whenever a Placement, a local Job, a pod or a node changes (and at least
//! every `--inventory-interval`, to keep GPU-seconds fresh), plan from the caches
//! ([`plan`](super::plan)) and carry the steps out: create and delete local Jobs, write Placement
//! status with server-side apply under the agent's field manager, publish Events.
//!
//! Nothing runs while the agent is fenced off, and a step that creates a Job checks the fence again
//! right before it. A hub that fails is retried with backoff; since Job names are deterministic and
//! an existing Job counts as created, no retry can start a Job twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::{Placement, PlacementPhase, PlacementStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams};

use super::api::{
    API_TIMEOUT, FIELD_MANAGER, api_message, is_invalid, timed, timed_create, timed_opt,
};
use super::context::Context;
use super::job_builder;
use super::plan::{self, DeleteReason, Note, Step, View};
use super::report::{self, COMPLETION_INDEX, cut, ended};
use crate::backoff;
use crate::error::{Error, Result};
use gpufed_crds::placement::reasons::SEALED_SECRETS_INVALID;

/// Debounce after a wake-up, so a burst of watch events becomes one pass.
const SETTLE: Duration = Duration::from_millis(50);

/// Lines of a failed container's log added to its placement's message.
const LOG_TAIL_LINES: i64 = 10;
/// At most this much of them (the whole message is cut to 1000 bytes).
const LOG_TAIL_BYTES: i64 = 600;

/// Most groups of steps (jobs) carried out at once in a pass.
const MAX_IN_FLIGHT: usize = 16;

/// The steps of a plan grouped by the hub job they concern (`key`), in the order each group first
/// appears, each group in plan order: groups run concurrently, a job's steps one after the other
/// (a stale attempt's Job is deleted before the next attempt's is created; a Job exists before
/// its status says so).
pub fn group_steps(steps: &[Step], key: impl Fn(&Step) -> String) -> Vec<Vec<&Step>> {
    let mut order: Vec<String> = vec![];
    let mut groups: BTreeMap<String, Vec<&Step>> = BTreeMap::new();
    for step in steps {
        let k = key(step);
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(step);
    }
    order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .collect()
}

/// The hub job a step concerns: its UID when the placement, Job or Service shows it, else the
/// placement's or object's name.
fn step_key(
    step: &Step,
    placement_uid: &BTreeMap<String, String>,
    job_uid: &BTreeMap<String, String>,
) -> String {
    let by_placement = |p: &str| placement_uid.get(p).cloned();
    let label = |meta: &kube::api::ObjectMeta| {
        meta.labels
            .as_ref()?
            .get(gpufed_crds::naming::LABEL_JOB_UID)
            .cloned()
    };
    match step {
        Step::CreateJob { placement, job, .. } => label(&job.metadata)
            .or_else(|| by_placement(placement))
            .unwrap_or_else(|| placement.clone()),
        Step::DeleteJob {
            name, placement, ..
        } => job_uid
            .get(name)
            .cloned()
            .or_else(|| placement.as_deref().and_then(by_placement))
            .or_else(|| placement.clone())
            .unwrap_or_else(|| name.clone()),
        Step::WriteStatus { placement, .. }
        | Step::StopJob { placement, .. }
        | Step::ConfirmMissing { placement, .. }
        | Step::Ungate { placement, .. }
        | Step::SetDeadline { placement, .. } => {
            by_placement(placement).unwrap_or_else(|| placement.clone())
        }
        Step::CreateGangNetwork { service, .. } => {
            label(&service.metadata).unwrap_or_else(|| service.name_any())
        }
    }
}

/// The server-side apply body of a Placement's status.
pub fn status_body(
    placement: &str,
    status: &PlacementStatus,
    now: &Time,
) -> Result<serde_json::Value> {
    let mut status = status.clone();
    status.last_update_time = Some(now.clone());
    // Log answers belong to the field manager of agent::logs: never applied (nor removed) here.
    status.logs.clear();
    let status = serde_json::to_value(&status).map_err(|source| Error::Serde {
        context: "placement status".into(),
        source,
    })?;
    Ok(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Placement",
        "metadata": {"name": placement},
        "status": status,
    }))
}

struct Sync {
    ctx: Arc<Context>,
    placements: Api<Placement>,
    jobs: Api<Job>,
    highest: BTreeMap<String, u32>,
    /// Lock ids of the usage receipts already kept in the member's ConfigMap.
    receipts: BTreeSet<String>,
}

impl Sync {
    fn placement(&self, name: &str) -> Option<Arc<Placement>> {
        let ns = gpufed_crds::naming::member_namespace(&self.ctx.args.cluster);
        self.ctx.stores.placements.get(Some(&ns), name)
    }

    async fn note(&self, placement: &str, note: &Note) {
        if let Some(p) = self.placement(placement) {
            Context::event(
                &self.ctx.hub_events,
                p.as_ref(),
                note.warning,
                note.reason,
                note.message.clone(),
            );
        }
    }

    async fn write_status(&self, placement: &str, status: &PlacementStatus) -> Result<bool> {
        let body = status_body(placement, status, &Time(self.ctx.shared.member_now()))?;
        let written = timed_opt(
            format!("writing the status of Placement {placement}"),
            API_TIMEOUT,
            self.placements.patch_status(
                placement,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            ),
        )
        .await?;
        if written.is_none() {
            tracing::debug!(placement, "placement gone before its status was written");
        }
        Ok(written.is_some())
    }

    /// Refuses the attempt (Rejected, `reason`) with `message`, and says so in an Event.
    async fn refuse(&self, placement: &str, reason: &'static str, message: String) -> Result<()> {
        let rejected = ended(
            None,
            PlacementPhase::Rejected,
            reason,
            message.clone(),
            &Time(self.ctx.shared.member_now()),
        );
        if self.write_status(placement, &rejected).await? {
            self.note(
                placement,
                &Note {
                    warning: true,
                    reason: "Rejected",
                    message: format!("{reason}: {message}"),
                },
            )
            .await;
        }
        Ok(())
    }

    /// The tenant Secrets sealed into `placement`, opened with this agent's key: `Ok(None)` when
    /// the template uses none; `Err` with the message of a blob that is missing, does not open or
    /// is bound to another placement — the attempt is refused then, never run without them.
    fn open_secrets(
        &self,
        placement: &str,
    ) -> std::result::Result<Option<BTreeMap<String, crate::sealing::SecretPayload>>, String> {
        let Some(p) = self.placement(placement) else {
            return Ok(None);
        };
        match crate::sealing::open(&self.ctx.sealing, &p) {
            Some(Ok(secrets)) => Ok(Some(secrets)),
            Some(Err(e)) => Err(e.to_string()),
            None if p.spec.template.uses_secrets() => Err(
                "the template refers to Secrets but the placement carries none sealed (spec.sealedSecrets)"
                    .into(),
            ),
            None => Ok(None),
        }
    }

    /// Creates the local Secrets of `job` from the opened `secrets`; on failure deletes the Job
    /// again, so that the next pass creates both (the Accepted status is not written yet).
    async fn create_secrets(
        &self,
        placement: &str,
        job: &Job,
        secrets: &BTreeMap<String, crate::sealing::SecretPayload>,
    ) -> Result<()> {
        let Some(p) = self.placement(placement) else {
            return Ok(());
        };
        let ns = &self.ctx.args.jobs_namespace;
        let api: Api<Secret> = Api::namespaced(self.ctx.local.clone(), ns);
        for secret in job_builder::local_secrets(job, &p.spec.template, secrets) {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let made = timed_create(
                format!("creating local Secret {name}"),
                API_TIMEOUT,
                api.create(&PostParams::default(), &secret),
            )
            .await;
            if let Err(e) = made {
                let job_name = job.metadata.name.clone().unwrap_or_default();
                tracing::warn!(placement, job = %job_name, error = %e, "creating a local Secret failed; deleting the Job to try both again");
                let _ = timed_opt(
                    format!("deleting local Job {job_name}"),
                    API_TIMEOUT,
                    self.jobs.delete(&job_name, &DeleteParams::background()),
                )
                .await;
                return Err(e);
            }
        }
        tracing::info!(
            placement,
            secrets = secrets.len(),
            "created the attempt's local Secrets"
        );
        Ok(())
    }

    async fn create_job(&self, placement: &str, job: &Job, status: &PlacementStatus) -> Result<()> {
        if self.ctx.shared.is_fenced() {
            return Ok(());
        }
        let name = job.metadata.name.clone().unwrap_or_default();
        let secrets = match self.open_secrets(placement) {
            Ok(s) => s,
            Err(message) => {
                tracing::warn!(placement, %message, "refusing a placement whose sealed secrets are unusable");
                return self
                    .refuse(placement, SEALED_SECRETS_INVALID, message)
                    .await;
            }
        };
        let created = timed(
            format!("creating local Job {name}"),
            API_TIMEOUT,
            self.jobs.create(&PostParams::default(), job),
        )
        .await;
        let created = match created {
            Err(e) if e.is_conflict() => Ok(false),
            Ok(made) => {
                if let Some(secrets) = &secrets {
                    self.create_secrets(placement, &made, secrets).await?;
                }
                Ok(true)
            }
            Err(e) => Err(e),
        };
        match created {
            Ok(true) => {
                tracing::info!(placement, job = %name, "created local Job");
            }
            Ok(false) => {
                tracing::debug!(placement, job = %name, "local Job already exists");
            }
            Err(e) if is_invalid(&e) => {
                // The apiserver refused the workload itself: the tenant's problem, not a retry.
                let message = format!(
                    "the member's apiserver refused the Job: {}",
                    api_message(&e)
                );
                return self.refuse(placement, "InvalidTemplate", message).await;
            }
            Err(e) => return Err(e),
        }
        if self.write_status(placement, status).await? {
            self.note(
                placement,
                &Note {
                    warning: false,
                    reason: "Accepted",
                    message: format!(
                        "created local Job {name} in the member's namespace {}",
                        self.ctx.args.jobs_namespace
                    ),
                },
            )
            .await;
        }
        Ok(())
    }

    async fn delete_job(
        &self,
        name: &str,
        placement: Option<&str>,
        why: DeleteReason,
    ) -> Result<()> {
        let gone = timed_opt(
            format!("deleting local Job {name}"),
            API_TIMEOUT,
            self.jobs.delete(name, &DeleteParams::background()),
        )
        .await?;
        if gone.is_some() {
            self.ctx
                .metrics
                .agent_jobs_deleted
                .with_label_values(&[why.label()])
                .inc();
            tracing::info!(job = %name, placement = ?placement, reason = why.label(), "deleted local Job");
        }
        Ok(())
    }

    /// Deletes `pods` with `grace_seconds`, then the Job (see [`Step::StopJob`]).
    async fn stop_job(
        &self,
        name: &str,
        placement: &str,
        pods: &[String],
        grace_seconds: u32,
    ) -> Result<()> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.ctx.local.clone(), &self.ctx.args.jobs_namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(grace_seconds),
            ..DeleteParams::default()
        };
        for pod in pods {
            timed_opt(
                format!("stopping pod {pod}"),
                API_TIMEOUT,
                api.delete(pod, &params),
            )
            .await?;
        }
        tracing::info!(job = %name, placement, pods = pods.len(), grace_seconds, "stopping local Job");
        self.delete_job(name, Some(placement), DeleteReason::Stopped)
            .await
    }

    /// Creates a gang's or a serving Job's NetworkPolicy, then its Service (whose existence marks
    /// both as done).
    async fn create_gang_network(&self, service: &Service, policy: &NetworkPolicy) -> Result<()> {
        if self.ctx.shared.is_fenced() {
            return Ok(());
        }
        let name = service.metadata.name.clone().unwrap_or_default();
        let ns = &self.ctx.args.jobs_namespace;
        let pp = PostParams::default();
        let policies: Api<NetworkPolicy> = Api::namespaced(self.ctx.local.clone(), ns);
        let services: Api<Service> = Api::namespaced(self.ctx.local.clone(), ns);
        // One after the other: the Service must not exist unless the policy does.
        timed_create(
            format!("creating the NetworkPolicy {name}"),
            API_TIMEOUT,
            policies.create(&pp, policy),
        )
        .await?;
        timed_create(
            format!("creating the Service {name}"),
            API_TIMEOUT,
            services.create(&pp, service),
        )
        .await?;
        tracing::info!(service = %name, "job network ready (Service, NetworkPolicy)");
        Ok(())
    }

    /// A Failed status whose workload exited non-zero, with the last lines of that container's log
    /// appended to its message (what a tenant wants first); any other status as it is. A log that
    /// cannot be read (the node is gone, a kwok node) leaves the message as it was.
    async fn with_log_tail(&self, status: &PlacementStatus) -> PlacementStatus {
        let (Some(PlacementPhase::Failed), Some(job)) = (status.phase, status.local_job.as_ref())
        else {
            return status.clone();
        };
        let Some(exit) = status.exits.iter().find(|e| e.exit_code != 0) else {
            return status.clone();
        };
        let pods = self.ctx.job_pods();
        let index = exit.replica.to_string();
        let Some(pod) = pods.get(job).into_iter().flatten().find(|p| {
            p.annotations()
                .get(COMPLETION_INDEX)
                .or_else(|| p.labels().get(COMPLETION_INDEX))
                == Some(&index)
        }) else {
            return status.clone();
        };
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.ctx.local.clone(), &self.ctx.args.jobs_namespace);
        let params = LogParams {
            container: Some(exit.container.clone()),
            tail_lines: Some(LOG_TAIL_LINES),
            limit_bytes: Some(LOG_TAIL_BYTES),
            ..Default::default()
        };
        let name = pod.name_any();
        match tokio::time::timeout(API_TIMEOUT, api.logs(&name, &params)).await {
            Ok(Ok(log)) if !log.trim().is_empty() => {
                let mut st = status.clone();
                let message = st.message.take().unwrap_or_default();
                st.message = Some(cut(format!(
                    "{message}; last lines of {name}/{}: {}",
                    exit.container,
                    log.trim_end().lines().collect::<Vec<_>>().join(" | ")
                )));
                st
            }
            Ok(Ok(_)) => status.clone(),
            Ok(Err(e)) => {
                tracing::debug!(pod = %name, error = %e, "no log tail for the failed container");
                status.clone()
            }
            Err(_) => status.clone(),
        }
    }

    async fn step(&self, step: &Step) -> Result<()> {
        match step {
            Step::CreateJob {
                placement,
                job,
                status,
            } => self.create_job(placement, job, status).await,
            Step::DeleteJob {
                name,
                placement,
                why,
            } => self.delete_job(name, placement.as_deref(), *why).await,
            Step::StopJob {
                name,
                placement,
                pods,
                grace_seconds,
            } => self.stop_job(name, placement, pods, *grace_seconds).await,
            Step::WriteStatus {
                placement,
                status,
                note,
            } => {
                let status = self.with_log_tail(status).await;
                let written = self.write_status(placement, &status).await?;
                if status.reason.as_deref() == Some(plan::FENCED) {
                    // Reported, or the hub deleted the Placement meanwhile: either way, done.
                    self.ctx.shared.forget_fenced(placement);
                }
                if let (true, Some(note)) = (written, note) {
                    self.note(placement, note).await;
                }
                Ok(())
            }
            Step::CreateGangNetwork { service, policy } => {
                self.create_gang_network(service, policy).await
            }
            Step::Ungate { pod, keep, .. } => {
                let api: Api<k8s_openapi::api::core::v1::Pod> =
                    Api::namespaced(self.ctx.local.clone(), &self.ctx.args.jobs_namespace);
                let gates = (!keep.is_empty()).then(|| {
                    keep.iter()
                        .map(|name| serde_json::json!({ "name": name }))
                        .collect::<Vec<_>>()
                });
                let patch = serde_json::json!({ "spec": { "schedulingGates": gates } });
                let patched = timed_opt(
                    format!("ungating pod {pod}"),
                    API_TIMEOUT,
                    api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
                if patched.is_none() {
                    tracing::debug!(pod, "pod gone before it was ungated");
                }
                Ok(())
            }
            Step::SetDeadline { job, seconds, .. } => {
                let patch = serde_json::json!({ "spec": { "activeDeadlineSeconds": seconds } });
                let patched = timed_opt(
                    format!("moving local Job {job}'s deadline"),
                    API_TIMEOUT,
                    self.jobs
                        .patch(job, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
                if patched.is_some() {
                    tracing::info!(
                        job,
                        deadline = seconds,
                        "moved the serving Job's deadline to its funded run time"
                    );
                }
                Ok(())
            }
            Step::ConfirmMissing {
                placement,
                job,
                status,
            } => {
                let exists = timed_opt(
                    format!("reading local Job {job}"),
                    API_TIMEOUT,
                    self.jobs.get(job),
                )
                .await?;
                if exists.is_none() {
                    tracing::warn!(
                        placement,
                        job,
                        "the local Job of an accepted placement is gone; reporting it failed"
                    );
                    self.write_status(placement, status).await?;
                }
                Ok(())
            }
        }
    }

    /// One pass: the plan's steps, up to [`MAX_IN_FLIGHT`] jobs at once, each job's in order (a
    /// job's steps after a failed one wait for the next pass); returns when the next pass is due
    /// at the latest even if nothing changes ([`plan::Plan::recheck_in`]), or the first error.
    async fn pass(&mut self) -> Result<Option<Duration>> {
        let ctx = self.ctx.clone();
        let placements = ctx.stores.placements.state();
        // A placement stopped while fenced that the hub has deleted since needs no report.
        for name in ctx.shared.fenced_placements().keys() {
            if !placements
                .iter()
                .any(|p| p.metadata.name.as_ref() == Some(name))
            {
                ctx.shared.forget_fenced(name);
            }
        }
        let jobs = ctx.stores.jobs.state();
        let pods = ctx.job_pods();
        let nodes = ctx.gpu_nodes();
        let readings = ctx.shared.recent_readings(
            pods.values()
                .flatten()
                .filter_map(|p| p.spec.as_ref()?.node_name.as_deref()),
        );
        let fenced_placements = ctx.shared.fenced_placements();
        let lease_owner = ctx.shared.lease_owner();
        let services = ctx.stores.services.state();
        let gang_services: BTreeSet<String> = services.iter().map(|s| s.name_any()).collect();
        let serving_hosts: BTreeMap<String, String> = services
            .iter()
            .filter_map(|s| Some((s.name_any(), crate::agent::serving::load_balancer_host(s)?)))
            .collect();
        let plan = plan::plan(&View {
            cluster: &ctx.args.cluster,
            jobs_namespace: &ctx.args.jobs_namespace,
            image_pull_policy: ctx.args.image_pull_policy,
            data_image: ctx.args.data_image.as_deref(),
            lease_owner: lease_owner.as_ref(),
            placements: &placements,
            jobs: &jobs,
            pods: &pods,
            nodes: &nodes,
            readings: &readings,
            gang_services: &gang_services,
            serving_exposure: (
                ctx.args.serving_exposure,
                ctx.args.serving_load_balancer_class.as_deref(),
            ),
            serving_hosts: &serving_hosts,
            fenced_placements: &fenced_placements,
            highest: &self.highest,
            now: Time(ctx.shared.member_now()),
            refresh: report::checkpoint_interval(
                ctx.args.usage_report_interval,
                placements
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase) == Some(PlacementPhase::Running)
                    })
                    .count(),
                ctx.args.usage_report_max_rate,
            ),
            gang_grace: ctx.args.gang_unschedulable_grace,
        });
        self.highest = plan.highest;
        if plan.deferred > 0 {
            tracing::debug!(
                deferred = plan.deferred,
                "more new placements than one plan creates: the next pass takes them"
            );
            // Not an event of any watch: the sync's loop must come back by itself.
            ctx.shared.wake.notify_one();
        }
        let placement_uid: BTreeMap<String, String> = placements
            .iter()
            .map(|p| (p.name_any(), p.spec.job.uid.clone()))
            .collect();
        let job_uid: BTreeMap<String, String> = jobs
            .iter()
            .filter_map(|j| {
                let uid = j.labels().get(gpufed_crds::naming::LABEL_JOB_UID)?;
                Some((j.name_any(), uid.clone()))
            })
            .collect();
        let groups = group_steps(&plan.steps, |s| step_key(s, &placement_uid, &job_uid));
        let this = &*self;
        let errors: Vec<Error> = futures::stream::iter(groups)
            .map(|group| async move {
                for step in group {
                    if this.ctx.shared.is_fenced() {
                        return None;
                    }
                    if let Err(e) = this.step(step).await {
                        tracing::warn!(error = %e, kind = e.kind(), "placement sync step failed");
                        // The job's later steps depend on this one: they wait for the next pass.
                        return Some(e);
                    }
                }
                None
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        self.count_phases(&placements);
        let configmaps = Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
        match super::receipts::save(&configmaps, &placements, &self.receipts).await {
            Ok(Some(kept)) => self.receipts = kept,
            Ok(None) => {}
            // Kept on the Placement meanwhile; tried again next pass.
            Err(e) => tracing::warn!(error = %e, "could not keep the usage receipts on the member"),
        }
        errors.into_iter().next().map_or(Ok(plan.recheck_in), Err)
    }

    fn count_phases(&self, placements: &[Arc<Placement>]) {
        let gauge = &self.ctx.metrics.agent_placements;
        gauge.reset();
        for p in placements {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|ph| format!("{ph:?}"))
                .unwrap_or_else(|| "none".into());
            gauge.with_label_values(&[phase.as_str()]).inc();
        }
    }
}

/// Syncs Placements and local Jobs until the process ends.
pub async fn run(ctx: Arc<Context>) {
    let mut sync = Sync {
        placements: Api::namespaced(
            ctx.hub.clone(),
            &gpufed_crds::naming::member_namespace(&ctx.args.cluster),
        ),
        jobs: Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace),
        ctx: ctx.clone(),
        highest: BTreeMap::new(),
        receipts: BTreeSet::new(),
    };
    let mut failures: u32 = 0;
    let mut tick = tokio::time::interval(ctx.args.inventory_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A gang's waiting replica passing its grace is no watch event: the pass that saw it waiting
    // says when to look again, so the gang fails at its grace and not up to an interval later.
    let mut recheck: Option<Duration> = None;
    loop {
        let recheck_at = recheck.take().map(|d| tokio::time::Instant::now() + d);
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shared.wake.notified() => {}
            _ = async {
                match recheck_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        tokio::time::sleep(SETTLE).await;
        if ctx.shared.is_fenced() {
            continue;
        }
        match sync.pass().await {
            Ok(next) => {
                failures = 0;
                recheck = next;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff::delay(failures);
                tracing::warn!(error = %e, kind = e.kind(), failures, retry_in = ?wait, "placement sync failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Fencing or recovering changes what to do: do not sleep through it.
                    _ = ctx.shared.fence_changed.notified() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::at;

    fn write(placement: &str) -> Step {
        Step::WriteStatus {
            placement: placement.into(),
            status: PlacementStatus::default(),
            note: None,
        }
    }

    fn delete(name: &str, placement: Option<&str>) -> Step {
        Step::DeleteJob {
            name: name.into(),
            placement: placement.map(Into::into),
            why: DeleteReason::Orphan,
        }
    }

    fn names(group: &[&Step]) -> Vec<String> {
        group
            .iter()
            .map(|s| match s {
                Step::WriteStatus { placement, .. } => format!("write {placement}"),
                Step::DeleteJob { name, .. } => format!("delete {name}"),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn steps_of_one_job_stay_in_order_in_one_group_and_jobs_get_groups_of_their_own() {
        let placement_uid = BTreeMap::from([
            ("a-1".to_string(), "uid-a".to_string()),
            ("a-2".to_string(), "uid-a".to_string()),
            ("b-1".to_string(), "uid-b".to_string()),
        ]);
        let job_uid = BTreeMap::from([("gpufed-a-1".to_string(), "uid-a".to_string())]);
        // A stale attempt's Job goes before the next attempt is reported; b is independent.
        let steps = vec![
            delete("gpufed-a-1", None),
            write("b-1"),
            write("a-1"),
            write("a-2"),
            delete("orphan", None),
        ];
        let groups = group_steps(&steps, |s| step_key(s, &placement_uid, &job_uid));
        let groups: Vec<Vec<String>> = groups.iter().map(|g| names(g)).collect();
        assert_eq!(
            groups,
            vec![
                vec!["delete gpufed-a-1", "write a-1", "write a-2"],
                vec!["write b-1"],
                vec!["delete orphan"],
            ]
        );
    }

    #[test]
    fn a_step_whose_job_is_unknown_is_keyed_by_its_own_name() {
        let none = BTreeMap::new();
        let steps = vec![write("x-1"), delete("j", Some("x-1")), write("y-1")];
        let groups = group_steps(&steps, |s| step_key(s, &none, &none));
        let groups: Vec<Vec<String>> = groups.iter().map(|g| names(g)).collect();
        assert_eq!(
            groups,
            vec![vec!["write x-1", "delete j"], vec!["write y-1"]]
        );
    }

    #[test]
    fn the_status_body_is_a_placement_status_apply_stamped_with_the_write_time() {
        let st = PlacementStatus {
            phase: Some(PlacementPhase::Running),
            gpu_seconds: 12,
            ..Default::default()
        };
        let body = status_body("p-1", &st, &at(100)).unwrap();
        assert_eq!(body["kind"], "Placement");
        assert_eq!(body["metadata"]["name"], "p-1");
        assert!(
            body.get("spec").is_none(),
            "the hub's spec is never touched"
        );
        assert_eq!(body["status"]["phase"], "Running");
        assert_eq!(body["status"]["gpuSeconds"], 12);
        assert_eq!(body["status"]["lastUpdateTime"], "1970-01-01T00:01:40Z");
        // Log answers are another field manager's: the sync neither applies nor removes them.
        let with_logs = PlacementStatus {
            logs: vec![gpufed_crds::LogChunk::default()],
            ..st
        };
        let body = status_body("p-1", &with_logs, &at(100)).unwrap();
        assert!(body["status"].get("logs").is_none(), "{body}");
    }
}
