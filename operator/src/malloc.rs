//! Giving freed heap memory back to the system while the process runs (ADR 0035, amended).
//!
//! The operator keeps glibc's allocator (ADR 0035). glibc returns a heap's pages to the system
//! only from its top; pages inside a heap whose chunks were all freed stay resident until
//! `malloc_trim` releases them. The hub's caches replace objects on every watch event, from
//! several threads, so such pages add up: a profile of the scale run (1,000 members, 10,000
//! jobs) showed a live heap of 84.6 MiB at its peak in a process with about 155 MiB resident, and
//! one `malloc_trim(0)` on a hub at 10,000 jobs released 15.6 MiB. [`trim_every`] calls it at
//! a fixed interval.

// `malloc_trim` is a C function: the one call below is the only unsafe code here.
#![allow(unsafe_code)]

use std::time::Duration;

/// Calls [`trim`] every `every` for as long as the process runs; returns at once when `every` is
/// zero (trimming off).
pub async fn trim_every(every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing has been freed yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        let released = trim();
        tracing::trace!(released, "malloc_trim");
    }
}

/// Releases the resident pages of free heap memory in every arena to the system; whether any was
/// released. Always false where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes each arena's lock itself and only gives back pages that hold no
    // live chunk; glibc documents it as safe to call from any thread at any time (MT-Safe).
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Releases the resident pages of free heap memory in every arena to the system; whether any was
/// released. Always false where the C library is not glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_between_live_chunks_is_given_back() {
        // 8 MiB in 32 KiB chunks (below glibc's mmap threshold, so they come from an arena's
        // heap), a live chunk after them so the heap's top cannot shrink, then every chunk freed:
        // the free space sits inside the heap, where only malloc_trim releases its pages.
        let chunks: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 32 * 1024]).collect();
        let pin = Box::new([1u8; 64]);
        drop(chunks);
        assert!(trim(), "malloc_trim released nothing");
        assert_eq!(pin[0], 1);
    }

    #[tokio::test]
    async fn a_zero_interval_turns_trimming_off() {
        // Returns at once instead of looping.
        trim_every(Duration::ZERO).await;
    }
}
