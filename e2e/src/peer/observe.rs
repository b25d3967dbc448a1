//! What the workers' apiservers saw, recorded as it happened: one watch per worker and kind (Pods,
//! batch Jobs and, for MultiKueue, Kueue Workloads), each event stamped on arrival. The peer run
//! reads every figure of the comparison from here — when a job's pod first ran on which worker, and
//! how many workers received a copy of it — so both systems are measured by the same code, from the
//! side where the work happens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use crate::Cluster;

/// How the benchmark's job name is read off the objects a system creates on a worker.
#[derive(Clone, Copy, Debug)]
pub enum JobKey {
    /// The value of this label, on Pods and Jobs alike (gpufed: `gpufed.io/job-uid`).
    Label(&'static str),
    /// The Job's own name, and the `batch.kubernetes.io/job-name` label on its Pods (MultiKueue
    /// creates the worker's Job under the manager Job's name).
    JobName,
}

impl JobKey {
    fn of_job(self, meta: &ObjectMeta) -> Option<String> {
        match self {
            JobKey::Label(l) => meta.labels.as_ref()?.get(l).cloned(),
            JobKey::JobName => meta.name.clone(),
        }
    }

    fn of_pod(self, meta: &ObjectMeta) -> Option<String> {
        let label = match self {
            JobKey::Label(l) => l,
            JobKey::JobName => "batch.kubernetes.io/job-name",
        };
        meta.labels.as_ref()?.get(label).cloned()
    }
}

/// What one worker saw of one job.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Seconds (since the recorder started) when a batch Job for it first appeared.
    pub job_created: Option<f64>,
    /// Seconds when one of its pods was first Running (or already Succeeded).
    pub running: Option<f64>,
}

#[derive(Default)]
struct State {
    /// Job name → worker → what that worker saw.
    jobs: BTreeMap<String, BTreeMap<String, Seen>>,
    /// Kueue Workload name → workers on which it was created.
    workloads: BTreeMap<String, BTreeSet<String>>,
    /// Watch errors seen (the watchers retry with backoff; a count above zero says a stream
    /// restarted and a short-lived object may have been missed).
    watch_errors: usize,
}

/// Watches on every worker; dropping it stops them.
pub struct Recorder {
    origin: Instant,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The Kueue Workload resource (`kueue.x-k8s.io/v1beta2`, the storage version of Kueue 0.17).
pub fn workload_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", "Workload"),
        "workloads",
    )
}

fn pod_running(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running" | "Succeeded")
    )
}

impl Recorder {
    /// Starts watching `namespace` on every worker: Pods and Jobs, and Kueue Workloads if
    /// `workloads` is set. Times are seconds since `origin`.
    pub fn start(
        origin: Instant,
        workers: &[&Cluster],
        namespace: &str,
        key: JobKey,
        workloads: bool,
    ) -> Recorder {
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = vec![];
        for w in workers {
            let worker = w.name().to_string();
            let client = w.client();
            let (st, name) = (state.clone(), worker.clone());
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(ev) = stream.next().await {
                    let now = origin.elapsed().as_secs_f64();
                    let mut s = match st.lock() {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                    match ev {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            if let Some(k) = key.of_pod(&p.metadata)
                                && pod_running(&p)
                            {
                                let seen = s
                                    .jobs
                                    .entry(k)
                                    .or_default()
                                    .entry(name.clone())
                                    .or_default();
                                seen.running.get_or_insert(now);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => s.watch_errors += 1,
                    }
                }
            }));
            let (st, name) = (state.clone(), worker.clone());
            let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
            tasks.push(tokio::spawn(async move {
                let mut stream = watcher(jobs, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(ev) = stream.next().await {
                    let now = origin.elapsed().as_secs_f64();
                    let mut s = match st.lock() {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                    match ev {
                        Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => {
                            if let Some(k) = key.of_job(&j.metadata) {
                                let seen = s
                                    .jobs
                                    .entry(k)
                                    .or_default()
                                    .entry(name.clone())
                                    .or_default();
                                seen.job_created.get_or_insert(now);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => s.watch_errors += 1,
                    }
                }
            }));
            if workloads {
                let (st, name) = (state.clone(), worker.clone());
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &workload_resource());
                tasks.push(tokio::spawn(async move {
                    let mut stream = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .boxed();
                    while let Some(ev) = stream.next().await {
                        let mut s = match st.lock() {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                        match ev {
                            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                                if let Some(wl) = o.metadata.name {
                                    s.workloads.entry(wl).or_default().insert(name.clone());
                                }
                            }
                            Ok(_) => {}
                            Err(_) => s.watch_errors += 1,
                        }
                    }
                }));
            }
        }
        Recorder {
            origin,
            state,
            tasks,
        }
    }

    /// Seconds since the recorder's origin.
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// The instant the recorder's seconds count from.
    pub fn clock(&self) -> Instant {
        self.origin
    }

    /// A copy of what is recorded so far.
    pub fn snapshot(&self) -> Snapshot {
        match self.state.lock() {
            Ok(s) => Snapshot {
                jobs: s.jobs.clone(),
                workloads: s.workloads.clone(),
                watch_errors: s.watch_errors,
            },
            Err(_) => Snapshot::default(),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the workers saw, at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Job name → worker → what that worker saw.
    pub jobs: BTreeMap<String, BTreeMap<String, Seen>>,
    /// Kueue Workload name → workers it was created on.
    pub workloads: BTreeMap<String, BTreeSet<String>>,
    /// Watch errors (restarts) so far.
    pub watch_errors: usize,
}

impl Snapshot {
    /// When a batch Job for job `name` first appeared on any worker.
    pub fn first_job_created(&self, name: &str) -> Option<f64> {
        self.jobs
            .get(name)?
            .values()
            .filter_map(|s| s.job_created)
            .min_by(f64::total_cmp)
    }

    /// When job `name` first ran anywhere, and on which worker.
    pub fn first_running(&self, name: &str) -> Option<(f64, &str)> {
        self.jobs
            .get(name)?
            .iter()
            .filter_map(|(w, s)| Some((s.running?, w.as_str())))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// When job `name` first ran on a worker other than `not`.
    pub fn running_elsewhere(&self, name: &str, not: &str) -> Option<f64> {
        self.jobs
            .get(name)?
            .iter()
            .filter(|(w, _)| w.as_str() != not)
            .filter_map(|(_, s)| s.running)
            .min_by(f64::total_cmp)
    }

    /// Workers that received a batch Job for `name`.
    pub fn job_copies(&self, name: &str) -> usize {
        self.jobs.get(name).map_or(0, |m| {
            m.values().filter(|s| s.job_created.is_some()).count()
        })
    }

    /// Workers that received a Kueue Workload for batch Job `name` (MultiKueue names the Workload
    /// of Job `name` `job-<name>-<hash>`, on the manager and on every worker alike).
    pub fn workload_copies(&self, name: &str) -> usize {
        let prefix = format!("job-{name}-");
        self.workloads
            .iter()
            .filter(|(wl, _)| wl.strip_prefix(&prefix).is_some_and(|h| !h.contains('-')))
            .map(|(_, ws)| ws.len())
            .max()
            .unwrap_or(0)
    }

    /// Workers that received any object for job `name`: a Workload or a Job.
    pub fn workers_with_a_copy(&self, name: &str) -> usize {
        let prefix = format!("job-{name}-");
        let mut workers: BTreeSet<&str> = self
            .workloads
            .iter()
            .filter(|(wl, _)| wl.strip_prefix(&prefix).is_some_and(|h| !h.contains('-')))
            .flat_map(|(_, ws)| ws.iter().map(String::as_str))
            .collect();
        if let Some(m) = self.jobs.get(name) {
            workers.extend(
                m.iter()
                    .filter(|(_, s)| s.job_created.is_some())
                    .map(|(w, _)| w.as_str()),
            );
        }
        workers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(job: Option<f64>, running: Option<f64>) -> Seen {
        Seen {
            job_created: job,
            running,
        }
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.jobs.insert(
            "a".into(),
            BTreeMap::from([
                ("w0".to_string(), seen(Some(1.0), Some(2.0))),
                ("w1".to_string(), seen(Some(5.0), Some(6.0))),
            ]),
        );
        s.workloads.insert(
            "job-a-x1y2z".into(),
            BTreeSet::from(["w0".to_string(), "w1".to_string(), "w2".to_string()]),
        );
        // A job whose name starts like another's must not be counted as its copy.
        s.workloads
            .insert("job-a-b-q9r8s".into(), BTreeSet::from(["w2".to_string()]));
        s
    }

    #[test]
    fn first_running_is_the_earliest_worker_and_elsewhere_skips_the_given_one() {
        let s = snapshot();
        assert_eq!(s.first_running("a"), Some((2.0, "w0")));
        assert_eq!(s.running_elsewhere("a", "w0"), Some(6.0));
        assert_eq!(s.first_running("missing"), None);
    }

    #[test]
    fn copies_count_workers_per_kind_and_together() {
        let s = snapshot();
        assert_eq!(s.job_copies("a"), 2);
        assert_eq!(s.workload_copies("a"), 3);
        assert_eq!(s.workers_with_a_copy("a"), 3);
        assert_eq!(s.workload_copies("a-b"), 1);
    }
}
