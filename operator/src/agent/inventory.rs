//! The member's GPU inventory, as pure functions of its Nodes, `GpuNode`s (written by gpu-probe) and
//! Pods: what the agent reports in `MemberCluster.status` and what the hub's scheduler places on.
//!
//! Per GPU node (a Node with `nvidia.com/gpu` allocatable > 0): the model and memory per GPU come
//! from its GpuNode, else from the Node labels gpu-probe writes; free GPUs are the allocatable ones
//! not requested by non-terminated pods bound to the node and not reported unhealthy. Totals count
//! only nodes that are Ready and schedulable, as the scheduler does.
//!
//! Telemetry has a freshness: a node whose GpuNode gpu-probe has not updated within
//! [`Telemetry::max_age`] (a probe that died, hung or lost its apiserver) offers no GPUs — their
//! health is unknown — and is marked `telemetryStale` until the probe reports again.
//!
//! A reading's age is measured on the agent's monotonic clock from when the agent saw it arrive
//! (its `lastUpdateTime` changed while the agent watched), not from the stamp: gpu-probe stamps
//! readings with its own host's clock, and a probe host minutes behind would make every reading
//! look stale (or, ahead, keep a dead probe's last reading believed). Only a reading that was
//! already there when the agent started is aged by its stamp, on the member's clock, and never
//! younger than the time the agent has seen it (see [`Sighting`]).

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_crds::naming::{GPU_RESOURCE, LABEL_GPU_MEMORY_MIB, LABEL_GPU_MODEL};
use gpufed_crds::{GpuNode, NodeInventory};
use k8s_openapi::api::core::v1::Node;

use super::cached::{Container, Pod, ResourceList};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// What the agent writes into `MemberCluster.status` (its fields only).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Report {
    /// Per-node inventory, sorted by node name.
    pub nodes: Vec<NodeInventory>,
    /// Healthy allocatable GPUs on Ready nodes.
    pub total_gpus: u32,
    /// Free GPUs on Ready nodes.
    pub free_gpus: u32,
    /// `H100x16,L4x8`: healthy allocatable GPUs per model on Ready nodes, by model name.
    pub model_summary: String,
}

/// A whole-number count of a resource quantity (`"8"`; `"8000m"` counts as 8), if it is one.
fn count(q: &Quantity) -> Option<u32> {
    let s = q.0.trim();
    if let Some(milli) = s.strip_suffix('m') {
        return milli.parse::<u64>().ok().map(|m| (m / 1000) as u32);
    }
    s.parse::<u32>().ok()
}

/// The GPUs a quantity of [`GPU_RESOURCE`] counts (none when absent or not a count).
fn gpus_of(quantity: Option<&Quantity>) -> u32 {
    quantity.and_then(count).unwrap_or(0)
}

fn container_gpus(c: &Container) -> u32 {
    let r = c.resources.as_ref();
    let gpus = |l: Option<&ResourceList>| gpus_of(l.and_then(|l| l.get(GPU_RESOURCE)));
    // Extended resources must have requests == limits; an unset request defaults to the limit.
    gpus(r.and_then(|r| r.requests.as_ref())).max(gpus(r.and_then(|r| r.limits.as_ref())))
}

/// GPUs a pod holds on its node: the larger of its containers' sum and its largest init container
/// (how the Kubernetes scheduler accounts for a pod's requests).
pub fn pod_gpus(pod: &Pod) -> u32 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let main: u32 = spec.containers.iter().map(container_gpus).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_gpus)
        .max()
        .unwrap_or(0);
    main.max(init)
}

/// Whether a pod still holds its node's resources (bound, and neither Succeeded nor Failed).
pub fn holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    bound && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// Whether a node is Ready and schedulable.
pub fn node_ready(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    ready && !unschedulable
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// When the agent first saw a node's current GpuNode reading, on its own monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sighting {
    /// The reading's `lastUpdateTime` (stamped by gpu-probe's host clock).
    pub stamp: Timestamp,
    /// How long ago the agent first saw this reading.
    pub ago: Duration,
    /// The agent saw the reading arrive: the node's stamp changed while it watched, so `ago` is
    /// the reading's age to within a watch's latency, whatever the probe's clock says. `false` for
    /// a reading that was already there when the agent first listed the node.
    pub arrived: bool,
}

/// When the inventory is taken, and how old a GpuNode's last reading may be.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// Now, on the member's clock.
    pub now: Time,
    /// Oldest reading still believed (the agent's `--telemetry-max-age`).
    pub max_age: Duration,
    /// When the agent saw each node's reading, by node name.
    pub sightings: BTreeMap<String, Sighting>,
}

impl Telemetry {
    /// Whether `gpu_node`'s reading is missing or older than the maximum age.
    pub fn stale(&self, gpu_node: &GpuNode) -> bool {
        let Some(t) = gpu_node
            .status
            .as_ref()
            .and_then(|s| s.last_update_time.as_ref())
        else {
            return true;
        };
        let by_stamp = self.now.0.duration_since(t.0).as_secs_f64();
        let age = match self.sightings.get(&gpu_node.spec.node_name) {
            Some(s) if s.stamp == t.0 && s.arrived => s.ago.as_secs_f64(),
            // There before the agent looked: the stamp is all there is, but the reading is at
            // least as old as the agent has seen it (a probe whose clock runs ahead and then died
            // is not believed for ever).
            Some(s) if s.stamp == t.0 => by_stamp.max(s.ago.as_secs_f64()),
            _ => by_stamp,
        };
        age > self.max_age.as_secs_f64()
    }
}

/// What the agent keeps per node to build its [`Sighting`]: the reading's stamp, the monotonic
/// instant it first saw it, and whether it saw it arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen {
    /// The reading's `lastUpdateTime`.
    pub stamp: Timestamp,
    /// When the agent first saw it.
    pub at: std::time::Instant,
    /// The stamp changed while the agent watched.
    pub arrived: bool,
}

impl Seen {
    /// The record after seeing the node's reading stamped `stamp` at monotonic `at`: the same
    /// stamp is the same reading (a relist or another field's change); a new stamp is a new
    /// reading, which arrived if the agent had seen the node before.
    pub fn next(previous: Option<&Seen>, stamp: Timestamp, at: std::time::Instant) -> Seen {
        match previous {
            Some(p) if p.stamp == stamp => *p,
            Some(_) => Seen {
                stamp,
                at,
                arrived: true,
            },
            None => Seen {
                stamp,
                at,
                arrived: false,
            },
        }
    }

    /// The sighting as of monotonic `now`.
    pub fn as_of(&self, now: std::time::Instant) -> Sighting {
        Sighting {
            stamp: self.stamp,
            ago: now.saturating_duration_since(self.at),
            arrived: self.arrived,
        }
    }
}

/// The inventory entry of one node, or `None` if it offers no GPUs or its model is unknown (no
/// GpuNode model and no `gpufed.io/gpu-model` label: gpu-probe has not seen it yet).
pub fn node_inventory(
    node: &Node,
    gpu_node: Option<&GpuNode>,
    requested: u32,
    telemetry: &Telemetry,
) -> Option<NodeInventory> {
    let name = node.metadata.name.clone()?;
    let allocatable = gpus_of(
        node.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(GPU_RESOURCE)),
    );
    if allocatable == 0 {
        return None;
    }
    let probe = gpu_node.and_then(|g| g.status.as_ref());
    let model = probe
        .and_then(|s| s.model.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| label(node, LABEL_GPU_MODEL).map(str::to_string))?;
    let memory = probe
        .and_then(|s| s.gpus.iter().map(|g| g.memory_total_mib).min())
        .filter(|m| *m > 0)
        .or_else(|| label(node, LABEL_GPU_MEMORY_MIB).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let stale = gpu_node.is_some_and(|g| telemetry.stale(g));
    let unhealthy = if stale {
        allocatable
    } else {
        probe
            .map(|s| s.gpu_count.saturating_sub(s.healthy_gpus))
            .unwrap_or(0)
            .min(allocatable)
    };
    Some(NodeInventory {
        name,
        model,
        gpu_memory_mib: memory,
        allocatable_gpus: allocatable,
        free_gpus: allocatable
            .saturating_sub(unhealthy)
            .saturating_sub(requested),
        unhealthy_gpus: unhealthy,
        telemetry_stale: stale,
        utilization_percent: probe.map(|s| s.utilization_percent.min(100)).unwrap_or(0),
        gpu_uuids: probe
            .map(|s| s.gpus.iter().take(64).map(|g| g.uuid.clone()).collect())
            .unwrap_or_default(),
        ready: node_ready(node),
    })
}

/// The inventory of the whole cluster.
pub fn take(
    nodes: &[&Node],
    gpu_nodes: &[&GpuNode],
    pods: &[&Pod],
    telemetry: &Telemetry,
) -> Report {
    let mut requested: BTreeMap<&str, u32> = BTreeMap::new();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *requested.entry(node).or_default() += pod_gpus(pod);
        }
    }
    let by_node: BTreeMap<&str, &GpuNode> = gpu_nodes
        .iter()
        .map(|g| (g.spec.node_name.as_str(), *g))
        .collect();
    let mut inv: Vec<NodeInventory> = nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            node_inventory(
                n,
                by_node.get(name).copied(),
                requested.get(name).copied().unwrap_or(0),
                telemetry,
            )
        })
        .collect();
    inv.sort_by(|a, b| a.name.cmp(&b.name));
    summarise(inv)
}

/// Totals and the model summary of `nodes`.
pub fn summarise(nodes: Vec<NodeInventory>) -> Report {
    let mut per_model: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut total, mut free) = (0u32, 0u32);
    for n in nodes.iter().filter(|n| n.ready) {
        let healthy = n.allocatable_gpus.saturating_sub(n.unhealthy_gpus);
        total += healthy;
        free += n.free_gpus.min(healthy);
        *per_model.entry(n.model.as_str()).or_default() += healthy;
    }
    let model_summary = per_model
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| format!("{m}x{n}"))
        .collect::<Vec<_>>()
        .join(",");
    Report {
        total_gpus: total,
        free_gpus: free,
        model_summary,
        nodes,
    }
}

/// Whether the report must be written: it differs from the last one written, or that one was taken
/// `interval` or longer ago (so the hub can tell a fresh inventory from a stale one).
pub fn needs_write(
    last: Option<(&Report, &Time)>,
    next: &Report,
    now: &Time,
    interval: Duration,
) -> bool {
    match last {
        None => true,
        Some((report, at)) => {
            report != next || now.0.duration_since(at.0).as_secs_f64() >= interval.as_secs_f64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::cached::{PodSpec, PodStatus, ResourceRequirements};
    use gpufed_crds::{GpuDevice, GpuNodeSpec, GpuNodeStatus};
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    fn node(name: &str, gpus: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([(
                    GPU_RESOURCE.to_string(),
                    Quantity(gpus.into()),
                )])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn labelled(mut n: Node, model: &str, mib: &str) -> Node {
        n.metadata.labels = Some(BTreeMap::from([
            (LABEL_GPU_MODEL.to_string(), model.to_string()),
            (LABEL_GPU_MEMORY_MIB.to_string(), mib.to_string()),
        ]));
        n
    }

    fn gpu_node(node: &str, model: &str, count: u32, healthy: u32, util: u32) -> GpuNode {
        let gpus = (0..count)
            .map(|i| GpuDevice {
                index: i,
                uuid: format!("GPU-{node}-{i}"),
                name: format!("NVIDIA {model}"),
                model: model.into(),
                memory_total_mib: 81559,
                healthy: i < healthy,
                ..Default::default()
            })
            .collect();
        let mut g = GpuNode::new(
            node,
            GpuNodeSpec {
                node_name: node.into(),
                backend: Default::default(),
            },
        );
        g.status = Some(GpuNodeStatus {
            model: Some(model.into()),
            gpu_count: count,
            healthy_gpus: healthy,
            utilization_percent: util,
            gpus,
            last_update_time: Some(Time(Timestamp::from_second(READ_AT).unwrap())),
            ..Default::default()
        });
        g
    }

    /// When the test GpuNodes were read.
    const READ_AT: i64 = 1_000;

    /// Now, `secs` after the reading, with a 60 s maximum age.
    fn after(secs: i64) -> Telemetry {
        Telemetry {
            now: Time(Timestamp::from_second(READ_AT + secs).unwrap()),
            max_age: Duration::from_secs(60),
            sightings: BTreeMap::new(),
        }
    }

    /// `after(secs)`, where the agent saw node `h1`'s reading `ago` seconds ago.
    fn seen(secs: i64, ago: u64, arrived: bool) -> Telemetry {
        let mut t = after(secs);
        let sighting = Sighting {
            stamp: Timestamp::from_second(READ_AT).unwrap(),
            ago: Duration::from_secs(ago),
            arrived,
        };
        t.sightings.insert("h1".into(), sighting);
        t
    }

    #[test]
    fn a_reading_seen_arriving_is_aged_from_its_arrival_whatever_the_probes_clock() {
        let n = node("h1", "8");
        let g = gpu_node("h1", "H100", 8, 8, 0);
        let stale = |t: &Telemetry| take(&[&n], &[&g], &[], t).nodes[0].telemetry_stale;
        // The probe's clock is 2 minutes behind: its stamp says 125 s old, it arrived 5 s ago.
        assert!(stale(&after(125)), "by its stamp alone it looks stale");
        assert!(!stale(&seen(125, 5, true)));
        // The probe's clock is 2 minutes ahead and it died: the stamp says the reading is from
        // the future, but nothing has arrived for 61 s.
        assert!(!stale(&after(-120)));
        assert!(stale(&seen(-120, 61, true)));
        assert!(!stale(&seen(-120, 60, true)));
    }

    #[test]
    fn a_reading_there_before_the_agent_looked_is_aged_by_its_stamp_and_never_younger_than_seen() {
        let n = node("h1", "8");
        let g = gpu_node("h1", "H100", 8, 8, 0);
        let stale = |t: &Telemetry| take(&[&n], &[&g], &[], t).nodes[0].telemetry_stale;
        assert!(stale(&seen(61, 1, false)), "its stamp says 61 s");
        assert!(!stale(&seen(30, 30, false)));
        // A stamp from the future does not keep it believed beyond what the agent saw.
        assert!(stale(&seen(-120, 61, false)));
        // A sighting of another reading (the store is ahead of the record) says nothing.
        let mut other = seen(61, 1, true);
        other.sightings.get_mut("h1").unwrap().stamp =
            Timestamp::from_second(READ_AT + 50).unwrap();
        assert!(stale(&other));
    }

    #[test]
    fn a_new_stamp_is_a_new_reading_that_arrived_and_the_same_stamp_is_not() {
        let t0 = std::time::Instant::now();
        let t1 = t0 + Duration::from_secs(7);
        let (a, b) = (
            Timestamp::from_second(1).unwrap(),
            Timestamp::from_second(2).unwrap(),
        );
        let first = Seen::next(None, a, t0);
        assert_eq!((first.at, first.arrived), (t0, false));
        assert_eq!(
            Seen::next(Some(&first), a, t1),
            first,
            "a relist is no new reading"
        );
        let second = Seen::next(Some(&first), b, t1);
        assert_eq!((second.stamp, second.at, second.arrived), (b, t1, true));
        assert_eq!(
            second.as_of(t1 + Duration::from_secs(3)).ago,
            Duration::from_secs(3)
        );
    }

    /// Readings taken 5 s ago.
    fn fresh() -> Telemetry {
        after(5)
    }

    #[test]
    fn a_node_whose_probe_went_quiet_offers_no_gpus_until_it_reports_again() {
        let n = node("h1", "8");
        let g = gpu_node("h1", "H100", 8, 8, 0);
        let ok = take(&[&n], &[&g], &[], &after(60));
        assert_eq!((ok.free_gpus, ok.nodes[0].telemetry_stale), (8, false));
        let stale = take(&[&n], &[&g], &[], &after(61));
        let inv = &stale.nodes[0];
        assert!(inv.telemetry_stale);
        assert_eq!((inv.free_gpus, inv.unhealthy_gpus), (0, 8));
        assert_eq!((stale.total_gpus, stale.free_gpus), (0, 0));
        assert_eq!(
            stale.model_summary, "",
            "no model is offered while its health is unknown"
        );
        // A GpuNode that never reported is no fresher.
        let mut silent = g.clone();
        silent.status.as_mut().unwrap().last_update_time = None;
        assert!(take(&[&n], &[&silent], &[], &fresh()).nodes[0].telemetry_stale);
    }

    #[test]
    fn a_node_without_a_gpu_node_keeps_its_labels_and_is_not_stale() {
        // No probe for this node (probe disabled): the owner's labels are the source, as documented.
        let n = labelled(node("h1", "4"), "L4", "23034");
        let r = take(&[&n], &[], &[], &after(10_000));
        assert_eq!((r.free_gpus, r.nodes[0].telemetry_stale), (4, false));
    }

    fn pod(node: &str, gpus: &str, phase: &str) -> Pod {
        let res = ResourceList::from_iter([(GPU_RESOURCE, Quantity(gpus.into()))]);
        Pod {
            metadata: ObjectMeta::default(),
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: "main".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(res),
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn model_memory_health_and_utilisation_come_from_the_gpu_node() {
        let n = labelled(node("h1", "8"), "WRONG", "1");
        let g = gpu_node("h1", "H100", 8, 7, 42);
        let r = take(&[&n], &[&g], &[], &fresh());
        let inv = &r.nodes[0];
        assert_eq!(inv.model, "H100");
        assert_eq!(inv.gpu_memory_mib, 81559);
        assert_eq!(inv.unhealthy_gpus, 1);
        assert_eq!(inv.utilization_percent, 42);
        assert_eq!(inv.free_gpus, 7, "the unhealthy GPU is not free");
        assert_eq!(r.total_gpus, 7);
        // The UUIDs go to the hub, which checks challenge answers against them (ADR 0027).
        let uuids: Vec<String> = (0..8).map(|i| format!("GPU-h1-{i}")).collect();
        assert_eq!(inv.gpu_uuids, uuids);
    }

    #[test]
    fn without_a_gpu_node_no_uuids_are_reported() {
        let n = labelled(node("l1", "4"), "L4", "23034");
        let r = take(&[&n], &[], &[], &fresh());
        assert!(r.nodes[0].gpu_uuids.is_empty());
    }

    #[test]
    fn without_a_gpu_node_the_probe_labels_are_used() {
        let n = labelled(node("l1", "4"), "L4", "23034");
        let r = take(&[&n], &[], &[], &fresh());
        assert_eq!(r.nodes[0].model, "L4");
        assert_eq!(r.nodes[0].gpu_memory_mib, 23034);
        assert_eq!(r.nodes[0].unhealthy_gpus, 0);
    }

    #[test]
    fn nodes_without_gpus_or_without_a_known_model_are_left_out() {
        let cpu = labelled(node("cpu", "0"), "H100", "1");
        let unknown = node("fresh", "8");
        assert!(take(&[&cpu, &unknown], &[], &[], &fresh()).nodes.is_empty());
    }

    #[test]
    fn gpus_of_running_and_pending_pods_are_not_free_but_finished_ones_are() {
        let n = labelled(node("h1", "8"), "H100", "81559");
        let pods = [
            pod("h1", "2", "Running"),
            pod("h1", "1", "Pending"),
            pod("h1", "4", "Succeeded"),
            pod("h1", "4", "Failed"),
            pod("other", "4", "Running"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let r = take(&[&n], &[], &refs, &fresh());
        assert_eq!(r.nodes[0].free_gpus, 5);
        assert_eq!(r.free_gpus, 5);
    }

    #[test]
    fn an_unbound_pod_holds_nothing() {
        let mut p = pod("x", "2", "Pending");
        p.spec.as_mut().unwrap().node_name = None;
        assert!(!holds_resources(&p));
    }

    #[test]
    fn an_init_container_bigger_than_the_sum_of_containers_sets_the_request() {
        let mut p = pod("h1", "1", "Running");
        let mut init = p.spec.as_ref().unwrap().containers[0].clone();
        init.resources.as_mut().unwrap().limits = Some(ResourceList::from_iter([(
            GPU_RESOURCE,
            Quantity("4".into()),
        )]));
        p.spec.as_mut().unwrap().init_containers = Some(vec![init]);
        assert_eq!(pod_gpus(&p), 4);
    }

    #[test]
    fn free_never_goes_below_zero() {
        let n = labelled(node("h1", "2"), "H100", "81559");
        let p = pod("h1", "8", "Running");
        assert_eq!(take(&[&n], &[], &[&p], &fresh()).nodes[0].free_gpus, 0);
    }

    #[test]
    fn cordoned_and_not_ready_nodes_are_listed_but_not_counted() {
        let mut cordoned = labelled(node("a", "8"), "H100", "81559");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let mut down = labelled(node("b", "8"), "H100", "81559");
        down.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "Unknown".into();
        let up = labelled(node("c", "4"), "L4", "23034");
        let r = take(&[&cordoned, &down, &up], &[], &[], &fresh());
        assert_eq!(r.nodes.len(), 3);
        assert!(!r.nodes[0].ready && !r.nodes[1].ready && r.nodes[2].ready);
        assert_eq!((r.total_gpus, r.free_gpus), (4, 4));
        assert_eq!(r.model_summary, "L4x4");
    }

    #[test]
    fn the_model_summary_lists_models_in_order_with_their_gpu_counts() {
        let nodes = [
            labelled(node("l1", "4"), "L4", "23034"),
            labelled(node("h1", "8"), "H100", "81559"),
            labelled(node("h2", "8"), "H100", "81559"),
            labelled(node("l2", "4"), "L4", "23034"),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let r = take(&refs, &[], &[], &fresh());
        assert_eq!(r.model_summary, "H100x16,L4x8");
        assert_eq!(r.total_gpus, 24);
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2", "l1", "l2"]);
    }

    #[test]
    fn an_unchanged_inventory_is_rewritten_only_when_it_is_an_interval_old() {
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        let r = summarise(vec![]);
        let i = Duration::from_secs(10);
        assert!(needs_write(None, &r, &at(0), i));
        assert!(!needs_write(Some((&r, &at(100))), &r, &at(109), i));
        assert!(needs_write(Some((&r, &at(100))), &r, &at(110), i));
        let other = Report {
            free_gpus: 1,
            ..r.clone()
        };
        assert!(needs_write(Some((&r, &at(100))), &other, &at(101), i));
    }
}
