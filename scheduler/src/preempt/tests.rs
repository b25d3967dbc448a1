#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::testing::{cluster, job};

fn run(
    job: &str,
    attempt: u32,
    priority: i32,
    cluster: &str,
    nodes: &[(&str, u32)],
    started: u64,
) -> Running {
    Running {
        job: job.into(),
        attempt,
        priority,
        cluster: cluster.into(),
        nodes: nodes.iter().map(|(n, g)| (n.to_string(), *g)).collect(),
        started,
    }
}

fn victims(p: &Preempt) -> Vec<&str> {
    p.victims.iter().map(|v| v.job.as_str()).collect()
}

/// One cluster `a` with one full 8-GPU node.
fn full_node() -> Vec<ClusterState> {
    vec![
        cluster("a")
            .price("H100", "2.00")
            .node_free("n1", "H100", 81_559, 8, 0)
            .build(),
    ]
}

#[test]
fn the_youngest_lower_priority_attempts_go_and_no_more_than_needed() {
    let running = [
        run("t/old", 1, 0, "a", &[("n1", 4)], 100),
        run("t/mid", 1, 0, "a", &[("n1", 2)], 200),
        run("t/new", 1, 0, "a", &[("n1", 2)], 300),
    ];
    let hi = job("t/hi").gpus(4).priority(10).build();
    let plans = plan_preemptions(&[hi], &full_node(), &[], &running, &Policy::default()).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].cluster, "a");
    assert_eq!(victims(&plans[0]), ["t/new", "t/mid"]);
    assert_eq!(plans[0].freed_gpus(), 4);
    assert_eq!(plans[0].assignment.nodes, [("n1".to_string(), 1)]);
}

#[test]
fn equal_or_higher_priorities_are_never_evicted() {
    let running = [
        run("t/same", 1, 10, "a", &[("n1", 4)], 300),
        run("t/higher", 1, 20, "a", &[("n1", 4)], 400),
    ];
    let hi = job("t/hi").gpus(4).priority(10).build();
    let plans = plan_preemptions(&[hi], &full_node(), &[], &running, &Policy::default()).unwrap();
    assert_eq!(plans, []);
}

#[test]
fn a_young_victim_that_does_not_help_is_spared() {
    // The youngest attempt runs on n2 (wrong memory for the job); evicting it frees nothing the
    // job can use, so only the attempt on n1 goes.
    let clusters = vec![
        cluster("a")
            .price("H100", "2.00")
            .node_free("n1", "H100", 81_559, 8, 0)
            .node_free("n2", "H100", 40_000, 8, 0)
            .build(),
    ];
    let running = [
        run("t/small-mem", 1, 0, "a", &[("n2", 8)], 500),
        run("t/big", 1, 0, "a", &[("n1", 8)], 100),
    ];
    let hi = job("t/hi").gpus(8).min_memory_gib(80).priority(5).build();
    let plans = plan_preemptions(&[hi], &clusters, &[], &running, &Policy::default()).unwrap();
    assert_eq!(victims(&plans[0]), ["t/big"]);
}

#[test]
fn the_cluster_evicting_the_fewest_gpus_wins_and_a_gang_never_spans_clusters() {
    let clusters = vec![
        cluster("a")
            .price("H100", "1.00")
            .node_free("n1", "H100", 81_559, 8, 0)
            .build(),
        cluster("b")
            .price("H100", "3.00")
            .node_free("m1", "H100", 81_559, 8, 2)
            .build(),
    ];
    let running = [
        run("t/a8", 1, 0, "a", &[("n1", 8)], 100),
        run("t/b6", 1, 0, "b", &[("m1", 6)], 100),
    ];
    // 4 GPUs: b has 2 free, so evicting its 6 is enough; a would need its 8 to go.
    let hi = job("t/hi").gpus(4).priority(1).build();
    let plans = plan_preemptions(&[hi], &clusters, &[], &running, &Policy::default()).unwrap();
    assert_eq!(plans[0].cluster, "b");
    assert_eq!(victims(&plans[0]), ["t/b6"]);
    // 10 GPUs fit neither cluster even empty: nobody is evicted.
    let huge = job("t/huge").gpus(10).priority(1).build();
    let plans = plan_preemptions(&[huge], &clusters, &[], &running, &Policy::default()).unwrap();
    assert_eq!(plans, []);
}

#[test]
fn freed_gpus_are_held_for_the_first_preemptor_and_victims_are_not_evicted_twice() {
    let running = [
        run("t/x", 1, 0, "a", &[("n1", 4)], 100),
        run("t/y", 1, 0, "a", &[("n1", 4)], 200),
    ];
    let first = job("t/first").gpus(4).priority(10).order(1).build();
    let second = job("t/second").gpus(4).priority(10).order(2).build();
    let third = job("t/third").gpus(4).priority(10).order(3).build();
    let plans = plan_preemptions(
        &[third, second, first],
        &full_node(),
        &[],
        &running,
        &Policy::default(),
    )
    .unwrap();
    let got: Vec<(&str, Vec<&str>)> = plans.iter().map(|p| (p.job.as_str(), victims(p))).collect();
    assert_eq!(got, [("t/first", vec!["t/y"]), ("t/second", vec!["t/x"])]);
}

#[test]
fn a_job_that_fits_without_evicting_anyone_evicts_nobody() {
    let clusters = vec![
        cluster("a")
            .price("H100", "2.00")
            .node_free("n1", "H100", 81_559, 8, 4)
            .build(),
    ];
    let running = [run("t/low", 1, 0, "a", &[("n1", 4)], 100)];
    let hi = job("t/hi").gpus(4).priority(10).build();
    let plans = plan_preemptions(
        std::slice::from_ref(&hi),
        &clusters,
        &[],
        &running,
        &Policy::default(),
    )
    .unwrap();
    assert_eq!(plans, []);
    // With those 4 free GPUs taken by the pass, it evicts the low attempt.
    let taken = [Reservation {
        cluster: "a".into(),
        node: "n1".into(),
        gpus: 4,
    }];
    let plans = plan_preemptions(&[hi], &clusters, &taken, &running, &Policy::default()).unwrap();
    assert_eq!(victims(&plans[0]), ["t/low"]);
}

#[test]
fn the_job_filters_still_apply_after_eviction() {
    let running = [run("t/low", 1, 0, "a", &[("n1", 8)], 100)];
    for hi in [
        job("t/hi").priority(10).max_price("1.00").build(),
        job("t/hi").priority(10).failed_on(&["a"]).build(),
        job("t/hi").priority(10).models(&["A100"]).build(),
    ] {
        let plans =
            plan_preemptions(&[hi], &full_node(), &[], &running, &Policy::default()).unwrap();
        assert_eq!(plans, []);
    }
}
