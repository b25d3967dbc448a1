//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder
//! renews the Lease every `retry_period`; another replica takes over only after it has *seen* the
//! Lease unchanged for `lease_duration` on its own clock (so clock skew between replicas does not
//! matter); writes use the Lease's resourceVersion, so two replicas can never both win.
//!
//! Only the holder runs the hub's controllers. A holder that cannot renew within `renew_deadline`
//! stops acting (the process exits and is restarted as a standby), which is how two hub replicas
//! stay safe. On a clean stop the holder clears the Lease so a standby takes over at once.
//!
//! Exiting is not enough when the holder is paused (SIGSTOP, CPU starvation): it resumes and
//! writes before its renew loop runs again. So the holder also keeps a [`Leadership`]: the
//! instant on its monotonic clock up to which no standby can have taken the Lease over (the send
//! time of its last successful renewal plus the lease duration, less a margin). The hub refuses
//! every write after that instant (`crate::fenced`; docs/adr/0016-leadership-fenced-writes.md).
//! A standby honours the duration the holder wrote in the Lease, as client-go does, so the
//! holder's promise holds even when the replicas' `--lease-duration` differ. kube-rs
//! has no leader election of its own; of the crates that offer one, kube-leader-election needs kube
//! 4 and kube-lease-manager judges expiry by comparing timestamps across clocks (see
//! docs/adr/0004-leader-election.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long gives up (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
    /// How long before the Lease could be taken over this replica stops writing: room for a write
    /// that passed the check to reach the apiserver (see [`write_deadline`]).
    pub fence_margin: Duration,
}

impl LeaderConfig {
    /// Settings derived from the lease duration: renew deadline 2/3 of it, retry every 1/5.
    pub fn new(namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaderConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 5).max(Duration::from_millis(200)),
            fence_margin: lease_duration / 5,
        }
    }

    /// The lease duration written in the Lease (whole seconds, rounded up, at least one): what
    /// standbys wait for, never less than this replica's own `lease_duration`.
    pub fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }
}

/// Until when a replica that sent a successful renewal (or acquisition) at `sent_at` may write.
///
/// A standby takes over only after it has seen the Lease unchanged for `lease_duration` on its own
/// clock, and it can only see the renewal after the apiserver applied it, which is after it was
/// sent. So no takeover lands before `sent_at + lease_duration` (real time, up to the clocks'
/// rate difference), and no write of the next leader before that. `margin` is left for a write
/// that passes the check just before the deadline to reach the apiserver.
pub fn write_deadline(sent_at: Instant, lease_duration: Duration, margin: Duration) -> Instant {
    sent_at + lease_duration.saturating_sub(margin)
}

/// Whether this replica may write now: a deadline on its monotonic clock, extended by each
/// successful renewal and dropped as soon as it learns that the Lease is not its own. Cheap to
/// check (one atomic load and a clock read), shared by every write path of the hub.
///
/// `Instant` is `CLOCK_MONOTONIC` on Linux, which keeps counting while a process is stopped
/// (SIGSTOP, a frozen cgroup) or starved of CPU, so a replica that resumes after such a pause
/// finds its deadline passed. It does not count a suspended machine, nor a virtual machine
/// whose clock the hypervisor holds while it is paused: see ADR 0016 for what covers those.
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<Deadline>,
}

#[derive(Debug)]
struct Deadline {
    /// The instant the offsets count from.
    origin: Instant,
    /// Nanoseconds after `origin` up to which writes are allowed; 0 when not leader.
    until: AtomicU64,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::new()
    }
}

impl Leadership {
    /// Not leader.
    pub fn new() -> Self {
        Leadership {
            inner: Arc::new(Deadline {
                origin: Instant::now(),
                until: AtomicU64::new(0),
            }),
        }
    }

    fn offset(&self, t: Instant) -> u64 {
        // 1 at least: 0 means "not leader".
        u64::try_from(t.saturating_duration_since(self.inner.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Allows writes until `until` (a later deadline than the current one only).
    pub fn extend(&self, until: Instant) {
        self.inner
            .until
            .fetch_max(self.offset(until), Ordering::SeqCst);
    }

    /// Refuses writes from now on, until the next [`extend`](Self::extend).
    pub fn revoke(&self) {
        self.inner.until.store(0, Ordering::SeqCst);
    }

    /// Whether writes are allowed at `now`.
    pub fn allows_at(&self, now: Instant) -> bool {
        let until = self.inner.until.load(Ordering::SeqCst);
        until != 0 && self.offset(now) < until
    }

    /// Whether writes are allowed now.
    pub fn still_leader(&self) -> bool {
        self.allows_at(Instant::now())
    }

    /// How long ago the deadline passed (zero while it has not, or when there was none).
    pub fn lapsed_for(&self, now: Instant) -> Duration {
        let until = self.inner.until.load(Ordering::SeqCst);
        if until == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.offset(now).saturating_sub(until))
    }
}

/// What to do with the Lease as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a live Lease: wait.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// The Lease record as this replica last observed it, and when it last changed on our clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    holder: String,
    renew_time: Option<String>,
    seen_changed_at: Instant,
}

/// Decides the next step from the Lease (if any), what we observed before, and `now`.
/// Returns the step and the updated observation. Pure: no I/O, the clock is passed in.
///
/// A Lease held by another replica is taken over after it stayed unchanged for the duration its
/// holder wrote in it (`leaseDurationSeconds`, as client-go does), or `lease_duration` when it
/// wrote none: the holder fences its writes by the duration it promised.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    previous: Option<&Observed>,
    lease_duration: Duration,
    now: Instant,
) -> (Step, Option<Observed>) {
    let Some(spec) = spec else {
        return (Step::Create, None);
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renew_time = spec.renew_time.as_ref().map(|t| t.0.to_string());
    let changed = previous.is_none_or(|p| p.holder != holder || p.renew_time != renew_time);
    let observed = Observed {
        holder: holder.clone(),
        renew_time,
        seen_changed_at: match previous {
            Some(p) if !changed => p.seen_changed_at,
            _ => now,
        },
    };
    let promised = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(lease_duration, Duration::from_secs);
    let step = if holder == identity {
        Step::Renew
    } else if holder.is_empty() || now.duration_since(observed.seen_changed_at) >= promised {
        Step::TakeOver
    } else {
        Step::Wait { holder }
    };
    (step, Some(observed))
}

/// Runs the election for one replica.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Option<Observed>,
    leadership: Leadership,
}

impl LeaderElector {
    /// An elector using `client`.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            leadership: Leadership::new(),
        }
    }

    /// The write fence this elector keeps: extended by each successful renewal, revoked when
    /// the Lease is lost or released.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Tries once to acquire or renew. Returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        // Before anything is sent: the deadline counts from a moment no later than the apiserver
        // applying the renewal.
        let sent_at = Instant::now();
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(Error::kube("reading the leader Lease"))?;
        let (step, observed) = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            self.observed.as_ref(),
            self.config.lease_duration,
            Instant::now(),
        );
        self.observed = observed;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_secs = self.config.lease_seconds();
        let result = match step {
            Step::Wait { holder } => {
                tracing::debug!(%holder, "leader Lease held by another replica");
                self.leadership.revoke();
                return Ok(false);
            }
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Step::Renew | Step::TakeOver => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let mut spec = lease.spec.take().unwrap_or_default();
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    tracing::info!(identity = %self.config.identity, "taking over the leader Lease");
                }
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(duration_secs);
                lease.spec = Some(spec);
                // replace() sends the resourceVersion we read: a concurrent writer makes this a 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                self.leadership.extend(write_deadline(
                    sent_at,
                    self.config.lease_duration,
                    self.config.fence_margin,
                ));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("writing the leader Lease")(e)),
        }
    }

    /// Blocks until this replica holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Gives the Lease up (holder cleared), so a standby takes over at once instead of after
    /// `lease_duration`. Used on a clean shutdown; errors are logged, the Lease then simply expires.
    pub async fn release(&mut self) {
        // No write of ours may land after a standby could take over.
        self.leadership.revoke();
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading the leader Lease to release it");
                return;
            }
        };
        let mut lease = lease;
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(identity = %self.config.identity, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader Lease"),
        }
    }

    /// Renews the Lease until renewal fails for `renew_deadline`, another replica holds it, or the
    /// write deadline passed (the process was paused); then revokes the write fence and returns
    /// [`Error::LostLeadership`]. Each attempt is bounded by `renew_deadline`, so a renewal that
    /// hangs cannot keep a holder that stopped renewing running.
    pub async fn hold(&mut self) -> Error {
        let mut last_renewed = Instant::now();
        let lost = loop {
            tokio::time::sleep(self.config.retry_period).await;
            match tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew())
                .await
            {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    if self
                        .observed
                        .as_ref()
                        .is_some_and(|o| o.holder != self.config.identity)
                    {
                        tracing::error!("another replica took the leader Lease");
                        break Error::LostLeadership;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader Lease"),
                Err(_) => {
                    tracing::warn!(after = ?self.config.renew_deadline, "renewing the leader Lease: no answer")
                }
            }
            if last_renewed.elapsed() >= self.config.renew_deadline {
                tracing::error!(deadline = ?self.config.renew_deadline, "could not renew the leader Lease in time");
                break Error::LostLeadership;
            }
            if !self.leadership.still_leader() {
                tracing::error!(
                    lapsed = ?self.leadership.lapsed_for(Instant::now()),
                    "the leader Lease may have been taken over (this replica was paused past it)"
                );
                break Error::LostLeadership;
            }
        };
        self.leadership.revoke();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renew_secs: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_second(renew_secs).unwrap(),
            )),
            ..Default::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn no_lease_means_create() {
        assert_eq!(decide(None, "a", None, D, Instant::now()).0, Step::Create);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&lease("a", 1)), "a", None, D, Instant::now()).0,
            Step::Renew
        );
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected() {
        let t0 = Instant::now();
        let (step, obs) = decide(Some(&lease("b", 1)), "a", None, D, t0);
        assert_eq!(step, Step::Wait { holder: "b".into() });
        // b keeps renewing: the observation keeps changing, so we keep waiting.
        let (step, _) = decide(Some(&lease("b", 2)), "a", obs.as_ref(), D, t0 + D * 2);
        assert_eq!(step, Step::Wait { holder: "b".into() });
    }

    #[test]
    fn a_lease_unchanged_for_its_duration_on_our_clock_is_taken_over() {
        let t0 = Instant::now();
        let (_, obs) = decide(Some(&lease("b", 1)), "a", None, D, t0);
        let (step, obs2) = decide(
            Some(&lease("b", 1)),
            "a",
            obs.as_ref(),
            D,
            t0 + D - Duration::from_secs(1),
        );
        assert_eq!(step, Step::Wait { holder: "b".into() });
        let (step, _) = decide(Some(&lease("b", 1)), "a", obs2.as_ref(), D, t0 + D);
        assert_eq!(step, Step::TakeOver);
    }

    #[test]
    fn an_empty_holder_is_taken_over_at_once() {
        let spec = LeaseSpec::default();
        assert_eq!(
            decide(Some(&spec), "a", None, D, Instant::now()).0,
            Step::TakeOver
        );
    }

    #[test]
    fn timings_derive_from_the_lease_duration() {
        let c = LeaderConfig::new("ns", "l", "me", Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(3));
    }

    fn lease_for(holder: &str, renew_secs: i64, duration_secs: i32) -> LeaseSpec {
        LeaseSpec {
            lease_duration_seconds: Some(duration_secs),
            ..lease(holder, renew_secs)
        }
    }

    #[test]
    fn a_standby_waits_for_the_duration_the_holder_wrote_not_its_own() {
        let t0 = Instant::now();
        let held = lease_for("b", 1, 30);
        let (_, obs) = decide(Some(&held), "a", None, D, t0);
        let (step, obs) = decide(Some(&held), "a", obs.as_ref(), D, t0 + D);
        assert_eq!(step, Step::Wait { holder: "b".into() });
        let (step, _) = decide(
            Some(&held),
            "a",
            obs.as_ref(),
            D,
            t0 + Duration::from_secs(30),
        );
        assert_eq!(step, Step::TakeOver);
    }

    #[test]
    fn the_written_duration_is_rounded_up_to_whole_seconds() {
        let c = |ms| LeaderConfig::new("ns", "l", "me", Duration::from_millis(ms)).lease_seconds();
        assert_eq!(c(15_000), 15);
        assert_eq!(c(2_500), 3);
        assert_eq!(c(300), 1);
    }

    #[test]
    fn writes_stop_a_margin_before_the_lease_could_be_taken_over() {
        let c = LeaderConfig::new("ns", "l", "me", D);
        let sent = Instant::now();
        let until = write_deadline(sent, c.lease_duration, c.fence_margin);
        assert_eq!(until, sent + Duration::from_secs(12));
        // A standby reads the renewal no earlier than it was sent, and takes over one written
        // duration after that at the soonest: always after the holder's deadline.
        let held = lease_for("a", 1, c.lease_seconds());
        let (_, obs) = decide(Some(&held), "b", None, c.lease_duration, sent);
        let mut t = sent;
        let mut obs = obs;
        loop {
            let (step, o) = decide(Some(&held), "b", obs.as_ref(), c.lease_duration, t);
            obs = o;
            if step == Step::TakeOver {
                break;
            }
            assert!(t < sent + D, "{t:?}");
            t += Duration::from_millis(100);
        }
        assert!(until + c.fence_margin <= t);
    }

    #[test]
    fn leadership_holds_until_the_deadline_and_only_moves_forward() {
        let l = Leadership::new();
        let t0 = Instant::now();
        assert!(
            !l.allows_at(t0),
            "a replica that never renewed may not write"
        );
        l.extend(t0 + Duration::from_secs(10));
        assert!(l.allows_at(t0 + Duration::from_secs(9)));
        assert!(!l.allows_at(t0 + Duration::from_secs(10)));
        // An older renewal answered late does not shorten it.
        l.extend(t0 + Duration::from_secs(5));
        assert!(l.allows_at(t0 + Duration::from_secs(9)));
        assert_eq!(
            l.lapsed_for(t0 + Duration::from_secs(12)),
            Duration::from_secs(2)
        );
        assert_eq!(l.lapsed_for(t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_replica_paused_past_its_deadline_may_not_write_when_it_resumes() {
        // Renewed at t0; the process is stopped; the monotonic clock keeps counting, so when it
        // runs again `now` is past the deadline, whatever its tasks were about to do.
        let c = LeaderConfig::new("ns", "l", "me", D);
        let l = Leadership::new();
        let t0 = Instant::now();
        l.extend(write_deadline(t0, c.lease_duration, c.fence_margin));
        assert!(l.allows_at(t0 + c.renew_deadline));
        assert!(!l.allows_at(t0 + D));
        assert!(!l.allows_at(t0 + D * 10));
    }

    #[test]
    fn a_revoked_leadership_refuses_at_once_and_a_new_term_allows_again() {
        let l = Leadership::new();
        let t0 = Instant::now();
        l.extend(t0 + D);
        l.revoke();
        assert!(!l.allows_at(t0));
        l.extend(t0 + D);
        assert!(l.allows_at(t0));
    }
}
