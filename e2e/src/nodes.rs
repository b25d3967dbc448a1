//! kwok fake GPU nodes: a spec with model, GPU count, memory and region becomes a `v1.Node` that
//! kwok runs (annotation `kwok.x-k8s.io/node: fake`) with `nvidia.com/gpu` capacity, and labels the
//! simulator (`gpufed.io/sim-profile`) and the scheduler filters (`topology.kubernetes.io/region`) read.

use std::collections::BTreeMap;

use gpufed_crds::naming::{GPU_RESOURCE, LABEL_REGION};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

/// Label naming the simulator profile of a fake node (read by `gpu-probe --backend sim`).
pub const LABEL_SIM_PROFILE: &str = "gpufed.io/sim-profile";

/// A fake GPU node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Simulator profile, e.g. `H100-SXM-80GB` (see gpu-probe).
    pub profile: String,
    /// Number of GPUs (`nvidia.com/gpu` capacity).
    pub gpus: u32,
    /// Region label.
    pub region: String,
    /// Extra labels (e.g. the model labels gpu-probe would write, for tests without a probe).
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node named `name` with `gpus` GPUs of simulator `profile` in `region`.
    pub fn new(name: &str, profile: &str, gpus: u32, region: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            profile: profile.to_string(),
            gpus,
            region: region.to_string(),
            labels: BTreeMap::new(),
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// The Node object, status included (capacity and allocatable).
    pub fn to_node(&self) -> Node {
        let mut labels = self.labels.clone();
        labels.insert("type".into(), "kwok".into());
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert(LABEL_SIM_PROFILE.into(), self.profile.clone());
        labels.insert(LABEL_REGION.into(), self.region.clone());
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", "128".to_string()),
            ("memory", "1Ti".to_string()),
            ("pods", "110".to_string()),
            (GPU_RESOURCE, self.gpus.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    "kwok.x-k8s.io/node".to_string(),
                    "fake".to_string(),
                )])),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                capacity: Some(resources.clone()),
                allocatable: Some(resources),
                ..Default::default()
            }),
        }
    }
}
