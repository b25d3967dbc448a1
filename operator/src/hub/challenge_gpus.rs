//! Do the GPUs that answered a challenge exist on the member? (ADR 0027, "as built" 2026-12-05.)
//!
//! `gpu_probe::challenge::verify` proves that every UUID in an answer did the work, but not that
//! the UUIDs are the member's: an agent could answer for GPUs it made up. The member's own
//! gpu-probe reports its GPUs' UUIDs in `GpuNode` status, and its agent copies them into
//! `MemberCluster.status.inventory.nodes[].gpuUuids`. The answer must name only UUIDs that
//! inventory reports on the node the challenge was planned on; otherwise the verdict is
//! `UnknownGpu`, with both lists in the evidence (slashed: the member answered for GPUs it does not
//! claim to have). If the inventory reports no UUIDs there (gpu-probe has not reported, an agent
//! from before the field, or the attempt names no node) the verdict is `UnreportedGpus`: the member
//! is not verified, but nothing proves it cheated, so it is not slashed.

use gpufed_crds::{AttemptRecord, Inventory};

/// The verdict reason for an answer naming GPUs the member's inventory does not report.
pub const UNKNOWN_GPU: &str = "UnknownGpu";
/// The verdict reason when the inventory reports no UUIDs to compare the answer with.
pub const UNREPORTED_GPUS: &str = "UnreportedGpus";

/// What the hub compared: the node the challenge ran on and the UUIDs reported there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// The node the attempt was planned on, if it names one.
    pub node: Option<String>,
    /// The UUIDs the member's inventory reports on that node (empty if none or no such node).
    pub uuids: Vec<String>,
}

/// The node of `attempt` (its first planned node: a challenge has one replica) and the UUIDs
/// `inventory` reports there.
pub fn reported(attempt: Option<&AttemptRecord>, inventory: Option<&Inventory>) -> Reported {
    let node = attempt
        .and_then(|a| a.planned_nodes.first())
        .map(|p| p.node.clone());
    let uuids = node
        .as_deref()
        .and_then(|name| inventory?.nodes.iter().find(|n| n.name == name))
        .map(|n| n.gpu_uuids.clone())
        .unwrap_or_default();
    Reported { node, uuids }
}

/// `Err((reason, message))` unless every UUID in `answered` is among those `reported` on the node.
pub fn check(answered: &[String], reported: &Reported) -> Result<(), (&'static str, String)> {
    let Some(node) = reported.node.as_deref() else {
        return Err((
            UNREPORTED_GPUS,
            format!(
                "the attempt names no node, so the answering GPUs ({}) cannot be matched with the \
             member's inventory",
                answered.join(", ")
            ),
        ));
    };
    if reported.uuids.is_empty() {
        return Err((
            UNREPORTED_GPUS,
            format!(
                "gpu-probe reports no GPU UUIDs on node {node}; the answer names {}",
                answered.join(", ")
            ),
        ));
    }
    let unknown: Vec<&str> = answered
        .iter()
        .filter(|u| !reported.uuids.contains(u))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err((
        UNKNOWN_GPU,
        format!(
            "the answer names GPUs {} that gpu-probe does not report on node {node} (it reports {})",
            unknown.join(", "),
            reported.uuids.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gpufed_crds::testing::attempt;
    use gpufed_crds::{AttemptPhase, NodeInventory, PlannedNode};

    use super::*;

    fn inv(node: &str, uuids: &[&str]) -> Inventory {
        Inventory {
            update_time: None,
            nodes: vec![NodeInventory {
                name: node.into(),
                gpu_uuids: uuids.iter().map(|u| u.to_string()).collect(),
                ..Default::default()
            }],
        }
    }

    fn on(node: &str) -> AttemptRecord {
        let mut a = attempt(1, "metal", AttemptPhase::Succeeded);
        a.planned_nodes = vec![PlannedNode {
            node: node.into(),
            replicas: 1,
        }];
        a
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_answer_must_name_only_gpus_reported_on_its_node() {
        let i = inv("n1", &["GPU-a", "GPU-b", "GPU-c"]);
        let r = reported(Some(&on("n1")), Some(&i));
        assert_eq!(r.node.as_deref(), Some("n1"));
        assert_eq!(check(&strings(&["GPU-b", "GPU-a"]), &r), Ok(()));
        let (reason, err) = check(&strings(&["GPU-a", "CPU-1"]), &r).unwrap_err();
        assert_eq!(reason, UNKNOWN_GPU);
        assert!(
            err.contains("GPUs CPU-1 that gpu-probe does not report on node n1"),
            "{err}"
        );
        assert!(err.contains("GPU-a, GPU-b, GPU-c"), "{err}");
    }

    #[test]
    fn another_node_no_node_or_no_uuids_fail_closed() {
        let i = inv("n1", &["GPU-a"]);
        // The UUIDs of another node do not count.
        let r = reported(Some(&on("n2")), Some(&i));
        assert_eq!(r.uuids, Vec::<String>::new());
        let (reason, err) = check(&strings(&["GPU-a"]), &r).unwrap_err();
        assert_eq!(reason, UNREPORTED_GPUS);
        assert!(err.contains("reports no GPU UUIDs on node n2"), "{err}");
        // An attempt without a planned node.
        let r = reported(
            Some(&attempt(1, "metal", AttemptPhase::Succeeded)),
            Some(&i),
        );
        let (reason, err) = check(&strings(&["GPU-a"]), &r).unwrap_err();
        assert_eq!(reason, UNREPORTED_GPUS);
        assert!(err.contains("names no node"), "{err}");
        // A member without an inventory.
        let r = reported(Some(&on("n1")), None);
        assert_eq!(
            check(&strings(&["GPU-a"]), &r).unwrap_err().0,
            UNREPORTED_GPUS
        );
    }
}
