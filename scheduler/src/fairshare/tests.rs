use super::*;
use crate::testing::{cluster, job};

fn pool(nodes: u32, gpus: u32) -> Vec<ClusterState> {
    let mut c = cluster("alpha").price("H100", "2.00");
    for i in 0..nodes {
        c = c.node(&format!("n{i}"), "H100", 80 * 1024, gpus);
    }
    vec![c.build()]
}

/// The keys of the jobs `pass` placed, in its order.
fn placed(pass: &FairPass) -> Vec<&str> {
    pass.decisions
        .iter()
        .filter(|(_, d)| matches!(d, Decision::Place(_)))
        .map(|(k, _)| k.as_str())
        .collect()
}

fn placed_per_namespace(pass: &FairPass) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for key in placed(pass) {
        *out.entry(namespace_of(key).to_string()).or_default() += 1;
    }
    out
}

fn backlog(ns: &str, n: u64, first_order: u64) -> Vec<JobRequest> {
    (0..n)
        .map(|i| job(&format!("{ns}/j{i}")).order(first_order + i).build())
        .collect()
}

/// `backlog` of jobs of `gpus` GPUs each.
fn backlog_of(ns: &str, n: u64, first_order: u64, gpus: u32) -> Vec<JobRequest> {
    (0..n)
        .map(|i| {
            job(&format!("{ns}/j{i}"))
                .gpus(gpus)
                .order(first_order + i)
                .build()
        })
        .collect()
}

fn run(
    jobs: &[JobRequest],
    clusters: &[ClusterState],
    fair: &FairShare,
    usage: &[Usage],
    holder: Option<&str>,
) -> FairPass {
    schedule_batch_fair(
        jobs,
        clusters,
        &[],
        &Policy::default(),
        &mut QuotaBook::default(),
        fair,
        Before { usage, holder },
    )
    .unwrap()
}

#[test]
fn two_backlogged_namespaces_share_in_proportion_to_their_weights() {
    // team-a's jobs are all older: plain priority-then-age would give it every GPU.
    let mut jobs = backlog("team-a", 12, 0);
    jobs.extend(backlog("team-b", 12, 100));
    let fair = FairShare {
        weights: [("team-b".to_string(), 2)].into(),
    };
    let pass = run(&jobs, &pool(1, 9), &fair, &[], None);
    let got = placed_per_namespace(&pass);
    assert_eq!(got.get("team-a"), Some(&3));
    assert_eq!(got.get("team-b"), Some(&6));
    let b = pass
        .shares
        .iter()
        .find(|s| s.namespace == "team-b")
        .unwrap();
    assert_eq!((b.weight, b.gpus, b.dominant_per_mille), (2, 6, 666));
    assert_eq!(b.dominant_model.as_deref(), Some("H100"));
}

#[test]
fn a_namespace_already_holding_gpus_waits_for_the_others_to_catch_up() {
    let mut jobs = backlog("team-a", 4, 0);
    jobs.extend(backlog("team-b", 4, 100));
    let usage = [Usage {
        namespace: "team-a".into(),
        model: "H100".into(),
        gpus: 4,
    }];
    // 4 GPUs free of 8: all go to team-b, which holds nothing yet.
    let clusters = vec![
        cluster("alpha")
            .price("H100", "2.00")
            .node_free("n0", "H100", 80 * 1024, 8, 4)
            .build(),
    ];
    let pass = run(&jobs, &clusters, &FairShare::default(), &usage, None);
    let got = placed_per_namespace(&pass);
    assert_eq!(got.get("team-a"), None);
    assert_eq!(got.get("team-b"), Some(&4));
}

#[test]
fn a_higher_priority_is_still_decided_before_any_share() {
    let mut jobs = backlog("team-a", 3, 0);
    jobs.push(job("team-b/urgent").priority(100).order(50).build());
    let usage = [Usage {
        namespace: "team-b".into(),
        model: "H100".into(),
        gpus: 100,
    }];
    let pass = run(&jobs, &pool(1, 1), &FairShare::default(), &usage, None);
    assert_eq!(pass.decisions[0].0, "team-b/urgent");
    assert!(matches!(pass.decisions[0].1, Decision::Place(_)));
}

#[test]
fn a_gang_that_fits_no_free_node_holds_the_node_it_would_empty() {
    // Two 8-GPU nodes, each with 2 free: the 8-GPU gang fits nowhere now.
    let clusters = vec![
        cluster("alpha")
            .price("H100", "2.00")
            .node_free("n0", "H100", 80 * 1024, 8, 2)
            .node_free("n1", "H100", 80 * 1024, 8, 2)
            .build(),
    ];
    let mut jobs = vec![job("team-a/big").gpus(8).order(0).build()];
    jobs.extend(backlog("team-b", 4, 10));
    let pass = run(&jobs, &clusters, &FairShare::default(), &[], None);
    let hold = pass.hold.clone().expect("the gang holds a node");
    assert_eq!(hold.job, "team-a/big");
    assert_eq!(hold.nodes.len(), 1);
    let held = &hold.nodes[0].0;
    // Small jobs use the other node only: 2 of them, none on the held node.
    let mut placed = 0;
    for (_, d) in &pass.decisions {
        if let Decision::Place(a) = d {
            assert!(
                a.nodes.iter().all(|(n, _)| n != held),
                "{a:?} on held {held}"
            );
            placed += 1;
        }
    }
    assert_eq!(placed, 2);
    // The holder is decided first.
    assert_eq!(pass.decisions[0].0, "team-a/big");
}

#[test]
fn a_holder_whose_node_has_emptied_is_placed_before_anyone_else() {
    let mut jobs = backlog_of("team-b", 8, 0, 2);
    jobs.push(job("team-a/big").gpus(8).order(99).build());
    let usage = [Usage {
        namespace: "team-a".into(),
        model: "H100".into(),
        gpus: 50,
    }];
    let pass = run(
        &jobs,
        &pool(1, 8),
        &FairShare::default(),
        &usage,
        Some("team-a/big"),
    );
    assert_eq!(pass.decisions[0].0, "team-a/big");
    assert!(matches!(pass.decisions[0].1, Decision::Place(_)));
    // The pool is full again: the next hold goes to the first of team-b's jobs in fair order.
    assert_eq!(pass.hold.map(|h| h.job).as_deref(), Some("team-b/j0"));
}

#[test]
fn in_a_full_pool_the_hold_goes_to_the_lowest_share_not_the_oldest_job() {
    // team-b's jobs are older, but team-b holds 6 GPUs and team-a none.
    let mut jobs = backlog_of("team-b", 3, 0, 2);
    jobs.extend(backlog_of("team-a", 3, 100, 2));
    let usage = [Usage {
        namespace: "team-b".into(),
        model: "H100".into(),
        gpus: 6,
    }];
    let clusters = vec![
        cluster("alpha")
            .price("H100", "2.00")
            .node_free("n0", "H100", 80 * 1024, 8, 0)
            .build(),
    ];
    let pass = run(&jobs, &clusters, &FairShare::default(), &usage, None);
    assert_eq!(pass.hold.map(|h| h.job).as_deref(), Some("team-a/j0"));
}

#[test]
fn a_one_gpu_job_never_holds_so_a_gpu_given_back_goes_in_fair_order() {
    // Twelve waiting one-GPU jobs, team-b's older and weighing 2; six GPUs appear.
    let mut jobs = backlog("team-b", 6, 0);
    jobs.extend(backlog("team-a", 6, 100));
    let fair = FairShare {
        weights: [("team-b".to_string(), 2)].into(),
    };
    let first = run(&jobs, &pool(1, 6), &fair, &[], None);
    let got = placed_per_namespace(&first);
    assert_eq!((got["team-a"], got["team-b"]), (2, 4));
    // The pool is full and every job waiting needs one GPU: nobody holds.
    assert!(first.hold.is_none(), "{:?}", first.hold);
    // team-b/j3's decision is not written (its write lost a race), so its GPU is free again in
    // the next pass: team-b (3 GPUs at weight 2) is further below its share than team-a (2 at
    // weight 1), so the GPU goes back to team-b, not to a holder of team-a.
    let written: Vec<&str> = placed(&first)
        .into_iter()
        .filter(|k| *k != "team-b/j3")
        .collect();
    let usage: Vec<Usage> = written
        .iter()
        .map(|k| Usage {
            namespace: namespace_of(k).to_string(),
            model: "H100".into(),
            gpus: 1,
        })
        .collect();
    let waiting: Vec<JobRequest> = jobs
        .iter()
        .filter(|j| !written.contains(&j.key.as_str()))
        .cloned()
        .collect();
    let mut one_free = pool(1, 6);
    one_free[0].nodes[0].free_gpus = 1;
    // As the hub does, the pass is given the previous pass's holder (none).
    let holder = first.hold.as_ref().map(|h| h.job.as_str());
    let second = run(&waiting, &one_free, &fair, &usage, holder);
    assert_eq!(placed(&second), ["team-b/j3"]);
}

#[test]
fn a_job_that_fits_no_empty_pool_holds_nothing() {
    let jobs = vec![
        job("team-a/huge").gpus(16).order(0).build(),
        job("team-b/small").order(1).build(),
    ];
    let pass = run(&jobs, &pool(1, 8), &FairShare::default(), &[], None);
    assert_eq!(pass.hold, None);
    assert!(
        pass.decisions
            .iter()
            .any(|(k, d)| k == "team-b/small" && matches!(d, Decision::Place(_)))
    );
}
