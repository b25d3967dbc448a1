//! What the agent must do about its Placements and local Jobs, as a pure function of what it sees:
//! the hub's Placements for this member, the local gpufed Jobs and their pods, the GPU nodes, and
//! the fence state. [`plan`] returns steps; [`super::sync`] performs them.
//!
//! Rules:
//! * A Placement for another cluster is `Rejected` (`WrongCluster`) and never run.
//! * Only the highest attempt of a job UID runs. A lower attempt is stale: its local Job is deleted,
//!   it is never created, and its Placement is marked `Rejected` (`StaleAttempt`) unless it has
//!   already ended (a finished attempt's report is what it gets paid for).
//! * A new Placement is validated ([`job_builder::validate`]) and either `Rejected` with the reason
//!   or run as a local Job. A Placement that was accepted before but whose Job is gone is never run
//!   again: it is reported `Failed` — `Fenced` if this agent stopped it while cut off from the hub,
//!   else `LocalJobMissing` once a fresh read confirms the Job is really gone.
//! * Finished Placements are frozen. Local Jobs whose Placement no longer exists are deleted.
//! * A gang (multi-replica placement) with a replica kube-scheduler has marked `Unschedulable` for
//!   longer than the grace ([`gang`]) is reported `Failed` (`GangUnschedulable`) and its local Job
//!   deleted, so the started replicas release their GPUs and the hub runs the job elsewhere at once
//!   rather than after the pool's start timeout. Such a placement's Job is deleted on every pass
//!   until it is gone (a write that succeeded before the delete failed).
//! * A running multi-replica Job without its gang Service gets its Service and NetworkPolicy
//!   ([`job_builder::gang_network`]); so does a running serving Job without its serving Service
//!   ([`serving::network`]).
//! * While fenced off, nothing is planned; [`fence_victims`] are the Jobs the fence task stops.
//! * A new local Job is owned by the member's lease Job ([`super::member_lease`]); while there is
//!   no live lease, new Placements wait (nothing would stop their Jobs if the agent died).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::cached::Job;
use gpufed_crds::naming::{LABEL_ATTEMPT, LABEL_JOB_UID, LABEL_PLACEMENT, local_job_name};
use gpufed_crds::{NodeInventory, Placement, PlacementPhase, PlacementStatus};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt;

use super::cached::Pod;
use super::report::{self, ended};
use super::{gang, job_builder, job_data, serving};
use crate::cli::{PullPolicy, ServingExposure};

pub use gpufed_crds::placement::reasons::FENCED;
pub use gpufed_crds::placement::reasons::GANG_UNSCHEDULABLE;
pub use gpufed_crds::placement::reasons::LOCAL_JOB_MISSING;
pub use gpufed_crds::placement::reasons::STALE_ATTEMPT;

/// Why a local Job is deleted (the `reason` label of `gpufed_agent_jobs_deleted_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Its Placement no longer exists on the hub.
    Orphan,
    /// A higher attempt of the same job exists.
    Stale,
    /// The agent is fenced off from the hub.
    Fenced,
    /// A replica of its gang could not be scheduled ([`gang`]).
    GangUnschedulable,
    /// The hub stopped its attempt (`Placement.spec.stop`: preempted, ADR 0025).
    Stopped,
}

impl DeleteReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DeleteReason::Orphan => "orphan",
            DeleteReason::Stale => "stale",
            DeleteReason::Fenced => "fenced",
            DeleteReason::GangUnschedulable => "gang_unschedulable",
            DeleteReason::Stopped => "stopped",
        }
    }
}

/// An Event to publish on a Placement (on the hub).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// Human text.
    pub message: String,
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create the local Job (an existing one of that name is fine), then write `status`.
    CreateJob {
        /// Placement name.
        placement: String,
        /// The Job.
        job: Box<k8s_openapi::api::batch::v1::Job>,
        /// Status to write once the Job exists.
        status: PlacementStatus,
    },
    /// Delete a local Job (and its pods).
    DeleteJob {
        /// Job name.
        name: String,
        /// Its placement, if known.
        placement: Option<String>,
        /// Why.
        why: DeleteReason,
    },
    /// Write a Placement's status (server-side apply, the agent's fields).
    WriteStatus {
        /// Placement name.
        placement: String,
        /// The status (`lastUpdateTime` is set when writing).
        status: PlacementStatus,
        /// Event to publish once written.
        note: Option<Note>,
    },
    /// Stop a local Job the hub asked to stop (`Placement.spec.stop`): delete its pods with
    /// `grace_seconds` (which overrides the pod spec's `terminationGracePeriodSeconds`), then the
    /// Job itself. The garbage collector's later delete of the pods leaves their grace alone (an
    /// apiserver only ever shortens a pending graceful deletion when asked for a shorter one).
    StopJob {
        /// Job name.
        name: String,
        /// Its placement.
        placement: String,
        /// Its pods not already being deleted.
        pods: Vec<String>,
        /// Seconds between SIGTERM and SIGKILL.
        grace_seconds: u32,
    },
    /// Create a gang's headless Service and NetworkPolicy, or a serving Job's Service and
    /// NetworkPolicy (existing ones are fine).
    CreateGangNetwork {
        /// The Service.
        service: Box<Service>,
        /// The NetworkPolicy.
        policy: Box<NetworkPolicy>,
    },
    /// Remove the member-lease scheduling gate from one of a current attempt's pods, so it can be
    /// scheduled (only planned while the member's lease is live).
    Ungate {
        /// Pod name (in the jobs namespace).
        pod: String,
        /// Its placement.
        placement: String,
        /// The pod's other scheduling gates, kept.
        keep: Vec<String>,
    },
    /// Raise a running serving Job's `activeDeadlineSeconds` to what its attempt is funded for
    /// ([`serving::deadline`]; never lowered).
    SetDeadline {
        /// Job name.
        job: String,
        /// Its placement.
        placement: String,
        /// The new deadline, in seconds from the Job's start.
        seconds: i64,
    },
    /// Read the local Job `job` afresh: only if it really does not exist, write `status`.
    ConfirmMissing {
        /// Placement name.
        placement: String,
        /// Local Job name.
        job: String,
        /// Status to write if the Job is gone.
        status: PlacementStatus,
    },
}

/// Everything [`plan`] looks at.
pub struct View<'a> {
    /// This member's name.
    pub cluster: &'a str,
    /// Local namespace of the Jobs.
    pub jobs_namespace: &'a str,
    /// `imagePullPolicy` of the workload containers.
    pub image_pull_policy: PullPolicy,
    /// The member's `gpufed-data` image for jobs with inputs or outputs (ADR 0029); none: such
    /// jobs are refused.
    pub data_image: Option<&'a str>,
    /// The member's live lease Job, which every new local Job is owned by
    /// ([`super::member_lease`]); while there is none, no Job is created.
    pub lease_owner: Option<&'a OwnerReference>,
    /// Placements in this member's namespace on the hub.
    pub placements: &'a [Arc<Placement>],
    /// Local Jobs labelled as managed by gpufed.
    pub jobs: &'a [Arc<Job>],
    /// Pods of each local Job, by Job name.
    pub pods: &'a BTreeMap<String, Vec<Arc<Pod>>>,
    /// GPU nodes of the member.
    pub nodes: &'a [NodeInventory],
    /// Recent gpu-probe readings of the nodes that run gpufed pods ([`super::telemetry`]).
    pub readings: &'a BTreeMap<String, super::telemetry::Readings>,
    /// Names of the gpufed Services in the jobs namespace (one per multi-replica local Job, one
    /// `<job>-serve` per serving Job).
    pub gang_services: &'a BTreeSet<String>,
    /// How serving jobs' endpoints are published (ADR 0030), and the load balancer class.
    pub serving_exposure: (ServingExposure, Option<&'a str>),
    /// Addresses load balancers assigned to serving Services, by Service name.
    pub serving_hosts: &'a BTreeMap<String, String>,
    /// Placements whose Job this agent deleted while fenced, with when.
    pub fenced_placements: &'a BTreeMap<String, Time>,
    /// Highest attempt seen per job UID so far.
    pub highest: &'a BTreeMap<String, u32>,
    /// Now.
    pub now: Time,
    /// How often running placements' GPU-seconds are refreshed.
    pub refresh: Duration,
    /// How long a gang's replica may stay unschedulable before the attempt fails (zero: never).
    pub gang_grace: Duration,
}

/// Local Jobs one plan creates at most. Each is a whole Job (pod template included) until it is
/// sent, so a burst of thousands of new Placements would otherwise be built all at once (the agent
/// bench saw a 2,000-Placement burst cost 3.5 MB of heap in one plan); the rest wait for the next
/// pass, which the sync starts at once ([`Plan::deferred`]). The sync sends 16 at a time.
pub const MAX_NEW_JOBS_PER_PLAN: usize = 128;

/// The steps, and the highest attempt per job UID to remember.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Highest attempt per job UID, including what [`View::highest`] held.
    pub highest: BTreeMap<String, u32>,
    /// New Placements left for the next plan ([`MAX_NEW_JOBS_PER_PLAN`]).
    pub deferred: usize,
    /// When to plan again even if nothing changes: a gang's waiting replica passes its grace
    /// ([`gang::until_stuck`]), which no watch event announces.
    pub recheck_in: Option<Duration>,
}

fn job_attempt(job: &Job) -> Option<(String, u32)> {
    let labels = job.metadata.labels.as_ref()?;
    let uid = labels.get(LABEL_JOB_UID)?.clone();
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    Some((uid, attempt))
}

/// Whether `pod` still carries the member-lease scheduling gate (and is not going away).
fn gated(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.metadata.name.is_some()
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|gates| gates.iter().any(|g| g.name == job_builder::LEASE_GATE))
}

fn being_deleted(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_some()
}

/// Highest attempt per job UID over `remembered`, this member's Placements and local Jobs.
pub fn highest_attempts(
    cluster: &str,
    remembered: &BTreeMap<String, u32>,
    placements: &[Arc<Placement>],
    jobs: &[Arc<Job>],
) -> BTreeMap<String, u32> {
    let mut h = remembered.clone();
    let mut see = |uid: &str, attempt: u32| {
        let e = h.entry(uid.to_string()).or_insert(attempt);
        *e = (*e).max(attempt);
    };
    for p in placements.iter().filter(|p| p.spec.cluster == cluster) {
        see(&p.spec.job.uid, p.spec.attempt);
    }
    for (uid, attempt) in jobs.iter().filter_map(|j| job_attempt(j)) {
        see(&uid, attempt);
    }
    h
}

/// Whether a local Job has ended (its `Complete` or `Failed` condition is True).
pub fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// The local Jobs to stop while fenced off: every one still running or waiting to run. Finished
/// Jobs hold no GPUs and are kept, so that a result the hub has not heard of yet can still be
/// reported once it is reachable again.
pub fn fence_victims(jobs: &[Arc<Job>]) -> Vec<Arc<Job>> {
    jobs.iter()
        .filter(|j| !being_deleted(j) && !job_finished(j))
        .cloned()
        .collect()
}

fn phase(status: Option<&PlacementStatus>) -> Option<PlacementPhase> {
    status.and_then(|s| s.phase)
}

/// Plans what to do about `view`.
pub fn plan(view: &View) -> Plan {
    let mut steps = vec![];
    let highest = highest_attempts(view.cluster, view.highest, view.placements, view.jobs);
    let jobs: BTreeMap<String, &Arc<Job>> = view.jobs.iter().map(|j| (j.name_any(), j)).collect();
    let mut placements: Vec<&Arc<Placement>> = view.placements.iter().collect();
    placements.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut tally = Tally::default();
    for p in &placements {
        placement_steps(view, p, &jobs, &highest, &mut tally, &mut steps);
    }
    // Local Jobs whose Placement is gone: the hub deleted it (job deleted, attempt lost). Looked
    // up in the sorted Placements: a scan per Job made each pass quadratic in the running jobs.
    for job in view.jobs.iter().filter(|j| !being_deleted(j)) {
        let placement = job.labels().get(LABEL_PLACEMENT);
        let exists = placement.is_some_and(|name| {
            placements
                .binary_search_by(|p| p.metadata.name.as_deref().cmp(&Some(name.as_str())))
                .is_ok()
        });
        if !exists {
            steps.push(Step::DeleteJob {
                name: job.name_any(),
                placement: placement.cloned(),
                why: DeleteReason::Orphan,
            });
        }
    }
    // Running gangs need their network; it is created after the Job (it is owned by it), so a
    // restart between the two is caught here.
    for job in view
        .jobs
        .iter()
        .filter(|j| !being_deleted(j) && !job_finished(j))
        .filter(|j| !view.gang_services.contains(&j.name_any()))
    {
        if let Some((service, policy)) = job_builder::gang_network(job) {
            steps.push(Step::CreateGangNetwork {
                service: Box::new(service),
                policy: Box::new(policy),
            });
        }
    }
    // Running serving Jobs need their Service and NetworkPolicy (ADR 0030), created the same way.
    for job in view
        .jobs
        .iter()
        .filter(|j| !being_deleted(j) && !job_finished(j))
        .filter(|j| {
            !view
                .gang_services
                .contains(&serving::service_name(&j.name_any()))
        })
    {
        if let Some((service, policy)) =
            serving::network(job, view.serving_exposure.0, view.serving_exposure.1)
        {
            steps.push(Step::CreateGangNetwork {
                service: Box::new(service),
                policy: Box::new(policy),
            });
        }
    }
    Plan {
        steps,
        highest,
        deferred: tally.deferred,
        recheck_in: tally.recheck_in,
    }
}

/// What a plan counts across Placements: how many local Jobs it creates, how many new Placements
/// it leaves for the next, and when the next must come at the latest.
#[derive(Default)]
struct Tally {
    planned: usize,
    deferred: usize,
    recheck_in: Option<Duration>,
}

fn placement_steps(
    view: &View,
    p: &Placement,
    jobs: &BTreeMap<String, &Arc<Job>>,
    highest: &BTreeMap<String, u32>,
    tally: &mut Tally,
    steps: &mut Vec<Step>,
) {
    let name = p.name_any();
    let spec = &p.spec;
    let prev = p.status.as_ref();
    let job_name = local_job_name(&spec.job.uid, spec.attempt);
    let local = jobs.get(&job_name).filter(|j| !being_deleted(j));
    let finished = phase(prev).is_some_and(PlacementPhase::is_finished);
    let write = |steps: &mut Vec<Step>, status: PlacementStatus, note: Option<Note>| {
        steps.push(Step::WriteStatus {
            placement: name.clone(),
            status,
            note,
        });
    };
    let reject = |reason: &'static str, message: String| {
        let status = ended(
            prev,
            PlacementPhase::Rejected,
            reason,
            message.clone(),
            &view.now,
        );
        let note = Note {
            warning: true,
            reason: "Rejected",
            message: format!("{reason}: {message}"),
        };
        (status, Some(note))
    };

    if spec.cluster != view.cluster {
        if phase(prev) != Some(PlacementPhase::Rejected) {
            let (st, note) = reject(
                "WrongCluster",
                format!(
                    "the placement is for cluster {:?}, this is {:?}",
                    spec.cluster, view.cluster
                ),
            );
            write(steps, st, note);
        }
        return;
    }
    let current = highest.get(&spec.job.uid).copied().unwrap_or(spec.attempt);
    if spec.attempt < current {
        if let Some(job) = local {
            steps.push(Step::DeleteJob {
                name: job.name_any(),
                placement: Some(name.clone()),
                why: DeleteReason::Stale,
            });
        }
        if !finished {
            let (st, note) = reject(
                STALE_ATTEMPT,
                format!(
                    "attempt {} of job UID {} is stale: attempt {current} is the current one, so this one never runs here",
                    spec.attempt, spec.job.uid
                ),
            );
            write(steps, st, note);
        }
        return;
    }
    if finished {
        let failed_gang = prev.and_then(|s| s.reason.as_deref()) == Some(GANG_UNSCHEDULABLE);
        if let Some(job) = local.filter(|j| failed_gang && !job_finished(j)) {
            steps.push(Step::DeleteJob {
                name: job.name_any(),
                placement: Some(name.clone()),
                why: DeleteReason::GangUnschedulable,
            });
        }
        // Reported stopped, but the stop itself failed: stop again.
        if let (Some(stop), Some(job)) = (&spec.stop, local.filter(|j| !job_finished(j))) {
            steps.push(stop_step(view, p, job, stop));
        }
        return;
    }
    if let Some(when) = view.fenced_placements.get(&name) {
        if let Some(job) = local {
            steps.push(Step::DeleteJob {
                name: job.name_any(),
                placement: Some(name.clone()),
                why: DeleteReason::Fenced,
            });
        }
        let message = format!(
            "the member could not reach the hub for longer than its fence timeout and stopped local Job {job_name} at {}; the attempt did not finish",
            when.0
        );
        let mut st = ended(prev, PlacementPhase::Failed, FENCED, message.clone(), when);
        st.local_job = Some(job_name.clone());
        let note = Note {
            warning: true,
            reason: FENCED,
            message,
        };
        write(steps, st, Some(note));
        return;
    }
    if let Some(stop) = &spec.stop {
        // Reported first, with the usage up to now, then stopped (as a stuck gang, below): a Job
        // left behind by a failed stop is stopped again on the next pass, above.
        let message = stop.message.clone().unwrap_or_else(|| stop.reason.clone());
        let note = Note {
            warning: true,
            reason: STOPPED,
            message: format!("{}: {message}; {job_name} stopped", stop.reason),
        };
        match local {
            Some(job) if !job_finished(job) => {
                let pods: Vec<&Pod> = view
                    .pods
                    .get(&job_name)
                    .map(|ps| ps.iter().map(|p| p.as_ref()).collect())
                    .unwrap_or_default();
                let next = report::observe(spec, job, &pods, prev, &view.now);
                let st = ended(
                    Some(&next),
                    PlacementPhase::Failed,
                    &stop.reason,
                    message,
                    &view.now,
                );
                write(steps, st, Some(note));
                steps.push(stop_step(view, p, job, stop));
                return;
            }
            // Ended on its own before the stop: reported as it ended, below.
            Some(_) => {}
            // Never started here, or its Job is already gone: nothing to stop.
            None => {
                let mut st = ended(
                    prev,
                    PlacementPhase::Failed,
                    &stop.reason,
                    message,
                    &view.now,
                );
                st.local_job = prev.and_then(|s| s.local_job.clone());
                write(steps, st, Some(note));
                return;
            }
        }
    }
    match local {
        Some(job) => {
            let pods: Vec<&Pod> = view
                .pods
                .get(&job_name)
                .map(|ps| ps.iter().map(|p| p.as_ref()).collect())
                .unwrap_or_default();
            // Pods start only while this agent holds a live lease for a current attempt: the gate
            // stays on the pods of a Job whose agent died, whatever the member's controllers do.
            if view.lease_owner.is_some() && !job_finished(job) {
                for pod in pods.iter().filter(|p| gated(p)) {
                    let keep = pod
                        .spec
                        .iter()
                        .flat_map(|s| s.scheduling_gates.iter().flatten())
                        .filter(|g| g.name != job_builder::LEASE_GATE)
                        .map(|g| g.name.clone())
                        .collect();
                    steps.push(Step::Ungate {
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                        placement: name.clone(),
                        keep,
                    });
                }
            }
            let mut next = job_data::observe(
                report::observe(spec, job, &pods, prev, &view.now),
                spec,
                job,
                &pods,
            );
            if let Some(recording) = &spec.usage_recording {
                next.telemetry = super::telemetry::record(
                    recording,
                    prev.and_then(|p| p.telemetry.as_ref()),
                    &pods,
                    next.start_time.as_ref(),
                    next.finish_time.as_ref(),
                    view.readings,
                    view.nodes,
                );
            }
            // Behind a load balancer, the URL is the address it assigned (ADR 0030).
            if let (Some(serving), ServingExposure::LoadBalancer, false) = (
                &spec.serving,
                view.serving_exposure.0,
                next.phase.is_some_and(PlacementPhase::is_finished),
            ) {
                let host = view.serving_hosts.get(&serving::service_name(&job_name));
                next.endpoint = Some(Box::new(serving::load_balancer_endpoint(
                    serving,
                    spec.replicas,
                    &pods,
                    host.map(String::as_str),
                )));
            }
            let stuck = (!job_finished(job))
                .then(|| gang::stuck(spec.replicas, &pods, &view.now, view.gang_grace))
                .flatten();
            if let Some(stuck) = stuck {
                // Reported first, then stopped: a Job left behind by a failed delete is deleted
                // on the next pass (above), while a Job deleted before a failed report would be
                // reported LocalJobMissing.
                let message = gang::message(&stuck, spec.replicas, &job_name, view.gang_grace);
                let st = ended(
                    Some(&next),
                    PlacementPhase::Failed,
                    GANG_UNSCHEDULABLE,
                    message.clone(),
                    &view.now,
                );
                let note = Note {
                    warning: true,
                    reason: GANG_UNSCHEDULABLE,
                    message,
                };
                write(steps, st, Some(note));
                steps.push(Step::DeleteJob {
                    name: job_name.clone(),
                    placement: Some(name.clone()),
                    why: DeleteReason::GangUnschedulable,
                });
                return;
            }
            if !job_finished(job)
                && let Some(wait) =
                    gang::until_stuck(spec.replicas, &pods, &view.now, view.gang_grace)
            {
                tally.recheck_in = Some(tally.recheck_in.map_or(wait, |w| w.min(wait)));
            }
            // A serving Job runs as long as its attempt is funded (ADR 0030 section 7).
            let funded = serving::deadline(
                spec,
                job.status.as_ref().and_then(|s| s.start_time.as_ref()),
                next.start_time.as_ref(),
            );
            let current = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
            if let Some(seconds) = funded.filter(|f| !job_finished(job) && current < Some(*f)) {
                steps.push(Step::SetDeadline {
                    job: job_name.clone(),
                    placement: name.clone(),
                    seconds,
                });
            }
            if report::needs_write(prev, &next, &view.now, view.refresh) {
                let note = match (phase(prev), next.phase) {
                    (Some(a), Some(b)) if a == b => None,
                    (_, Some(PlacementPhase::Running)) => Some(Note {
                        warning: false,
                        reason: "Running",
                        message: format!("all {} replica(s) of {job_name} started", spec.replicas),
                    }),
                    (_, Some(PlacementPhase::Succeeded)) => Some(Note {
                        warning: false,
                        reason: "Succeeded",
                        message: format!(
                            "{job_name} completed using {} GPU-seconds",
                            next.gpu_seconds
                        ),
                    }),
                    (_, Some(PlacementPhase::Failed)) => Some(Note {
                        warning: true,
                        reason: "Failed",
                        message: next.message.clone().unwrap_or_else(|| {
                            next.reason.clone().unwrap_or_else(|| "failed".into())
                        }),
                    }),
                    _ => None,
                };
                write(steps, next, note);
            }
        }
        None => match phase(prev) {
            None => match job_builder::validate(p, view.cluster, view.nodes)
                .and_then(|()| job_data::check(p, view.data_image))
            {
                Err(r) => {
                    let (st, note) = reject(r.reason, r.message);
                    write(steps, st, note);
                }
                Ok(()) => {
                    // Without a live lease nothing would stop the Job if the agent died: it waits.
                    let Some(owner) = view.lease_owner else {
                        return;
                    };
                    if tally.planned >= MAX_NEW_JOBS_PER_PLAN {
                        tally.deferred += 1;
                        return;
                    }
                    tally.planned += 1;
                    let mut job =
                        job_builder::build(p, view.jobs_namespace, view.image_pull_policy);
                    if let Some(image) = view.data_image {
                        job_data::attach(&mut job, p, image, view.image_pull_policy);
                    }
                    job.metadata.owner_references = Some(vec![owner.clone()]);
                    let status = PlacementStatus {
                        phase: Some(PlacementPhase::Accepted),
                        local_job: Some(job_name.clone()),
                        ..Default::default()
                    };
                    steps.push(Step::CreateJob {
                        placement: name.clone(),
                        job: Box::new(job),
                        status,
                    });
                }
            },
            Some(_) => {
                let message = format!(
                    "local Job {job_name} no longer exists on the member (deleted outside gpufed, stopped while the agent was fenced off before it restarted, or deleted with the member's lease when the agent stopped renewing it); an accepted placement is never run twice"
                );
                steps.push(Step::ConfirmMissing {
                    placement: name.clone(),
                    job: job_name,
                    status: ended(
                        prev,
                        PlacementPhase::Failed,
                        LOCAL_JOB_MISSING,
                        message,
                        &view.now,
                    ),
                });
            }
        },
    }
}

/// Reason of the Event an agent publishes when it stops an attempt the hub asked it to stop.
pub const STOPPED: &str = "Stopped";

/// The step that stops `job` for `p`'s `stop`: its pods not already going away, with the grace.
fn stop_step(view: &View, p: &Placement, job: &Job, stop: &gpufed_crds::PlacementStop) -> Step {
    let name = job.name_any();
    let pods = view
        .pods
        .get(&name)
        .into_iter()
        .flatten()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| pod.metadata.name.clone())
        .collect();
    Step::StopJob {
        name,
        placement: p.name_any(),
        pods,
        grace_seconds: stop.grace_period_seconds,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
