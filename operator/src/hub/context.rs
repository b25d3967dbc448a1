//! The hub's shared state: the API client, the event recorder, metrics, configuration, and
//! read-only caches (reflector stores) of every kind the controllers look up across objects.

use std::collections::HashMap;
use std::sync::Arc;

use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Offer, Placement, ProviderBond};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::{Mutex, Notify};

use crate::error::{Error, Result};
use crate::hub::at_rest::{JobAtRest, Jobs};
use crate::hub::chain::ChainClient;
use crate::hub::settlement::Settler;

use crate::backoff::Backoffs;
use crate::metrics::Metrics;

/// Field manager of every write the hub makes.
pub const MANAGER: &str = "gpufed-hub";

/// Settings of the hub that controllers need.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The hub's own namespace.
    pub namespace: String,
    /// API server URL members use to reach the hub.
    pub member_api_server: String,
    /// CA bundle (PEM) members use to verify the hub.
    pub member_api_ca: Vec<u8>,
}

/// Caches of the objects controllers look up, kept current by reflectors.
#[derive(Clone)]
pub struct Stores {
    /// Every ComputeJob not at rest, and jobs at rest being edited or deleted (ADR 0041).
    pub jobs: Store<ComputeJob>,
    /// Every ComputeJob's reference by UID: how a Placement is mapped back to its job.
    pub job_uids: JobUids,
    /// Every MemberCluster.
    pub members: Store<MemberCluster>,
    /// Every GpuPool.
    pub pools: Store<GpuPool>,
    /// Every ProviderBond.
    pub bonds: Store<ProviderBond>,
    /// Every Placement.
    pub placements: Store<Placement>,
    /// Heartbeat Leases of members (label `app.kubernetes.io/managed-by=gpufed`).
    pub leases: Store<Lease>,
    /// Providers' own Offers, in member namespaces (ADR 0024).
    pub offers: Store<Offer>,
}

impl Stores {
    /// Every job: the store's and the records of jobs at rest ([`JobUids::records`]), each once.
    pub fn every_job(&self) -> Jobs {
        // The store first: see `Jobs::new`.
        let cached = self.jobs.state();
        Jobs::new(cached, self.job_uids.records())
    }

    /// Resolves once every cache has its first full list; an error if a watch stopped first.
    pub async fn synced(&self) -> Result<()> {
        let not_synced =
            |what: &str| Error::Config(format!("the {what} cache stopped before it synced"));
        self.jobs
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("ComputeJob"))?;
        self.members
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("MemberCluster"))?;
        self.pools
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("GpuPool"))?;
        self.bonds
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("ProviderBond"))?;
        self.placements
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("Placement"))?;
        self.leases
            .wait_until_ready()
            .await
            .map_err(|_| not_synced("Lease"))?;
        Ok(())
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<GpuPool>> {
        self.pools.get(&ObjectRef::new(name))
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<Arc<MemberCluster>> {
        self.members.get(&ObjectRef::new(name))
    }

    /// The placement `namespace/name`.
    pub fn placement(&self, namespace: &str, name: &str) -> Option<Arc<Placement>> {
        self.placements.get(&ObjectRef::new(name).within(namespace))
    }

    /// The ProviderBond of member `name` (same name as the member).
    pub fn bond(&self, name: &str) -> Option<Arc<ProviderBond>> {
        self.bonds.get(&ObjectRef::new(name))
    }

    /// Member `name` with the prices of the offer the hub accepted from it, if that is usable
    /// now (ADR 0024).
    pub fn priced_member(&self, member: &Arc<MemberCluster>) -> Arc<MemberCluster> {
        let offer = self.offer_of(&member.name_any());
        let signing = self.signing(member);
        crate::hub::market::priced_by_offer(member, offer.as_deref(), &signing, now().0.as_second())
    }

    /// Member `cluster`'s Offer.
    pub fn offer_of(&self, cluster: &str) -> Option<Arc<Offer>> {
        let ns = gpufed_crds::naming::member_namespace(cluster);
        self.offers
            .get(&ObjectRef::new(gpufed_crds::OFFER_NAME).within(&ns))
    }

    /// How `member` signs its offers (its pool's chain and its wallet).
    pub fn signing(&self, member: &MemberCluster) -> crate::hub::offers::Signing {
        match self.pool(&member.spec.pool) {
            Some(pool) => crate::hub::offers::signing(&pool, member),
            None => crate::hub::offers::Signing::Unsigned,
        }
    }

    /// The accepted, usable offer member `member` is priced by now, if any.
    pub fn accepted_offer(&self, member: &MemberCluster) -> Option<gpufed_crds::SignedOffer> {
        let offer = self.offer_of(&member.name_any());
        crate::hub::market::accepted_offer(
            offer.as_deref(),
            &self.signing(member),
            now().0.as_second(),
        )
        .cloned()
    }

    /// The cached Placements of the attempts `status` records for the job with `uid`: each
    /// attempt's Placement is named in its record and lives in its member's namespace, and the
    /// hub writes a Placement only after the attempt's record (ADRs 0008, 0015), so these are every
    /// Placement of the job the cache holds. One lookup per attempt, where a scan of every
    /// cached Placement cost each job reconcile time in proportion to all Placements.
    pub fn attempt_placements(
        &self,
        uid: &str,
        status: Option<&gpufed_crds::ComputeJobStatus>,
    ) -> Vec<Arc<Placement>> {
        status
            .into_iter()
            .flat_map(|s| s.attempts.iter())
            .filter_map(|a| {
                self.placement(
                    &gpufed_crds::naming::member_namespace(&a.cluster),
                    &a.placement,
                )
            })
            .filter(|p| p.spec.job.uid == uid)
            .collect()
    }
}

/// ComputeJobs by UID, kept by the jobs watch. A Placement names its job by UID only (a member
/// sees no namespace or name, ADR 0037), so this is how the hub maps a Placement back to its job.
/// A job at rest ([`crate::hub::at_rest_in_cache`]) is held as its record ([`JobAtRest`], ADR
/// 0041) instead: the store no longer holds it ([`crate::hub::keep_job`]), nothing of it is mapped
/// from its Placements, which the hub's cache does not keep either ([`crate::hub::keep_placement`]),
/// and readers of every job find it here ([`Stores::every_job`]).
#[derive(Clone, Default)]
pub struct JobUids(Arc<std::sync::RwLock<Index>>);

/// The map behind [`JobUids`], and the count of the jobs watch's full lists.
#[derive(Default)]
struct Index {
    by_uid: HashMap<String, Indexed>,
    /// Full lists of the jobs watch begun so far (a record carries the one that last showed it).
    lists: u32,
}

/// What [`JobUids`] holds of a job.
#[derive(Clone)]
enum Indexed {
    /// A job in progress (or finished with money in flight), where its Placements map to.
    Job(Box<ObjectRef<ComputeJob>>),
    /// A job at rest, and the full list that last showed it ([`JobUids::listed`]).
    AtRest(Arc<JobAtRest>, u32),
}

impl JobUids {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        // A panic while holding the lock leaves the map as consistent as before it: keep using it.
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `job` (applied, or seen at rest by the jobs watch, which then keeps it out of the
    /// store); `true` when this is the event that shows it at rest for the first time (its
    /// Placements are then dropped from the cache). A job at rest is recorded again from each
    /// event that shows it (rare: such a job changes only when edited or deleted, and in a full
    /// list); a job in progress already recorded takes only the read lock.
    pub fn insert(&self, job: &ComputeJob) -> bool {
        let (Some(uid), Some(name)) = (job.metadata.uid.as_ref(), job.metadata.name.as_ref())
        else {
            return false;
        };
        if !crate::hub::at_rest_in_cache(job) {
            if matches!(self.read().by_uid.get(uid), Some(Indexed::Job(_))) {
                return false;
            }
            let at = ObjectRef::new(name).within(job.metadata.namespace.as_deref().unwrap_or(""));
            let mut index = self.write();
            // Once at rest, always at rest (a finished job with its money at rest stays so).
            if !matches!(index.by_uid.get(uid), Some(Indexed::AtRest(..))) {
                index.by_uid.insert(uid.clone(), Indexed::Job(Box::new(at)));
            }
            return false;
        }
        let Some(record) = JobAtRest::of(job) else {
            return false;
        };
        let mut index = self.write();
        let listed = index.lists;
        let before = index
            .by_uid
            .insert(uid.clone(), Indexed::AtRest(Arc::new(record), listed));
        !matches!(before, Some(Indexed::AtRest(..)))
    }

    /// Forgets `job` (deleted).
    pub fn remove(&self, job: &ComputeJob) {
        if let Some(uid) = job.metadata.uid.as_ref() {
            self.write().by_uid.remove(uid);
        }
    }

    /// The jobs watch begins a full list (`done` false) or has ended one (`done` true). Every job
    /// at rest is recorded again as the list shows it; at the end, the records of jobs the list
    /// did not show are dropped: they were deleted while the watch was down, and no delete event
    /// will come for them. (Entries of jobs in progress are checked against the store instead, in
    /// [`JobUids::get`].)
    pub fn listed(&self, done: bool) {
        let mut index = self.write();
        if done {
            let this = index.lists;
            index
                .by_uid
                .retain(|_, e| !matches!(e, Indexed::AtRest(_, seen) if *seen != this));
        } else {
            index.lists = index.lists.wrapping_add(1);
        }
    }

    /// Whether the job with `uid` is at rest.
    pub fn at_rest(&self, uid: &str) -> bool {
        matches!(self.read().by_uid.get(uid), Some(Indexed::AtRest(..)))
    }

    /// The records of every job at rest.
    pub fn records(&self) -> Vec<Arc<JobAtRest>> {
        self.read()
            .by_uid
            .values()
            .filter_map(|e| match e {
                Indexed::AtRest(r, _) => Some(r.clone()),
                Indexed::Job(_) => None,
            })
            .collect()
    }

    /// How many jobs at rest it holds.
    pub fn records_len(&self) -> usize {
        self.read()
            .by_uid
            .values()
            .filter(|e| matches!(e, Indexed::AtRest(..)))
            .count()
    }

    /// The job with `uid`, if `jobs` holds it and it is not at rest. An entry whose job is gone
    /// or was re-created under another UID (its deletion fell in a gap of the watch) is dropped.
    pub fn get(&self, uid: &str, jobs: &Store<ComputeJob>) -> Option<ObjectRef<ComputeJob>> {
        let at = match self.read().by_uid.get(uid) {
            Some(Indexed::Job(at)) => at.as_ref().clone(),
            _ => return None,
        };
        if jobs
            .get(&at)
            .is_some_and(|j| j.metadata.uid.as_deref() == Some(uid))
        {
            Some(at)
        } else {
            self.write().by_uid.remove(uid);
            None
        }
    }

    /// How many jobs it holds.
    pub fn len(&self) -> usize {
        self.read().by_uid.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every hub controller gets.
pub struct Context {
    /// API client of the hub cluster (its writes fenced by leadership).
    pub client: Client,
    /// The leadership check of chain transactions (the same deadline as `client`'s).
    pub fence: crate::fenced::WriteFence,
    /// Publishes Kubernetes Events (bounded queue, never awaited).
    pub events: crate::events::Events,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Settings.
    pub config: HubConfig,
    /// Caches.
    pub stores: Stores,
    /// Wakes the scheduling loop (new pending job, capacity changed, attempt ended).
    pub schedule: Arc<Notify>,
    /// Retry backoff of failed reconciles, per object.
    pub backoffs: Backoffs,
    /// Hands finished attempts to the settlement batch worker.
    pub settler: Arc<Settler>,
    /// Chain clients per pool, with what they were built from and when the key was last read.
    chains: Mutex<HashMap<String, CachedChain>>,
    /// Members registered by this process: name → (uid, when). Registration is applied again
    /// only when [`registration_due`] says so, not on every heartbeat.
    pub registered: Mutex<HashMap<String, Registered>>,
    /// The last inventory time of each member the scheduler was woken for.
    pub inventory_seen: Mutex<HashMap<String, Option<Time>>>,
    /// Unfinished jobs placed per cluster, and when that was counted (see `active_placements`).
    active_by_cluster: std::sync::Mutex<(Option<std::time::Instant>, HashMap<String, u32>)>,
    /// When each pool's status was last rolled up, and for which generation (throttling).
    pub pool_rollups: std::sync::Mutex<HashMap<String, (std::time::Instant, Option<i64>)>>,
    /// Each pool's utilisation samples (see `utilisation`).
    pub utilisation: crate::hub::utilisation::Trackers,
    /// The (namespace, group) quota series each pool last exported, so that series of a quota the
    /// admin removed disappear.
    pub quota_series:
        std::sync::Mutex<HashMap<String, std::collections::BTreeSet<(String, String)>>>,
    /// The namespaces whose fair-share series each pool last exported, so that series of a
    /// namespace no longer in the pool's shares disappear.
    pub share_series: std::sync::Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    /// Each member's last heartbeat renewal as this hub saw it (freshness on the hub's clock).
    pub heartbeats_seen: Mutex<HashMap<String, crate::hub::member_controller::SeenRenewal>>,
    /// Cached copies of jobs the apiserver showed stale, so they are not read again per pass.
    pub stale_jobs: crate::hub::stale::StaleCopies,
}

/// A chain client and what it was built from.
struct CachedChain {
    /// The pool's chain settings, serialised.
    settings: String,
    /// A digest of the hub key (never the key itself).
    key_digest: u64,
    client: Arc<ChainClient>,
    key_read_at: std::time::Instant,
}

/// How often the hub key Secret is read again, so a rotated key is picked up without a restart.
pub const KEY_REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

fn digest(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.trim().hash(&mut h);
    h.finish()
}

/// How long a Ready member's registration objects are trusted before they are applied again (at
/// least; see [`reregister_after`]). Damage that stops the agent (a deleted Role, binding,
/// ServiceAccount or token) shows first as a lost heartbeat, which registers the member again at
/// once ([`registration_due`], ADR 0039); this period only repairs what does not stop it.
pub const REREGISTER_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// How often a member that is not Ready is registered again while it stays so (after the
/// registration its heartbeat's loss brought about).
pub const REREGISTER_NOT_READY: std::time::Duration = std::time::Duration::from_secs(300);

/// How long member `name`'s registration is trusted: [`REREGISTER_AFTER`] plus up to half of it
/// again, fixed per member, so members registered together (a hub start, a thousand joining) are
/// not all registered again in the same second — about nine writes each.
pub fn reregister_after(name: &str) -> std::time::Duration {
    let half = REREGISTER_AFTER.as_secs() / 2;
    REREGISTER_AFTER + std::time::Duration::from_secs(digest(name) % half.max(1))
}

/// This process's last registration of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The MemberCluster's UID then.
    pub uid: String,
    /// When.
    pub at: std::time::Instant,
    /// It failed (a member registered before kept its credentials; [`registration_due`] tries
    /// again after [`REREGISTER_NOT_READY`]).
    pub failed: bool,
}

/// Whether member `name` (UID `uid`) is to be registered again (its namespace, credentials and
/// RBAC applied), given this process's last registration of it and whether it is Ready now and
/// was before this reconcile (`ready`):
///
/// * not registered by this process, or registered under another UID: yes;
/// * its heartbeat just stopped (Ready before, not now): yes — a deleted Role, RoleBinding,
///   ServiceAccount or token stops the agent's renewals first, so this is where the damage that
///   matters shows — unless a registration failed less than [`REREGISTER_NOT_READY`] ago;
/// * still not Ready, or the last registration failed: every [`REREGISTER_NOT_READY`];
/// * Ready: after [`reregister_after`].
pub fn registration_due(
    registered: Option<&Registered>,
    uid: &str,
    name: &str,
    (ready, was_ready): (bool, bool),
    now: std::time::Instant,
) -> bool {
    let Some(last) = registered.filter(|r| r.uid == uid) else {
        return true;
    };
    let age = now.saturating_duration_since(last.at);
    match (ready, was_ready, last.failed) {
        (true, _, false) => age >= reregister_after(name),
        (false, true, false) => true,
        _ => age >= REREGISTER_NOT_READY,
    }
}

impl Context {
    /// A new context.
    pub fn new(
        client: Client,
        fence: crate::fenced::WriteFence,
        metrics: Metrics,
        config: HubConfig,
        stores: Stores,
        settler: Arc<Settler>,
        schedule: Arc<Notify>,
    ) -> Self {
        let events = crate::events::Events::start(
            client.clone(),
            crate::events::Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").unwrap_or_else(|_| MANAGER.into()),
            },
            metrics.events_dropped.clone(),
        );
        Context {
            client,
            fence,
            events,
            metrics,
            config,
            stores,
            schedule,
            backoffs: Backoffs::default(),
            settler,
            chains: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            inventory_seen: Mutex::new(HashMap::new()),
            heartbeats_seen: Mutex::new(HashMap::new()),
            pool_rollups: std::sync::Mutex::new(HashMap::new()),
            utilisation: std::sync::Mutex::new(HashMap::new()),
            quota_series: std::sync::Mutex::new(HashMap::new()),
            share_series: std::sync::Mutex::new(HashMap::new()),
            active_by_cluster: std::sync::Mutex::new((None, HashMap::new())),
            stale_jobs: Default::default(),
        }
    }

    /// The chain client of `pool` (which must have `spec.chain`), built on first use and rebuilt
    /// when the chain settings or the hub key change (the key Secret is read again every
    /// [`KEY_REREAD_AFTER`], so rotating it needs no restart).
    pub async fn chain(&self, pool: &GpuPool) -> Result<Arc<ChainClient>> {
        let name = pool.name_any();
        let spec = pool
            .spec
            .chain
            .as_ref()
            .ok_or_else(|| Error::Config(format!("GpuPool {name} has no spec.chain")))?;
        let settings = serde_json::to_string(spec).map_err(|source| Error::Serde {
            context: "chain settings".into(),
            source,
        })?;
        let mut chains = self.chains.lock().await;
        if let Some(c) = chains.get(&name)
            && c.settings == settings
            && c.key_read_at.elapsed() < KEY_REREAD_AFTER
        {
            return Ok(c.client.clone());
        }
        crate::hub::chain::check_key_secret_namespace(spec, &self.config.namespace)?;
        let r = &spec.hub_key_secret_ref;
        let secret = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
            self.client.clone(),
            &r.namespace,
        )
        .get(&r.name)
        .await
        .map_err(Error::kube(format!(
            "reading the hub key Secret {}/{}",
            r.namespace, r.name
        )))?;
        let key = secret
            .data
            .and_then(|d| d.get(&r.key).cloned())
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
            .ok_or_else(|| {
                Error::Config(format!(
                    "Secret {}/{} has no key {:?}",
                    r.namespace, r.name, r.key
                ))
            })?;
        let key_digest = digest(&key);
        if let Some(c) = chains.get_mut(&name)
            && c.settings == settings
            && c.key_digest == key_digest
        {
            // Same settings and key: keep the client (and its nonce cache).
            c.key_read_at = std::time::Instant::now();
            return Ok(c.client.clone());
        }
        let client = ChainClient::new(spec, &key, self.fence.clone())?;
        tracing::info!(pool = %name, account = %client.hub_account, "connected the pool's chain");
        chains.insert(
            name,
            CachedChain {
                settings,
                key_digest,
                client: client.clone(),
                key_read_at: std::time::Instant::now(),
            },
        );
        Ok(client)
    }

    /// Unfinished jobs placed on `cluster`. Counted for every cluster at once, at most once per
    /// [`ACTIVE_RECOUNT`]: each member's heartbeat reconciles it, and a count per reconcile would
    /// read every job each time.
    pub fn active_placements(&self, cluster: &str) -> u32 {
        let mut guard = self
            .active_by_cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (counted, by_cluster) = &mut *guard;
        if counted.is_none_or(|t| t.elapsed() >= ACTIVE_RECOUNT) {
            *by_cluster = active_by_cluster(&self.stores.jobs.state());
            *counted = Some(std::time::Instant::now());
        }
        by_cluster.get(cluster).copied().unwrap_or(0)
    }

    /// Queues an Event about `obj` (see [`crate::events`]); never waits, never fails.
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.events.publish(obj, warning, reason, action, &note);
    }
}

/// How stale `MemberCluster.status.activePlacements` may be.
pub const ACTIVE_RECOUNT: std::time::Duration = std::time::Duration::from_secs(1);

/// Unfinished jobs per cluster of their current placement.
pub fn active_by_cluster(jobs: &[Arc<ComputeJob>]) -> HashMap<String, u32> {
    let mut out: HashMap<String, u32> = HashMap::new();
    for s in jobs.iter().filter_map(|j| j.status.as_ref()) {
        if let Some(p) = s.placement.as_ref().filter(|_| !s.phase.is_finished()) {
            *out.entry(p.cluster.clone()).or_default() += 1;
        }
    }
    out
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;
    use gpufed_crds::{ComputeJobStatus, JobPhase, PlacementRef, TokenAmount};

    #[test]
    fn members_registered_together_are_registered_again_spread_over_half_the_period() {
        let after: Vec<_> = (0..1000)
            .map(|m| reregister_after(&format!("m{m:04}")))
            .collect();
        assert!(
            after
                .iter()
                .all(|d| *d >= REREGISTER_AFTER && *d < REREGISTER_AFTER * 3 / 2)
        );
        let distinct: std::collections::HashSet<_> = after.iter().collect();
        assert!(distinct.len() > 200, "{} distinct delays", distinct.len());
        assert_eq!(reregister_after("m0001"), reregister_after("m0001"));
    }

    #[test]
    fn a_member_is_registered_again_when_its_heartbeat_stops_and_otherwise_rarely() {
        let t0 = std::time::Instant::now();
        let at = |secs: u64| t0 + std::time::Duration::from_secs(secs);
        let reg = Registered {
            uid: "u1".into(),
            at: t0,
            failed: false,
        };
        let due = |r: Option<&Registered>, uid, states, secs| {
            registration_due(r, uid, "m0001", states, at(secs))
        };
        // Never registered by this process, or registered under another UID (re-created).
        assert!(due(None, "u1", (true, true), 0));
        assert!(due(Some(&reg), "u2", (true, true), 1));
        // Ready: trusted until its period is over.
        let period = reregister_after("m0001").as_secs();
        assert!(period >= REREGISTER_AFTER.as_secs());
        assert!(!due(Some(&reg), "u1", (true, true), 1));
        assert!(!due(Some(&reg), "u1", (true, false), period - 1));
        assert!(due(Some(&reg), "u1", (true, true), period));
        // The heartbeat just stopped: at once, however recent the last registration.
        assert!(due(Some(&reg), "u1", (false, true), 1));
        // Still silent: again every REREGISTER_NOT_READY, not on every reconcile.
        let quiet = REREGISTER_NOT_READY.as_secs();
        assert!(!due(Some(&reg), "u1", (false, false), 1));
        assert!(!due(Some(&reg), "u1", (false, false), quiet - 1));
        assert!(due(Some(&reg), "u1", (false, false), quiet));
        assert!(REREGISTER_NOT_READY < REREGISTER_AFTER);
        // A failed registration is tried again after REREGISTER_NOT_READY, Ready or not, and a
        // heartbeat lost soon after it does not bring another at once.
        let failed = Registered {
            failed: true,
            ..reg.clone()
        };
        for states in [(true, true), (false, true), (false, false)] {
            assert!(!due(Some(&failed), "u1", states, quiet - 1), "{states:?}");
            assert!(due(Some(&failed), "u1", states, quiet), "{states:?}");
        }
        assert!(due(Some(&failed), "u2", (true, true), 1));
    }

    #[test]
    fn a_placement_finds_its_job_by_uid_until_the_job_is_gone_or_recreated() {
        use kube::runtime::watcher::Event;
        let (store, mut writer) = kube::runtime::reflector::store::<ComputeJob>();
        let uids = JobUids::default();
        let mut a = job("train").build();
        a.metadata.namespace = Some("team-a".into());
        a.metadata.uid = Some("uid-1".into());
        writer.apply_watcher_event(&Event::Apply(a.clone()));
        uids.insert(&a);
        let at = uids.get("uid-1", &store).unwrap();
        assert_eq!(
            (at.name.as_str(), at.namespace.as_deref()),
            ("train", Some("team-a"))
        );
        assert!(uids.get("uid-2", &store).is_none());
        // Deleted: forgotten.
        writer.apply_watcher_event(&Event::Delete(a.clone()));
        uids.remove(&a);
        assert!(uids.get("uid-1", &store).is_none() && uids.is_empty());
        // A deletion the watch missed, and the job re-created under the same name: the old UID
        // maps to nothing (and is dropped), the new one to the job.
        uids.insert(&a);
        let mut b = a.clone();
        b.metadata.uid = Some("uid-2".into());
        writer.apply_watcher_event(&Event::Apply(b.clone()));
        uids.insert(&b);
        assert!(uids.get("uid-1", &store).is_none());
        assert_eq!(uids.len(), 1);
        assert_eq!(uids.get("uid-2", &store).unwrap().name, "train");
    }

    #[test]
    fn a_jobs_placements_are_looked_up_through_its_attempt_records() {
        use gpufed_crds::AttemptPhase;
        use gpufed_crds::testing::attempt;
        use kube::runtime::reflector::store;
        use kube::runtime::watcher::Event;
        let (placements, mut writer) = store::<Placement>();
        let stores = Stores {
            jobs: store().0,
            job_uids: JobUids::default(),
            members: store().0,
            pools: store().0,
            bonds: store().0,
            placements,
            leases: store().0,
            offers: store().0,
        };
        let with_uid = |uid: &str, attempts: Vec<gpufed_crds::AttemptRecord>| {
            let mut j = job("train").build();
            j.metadata.uid = Some(uid.into());
            j.status = Some(ComputeJobStatus {
                attempt: attempts.len() as u32,
                attempts,
                ..Default::default()
            });
            j
        };
        let j = with_uid(
            "uid-1",
            vec![
                attempt(1, "alpha", AttemptPhase::Lost),
                attempt(2, "beta", AttemptPhase::Running),
            ],
        );
        let st = j.status.as_ref().unwrap();
        for rec in &st.attempts {
            let p = crate::hub::lifecycle::placement_for(&j, rec, None);
            writer.apply_watcher_event(&Event::Apply(p));
        }
        // Another job's Placements in gamma's namespace: `p1` (the name this job's attempt 1 has
        // in alpha's namespace) and `p7`.
        let other = with_uid("uid-2", vec![attempt(1, "gamma", AttemptPhase::Running)]);
        let mut moved = attempt(1, "gamma", AttemptPhase::Running);
        moved.placement = "p7".into();
        for rec in [&other.status.as_ref().unwrap().attempts[0], &moved] {
            let p = crate::hub::lifecycle::placement_for(&other, rec, None);
            writer.apply_watcher_event(&Event::Apply(p));
        }
        let names = |found: Vec<Arc<Placement>>| {
            found
                .iter()
                .map(|p| {
                    (
                        p.namespace().unwrap_or_default(),
                        p.name_any(),
                        p.spec.attempt,
                    )
                })
                .collect::<Vec<_>>()
        };
        let alpha = gpufed_crds::naming::member_namespace("alpha");
        let beta = gpufed_crds::naming::member_namespace("beta");
        assert_eq!(
            names(stores.attempt_placements("uid-1", Some(st))),
            vec![
                (alpha.clone(), "p1".into(), 1),
                (beta.clone(), "p2".into(), 2)
            ]
        );
        // A record naming a Placement the cache holds for another job finds nothing.
        let wrong = with_uid("uid-3", vec![attempt(1, "gamma", AttemptPhase::Running)]);
        assert!(
            stores
                .attempt_placements("uid-3", wrong.status.as_ref())
                .is_empty()
        );
        assert!(stores.attempt_placements("uid-1", None).is_empty());
        // A Placement gone from the cache is not found.
        let p1 = crate::hub::lifecycle::placement_for(&j, &st.attempts[0], None);
        writer.apply_watcher_event(&Event::Delete(p1));
        assert_eq!(
            names(stores.attempt_placements("uid-1", Some(st))),
            vec![(beta, "p2".into(), 2)]
        );
    }

    fn on(cluster: &str, phase: JobPhase) -> Arc<ComputeJob> {
        let mut j = job("j").build();
        j.status = Some(ComputeJobStatus {
            phase,
            placement: Some(Box::new(PlacementRef {
                cluster: cluster.into(),
                namespace: String::new(),
                name: String::new(),
                model: "H100".into(),
                price_per_gpu_hour: TokenAmount::from_atto(0),
            })),
            ..Default::default()
        });
        Arc::new(j)
    }

    #[test]
    fn only_unfinished_placed_jobs_count_per_cluster() {
        let jobs = vec![
            on("alpha", JobPhase::Running),
            on("alpha", JobPhase::Placed),
            on("alpha", JobPhase::Succeeded),
            on("beta", JobPhase::Failed),
            Arc::new(job("waiting").build()),
        ];
        let counts = active_by_cluster(&jobs);
        assert_eq!(counts.get("alpha"), Some(&2));
        assert_eq!(counts.get("beta"), None);
    }
}
