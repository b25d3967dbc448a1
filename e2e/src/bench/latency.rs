//! Submitting jobs and timing them to their Placement: a watch on Placements notes, on this
//! process's monotonic clock, when each job's Placement is first seen, and submission notes when
//! each create returned. Jobs go in either closed-loop (a fixed number of creates in flight) or
//! open-loop (one create started every `1/rate` seconds, whether or not earlier ones returned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::{ComputeJob, Placement};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Error;

/// A job's UID: all a Placement names its job by (ADR 0037).
pub type JobKey = String;

type Seen = Arc<Mutex<HashMap<JobKey, Instant>>>;

/// When each job's first Placement was seen, from a watch on every Placement of the hub.
pub struct PlacementWatch {
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl PlacementWatch {
    /// Starts the watch and waits until its initial list is in.
    pub async fn start(client: &Client) -> Result<PlacementWatch, Error> {
        let seen: Seen = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let api: Api<Placement> = Api::all(client.clone());
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(event) = events.next().await {
                    let now = Instant::now();
                    match event {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            let key = p.spec.job.uid.clone();
                            if let Ok(mut seen) = seen.lock() {
                                seen.entry(key).or_insert(now);
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "placement watch"),
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .map_err(|_| Error::Other("the Placement watch did not list within 30s".into()))?
            .map_err(|_| Error::Other("the Placement watch ended before listing".into()))?;
        Ok(PlacementWatch { seen, task })
    }

    /// When the Placement of `job` was first seen, if it has been.
    pub fn seen(&self, job: &JobKey) -> Option<Instant> {
        self.seen.lock().ok()?.get(job).copied()
    }

    /// Waits until every job in `jobs` has been seen placed, and returns when the last one was.
    pub async fn wait_all(&self, jobs: &[JobKey], timeout: Duration) -> Result<Instant, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            // Checked often: the caller reads CPU counters the moment this returns.
            let last = {
                let seen = self
                    .seen
                    .lock()
                    .map_err(|_| Error::Other("placement watch state poisoned".into()))?;
                let times: Option<Vec<Instant>> =
                    jobs.iter().map(|j| seen.get(j).copied()).collect();
                times.map(|t| t.into_iter().max())
            };
            match last {
                Some(Some(t)) => return Ok(t),
                Some(None) => return Err(Error::Other("no jobs to wait for".into())),
                None => {}
            }
            if Instant::now() >= deadline {
                let placed = jobs.iter().filter(|j| self.seen(j).is_some()).count();
                return Err(Error::Timeout {
                    what: format!("Placements of {} jobs ({placed} seen)", jobs.len()),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PlacementWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A single-GPU H100 job as a user would submit it.
pub fn job_manifest(namespace: &str, name: &str) -> serde_json::Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                    "template": {"containers": [{"name": "main", "image": "busybox"}]}}})
}

/// Creates job `namespace/name` (a plain create, as `kubectl create` does) and returns it.
pub async fn create_job(client: &Client, namespace: &str, name: &str) -> Result<ComputeJob, Error> {
    let ar = ApiResource::erase::<ComputeJob>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let obj: DynamicObject = serde_json::from_value(job_manifest(namespace, name))
        .map_err(|e| Error::Other(format!("job manifest: {e}")))?;
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .map_err(Error::kube("creating a ComputeJob"))?;
    let value = serde_json::to_value(created).map_err(|e| Error::Other(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| Error::Other(format!("reading back {name}: {e}")))
}

/// The UID the apiserver gave `job`.
fn uid_of(job: &ComputeJob) -> Result<JobKey, Error> {
    job.metadata
        .uid
        .clone()
        .ok_or_else(|| Error::Other("a created ComputeJob came back without a UID".into()))
}

/// When each create returned, by job UID.
pub type Submitted = Vec<(JobKey, Instant)>;

/// Creates `names` in `namespace`, `in_flight` creates at a time; returns when each returned.
pub async fn submit_closed(
    client: &Client,
    namespace: &str,
    names: &[String],
    in_flight: usize,
) -> Result<Submitted, Error> {
    let results: Vec<Result<(JobKey, Instant), Error>> = futures::stream::iter(names)
        .map(|name| async move {
            let job = create_job(client, namespace, name).await?;
            Ok((uid_of(&job)?, Instant::now()))
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Starts one create every `1/rate` seconds, each on its own task so a slow answer never delays
/// the next (open loop); returns when each create returned and when the first was started.
pub async fn submit_open(
    client: &Client,
    namespace: &str,
    names: &[String],
    rate: f64,
) -> Result<(Submitted, Instant), Error> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(names.len());
    let mut first = None;
    for name in names {
        let at = ticks.tick().await;
        first.get_or_insert(at.into_std());
        let client = client.clone();
        let namespace = namespace.to_string();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let job = create_job(&client, &namespace, &name).await?;
            Ok::<_, Error>((uid_of(&job)?, Instant::now()))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| Error::Other(format!("a submit task: {e}")))??,
        );
    }
    Ok((out, first.unwrap_or_else(Instant::now)))
}

/// Seconds from each create's return to its Placement being seen (jobs not seen are left out).
pub fn latencies(watch: &PlacementWatch, submitted: &Submitted) -> Vec<f64> {
    submitted
        .iter()
        .filter_map(|(job, created)| {
            let seen = watch.seen(job)?;
            Some(seen.saturating_duration_since(*created).as_secs_f64())
        })
        .collect()
}

/// The spread of a set of latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// How many.
    pub n: usize,
    /// Median, seconds.
    pub p50_secs: f64,
    /// 99th percentile, seconds.
    pub p99_secs: f64,
    /// Largest, seconds.
    pub max_secs: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(samples: &[f64]) -> Latency {
        let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if s.is_empty() {
                return 0.0;
            }
            let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
            s[i.clamp(1, s.len()) - 1]
        };
        Latency {
            n: s.len(),
            p50_secs: rank(50.0),
            p99_secs: rank(99.0),
            max_secs: s.last().copied().unwrap_or(0.0),
        }
    }
}

/// Names `prefix-00000` … for `count` jobs.
pub fn job_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&samples);
        assert_eq!(
            (l.n, l.p50_secs, l.p99_secs, l.max_secs),
            (100, 50.0, 99.0, 100.0)
        );
        let l = Latency::of(&[3.0, 1.0, 2.0]);
        assert_eq!((l.p50_secs, l.p99_secs), (2.0, 3.0));
        assert_eq!(Latency::of(&[]), Latency::default());
    }
}
