//! proptest strategies for snapshots, reservations and job batches, and a seeded shuffle.
//!
//! Sizes are small (a handful of clusters with a handful of nodes) so that collisions are common:
//! jobs compete for the same GPUs, ties in price and free counts happen, and every filter fires.

use std::collections::BTreeMap;

use gpufed_scheduler::testing::tokens;
use gpufed_scheduler::{
    BondState, ClusterState, DurationLimits, JobRequest, NodeState, Reservation, VerificationState,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;

pub const MODELS: [&str; 3] = ["H100", "A100", "L4"];
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const GIB: u64 = 1024;

fn node(i: usize) -> impl Strategy<Value = NodeState> {
    (
        0..MODELS.len(),
        prop::bool::ANY,
        0u32..=8,
        0u32..=9,
        prop::sample::select(vec![0u32, 0, 0, 1, 3]),
        prop::bool::weighted(0.9),
    )
        .prop_map(move |(m, big, allocatable, free, unhealthy, ready)| {
            let model = MODELS[m];
            let gpu_memory_mib = match model {
                "A100" if !big => 40 * GIB,
                // Two sizes of one model, both too small for some jobs: a memory reason must
                // quote the largest.
                "L4" if !big => 23_034,
                "L4" => 24 * GIB,
                _ => 80 * GIB,
            };
            NodeState {
                name: format!("n{i}"),
                model: model.into(),
                gpu_memory_mib,
                allocatable_gpus: allocatable,
                // Sometimes more than allocatable: the core must clamp it.
                free_gpus: free.min(allocatable + 1),
                unhealthy_gpus: unhealthy,
                ready,
                utilization_percent: 0,
            }
        })
}

fn bond() -> impl Strategy<Value = BondState> {
    prop_oneof![
        6 => Just(BondState::NotRequired),
        3 => Just(BondState::Eligible),
        1 => Just(BondState::Insufficient { bonded: tokens("50"), required: tokens("100") }),
        1 => Just(BondState::NoWallet),
        1 => Just(BondState::Unknown),
    ]
}

fn verification() -> impl Strategy<Value = VerificationState> {
    prop_oneof![
        6 => Just(VerificationState::NotRequired),
        2 => Just(VerificationState::Passed),
        1 => Just(VerificationState::Unverified { message: "challenge pending".into() }),
        1 => Just(VerificationState::Failed { message: "wrong digest".into() }),
    ]
}

fn prices() -> impl Strategy<Value = BTreeMap<String, u128>> {
    vec(prop::option::weighted(0.8, 10u128..=40), MODELS.len()).prop_map(|p| {
        MODELS
            .iter()
            .zip(p)
            .filter_map(|(m, tenths)| tenths.map(|t| (m.to_string(), t * tokens("0.1"))))
            .collect()
    })
}

/// Job lengths some models are offered for (most take any).
fn durations() -> impl Strategy<Value = BTreeMap<String, DurationLimits>> {
    let limits = prop::sample::select(vec![
        DurationLimits {
            min_secs: 0,
            max_secs: 1800,
        },
        DurationLimits {
            min_secs: 600,
            max_secs: u64::MAX,
        },
        DurationLimits {
            min_secs: 3600,
            max_secs: 7200,
        },
    ]);
    vec(prop::option::weighted(0.2, limits), MODELS.len()).prop_map(|d| {
        MODELS
            .iter()
            .zip(d)
            .filter_map(|(m, l)| l.map(|l| (m.to_string(), l)))
            .collect()
    })
}

fn cluster(i: usize) -> impl Strategy<Value = ClusterState> {
    (
        0..REGIONS.len(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.95),
        bond(),
        prices(),
        (0usize..=5).prop_flat_map(|n| (0..n).map(node).collect::<Vec<_>>()),
        verification(),
        prop::option::weighted(0.1, Just("uptime 80% < 95%".to_string())),
        durations(),
    )
        .prop_map(
            move |(
                r,
                ready,
                cordoned,
                has_inventory,
                bond,
                prices,
                nodes,
                verification,
                below_floor,
                durations,
            )| {
                ClusterState {
                    name: format!("c{i}"),
                    region: REGIONS[r].into(),
                    ready,
                    cordoned,
                    bond,
                    prices,
                    durations,
                    nodes,
                    has_inventory,
                    verification,
                    below_floor,
                }
            },
        )
}

/// 0 to 6 clusters named `c0`, `c1`, …
pub fn snapshot() -> impl Strategy<Value = Vec<ClusterState>> {
    (0usize..=6).prop_flat_map(|n| (0..n).map(cluster).collect::<Vec<_>>())
}

/// 0 to 40 clusters named `c0`, `c1`, …: enough for several clusters per (model, region) list.
pub fn wide_snapshot() -> impl Strategy<Value = Vec<ClusterState>> {
    (0usize..=40).prop_flat_map(|n| (0..n).map(cluster).collect::<Vec<_>>())
}

/// Reservations on mostly existing, sometimes unknown, clusters and nodes.
pub fn reservations() -> impl Strategy<Value = Vec<Reservation>> {
    vec((0usize..8, 0usize..7, 0u32..=6), 0..6).prop_map(|rs| {
        rs.into_iter()
            .map(|(c, n, gpus)| Reservation {
                cluster: format!("c{c}"),
                node: format!("n{n}"),
                gpus,
            })
            .collect()
    })
}

fn names(prefix: &'static str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn job(i: usize) -> impl Strategy<Value = JobRequest> {
    let models: Vec<&str> = MODELS.iter().copied().chain(["B200"]).collect();
    (
        1u32..=3,
        prop::sample::select(vec![1u32, 2, 3, 4, 8]),
        subsequence(models, 1..=3).prop_shuffle(),
        prop::sample::select(vec![0u64, 0, 40 * GIB, 80 * GIB]),
        prop::option::weighted(0.4, 10u128..=40),
        subsequence(REGIONS.to_vec(), 0..=2),
        subsequence(names("c", 6), 0..=1),
        subsequence(names("c", 6), 0..=1),
        -1i32..=1,
        0u64..4,
        prop::bool::weighted(0.3),
        prop::sample::select(vec![600u64, 3600, 3600, 10800]),
    )
        .prop_map(
            move |(
                replicas,
                gpus,
                models,
                mem,
                max,
                regions,
                exclude,
                failed_on,
                priority,
                order,
                allow_unverified,
                max_duration_secs,
            )| {
                JobRequest {
                    key: format!("ns/j{i}"),
                    replicas,
                    gpus_per_replica: gpus,
                    models: models.into_iter().map(String::from).collect(),
                    min_gpu_memory_mib: mem,
                    max_price: max.map(|t| t * tokens("0.1")),
                    regions: regions.into_iter().map(String::from).collect(),
                    exclude,
                    failed_on,
                    allow_unverified,
                    priority,
                    order,
                    max_duration_secs,
                    max_spend: None,
                }
            },
        )
}

/// 1 to 8 jobs with unique keys.
pub fn batch() -> impl Strategy<Value = Vec<JobRequest>> {
    (1usize..=8).prop_flat_map(|n| (0..n).map(job).collect::<Vec<_>>())
}

/// Up to 4 distinct jobs, each repeated 1 to 8 times under its own key, in a random order: copies
/// with the same terms decided one after another, or with other jobs between them that may take
/// GPUs from the clusters the copies wait for, as the waiting jobs of a full pool are. The
/// distinct jobs are one job, a variant of it that differs only in size (so they compete for the
/// same clusters), one that differs only in the clusters it excludes and failed on (so it shares
/// their reasons but for those), and a job of its own.
pub fn repeated_batch() -> impl Strategy<Value = Vec<JobRequest>> {
    (
        job(0),
        prop::collection::vec((1u32..=3, prop::sample::select(vec![1u32, 2, 4, 8])), 0..=1),
        prop::collection::vec(
            (
                subsequence(names("c", 6), 0..=2),
                subsequence(names("c", 6), 0..=2),
            ),
            0..=1,
        ),
        prop::collection::vec(job(1), 0..=1),
        prop::collection::vec(1usize..=8, 4),
        any::<u64>(),
    )
        .prop_map(|(base, sizes, blocks, other, copies, mut seed)| {
            let sized = sizes.into_iter().map(|(replicas, gpus)| JobRequest {
                key: format!("{}-sized", base.key),
                replicas,
                gpus_per_replica: gpus,
                ..base.clone()
            });
            let blocking = blocks.into_iter().map(|(exclude, failed_on)| JobRequest {
                key: format!("{}-blocking", base.key),
                exclude,
                failed_on,
                ..base.clone()
            });
            let variants = sized.chain(blocking);
            let distinct: Vec<JobRequest> = std::iter::once(base.clone())
                .chain(variants)
                .chain(other)
                .collect();
            let mut out: Vec<JobRequest> = distinct
                .iter()
                .zip(copies)
                .flat_map(|(j, n)| {
                    (0..n).map(move |c| JobRequest {
                        key: format!("{}-{c}", j.key),
                        ..j.clone()
                    })
                })
                .collect();
            shuffle(&mut out, &mut seed);
            // Queued in the shuffled order (within a priority), so copies are not decided in a
            // row by key.
            for (order, j) in (0u64..).zip(out.iter_mut()) {
                j.order = order;
            }
            out
        })
}

/// 1 to 40 jobs with unique keys: enough to fill a wide snapshot part-way.
pub fn long_batch() -> impl Strategy<Value = Vec<JobRequest>> {
    (1usize..=40).prop_flat_map(|n| (0..n).map(job).collect::<Vec<_>>())
}

/// Shuffles `items` in place, deterministically from `seed` (a small linear congruential generator).
pub fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((*seed >> 33) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The same snapshot with clusters, each cluster's nodes and its price map order shuffled.
pub fn shuffled(clusters: &[ClusterState], mut seed: u64) -> Vec<ClusterState> {
    let mut out = clusters.to_vec();
    shuffle(&mut out, &mut seed);
    for c in &mut out {
        shuffle(&mut c.nodes, &mut seed);
    }
    out
}
