//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder
//! renews the Lease every `retry_period`; another replica takes over only after it has *seen* the
//! Lease unchanged for `lease_duration` on its own clock (so clock skew between replicas does not
//! matter); writes use the Lease's resourceVersion, so two replicas can never both win.
//!
//! Only the holder runs the hub's controllers. A holder that cannot renew within `renew_deadline`
//! stops acting (the process exits and is restarted as a standby), which is how two hub replicas
//! stay safe. On a clean stop the holder clears the Lease so a standby takes over at once. kube-rs
//! has no leader election of its own; of the crates that offer one, kube-leader-election needs kube
//! 4 and kube-lease-manager judges expiry by comparing timestamps across clocks (see
//! docs/adr/0004-leader-election.md).

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
        }
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
    let step = if holder == identity {
        Step::Renew
    } else if holder.is_empty() || now.duration_since(observed.seen_changed_at) >= lease_duration {
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
}

impl LeaderElector {
    /// An elector using `client`.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Tries once to acquire or renew. Returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
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
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match step {
            Step::Wait { holder } => {
                tracing::debug!(%holder, "leader Lease held by another replica");
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
            Ok(_) => Ok(true),
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

    /// Renews the Lease until renewal fails for `renew_deadline` or another replica holds it;
    /// then returns [`Error::LostLeadership`].
    pub async fn hold(&mut self) -> Error {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    if self
                        .observed
                        .as_ref()
                        .is_some_and(|o| o.holder != self.config.identity)
                    {
                        tracing::error!("another replica took the leader Lease");
                        return Error::LostLeadership;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease"),
            }
            if last_renewed.elapsed() >= self.config.renew_deadline {
                tracing::error!(deadline = ?self.config.renew_deadline, "could not renew the leader Lease in time");
                return Error::LostLeadership;
            }
        }
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
}
