//! Which simulated GPUs a Node should have: a pure function of the Node object (its
//! `gpufed.io/sim-profile` label, `nvidia.com/gpu` capacity and fault annotation) and the flags.

use std::collections::BTreeMap;

use gpufed_crds::naming::GPU_RESOURCE;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::sim::{
    ANNOTATION_UNHEALTHY_GPUS, ANNOTATION_UTILIZATION, ForcedFaults, LABEL_SIM_PROFILE, SimProfile,
    profile,
};
use crate::status::NodeOwner;

/// The most GPUs one GpuNode may list (the CRD's `maxItems`).
pub const MAX_GPUS_PER_NODE: u32 = 64;

/// What the simulator serves for one Node.
#[derive(Clone, Debug, PartialEq)]
pub struct SimTarget {
    /// The Node (name and UID, the GpuNode's owner).
    pub owner: NodeOwner,
    /// The profile.
    pub profile: &'static SimProfile,
    /// Number of GPUs.
    pub gpus: u32,
    /// GPUs the node annotation marks faulty.
    pub faults: ForcedFaults,
    /// The utilisation (percent) the node annotation sets for every GPU.
    pub utilization: Option<u32>,
}

/// Flags that override what the Node says (single-node sim mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimOverrides {
    /// Profile to use instead of the Node label.
    pub profile: Option<String>,
    /// GPU count to use instead of the Node capacity.
    pub gpus: Option<u32>,
}

/// Profile value that marks a simulated node without GPUs (a CPU node of a kwok cluster).
pub const NO_GPU_PROFILE: &str = "none";

/// The sim target of a Node; `Ok(None)` for a node without GPUs (profile `none`, or an
/// `nvidia.com/gpu` capacity of 0), which is left alone; `Err` says why a node cannot be served.
///
/// Profile: the override, else the `gpufed.io/sim-profile` label. GPU count: the override, else
/// `status.capacity["nvidia.com/gpu"]`, else `status.allocatable`, else the profile's default;
/// at most 64.
pub fn sim_target(node: &Node, overrides: &SimOverrides) -> Result<Option<SimTarget>, String> {
    let name = node.metadata.name.clone().ok_or("node without a name")?;
    let uid = node
        .metadata
        .uid
        .clone()
        .ok_or_else(|| format!("node {name} without a uid"))?;
    let label = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SIM_PROFILE));
    let profile_name = overrides
        .profile
        .as_ref()
        .or(label)
        .ok_or_else(|| format!("no {LABEL_SIM_PROFILE} label and no --sim-profile"))?;
    if profile_name.is_empty() || profile_name.eq_ignore_ascii_case(NO_GPU_PROFILE) {
        return Ok(None);
    }
    let profile = profile(profile_name).map_err(|e| e.to_string())?;
    let from_status = node.status.as_ref().and_then(|s| {
        gpu_quantity(s.capacity.as_ref()).or_else(|| gpu_quantity(s.allocatable.as_ref()))
    });
    let gpus = overrides
        .gpus
        .or(from_status)
        .unwrap_or(profile.default_gpus)
        .min(MAX_GPUS_PER_NODE);
    if gpus == 0 {
        return Ok(None);
    }
    let faults = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_UNHEALTHY_GPUS))
        .map(|v| ForcedFaults::parse(v).0)
        .unwrap_or_default();
    let utilization = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_UTILIZATION))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|u| *u <= 100);
    Ok(Some(SimTarget {
        owner: NodeOwner { name, uid },
        profile,
        gpus,
        faults,
        utilization,
    }))
}

/// The `nvidia.com/gpu` count in a capacity or allocatable map.
fn gpu_quantity(resources: Option<&BTreeMap<String, Quantity>>) -> Option<u32> {
    resources
        .and_then(|m| m.get(GPU_RESOURCE))
        .and_then(|q| q.0.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeStatus;
    use kube::api::ObjectMeta;

    use super::*;

    /// A kwok-like Node with a profile label and optional GPU capacity.
    fn node(name: &str, profile: Option<&str>, gpus: Option<&str>) -> Node {
        let label = |p: &str| BTreeMap::from([(LABEL_SIM_PROFILE.to_string(), p.to_string())]);
        let capacity = |g: &str| BTreeMap::from([(GPU_RESOURCE.to_string(), Quantity(g.into()))]);
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: profile.map(label),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                capacity: gpus.map(capacity),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn target(node: &Node, overrides: &SimOverrides) -> SimTarget {
        sim_target(node, overrides).unwrap().unwrap()
    }

    fn plain(node: &Node) -> Result<Option<SimTarget>, String> {
        sim_target(node, &SimOverrides::default())
    }

    #[test]
    fn the_profile_label_and_gpu_capacity_define_the_simulated_gpus() {
        let t = target(
            &node("n1", Some("L4-24GB"), Some("2")),
            &SimOverrides::default(),
        );
        assert_eq!(t.profile.name, "L4-24GB");
        assert_eq!(t.gpus, 2);
        let owner = NodeOwner {
            name: "n1".into(),
            uid: "uid-n1".into(),
        };
        assert_eq!(t.owner, owner);
        assert_eq!(t.faults, ForcedFaults::None);
    }

    #[test]
    fn flags_override_the_node_and_missing_capacity_falls_back_to_the_profile() {
        let overrides = SimOverrides {
            profile: Some("T4-16GB".into()),
            gpus: Some(3),
        };
        let t = target(&node("n", Some("L4-24GB"), Some("2")), &overrides);
        assert_eq!((t.profile.name, t.gpus), ("T4-16GB", 3));
        let none = SimOverrides::default();
        let t = target(&node("n", Some("H100-SXM-80GB"), None), &none);
        assert_eq!(t.gpus, 8);
        let t = target(&node("n", Some("H100-SXM-80GB"), Some("1000")), &none);
        assert_eq!(t.gpus, MAX_GPUS_PER_NODE);
    }

    #[test]
    fn cpu_nodes_are_left_alone_without_a_warning() {
        assert_eq!(plain(&node("cpu-0", Some("none"), Some("0"))), Ok(None));
        assert_eq!(plain(&node("cpu-1", Some("none"), None)), Ok(None));
        assert_eq!(plain(&node("n", Some("L4-24GB"), Some("0"))), Ok(None));
    }

    #[test]
    fn nodes_without_a_known_profile_are_refused_with_a_reason() {
        let err = plain(&node("n", None, Some("8"))).unwrap_err();
        assert!(err.contains(LABEL_SIM_PROFILE), "{err}");
        let err = plain(&node("n", Some("Z9000"), Some("8"))).unwrap_err();
        assert!(err.contains("unknown sim profile"), "{err}");
    }

    #[test]
    fn the_utilisation_annotation_is_read_from_the_node_and_bad_values_ignored() {
        let with = |v: &str| {
            let mut n = node("n", Some("A100-SXM-40GB"), Some("4"));
            n.metadata.annotations = Some(BTreeMap::from([(
                ANNOTATION_UTILIZATION.to_string(),
                v.to_string(),
            )]));
            target(&n, &SimOverrides::default()).utilization
        };
        assert_eq!(with("0"), Some(0));
        assert_eq!(with(" 100 "), Some(100));
        assert_eq!(with("101"), None);
        assert_eq!(with("idle"), None);
        let plain = target(
            &node("n", Some("A100-SXM-40GB"), Some("4")),
            &SimOverrides::default(),
        );
        assert_eq!(plain.utilization, None);
    }

    #[test]
    fn the_fault_annotation_is_read_from_the_node() {
        let mut n = node("n", Some("A100-SXM-40GB"), Some("4"));
        n.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_UNHEALTHY_GPUS.to_string(),
            "all".to_string(),
        )]));
        assert_eq!(
            target(&n, &SimOverrides::default()).faults,
            ForcedFaults::All
        );
    }
}
