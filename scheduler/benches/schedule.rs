//! Throughput of `schedule_batch`: a burst of pending jobs against a federation of member clusters,
//! reported by criterion as decisions per second (`thrpt`, one element = one job decided).
//!
//! The workload is synthetic but shaped like a real pool and fixed by a seed, so runs compare:
//! clusters with 4–16 nodes of one or two GPU models (H100, A100 40/80 GiB, L40S, L4, RTX4090),
//! prices spread ±30 % around a per-model base, six regions, and a few percent of clusters not
//! ready, cordoned, short of bond or without an inventory. Jobs ask for 1–4 replicas of 1–8 GPUs,
//! one or two models, sometimes a price cap, regions, an exclusion or 80 GiB of memory; about 3 %
//! ask for a model nobody has. The batch is sized so that free GPUs run out part-way, so a real
//! share of decisions are `NoFit` with a reason for every cluster, the expensive kind.
//!
//! Sizes with the same jobs-per-cluster density show how the cost of one decision grows with the
//! pool. `schedule_batch/clusters/N`: 1,000 jobs on 100 clusters and 10,000 jobs on 1,000 clusters,
//! all decisions returned together. `place_each/clusters/N`: 10,000 jobs on 1,000 clusters and
//! 100,000 jobs on 10,000 clusters, decided one after another with `Scheduler::place` in
//! `schedule_batch`'s order, each decision dropped once made, as a consumer that writes each one out
//! would. The largest size is not run through `schedule_batch`, which holds every decision at once
//! (~0.7 GB of compact `NoFit`s there) and would add its set-up to every run.
//!
//! `read_no_fit/{explain,signature}/N`: what the hub pays afterwards for each waiting job, one
//! `explain` or one `NoFit::signature` (one element = one `NoFit` read), over every 20th no-fit
//! decision of the `place_each` batch of N clusters, so most come from the full end of the batch.
//!
//! Run: `cargo bench -p gpufed-scheduler` (plots are off; criterion writes only its JSON estimates
//! under `target/criterion`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use gpufed_scheduler::{
    BondState, ClusterState, Decision, JobRequest, NoFit, NodeState, ONE_TOKEN, Policy, Scheduler,
    Strategy, explain, schedule_batch,
};

/// SplitMix64: a tiny deterministic generator, so the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const REGIONS: [&str; 6] = [
    "eu-west",
    "eu-central",
    "us-east",
    "us-west",
    "ap-south",
    "ap-northeast",
];
/// (model, memory GiB, GPUs per node, base price in cents per GPU-hour)
const MODELS: [(&str, u64, u32, u128); 6] = [
    ("H100", 80, 8, 240),
    ("A100", 80, 8, 150),
    ("A100", 40, 8, 110),
    ("L40S", 48, 8, 100),
    ("L4", 24, 4, 50),
    ("RTX4090", 24, 4, 40),
];

fn cents(c: u128) -> u128 {
    c * ONE_TOKEN / 100
}

fn clusters(n: usize, rng: &mut Rng) -> Vec<ClusterState> {
    (0..n)
        .map(|i| {
            let mut prices = BTreeMap::new();
            let mut nodes = Vec::new();
            for _ in 0..(1 + rng.below(2)) {
                let &(model, gib, gpus, base) = rng.pick(&MODELS);
                if !rng.chance(5) {
                    let spread = base * 30 / 100;
                    let price = base - spread + u128::from(rng.below(2 * spread as u64 + 1));
                    prices.insert(model.to_string(), cents(price));
                }
                for _ in 0..(4 + rng.below(13)) {
                    let used = match rng.below(4) {
                        0 => 0,
                        1 => u32::try_from(rng.below(u64::from(gpus) + 1)).unwrap(),
                        _ => u32::try_from(rng.below(u64::from(gpus) / 2 + 1)).unwrap(),
                    };
                    nodes.push(NodeState {
                        name: format!("node-{:03}", nodes.len()),
                        model: model.into(),
                        gpu_memory_mib: gib * 1024,
                        allocatable_gpus: gpus,
                        free_gpus: gpus - used,
                        unhealthy_gpus: 0,
                        ready: !rng.chance(2),
                        utilization_percent: 0,
                    });
                }
            }
            let bond = match rng.below(100) {
                0..2 => BondState::Insufficient {
                    bonded: cents(5_000),
                    required: cents(10_000),
                },
                2..50 => BondState::Eligible,
                _ => BondState::NotRequired,
            };
            ClusterState {
                name: format!("provider-{i:04}"),
                region: rng.pick(&REGIONS).to_string(),
                ready: !rng.chance(3),
                cordoned: rng.chance(2),
                bond,
                prices,
                durations: Default::default(),
                nodes,
                has_inventory: !rng.chance(1),
                verification: Default::default(),
                below_floor: None,
            }
        })
        .collect()
}

fn jobs(n: usize, cluster_count: usize, rng: &mut Rng) -> Vec<JobRequest> {
    (0..n)
        .map(|i| {
            let mut models = vec![rng.pick(&MODELS).0.to_string()];
            if rng.chance(30) {
                models.push(rng.pick(&MODELS).0.to_string());
            }
            if rng.chance(3) {
                models = vec!["B200".to_string()];
            }
            let base = MODELS
                .iter()
                .find(|m| m.0 == models[0])
                .map_or(200, |m| m.3);
            let replicas = match rng.below(10) {
                0..7 => 1,
                7..9 => 2,
                _ => 4,
            };
            JobRequest {
                key: format!("team-{}/job-{i:05}", i % 40),
                replicas,
                gpus_per_replica: *rng.pick(&[1, 1, 2, 4, 8]),
                models,
                min_gpu_memory_mib: if rng.chance(3) { 80 * 1024 } else { 0 },
                max_price: rng
                    .chance(30)
                    .then(|| cents(base * (80 + u128::from(rng.below(40))) / 100)),
                regions: if rng.chance(25) {
                    (0..1 + rng.below(2))
                        .map(|_| rng.pick(&REGIONS).to_string())
                        .collect()
                } else {
                    Vec::new()
                },
                exclude: if rng.chance(5) {
                    vec![format!("provider-{:04}", rng.below(cluster_count as u64))]
                } else {
                    Vec::new()
                },
                failed_on: Vec::new(),
                allow_unverified: false,
                priority: *rng.pick(&[-1, 0, 0, 0, 1]),
                order: i as u64,
                max_duration_secs: 3600,
                max_spend: None,
            }
        })
        .collect()
}

/// The pool and batch of one size, fixed by the seed.
fn workload(cluster_count: usize, job_count: usize) -> (Vec<ClusterState>, Vec<JobRequest>) {
    let mut rng = Rng(42);
    let snapshot = clusters(cluster_count, &mut rng);
    let batch = jobs(job_count, cluster_count, &mut rng);
    (snapshot, batch)
}

/// Decides `batch` job by job in `schedule_batch`'s order, dropping each decision; returns how
/// many were placed.
fn place_each(batch: &[&JobRequest], snapshot: &[ClusterState], policy: &Policy) -> usize {
    let mut scheduler = Scheduler::new(snapshot, &[], policy).unwrap();
    batch
        .iter()
        .filter(|job| matches!(scheduler.place(job).unwrap(), Decision::Place(_)))
        .count()
}

/// Every 20th no-fit decision of `batch`, decided as `place_each` does.
fn sample_no_fits(batch: &[&JobRequest], snapshot: &[ClusterState], policy: &Policy) -> Vec<NoFit> {
    let mut scheduler = Scheduler::new(snapshot, &[], policy).unwrap();
    let mut no_fits = Vec::new();
    let mut seen = 0;
    for job in batch {
        if let Decision::NoFit(no_fit) = scheduler.place(job).unwrap() {
            if seen % 20 == 0 {
                no_fits.push(no_fit);
            }
            seen += 1;
        }
    }
    no_fits
}

/// `batch` in `schedule_batch`'s order.
fn in_order(batch: &[JobRequest]) -> Vec<&JobRequest> {
    let mut order: Vec<&JobRequest> = batch.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.order.cmp(&b.order))
            .then(a.key.cmp(&b.key))
    });
    order
}

fn describe(snapshot: &[ClusterState], job_count: usize, placed: usize) {
    let gpus: u64 = snapshot
        .iter()
        .flat_map(|c| &c.nodes)
        .map(|n| u64::from(n.offered_gpus()))
        .sum();
    println!(
        "{} clusters ({gpus} free GPUs), {job_count} jobs: {placed} placed, {} no fit",
        snapshot.len(),
        job_count - placed
    );
}

const POLICY: Policy = Policy {
    strategy: Strategy::CheapestFit,
};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_batch");
    group.sampling_mode(SamplingMode::Flat);
    for (cluster_count, job_count) in [(100, 1_000), (1_000, 10_000)] {
        let (snapshot, batch) = workload(cluster_count, job_count);
        let policy = POLICY;
        let out = schedule_batch(&batch, &snapshot, &[], &policy).unwrap();
        let placed = out
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Place(_)))
            .count();
        describe(&snapshot, job_count, placed);
        group.throughput(Throughput::Elements(job_count as u64));
        group.bench_with_input(
            BenchmarkId::new("clusters", cluster_count),
            &(snapshot, batch),
            |b, (snapshot, batch)| {
                b.iter(|| schedule_batch(black_box(batch), black_box(snapshot), &[], &policy))
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("place_each");
    group.sampling_mode(SamplingMode::Flat);
    for (cluster_count, job_count) in [(1_000, 10_000), (10_000, 100_000)] {
        let (snapshot, batch) = workload(cluster_count, job_count);
        let order = in_order(&batch);
        describe(&snapshot, job_count, place_each(&order, &snapshot, &POLICY));
        group.throughput(Throughput::Elements(job_count as u64));
        group.bench_with_input(
            BenchmarkId::new("clusters", cluster_count),
            &(snapshot, order),
            |b, (snapshot, order)| b.iter(|| place_each(black_box(order), snapshot, &POLICY)),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("read_no_fit");
    group.sampling_mode(SamplingMode::Flat);
    for (cluster_count, job_count) in [(1_000, 10_000), (10_000, 100_000)] {
        let (snapshot, batch) = workload(cluster_count, job_count);
        let no_fits = sample_no_fits(&in_order(&batch), &snapshot, &POLICY);
        println!(
            "{cluster_count} clusters: {} no-fit decisions read",
            no_fits.len()
        );
        group.throughput(Throughput::Elements(no_fits.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("explain", cluster_count),
            &no_fits,
            |b, no_fits| {
                b.iter(|| {
                    no_fits
                        .iter()
                        .map(|n| explain(black_box(n)).len())
                        .sum::<usize>()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("signature", cluster_count),
            &no_fits,
            |b, no_fits| {
                b.iter(|| {
                    no_fits
                        .iter()
                        .fold(0u64, |acc, n| acc ^ black_box(n).signature().0)
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
