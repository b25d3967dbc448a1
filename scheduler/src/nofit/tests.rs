//! The compact no-fit: every reason read back from the roster and the job's terms, what is stored
//! per cluster, and what the signature does and does not follow.

use super::*;
use crate::input::{BondState, ClusterState, JobRequest, Policy};
use crate::scheduler::{Scheduler, schedule};
use crate::testing::{ClusterBuilder, cluster, job, tokens};
use crate::{Decision, explain};

const GIB: u64 = 1024;

fn h100(name: &str, free: u32) -> ClusterBuilder {
    cluster(name)
        .node_free("n1", "H100", 80 * GIB, 8, free)
        .price("H100", "2.40")
}

fn no_fit(j: &JobRequest, clusters: &[ClusterState]) -> NoFit {
    match schedule(j, clusters, &[], &Policy::default()).unwrap() {
        Decision::NoFit(n) => n,
        Decision::Place(a) => panic!("placed on {}", a.cluster),
        Decision::OverQuota(q) => panic!("{q}"),
    }
}

/// One cluster for every reason, in name order.
fn every_reason() -> Vec<ClusterState> {
    vec![
        h100("a-not-ready", 8).not_ready().build(),
        h100("b-no-inventory", 8).no_inventory().build(),
        h100("c-cordoned", 8).cordoned().build(),
        h100("d-bond", 8)
            .bond(BondState::Insufficient {
                bonded: tokens("50"),
                required: tokens("100"),
            })
            .build(),
        h100("e-no-wallet", 8).bond(BondState::NoWallet).build(),
        h100("f-bond-unknown", 8).bond(BondState::Unknown).build(),
        h100("g-excluded", 8).build(),
        h100("h-failed", 8).build(),
        h100("i-region", 8).region("us-east").build(),
        cluster("j-no-model")
            .node("n1", "L4", 24 * GIB, 4)
            .price("L4", "0.50")
            .build(),
        cluster("k-no-price")
            .node("n1", "H100", 80 * GIB, 8)
            .build(),
        cluster("l-memory")
            .node("n1", "H100", 40 * GIB, 8)
            .price("H100", "2.40")
            .build(),
        h100("m-price", 8).price("H100", "9.00").build(),
        h100("n-capacity", 2).build(),
        cluster("o-node-size")
            .node_free("n1", "H100", 80 * GIB, 8, 2)
            .node_free("n2", "H100", 80 * GIB, 8, 2)
            .node_free("n3", "H100", 80 * GIB, 8, 2)
            .price("H100", "2.40")
            .build(),
        cluster("p-fragmented")
            .node_free("n1", "H100", 80 * GIB, 8, 4)
            .node_free("n2", "H100", 80 * GIB, 8, 2)
            .price("H100", "2.40")
            .build(),
    ]
}

fn picky_job() -> JobRequest {
    job("ns/j")
        .replicas(2)
        .gpus(3)
        .models(&["H100"])
        .regions(&["eu-west"])
        .max_price("3.00")
        .min_memory_gib(80)
        .exclude(&["g-excluded"])
        .failed_on(&["h-failed"])
        .build()
}

#[test]
fn every_reason_is_read_back_from_the_roster_and_the_jobs_terms() {
    let n = no_fit(&picky_job(), &every_reason());
    let text: Vec<String> = n.iter().map(|(c, r)| format!("{c}: {r}")).collect();
    assert_eq!(
        text,
        [
            "a-not-ready: not ready (heartbeat expired)",
            "b-no-inventory: no inventory reported yet",
            "c-cordoned: cordoned",
            "d-bond: bond 50.00 < required 100.00",
            "e-no-wallet: no wallet for the bond",
            "f-bond-unknown: bond not read from chain yet",
            "g-excluded: excluded by the job",
            "h-failed: an earlier attempt failed here",
            "i-region: region us-east not accepted",
            "j-no-model: no H100 (has L4)",
            "k-no-price: no price for H100",
            "l-memory: H100 has 40 GiB per GPU, needs 80 GiB",
            "m-price: price 9.00 > max 3.00",
            "n-capacity: 2 free GPUs, needs 6",
            "o-node-size: largest node has 2 free GPUs, a replica needs 3",
            "p-fragmented: free GPUs fit 1 of 2 replicas of 3 GPUs",
        ]
    );
    let kinds: Vec<ReasonKind> = n.kinds().map(|(_, k)| k).collect();
    let from_reasons: Vec<ReasonKind> = n.iter().map(|(_, r)| r.kind()).collect();
    assert_eq!(kinds, from_reasons);
    assert!(
        kinds.windows(2).all(|w| w[0] < w[1]),
        "one of each, in filter order"
    );
    for (i, (name, reason)) in n.iter().enumerate() {
        assert_eq!(n.get(i), Some((name, reason)));
    }
    assert_eq!(n.get(n.len()), None);
}

#[test]
fn only_clusters_whose_reason_depends_on_free_gpus_are_stored() {
    let n = no_fit(&picky_job(), &every_reason());
    let stored: Vec<&str> = n
        .misses
        .iter()
        .map(|(pos, _)| n.roster.name(*pos as usize))
        .collect();
    // Open, in an accepted region, not excluded, and pricing the job's model.
    assert_eq!(
        stored,
        [
            "l-memory",
            "m-price",
            "n-capacity",
            "o-node-size",
            "p-fragmented"
        ]
    );
    assert_eq!(std::mem::size_of::<(u32, Reject)>(), 24);
}

#[test]
fn with_several_models_a_cluster_is_stored_once_with_its_most_informative_reason() {
    let clusters = [cluster("alpha")
        .node_free("n1", "H100", 80 * GIB, 8, 1)
        .node_free("n2", "A100", 80 * GIB, 8, 8)
        .price("H100", "2.40")
        .price("A100", "9.00")
        .build()];
    let j = job("ns/j")
        .gpus(4)
        .models(&["A100", "H100"])
        .max_price("3.00")
        .build();
    let n = no_fit(&j, &clusters);
    assert_eq!(n.misses.len(), 1);
    assert_eq!(
        n.to_vec(),
        [(
            "alpha".to_string(),
            Reason::Capacity {
                model: "H100".into(),
                free: 1,
                need: 4
            }
        )]
    );
}

#[test]
fn a_no_fit_outlives_its_scheduler_and_the_snapshot() {
    let n = {
        let clusters = vec![h100("alpha", 2).build()];
        let scheduler = Scheduler::new(&clusters, &[], &Policy::default()).unwrap();
        match scheduler.evaluate(&job("ns/j").gpus(8).build()).unwrap() {
            Decision::NoFit(n) => n,
            Decision::Place(_) | Decision::OverQuota(_) => panic!("must not fit"),
        }
    };
    assert_eq!(explain(&n), "0/1 clusters fit: alpha: 2 free GPUs, needs 8");
}

#[test]
fn equal_reasons_are_equal_whichever_pass_made_them() {
    let j = picky_job();
    let a = no_fit(&j, &every_reason());
    let mut reversed = every_reason();
    reversed.reverse();
    let b = no_fit(&j, &reversed);
    assert!(!Arc::ptr_eq(&a.roster, &b.roster));
    assert_eq!(a, b);
    let c = no_fit(&j, &every_reason()[1..]);
    assert_ne!(a, c);
}

#[test]
fn the_signature_follows_clusters_and_kinds_but_not_the_numbers() {
    let j = job("ns/j").gpus(8).build();
    let sig = |clusters: &[ClusterState]| no_fit(&j, clusters).signature();
    let base = sig(&[h100("alpha", 2).build(), h100("beta", 4).build()]);
    // Other free counts, another price: the same kinds, the same signature.
    assert_eq!(
        base,
        sig(&[
            h100("alpha", 7).build(),
            h100("beta", 0).price("H100", "1.00").build()
        ])
    );
    // A cluster changes kind, or another cluster stands where one was.
    assert_ne!(
        base,
        sig(&[h100("alpha", 2).build(), h100("beta", 4).cordoned().build()])
    );
    assert_ne!(
        base,
        sig(&[h100("alpha", 2).build(), h100("gamma", 4).build()])
    );
    assert_ne!(base, sig(&[h100("alpha", 2).build()]));
    // Kinds swapped between two clusters.
    let ab = sig(&[h100("alpha", 2).cordoned().build(), h100("beta", 4).build()]);
    let ba = sig(&[h100("alpha", 2).build(), h100("beta", 4).cordoned().build()]);
    assert_ne!(ab, ba);
    // No clusters at all has a signature too, and it is stable.
    assert_eq!(sig(&[]), sig(&[]));
    assert_ne!(sig(&[]), base);
    assert_eq!(sig(&[]).to_string().len(), 16);
}
