//! What every agent task gets: both API clients, the watched caches of both clusters, the shared
//! state, metrics, health and Event recorders.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_crds::{GpuNode, NodeInventory, Placement};
use k8s_openapi::api::core::v1::{Node, Service};

use super::cache::Cache;
use super::cached::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Client, Resource, ResourceExt};

use super::inventory::{self, Report};
use super::state::Shared;
use crate::cli::AgentArgs;
use crate::metrics::Metrics;
use crate::server::Health;

/// Label the Job controller puts on a Job's pods.
pub const POD_JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Caches kept current by watches.
#[derive(Clone)]
pub struct Stores {
    /// Placements in this member's namespace on the hub.
    pub placements: Cache<Placement>,
    /// Local Jobs labelled as managed by gpufed, in the jobs namespace.
    pub jobs: Cache<super::cached::Job>,
    /// Every pod of the member (GPU accounting needs them all).
    pub pods: Cache<Pod>,
    /// Every node of the member.
    pub nodes: Cache<Node>,
    /// Every GpuNode of the member.
    pub gpu_nodes: Cache<GpuNode>,
    /// Gang Services (labelled as managed by gpufed), in the jobs namespace.
    pub services: Cache<Service>,
}

/// The agent's shared context.
pub struct Context {
    /// Command-line settings.
    pub args: AgentArgs,
    /// This agent's identity (Lease holder, Event reporter instance).
    pub identity: String,
    /// Client of the hub (the member's own credentials there).
    pub hub: Client,
    /// Client of the member cluster.
    pub local: Client,
    /// Caches.
    pub stores: Stores,
    /// State shared between tasks.
    pub shared: Arc<Shared>,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Health,
    /// Events on the hub (about Placements, in the member namespace).
    pub hub_events: crate::events::Events,
    /// Events on the member (about local Jobs).
    pub local_events: crate::events::Events,
    /// This agent's key pair for sealed tenant Secrets, new at each start; its public half is
    /// published in `MemberCluster.status.sealingKey` (docs/adr/0020-sealed-secrets.md).
    pub sealing: crate::sealing::SealingKey,
}

impl Context {
    /// The member's inventory from the caches.
    pub fn inventory(&self) -> Report {
        let nodes = self.stores.nodes.state();
        let gpu_nodes = self.stores.gpu_nodes.state();
        let pods = self.stores.pods.state();
        inventory::take(
            &nodes.iter().map(|n| n.as_ref()).collect::<Vec<_>>(),
            &gpu_nodes.iter().map(|g| g.as_ref()).collect::<Vec<_>>(),
            &pods.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
            &inventory::Telemetry {
                now: Time(self.shared.member_now()),
                max_age: self.args.telemetry_max_age,
                sightings: self.shared.sightings(),
            },
        )
    }

    /// GPU nodes of the member, for validating Placements.
    pub fn gpu_nodes(&self) -> Vec<NodeInventory> {
        self.inventory().nodes
    }

    /// Pods of the local gpufed Jobs, by Job name.
    pub fn job_pods(&self) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let ns = self.args.jobs_namespace.as_str();
        let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self
            .stores
            .pods
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        {
            if let Some(job) = pod.labels().get(POD_JOB_NAME_LABEL).cloned() {
                out.entry(job).or_default().push(pod);
            }
        }
        out
    }

    /// Queues an Event about `obj` on `events`' cluster; never waits (the hub may be unreachable
    /// while the fencer reports), never fails.
    pub fn event<K: Resource<DynamicType = ()>>(
        events: &crate::events::Events,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        events.publish(obj, warning, reason, reason, &super::report::cut(note));
    }
}
