//! Every apiserver call of the plugin, each mapped through [`classify`] so a failure reads as
//! what to fix (unreachable hub, missing CRDs, missing object, RBAC) rather than a client error.

use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Placement};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;

use crate::connect::Hub;
use crate::error::{Call, Result, classify};

const JOBS: &str = "computejobs.gpufed.io";
const MEMBERS: &str = "memberclusters.gpufed.io";
const POOLS: &str = "gpupools.gpufed.io";
const PLACEMENTS: &str = "placements.gpufed.io";

async fn list<K>(hub: &Hub, api: Api<K>, lp: &ListParams, call: Call) -> Result<Vec<K>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(lp)
        .await
        .map(|l| l.items)
        .map_err(|e| classify(e, &call, &hub.server))
}

async fn get<K>(hub: &Hub, api: Api<K>, name: &str, call: Call) -> Result<K>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .map_err(|e| classify(e, &call, &hub.server))
}

/// ComputeJobs of `namespace` (all namespaces when `None`), optionally by label selector.
pub async fn jobs(
    hub: &Hub,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<ComputeJob>> {
    let api = match namespace {
        Some(ns) => Api::namespaced(hub.client.clone(), ns),
        None => Api::all(hub.client.clone()),
    };
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    list(hub, api, &lp, Call::list(JOBS, "computejob", namespace)).await
}

/// The ComputeJob `namespace/name`.
pub async fn job(hub: &Hub, namespace: &str, name: &str) -> Result<ComputeJob> {
    let api = Api::namespaced(hub.client.clone(), namespace);
    get(
        hub,
        api,
        name,
        Call::get(JOBS, "computejob", name, Some(namespace)),
    )
    .await
}

/// Every MemberCluster.
pub async fn members(hub: &Hub) -> Result<Vec<MemberCluster>> {
    let api = Api::all(hub.client.clone());
    list(
        hub,
        api,
        &ListParams::default(),
        Call::list(MEMBERS, "membercluster", None),
    )
    .await
}

/// The MemberCluster `name`.
pub async fn member(hub: &Hub, name: &str) -> Result<MemberCluster> {
    let api = Api::all(hub.client.clone());
    get(
        hub,
        api,
        name,
        Call::get(MEMBERS, "membercluster", name, None),
    )
    .await
}

/// Every GpuPool.
pub async fn pools(hub: &Hub) -> Result<Vec<GpuPool>> {
    let api = Api::all(hub.client.clone());
    list(
        hub,
        api,
        &ListParams::default(),
        Call::list(POOLS, "gpupool", None),
    )
    .await
}

/// The GpuPool `name`, or `None` when it does not exist.
pub async fn pool(hub: &Hub, name: &str) -> Result<Option<GpuPool>> {
    let api: Api<GpuPool> = Api::all(hub.client.clone());
    api.get_opt(name)
        .await
        .map_err(|e| classify(e, &Call::get(POOLS, "gpupool", name, None), &hub.server))
}

/// The Secret `namespace/name`.
pub async fn secret(hub: &Hub, namespace: &str, name: &str) -> Result<Secret> {
    let api = Api::namespaced(hub.client.clone(), namespace);
    get(
        hub,
        api,
        name,
        Call::get("secrets", "secret", name, Some(namespace)),
    )
    .await
}

/// Events (core/v1, which also serves events.k8s.io/v1 ones) about `job`.
pub async fn job_events(hub: &Hub, job: &ComputeJob) -> Result<Vec<Event>> {
    let namespace = job.namespace().unwrap_or_else(|| hub.namespace.clone());
    let api: Api<Event> = Api::namespaced(hub.client.clone(), &namespace);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=ComputeJob,involvedObject.name={}",
        job.name_any()
    ));
    let events = list(
        hub,
        api,
        &lp,
        Call::list("events", "event", Some(&namespace)),
    )
    .await?;
    // A job deleted and re-created under the same name has a new UID: keep only this one's.
    let uid = job.metadata.uid.as_deref();
    Ok(events
        .into_iter()
        .filter(|e| match (uid, e.involved_object.uid.as_deref()) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        })
        .collect())
}

/// The Placements of member `cluster` (its namespace `gpufed-member-<cluster>`).
pub async fn placements(hub: &Hub, cluster: &str) -> Result<Vec<Placement>> {
    let namespace = gpufed_crds::naming::member_namespace(cluster);
    let api = Api::namespaced(hub.client.clone(), &namespace);
    list(
        hub,
        api,
        &ListParams::default(),
        Call::list(PLACEMENTS, "placement", Some(&namespace)),
    )
    .await
}

/// The ConfigMap `namespace/name`.
pub async fn configmap(hub: &Hub, namespace: &str, name: &str) -> Result<ConfigMap> {
    let api = Api::namespaced(hub.client.clone(), namespace);
    get(
        hub,
        api,
        name,
        Call::get("configmaps", "configmap", name, Some(namespace)),
    )
    .await
}
