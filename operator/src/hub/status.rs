//! Writing status with server-side apply under the hub's field manager, guarded by the
//! resourceVersion the change was computed from: if the object changed meanwhile, the apiserver
//! answers 409 and the caller recomputes from fresh state instead of overwriting it.

use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::hub::context::MANAGER;

/// Whether the write happened or lost a race.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The status was written.
    Yes,
    /// The object changed since it was read (409): nothing was written.
    Conflict,
}

fn body<K: Resource<DynamicType = ()>>(
    obj: &K,
    status: &impl Serialize,
) -> Result<serde_json::Value> {
    let status = serde_json::to_value(status).map_err(|source| Error::Serde {
        context: "status".into(),
        source,
    })?;
    Ok(serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {
            "name": obj.name_any(),
            "resourceVersion": obj.resource_version(),
        },
        "status": status,
    }))
}

async fn apply<K>(api: Api<K>, obj: &K, status: &impl Serialize) -> Result<Written>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = body(obj, status)?;
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(Written::Yes),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
        Err(e) => Err(Error::kube(format!(
            "writing status of {} {}",
            K::kind(&()),
            obj.name_any()
        ))(e)),
    }
}

/// Writes the status of a namespaced object.
pub async fn write_namespaced<K>(
    client: &kube::Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<Written>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ns = obj
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    apply(Api::<K>::namespaced(client.clone(), &ns), obj, status).await
}

/// Writes the status of a cluster-scoped object.
pub async fn write_cluster<K>(
    client: &kube::Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<Written>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    apply(Api::<K>::all(client.clone()), obj, status).await
}
