//! The probe's apiserver I/O: server-side apply of GpuNodes, their status and Node labels, listing
//! Nodes and deleting GpuNodes of nodes no longer served.
//!
//! Every call is bounded by a timeout and returns a [`ProbeError`] instead of retrying itself: the
//! probe loop decides when to try again (see [`crate::backoff`]). The bodies come from the pure
//! builders in [`crate::status`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gpufed_crds::{GpuNode, GpuNodeStatus, ProbeBackend};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use tracing::debug;

use crate::error::ProbeError;
use crate::status::{
    LABEL_PROBE_BACKEND, NodeOwner, backend_label, gpu_node_apply_body, gpu_node_status_body,
    node_labels_body,
};

/// Field manager of GpuNode spec and status.
pub const FIELD_MANAGER: &str = "gpu-probe";
/// Field manager of the Node labels (separate, so applying labels never touches anything else and
/// an empty apply removes exactly the labels the probe set).
pub const NODE_LABEL_FIELD_MANAGER: &str = "gpu-probe-node-labels";

/// Talks to the apiserver for the probe.
#[derive(Clone)]
pub struct Writer {
    gpu_nodes: Api<GpuNode>,
    nodes: Api<Node>,
    timeout: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Run `call` with a deadline; both a timeout and an API error become a [`ProbeError`].
async fn timed<T>(
    action: impl FnOnce() -> String,
    timeout: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ProbeError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(ProbeError::Kube {
            action: action(),
            source,
        }),
        Err(_) => Err(ProbeError::Timeout {
            action: action(),
            timeout,
        }),
    }
}

impl Writer {
    /// A writer whose every call gives up after `timeout`.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Writer {
            gpu_nodes: Api::all(client.clone()),
            nodes: Api::all(client),
            timeout,
        }
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Apply a GpuNode's metadata (labels, owner) and spec.
    pub async fn apply_gpu_node(
        &self,
        node: &str,
        backend: ProbeBackend,
        owner: Option<&NodeOwner>,
    ) -> Result<(), ProbeError> {
        let body = gpu_node_apply_body(node, backend, owner);
        timed(
            || format!("apply GpuNode/{node}"),
            self.timeout,
            self.gpu_nodes
                .patch(node, &Self::apply_params(), &Patch::Apply(&body)),
        )
        .await?;
        debug!(node, "applied GpuNode");
        Ok(())
    }

    /// Apply a GpuNode's status (404 when the GpuNode does not exist).
    pub async fn apply_status(&self, node: &str, status: &GpuNodeStatus) -> Result<(), ProbeError> {
        let body = gpu_node_status_body(node, status);
        timed(
            || format!("apply GpuNode/{node} status"),
            self.timeout,
            self.gpu_nodes
                .patch_status(node, &Self::apply_params(), &Patch::Apply(&body)),
        )
        .await?;
        Ok(())
    }

    /// Apply the Node labels the probe owns (an empty map removes them).
    pub async fn apply_node_labels(
        &self,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), ProbeError> {
        let body = node_labels_body(node, labels);
        let params = PatchParams::apply(NODE_LABEL_FIELD_MANAGER).force();
        timed(
            || format!("apply labels of Node/{node}"),
            self.timeout,
            self.nodes.patch(node, &params, &Patch::Apply(&body)),
        )
        .await?;
        debug!(node, ?labels, "applied Node labels");
        Ok(())
    }

    /// The Node called `name`.
    pub async fn get_node(&self, name: &str) -> Result<Node, ProbeError> {
        timed(
            || format!("get Node/{name}"),
            self.timeout,
            self.nodes.get(name),
        )
        .await
    }

    /// Nodes matching a label selector.
    pub async fn list_nodes(&self, selector: &str) -> Result<Vec<Node>, ProbeError> {
        let params = ListParams::default().labels(selector);
        let list = timed(
            || format!("list Nodes ({selector})"),
            self.timeout,
            self.nodes.list(&params),
        )
        .await?;
        Ok(list.items)
    }

    /// Names of the GpuNodes written by a probe of `backend`.
    pub async fn list_gpu_nodes(&self, backend: ProbeBackend) -> Result<Vec<String>, ProbeError> {
        let selector = format!("{LABEL_PROBE_BACKEND}={}", backend_label(backend));
        let params = ListParams::default().labels(&selector);
        let list = timed(
            || format!("list GpuNodes ({selector})"),
            self.timeout,
            self.gpu_nodes.list_metadata(&params),
        )
        .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect())
    }

    /// Delete a GpuNode; one that is already gone is fine.
    pub async fn delete_gpu_node(&self, name: &str) -> Result<(), ProbeError> {
        let result = timed(
            || format!("delete GpuNode/{name}"),
            self.timeout,
            self.gpu_nodes.delete(name, &DeleteParams::default()),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
