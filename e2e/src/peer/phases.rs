//! The two measured phases, the same code for both systems: submit jobs on the manager/hub and
//! wait until each runs on some worker ([`submit`], [`wait_running`], [`dispatch_figures`]); then
//! cut one worker off while it runs long jobs and wait until they run elsewhere
//! ([`lost_worker`]). Every time comes from the workers' apiservers through the [`Recorder`].

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::Value;

use super::observe::{JobKey, Recorder, Snapshot};
use super::{Dispatch, Lost};
use crate::bench::latency::Latency;
use crate::{Cluster, Error, wait_until};

/// The value at quantile `q` (0..=1) of `values`, nearest rank; 0 for none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn mean(values: &[usize]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<usize>() as f64 / values.len() as f64
    }
}

/// Creates `docs` (kind `ar`) on `client`, `concurrency` at a time; returns each job's creation
/// time (recorder seconds, when the apiserver answered) and the seconds from the first request to
/// the last answer.
pub async fn submit(
    client: &Client,
    ar: &ApiResource,
    docs: Vec<(String, Value)>,
    concurrency: usize,
    rec: &Recorder,
) -> Result<(BTreeMap<String, f64>, f64), Error> {
    let t0 = rec.now();
    let results: Vec<Result<(String, f64), Error>> = futures::stream::iter(docs)
        .map(|(name, doc)| {
            let client = client.clone();
            async move {
                let ns = doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, ar);
                let obj: DynamicObject =
                    serde_json::from_value(doc).map_err(|e| Error::Other(e.to_string()))?;
                api.create(&PostParams::default(), &obj)
                    .await
                    .map_err(Error::kube("submitting a job"))?;
                Ok((name, rec.now()))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let created = results.into_iter().collect::<Result<BTreeMap<_, _>, _>>()?;
    let last = created.values().copied().fold(t0, f64::max);
    Ok((created, last - t0))
}

/// Creates `docs` (kind `ar`) on `client` in open loop: one create started every `1/rate`
/// seconds on its own task, whether or not earlier ones were answered. Returns each job's
/// creation time (recorder seconds, when the apiserver answered) and the seconds from the first
/// create started to the last one started.
pub async fn submit_open(
    client: &Client,
    ar: &ApiResource,
    docs: Vec<(String, Value)>,
    rate: f64,
    rec: &Recorder,
) -> Result<(BTreeMap<String, f64>, f64), Error> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut first, mut last) = (None, 0.0);
    let mut tasks = Vec::with_capacity(docs.len());
    for (name, doc) in docs {
        ticks.tick().await;
        last = rec.now();
        first.get_or_insert(last);
        let (client, ar, origin) = (client.clone(), ar.clone(), rec.clock());
        tasks.push(tokio::spawn(async move {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            let obj: DynamicObject =
                serde_json::from_value(doc).map_err(|e| Error::Other(e.to_string()))?;
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(Error::kube("submitting a job"))?;
            Ok::<_, Error>((name, origin.elapsed().as_secs_f64()))
        }));
    }
    let mut created = BTreeMap::new();
    for t in tasks {
        let (name, at) = t
            .await
            .map_err(|e| Error::Other(format!("a submit task: {e}")))??;
        created.insert(name, at);
    }
    Ok((created, last - first.unwrap_or(last)))
}

/// Each job's path split at its Placement (`placed`: recorder seconds when the hub's Placement
/// was seen) and its first local Job, from its creation (`created`) to its first pod Running.
/// Jobs missing a point are left out of the stretches that need it.
pub fn open_loop_figures(
    snap: &Snapshot,
    names: &[String],
    created: &BTreeMap<String, f64>,
    placed: &BTreeMap<String, f64>,
    rate: f64,
    submit_secs: f64,
) -> super::OpenLoop {
    let (mut to_placement, mut delivery, mut to_running, mut total) =
        (vec![], vec![], vec![], vec![]);
    for n in names {
        let c = created.get(n).copied();
        let p = placed.get(n).copied();
        let local = snap.first_job_created(n);
        let running = snap.first_running(n).map(|(t, _)| t);
        if let (Some(c), Some(p)) = (c, p) {
            to_placement.push(p - c);
        }
        if let (Some(p), Some(l)) = (p, local) {
            delivery.push(l - p);
        }
        if let (Some(l), Some(r)) = (local, running) {
            to_running.push(r - l);
        }
        if let (Some(c), Some(r)) = (c, running) {
            total.push(r - c);
        }
    }
    let achieved_rate = if submit_secs > 0.0 {
        names.len().saturating_sub(1) as f64 / submit_secs
    } else {
        0.0
    };
    super::OpenLoop {
        rate,
        jobs: names.len(),
        achieved_rate,
        submit_to_placement: Latency::of(&to_placement),
        placement_to_local_job: Latency::of(&delivery),
        local_job_to_running: Latency::of(&to_running),
        submit_to_running: Latency::of(&total),
    }
}

/// Waits until every job in `names` has run on some worker; on time-out, names those that never did.
pub async fn wait_running(
    rec: &Recorder,
    names: &[String],
    timeout: Duration,
) -> Result<Snapshot, Error> {
    let r = wait_until(timeout, "every job running on a worker", || async {
        let s = rec.snapshot();
        names
            .iter()
            .all(|n| s.first_running(n).is_some())
            .then_some(s)
    })
    .await;
    r.map_err(|e| {
        let s = rec.snapshot();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| s.first_running(n).is_none())
            .collect();
        Error::Other(format!(
            "{e}: {} of {} never ran (first: {:?})",
            missing.len(),
            names.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ))
    })
}

/// The dispatch figures of `names`, created at `created` (recorder seconds), from what the
/// workers saw in `snap`.
pub fn dispatch_figures(
    snap: &Snapshot,
    names: &[String],
    created: &BTreeMap<String, f64>,
    ingest_secs: f64,
) -> Dispatch {
    let first_create = created.values().copied().fold(f64::INFINITY, f64::min);
    let mut latencies = vec![];
    let mut last_running = first_create;
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for n in names {
        if let (Some((t, w)), Some(c)) = (snap.first_running(n), created.get(n)) {
            latencies.push(t - c);
            last_running = last_running.max(t);
            *per_worker.entry(w.to_string()).or_default() += 1;
        }
    }
    let copies: Vec<usize> = names.iter().map(|n| snap.workers_with_a_copy(n)).collect();
    let workloads: Vec<usize> = names.iter().map(|n| snap.workload_copies(n)).collect();
    let jobs: Vec<usize> = names.iter().map(|n| snap.job_copies(n)).collect();
    Dispatch {
        jobs: names.len(),
        ingest_secs,
        all_running_secs: last_running - first_create,
        latency_p50_secs: quantile(&latencies, 0.5),
        latency_p95_secs: quantile(&latencies, 0.95),
        latency_max_secs: quantile(&latencies, 1.0),
        workers_with_a_copy_mean: mean(&copies),
        workers_with_a_copy_max: copies.iter().copied().max().unwrap_or(0),
        workload_copies_mean: mean(&workloads),
        job_copies_mean: mean(&jobs),
        ran_on: per_worker,
    }
}

/// The worker on which most of `names` run (ties: the first by name) and those jobs.
pub fn busiest(snap: &Snapshot, names: &[String]) -> Option<(String, Vec<String>)> {
    let mut by_worker: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in names {
        if let Some((_, w)) = snap.first_running(n) {
            by_worker.entry(w).or_default().push(n.clone());
        }
    }
    let max = by_worker.values().map(Vec::len).max()?;
    by_worker
        .into_iter()
        .find(|(_, v)| v.len() == max)
        .map(|(w, v)| (w.to_string(), v))
}

/// What is needed to cut a worker off.
pub struct LostSetup<'a, F: FnOnce(&str) -> Result<(), Error>> {
    /// The long-running jobs, already running.
    pub names: &'a [String],
    /// The workers, to read the victim's pods from directly after the cut.
    pub workers: &'a [&'a Cluster],
    /// Namespace of the jobs' pods on the workers.
    pub namespace: &'a str,
    /// How pods name their job.
    pub key: JobKey,
    /// Cuts the manager/hub off from the named worker.
    pub cut: F,
    /// How long the jobs run before the cut.
    pub hold: Duration,
    /// How long to wait for them to run elsewhere.
    pub timeout: Duration,
}

/// Cuts the worker that runs most of `setup.names` off from the manager/hub and measures, per job
/// it ran, the seconds from the cut until the job runs on another worker; then counts how many of
/// them still run on the cut-off worker too.
pub async fn lost_worker<F: FnOnce(&str) -> Result<(), Error>>(
    rec: &Recorder,
    setup: LostSetup<'_, F>,
) -> Result<Lost, Error> {
    tokio::time::sleep(setup.hold).await;
    let (victim, on_victim) = busiest(&rec.snapshot(), setup.names)
        .ok_or_else(|| Error::Other("no lost-phase job is running".into()))?;
    let cut_at = rec.now();
    (setup.cut)(&victim)?;
    let waited = wait_until(
        setup.timeout,
        "the cut-off worker's jobs running elsewhere",
        || {
            let on_victim = &on_victim;
            let victim = &victim;
            async move {
                let s = rec.snapshot();
                on_victim
                    .iter()
                    .all(|n| s.running_elsewhere(n, victim).is_some())
                    .then_some(s)
            }
        },
    )
    .await;
    let snap = match waited {
        Ok(s) => s,
        Err(e) => {
            let s = rec.snapshot();
            let moved: Vec<f64> = on_victim
                .iter()
                .filter_map(|n| s.running_elsewhere(n, &victim))
                .map(|t| t - cut_at)
                .collect();
            let when = if moved.is_empty() {
                String::new()
            } else {
                format!(
                    " ({:.1}–{:.1} s after the cut)",
                    quantile(&moved, 0.0),
                    quantile(&moved, 1.0)
                )
            };
            return Err(Error::Other(format!(
                "{e}: {} of the {} jobs on {victim} ran elsewhere{when}",
                moved.len(),
                on_victim.len()
            )));
        }
    };
    let recovery: Vec<f64> = on_victim
        .iter()
        .filter_map(|n| snap.running_elsewhere(n, &victim))
        .map(|t| t - cut_at)
        .collect();
    let still = match setup.workers.iter().find(|w| w.name() == victim) {
        Some(w) => {
            let pods: Api<Pod> = Api::namespaced(w.client(), setup.namespace);
            let list = pods
                .list(&ListParams::default())
                .await
                .map_err(Error::kube("listing the cut-off worker's pods"))?;
            let running: Vec<String> = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .filter_map(|p| match setup.key {
                    JobKey::Label(l) => p.metadata.labels.as_ref()?.get(l).cloned(),
                    JobKey::JobName => p
                        .metadata
                        .labels
                        .as_ref()?
                        .get("batch.kubernetes.io/job-name")
                        .cloned(),
                })
                .collect();
            on_victim.iter().filter(|n| running.contains(n)).count()
        }
        None => 0,
    };
    let copies: Vec<usize> = on_victim
        .iter()
        .map(|n| snap.workers_with_a_copy(n))
        .collect();
    Ok(Lost {
        victim,
        jobs_on_victim: on_victim.len(),
        hold_secs: setup.hold.as_secs_f64(),
        recovery_min_secs: quantile(&recovery, 0.0),
        recovery_p50_secs: quantile(&recovery, 0.5),
        recovery_max_secs: quantile(&recovery, 1.0),
        still_running_on_victim: still,
        workers_with_a_copy_mean: mean(&copies),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::observe::Seen;
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.95), 4.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    fn ran(snap: &mut Snapshot, job: &str, worker: &str, created: f64, running: f64) {
        snap.jobs.entry(job.into()).or_default().insert(
            worker.into(),
            Seen {
                job_created: Some(created),
                running: Some(running),
            },
        );
    }

    #[test]
    fn dispatch_figures_measure_from_each_jobs_creation_and_count_copies() {
        let mut s = Snapshot::default();
        ran(&mut s, "a", "w0", 1.5, 2.0);
        ran(&mut s, "b", "w1", 2.5, 4.0);
        s.workloads.insert(
            "job-a-abcde".into(),
            BTreeSet::from(["w0".into(), "w1".into(), "w2".into()]),
        );
        let names = vec!["a".to_string(), "b".to_string()];
        let created = BTreeMap::from([("a".to_string(), 1.0), ("b".to_string(), 1.5)]);
        let d = dispatch_figures(&s, &names, &created, 0.5);
        assert_eq!(d.all_running_secs, 3.0);
        assert_eq!(d.latency_p50_secs, 1.0);
        assert_eq!(d.latency_max_secs, 2.5);
        assert_eq!(d.workers_with_a_copy_mean, 2.0);
        assert_eq!(d.workers_with_a_copy_max, 3);
        assert_eq!(d.workload_copies_mean, 1.5);
        assert_eq!(d.job_copies_mean, 1.0);
        assert_eq!(d.ran_on["w0"], 1);
    }

    #[test]
    fn the_open_loop_split_cuts_each_path_at_its_placement_and_first_local_job() {
        let mut s = Snapshot::default();
        // a: created 1.0, placed 1.2, local Job 1.5 on w0, Running 2.5.
        ran(&mut s, "a", "w0", 1.5, 2.5);
        // b: a stale copy on w1 seen later than the first local Job on w0; running on w0 first.
        ran(&mut s, "b", "w0", 2.0, 3.0);
        ran(&mut s, "b", "w1", 2.6, 3.5);
        // c: placed but never delivered.
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let created = BTreeMap::from([
            ("a".to_string(), 1.0),
            ("b".to_string(), 1.5),
            ("c".to_string(), 2.0),
        ]);
        let placed = BTreeMap::from([
            ("a".to_string(), 1.25),
            ("b".to_string(), 1.75),
            ("c".to_string(), 2.5),
        ]);
        let o = open_loop_figures(&s, &names, &created, &placed, 50.0, 0.04);
        assert_eq!(o.jobs, 3);
        assert_eq!(o.achieved_rate, 50.0);
        assert_eq!(o.submit_to_placement.n, 3);
        assert_eq!(o.submit_to_placement.max_secs, 0.5);
        assert_eq!(o.placement_to_local_job.n, 2);
        assert_eq!(o.placement_to_local_job.p50_secs, 0.25);
        assert_eq!(o.local_job_to_running.n, 2);
        assert_eq!(o.local_job_to_running.max_secs, 1.0);
        assert_eq!(o.submit_to_running.n, 2);
        assert_eq!(o.submit_to_running.max_secs, 1.5);
    }

    #[test]
    fn the_busiest_worker_is_the_one_running_most_jobs() {
        let mut s = Snapshot::default();
        ran(&mut s, "a", "w1", 0.0, 1.0);
        ran(&mut s, "b", "w1", 0.0, 1.0);
        ran(&mut s, "c", "w0", 0.0, 1.0);
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let (w, jobs) = busiest(&s, &names).unwrap();
        assert_eq!(w, "w1");
        assert_eq!(jobs, ["a", "b"]);
        assert!(busiest(&Snapshot::default(), &names).is_none());
    }
}
