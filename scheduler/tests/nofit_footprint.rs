//! What the decisions of a pass hold for jobs that fit nowhere, at 1,000 clusters: each no-fit
//! decision keeps one 24-byte code per cluster whose reason depends on free GPUs (`nofit.rs`), so
//! a list of 24,000 bytes here. Jobs with the same terms but for the clusters they block, decided
//! at the same free GPU counts, share one list (`scheduler.rs`, `NoFitCache`); before they did
//! not, and a hub with 8,772 jobs waiting unplaced held 206.7 MiB of such lists at once (heaptrack
//! of the scale run, ADR 0042).
//!
//! Counted with dhat's heap statistics: the bytes asked of the allocator.

#![allow(clippy::expect_used)]

use gpufed_scheduler::testing::{cluster, job};
use gpufed_scheduler::{ClusterState, Decision, Policy, schedule_batch};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CLUSTERS: usize = 1_000;

/// Heap bytes held by what `make` returns, per item of it.
fn held_per_item<T>(items: usize, make: impl FnOnce() -> T) -> (T, usize) {
    let before = dhat::HeapStats::get().curr_bytes;
    let out = make();
    let after = dhat::HeapStats::get().curr_bytes;
    (out, (after - before) / items)
}

#[test]
fn waiting_jobs_of_a_full_pool_share_their_reasons() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // A full pool: every member's 8 H100 taken.
    let clusters: Vec<ClusterState> = (0..CLUSTERS)
        .map(|i| {
            cluster(&format!("member-{i:04}"))
                .price("H100", "1.00")
                .node_free("n0", "H100", 80 * 1024, 8, 0)
                .build()
        })
        .collect();
    // Two shapes, interleaved in the queue, as a pool's waiting jobs are; every third job lost an
    // attempt on a member of its own, as when members' heartbeats expire.
    let jobs: Vec<_> = (0..2_000u64)
        .map(|i| {
            let lost = format!("member-{:04}", i as usize % CLUSTERS);
            let j = job(&format!("bench/job-{i:05}"))
                .gpus(if i % 2 == 0 { 1 } else { 8 })
                .order(i);
            if i % 3 == 0 {
                j.failed_on(&[lost.as_str()]).build()
            } else {
                j.build()
            }
        })
        .collect();
    let (out, per_job) = held_per_item(jobs.len(), || {
        schedule_batch(&jobs, &clusters, &[], &Policy::default()).expect("a valid batch")
    });
    let no_fits: Vec<_> = out
        .iter()
        .filter_map(|(_, d)| match d {
            Decision::NoFit(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(no_fits.len(), jobs.len(), "every job waits");
    assert!(no_fits.iter().all(|n| n.len() == CLUSTERS));
    let list = CLUSTERS * 24;
    println!(
        "{per_job} bytes held per waiting job (the batch's result included); one unshared list of reasons: {list} bytes"
    );
    // Measured when written: 521 bytes per job; 24,513 with every list of reasons its own.
    assert!(
        per_job < list / 20,
        "{per_job} bytes per waiting job: are no-fit reasons shared again?"
    );
}
