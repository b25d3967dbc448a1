//! State the agent's tasks share: the last successful heartbeat, the pool's heartbeat timeout as
//! the hub last reported it, whether the agent is fenced off, which Placements it stopped while
//! fenced, the offset of the member's clock from the agent's, and a wake-up for the placement sync.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use tokio::sync::Notify;

use super::clock::Reading;
use super::inventory::{Seen, Sighting};
use gpufed_crds::GpuNode;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Shared between the heartbeat, fence, inventory and sync tasks.
pub struct Shared {
    started: Instant,
    last_heartbeat: Mutex<Option<Instant>>,
    pool_timeout: Mutex<Option<Duration>>,
    fenced: AtomicBool,
    inventory_written: AtomicBool,
    fenced_placements: Mutex<BTreeMap<String, Time>>,
    lease_owner: Mutex<Option<OwnerReference>>,
    /// The last reading of the member's clock ([`super::clock`]).
    member_clock: Mutex<Reading>,
    /// When the agent first saw each node's current gpu-probe reading ([`super::inventory`]).
    readings: Mutex<BTreeMap<String, Seen>>,
    /// The offer signing domain from the MemberCluster's status, once read (`Some(None)`: the
    /// hub publishes none).
    offer_signing: Mutex<Option<Option<gpufed_crds::OfferSigning>>>,
    /// Each node's recent readings, for attempts that record telemetry ([`super::telemetry`]).
    recent: Mutex<BTreeMap<String, super::telemetry::Readings>>,
    /// Wakes the placement sync (a watched object changed, or the fence state did).
    pub wake: Notify,
    /// Fires when the agent is fenced off or recovers (cuts a retry backoff short).
    pub fence_changed: Notify,
}

impl Shared {
    /// New state, counting from now.
    pub fn new() -> Self {
        Shared {
            started: Instant::now(),
            last_heartbeat: Mutex::new(None),
            pool_timeout: Mutex::new(None),
            fenced: AtomicBool::new(false),
            inventory_written: AtomicBool::new(false),
            fenced_placements: Mutex::new(BTreeMap::new()),
            lease_owner: Mutex::new(None),
            // Until the first reading: the host's wall clock now, and monotonic time from here.
            member_clock: Mutex::new(Reading {
                member: Timestamp::now(),
                at: Instant::now(),
                offset: SignedDuration::ZERO,
            }),
            readings: Mutex::new(BTreeMap::new()),
            offer_signing: Mutex::new(None),
            recent: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            fence_changed: Notify::new(),
        }
    }

    /// Notes a GpuNode as the agent's watch delivers it: a new `lastUpdateTime` is a new reading,
    /// aged from now on the agent's monotonic clock.
    pub fn saw_reading(&self, gpu_node: &GpuNode) {
        let Some(stamp) = gpu_node
            .status
            .as_ref()
            .and_then(|s| s.last_update_time.as_ref())
        else {
            return;
        };
        let mut readings = lock(&self.readings);
        let node = &gpu_node.spec.node_name;
        let next = Seen::next(readings.get(node), stamp.0, Instant::now());
        readings.insert(node.clone(), next);
        drop(readings);
        if let Some(reading) = super::telemetry::reading(gpu_node) {
            let mut recent = lock(&self.recent);
            let kept = recent.get(node).cloned().unwrap_or_default();
            recent.insert(node.clone(), super::telemetry::keep(&kept, reading));
        }
    }

    /// The offer signing domain the MemberCluster's status published, once read (`Some(None)`:
    /// none is published).
    pub fn offer_signing(&self) -> Option<Option<gpufed_crds::OfferSigning>> {
        lock(&self.offer_signing).clone()
    }

    /// Keeps the offer signing domain the MemberCluster's status published.
    pub fn set_offer_signing(&self, domain: Option<gpufed_crds::OfferSigning>) {
        *lock(&self.offer_signing) = Some(domain);
    }

    /// The recent readings of `nodes` ([`super::telemetry`]).
    pub fn recent_readings<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<String, super::telemetry::Readings> {
        let recent = lock(&self.recent);
        nodes
            .into_iter()
            .filter_map(|n| Some((n.to_string(), recent.get(n)?.clone())))
            .collect()
    }

    /// When the agent saw each node's current reading, as of now.
    pub fn sightings(&self) -> BTreeMap<String, Sighting> {
        let now = Instant::now();
        lock(&self.readings)
            .iter()
            .map(|(node, seen)| (node.clone(), seen.as_of(now)))
            .collect()
    }

    /// The offset of the member's apiserver clock from ours at the last reading (0 until then).
    pub fn clock_offset(&self) -> SignedDuration {
        lock(&self.member_clock).offset
    }

    /// Keeps a reading of the member's clock ([`super::clock`]).
    pub fn set_member_clock(&self, reading: Reading) {
        *lock(&self.member_clock) = reading;
    }

    /// Now on the member's clock: its time at the last reading plus the monotonic time since.
    /// Compare with times the member stamped (pod starts, the lease Job's start) only through this.
    pub fn member_now(&self) -> Timestamp {
        let r = *lock(&self.member_clock);
        let since = SignedDuration::try_from(r.at.elapsed()).unwrap_or(SignedDuration::ZERO);
        r.member.checked_add(since).unwrap_or(r.member)
    }

    /// Records a successful heartbeat at `at`.
    pub fn heartbeat_succeeded(&self, at: Instant) {
        *lock(&self.last_heartbeat) = Some(at);
    }

    /// Whether a heartbeat has ever succeeded.
    pub fn has_heartbeat(&self) -> bool {
        lock(&self.last_heartbeat).is_some()
    }

    /// The last successful heartbeat, or the agent's start before the first one: the moment from
    /// which a silent hub counts towards the fence timeout.
    pub fn last_heartbeat_or_start(&self) -> Instant {
        lock(&self.last_heartbeat).unwrap_or(self.started)
    }

    /// The pool's heartbeat timeout from the MemberCluster status, once known.
    pub fn pool_timeout(&self) -> Option<Duration> {
        *lock(&self.pool_timeout)
    }

    /// Stores the pool's heartbeat timeout.
    pub fn set_pool_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.pool_timeout) = timeout;
    }

    /// Whether the agent is fenced off now.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Sets the fence state.
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::SeqCst);
    }

    /// Whether an inventory has been written.
    pub fn inventory_written(&self) -> bool {
        self.inventory_written.load(Ordering::SeqCst)
    }

    /// Records that an inventory was written.
    pub fn set_inventory_written(&self) {
        self.inventory_written.store(true, Ordering::SeqCst);
    }

    /// Remembers that the Job of `placement` was stopped by fencing at `at` (the first time counts).
    pub fn record_fenced(&self, placement: String, at: Time) {
        lock(&self.fenced_placements).entry(placement).or_insert(at);
    }

    /// Placements stopped by fencing and not yet reported.
    pub fn fenced_placements(&self) -> BTreeMap<String, Time> {
        lock(&self.fenced_placements).clone()
    }

    /// The member's live lease Job, as the owner reference every new local Job carries
    /// ([`super::member_lease`]); `None` while there is none (no Job may start then).
    pub fn lease_owner(&self) -> Option<OwnerReference> {
        lock(&self.lease_owner).clone()
    }

    /// Sets the member's lease owner; returns whether it changed.
    pub fn set_lease_owner(&self, owner: Option<OwnerReference>) -> bool {
        let mut current = lock(&self.lease_owner);
        let changed = current.as_ref().map(|o| &o.uid) != owner.as_ref().map(|o| &o.uid);
        *current = owner;
        changed
    }

    /// Forgets a fenced placement (reported, or gone from the hub).
    pub fn forget_fenced(&self, placement: &str) {
        lock(&self.fenced_placements).remove(placement);
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_first_heartbeat_the_start_counts_as_the_last_one() {
        let s = Shared::new();
        assert!(!s.has_heartbeat());
        assert_eq!(s.last_heartbeat_or_start(), s.started);
        let later = s.started + Duration::from_secs(3);
        s.heartbeat_succeeded(later);
        assert_eq!(s.last_heartbeat_or_start(), later);
    }

    #[test]
    fn the_first_fence_time_of_a_placement_is_kept() {
        let s = Shared::new();
        let t = |x| Time(k8s_openapi::jiff::Timestamp::from_second(x).unwrap());
        s.record_fenced("p".into(), t(10));
        s.record_fenced("p".into(), t(20));
        assert_eq!(s.fenced_placements()["p"], t(10));
        s.forget_fenced("p");
        assert!(s.fenced_placements().is_empty());
    }
}
