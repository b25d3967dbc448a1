//! Node assignment inside the chosen cluster: which nodes get how many replicas of a gang.
//!
//! Each replica needs all its GPUs on one node of the chosen model with enough memory.
//! CheapestFit and BinPack use best-fit (fill the nodes with the fewest free GPUs first, keeping
//! big holes open for big replicas); Spread uses worst-fit (each replica to the node with the most
//! free GPUs, spreading replicas over nodes; among equals, the node holding fewer of the gang's
//! replicas). Remaining ties go to the node name. Only this cluster's nodes of this model are
//! visited.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::index::{ModelEntry, NodeEntry};
use crate::input::Strategy;

/// Picks nodes for `replicas` replicas of `gpus` GPUs each among `model`'s nodes with at least
/// `min_mib` per GPU. Returns `(node position, replicas)` sorted by node position (name order);
/// the replicas may fall short only if the nodes cannot hold the gang.
pub(crate) fn pack(
    nodes: &[NodeEntry<'_>],
    model: &ModelEntry,
    min_mib: u64,
    gpus: u32,
    replicas: u32,
    strategy: Strategy,
) -> Vec<(usize, u32)> {
    let eligible = model.nodes.iter().copied().filter(|&i| {
        nodes
            .get(i)
            .is_some_and(|n| n.state.gpu_memory_mib >= min_mib && gpus > 0 && n.free >= gpus)
    });
    let free = |i: usize| nodes.get(i).map_or(0, |n| n.free);
    let mut picks = match strategy {
        Strategy::CheapestFit | Strategy::BinPack | Strategy::Auction => {
            let mut order: Vec<usize> = eligible.collect();
            order.sort_by_key(|&i| (free(i), i));
            let mut left = replicas;
            let mut picks = Vec::new();
            for i in order {
                if left == 0 {
                    break;
                }
                let take = (free(i) / gpus).min(left);
                picks.push((i, take));
                left -= take;
            }
            picks
        }
        Strategy::Spread => {
            // Most free first; among equals, the node holding fewer of this gang's replicas.
            let mut heap: BinaryHeap<(u32, Reverse<u32>, Reverse<usize>)> = eligible
                .map(|i| (free(i), Reverse(0), Reverse(i)))
                .collect();
            let mut counts: Vec<(usize, u32)> = Vec::new();
            for _ in 0..replicas {
                let Some((f, Reverse(held), Reverse(i))) = heap.pop() else {
                    break;
                };
                match counts.iter_mut().find(|(n, _)| *n == i) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((i, 1)),
                }
                if f - gpus >= gpus {
                    heap.push((f - gpus, Reverse(held + 1), Reverse(i)));
                }
            }
            counts
        }
    };
    picks.sort_unstable();
    picks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::testing::{ClusterBuilder, cluster};

    /// Packs onto the first model of a one-cluster snapshot and returns `(node name, replicas)`.
    fn packed(
        c: ClusterBuilder,
        min_mib: u64,
        gpus: u32,
        replicas: u32,
        strategy: Strategy,
    ) -> Vec<(String, u32)> {
        let snapshot = [c.build()];
        let index = Index::build(&snapshot, &[]).unwrap();
        let entry = &index.clusters[0];
        pack(
            &entry.nodes,
            &entry.models[0],
            min_mib,
            gpus,
            replicas,
            strategy,
        )
        .into_iter()
        .map(|(i, r)| (entry.nodes[i].state.name.clone(), r))
        .collect()
    }

    fn nodes(free: &[(&str, u32)]) -> ClusterBuilder {
        free.iter().fold(cluster("alpha"), |c, &(name, f)| {
            c.node_free(name, "H100", 80 * 1024, 8, f)
        })
    }

    fn named(picks: &[(&str, u32)]) -> Vec<(String, u32)> {
        picks.iter().map(|&(n, r)| (n.to_string(), r)).collect()
    }

    #[test]
    fn best_fit_puts_three_replicas_of_four_on_the_two_small_nodes_first() {
        let c = nodes(&[("n1", 8), ("n2", 4), ("n3", 4)]);
        assert_eq!(
            packed(c, 0, 4, 3, Strategy::BinPack),
            named(&[("n1", 1), ("n2", 1), ("n3", 1)])
        );
        let c = nodes(&[("n1", 8), ("n2", 4), ("n3", 4)]);
        assert_eq!(
            packed(c, 0, 4, 2, Strategy::CheapestFit),
            named(&[("n2", 1), ("n3", 1)]),
            "the 8-GPU hole stays whole"
        );
    }

    #[test]
    fn best_fit_fills_a_node_with_several_replicas_before_opening_the_next() {
        let c = nodes(&[("a", 8), ("b", 8)]);
        assert_eq!(packed(c, 0, 2, 4, Strategy::BinPack), named(&[("a", 4)]));
    }

    #[test]
    fn worst_fit_spreads_replicas_over_the_emptiest_nodes() {
        let c = nodes(&[("a", 8), ("b", 8), ("c", 4)]);
        assert_eq!(
            packed(c, 0, 2, 4, Strategy::Spread),
            named(&[("a", 2), ("b", 2)])
        );
        let c = nodes(&[("a", 8), ("b", 4), ("c", 4)]);
        assert_eq!(
            packed(c, 0, 4, 3, Strategy::Spread),
            named(&[("a", 1), ("b", 1), ("c", 1)])
        );
    }

    #[test]
    fn nodes_without_enough_memory_or_free_gpus_are_skipped() {
        let c = cluster("alpha")
            .node_free("small", "H100", 40 * 1024, 8, 8)
            .node_free("big", "H100", 80 * 1024, 8, 4)
            .node_free("busy", "H100", 80 * 1024, 8, 1);
        assert_eq!(
            packed(c, 80 * 1024, 2, 2, Strategy::BinPack),
            named(&[("big", 2)])
        );
    }

    #[test]
    fn packing_falls_short_rather_than_over_committing() {
        let c = nodes(&[("a", 4), ("b", 3)]);
        let picks = packed(c, 0, 4, 2, Strategy::BinPack);
        assert_eq!(picks, named(&[("a", 1)]));
        let c = nodes(&[("a", 4), ("b", 3)]);
        assert_eq!(packed(c, 0, 4, 2, Strategy::Spread), named(&[("a", 1)]));
    }
}
