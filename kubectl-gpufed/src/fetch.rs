//! Every apiserver call of the plugin, each mapped through [`classify`] so a failure reads as
//! what to fix (unreachable hub, missing CRDs, missing object, RBAC) rather than a client error.

use std::collections::BTreeMap;

use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Placement};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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

/// The last renewal of each member's heartbeat Lease (`<cluster>-heartbeat` in its member
/// namespace), by cluster; empty when the user may not list Leases, so callers fall back to the
/// coarser `status.lastHeartbeatTime` (ADR 0036).
pub async fn heartbeats(hub: &Hub) -> BTreeMap<String, Time> {
    let api: Api<Lease> = Api::all(hub.client.clone());
    let lp = ListParams::default().labels(gpufed_crds::naming::LABEL_CLUSTER);
    let Ok(leases) = api.list(&lp).await else {
        return BTreeMap::new();
    };
    renewals(&leases.items)
}

/// The heartbeat Leases' renewals among `leases`, by cluster.
pub fn renewals(leases: &[Lease]) -> BTreeMap<String, Time> {
    leases
        .iter()
        .filter_map(|l| {
            let cluster = l.labels().get(gpufed_crds::naming::LABEL_CLUSTER)?;
            let is_heartbeat = l.metadata.name.as_deref()
                == Some(gpufed_crds::naming::heartbeat_lease_name(cluster).as_str())
                && l.metadata.namespace.as_deref()
                    == Some(gpufed_crds::naming::member_namespace(cluster).as_str());
            let renewed = l.spec.as_ref()?.renew_time.as_ref()?;
            is_heartbeat.then(|| (cluster.clone(), Time(renewed.0)))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn lease(name: &str, namespace: &str, cluster: &str, renewed: Option<i64>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    gpufed_crds::naming::LABEL_CLUSTER.to_string(),
                    cluster.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: renewed
                    .map(|s| MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_a_members_own_heartbeat_lease_counts_as_its_heartbeat() {
        let leases = [
            lease("alpha-heartbeat", "gpufed-member-alpha", "alpha", Some(100)),
            // Labelled alpha but another Lease, or in another member's namespace.
            lease("other", "gpufed-member-alpha", "alpha", Some(200)),
            lease("alpha-heartbeat", "gpufed-member-beta", "alpha", Some(300)),
            // Never renewed.
            lease("beta-heartbeat", "gpufed-member-beta", "beta", None),
        ];
        let got = renewals(&leases);
        assert_eq!(got.len(), 1);
        assert_eq!(got["alpha"].0.as_second(), 100);
    }
}
