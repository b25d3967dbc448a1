//! gpufed's side of the peer run: a hub and members joined with the charts and the real agents
//! ([`Pool::join`]), each agent reaching the hub through a proxy the run can cut; ComputeJobs on
//! the hub; the same phases and recorder as Kueue's side, and an open-loop phase of its own that
//! splits each job's path at its Placement and its local Job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gpufed_crds::MemberCluster;
use kube::api::{Api, ApiResource, ListParams};
use serde_json::{Value, json};

use super::observe::{JobKey, Recorder};
use super::{DISPATCH_TIMEOUT, Error, PeerConfig, SystemRun, lost_timeout, phases};
use crate::bench::latency::PlacementWatch;
use crate::joining::{JOBS_NAMESPACE, MemberPlan, Pool, member_ready};
use crate::{Cluster, NodeSpec, Tools, wait_until};

/// Namespace of the ComputeJobs on the hub.
const NAMESPACE: &str = "bench";

/// A single-GPU ComputeJob whose pod kwok runs for `sim_duration`.
pub fn compute_job(name: &str, sim_duration: &str) -> Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]}, "maxDuration": "1h",
                 "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                     "env": [{"name": "GPUFED_SIM_DURATION", "value": sim_duration}]}]}}})
}

/// The UID of each job of `names` in the bench namespace, in order, and `created` (by name) keyed
/// by UID instead.
async fn by_uid(
    hub: &kube::Client,
    names: &[String],
    created: BTreeMap<String, f64>,
) -> Result<(Vec<String>, BTreeMap<String, f64>), Error> {
    let api: Api<gpufed_crds::ComputeJob> = Api::namespaced(hub.clone(), NAMESPACE);
    let uid_of: BTreeMap<String, String> = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("listing the bench's ComputeJobs"))?
        .items
        .into_iter()
        .filter_map(|m| Some((m.metadata.name?, m.metadata.uid?)))
        .collect();
    let uid = |n: &String| {
        uid_of
            .get(n)
            .cloned()
            .ok_or_else(|| Error::Other(format!("ComputeJob {NAMESPACE}/{n} is not on the hub")))
    };
    let uids = names.iter().map(uid).collect::<Result<Vec<_>, _>>()?;
    let created = created
        .iter()
        .map(|(n, t)| Ok((uid(n)?, *t)))
        .collect::<Result<_, Error>>()?;
    Ok((uids, created))
}

/// Starts the pool and waits until every member is Ready with its whole inventory.
async fn start(tools: &Tools, cfg: &PeerConfig) -> Result<Pool, Error> {
    let nodes = cfg.nodes_per_worker();
    let plans: Vec<MemberPlan> = (0..cfg.workers)
        .map(|w| {
            let name = format!("gpufed-w{w}");
            let nodes = (0..nodes)
                .map(|n| NodeSpec::new(&format!("{name}-n{n}"), "H100-SXM-80GB", 8, "eu-west"))
                .collect();
            MemberPlan::new(&name, nodes, "H100", "2.40").via_proxy()
        })
        .collect();
    let pool = Pool::join(tools, &cfg.heartbeat_timeout_text(), &plans).await?;
    pool.hub.create_namespace(NAMESPACE).await?;
    let members: Api<MemberCluster> = Api::all(pool.hub.client());
    let total = i64::try_from(nodes * 8).unwrap_or(i64::MAX);
    let want = cfg.workers;
    wait_until(
        Duration::from_secs(120),
        "every member Ready with its GPUs",
        || async {
            let list = members.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|m| {
                    member_ready(m)
                        && m.status.as_ref().is_some_and(|s| {
                            i64::from(s.total_gpus) == total && i64::from(s.free_gpus) == total
                        })
                })
                .count();
            (ready == want).then_some(())
        },
    )
    .await?;
    Ok(pool)
}

/// Runs both phases on a fresh pool.
pub async fn run(tools: &Tools, cfg: &PeerConfig) -> SystemRun {
    let origin = Instant::now();
    let pool = match super::set_up("gpufed", || start(tools, cfg)).await {
        Ok(p) => p,
        Err(e) => return SystemRun::failed_setup(origin.elapsed().as_secs_f64(), &e),
    };
    let setup_secs = origin.elapsed().as_secs_f64();
    let workers: Vec<&Cluster> = pool.members.iter().collect();
    // A member sees a job by UID only (ADR 0037): the recorder keys what it sees on the workers by
    // it, and each phase looks its jobs up by UID once they are created.
    let key = JobKey::Label(gpufed_crds::naming::LABEL_JOB_UID);
    let rec = Recorder::start(origin, &workers, JOBS_NAMESPACE, key, false);
    let ar = ApiResource::erase::<gpufed_crds::ComputeJob>(&());
    let hub = pool.hub.client();

    let names: Vec<String> = (0..cfg.jobs).map(|i| format!("peer-{i:05}")).collect();
    let docs = names
        .iter()
        .map(|n| (n.clone(), compute_job(n, "3s")))
        .collect();
    let dispatch = async {
        let (created, ingest) = phases::submit(&hub, &ar, docs, cfg.concurrency, &rec).await?;
        let (uids, created) = by_uid(&hub, &names, created).await?;
        let snap = phases::wait_running(&rec, &uids, DISPATCH_TIMEOUT).await?;
        Ok::<_, Error>(phases::dispatch_figures(&snap, &uids, &created, ingest))
    }
    .await;

    let open = async {
        if cfg.open_jobs == 0 {
            return Err(Error::Other("not run (--open-jobs 0)".into()));
        }
        let placements = PlacementWatch::start(&hub).await?;
        let names: Vec<String> = (0..cfg.open_jobs).map(|i| format!("open-{i:05}")).collect();
        let docs = names
            .iter()
            .map(|n| (n.clone(), compute_job(n, super::OPEN_JOB_RUNS)))
            .collect();
        let (created, submit_secs) =
            phases::submit_open(&hub, &ar, docs, cfg.open_rate, &rec).await?;
        let (uids, created) = by_uid(&hub, &names, created).await?;
        let snap = phases::wait_running(&rec, &uids, DISPATCH_TIMEOUT).await?;
        let placed = uids
            .iter()
            .filter_map(|u| {
                let t = placements.seen(u)?;
                Some((u.clone(), t.checked_duration_since(origin)?.as_secs_f64()))
            })
            .collect();
        Ok::<_, Error>(phases::open_loop_figures(
            &snap,
            &uids,
            &created,
            &placed,
            cfg.open_rate,
            submit_secs,
        ))
    }
    .await;

    let lost_names: Vec<String> = (0..cfg.lost_jobs).map(|i| format!("lost-{i:05}")).collect();
    let docs = lost_names
        .iter()
        .map(|n| (n.clone(), compute_job(n, "30m")))
        .collect();
    let lost = async {
        let (created, _) = phases::submit(&hub, &ar, docs, cfg.concurrency, &rec).await?;
        let (lost_uids, _) = by_uid(&hub, &lost_names, created).await?;
        phases::wait_running(&rec, &lost_uids, DISPATCH_TIMEOUT).await?;
        let setup = phases::LostSetup {
            names: &lost_uids,
            workers: &workers,
            namespace: JOBS_NAMESPACE,
            key,
            cut: |victim: &str| {
                let proxy = pool
                    .joined(victim)?
                    .proxy
                    .as_ref()
                    .ok_or_else(|| Error::Other(format!("{victim} has no proxy")))?;
                proxy.cut();
                Ok(())
            },
            hold: cfg.hold,
            timeout: lost_timeout(cfg.heartbeat_timeout),
        };
        phases::lost_worker(&rec, setup).await
    }
    .await;
    let watch_errors = rec.snapshot().watch_errors;
    SystemRun {
        setup_secs,
        dispatch_error: dispatch.as_ref().err().map(ToString::to_string),
        dispatch: dispatch.ok(),
        lost_error: lost.as_ref().err().map(ToString::to_string),
        lost: lost.ok(),
        open_error: open.as_ref().err().map(ToString::to_string),
        open: open.ok(),
        watch_errors,
    }
}
