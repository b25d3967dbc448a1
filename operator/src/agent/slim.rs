//! What the agent's caches keep of Pods and Nodes. A member may run thousands of pods that are not
//! ours; the agent needs only how many GPUs each holds on which node. Everything else (env,
//! volumes, images, annotations, a node's image list) is dropped before it is cached (pods are
//! read into the agent's own slim type, [`super::cached`]), so the agent's memory follows the
//! number of pods, not their size.
//!
//! Kept for every pod: name, namespace, uid, deletion time, node, phase, each container's name and
//! resources (GPUs are counted from them). Kept in addition for pods of the jobs namespace (ours):
//! gpufed's labels and annotations and the Job controller's (the Job and completion index they
//! belong to) and the status the reports read (conditions, each container's state, start time,
//! reason and message: start and finish times, exit codes, termination messages, why a pod waits).
//!
//! The agent's own objects are trimmed too ([`job`], [`placement`]): at thousands of running jobs
//! the caches of local Jobs, their pods and the Placements are nearly all of the agent's memory.

use std::collections::BTreeMap;

use gpufed_crds::Placement;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, PodCondition};
use kube::api::ObjectMeta;

use super::cached::{Job, Pod, PodStatus};
use super::context::POD_JOB_NAME_LABEL;
use super::report::COMPLETION_INDEX;

/// Whether a label or annotation of one of our pods is one the agent reads: gpufed's own and the
/// Job controller's job name and completion index.
fn kept_key(key: &str) -> bool {
    key.starts_with("gpufed.io/") || key == POD_JOB_NAME_LABEL || key == COMPLETION_INDEX
}

fn kept(map: &Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = map
        .iter()
        .flatten()
        .filter(|(k, _)| kept_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// Trims a condition to what the reports read: no probe times, no generation.
fn condition(c: &mut PodCondition) {
    c.last_probe_time = None;
    c.observed_generation = None;
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

/// Trims `pod` (already only the fields the agent reads, [`super::cached`]) to what the agent reads
/// of it; `jobs_namespace` is where its own pods run.
pub fn pod(pod: &mut Pod, jobs_namespace: &str) {
    let ours = pod.metadata.namespace.as_deref() == Some(jobs_namespace);
    let mut slim = meta(&pod.metadata, false);
    if ours {
        slim.labels = kept(&pod.metadata.labels);
        slim.annotations = kept(&pod.metadata.annotations);
    }
    pod.metadata = slim;
    if !ours && let Some(spec) = pod.spec.as_mut() {
        // Only the agent's own pods' gates are read (it removes its own).
        spec.scheduling_gates = None;
    }
    if let Some(status) = pod.status.as_mut() {
        if ours {
            status.conditions.iter_mut().flatten().for_each(condition);
        } else {
            *status = PodStatus {
                phase: status.phase.take(),
                ..Default::default()
            };
        }
    }
}

/// Trims a local Job (already only its metadata, counts, deadline and status, [`super::cached`])
/// to what the agent reads of its metadata: labels, annotations and owner.
pub fn job(job: &mut Job) {
    job.metadata = meta(&job.metadata, true);
}

/// Trims a Placement: once the agent has acted on it (it has a phase) its pod template is never
/// read again, and the template is most of a Placement.
pub fn placement(p: &mut Placement) {
    if p.status.as_ref().is_some_and(|s| s.phase.is_some()) {
        p.spec.template = Default::default();
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

    /// A pod as the API serves it (`big_pod` reads it into the agent's type).
    fn big_pod_json(ns: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "p", "namespace": ns, "uid": "u",
                         "labels": {"batch.kubernetes.io/job-name": "gpufed-abc",
                                    "batch.kubernetes.io/controller-uid": "c",
                                    "gpufed.io/job-uid": "j"},
                         "annotations": {"big": "x".repeat(4096),
                                         "batch.kubernetes.io/job-completion-index": "0"}},
            "spec": {"nodeName": "n1",
                     "volumes": [{"name": "v", "emptyDir": {}}],
                     "containers": [{"name": "main", "image": "busybox",
                                     "env": [{"name": "A", "value": "x".repeat(2048)}],
                                     "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
                     "initContainers": [{"name": "init", "image": "busybox",
                                         "resources": {"limits": {"nvidia.com/gpu": "3"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "",
                                              "ready": true, "restartCount": 0,
                                              "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
        })
    }

    fn big_pod(ns: &str) -> Pod {
        serde_json::from_value(big_pod_json(ns)).unwrap()
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
            assert_eq!(spec.containers[0].name, "main");
            if ns == "someone-else" {
                let api: k8s_openapi::api::core::v1::Pod =
                    serde_json::from_value(big_pod_json(ns)).unwrap();
                let (slim, api) = (
                    serde_json::to_vec(&slim).unwrap().len(),
                    serde_json::to_vec(&api).unwrap().len(),
                );
                assert!(slim * 20 < api, "{slim} vs {api}");
            }
        }
    }

    #[test]
    fn our_pods_keep_the_labels_and_status_the_reports_read_and_others_only_their_phase() {
        let full = big_pod("gpufed-jobs");
        let mut ours = full.clone();
        pod(&mut ours, "gpufed-jobs");
        let labels = ours.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["batch.kubernetes.io/job-name", "gpufed.io/job-uid"]
        );
        let annotations = ours.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [COMPLETION_INDEX]);
        let (st, full_st) = (ours.status.as_ref().unwrap(), full.status.as_ref().unwrap());
        assert_eq!(st.start_time, full_st.start_time);
        assert_eq!(st.phase, full_st.phase);
        assert_eq!(st.conditions, full_st.conditions);
        let (cs, full_cs) = (
            &st.container_statuses.as_ref().unwrap()[0],
            &full_st.container_statuses.as_ref().unwrap()[0],
        );
        assert_eq!(
            (&cs.name, &cs.state, cs.ready),
            (&full_cs.name, &full_cs.state, full_cs.ready)
        );
        // What the agent reads of a pod is unchanged by trimming it.
        let span = |p: &Pod| crate::agent::usage::pod_span(p).map(|s| (s.start, s.end));
        assert!(span(&ours).is_some());
        assert_eq!(span(&ours), span(&full));
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

    #[test]
    fn a_cached_job_keeps_counts_deadline_labels_owner_and_status_but_not_its_pod_template() {
        let full: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gpufed-abc-1", "uid": "u", "labels": {"gpufed.io/placement": "p"},
                         "managedFields": [{"manager": "gpufed-agent", "operation": "Apply"}],
                         "annotations": {"gpufed.io/max-duration-seconds": "600"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": "gpufed-member-lease", "uid": "l"}]},
            "spec": {"completions": 2, "parallelism": 2, "activeDeadlineSeconds": 600,
                     "template": {"spec": {"containers": [{"name": "main", "image": "x".repeat(4096)}]}}},
            "status": {"active": 2, "startTime": "2026-01-01T00:00:00Z"}
        }))
        .unwrap();
        let mut slim: Job = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        job(&mut slim);
        assert!(slim.metadata.managed_fields.is_none());
        assert_eq!(slim.metadata.labels, full.metadata.labels);
        assert_eq!(slim.metadata.annotations, full.metadata.annotations);
        assert_eq!(
            slim.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(slim.status, full.status);
        let spec = slim.spec.as_ref().unwrap();
        assert_eq!(
            (
                spec.completions,
                spec.parallelism,
                spec.active_deadline_seconds
            ),
            (Some(2), Some(2), Some(600))
        );
        // The gang network is still built from the trimmed Job.
        assert_eq!(
            crate::agent::job_builder::gang_network(&slim).is_some(),
            crate::agent::job_builder::gang_network(&Job::from(&full)).is_some()
        );
    }

    #[test]
    fn a_placement_loses_its_template_only_once_the_agent_has_acted_on_it() {
        let fresh = crate::agent::fixtures::placement("train", 1).build();
        assert!(!fresh.spec.template.containers.is_empty());
        let mut p = fresh.clone();
        placement(&mut p);
        assert_eq!(p.spec.template, fresh.spec.template);
        p.status = Some(gpufed_crds::PlacementStatus {
            phase: Some(gpufed_crds::PlacementPhase::Accepted),
            ..Default::default()
        });
        placement(&mut p);
        assert!(p.spec.template.containers.is_empty());
    }
}
