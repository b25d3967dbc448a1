//! Cached copies of jobs the apiserver has already shown to be stale.
//!
//! The job controller learns that its cached copy of a job is stale in two ways: a status write
//! guarded by the copy's resourceVersion answers 409, or the read of the job's status it makes
//! before handing a member a Placement shows the job has moved on. Either way the cache will
//! catch up through the watch, and the watch wakes the job again when it does. Until then every
//! reconcile of the same cached copy would compute the same change and fail the same way: on an
//! apiserver whose watch lagged by a minute (a 10,000-pod run) that was a GET per stale job per
//! second (488/s, about the hub's whole client budget) and a conflicting status write every
//! 200 ms (55 conflicts/s). [`StaleCopies`] remembers the resourceVersion found stale, and the
//! controller does nothing with that copy until a newer one arrives or [`RECHECK_AFTER`] has
//! passed (in case a watch event was lost).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a copy found stale is trusted to be stale before the apiserver is asked again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);

/// Entries older than this are dropped when another is recorded (jobs deleted while stale).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Job key → (resourceVersion of the cached copy found stale, when).
#[derive(Default)]
pub struct StaleCopies(Mutex<HashMap<String, (String, Instant)>>);

impl StaleCopies {
    /// Whether the cached copy of `job` at `resource_version` was found stale less than
    /// [`RECHECK_AFTER`] before `now`, so asking the apiserver again would tell nothing new.
    /// A newer cached copy forgets the entry.
    pub fn known(&self, job: &str, resource_version: &str, now: Instant) -> bool {
        let mut seen = self.seen();
        match seen.get(job) {
            Some((rv, at)) if rv == resource_version => {
                now.saturating_duration_since(*at) < RECHECK_AFTER
            }
            Some(_) => {
                seen.remove(job);
                false
            }
            None => false,
        }
    }

    /// Records that the cached copy of `job` at `resource_version` was found stale at `now`.
    pub fn record(&self, job: &str, resource_version: &str, now: Instant) {
        let mut seen = self.seen();
        seen.retain(|_, (_, at)| now.saturating_duration_since(*at) < FORGET_AFTER);
        seen.insert(job.to_string(), (resource_version.to_string(), now));
    }

    /// Forgets `job` (its cached copy was found current).
    pub fn forget(&self, job: &str) {
        self.seen().remove(job);
    }

    /// The map (a panic elsewhere while holding it leaves it usable: every entry is whole).
    fn seen(&self) -> MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_stale_copy_is_not_read_again_until_the_recheck() {
        let s = StaleCopies::default();
        let t0 = Instant::now();
        assert!(!s.known("ns/a", "10", t0));
        s.record("ns/a", "10", t0);
        assert!(s.known("ns/a", "10", t0 + Duration::from_secs(1)));
        assert!(s.known("ns/a", "10", t0 + RECHECK_AFTER - Duration::from_millis(1)));
        assert!(!s.known("ns/a", "10", t0 + RECHECK_AFTER));
        // Another job is not affected.
        assert!(!s.known("ns/b", "10", t0));
    }

    #[test]
    fn a_newer_cached_copy_is_read_and_forgets_the_entry() {
        let s = StaleCopies::default();
        let t0 = Instant::now();
        s.record("ns/a", "10", t0);
        assert!(!s.known("ns/a", "11", t0));
        assert!(s.seen().is_empty());
        // And the old version, should it come back, is no longer known either.
        assert!(!s.known("ns/a", "10", t0));
    }

    #[test]
    fn forget_and_old_entries_are_dropped() {
        let s = StaleCopies::default();
        let t0 = Instant::now();
        s.record("ns/a", "10", t0);
        s.forget("ns/a");
        assert!(!s.known("ns/a", "10", t0));
        s.record("ns/gone", "5", t0);
        s.record("ns/b", "7", t0 + FORGET_AFTER);
        assert_eq!(s.seen().len(), 1);
        assert!(s.known("ns/b", "7", t0 + FORGET_AFTER));
    }
}
