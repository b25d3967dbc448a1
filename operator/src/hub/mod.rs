//! `gpufed-operator hub`: waits to become leader (a second replica stands by), then runs the
//! ComputeJob, MemberCluster and GpuPool controllers and the scheduling loop over shared caches,
//! until it loses the Lease or is asked to stop. Every write it makes as leader is fenced by the
//! Lease ([`crate::fenced`]): refused once this replica cannot be sure it still holds it.

pub mod at_rest;
pub mod bond_controller;
pub mod chain;
pub mod challenge_controller;
pub mod challenge_gpus;
pub mod challenges;
pub mod compensation;
pub mod context;
pub mod job_controller;
pub mod join;
pub mod lifecycle;
pub mod log_relay;
pub mod market;
pub mod member_controller;
pub mod offers;
pub mod period_usage;
pub mod periods;
pub mod pool_controller;
pub mod preemption;
pub mod quota_ledger;
pub mod reclaim;
pub mod registration;
pub mod reputation;
pub mod result_check;
pub mod result_check_controller;
pub mod scheduling;
pub mod secrets;
pub mod serving;
pub mod settlement;
pub mod slash_controller;
pub mod slashing;
pub mod snapshot;
pub mod stale;
pub mod status;
pub mod utilisation;

use std::sync::Arc;

use futures::StreamExt;
use gpufed_crds::naming::{LABEL_MANAGED_BY, MANAGED_BY};
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Offer, Placement, ProviderBond};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::cli::HubArgs;
use crate::error::{Error, Result};
use crate::fenced::WriteFence;
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::server::Health;
use crate::shutdown_signal;
use context::{Context, HubConfig, JobUids, Stores};

/// Objects a subscriber hears about: every applied object (from the shared reflector) and every
/// deleted one (which kube's shared streams do not pass on).
pub type Subscription<K> = futures::stream::BoxStream<'static, Arc<K>>;

/// Events buffered per subscriber before the watch waits for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// What the hub's cache keeps of an object's metadata: no managedFields and no kubectl
/// last-applied copy (the hub reads neither, and they are most of a small object's size).
pub fn slim_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What the hub's cache keeps of a ComputeJob (after [`slim_meta`]): a finished job never gets
/// another Placement, so its pod template is not kept, unless a result check still has to copy it
/// into a run or compare a run with it (ADR 0034). A job at rest ([`at_rest_in_cache`]) is kept
/// with only what is read of finished jobs: its attempts' accounting (member, phase, reason,
/// times, GPU-seconds, exits, money) for quotas, reputation, compensation and the quota ledger;
/// not its conditions, explanation, message, Placement reference or endpoint, nor its attempts'
/// messages and planned nodes, which are read only of jobs in progress.
pub fn slim_job(j: &mut ComputeJob) {
    let at_rest = at_rest_in_cache(j);
    if j.status.as_ref().is_some_and(|s| s.phase.is_finished()) && !result_check::needs_template(j)
    {
        j.spec.template = Default::default();
    }
    if !at_rest {
        return;
    }
    if let Some(st) = j.status.as_mut() {
        st.conditions = Vec::new();
        st.explanation = None;
        st.message = None;
        st.placement = None;
        st.endpoint = None;
        for a in &mut st.attempts {
            a.message = None;
            a.planned_nodes = Vec::new();
        }
    }
}

/// Whether the hub's cache holds `j` trimmed by [`slim_job`] to what is read of a finished job:
/// it finished with every attempt's money at rest ([`lifecycle::at_rest`]), has no result check
/// (the check compares runs' statuses), and is not one of the hub's own challenges (whose verdict
/// reads its attempts' messages). What decides it is kept in the trimmed copy, so the predicate
/// answers the same for it. Nothing computes a status to write from such a copy: the job
/// controller reads the whole job from the apiserver first, and only when the job was edited.
pub fn at_rest_in_cache(j: &ComputeJob) -> bool {
    j.status.as_ref().is_some_and(lifecycle::at_rest)
        && j.spec.result_check.is_none()
        && !result_check::needs_template(j)
        && !challenges::is_hub_job(j)
}

/// Whether the hub's job store keeps `j` (ADR 0041): not once it is at rest
/// ([`at_rest_in_cache`]), when its record ([`at_rest::JobAtRest`], in the index of jobs by UID)
/// is all that is read of it — unless it is being deleted (the job controller releases it) or was
/// edited since the hub last observed it (the controller reconciles the edit), until the
/// controller is done with it.
pub fn keep_job(j: &ComputeJob) -> bool {
    !at_rest_in_cache(j)
        || j.metadata.deletion_timestamp.is_some()
        || j.status.as_ref().and_then(|s| s.observed_generation) != j.metadata.generation
}

/// What the hub's cache keeps of a Placement (after [`slim_meta`]): not its pod template, which
/// the hub wrote and never reads back, nor its labels, which repeat the spec (the hub finds a
/// job's Placements by `spec.job.uid`; it selects by label only in requests to the apiserver).
pub fn slim_placement(p: &mut Placement) {
    p.spec.template = Default::default();
    p.metadata.labels = None;
}

/// Whether the hub's cache keeps Placement `p`: not once its job is at rest
/// ([`at_rest_in_cache`], recorded in `uids`). Nothing reads such a Placement from the cache: its
/// job is not reconciled again unless edited, and then only its attempts' accounting and phase
/// are read; the log relay asks the apiserver for it. One finished job's Placement was 1,408
/// bytes of the 3,227 the cache held per finished job (`operator/tests/hub_cache_footprint.rs`).
pub fn keep_placement(p: &Placement, uids: &JobUids) -> bool {
    !uids.at_rest(&p.spec.job.uid)
}

/// Asks a shared watch ([`watch_kept`]) to look at a cached object again and drop it if its
/// `keep` says no; what decides it changed outside the object (a Placement's job came to rest).
pub struct Evict<K: Resource<DynamicType = ()>>(tokio::sync::mpsc::UnboundedSender<ObjectRef<K>>);

impl<K: Resource<DynamicType = ()>> Evict<K> {
    /// Drops `name` in `namespace` from the cache if it is cached and not kept. A request sent
    /// after the watch stopped is moot: so is the cache.
    pub fn send(&self, name: &str, namespace: &str) {
        let _ = self.0.send(ObjectRef::new(name).within(namespace));
    }
}

/// The requests an [`Evict`] sends, as its watch receives them (and a sender, for the watch's own).
pub struct EvictRequests<K: Resource<DynamicType = ()>> {
    again: tokio::sync::mpsc::UnboundedSender<ObjectRef<K>>,
    requests: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<K>>,
}

/// An [`Evict`] and the requests it sends, for a [`Kept`] policy.
fn evict_channel<K: Resource<DynamicType = ()>>() -> (Evict<K>, EvictRequests<K>) {
    let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
    (
        Evict(tx.clone()),
        EvictRequests {
            again: tx,
            requests,
        },
    )
}

/// What [`watch_kept`] keeps of a kind: `keep` says which objects; `evictions` are the requests
/// of an [`Evict`] to look at a cached object again; the watch starts once `start` resolves (when
/// `keep` needs another cache filled first, so that a first list is not cached whole and then
/// dropped); `listed` is set once the cache holds its first full list. (Not
/// `Store::wait_until_ready`, which wakes only one of several tasks waiting on it.)
struct Kept<K: Resource<DynamicType = ()>, F> {
    keep: F,
    evictions: EvictRequests<K>,
    start: futures::future::BoxFuture<'static, ()>,
    listed: tokio::sync::watch::Sender<bool>,
    /// Sees each object a list or an update shows that `keep` does not keep, before the cache
    /// drops it (so whatever it records of the object exists before the object leaves the cache).
    skipped: Box<dyn Fn(&K) + Send + Sync>,
    /// Told when a full list begins (`false`) and once it has ended (`true`), in order with
    /// `skipped` and the watch's `on_apply`.
    lists: Box<dyn Fn(bool) + Send + Sync>,
}

impl<K: Resource<DynamicType = ()>> Kept<K, fn(&K) -> bool> {
    /// Every object kept, the watch started at once.
    fn all() -> Self {
        Kept {
            keep: |_: &K| true,
            evictions: evict_channel().1,
            start: Box::pin(futures::future::ready(())),
            listed: tokio::sync::watch::Sender::new(false),
            skipped: Box::new(|_: &K| {}),
            lists: Box::new(|_| {}),
        }
    }
}

/// An object a shared watch drops from its cache without its being deleted, as the store's writer
/// is told: marked by having no UID, which every object the apiserver serves has.
fn evicted<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().uid = None;
    obj
}

fn is_evicted<K: Resource>(obj: &K) -> bool {
    obj.meta().uid.is_none()
}

/// One watch of a kind, shared by the cache (`Store`) and `subscribers` controller streams.
/// `slim` trims each object before it is cached; `on_apply` sees each applied object once the
/// cache holds it, `on_delete` each deleted one once the cache dropped it. Every subscription must
/// be consumed: a full subscriber holds the watch back.
fn watch_shared<K>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
    slim: impl FnMut(&mut K) + Send + 'static,
    on_apply: impl Fn(&K) + Send + 'static,
    on_delete: impl Fn(&K) + Send + 'static,
) -> Result<(Store<K>, Vec<Subscription<K>>)>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watch_kept(
        api,
        config,
        subscribers,
        slim,
        Kept::all(),
        on_apply,
        on_delete,
    )
}

/// [`watch_shared`] for a kind the cache keeps only some objects of: `policy.keep` says which. An
/// object not kept is neither cached nor passed to subscribers or `on_apply`, only to
/// `policy.skipped` (an update of a cached one drops it, as if deleted, but `on_delete` and the
/// subscribers are not told; a deletion is passed to `on_delete` and the subscribers, kept or
/// not). Whether an object is kept may change without the object changing: the policy's [`Evict`]
/// asks the watch to look at a cached one again, and the watch looks at every cached object again
/// after each full list.
fn watch_kept<K, F>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
    mut slim: impl FnMut(&mut K) + Send + 'static,
    policy: Kept<K, F>,
    on_apply: impl Fn(&K) + Send + 'static,
    on_delete: impl Fn(&K) + Send + 'static,
) -> Result<(Store<K>, Vec<Subscription<K>>)>
where
    F: Fn(&K) -> bool + Send + Sync + 'static,
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store_shared(SUBSCRIBER_BUFFER);
    let mut subscriptions = Vec::with_capacity(subscribers);
    let mut deleted = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let applied = writer
            .subscribe()
            .ok_or_else(|| Error::Config(format!("the {} cache cannot be shared", K::kind(&()))))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<K>>();
        deleted.push(tx);
        let gone = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        subscriptions.push(futures::stream::select(applied, gone).boxed());
    }
    let Kept {
        keep,
        evictions: EvictRequests {
            again,
            requests: mut evict_rx,
        },
        start,
        listed,
        skipped,
        lists,
    } = policy;
    let keep = Arc::new(keep);
    let kept = keep.clone();
    let watched = futures::stream::once(start)
        .flat_map(move |()| watcher(api.clone(), config.clone()))
        .default_backoff()
        .modify(move |obj: &mut K| {
            slim_meta(obj.meta_mut());
            slim(obj);
        })
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(watcher::Event::InitApply(obj)) if !kept(&obj) => {
                    skipped(&obj);
                    None
                }
                Ok(watcher::Event::Apply(obj)) if !kept(&obj) => {
                    skipped(&obj);
                    Some(Ok(watcher::Event::Delete(evicted(obj))))
                }
                Ok(watcher::Event::Init) => {
                    lists(false);
                    Some(Ok(watcher::Event::Init))
                }
                Ok(watcher::Event::InitDone) => {
                    lists(true);
                    Some(Ok(watcher::Event::InitDone))
                }
                other => Some(other),
            })
        });
    // A request is looked up when the watch gets to it, after every event before it was cached:
    // a cached object is found even if it arrived just before the request was sent.
    let (cached, kept) = (reader.clone(), keep.clone());
    let evictions = futures::stream::poll_fn(move |cx| evict_rx.poll_recv(cx)).filter_map(
        move |at: ObjectRef<K>| {
            let drop = cached
                .get(&at)
                .filter(|obj| !kept(obj))
                .map(|obj| Ok(watcher::Event::Delete(evicted(obj.as_ref().clone()))));
            futures::future::ready(drop)
        },
    );
    let rescan = reader.clone();
    let stream = futures::stream::select(watched, evictions)
        .reflect_shared(writer)
        .for_each(move |event| {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => on_apply(&obj),
                Ok(watcher::Event::Delete(obj)) if is_evicted(&obj) => {}
                Ok(watcher::Event::Delete(obj)) => {
                    on_delete(&obj);
                    let obj = Arc::new(obj);
                    for tx in &deleted {
                        let _ = tx.send(obj.clone());
                    }
                }
                // A request that came while the list was buffered found nothing cached: look again.
                Ok(watcher::Event::InitDone) => {
                    for obj in rescan.state().iter().filter(|o| !keep(o)) {
                        let _ = again.send(ObjectRef::from_obj(obj.as_ref()));
                    }
                    listed.send_replace(true);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
            }
            futures::future::ready(())
        });
    tokio::spawn(stream);
    Ok((reader, subscriptions))
}

/// What each controller subscribes to.
pub struct Subscriptions {
    /// The ComputeJob controller: jobs, placements, members, pools.
    pub job: JobSubscriptions,
    /// The MemberCluster controller: members, heartbeat Leases, bonds.
    pub member: (
        Subscription<MemberCluster>,
        Subscription<Lease>,
        Subscription<ProviderBond>,
    ),
    /// The GpuPool controller: pools, members.
    pub pool: (Subscription<GpuPool>, Subscription<MemberCluster>),
}

/// The ComputeJob controller's subscriptions.
pub struct JobSubscriptions {
    /// Jobs (the controller's own kind).
    pub jobs: Subscription<ComputeJob>,
    /// Placements (mapped to their job).
    pub placements: Subscription<Placement>,
    /// Members (mapped to the jobs running there, when readiness changes).
    pub members: Subscription<MemberCluster>,
    /// Pools (mapped to their jobs, when the spec changes).
    pub pools: Subscription<GpuPool>,
}

fn take<K>(subs: &mut Vec<Subscription<K>>) -> Result<Subscription<K>> {
    subs.pop()
        .ok_or_else(|| Error::Config("a cache has fewer subscriptions than controllers".into()))
}

/// Starts one watch per kind; `schedule` is woken whenever the cache shows a job waiting for the
/// scheduler (the queue is driven by the watch, not by whoever wrote the job), `offer_changed`
/// whenever an Offer changes.
fn start_stores(
    client: &Client,
    schedule: Arc<tokio::sync::Notify>,
    offer_changed: Arc<tokio::sync::Notify>,
) -> Result<(Stores, Subscriptions)> {
    let all = watcher::Config::default;
    let wake_on_offer = schedule.clone();
    let job_uids = JobUids::default();
    let (drop_uid, placement_uids, listed_uids) =
        (job_uids.clone(), job_uids.clone(), job_uids.clone());
    let (evict_placements, placement_evictions) = evict_channel::<Placement>();
    // Every job the watch shows goes through the index of jobs by UID, kept or not: a job at rest
    // is recorded there (ADR 0041), and the first time it shows at rest its Placements leave the
    // cache.
    let index = {
        let uids = job_uids.clone();
        Arc::new(move |j: &ComputeJob| {
            if uids.insert(j) {
                for a in j.status.iter().flat_map(|s| s.attempts.iter()) {
                    evict_placements.send(
                        &a.placement,
                        &gpufed_crds::naming::member_namespace(&a.cluster),
                    );
                }
            }
        })
    };
    let index_skipped = index.clone();
    let jobs_policy = Kept {
        keep: keep_job,
        evictions: evict_channel().1,
        start: Box::pin(futures::future::ready(())),
        listed: tokio::sync::watch::Sender::new(false),
        skipped: Box::new(move |j: &ComputeJob| index_skipped(j)),
        lists: Box::new(move |done| listed_uids.listed(done)),
    };
    let mut jobs_listed = jobs_policy.listed.subscribe();
    let (jobs, mut job_subs) = watch_kept(
        Api::<ComputeJob>::all(client.clone()),
        all(),
        1,
        slim_job,
        jobs_policy,
        move |j: &ComputeJob| {
            index(j);
            if scheduling::is_queued(j) {
                schedule.notify_one();
            }
        },
        move |j: &ComputeJob| drop_uid.remove(j),
    )?;
    // Placements are listed once every job is cached, so that none of a job at rest is cached
    // (and dropped again) on the way.
    let placement_policy = Kept {
        keep: move |p: &Placement| keep_placement(p, &placement_uids),
        evictions: placement_evictions,
        start: Box::pin(async move {
            let _ = jobs_listed.wait_for(|listed| *listed).await;
        }),
        listed: tokio::sync::watch::Sender::new(false),
        skipped: Box::new(|_: &Placement| {}),
        lists: Box::new(|_| {}),
    };
    let (placements, mut placement_subs) = watch_kept(
        Api::<Placement>::all(client.clone()),
        all(),
        1,
        slim_placement,
        placement_policy,
        |_: &Placement| {},
        |_: &Placement| {},
    )?;
    let (members, mut member_subs) = watch_shared(
        Api::<MemberCluster>::all(client.clone()),
        all(),
        3,
        |_: &mut MemberCluster| {},
        |_: &MemberCluster| {},
        |_: &MemberCluster| {},
    )?;
    let (pools, mut pool_subs) = watch_shared(
        Api::<GpuPool>::all(client.clone()),
        all(),
        2,
        |_: &mut GpuPool| {},
        |_: &GpuPool| {},
        |_: &GpuPool| {},
    )?;
    let (bonds, mut bond_subs) = watch_shared(
        Api::<ProviderBond>::all(client.clone()),
        all(),
        1,
        |_: &mut ProviderBond| {},
        |_: &ProviderBond| {},
        |_: &ProviderBond| {},
    )?;
    let (leases, mut lease_subs) = watch_shared(
        Api::<Lease>::all(client.clone()),
        all().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
        1,
        |_: &mut Lease| {},
        |_: &Lease| {},
        |_: &Lease| {},
    )?;
    // Offers (ADR 0024): read by the scheduling pass and the pool roll-up from the cache only; a
    // new price may let a job that waits for one fit, so it wakes the scheduler, and a new spec
    // is checked (`offers::run`).
    let (offers, _) = watch_shared(
        Api::<Offer>::all(client.clone()),
        all().fields(&format!("metadata.name={}", gpufed_crds::OFFER_NAME)),
        0,
        |_: &mut Offer| {},
        move |_: &Offer| {
            wake_on_offer.notify_one();
            offer_changed.notify_one();
        },
        |_: &Offer| {},
    )?;
    let subscriptions = Subscriptions {
        job: JobSubscriptions {
            jobs: take(&mut job_subs)?,
            placements: take(&mut placement_subs)?,
            members: take(&mut member_subs)?,
            pools: take(&mut pool_subs)?,
        },
        member: (
            take(&mut member_subs)?,
            take(&mut lease_subs)?,
            take(&mut bond_subs)?,
        ),
        pool: (take(&mut pool_subs)?, take(&mut member_subs)?),
    };
    let stores = Stores {
        jobs,
        job_uids,
        members,
        pools,
        bonds,
        placements,
        leases,
        offers,
    };
    Ok((stores, subscriptions))
}

/// How often `gpufed_hub_cached_objects` is brought up to date.
const CACHE_GAUGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `gpufed_hub_cached_objects` up to date, until the task is dropped.
async fn count_cached(ctx: Arc<Context>) {
    loop {
        let s = &ctx.stores;
        for (kind, n) in [
            ("ComputeJob", s.jobs.len()),
            ("ComputeJobAtRest", s.job_uids.records_len()),
            ("Placement", s.placements.len()),
            ("MemberCluster", s.members.len()),
            ("GpuPool", s.pools.len()),
            ("ProviderBond", s.bonds.len()),
            ("Lease", s.leases.len()),
            ("Offer", s.offers.len()),
        ] {
            ctx.metrics
                .cached_objects
                .with_label_values(&[kind])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        tokio::time::sleep(CACHE_GAUGE_INTERVAL).await;
    }
}

/// PEM text of DER certificates.
pub fn der_to_pem(certs: &[Vec<u8>]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = String::new();
    for der in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .map_err(|source| Error::Serde {
            context: "namespace".into(),
            source,
        })?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("creating namespace {name}"))(e)),
    }
}

/// Runs the hub until it loses leadership (an error) or receives SIGTERM/SIGINT. `client` (plain)
/// serves the election; the hub's own work gets a client built from `kube_config` and `limit`
/// with the leadership fence.
pub async fn run(
    client: Client,
    kube_config: &kube::Config,
    limit: crate::kube_client::RateLimit,
    args: HubArgs,
    metrics: Metrics,
    health: Health,
) -> Result<()> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into());
        format!("{host}-{}", std::process::id())
    });
    let member_api_ca = match &args.member_api_ca_file {
        Some(path) => std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "reading --member-api-ca-file {}: {e}",
                path.display()
            ))
        })?,
        None => der_to_pem(kube_config.root_cert.as_deref().unwrap_or_default()),
    };
    let config = HubConfig {
        namespace: args.namespace.clone(),
        member_api_server: args.member_api_server.clone().unwrap_or_else(|| {
            kube_config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string()
        }),
        member_api_ca,
    };
    let registration = match (
        args.registration_listen,
        &args.registration_tls_cert,
        &args.registration_tls_key,
    ) {
        (Some(listen), Some(cert), Some(key)) => Some(join::server::RegistrationConfig {
            listen,
            tls_cert: cert.clone(),
            tls_key: key.clone(),
            token_ttl: args.registration_token_ttl,
            burst: args.registration_burst,
            refill: args.registration_refill,
        }),
        _ => None,
    };
    let registration_base = kube_config.clone();
    ensure_namespace(&client, &args.namespace).await?;
    health.set_ready(true);

    let mut elector = LeaderElector::new(
        client.clone(),
        LeaderConfig::new(
            &args.namespace,
            &args.lease_name,
            &identity,
            args.lease_duration,
        ),
    );
    // The election keeps the plain client; everything the hub writes as leader goes through a
    // client fenced by the election's write deadline (docs/adr/0016-leadership-fenced-writes.md).
    let fence = WriteFence::new(elector.leadership(), metrics.hub_writes_refused.clone());
    let client = crate::kube_client::fenced_client(kube_config, limit, Some(fence.layer()))
        .map_err(|e| Error::Config(format!("building the hub's API client: {e}")))?;
    tracing::info!(%identity, lease = %args.lease_name, "waiting to become leader");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown_signal() => return Ok(()),
    }
    metrics.leader.set(1);

    let lead = async {
        let schedule = Arc::new(tokio::sync::Notify::new());
        let offer_changed = Arc::new(tokio::sync::Notify::new());
        let (stores, subs) = start_stores(&client, schedule.clone(), offer_changed.clone())?;
        // Every cache has its first list before anything decides (a pool or member not listed
        // yet is not a missing one). One waiter per cache: kube's readiness future wakes only the
        // last task that polled it, so the controllers start after this, on ready caches. A cache
        // is ready before it hands its objects to subscribers, so waiting here cannot block a
        // watch.
        stores.synced().await?;
        tracing::info!("hub caches synced");
        let (settler, settle_rx) = settlement::Settler::new();
        let settler = Arc::new(settler);
        let ctx = Arc::new(Context::new(
            client,
            fence,
            metrics.clone(),
            config,
            stores,
            settler.clone(),
            schedule,
        ));
        tokio::spawn(settlement::run_worker(settler, settle_rx, metrics.clone()));
        let Subscriptions { job, member, pool } = subs;
        // The controllers and each loop are tasks of their own, so they run on all of the
        // runtime's threads (as one task they shared one thread, the Lease renewal included). The
        // controllers end together on SIGTERM, each after its running reconciles (graceful
        // shutdown); that ends the loops, which never end on their own.
        let mut work = Tasks::default();
        let controllers = (
            job_controller::run(ctx.clone(), job, shutdown_signal()),
            member_controller::run(ctx.clone(), member, shutdown_signal()),
            pool_controller::run(ctx.clone(), pool, shutdown_signal()),
        );
        work.spawn("controllers", async move {
            tokio::join!(controllers.0, controllers.1, controllers.2);
        });
        tracing::info!("hub controllers started");
        if let Some(config) = registration {
            let ctx = ctx.clone();
            work.spawn("registration endpoint", async move {
                if let Err(e) = join::server::run(ctx, registration_base, config).await {
                    // The hub's other work goes on without its endpoint.
                    tracing::error!(error = %e, "registration endpoint stopped");
                }
                // Ending here would end the controllers: they end on SIGTERM, after their
                // running reconciles, and the endpoint stops with the process.
                std::future::pending::<()>().await
            });
        }
        work.spawn("scheduling", scheduling::run(ctx.clone()));
        work.spawn("bond controller", bond_controller::run(ctx.clone()));
        work.spawn("log relay", log_relay::run(ctx.clone()));
        work.spawn(
            "challenge controller",
            challenge_controller::run(ctx.clone()),
        );
        work.spawn("reputation", reputation::run(ctx.clone()));
        work.spawn("cache gauges", count_cached(ctx.clone()));
        work.spawn("offers", offers::run(ctx.clone(), offer_changed));
        work.spawn("slash controller", slash_controller::run(ctx.clone()));
        work.spawn(
            "result check controller",
            result_check_controller::run(ctx.clone()),
        );
        work.first_to_end().await
    };
    // The Lease is renewed from the moment it is held, also while the caches sync, in a task of
    // its own: however busy the controllers are, a renewal waits only for a free runtime thread.
    // `release` tells it how the hub stopped: true for a clean stop (SIGTERM in a rolling
    // update), after which it clears the Lease so the standby takes over now.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut holder = tokio::spawn(async move {
        tokio::select! {
            lost = elector.hold() => Some(lost),
            release = release_rx => {
                if release.unwrap_or(false) {
                    elector.release().await;
                }
                None
            }
        }
    });
    let result = tokio::select! {
        held = &mut holder => Err(lost_or_panicked(held)),
        done = lead => {
            let _ = release_tx.send(done.is_ok());
            match holder.await {
                Ok(None) => done,
                held => Err(lost_or_panicked(held)),
            }
        }
    };
    metrics.leader.set(0);
    result
}

/// Why the Lease holder's task ended on its own: leadership lost (or the task panicked).
fn lost_or_panicked(held: std::result::Result<Option<Error>, tokio::task::JoinError>) -> Error {
    match held {
        Ok(Some(lost)) => lost,
        Ok(None) => Error::LostLeadership,
        Err(e) => Error::Panicked {
            task: "leader Lease",
            detail: e.to_string(),
        },
    }
}

/// The hub's controllers and loops, each a task of its own so they run on all of the runtime's
/// threads (as one task they shared one thread, the Lease renewal included). Dropping the set
/// aborts every task in it.
#[derive(Default)]
struct Tasks {
    set: tokio::task::JoinSet<()>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first task to end (the controllers end on SIGTERM; the loops never do) and
    /// aborts the rest: a panic is an error that names the task.
    async fn first_to_end(mut self) -> Result<()> {
        let ended = self.set.join_next_with_id().await;
        self.set.abort_all();
        match ended {
            Some(Ok((id, ()))) => {
                tracing::info!(
                    task = self.names.get(&id).copied().unwrap_or("?"),
                    "hub task ended; stopping the others"
                );
                Ok(())
            }
            Some(Err(e)) => Err(Error::Panicked {
                task: self.names.get(&e.id()).copied().unwrap_or("hub"),
                detail: e.to_string(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_aborts_the_others() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let mut tasks = Tasks::default();
        tasks.spawn("loop", async move {
            // Sends when the task is dropped, i.e. aborted.
            let _guard = dropped_tx;
            std::future::pending::<()>().await
        });
        tasks.spawn("controllers", async {});
        assert!(tasks.first_to_end().await.is_ok());
        assert!(dropped_rx.await.is_err(), "the loop was aborted");
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_error_that_names_it() {
        let mut tasks = Tasks::default();
        tasks.spawn("loop", std::future::pending::<()>());
        tasks.spawn("scheduling", async { panic!("boom") });
        match tasks.first_to_end().await {
            Err(Error::Panicked { task, detail }) => {
                assert_eq!(task, "scheduling");
                assert!(detail.contains("panic"), "{detail}");
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
}
