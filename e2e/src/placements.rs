//! Finding a job's Placements on the hub. A Placement names its job by UID only (a member sees no
//! namespace or name, docs/adr/0037-members-see-opaque-job-identities.md), so tests look the UID up
//! on the hub first.

use gpufed_crds::{ComputeJob, Placement};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta};

use crate::Error;

/// The UID of ComputeJob `namespace/name`.
pub async fn job_uid(hub: &Client, namespace: &str, name: &str) -> Result<String, Error> {
    Api::<ComputeJob>::namespaced(hub.clone(), namespace)
        .get_metadata(name)
        .await
        .map_err(Error::kube("reading a ComputeJob"))?
        .metadata
        .uid
        .ok_or_else(|| Error::Other(format!("ComputeJob {namespace}/{name} has no UID")))
}

/// The metadata of every ComputeJob `api` lists.
async fn job_metas(api: Api<ComputeJob>) -> Result<Vec<ObjectMeta>, Error> {
    Ok(api
        .list_metadata(&ListParams::default())
        .await
        .map_err(Error::kube("listing ComputeJobs"))?
        .items
        .into_iter()
        .map(|j| j.metadata)
        .collect())
}

/// The UIDs of the ComputeJobs named `name` in any namespace.
pub async fn job_uids_named(hub: &Client, name: &str) -> Result<Vec<String>, Error> {
    if name.is_empty() {
        return Ok(vec![]);
    }
    Ok(job_metas(Api::all(hub.clone()))
        .await?
        .into_iter()
        .filter(|m| m.name.as_deref() == Some(name))
        .filter_map(|m| m.uid)
        .collect())
}

/// Every Placement of ComputeJob `namespace/name`, in any member's namespace.
pub async fn of_job(hub: &Client, namespace: &str, name: &str) -> Result<Vec<Placement>, Error> {
    let uid = job_uid(hub, namespace, name).await?;
    Ok(Api::<Placement>::all(hub.clone())
        .list(
            &ListParams::default().labels(&format!("{}={uid}", gpufed_crds::naming::LABEL_JOB_UID)),
        )
        .await
        .map_err(Error::kube("listing Placements"))?
        .items)
}

/// The UIDs of every ComputeJob in `namespace`.
pub async fn job_uids_in(hub: &Client, namespace: &str) -> Result<Vec<String>, Error> {
    Ok(job_metas(Api::namespaced(hub.clone(), namespace))
        .await?
        .into_iter()
        .filter_map(|m| m.uid)
        .collect())
}

/// The name of the ComputeJob in `namespace` with `uid`.
pub async fn job_name_of(hub: &Client, namespace: &str, uid: &str) -> Result<String, Error> {
    job_metas(Api::namespaced(hub.clone(), namespace))
        .await?
        .into_iter()
        .find(|m| m.uid.as_deref() == Some(uid))
        .and_then(|m| m.name)
        .ok_or_else(|| Error::Other(format!("no ComputeJob in {namespace} has UID {uid}")))
}
