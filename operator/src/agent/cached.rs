//! The agent's own Pod and Job types: the fields of `core/v1` Pod and `batch/v1` Job that the agent
//! reads, with the API's names and shapes, and nothing else.
//!
//! The agent watches every pod of its member (free GPUs are counted from them) and keeps them in
//! memory. `k8s_openapi`'s `Pod` is 2,176 bytes before anything is allocated (every field of
//! `PodSpec` is inline) and each `Container` 2,120 more, so even a pod trimmed to a few fields cost
//! about 7 KiB in the cache; the agent bench measured the pod cache as the largest part of the
//! agent's heap. These types deserialize straight from the API's JSON (unknown fields are skipped,
//! so nothing else is ever allocated) and keep the field names of the API types, so code written
//! against `core/v1` Pods reads them unchanged. [`super::slim::pod`] trims them further.
//!
//! Local Jobs likewise: `k8s_openapi`'s `Job` is 2,592 bytes before anything is allocated (its
//! spec holds a whole `PodSpec` inline) although the agent never reads a cached Job's pod template
//! (it wrote it), so every running job cost 2.5 KiB for nothing; [`Job`] keeps the metadata, the
//! counts and deadline of the spec and the whole status (about a quarter of the size).

use std::borrow::Cow;

use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::api::core::v1::{ContainerState, PodCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Pod as the agent caches it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// Standard metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The part of the spec the agent reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PodSpec>,
    /// The part of the status the agent reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// `PodSpec`: where the pod runs and what its containers ask for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The node it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its containers (GPUs are counted from their resources).
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Its init containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    /// Gates that keep it from being scheduled (the agent removes its own, ADR 0021).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_gates: Option<Vec<SchedulingGate>>,
}

/// `PodSchedulingGate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulingGate {
    /// The gate's name.
    pub name: String,
}

/// `Container`: its name and resources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// Requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// `ResourceRequirements`: what a container asks for (its resource claims are not read).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    /// The most it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    /// What it is guaranteed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

/// A resource list (`{"nvidia.com/gpu": "1"}`) as pairs in a vector, in the API's order. A
/// container's lists hold one to a few entries, and the API type's `BTreeMap` allocates a node
/// with room for eleven (544 bytes for `String` → `Quantity`) even for one: two such nodes per
/// container were a fifth of a cached pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceList(Vec<(String, Quantity)>);

impl ResourceList {
    /// The quantity of `resource`, if the list has it.
    pub fn get(&self, resource: &str) -> Option<&Quantity> {
        self.0.iter().find(|(k, _)| k == resource).map(|(_, v)| v)
    }

    /// Keeps the entries `keep` accepts, and no spare room.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(k, _)| keep(k));
        self.0.shrink_to_fit();
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>> FromIterator<(K, Quantity)> for ResourceList {
    fn from_iter<I: IntoIterator<Item = (K, Quantity)>>(iter: I) -> Self {
        ResourceList(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl Serialize for ResourceList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ResourceList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = ResourceList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of resource names to quantities")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResourceList, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(pair) = map.next_entry::<String, Quantity>()? {
                    pairs.push(pair);
                }
                pairs.shrink_to_fit();
                Ok(ResourceList(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// `PodStatus`: what the usage, failure and gang reports read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the pod is in this state (e.g. `Evicted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human text about the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pod's IP (a serving job's replicas are reached at it, docs/adr/0030-serving-jobs.md).
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// When the kubelet acknowledged the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Conditions (`PodScheduled` tells an unschedulable gang replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<PodCondition>>,
    /// The containers' states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_statuses: Option<Vec<ContainerStatus>>,
    /// The init containers' states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
}

/// `ContainerStatus`: a container's state, current and last.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Container name.
    #[serde(default)]
    pub name: String,
    /// Whether it passes its readiness probe.
    #[serde(default)]
    pub ready: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restart_count: i32,
    /// Whether it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    /// Its state now. (Its `lastState`, which the agent never reads, is not kept: it would add
    /// 208 bytes to every cached container.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
}

impl kube::Resource for Pod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A local Job as the agent caches it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Standard metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The part of the spec the agent reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<JobSpec>,
    /// The status, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// `JobSpec`: its counts and deadline, not its pod template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Pods that must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<i32>,
    /// Pods that run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// `NonIndexed` or `Indexed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_mode: Option<String>,
    /// Retries before the Job fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// Seconds the Job may run (its lease, ADR 0021, or its maxDuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

impl From<&k8s_openapi::api::batch::v1::Job> for Job {
    /// What the cache keeps of a Job read as the API's type (the Jobs the agent builds, test data).
    fn from(job: &k8s_openapi::api::batch::v1::Job) -> Job {
        Job {
            metadata: job.metadata.clone(),
            spec: job.spec.as_ref().map(|s| JobSpec {
                completions: s.completions,
                parallelism: s.parallelism,
                completion_mode: s.completion_mode.clone(),
                backoff_limit: s.backoff_limit,
                active_deadline_seconds: s.active_deadline_seconds,
            }),
            status: job.status.clone(),
        }
    }
}

impl kube::Resource for Job {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Job")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("batch")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("jobs")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_cached_pod_reads_the_apis_json_and_keeps_only_its_fields() {
        let api: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "gpufed-jobs", "labels": {"a": "b"}},
            "spec": {"nodeName": "n1", "volumes": [{"name": "v", "emptyDir": {}}],
                     "containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "x"}],
                                     "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": true,
                                              "restartCount": 1,
                                              "state": {"terminated": {"exitCode": 3, "message": "m"}}}]}
        }))
        .unwrap();
        let json = serde_json::to_value(&api).unwrap();
        let cached: Pod = serde_json::from_value(json).unwrap();
        assert_eq!(cached.metadata, api.metadata);
        let spec = cached.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        let (res, api_res) = (
            spec.containers[0].resources.as_ref().unwrap(),
            api.spec.as_ref().unwrap().containers[0]
                .resources
                .as_ref()
                .unwrap(),
        );
        let gpus = |l: Option<&ResourceList>| l.and_then(|l| l.get("nvidia.com/gpu")).cloned();
        assert_eq!(gpus(res.limits.as_ref()), Some(Quantity("2".into())));
        assert_eq!(
            gpus(res.limits.as_ref()),
            api_res
                .limits
                .as_ref()
                .unwrap()
                .get("nvidia.com/gpu")
                .cloned()
        );
        assert!(res.requests.is_none() && api_res.requests.is_none());
        // Written back, the list is the API's map.
        assert_eq!(
            serde_json::to_value(res).unwrap(),
            serde_json::to_value(api_res).unwrap()
        );
        let (st, api_st) = (
            cached.status.as_ref().unwrap(),
            api.status.as_ref().unwrap(),
        );
        assert_eq!(st.phase, api_st.phase);
        assert_eq!(st.start_time, api_st.start_time);
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(st.conditions, api_st.conditions);
        let (cs, api_cs) = (
            &st.container_statuses.as_ref().unwrap()[0],
            &api_st.container_statuses.as_ref().unwrap()[0],
        );
        assert_eq!(
            (&cs.name, cs.ready, cs.restart_count, &cs.state),
            (
                &api_cs.name,
                api_cs.ready,
                api_cs.restart_count,
                &api_cs.state
            )
        );
        assert_eq!(Pod::plural(&()), "pods");
        assert_eq!(Pod::api_version(&()), "v1");
        assert!(
            std::mem::size_of::<Pod>() * 2 < std::mem::size_of::<k8s_openapi::api::core::v1::Pod>()
        );
    }

    #[test]
    fn a_cached_job_reads_the_apis_json_and_keeps_its_counts_deadline_and_status() {
        let api: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "gpufed-jobs", "labels": {"gpufed.io/job-uid": "u"},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "lease", "uid": "l"}]},
            "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
                     "activeDeadlineSeconds": 3600,
                     "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}},
            "status": {"active": 1, "succeeded": 1,
                       "conditions": [{"type": "Complete", "status": "False"}]}
        }))
        .unwrap();
        let cached: Job = serde_json::from_value(serde_json::to_value(&api).unwrap()).unwrap();
        assert_eq!(cached, Job::from(&api));
        assert_eq!(cached.metadata, api.metadata);
        assert_eq!(cached.status, api.status);
        let spec = cached.spec.as_ref().unwrap();
        assert_eq!(
            (
                spec.completions,
                spec.parallelism,
                spec.completion_mode.as_deref()
            ),
            (Some(2), Some(2), Some("Indexed"))
        );
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(3600))
        );
        assert_eq!(Job::plural(&()), "jobs");
        assert_eq!(Job::api_version(&()), "batch/v1");
        assert!(
            std::mem::size_of::<Job>() * 3
                < std::mem::size_of::<k8s_openapi::api::batch::v1::Job>()
        );
    }
}
