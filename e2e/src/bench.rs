//! End-to-end throughput of the hub against a real apiserver, for `make bench`.
//!
//! One run: a harness hub cluster, the real hub process, `members` member clusters stood in for by
//! fake agents (heartbeat + inventory of `nodes_per_member` × 8-GPU H100 nodes, enough for every
//! job), then `jobs` single-GPU ComputeJobs created as fast as the apiserver takes them (16 in
//! flight). Measured in the same run:
//!
//! * **ingest**: seconds to create all jobs (the apiserver's own write rate: the baseline);
//! * **decided**: seconds from the first create until every job has a placement decision;
//! * **placed**: seconds until every job's Placement object exists in its member namespace.
//!
//! Reported as rates and as ratios to ingest, so numbers from different machines compare. No test
//! asserts on these times.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::ComputeJob;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::hubctl::{
    apply, create_member, create_pool, keep_heartbeating, node, report_inventory, start_hub,
};
use crate::{Cluster, ClusterSpec, Error, Tools, wait_until};

/// Settings of one throughput run.
#[derive(Clone, Debug)]
pub struct ThroughputConfig {
    /// Member clusters.
    pub members: usize,
    /// 8-GPU nodes per member.
    pub nodes_per_member: usize,
    /// Jobs submitted.
    pub jobs: usize,
}

/// Results of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThroughputResult {
    /// Member clusters.
    pub members: usize,
    /// Jobs.
    pub jobs: usize,
    /// Seconds to create every job.
    pub ingest_secs: f64,
    /// Seconds from the first create to the last placement decision.
    pub decided_secs: f64,
    /// Seconds from the first create to the last Placement object.
    pub placed_secs: f64,
}

impl ThroughputResult {
    /// Jobs created per second.
    pub fn ingest_rate(&self) -> f64 {
        self.jobs as f64 / self.ingest_secs
    }
    /// Jobs placed (Placement written) per second.
    pub fn placed_rate(&self) -> f64 {
        self.jobs as f64 / self.placed_secs
    }
}

/// Runs one throughput measurement.
pub async fn throughput(tools: &Tools, cfg: &ThroughputConfig) -> Result<ThroughputResult, Error> {
    let mut hub = Cluster::start(
        tools,
        &ClusterSpec::api_only("bench-hub").with_controller_manager(),
    )
    .await?;
    hub.install_crds(&gpufed_crds::crds_for(gpufed_crds::Side::Hub))
        .await?;
    hub.create_namespace("bench").await?;
    start_hub(tools, &mut hub, "hub-0", &[])?;
    let c = hub.client();
    create_pool(&c, "default", "CheapestFit", "60s").await?;
    let mut beats = vec![];
    for m in 0..cfg.members {
        let name = format!("m{m:03}");
        // Prices differ a little so CheapestFit has a real choice to make.
        let price = format!("2.{:02}", 10 + m % 80);
        create_member(&c, &name, "default", "eu-west", &[("H100", &price)]).await?;
        beats.push(keep_heartbeating(c.clone(), &name));
        let nodes = (0..cfg.nodes_per_member)
            .map(|n| node(&format!("{name}-n{n}"), "H100", 81559, 8, 8))
            .collect();
        report_inventory(&c, &name, nodes).await?;
    }
    let members: Api<gpufed_crds::MemberCluster> = Api::all(c.clone());
    wait_until(
        Duration::from_secs(120),
        "every member Schedulable",
        || async {
            let list = members.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|m| {
                    m.status.as_ref().is_some_and(|s| {
                        gpufed_crds::conditions::is_true(&s.conditions, "Schedulable")
                    })
                })
                .count();
            (ready == cfg.members).then_some(())
        },
    )
    .await?;

    let t0 = Instant::now();
    let client = c.clone();
    let results: Vec<Result<ComputeJob, Error>> = futures::stream::iter(0..cfg.jobs)
        .map(|i| {
            let client = client.clone();
            async move {
                let job = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": format!("job-{i:05}"), "namespace": "bench"},
                    "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                             "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
                apply::<ComputeJob>(&client, &job).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ingest = t0.elapsed();
    for r in results {
        r?;
    }
    let jobs: Api<ComputeJob> = Api::namespaced(c.clone(), "bench");
    let decided = wait_until(Duration::from_secs(600), "every job decided", || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        let n = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().is_some_and(|s| s.placement.is_some()))
            .count();
        (n == cfg.jobs).then(|| t0.elapsed())
    })
    .await?;
    let placements: Api<gpufed_crds::Placement> = Api::all(c.clone());
    let placed = wait_until(
        Duration::from_secs(600),
        "every Placement written",
        || async {
            let n = placements
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (n >= cfg.jobs).then(|| t0.elapsed())
        },
    )
    .await?;
    for b in beats {
        b.abort();
    }
    Ok(ThroughputResult {
        members: cfg.members,
        jobs: cfg.jobs,
        ingest_secs: ingest.as_secs_f64(),
        decided_secs: decided.as_secs_f64(),
        placed_secs: placed.as_secs_f64(),
    })
}
