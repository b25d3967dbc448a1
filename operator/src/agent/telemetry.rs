//! Telemetry recorded for attempts whose Placement asks for it (`spec.usageRecording`, pools
//! with `spec.usageCheck`; docs/adr/0033-usage-checked-against-telemetry.md).
//!
//! The agent keeps each node's recent gpu-probe readings as its GpuNode watch delivers them
//! ([`keep`]: the reading's time and the node's busiest GPU's utilisation). For a placement that
//! records telemetry, each pass folds the readings newer than the last one recorded into the
//! placement's spans, per node its pods ran on ([`record`], with
//! [`crate::usage_check::push`]); the spans travel in `Placement.status.telemetry`, refreshed with
//! the GPU-seconds, and the hub checks the claim against them. What was recorded is read back
//! from the Placement, so a restarted agent goes on from its last report; readings it never saw
//! (while it was down longer than a reading's age) read as unobserved.
//!
//! The agent cannot see which of a node's GPUs the device plugin gave a pod, so a reading counts
//! the node's busiest GPU: on a node shared with other jobs, their work makes the attempt look
//! busy (the check errs towards paying), never idle.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_crds::usage::{MAX_TELEMETRY_NODES, NodeTelemetry, TelemetrySpan, UsageTelemetry};
use gpufed_crds::{GpuNode, NodeInventory, UsageRecording};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::cached::Pod;
use crate::usage_check::{Span, UsageRule, push, unix};

/// Most readings kept per node: at gpu-probe's 10 s interval about 21 minutes, several of the
/// agent's usage refreshes (60 s by default).
pub const KEPT_READINGS: usize = 128;

/// One node's recent readings, `(Unix seconds, busiest GPU's utilisation %)`, oldest first.
pub type Readings = Arc<Vec<(u64, u32)>>;

/// The reading in `gpu_node`: its time and its busiest GPU's utilisation (the node's mean when
/// it lists no GPUs).
pub fn reading(gpu_node: &GpuNode) -> Option<(u64, u32)> {
    let status = gpu_node.status.as_ref()?;
    let at = u64::try_from(status.last_update_time.as_ref()?.0.as_second()).ok()?;
    let busiest = status
        .gpus
        .iter()
        .map(|g| g.utilization_percent)
        .max()
        .unwrap_or(status.utilization_percent);
    Some((at, busiest))
}

/// `kept` with `reading` added if it is newer than the last, at most [`KEPT_READINGS`].
pub fn keep(kept: &Readings, reading: (u64, u32)) -> Readings {
    if kept.last().is_some_and(|(at, _)| *at >= reading.0) {
        return kept.clone();
    }
    let skip = (kept.len() + 1).saturating_sub(KEPT_READINGS);
    let mut next: Vec<(u64, u32)> = kept.iter().skip(skip).copied().collect();
    next.push(reading);
    Arc::new(next)
}

/// The telemetry to report for a placement that records with `recording`: `prev` (what was
/// reported) with the `readings` of every node one of its `pods` ran on folded in, from the
/// pods' `start` to their `end` (none: still running). Nothing before the pods started.
/// `inventory` gives each node's GPU UUIDs.
pub fn record(
    recording: &UsageRecording,
    prev: Option<&UsageTelemetry>,
    pods: &[&Pod],
    start: Option<&Time>,
    end: Option<&Time>,
    readings: &BTreeMap<String, Readings>,
    inventory: &[NodeInventory],
) -> Option<UsageTelemetry> {
    let Some(start) = start.map(unix) else {
        return prev.cloned();
    };
    let end = end.map(unix);
    let rule = UsageRule::from(recording);
    let mut nodes: Vec<NodeTelemetry> = prev.map(|p| p.nodes.clone()).unwrap_or_default();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if !nodes.iter().any(|n| n.node == node) && nodes.len() < MAX_TELEMETRY_NODES {
            nodes.push(NodeTelemetry {
                node: node.to_string(),
                ..Default::default()
            });
        }
    }
    for n in &mut nodes {
        if n.gpu_uuids.is_empty()
            && let Some(inv) = inventory.iter().find(|i| i.name == n.node)
        {
            n.gpu_uuids = inv.gpu_uuids.clone();
        }
        let Some(node_readings) = readings.get(&n.node) else {
            continue;
        };
        let mut spans: Vec<Span> = n.spans.iter().map(Span::from).collect();
        let mut last = u64::try_from(n.last_reading).ok().filter(|l| *l > 0);
        let mut changed = false;
        for &(at, util) in node_readings.iter() {
            // Readings that end before the pods started, or come after they finished, say
            // nothing of the attempt.
            if at.saturating_add(rule.max_sample_age_secs) <= start || end.is_some_and(|e| at >= e)
            {
                continue;
            }
            changed |= push(&rule, &mut spans, &mut last, at, util);
        }
        if changed {
            n.spans = spans.iter().map(TelemetrySpan::from).collect();
            n.last_reading = last.and_then(|l| i64::try_from(l).ok()).unwrap_or(0);
        }
    }
    Some(UsageTelemetry { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{at, pod};
    use crate::usage_check::{AttemptUsage, check_spans};

    fn recording() -> UsageRecording {
        UsageRecording {
            idle_below_percent: 5,
            idle_grace_seconds: 60,
            max_sample_age_seconds: 30,
        }
    }

    fn on(mut p: Pod, node: &str) -> Pod {
        p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        p
    }

    fn inventory(node: &str) -> NodeInventory {
        NodeInventory {
            name: node.into(),
            gpu_uuids: vec![format!("GPU-{node}-0"), format!("GPU-{node}-1")],
            ..Default::default()
        }
    }

    fn every10(from: u64, to: u64, util: u32) -> Vec<(u64, u32)> {
        (from..to).step_by(10).map(|t| (t, util)).collect()
    }

    #[test]
    fn readings_are_kept_newest_last_and_bounded() {
        let mut kept = Readings::default();
        for t in 0..(KEPT_READINGS as u64 + 5) {
            kept = keep(&kept, (t, 1));
        }
        assert_eq!(kept.len(), KEPT_READINGS);
        assert_eq!(kept.first(), Some(&(5, 1)));
        let same = keep(&kept, (3, 99));
        assert!(Arc::ptr_eq(&same, &kept), "an older reading is not kept");
    }

    #[test]
    fn a_running_attempt_records_the_readings_of_its_pods_nodes_and_goes_on_from_its_report() {
        let pods = [on(pod("a-0", Some(1000), None), "n1")];
        let pods: Vec<&Pod> = pods.iter().collect();
        let inv = [inventory("n1"), inventory("n2")];
        // Readings before the pods started (older than a reading's age) and of another node do
        // not count.
        let readings = BTreeMap::from([
            ("n1".to_string(), Arc::new(every10(900, 1100, 80))),
            ("n2".to_string(), Arc::new(every10(900, 1100, 0))),
        ]);
        let t = record(
            &recording(),
            None,
            &pods,
            Some(&at(1000)),
            None,
            &readings,
            &inv,
        )
        .unwrap();
        assert_eq!(t.nodes.len(), 1);
        let n1 = &t.nodes[0];
        assert_eq!(n1.node, "n1");
        assert_eq!(n1.gpu_uuids, vec!["GPU-n1-0", "GPU-n1-1"]);
        assert_eq!(n1.last_reading, 1090);
        assert_eq!(
            n1.spans,
            vec![TelemetrySpan {
                from: 980,
                to: 1120,
                busy: true
            }]
        );
        // The next pass sees newer readings only: the GPUs went idle at 1100.
        let readings = BTreeMap::from([(
            "n1".to_string(),
            Arc::new([every10(1000, 1100, 80), every10(1100, 1300, 1)].concat()),
        )]);
        let t2 = record(
            &recording(),
            Some(&t),
            &pods,
            Some(&at(1000)),
            None,
            &readings,
            &inv,
        )
        .unwrap();
        assert_eq!(
            t2.nodes[0].spans,
            vec![
                TelemetrySpan {
                    from: 980,
                    to: 1100,
                    busy: true
                },
                TelemetrySpan {
                    from: 1100,
                    to: 1320,
                    busy: false
                },
            ]
        );
        // The hub's verdict: 200 s of idle, 60 s of grace paid.
        let rule = UsageRule::from(&recording());
        let spans: Vec<Span> = t2.nodes[0].spans.iter().map(Span::from).collect();
        let usage = AttemptUsage {
            start: 1000,
            end: 1300,
            gpus: 2,
            claimed_gpu_seconds: 600,
        };
        let v = check_spans(&rule, &usage, &[spans]);
        assert_eq!((v.supported, v.idle_secs), (2 * (100 + 60), 140), "{v:?}");
    }

    #[test]
    fn nothing_is_recorded_before_the_pods_start_nor_after_they_finish() {
        let pods = [on(pod("a-0", None, None), "n1")];
        let pods: Vec<&Pod> = pods.iter().collect();
        let readings = BTreeMap::from([("n1".to_string(), Arc::new(every10(0, 500, 80)))]);
        assert_eq!(
            record(&recording(), None, &pods, None, None, &readings, &[]),
            None
        );
        let t = record(
            &recording(),
            None,
            &pods,
            Some(&at(100)),
            Some(&at(200)),
            &readings,
            &[],
        )
        .unwrap();
        assert_eq!(t.nodes[0].last_reading, 190);
        assert_eq!(t.nodes[0].spans[0].from, 80);
    }
}
