//! What the agent's caches keep of Pods and Nodes. A member may run thousands of pods that are not
//! ours; the agent needs only how many GPUs each holds on which node. Everything else (env,
//! volumes, images, annotations, a node's image list) is dropped before it is cached (pods are
//! read into the agent's own slim type, [`super::cached`]), so the agent's memory follows the
//! number of pods, not their size.
//!
//! Kept for every pod: name, namespace, uid, deletion time, node, phase, each container's name and
//! GPU requests and limits (GPUs are counted from them). Kept in addition for pods of the jobs
//! namespace (ours): the Job controller's labels (the Job and completion index they belong to) and
//! the status the reports read (the `PodScheduled` and `Ready` conditions, each container's state,
//! start time, reason and message: start and finish times, exit codes, termination messages, why
//! a pod waits).
//!
//! The agent's own objects are trimmed too ([`job`], [`placement`]): at thousands of running jobs
//! the caches of local Jobs, their pods and the Placements are nearly all of the agent's memory
//! (`operator/tests/agent_cache_footprint.rs` measures what each keeps).

use std::collections::BTreeMap;

use gpufed_crds::Placement;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, PodCondition};
use kube::api::ObjectMeta;

use gpufed_crds::naming::GPU_RESOURCE;

use super::cached::{Container, Job, Pod, PodStatus, ResourceList};
use super::context::POD_JOB_NAME_LABEL;
use super::report::COMPLETION_INDEX;

/// The labels and annotations of one of our pods that the agent reads: the Job controller's job
/// name and completion index (both as labels since Kubernetes 1.28; the index is an annotation
/// too, kept only where the label is missing).
const POD_KEYS: [&str; 2] = [POD_JOB_NAME_LABEL, COMPLETION_INDEX];

fn kept(map: &Option<BTreeMap<String, String>>, keep: &[&str]) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = map
        .iter()
        .flatten()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// The pod conditions the agent reads: `PodScheduled` (why a replica waits, whether a gang is
/// stuck) and `Ready` (a serving replica's endpoint).
const POD_CONDITIONS: [&str; 2] = ["PodScheduled", "Ready"];

/// Trims a condition to what the reports read: no probe times, no generation.
fn condition(c: &mut PodCondition) {
    c.last_probe_time = None;
    c.observed_generation = None;
}

/// Keeps only the GPU entries of a container's resource lists (the only ones counted).
fn gpu_resources(c: &mut Container) {
    if let Some(r) = c.resources.as_mut() {
        for list in [&mut r.limits, &mut r.requests] {
            if let Some(l) = list.as_mut() {
                l.retain(|k| k == GPU_RESOURCE);
            }
            if list.as_ref().is_some_and(ResourceList::is_empty) {
                *list = None;
            }
        }
        if r.limits.is_none() && r.requests.is_none() {
            c.resources = None;
        }
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

/// Trims `pod` (already only the fields the agent reads, [`super::cached`]) to what the agent reads
/// of it; `jobs_namespace` is where its own pods run.
pub fn pod(pod: &mut Pod, jobs_namespace: &str) {
    let ours = pod.metadata.namespace.as_deref() == Some(jobs_namespace);
    let mut slim = meta(&pod.metadata, false);
    if ours {
        slim.labels = kept(&pod.metadata.labels, &POD_KEYS);
        let indexed = slim
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(COMPLETION_INDEX));
        if !indexed {
            slim.annotations = kept(&pod.metadata.annotations, &[COMPLETION_INDEX]);
        }
    }
    pod.metadata = slim;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.iter_mut().for_each(gpu_resources);
        spec.init_containers
            .iter_mut()
            .flatten()
            .for_each(gpu_resources);
        if !ours {
            // Only the agent's own pods' gates are read (it removes its own).
            spec.scheduling_gates = None;
        }
    }
    if let Some(status) = pod.status.as_mut() {
        if ours {
            if let Some(cs) = status.conditions.as_mut() {
                cs.retain(|c| POD_CONDITIONS.contains(&c.type_.as_str()));
                cs.iter_mut().for_each(condition);
                cs.shrink_to_fit();
            }
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

/// Trims a Placement: the metadata the agent reads (name, namespace, uid, version, deletion time,
/// and the annotations that carry usage receipts and log requests; not the labels, which repeat
/// the spec), and once the agent has acted on it (it has a phase) not its pod template, which is
/// never read again and most of a Placement.
pub fn placement(p: &mut Placement) {
    let mut slim = meta(&p.metadata, false);
    slim.annotations = p.metadata.annotations.take();
    p.metadata = slim;
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
                                     "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1"},
                                                   "requests": {"cpu": "1", "memory": "1Gi"}}}],
                     "initContainers": [{"name": "init", "image": "busybox",
                                         "resources": {"limits": {"nvidia.com/gpu": "3"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"},
                                      {"type": "Initialized", "status": "True"},
                                      {"type": "Ready", "status": "True",
                                       "lastProbeTime": "2026-01-01T00:00:01Z"},
                                      {"type": "ContainersReady", "status": "True"}],
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
        assert_eq!(labels.keys().collect::<Vec<_>>(), [POD_JOB_NAME_LABEL]);
        // The index is only an annotation here (a cluster older than 1.28), so it is kept.
        let annotations = ours.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), [COMPLETION_INDEX]);
        assert_eq!(crate::agent::usage::pod_replica(&ours), Some(0));
        let (st, full_st) = (ours.status.as_ref().unwrap(), full.status.as_ref().unwrap());
        assert_eq!(st.start_time, full_st.start_time);
        assert_eq!(st.phase, full_st.phase);
        let types = |st: &PodStatus| -> Vec<String> {
            st.conditions
                .iter()
                .flatten()
                .map(|c| c.type_.clone())
                .collect()
        };
        assert_eq!(types(st), ["PodScheduled", "Ready"]);
        assert_eq!(types(full_st).len(), 4);
        let ready = &st.conditions.as_ref().unwrap()[1];
        assert!(ready.status == "True" && ready.last_probe_time.is_none());
        // Only the GPU entries of the resource lists are kept; a list left empty goes.
        let res = ours.spec.as_ref().unwrap().containers[0]
            .resources
            .as_ref()
            .unwrap();
        assert_eq!(
            serde_json::to_value(res).unwrap(),
            serde_json::json!({"limits": {"nvidia.com/gpu": "2"}})
        );
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

    #[test]
    fn a_pod_with_its_index_as_a_label_keeps_no_annotation() {
        let mut json = big_pod_json("gpufed-jobs");
        json["metadata"]["labels"][COMPLETION_INDEX] = "3".into();
        let mut p: Pod = serde_json::from_value(json).unwrap();
        pod(&mut p, "gpufed-jobs");
        assert!(p.metadata.annotations.is_none());
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [COMPLETION_INDEX, POD_JOB_NAME_LABEL]
        );
        assert_eq!(crate::agent::usage::pod_replica(&p), Some(3));
    }

    #[test]
    fn a_placement_keeps_its_annotations_but_not_its_labels() {
        let mut p = crate::agent::fixtures::placement("train", 1).build();
        p.metadata.labels = Some(BTreeMap::from([("gpufed.io/attempt".into(), "1".into())]));
        p.metadata.annotations = Some(BTreeMap::from([(
            "gpufed.io/usage-receipt".into(),
            "r".into(),
        )]));
        p.metadata.finalizers = Some(vec!["f".into()]);
        let before = p.clone();
        placement(&mut p);
        assert!(p.metadata.labels.is_none() && p.metadata.finalizers.is_none());
        assert_eq!(p.metadata.annotations, before.metadata.annotations);
        assert_eq!(p.metadata.name, before.metadata.name);
        assert_eq!(p.spec, before.spec);
    }
}
