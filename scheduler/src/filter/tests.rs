//! Every filter, its order, and the reason text it produces, through the public entry point.

use crate::input::{BondState, NodeState, Policy};
use crate::reason::{BondIssue, Reason};
use crate::scheduler::schedule;
use crate::testing::{ClusterBuilder, JobBuilder, cluster, job, tokens};
use crate::{ClusterState, Decision};

const GIB: u64 = 1024;

/// An H100 cluster with one 8-GPU node at 2.40, in eu-west.
fn h100(name: &str) -> ClusterBuilder {
    cluster(name)
        .node("n1", "H100", 80 * GIB, 8)
        .price("H100", "2.40")
}

fn decide(j: JobBuilder, clusters: &[ClusterState]) -> Decision {
    schedule(&j.build(), clusters, &[], &Policy::default()).unwrap()
}

/// The reason of the only cluster, for a job that fits nowhere.
fn reason(j: JobBuilder, c: ClusterBuilder) -> Reason {
    match decide(j, &[c.build()]) {
        Decision::NoFit(reasons) if reasons.len() == 1 => reasons.to_vec().remove(0).1,
        other => panic!("expected one reason, got {other:?}"),
    }
}

fn placed_model(j: JobBuilder, clusters: &[ClusterState]) -> String {
    match decide(j, clusters) {
        Decision::Place(a) => a.model,
        other => panic!("expected a placement, got {other:?}"),
    }
}

#[test]
fn a_cluster_whose_heartbeat_expired_is_not_ready() {
    let r = reason(job("a/j"), h100("alpha").not_ready());
    assert_eq!(r, Reason::NotReady);
    assert_eq!(r.to_string(), "not ready (heartbeat expired)");
}

#[test]
fn a_cluster_without_an_inventory_report_is_skipped() {
    assert_eq!(
        reason(job("a/j"), h100("alpha").no_inventory()),
        Reason::NoInventory
    );
}

#[test]
fn a_cordoned_cluster_takes_no_new_jobs() {
    assert_eq!(
        reason(job("a/j"), h100("alpha").cordoned()),
        Reason::Cordoned
    );
}

#[test]
fn bond_problems_block_placement_and_say_what_is_missing() {
    let short = BondState::Insufficient {
        bonded: tokens("50"),
        required: tokens("100"),
    };
    let r = reason(job("a/j"), h100("alpha").bond(short));
    assert_eq!(r.to_string(), "bond 50.00 < required 100.00");
    let r = reason(job("a/j"), h100("alpha").bond(BondState::NoWallet));
    assert_eq!(r, Reason::Bond(BondIssue::NoWallet));
    let r = reason(job("a/j"), h100("alpha").bond(BondState::Unknown));
    assert_eq!(r, Reason::Bond(BondIssue::Unknown));
    let eligible = h100("alpha").bond(BondState::Eligible).build();
    assert_eq!(placed_model(job("a/j"), &[eligible]), "H100");
}

#[test]
fn excluded_clusters_and_clusters_that_failed_before_are_avoided() {
    let r = reason(job("a/j").exclude(&["alpha"]), h100("alpha"));
    assert_eq!(r, Reason::Excluded);
    let r = reason(job("a/j").failed_on(&["alpha"]), h100("alpha"));
    assert_eq!(r, Reason::FailedBefore);
    assert_eq!(r.to_string(), "an earlier attempt failed here");
    let other = [h100("alpha").build(), h100("beta").build()];
    let d = decide(job("a/j").failed_on(&["alpha"]), &other);
    assert_eq!(d.assignment().map(|a| a.cluster.as_str()), Some("beta"));
}

#[test]
fn only_accepted_regions_are_used_and_no_regions_means_any() {
    let r = reason(job("a/j").regions(&["us-east"]), h100("alpha"));
    assert_eq!(r.to_string(), "region eu-west not accepted");
    let r = reason(job("a/j").regions(&["mars"]), h100("alpha"));
    assert_eq!(
        r,
        Reason::Region {
            region: "eu-west".into()
        }
    );
    let c = [h100("alpha").region("us-east").build()];
    assert_eq!(
        placed_model(job("a/j").regions(&["eu-west", "us-east"]), &c),
        "H100"
    );
    assert_eq!(placed_model(job("a/j"), &c), "H100");
}

#[test]
fn a_cluster_without_the_model_says_what_it_has() {
    let l4 = cluster("alpha")
        .node("n1", "L4", 24 * GIB, 4)
        .node("n2", "T4", 16 * GIB, 4)
        .price("L4", "0.50");
    let r = reason(job("a/j").models(&["H100"]), l4);
    assert_eq!(r.to_string(), "no H100 (has L4, T4)");
    let r = reason(
        job("a/j").models(&["H100", "A100", "H100"]),
        cluster("empty"),
    );
    assert_eq!(r.to_string(), "no H100 or A100 (has no GPUs)");
}

#[test]
fn gpus_without_a_price_are_not_offered() {
    let r = reason(job("a/j"), cluster("alpha").node("n1", "H100", 80 * GIB, 8));
    assert_eq!(r.to_string(), "no price for H100");
}

#[test]
fn gpus_with_too_little_memory_are_skipped() {
    let a100 = || {
        cluster("alpha")
            .node("n1", "A100", 40 * GIB, 8)
            .price("A100", "1.20")
    };
    let j = || job("a/j").models(&["A100"]);
    let r = reason(j().min_memory_gib(80), a100());
    assert_eq!(r.to_string(), "A100 has 40 GiB per GPU, needs 80 GiB");
    assert_eq!(
        placed_model(j().min_memory_gib(40), &[a100().build()]),
        "A100"
    );
    // Only the big node counts towards capacity when the job needs 80 GiB.
    let mixed = a100().node("n2", "A100", 80 * GIB, 2);
    let r = reason(j().min_memory_gib(80).replicas(2).gpus(2), mixed);
    assert_eq!(r.to_string(), "2 free GPUs, needs 4");
}

#[test]
fn a_price_above_the_cap_is_refused_and_one_equal_to_it_is_accepted() {
    let c = || {
        cluster("gamma")
            .node("n1", "H100", 80 * GIB, 8)
            .price("H100", "3.10")
    };
    let r = reason(job("a/j").max_price("2.50"), c());
    assert_eq!(r.to_string(), "price 3.10 > max 2.50");
    assert_eq!(
        placed_model(job("a/j").max_price("3.10"), &[c().build()]),
        "H100"
    );
}

#[test]
fn an_offer_takes_only_the_job_lengths_it_names_bounds_included() {
    // alpha offers H100 for jobs of 10 minutes to 2 hours; beta (dearer) for any length.
    let alpha = || h100("alpha").durations("H100", 600, 7200);
    let beta = || {
        cluster("beta")
            .node("n1", "H100", 80 * GIB, 8)
            .price("H100", "3.00")
    };
    for secs in [600, 3600, 7200] {
        let j = job("a/j").max_duration(secs);
        let Decision::Place(a) = decide(j, &[alpha().build(), beta().build()]) else {
            panic!("{secs}: not placed");
        };
        assert_eq!(a.cluster, "alpha", "{secs}");
    }
    for secs in [599, 7201] {
        let j = job("a/j").max_duration(secs);
        let Decision::Place(a) = decide(j, &[alpha().build(), beta().build()]) else {
            panic!("{secs}: not placed");
        };
        assert_eq!(a.cluster, "beta", "{secs}");
    }
    let r = reason(job("a/j").max_duration(24 * 3600), alpha());
    assert_eq!(
        r,
        Reason::Duration {
            model: "H100".into(),
            job_secs: 24 * 3600,
            min_secs: 600,
            max_secs: 7200,
        }
    );
    assert_eq!(r.to_string(), "H100 offered for jobs of 10m to 2h, not 24h");
    // Checked after the price cap and before capacity.
    let r = reason(
        job("a/j").max_duration(60).max_price("1.00"),
        h100("alpha").durations("H100", 600, 7200),
    );
    assert_eq!(r.kind(), crate::ReasonKind::Price);
    let r = reason(
        job("a/j").max_duration(60).gpus(16),
        h100("alpha").durations("H100", 600, 7200),
    );
    assert_eq!(r.kind(), crate::ReasonKind::Duration);
    // The summary of many clusters keeps the job's length.
    assert_eq!(r.summary(), "no offer for jobs of 1m");
}

#[test]
fn too_few_free_gpus_in_the_cluster_is_a_capacity_reason() {
    let c = cluster("beta")
        .node_free("n1", "H100", 80 * GIB, 8, 2)
        .node_free("n2", "H100", 80 * GIB, 8, 2)
        .price("H100", "2.40");
    let r = reason(job("a/j").gpus(8), c);
    assert_eq!(r.to_string(), "4 free GPUs, needs 8");
}

#[test]
fn enough_gpus_spread_over_small_nodes_is_a_node_size_reason_not_capacity() {
    let c = cluster("beta")
        .node_free("n1", "H100", 80 * GIB, 8, 4)
        .node_free("n2", "H100", 80 * GIB, 8, 4)
        .price("H100", "2.40");
    let r = reason(job("a/j").gpus(8), c);
    assert_eq!(
        r,
        Reason::NodeSize {
            model: "H100".into(),
            largest_free: 4,
            need_per_replica: 8
        }
    );
    assert_eq!(
        r.to_string(),
        "largest node has 4 free GPUs, a replica needs 8"
    );
}

#[test]
fn holes_that_hold_only_some_replicas_are_a_fragmentation_reason() {
    let c = cluster("beta")
        .node_free("n1", "H100", 80 * GIB, 8, 6)
        .node_free("n2", "H100", 80 * GIB, 8, 6)
        .price("H100", "2.40");
    let r = reason(job("a/j").replicas(3).gpus(4), c);
    assert_eq!(r.to_string(), "free GPUs fit 2 of 3 replicas of 4 GPUs");
}

#[test]
fn nodes_that_are_not_ready_or_unhealthy_offer_nothing() {
    let sick = NodeState {
        name: "n2".into(),
        model: "H100".into(),
        gpu_memory_mib: 80 * GIB,
        allocatable_gpus: 8,
        free_gpus: 8,
        unhealthy_gpus: 6,
        ready: true,
        utilization_percent: 0,
    };
    let down = NodeState {
        name: "n3".into(),
        ready: false,
        unhealthy_gpus: 0,
        ..sick.clone()
    };
    let c = || {
        cluster("alpha")
            .node_state(sick.clone())
            .node_state(down.clone())
            .price("H100", "2.40")
    };
    let r = reason(job("a/j").replicas(2).gpus(2), c());
    assert_eq!(r.to_string(), "2 free GPUs, needs 4");
    // Nor do they count towards the size of a node.
    let r = reason(job("a/j").gpus(4), c());
    assert_eq!(r.to_string(), "no node has 4 H100 GPUs (largest: 2)");
}

#[test]
fn a_replica_larger_than_every_node_never_fits_even_with_every_gpu_free() {
    // Three idle 8-GPU nodes: 24 free GPUs, but no node can ever hold 16 of them.
    let c = cluster("alpha")
        .node("n1", "H100", 80 * GIB, 8)
        .node("n2", "H100", 80 * GIB, 8)
        .node("n3", "H100", 80 * GIB, 8)
        .price("H100", "2.40");
    let r = reason(job("a/j").gpus(16), c);
    assert_eq!(
        r,
        Reason::NodeTooSmall {
            model: "H100".into(),
            largest: 8,
            per_replica: 16
        }
    );
    assert_eq!(r.to_string(), "no node has 16 H100 GPUs (largest: 8)");
    // Busy small nodes say the same: waiting for them does not help.
    let busy = cluster("beta")
        .node_free("n1", "H100", 80 * GIB, 8, 0)
        .node_free("n2", "H100", 80 * GIB, 8, 4)
        .price("H100", "2.40");
    assert_eq!(
        reason(job("a/j").gpus(16), busy).to_string(),
        "no node has 16 H100 GPUs (largest: 8)"
    );
}

#[test]
fn a_node_large_enough_but_busy_is_a_reason_to_wait() {
    let c = || {
        cluster("alpha")
            .node_free("big", "H100", 80 * GIB, 16, 4)
            .node("n1", "H100", 80 * GIB, 8)
            .price("H100", "2.40")
    };
    let r = reason(job("a/j").gpus(16), c());
    assert_eq!(r.to_string(), "12 free GPUs, needs 16");
    let roomy = c().node("n2", "H100", 80 * GIB, 8);
    let r = reason(job("a/j").gpus(16), roomy);
    assert_eq!(
        r.to_string(),
        "largest node has 8 free GPUs, a replica needs 16"
    );
}

#[test]
fn only_nodes_with_enough_memory_count_towards_the_largest_node() {
    // The 16-GPU node has 40 GiB GPUs; the job needs 80 GiB, which only 8-GPU nodes have.
    let c = || {
        cluster("alpha")
            .node("big", "A100", 40 * GIB, 16)
            .node("n1", "A100", 80 * GIB, 8)
            .price("A100", "1.20")
    };
    let r = reason(
        job("a/j").models(&["A100"]).gpus(16).min_memory_gib(80),
        c(),
    );
    assert_eq!(r.to_string(), "no node has 16 A100 GPUs (largest: 8)");
    let j = job("a/j").models(&["A100"]).gpus(16).min_memory_gib(40);
    assert_eq!(placed_model(j, &[c().build()]), "A100");
}

#[test]
fn the_first_failing_filter_is_reported_in_the_documented_order() {
    let everything_wrong = || {
        cluster("alpha")
            .region("us-east")
            .node_free("n1", "H100", 40 * GIB, 8, 0)
            .price("H100", "9.99")
    };
    let j = || {
        job("a/j")
            .regions(&["eu-west"])
            .exclude(&["alpha"])
            .failed_on(&["alpha"])
            .max_price("1.00")
            .min_memory_gib(80)
    };
    let steps: Vec<(ClusterBuilder, JobBuilder, &str)> = vec![
        (
            everything_wrong().not_ready().no_inventory().cordoned(),
            j(),
            "NotReady",
        ),
        (
            everything_wrong().no_inventory().cordoned(),
            j(),
            "NoInventory",
        ),
        (
            everything_wrong().cordoned().bond(BondState::Unknown),
            j(),
            "Cordoned",
        ),
        (
            everything_wrong().bond(BondState::Unknown),
            j(),
            "BondUnknown",
        ),
        (everything_wrong(), j(), "Excluded"),
        (everything_wrong(), j().exclude(&[]), "FailedBefore"),
        (
            everything_wrong(),
            j().exclude(&[]).failed_on(&[]),
            "Region",
        ),
        (
            everything_wrong(),
            j().exclude(&[]).failed_on(&[]).regions(&[]),
            "Memory",
        ),
        (
            everything_wrong(),
            j().exclude(&[])
                .failed_on(&[])
                .regions(&[])
                .min_memory_gib(0),
            "Price",
        ),
        (
            everything_wrong(),
            j().exclude(&[])
                .failed_on(&[])
                .regions(&[])
                .min_memory_gib(0)
                .max_price("10")
                .gpus(16),
            "NodeTooSmall",
        ),
        (
            everything_wrong(),
            j().exclude(&[])
                .failed_on(&[])
                .regions(&[])
                .min_memory_gib(0)
                .max_price("10"),
            "Capacity",
        ),
    ];
    for (c, j, kind) in steps {
        assert_eq!(reason(j, c).kind().as_str(), kind);
    }
}

#[test]
fn a_cluster_fits_when_any_accepted_model_fits() {
    let c = cluster("alpha")
        .node_free("h", "H100", 80 * GIB, 8, 0)
        .node("a", "A100", 80 * GIB, 8)
        .price("H100", "2.40")
        .price("A100", "1.20");
    assert_eq!(
        placed_model(job("a/j").models(&["H100", "A100"]), &[c.build()]),
        "A100"
    );
}

#[test]
fn with_several_models_the_most_informative_reason_is_kept() {
    // No H100 at all, but the L4s it has are just too few: say that, not "no H100".
    let c = || {
        cluster("alpha")
            .node_free("l", "L4", 24 * GIB, 8, 2)
            .node("a", "A100", 80 * GIB, 8)
            .price("L4", "0.50")
            .price("A100", "3.00")
    };
    let r = reason(job("a/j").models(&["H100", "L4"]).gpus(4), c());
    assert_eq!(r.to_string(), "2 free GPUs, needs 4");
    // Price problem of one model, capacity problem of another: capacity got further.
    let r = reason(
        job("a/j").models(&["A100", "L4"]).gpus(4).max_price("1.00"),
        c(),
    );
    assert_eq!(r.kind().as_str(), "Capacity");
    // Equally far: the model listed first by the job wins.
    let both = || {
        cluster("alpha")
            .node("l", "L4", 24 * GIB, 8)
            .node("a", "A100", 80 * GIB, 8)
            .price("L4", "0.50")
            .price("A100", "3.00")
    };
    let r = reason(job("a/j").models(&["L4", "A100"]).max_price("0.10"), both());
    assert_eq!(r.to_string(), "price 0.50 > max 0.10");
    let r = reason(job("a/j").models(&["A100", "L4"]).max_price("0.10"), both());
    assert_eq!(r.to_string(), "price 3.00 > max 0.10");
}

#[test]
fn no_fit_lists_every_cluster_once_sorted_by_name() {
    let clusters = [
        h100("gamma").not_ready().build(),
        h100("alpha").cordoned().build(),
        h100("beta").price("H100", "9.00").build(),
    ];
    let Decision::NoFit(reasons) = decide(job("a/j").max_price("1.00"), &clusters) else {
        panic!("nothing should fit");
    };
    let text: Vec<String> = reasons.iter().map(|(c, r)| format!("{c}: {r}")).collect();
    assert_eq!(
        text,
        [
            "alpha: cordoned",
            "beta: price 9.00 > max 1.00",
            "gamma: not ready (heartbeat expired)"
        ]
    );
}

#[test]
fn a_pool_requiring_verification_places_only_on_members_that_passed() {
    use crate::{VerificationIssue, VerificationState, explain};
    let passed = h100("alpha").verification(VerificationState::Passed);
    let unverified = h100("beta").verification(VerificationState::Unverified {
        message: "no challenge answered yet".into(),
    });
    let failed = h100("gamma").verification(VerificationState::Failed {
        message: "GPU GPU-1 row group 3: digest 00 does not match the product (ff)".into(),
    });
    // Only the verified member takes the job, though the others are as cheap.
    match decide(
        job("a/j"),
        &[
            unverified.clone().build(),
            passed.build(),
            failed.clone().build(),
        ],
    ) {
        Decision::Place(a) => assert_eq!(a.cluster, "alpha"),
        other => panic!("expected alpha, got {other:?}"),
    }
    // Without it, the job waits and says why, with the verdict's message.
    let r = reason(job("a/j"), unverified);
    assert_eq!(
        r,
        Reason::Verification(VerificationIssue::Unverified {
            message: "no challenge answered yet".into()
        })
    );
    assert_eq!(
        r.to_string(),
        "GPUs not verified yet: no challenge answered yet"
    );
    let r = reason(job("a/j"), failed.clone());
    assert_eq!(r.kind().as_str(), "FailedVerification");
    assert!(
        r.to_string()
            .starts_with("failed GPU verification: GPU GPU-1 row group 3"),
        "{r}"
    );
    let Decision::NoFit(reasons) = decide(job("a/j"), &[failed.build()]) else {
        panic!()
    };
    assert!(explain(&reasons).contains("failed GPU verification"));
}

#[test]
fn verification_is_checked_after_the_bond_and_before_the_jobs_own_choices() {
    use crate::{VerificationIssue, VerificationState};
    let unverified = VerificationState::Unverified {
        message: "challenge pending".into(),
    };
    let r = reason(
        job("a/j"),
        h100("alpha")
            .bond(BondState::NoWallet)
            .verification(unverified.clone()),
    );
    assert_eq!(r, Reason::Bond(BondIssue::NoWallet));
    let r = reason(
        job("a/j").exclude(&["alpha"]),
        h100("alpha").verification(unverified),
    );
    assert!(matches!(
        r,
        Reason::Verification(VerificationIssue::Unverified { .. })
    ));
    // NotRequired (pools without verification, and the hub's own challenges) places as before.
    match decide(
        job("a/j"),
        &[h100("alpha")
            .verification(VerificationState::NotRequired)
            .build()],
    ) {
        Decision::Place(a) => assert_eq!(a.cluster, "alpha"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_model_that_could_fit_later_says_more_than_one_whose_nodes_are_too_small() {
    let c = cluster("alpha")
        .node("a", "A100", 80 * GIB, 8)
        .node_free("h", "H100", 80 * GIB, 16, 2)
        .price("A100", "1.20")
        .price("H100", "2.40");
    for models in [["A100", "H100"], ["H100", "A100"]] {
        let r = reason(job("a/j").models(&models).gpus(16), c.clone());
        assert_eq!(r.to_string(), "2 free GPUs, needs 16", "{models:?}");
    }
}

#[test]
fn the_explanation_of_a_pool_of_small_nodes_says_no_node_is_big_enough() {
    // The benchmark's pool: 8-GPU nodes only, some busy; one cluster with a busy 16-GPU node.
    let clusters = [
        cluster("mixed-a")
            .node_free("n1", "H100", 80 * GIB, 8, 0)
            .node_free("n2", "H100", 80 * GIB, 8, 0)
            .price("H100", "2.40")
            .build(),
        cluster("mixed-b")
            .node_free("n1", "H100", 80 * GIB, 8, 4)
            .node("n2", "H100", 80 * GIB, 8)
            .node("n3", "H100", 80 * GIB, 8)
            .price("H100", "2.40")
            .build(),
        cluster("mixed-c")
            .node_free("big", "H100", 80 * GIB, 16, 8)
            .price("H100", "2.40")
            .build(),
    ];
    let Decision::NoFit(reasons) = decide(job("a/j").gpus(16), &clusters) else {
        panic!("nothing should fit");
    };
    assert_eq!(
        crate::explain(&reasons),
        "0/3 clusters fit: mixed-a: no node has 16 H100 GPUs (largest: 8); \
         mixed-b: no node has 16 H100 GPUs (largest: 8); mixed-c: 8 free GPUs, needs 16"
    );
}

#[test]
fn a_job_that_opts_in_goes_to_an_unverified_member_but_never_to_a_failed_one() {
    use crate::{VerificationIssue, VerificationState, explain};
    let probation = || {
        h100("beta").verification(VerificationState::Unverified {
            message: "on probation (joined by stake, no challenge passed yet)".into(),
        })
    };
    let failed = h100("gamma")
        .price("H100", "0.10")
        .verification(VerificationState::Failed {
            message: "digest mismatch".into(),
        });
    // Without opt-in the probation member is blocked with its verification reason, also when it
    // is the only member, and the explanation quotes its message.
    let Decision::NoFit(reasons) = decide(job("a/j"), &[probation().build()]) else {
        panic!("a job without opt-in must not go to a member on probation")
    };
    assert_eq!(
        reasons.to_vec(),
        vec![(
            "beta".to_string(),
            Reason::Verification(VerificationIssue::Unverified {
                message: "on probation (joined by stake, no challenge passed yet)".into()
            })
        )]
    );
    assert_eq!(
        explain(&reasons),
        "0/1 clusters fit: beta: GPUs not verified yet: on probation (joined by stake, no challenge passed yet)"
    );
    // With opt-in it is placed there; the failed member stays out even though it is cheaper.
    match decide(
        job("a/j").allow_unverified(),
        &[probation().build(), failed.clone().build()],
    ) {
        Decision::Place(a) => assert_eq!(a.cluster, "beta"),
        other => panic!("expected beta, got {other:?}"),
    }
    let Decision::NoFit(reasons) = decide(job("a/j").allow_unverified(), &[failed.build()]) else {
        panic!("opting in must not accept a failed member")
    };
    assert!(explain(&reasons).contains("failed GPU verification"));
    // Opting in is not a gate of its own: the job's other choices still apply to the member.
    let r = reason(
        job("a/j").allow_unverified().exclude(&["beta"]),
        probation(),
    );
    assert_eq!(r, Reason::Excluded);
    // A verified member is still preferred only by price: opt-in widens the choice, no more.
    match decide(
        job("a/j").allow_unverified(),
        &[
            probation().build(),
            h100("alpha")
                .price("H100", "9.00")
                .verification(VerificationState::Passed)
                .build(),
        ],
    ) {
        Decision::Place(a) => assert_eq!(a.cluster, "beta"),
        other => panic!("expected the cheaper beta, got {other:?}"),
    }
}
