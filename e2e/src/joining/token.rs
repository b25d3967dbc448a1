//! A kubeconfig with a ServiceAccount's token, from the TokenRequest API: how a test acts exactly as
//! a chart's ServiceAccount (agent, probe, hub) would inside the cluster, so it proves the chart's
//! RBAC is enough (and no more).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::{Cluster, Error};

/// Writes a kubeconfig for ServiceAccount `namespace/name` of `cluster` (a one-hour token) to
/// `path` and returns the path.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    path: &Path,
) -> Result<PathBuf, Error> {
    service_account_kubeconfig_for(cluster, namespace, name, path, Duration::from_secs(3600)).await
}

/// [`service_account_kubeconfig`] with a token that lasts `lifetime` (whole seconds, at least
/// the TokenRequest API's minimum of ten minutes), for runs longer than an hour.
pub async fn service_account_kubeconfig_for(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    path: &Path,
    lifetime: Duration,
) -> Result<PathBuf, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(cluster.client(), namespace);
    let seconds = i64::try_from(lifetime.as_secs().max(600)).unwrap_or(i64::MAX);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let token = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(Error::kube("requesting a ServiceAccount token"))?
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::Other(format!("no token for {namespace}/{name}")))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(cluster.ca_pem());
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster.name(), "cluster": {"server": cluster.server(), "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster.name(), "user": user, "namespace": namespace}}],
        "current-context": user,
    });
    let yaml = serde_norway::to_string(&doc).map_err(|e| Error::Other(e.to_string()))?;
    std::fs::write(path, yaml)
        .map_err(|e| Error::Other(format!("writing {}: {e}", path.display())))?;
    Ok(path.to_path_buf())
}
