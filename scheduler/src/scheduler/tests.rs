//! Strategies, tie-breaks, gang packing, reservations and batches, through the entry points.

use crate::error::ScheduleError;
use crate::explain::explain_placement;
use crate::input::{ClusterState, JobRequest, Policy, Reservation, Strategy};
use crate::reason::Reason;
use crate::scheduler::{Scheduler, schedule, schedule_batch};
use crate::testing::{ClusterBuilder, cluster, job, reservation, tokens};
use crate::{Assignment, Decision};

const GIB: u64 = 1024;

fn policy(strategy: Strategy) -> Policy {
    Policy { strategy }
}

/// A cluster with `free` of 8 H100 GPUs free on each of its nodes, at `price`.
fn h100(name: &str, price: &str, free: &[u32]) -> ClusterBuilder {
    free.iter()
        .enumerate()
        .fold(cluster(name).price("H100", price), |c, (i, &f)| {
            c.node_free(&format!("n{}", i + 1), "H100", 80 * GIB, 8, f)
        })
}

fn place(
    j: &JobRequest,
    clusters: &[ClusterState],
    reservations: &[Reservation],
    strategy: Strategy,
) -> Assignment {
    match schedule(j, clusters, reservations, &policy(strategy)).unwrap() {
        Decision::Place(a) => a,
        other => panic!("expected a placement, got {other:?}"),
    }
}

fn nodes(picks: &[(&str, u32)]) -> Vec<(String, u32)> {
    picks.iter().map(|&(n, r)| (n.to_string(), r)).collect()
}

#[test]
fn cheapest_fit_picks_the_lowest_price_and_explains_it() {
    let clusters = [
        h100("alpha", "2.40", &[8]).build(),
        cluster("beta")
            .node("n1", "A100", 80 * GIB, 8)
            .price("A100", "1.20")
            .build(),
        h100("gamma", "3.10", &[8]).build(),
    ];
    let j = job("a/j").models(&["H100", "A100"]).build();
    let a = place(&j, &clusters, &[], Strategy::CheapestFit);
    assert_eq!((a.cluster.as_str(), a.model.as_str()), ("beta", "A100"));
    assert_eq!(a.price, tokens("1.20"));
    assert_eq!(a.fitting_clusters, 3);
    assert_eq!(
        explain_placement(&a, a.fitting_clusters, Strategy::CheapestFit),
        "placed on beta: cheapest of 3 fitting clusters (A100 at 1.20/GPU-hour)"
    );
}

#[test]
fn cheapest_fit_breaks_price_ties_by_free_gpus_then_name() {
    let j = job("a/j").gpus(2).build();
    let clusters = [
        h100("alpha", "2.00", &[4]).build(),
        h100("beta", "2.00", &[8]).build(),
    ];
    assert_eq!(
        place(&j, &clusters, &[], Strategy::CheapestFit).cluster,
        "beta"
    );
    let clusters = [
        h100("beta", "2.00", &[8]).build(),
        h100("alpha", "2.00", &[8]).build(),
    ];
    assert_eq!(
        place(&j, &clusters, &[], Strategy::CheapestFit).cluster,
        "alpha"
    );
}

#[test]
fn bin_pack_picks_the_cluster_left_fullest_then_cheapest_then_by_name() {
    let j = job("a/j").gpus(4).build();
    let clusters = [
        h100("alpha", "1.00", &[8, 8]).build(),
        h100("beta", "9.00", &[4, 2]).build(),
        h100("gamma", "5.00", &[6]).build(),
    ];
    let a = place(&j, &clusters, &[], Strategy::BinPack);
    assert_eq!((a.cluster.as_str(), a.free_after), ("gamma", 2));
    let ties = [
        h100("beta", "2.00", &[6]).build(),
        h100("alpha", "2.00", &[6]).build(),
        h100("delta", "1.00", &[6]).build(),
    ];
    assert_eq!(place(&j, &ties, &[], Strategy::BinPack).cluster, "delta");
    assert_eq!(
        place(&j, &ties[..2], &[], Strategy::BinPack).cluster,
        "alpha"
    );
}

#[test]
fn spread_picks_the_cluster_left_emptiest_then_cheapest_then_by_name() {
    let j = job("a/j").gpus(4).build();
    let clusters = [
        h100("alpha", "1.00", &[4]).build(),
        h100("beta", "9.00", &[8, 8]).build(),
        h100("gamma", "5.00", &[8]).build(),
    ];
    let a = place(&j, &clusters, &[], Strategy::Spread);
    assert_eq!((a.cluster.as_str(), a.free_after), ("beta", 12));
    let ties = [
        h100("beta", "2.00", &[8]).build(),
        h100("alpha", "2.00", &[8]).build(),
        h100("delta", "3.00", &[8]).build(),
    ];
    assert_eq!(place(&j, &ties, &[], Strategy::Spread).cluster, "alpha");
}

#[test]
fn a_gang_of_three_by_four_packs_onto_nodes_with_eight_four_and_four_free() {
    let clusters = [h100("alpha", "2.00", &[8, 4, 4]).build()];
    let j = job("a/j").replicas(3).gpus(4).build();
    let a = place(&j, &clusters, &[], Strategy::CheapestFit);
    assert_eq!(a.nodes, nodes(&[("n1", 1), ("n2", 1), ("n3", 1)]));
    assert_eq!(a.replicas(), 3);
    assert_eq!(a.free_after, 4);
    let j = job("a/j").replicas(2).gpus(4).build();
    let a = place(&j, &clusters, &[], Strategy::BinPack);
    assert_eq!(
        a.nodes,
        nodes(&[("n2", 1), ("n3", 1)]),
        "best-fit keeps n1 whole"
    );
    let a = place(&j, &clusters, &[], Strategy::Spread);
    assert_eq!(
        a.nodes,
        nodes(&[("n1", 1), ("n2", 1)]),
        "worst-fit starts on n1"
    );
}

#[test]
fn reservations_reduce_capacity_before_the_members_report() {
    let clusters = [h100("alpha", "2.00", &[8]).build()];
    let j = job("a/j").gpus(4).build();
    let held = [reservation("alpha", "n1", 6)];
    let Decision::NoFit(reasons) = schedule(&j, &clusters, &held, &Policy::default()).unwrap()
    else {
        panic!("must not fit");
    };
    assert_eq!(
        reasons.to_vec(),
        [(
            "alpha".to_string(),
            Reason::Capacity {
                model: "H100".into(),
                free: 2,
                need: 4
            }
        )]
    );
    let held = [reservation("alpha", "n1", 4)];
    let a = place(&j, &clusters, &held, Strategy::CheapestFit);
    assert_eq!(a.free_after, 0);
}

#[test]
fn an_empty_snapshot_fits_nothing_and_lists_nothing() {
    let d = schedule(&job("a/j").build(), &[], &[], &Policy::default()).unwrap();
    assert!(matches!(d, Decision::NoFit(reasons) if reasons.is_empty()));
}

#[test]
fn evaluating_takes_nothing_and_placing_takes_the_gpus() {
    let clusters = [h100("alpha", "2.00", &[8]).build()];
    let mut s = Scheduler::new(&clusters, &[], &Policy::default()).unwrap();
    let j = job("a/j").gpus(8).build();
    assert!(s.evaluate(&j).unwrap().assignment().is_some());
    assert!(s.evaluate(&j).unwrap().assignment().is_some());
    assert!(s.place(&j).unwrap().assignment().is_some());
    let again = s.evaluate(&j).unwrap();
    assert_eq!(again.assignment(), None);
    assert!(matches!(again, Decision::NoFit(r)
        if r.get(0).is_some_and(|(_, r)| r.to_string() == "0 free GPUs, needs 8")));
}

#[test]
fn a_burst_never_over_commits_a_cluster() {
    let clusters = [
        h100("alpha", "1.00", &[8]).build(),
        h100("beta", "2.00", &[8]).build(),
    ];
    let jobs: Vec<JobRequest> = (0..3)
        .map(|i| job(&format!("a/j{i}")).gpus(8).order(i).build())
        .collect();
    let out = schedule_batch(&jobs, &clusters, &[], &Policy::default()).unwrap();
    let placed: Vec<Option<&str>> = out
        .iter()
        .map(|(_, d)| d.assignment().map(|a| a.cluster.as_str()))
        .collect();
    assert_eq!(placed, [Some("alpha"), Some("beta"), None]);
    let Decision::NoFit(reasons) = &out[2].1 else {
        panic!("the third job should wait");
    };
    assert_eq!(
        crate::explain(reasons),
        "0/2 clusters fit: alpha: 0 free GPUs, needs 8; beta: 0 free GPUs, needs 8"
    );
}

#[test]
fn batches_run_by_priority_then_age_then_key() {
    let clusters = [h100("alpha", "1.00", &[8]).build()];
    let jobs = [
        job("a/young").gpus(8).order(5).build(),
        job("a/old").gpus(8).order(1).build(),
        job("a/urgent").gpus(8).order(9).priority(10).build(),
        job("a/b-same").gpus(8).order(1).build(),
    ];
    let out = schedule_batch(&jobs, &clusters, &[], &Policy::default()).unwrap();
    let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a/urgent", "a/b-same", "a/old", "a/young"]);
    assert!(out[0].1.assignment().is_some());
    assert!(out[1..].iter().all(|(_, d)| d.assignment().is_none()));
}

#[test]
fn a_big_job_that_waits_does_not_block_smaller_ones_behind_it() {
    let clusters = [h100("alpha", "1.00", &[4]).build()];
    let jobs = [
        job("a/big").gpus(8).priority(5).build(),
        job("a/small").gpus(4).build(),
    ];
    let out = schedule_batch(&jobs, &clusters, &[], &Policy::default()).unwrap();
    assert!(out[0].1.assignment().is_none());
    assert_eq!(
        out[1].1.assignment().map(|a| a.cluster.as_str()),
        Some("alpha")
    );
}

/// The no-fit decisions of a batch, by key.
fn no_fits(out: &[(String, Decision)]) -> Vec<(&str, &crate::NoFit)> {
    out.iter()
        .filter_map(|(k, d)| match d {
            Decision::NoFit(n) => Some((k.as_str(), n)),
            _ => None,
        })
        .collect()
}

#[test]
fn waiting_jobs_with_the_same_terms_share_one_list_of_reasons_until_free_gpus_change() {
    let clusters = [
        h100("alpha", "1.00", &[0, 1]).build(),
        h100("beta", "1.00", &[0]).build(),
    ];
    // Decided in this order: two 8-GPU jobs that fit nowhere, a 1-GPU job that takes alpha's
    // last GPU, an 8-GPU job that blocks both clusters, one that blocks none, and one that
    // differs in size.
    let jobs = [
        job("a/big-1").gpus(8).order(1).build(),
        job("a/big-2").gpus(8).order(2).build(),
        job("a/small").gpus(1).order(3).build(),
        job("a/big-3")
            .gpus(8)
            .order(4)
            .exclude(&["beta"])
            .failed_on(&["alpha"])
            .build(),
        job("a/big-4").gpus(8).order(5).build(),
        job("a/nine").gpus(9).order(6).build(),
    ];
    let out = schedule_batch(&jobs, &clusters, &[], &Policy::default()).unwrap();
    assert_eq!(
        out[2].1.assignment().map(|a| a.cluster.as_str()),
        Some("alpha")
    );
    let waiting = no_fits(&out);
    let keys: Vec<&str> = waiting.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["a/big-1", "a/big-2", "a/big-3", "a/big-4", "a/nine"]);
    let [(_, one), (_, two), (_, three), (_, four), (_, nine)] = waiting[..] else {
        panic!("{waiting:?}");
    };
    assert!(one.shares_reasons_with(two), "same terms, same counts");
    assert_eq!(one, two);
    assert!(
        !two.shares_reasons_with(three),
        "a placement between them changed alpha's free GPUs"
    );
    assert!(
        three.shares_reasons_with(four),
        "what a job blocks is read before the list, so the list is made for both"
    );
    assert_ne!(three, four, "beta excluded, alpha failed on");
    assert_ne!(one, four, "alpha had 1 free GPU, then none");
    assert!(!four.shares_reasons_with(nine), "another size");
    // Each is what the job gets alone, with the placement before it reserved, and its signature
    // is that of its reasons.
    let taken = [reservation("alpha", "n2", 1)];
    for (key, no_fit, held) in [
        ("a/big-1", one, &[][..]),
        ("a/big-3", three, &taken[..]),
        ("a/big-4", four, &taken[..]),
        ("a/nine", nine, &taken[..]),
    ] {
        assert_eq!(
            no_fit.signature(),
            crate::reference::signature(no_fit),
            "{key}"
        );
        let j = jobs.iter().find(|j| j.key == key).unwrap();
        let alone = schedule(j, &clusters, held, &Policy::default()).unwrap();
        assert_eq!(alone, Decision::NoFit(no_fit.clone()), "{key}");
    }
}

#[test]
fn malformed_batches_are_refused_before_anything_is_placed() {
    let clusters = [h100("alpha", "1.00", &[8]).build()];
    let twice = [job("a/j").build(), job("a/j").build()];
    assert_eq!(
        schedule_batch(&twice, &clusters, &[], &Policy::default()).unwrap_err(),
        ScheduleError::DuplicateJob { key: "a/j".into() }
    );
    let zero = [job("a/ok").build(), job("a/zero").replicas(0).build()];
    assert!(matches!(
        schedule_batch(&zero, &clusters, &[], &Policy::default()),
        Err(ScheduleError::InvalidJob { key, .. }) if key == "a/zero"
    ));
    let dup = [clusters[0].clone(), clusters[0].clone()];
    assert!(matches!(
        schedule(&job("a/j").build(), &dup, &[], &Policy::default()),
        Err(ScheduleError::DuplicateCluster { .. })
    ));
}

#[test]
fn a_gpu_reporting_a_little_less_than_the_advertised_memory_still_qualifies() {
    // NVML reports 81,559 MiB for an H100 80GB; a job asking 80 GiB must be able to use it.
    let clusters = [cluster("alpha")
        .node("n1", "H100", 81_559, 8)
        .price("H100", "2.40")
        .build()];
    let j = job("ns/big").models(&["H100"]).min_memory_gib(80).build();
    let d = schedule(&j, &clusters, &[], &Policy::default()).unwrap();
    assert!(matches!(d, Decision::Place(_)), "{d:?}");

    // A 40 GB A100 is far below, and the reason quotes what the job asked for.
    let clusters = [cluster("beta")
        .node("n1", "A100", 40_960, 8)
        .price("A100", "1.20")
        .build()];
    let j = job("ns/big").models(&["A100"]).min_memory_gib(80).build();
    let Decision::NoFit(reasons) = schedule(&j, &clusters, &[], &Policy::default()).unwrap() else {
        panic!("must not fit")
    };
    assert_eq!(
        reasons.get(0).unwrap().1.to_string(),
        "A100 has 40 GiB per GPU, needs 80 GiB"
    );
}
