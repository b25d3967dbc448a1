//! What the agent's caches keep of Pods and Nodes. A member may run thousands of pods that are not
//! ours; the agent needs only how many GPUs each holds on which node. Everything else (env,
//! volumes, images, annotations, a node's image list) is dropped before it is cached, so the
//! agent's memory follows the number of pods, not their size.
//!
//! Kept for every pod: name, namespace, uid, deletion time, node, phase, each container's name and
//! resources (GPUs are counted from them). Kept in addition for pods of the jobs namespace (ours):
//! labels and annotations (the Job and completion index they belong to) and the whole status
//! (start and finish times, exit codes, termination messages, for usage and failure reports).

use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus};
use kube::api::ObjectMeta;

fn container(c: &Container) -> Container {
    Container {
        name: c.name.clone(),
        resources: c.resources.clone(),
        ..Default::default()
    }
}

/// The metadata every cached object keeps.
fn meta(m: &ObjectMeta, labels: bool) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        deletion_timestamp: m.deletion_timestamp.clone(),
        creation_timestamp: m.creation_timestamp.clone(),
        labels: if labels { m.labels.clone() } else { None },
        annotations: if labels { m.annotations.clone() } else { None },
        owner_references: if labels {
            m.owner_references.clone()
        } else {
            None
        },
        ..Default::default()
    }
}

/// Trims `pod` to what the agent reads; `jobs_namespace` is where its own pods run.
pub fn pod(pod: &mut Pod, jobs_namespace: &str) {
    let ours = pod.metadata.namespace.as_deref() == Some(jobs_namespace);
    pod.metadata = meta(&pod.metadata, ours);
    if let Some(spec) = pod.spec.as_ref() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name.clone(),
            containers: spec.containers.iter().map(container).collect(),
            init_containers: spec
                .init_containers
                .as_ref()
                .map(|cs| cs.iter().map(container).collect()),
            ..Default::default()
        });
    }
    if !ours && let Some(status) = pod.status.as_ref() {
        pod.status = Some(PodStatus {
            phase: status.phase.clone(),
            ..Default::default()
        });
    }
}

/// Trims `node` to what the inventory reads: labels (GPU model and memory), whether it is
/// cordoned, its allocatable resources and its Ready condition.
pub fn node(node: &mut Node) {
    node.metadata = meta(&node.metadata, true);
    node.metadata.owner_references = None;
    node.metadata.annotations = None;
    node.spec = node.spec.as_ref().map(|s| NodeSpec {
        unschedulable: s.unschedulable,
        ..Default::default()
    });
    node.status = node.status.as_ref().map(|s| NodeStatus {
        allocatable: s.allocatable.clone(),
        conditions: s
            .conditions
            .as_ref()
            .map(|cs| cs.iter().filter(|c| c.type_ == "Ready").cloned().collect()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::inventory::{holds_resources, node_ready, pod_gpus};

    fn big_pod(ns: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns, "uid": "u",
                         "labels": {"batch.kubernetes.io/job-name": "gpufed-abc"},
                         "annotations": {"big": "x".repeat(4096)}},
            "spec": {"nodeName": "n1",
                     "volumes": [{"name": "v", "emptyDir": {}}],
                     "containers": [{"name": "main", "image": "busybox",
                                     "env": [{"name": "A", "value": "x".repeat(2048)}],
                                     "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
                     "initContainers": [{"name": "init", "image": "busybox",
                                         "resources": {"limits": {"nvidia.com/gpu": "3"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "",
                                              "ready": true, "restartCount": 0,
                                              "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_slim_pod_holds_the_same_gpus_and_is_much_smaller() {
        for ns in ["gpufed-jobs", "someone-else"] {
            let full = big_pod(ns);
            let mut slim = full.clone();
            pod(&mut slim, "gpufed-jobs");
            assert_eq!(pod_gpus(&slim), pod_gpus(&full));
            assert_eq!(pod_gpus(&slim), 3);
            assert_eq!(holds_resources(&slim), holds_resources(&full));
            let spec = slim.spec.as_ref().unwrap();
            assert!(spec.volumes.is_none() && spec.containers[0].env.is_none());
            if ns == "someone-else" {
                let size = |p: &Pod| serde_json::to_vec(p).unwrap().len();
                assert!(
                    size(&slim) * 20 < size(&full),
                    "{} vs {}",
                    size(&slim),
                    size(&full)
                );
            }
        }
    }

    #[test]
    fn our_pods_keep_their_labels_and_status_and_others_only_their_phase() {
        let mut ours = big_pod("gpufed-jobs");
        pod(&mut ours, "gpufed-jobs");
        assert!(ours.metadata.labels.is_some());
        assert!(ours.metadata.annotations.is_some());
        assert!(ours.status.as_ref().unwrap().container_statuses.is_some());
        let mut theirs = big_pod("someone-else");
        pod(&mut theirs, "gpufed-jobs");
        assert!(theirs.metadata.labels.is_none());
        let st = theirs.status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(st.container_statuses.is_none());
    }

    #[test]
    fn a_slim_node_keeps_labels_cordon_allocatable_and_readiness() {
        let full: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"gpufed.io/gpu-model": "H100"},
                         "annotations": {"big": "x".repeat(4096)}},
            "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24"},
            "status": {"allocatable": {"nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "MemoryPressure", "status": "False"}],
                       "images": [{"names": ["x".repeat(4096)], "sizeBytes": 1}]}
        }))
        .unwrap();
        let mut slim = full.clone();
        node(&mut slim);
        assert_eq!(node_ready(&slim), node_ready(&full));
        assert_eq!(slim.metadata.labels, full.metadata.labels);
        assert_eq!(
            slim.status.as_ref().unwrap().allocatable,
            full.status.as_ref().unwrap().allocatable
        );
        assert!(slim.status.unwrap().images.is_none());
        assert!(slim.metadata.annotations.is_none());
    }
}
