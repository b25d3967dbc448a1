//! The working copy: sorting, reservations, tiers, gates, rows, names and model masks.

use super::*;
use crate::input::{BondState, NodeState};
use crate::testing::{cluster, reservation};

#[test]
fn clusters_are_sorted_by_name_whatever_the_input_order() {
    let snapshot = [cluster("gamma").build(), cluster("alpha").build()];
    let index = Index::build(&snapshot, &[]).unwrap();
    let names: Vec<&str> = index
        .clusters
        .iter()
        .map(|c| c.state.name.as_str())
        .collect();
    assert_eq!(names, ["alpha", "gamma"]);
    assert_eq!(index.cluster_position("gamma"), Some(1));
    assert_eq!(index.cluster_position("beta"), None);
}

#[test]
fn duplicate_cluster_or_node_names_are_refused() {
    let twice = [cluster("alpha").build(), cluster("alpha").build()];
    assert_eq!(
        Index::build(&twice, &[]).unwrap_err(),
        ScheduleError::DuplicateCluster {
            name: "alpha".into()
        }
    );
    let nodes = [cluster("alpha")
        .node("n1", "H100", 80 * 1024, 8)
        .node("n1", "H100", 80 * 1024, 8)
        .build()];
    assert_eq!(
        Index::build(&nodes, &[]).unwrap_err(),
        ScheduleError::DuplicateNode {
            cluster: "alpha".into(),
            node: "n1".into()
        }
    );
}

#[test]
fn reservations_reduce_node_free_counts_and_unknown_ones_are_ignored() {
    let snapshot = [cluster("alpha")
        .node("n1", "H100", 80 * 1024, 8)
        .node("n2", "H100", 80 * 1024, 8)
        .build()];
    let reservations = [
        reservation("alpha", "n1", 3),
        reservation("alpha", "n1", 2),
        reservation("alpha", "n2", 20),
        reservation("alpha", "gone", 4),
        reservation("beta", "n1", 4),
    ];
    let index = Index::build(&snapshot, &reservations).unwrap();
    let free: Vec<u32> = index.clusters[0].nodes.iter().map(|n| n.free).collect();
    assert_eq!(free, [3, 0]);
    let tier = index.clusters[0].models[0].tier(0).unwrap();
    assert_eq!((tier.free, tier.max_free), (3, 3));
}

#[test]
fn memory_tiers_aggregate_every_node_with_at_least_that_much_memory() {
    let snapshot = [cluster("alpha")
        .node("big", "A100", 80 * 1024, 8)
        .node("small-1", "A100", 40 * 1024, 4)
        .node("small-2", "A100", 40 * 1024, 2)
        .build()];
    let index = Index::build(&snapshot, &[]).unwrap();
    let model = &index.clusters[0].models[0];
    assert_eq!(model.max_mem_mib(), 80 * 1024);
    let all = model.tier(0).unwrap();
    assert_eq!((all.free, all.max_free), (14, 8));
    assert_eq!(all.replicas_fit(2, u64::MAX), 4 + 2 + 1);
    assert_eq!(all.replicas_fit(4, u64::MAX), 2 + 1);
    assert_eq!(all.replicas_fit(4, 1), 2, "stops counting once enough fit");
    let big = model.tier(41 * 1024).unwrap();
    assert_eq!((big.free, big.max_free), (8, 8));
    assert!(model.tier(81 * 1024).is_none());
}

#[test]
fn static_gates_follow_the_documented_order() {
    let snapshot = [
        cluster("a").not_ready().cordoned().build(),
        cluster("b").no_inventory().cordoned().build(),
        cluster("c").cordoned().bond(BondState::NoWallet).build(),
        cluster("d").bond(BondState::Unknown).build(),
        cluster("e").bond(BondState::Eligible).build(),
    ];
    let index = Index::build(&snapshot, &[]).unwrap();
    let gates: Vec<Option<Gate>> = index.clusters.iter().map(|c| c.gate).collect();
    assert_eq!(
        gates,
        [
            Some(Gate::NotReady),
            Some(Gate::NoInventory),
            Some(Gate::Cordoned),
            Some(Gate::Bond),
            None
        ]
    );
}

#[test]
fn committing_a_placement_updates_node_and_model_free_counts() {
    let snapshot = [cluster("alpha")
        .node("n1", "H100", 80 * 1024, 8)
        .node("n2", "H100", 80 * 1024, 4)
        .build()];
    let mut index = Index::build(&snapshot, &[]).unwrap();
    index.commit(0, 0, 4, &[(0, 1), (1, 1)]);
    let tier = index.clusters[0].models[0].tier(0).unwrap();
    assert_eq!((tier.free, tier.max_free), (4, 4));
    assert_eq!(tier.replicas_fit(4, u64::MAX), 1);
}

#[test]
fn the_largest_node_counts_healthy_gpus_of_ready_nodes_free_or_not() {
    let sick = NodeState {
        name: "sick".into(),
        model: "H100".into(),
        gpu_memory_mib: 80 * 1024,
        allocatable_gpus: 16,
        free_gpus: 16,
        unhealthy_gpus: 6,
        ready: true,
        utilization_percent: 0,
    };
    let down = NodeState {
        name: "down".into(),
        allocatable_gpus: 32,
        ready: false,
        unhealthy_gpus: 0,
        ..sick.clone()
    };
    let snapshot = [cluster("alpha")
        .node_state(sick)
        .node_state(down)
        .node("big", "H100", 40 * 1024, 12)
        .node_free("n1", "H100", 80 * 1024, 8, 0)
        .price("H100", "2.40")
        .build()];
    let mut index = Index::build(&snapshot, &[reservation("alpha", "big", 12)]).unwrap();
    let model = &index.clusters[0].models[0];
    assert_eq!(model.tier(80 * 1024).unwrap().max_size, 10);
    assert_eq!(
        model.tier(0).unwrap().max_size,
        12,
        "reserved GPUs still count"
    );
    assert_eq!(index.rows(0, 0)[0].max_size, 12);
    // Placements and holds take free GPUs, not the size of a node.
    index.hold("alpha", &["sick"]);
    let model = &index.clusters[0].models[0];
    assert_eq!(model.tier(80 * 1024).unwrap().max_size, 10);
    assert_eq!(index.rows(0, 0)[0].max_size, 12);
}

#[test]
fn rows_list_only_open_clusters_that_price_the_model_and_follow_placements() {
    let snapshot = [
        cluster("alpha")
            .region("eu")
            .node("n1", "H100", 80 * 1024, 8)
            .node("n2", "H100", 40 * 1024, 4)
            .price("H100", "2.00")
            .build(),
        cluster("beta")
            .region("us")
            .node("n1", "H100", 80 * 1024, 8)
            .price("H100", "2.00")
            .build(),
        cluster("gamma")
            .region("eu")
            .node("n1", "H100", 80 * 1024, 8)
            .price("H100", "2.00")
            .cordoned()
            .build(),
        cluster("delta")
            .region("eu")
            .node("n1", "H100", 80 * 1024, 8)
            .build(),
    ];
    let mut index = Index::build(&snapshot, &[]).unwrap();
    let (h100, eu, us) = (
        index.model_id("H100").unwrap(),
        index.region_id("eu").unwrap(),
        index.region_id("us").unwrap(),
    );
    let alpha = index.cluster_position("alpha").unwrap();
    let rows = index.rows(h100, eu);
    assert_eq!(rows.len(), 1, "gamma is cordoned and delta has no price");
    assert_eq!(rows[0].cluster as usize, alpha);
    assert_eq!((rows[0].free, rows[0].max_free), (12, 8));
    assert_eq!(rows[0].min_mem_mib, 40 * 1024);
    assert_eq!(index.rows(h100, us).len(), 1);

    let n1 = index.clusters[alpha]
        .nodes
        .iter()
        .position(|n| n.state.name == "n1")
        .unwrap();
    index.commit(alpha, 0, 3, &[(n1, 2)]);
    let row = index.rows(h100, eu)[0];
    assert_eq!((row.free, row.max_free), (6, 4));
}

#[test]
fn rows_record_how_many_replicas_of_each_common_size_their_nodes_hold() {
    let snapshot = [
        cluster("alpha")
            .node_free("n1", "H100", 80 * 1024, 8, 8)
            .node_free("n2", "H100", 80 * 1024, 8, 5)
            .node_free("n3", "H100", 40 * 1024, 8, 3)
            .price("H100", "2.00")
            .build(),
        cluster("beta")
            .node("n1", "H100", 80 * 1024, 600)
            .price("H100", "2.00")
            .build(),
    ];
    let mut index = Index::build(&snapshot, &[]).unwrap();
    let h100 = index.model_id("H100").unwrap();
    let fits = |index: &Index<'_>, at: usize| -> Vec<Option<RowFit>> {
        (0..=9)
            .map(|g| index.rows(h100, 0)[at].replicas_fit(g))
            .collect()
    };
    let exactly = |v: &[u64]| -> Vec<Option<RowFit>> {
        let mut out = vec![None];
        out.extend(v.iter().map(|&n| Some(RowFit::Exactly(n))));
        out.push(None);
        out
    };
    assert_eq!(fits(&index, 0), exactly(&[16, 7, 4, 3, 2, 1, 1, 1]));
    let alpha = index.rows(h100, 0)[0];
    assert_eq!(
        (alpha.min_mem_mib, alpha.max_mem_mib),
        (40 * 1024, 80 * 1024)
    );
    // n1 gives 6 GPUs: 2, 5 and 3 free are left.
    index.commit(0, 0, 3, &[(0, 2)]);
    assert_eq!(fits(&index, 0), exactly(&[10, 4, 2, 1, 1, 0, 0, 0]));
    // Past 254 replicas a row only says "at least".
    let beta = fits(&index, 1);
    assert_eq!(beta[1], Some(RowFit::AtLeast(255)));
    assert_eq!(beta[2], Some(RowFit::AtLeast(255)));
    assert_eq!(beta[3], Some(RowFit::Exactly(200)));
    assert_eq!(std::mem::size_of::<Row>(), 64);
}

#[test]
fn names_come_from_one_buffer_and_equal_model_lists_are_shared() {
    let snapshot = [
        cluster("beta").node("n1", "L4", 24 * 1024, 4).build(),
        cluster("alpha").node("n1", "L4", 24 * 1024, 4).build(),
        cluster("gamma").node("n1", "H100", 80 * 1024, 8).build(),
    ];
    let index = Index::build(&snapshot, &[]).unwrap();
    let names: Vec<&str> = (0..3).map(|p| index.roster.name(p)).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(index.roster.name(3), "");
    let has = |p: usize| index.roster.has(p);
    assert!(Arc::ptr_eq(&has(0), &has(1)));
    assert_eq!(*has(2), ["H100".to_string()]);
}

#[test]
fn model_masks_share_a_bit_only_when_the_sets_share_a_model() {
    assert_eq!(model_mask([0, 3]) & model_mask([1, 2]), 0);
    assert_ne!(model_mask([0, 3]) & model_mask([3]), 0);
    assert_eq!(model_mask([64]), u64::MAX, "ids past 63 match everything");
    assert_eq!(model_mask([]), 0);
}
