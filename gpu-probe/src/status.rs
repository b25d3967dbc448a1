//! Pure builders of what the probe writes: `GpuNode` spec and status, and the Node labels.
//!
//! Nothing here talks to the apiserver; [`crate::writer`] sends what these functions return, so
//! every field the scheduler and agent rely on is unit-tested here.

use std::collections::BTreeMap;

use gpufed_crds::naming::{LABEL_GPU_MEMORY_MIB, LABEL_GPU_MODEL, LABEL_MANAGED_BY, MANAGED_BY};
use gpufed_crds::{GpuDevice, GpuNode, GpuNodeSpec, GpuNodeStatus, ProbeBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::{Value, json};

use crate::reading::NodeReading;

/// Version of gpu-probe written into `status.probeVersion`.
pub const PROBE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Label on every GpuNode the probe writes, naming its backend (`nvml` or `sim`), so the
/// all-nodes mode can find and delete the GpuNodes of nodes it no longer serves.
pub const LABEL_PROBE_BACKEND: &str = "gpufed.io/probe-backend";

/// The value of [`LABEL_PROBE_BACKEND`] for a backend.
pub fn backend_label(backend: ProbeBackend) -> &'static str {
    match backend {
        ProbeBackend::Nvml => "nvml",
        ProbeBackend::Sim => "sim",
    }
}

/// The GpuNode status for a node's reading taken at `now`.
///
/// `model` is the first GPU's model; `utilizationPercent` is the rounded mean over all GPUs;
/// `healthyGpus` counts GPUs that pass [`crate::GpuReading::health`].
pub fn build_status(reading: &NodeReading, now: Timestamp) -> GpuNodeStatus {
    let mut gpus: Vec<GpuDevice> = reading
        .gpus
        .iter()
        .map(|g| {
            let health = g.health();
            GpuDevice {
                index: g.index,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                model: g.model.clone(),
                memory_total_mib: g.memory_total_mib,
                memory_used_mib: g.memory_used_mib,
                utilization_percent: g.utilization_percent,
                temperature_celsius: g.temperature_celsius,
                power_milliwatts: g.power_milliwatts,
                power_limit_milliwatts: g.power_limit_milliwatts,
                ecc_corrected: g.ecc_corrected,
                ecc_uncorrected: g.ecc_uncorrected,
                mig_enabled: g.mig_enabled,
                healthy: health.is_healthy(),
                health_reason: health.reason().map(str::to_string),
            }
        })
        .collect();
    gpus.sort_by_key(|g| g.index);
    let count = gpus.len() as u32;
    let util_sum: u64 = gpus.iter().map(|g| u64::from(g.utilization_percent)).sum();
    let utilization_percent = if count == 0 {
        0
    } else {
        ((util_sum + u64::from(count) / 2) / u64::from(count)) as u32
    };
    GpuNodeStatus {
        model: gpus.first().map(|g| g.model.clone()),
        gpu_count: count,
        healthy_gpus: gpus.iter().filter(|g| g.healthy).count() as u32,
        utilization_percent,
        driver_version: reading.driver_version.clone(),
        cuda_version: reading.cuda_version.clone(),
        gpus,
        last_update_time: Some(Time(now)),
        probe_version: Some(PROBE_VERSION.to_string()),
    }
}

/// The Node labels the probe owns: the model of the first GPU and the smallest memory of any GPU
/// (a job that needs N MiB fits every GPU of the node). No GPUs (or none that answered), no labels;
/// applying an empty set removes labels the probe set before.
pub fn node_labels(reading: &NodeReading) -> BTreeMap<String, String> {
    let answering: Vec<_> = reading
        .gpus
        .iter()
        .filter(|g| g.unresponsive.is_none())
        .collect();
    let mut labels = BTreeMap::new();
    if let Some(first) = answering.first() {
        labels.insert(LABEL_GPU_MODEL.to_string(), first.model.clone());
    }
    if let Some(min) = answering.iter().map(|g| g.memory_total_mib).min() {
        labels.insert(LABEL_GPU_MEMORY_MIB.to_string(), min.to_string());
    }
    labels
}

/// Who owns a GpuNode: its Node, so the garbage collector deletes the GpuNode with the Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOwner {
    /// The Node's name.
    pub name: String,
    /// The Node's UID.
    pub uid: String,
}

/// The server-side-apply body for a GpuNode's metadata and spec.
pub fn gpu_node_apply_body(
    node_name: &str,
    backend: ProbeBackend,
    owner: Option<&NodeOwner>,
) -> Value {
    let spec = GpuNodeSpec {
        node_name: node_name.to_string(),
        backend,
    };
    let mut metadata = json!({
        "name": node_name,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_PROBE_BACKEND: backend_label(backend),
        },
    });
    if let Some(owner) = owner {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "name": owner.name,
            "uid": owner.uid,
        }]);
    }
    json!({
        "apiVersion": GpuNode::api_version(&()),
        "kind": GpuNode::kind(&()),
        "metadata": metadata,
        "spec": spec,
    })
}

/// The server-side-apply body for a GpuNode's status.
pub fn gpu_node_status_body(node_name: &str, status: &GpuNodeStatus) -> Value {
    json!({
        "apiVersion": GpuNode::api_version(&()),
        "kind": GpuNode::kind(&()),
        "metadata": { "name": node_name },
        "status": status,
    })
}

/// The server-side-apply body for the Node labels the probe owns.
pub fn node_labels_body(node_name: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node_name, "labels": labels },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::GpuReading;
    use crate::reading::tests::h100;

    fn node(gpus: Vec<GpuReading>) -> NodeReading {
        NodeReading {
            driver_version: Some("550.90.07".into()),
            cuda_version: Some("12.4".into()),
            gpus,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_750_000_000).unwrap()
    }

    #[test]
    fn status_counts_gpus_and_healthy_ones_and_averages_utilisation() {
        let reading = node(vec![
            GpuReading {
                utilization_percent: 10,
                ..h100(1)
            },
            GpuReading {
                utilization_percent: 41,
                ecc_uncorrected: 2,
                ..h100(0)
            },
            GpuReading {
                utilization_percent: 100,
                ..h100(2)
            },
        ]);
        let s = build_status(&reading, now());
        assert_eq!(s.gpu_count, 3);
        assert_eq!(s.healthy_gpus, 2);
        assert_eq!(s.utilization_percent, 50);
        assert_eq!(s.model.as_deref(), Some("H100"));
        assert_eq!(s.driver_version.as_deref(), Some("550.90.07"));
        assert_eq!(s.cuda_version.as_deref(), Some("12.4"));
        assert_eq!(s.probe_version.as_deref(), Some(PROBE_VERSION));
        assert_eq!(s.last_update_time, Some(Time(now())));
        let indices: Vec<u32> = s.gpus.iter().map(|g| g.index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
        assert!(!s.gpus[0].healthy);
        assert_eq!(
            s.gpus[0].health_reason.as_deref(),
            Some("2 uncorrected ECC errors since driver load")
        );
        assert_eq!(s.gpus[1].memory_total_mib, 81559);
        assert_eq!(s.gpus[1].power_limit_milliwatts, 700_000);
    }

    #[test]
    fn mean_utilisation_rounds_half_up() {
        let reading = node(vec![
            GpuReading {
                utilization_percent: 0,
                ..h100(0)
            },
            GpuReading {
                utilization_percent: 1,
                ..h100(1)
            },
        ]);
        assert_eq!(build_status(&reading, now()).utilization_percent, 1);
    }

    #[test]
    fn a_node_without_gpus_has_an_empty_status_and_no_labels() {
        let s = build_status(&node(vec![]), now());
        assert_eq!(
            (s.gpu_count, s.healthy_gpus, s.utilization_percent),
            (0, 0, 0)
        );
        assert_eq!(s.model, None);
        assert!(node_labels(&node(vec![])).is_empty());
    }

    #[test]
    fn status_serialises_with_the_crd_field_names() {
        let s = build_status(&node(vec![h100(0)]), now());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["gpuCount"], 1);
        assert_eq!(v["gpus"][0]["memoryTotalMiB"], 81559);
        assert_eq!(
            v["gpus"][0]["uuid"],
            "GPU-00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(v["lastUpdateTime"], "2025-06-15T15:06:40Z");
    }

    #[test]
    fn labels_carry_the_model_and_the_smallest_gpu_memory() {
        let reading = node(vec![
            h100(0),
            GpuReading {
                memory_total_mib: 81000,
                ..h100(1)
            },
            GpuReading::unresponsive(2, "NVIDIA H100 80GB HBM3".into(), "lost".into()),
        ]);
        let labels = node_labels(&reading);
        assert_eq!(
            labels.get(LABEL_GPU_MODEL).map(String::as_str),
            Some("H100")
        );
        assert_eq!(
            labels.get(LABEL_GPU_MEMORY_MIB).map(String::as_str),
            Some("81000")
        );
        assert_eq!(labels.len(), 2);
    }

    #[test]
    fn gpu_node_body_names_the_node_backend_and_owner() {
        let owner = NodeOwner {
            name: "n1".into(),
            uid: "uid-1".into(),
        };
        let body = gpu_node_apply_body("n1", ProbeBackend::Sim, Some(&owner));
        assert_eq!(body["apiVersion"], "gpufed.io/v1alpha1");
        assert_eq!(body["kind"], "GpuNode");
        assert_eq!(body["spec"]["nodeName"], "n1");
        assert_eq!(body["spec"]["backend"], "Sim");
        assert_eq!(body["metadata"]["labels"][LABEL_PROBE_BACKEND], "sim");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Node");
        let no_owner = gpu_node_apply_body("n1", ProbeBackend::Nvml, None);
        assert!(no_owner["metadata"].get("ownerReferences").is_none());
        assert_eq!(no_owner["metadata"]["labels"][LABEL_PROBE_BACKEND], "nvml");
    }

    #[test]
    fn status_and_label_bodies_carry_only_what_the_probe_owns() {
        let s = build_status(&node(vec![h100(0)]), now());
        let body = gpu_node_status_body("n1", &s);
        assert!(body.get("spec").is_none());
        assert_eq!(body["status"]["healthyGpus"], 1);
        let labels = node_labels(&node(vec![h100(0)]));
        let body = node_labels_body("n1", &labels);
        assert_eq!(body["kind"], "Node");
        assert_eq!(body["metadata"]["labels"][LABEL_GPU_MODEL], "H100");
        assert!(body.get("spec").is_none());
    }
}
