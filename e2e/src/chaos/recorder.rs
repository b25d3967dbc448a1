//! The recorder: watches the hub (ComputeJobs, Placements, MemberClusters) and every member's jobs
//! namespace (Pods), and at the end reads the hub's final state and the chain, into a [`History`].
//!
//! Watches, not polls: a pod stopped with its Job is deleted right after, and only a watch sees
//! its last status. The watchers back off and re-list when an apiserver dies (a fault the run
//! injects); a pod that vanished while its apiserver was away is ended at the moment the re-list
//! showed it gone — an upper bound, so the checker can only see more overlap than there was, never
//! less.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use gpufed_crds::naming::{LABEL_ATTEMPT, LABEL_JOB_UID};
use gpufed_crds::{ComputeJob, MemberCluster, Placement};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::history::{AttemptEnd, Event, History, JobEnd, JobRef, Millis};
use crate::Error;

/// Now, in milliseconds since the epoch (the host clock every cluster of a run shares).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(t: &Time) -> Millis {
    t.0.as_millisecond()
}

/// What one pod of an attempt did, as last seen.
#[derive(Clone, Debug)]
struct PodRecord {
    member: String,
    job: JobRef,
    attempt: u32,
    name: String,
    start: Option<Millis>,
    /// Earliest of container `finishedAt`, pod `deletionTimestamp`, and when it was seen gone.
    end: Option<Millis>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<(String, String), PodRecord>,
    accepted: BTreeMap<String, (Millis, JobRef)>,
    decisions: BTreeMap<String, Event>,
    deleted_placements: BTreeMap<String, Event>,
    /// Last (ready, cordoned) per member, and every change.
    members: BTreeMap<String, (bool, bool)>,
    member_events: Vec<Event>,
    faults: Vec<Event>,
}

/// A running recorder. Dropping it stops the watches.
pub struct Recorder {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn min_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A job as a member or a Placement names it: by UID only (ADR 0037). Its `namespace/name` key is
/// the UID until [`State::resolve`] looks it up among the hub's jobs.
fn by_uid(uid: &str) -> JobRef {
    JobRef {
        key: uid.to_string(),
        uid: uid.to_string(),
    }
}

/// `job` with the `namespace/name` key of the hub's job with its UID in `known` (unchanged if
/// the hub's job is not there).
fn resolve(known: &BTreeMap<String, JobRef>, job: &JobRef) -> JobRef {
    known.get(&job.uid).cloned().unwrap_or_else(|| job.clone())
}

/// `event` with its job resolved in `known`.
fn resolved(known: &BTreeMap<String, JobRef>, event: &Event) -> Event {
    let mut e = event.clone();
    match &mut e {
        Event::Decision { job, .. }
        | Event::PlacementDeleted { job, .. }
        | Event::AttemptRun { job, .. } => *job = resolve(known, job),
        _ => {}
    }
    e
}

impl State {
    /// The hub's jobs seen by the jobs watch, by UID.
    fn known(&self) -> BTreeMap<String, JobRef> {
        self.accepted
            .iter()
            .map(|(uid, (_, job))| (uid.clone(), job.clone()))
            .collect()
    }
}

fn pod_record(member: &str, pod: &Pod) -> Option<PodRecord> {
    let labels = pod.labels();
    let job = by_uid(labels.get(LABEL_JOB_UID)?);
    let attempt = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let status = pod.status.as_ref();
    let start = status.and_then(|s| s.start_time.as_ref()).map(ms);
    let finished = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(ms)
        .max();
    let deletion = pod.metadata.deletion_timestamp.as_ref().map(ms);
    Some(PodRecord {
        member: member.to_string(),
        job,
        attempt,
        name: pod.name_any(),
        start,
        end: min_opt(finished, deletion),
    })
}

impl Recorder {
    /// Starts watching `hub` and `members` (name, client; pods in `jobs_namespace`).
    pub fn start(hub: &Client, members: &[(String, Client)], jobs_namespace: &str) -> Recorder {
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = vec![];
        for (name, client) in members {
            tasks.push(tokio::spawn(watch_pods(
                state.clone(),
                name.clone(),
                Api::namespaced(client.clone(), jobs_namespace),
            )));
        }
        tasks.push(tokio::spawn(watch_jobs(
            state.clone(),
            Api::all(hub.clone()),
        )));
        tasks.push(tokio::spawn(watch_placements(
            state.clone(),
            Api::all(hub.clone()),
        )));
        tasks.push(tokio::spawn(watch_members(
            state.clone(),
            Api::all(hub.clone()),
        )));
        Recorder { state, tasks }
    }

    /// Records a fault injected (`healed` false) or healed.
    pub fn fault(&self, fault: &str, target: &str, healed: bool) {
        tracing::info!(fault, target, healed, "chaos");
        lock(&self.state).faults.push(Event::Fault {
            at: now_ms(),
            fault: fault.to_string(),
            target: target.to_string(),
            healed,
        });
    }

    /// Pods seen so far that have started and not ended (for the workload's deletions).
    pub fn running_jobs(&self) -> BTreeSet<String> {
        let s = lock(&self.state);
        let known = s.known();
        s.pods
            .values()
            .filter(|p| p.start.is_some() && p.end.is_none())
            .map(|p| resolve(&known, &p.job).key)
            .collect()
    }

    /// Stops the watches and builds the history: events so far, the hub's jobs as they are now.
    pub async fn finish(
        mut self,
        hub: &Client,
        seed: u64,
        profile: &str,
        deleted: Vec<JobRef>,
    ) -> Result<History, Error> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let ended_at = now_ms();
        let jobs: Vec<JobEnd> = Api::<ComputeJob>::all(hub.clone())
            .list(&Default::default())
            .await
            .map_err(Error::kube("listing ComputeJobs at the end"))?
            .items
            .iter()
            .map(job_end)
            .collect();
        let s = lock(&self.state);
        // Members and Placements name jobs by UID: their keys come from the hub's jobs (those the
        // watch saw, and those listed just now).
        let mut known = s.known();
        for j in &jobs {
            let JobEnd { job, .. } = j;
            known.entry(job.uid.clone()).or_insert_with(|| job.clone());
        }
        let mut events: Vec<Event> = s
            .accepted
            .values()
            .map(|(at, job)| Event::JobAccepted {
                at: *at,
                job: job.clone(),
            })
            .collect();
        events.extend(s.decisions.values().map(|e| resolved(&known, e)));
        events.extend(s.deleted_placements.values().map(|e| resolved(&known, e)));
        events.extend(s.member_events.iter().cloned());
        events.extend(s.faults.iter().cloned());
        events.extend(s.pods.values().filter_map(|p| {
            Some(Event::AttemptRun {
                member: p.member.clone(),
                job: resolve(&known, &p.job),
                attempt: p.attempt,
                pod: p.name.clone(),
                start: p.start?,
                end: p.end,
            })
        }));
        Ok(History {
            seed,
            profile: profile.to_string(),
            ended_at,
            events,
            jobs,
            deleted,
            escrow: None,
        })
    }
}

fn job_ref(j: &ComputeJob) -> JobRef {
    JobRef {
        key: format!("{}/{}", j.namespace().unwrap_or_default(), j.name_any()),
        uid: j.uid().unwrap_or_default(),
    }
}

fn job_end(j: &ComputeJob) -> JobEnd {
    let status = j.status.clone().unwrap_or_default();
    JobEnd {
        job: job_ref(j),
        phase: format!("{:?}", status.phase),
        reason: status.reason.or(status.explanation),
        attempts: status
            .attempts
            .iter()
            .map(|a| AttemptEnd {
                attempt: a.attempt,
                member: a.cluster.clone(),
                phase: format!("{:?}", a.phase),
                job_id: a.settlement.as_ref().map(|s| s.job_id.clone()),
            })
            .collect(),
    }
}

/// Retries a broken watch every half second, for as long as it takes: a pod that vanished while
/// its apiserver was down gets, as its end, the moment the re-list shows it gone, so that bound is
/// only as tight as the reconnection (kube's default backoff grows to 30 s, which once made a
/// killed apiserver's pods seem to run 25 s longer than they did).
struct Steady;

impl Iterator for Steady {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(500))
    }
}

impl kube::runtime::utils::Backoff for Steady {
    fn reset(&mut self) {}
}

/// Runs `on` for each event of a watch of `api`, with backoff (an apiserver may be down), and
/// `relisted` with the names seen once a re-list is complete.
async fn watch<K, F, G>(api: Api<K>, mut on: F, mut relisted: G)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    F: FnMut(watcher::Event<K>),
    G: FnMut(&BTreeSet<String>),
{
    let mut stream = watcher(api, watcher::Config::default())
        .backoff(Steady)
        .boxed();
    let mut listing = BTreeSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitDone) => relisted(&listing),
            Ok(e) => {
                if let watcher::Event::InitApply(o) = &e {
                    listing.insert(o.uid().unwrap_or_default());
                }
                on(e)
            }
            Err(e) => tracing::debug!(error = %e, "chaos recorder watch"),
        }
    }
}

async fn watch_pods(state: Arc<Mutex<State>>, member: String, api: Api<Pod>) {
    let s2 = state.clone();
    let m2 = member.clone();
    watch(
        api,
        move |e| {
            let (pod, gone) = match e {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                _ => return,
            };
            let Some(mut rec) = pod_record(&member, &pod) else {
                return;
            };
            if gone {
                rec.end = min_opt(rec.end, Some(now_ms()));
            }
            let mut s = lock(&state);
            let key = (member.clone(), pod.uid().unwrap_or_default());
            let slot = s.pods.entry(key).or_insert_with(|| rec.clone());
            slot.start = slot.start.or(rec.start);
            slot.end = min_opt(slot.end, rec.end);
        },
        move |present| {
            let now = now_ms();
            let mut s = lock(&s2);
            for ((m, uid), p) in s.pods.iter_mut() {
                if *m == m2 && !present.contains(uid) && p.end.is_none() {
                    p.end = Some(now);
                }
            }
        },
    )
    .await
}

async fn watch_jobs(state: Arc<Mutex<State>>, api: Api<ComputeJob>) {
    watch(
        api,
        move |e| {
            if let watcher::Event::Apply(j) | watcher::Event::InitApply(j) = e {
                let at = j.metadata.creation_timestamp.as_ref().map_or(0, ms);
                lock(&state)
                    .accepted
                    .entry(j.uid().unwrap_or_default())
                    .or_insert((at, job_ref(&j)));
            }
        },
        |_| {},
    )
    .await
}

async fn watch_placements(state: Arc<Mutex<State>>, api: Api<Placement>) {
    watch(
        api,
        move |e| {
            let (p, gone) = match e {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                _ => return,
            };
            let job = by_uid(&p.spec.job.uid);
            let uid = p.uid().unwrap_or_default();
            let mut s = lock(&state);
            if gone {
                let at = p
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map_or_else(now_ms, ms);
                s.deleted_placements.insert(
                    uid,
                    Event::PlacementDeleted {
                        at,
                        job,
                        attempt: p.spec.attempt,
                        member: p.spec.cluster.clone(),
                    },
                );
            } else {
                let at = p.metadata.creation_timestamp.as_ref().map_or(0, ms);
                s.decisions.entry(uid).or_insert(Event::Decision {
                    at,
                    job,
                    attempt: p.spec.attempt,
                    member: p.spec.cluster.clone(),
                });
            }
        },
        |_| {},
    )
    .await
}

async fn watch_members(state: Arc<Mutex<State>>, api: Api<MemberCluster>) {
    watch(
        api,
        move |e| {
            let (watcher::Event::Apply(m) | watcher::Event::InitApply(m)) = e else {
                return;
            };
            let name = m.name_any();
            let cordoned = m.spec.cordoned;
            let conditions = m
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let ready_condition = gpufed_crds::conditions::find(conditions, "Ready");
            let ready = ready_condition.is_some_and(|c| c.status == "True");
            let mut s = lock(&state);
            let last = s.members.get(&name).copied();
            if last == Some((ready, cordoned)) {
                return;
            }
            // A readiness change dates from the hub's own transition time; a cordon from now; a
            // member first seen from its creation (or its Ready transition, if later).
            let created = m.metadata.creation_timestamp.as_ref().map_or(0, ms);
            let transition = ready_condition.map(|c| ms(&c.last_transition_time));
            let at = match last {
                Some((r, _)) if r != ready => transition.unwrap_or_else(now_ms),
                Some(_) => now_ms(),
                None if ready => transition.unwrap_or(created),
                None => created,
            };
            s.members.insert(name.clone(), (ready, cordoned));
            s.member_events.push(Event::MemberState {
                at,
                member: name,
                ready,
                cordoned,
            });
        },
        |_| {},
    )
    .await
}
