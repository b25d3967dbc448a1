//! `gpufed-operator agent`: the member side of gpufed, one per member cluster.
//!
//! It pulls from the hub and never lets the hub into the member: with the member's own hub
//! credential (which reaches only its namespace `gpufed-member-<name>` and its own MemberCluster)
//! it
//! * renews its heartbeat Lease ([`heartbeat`]);
//! * reports the GPU inventory from Nodes, GpuNodes and Pods ([`inventory`], [`member_status`]);
//! * runs the Placements addressed to it as local `batch/v1` Jobs and reports their phase and
//!   GPU-seconds back ([`plan`], [`job_builder`], [`report`], [`usage`], [`sync`]);
//! * answers tenants' log requests relayed by the hub with bounded chunks of their pods' logs
//!   ([`logs`]);
//! * fences itself — stops its Jobs — when it cannot reach the hub for too long, before the hub can
//!   give its work to another member ([`fence`], [`fencer`]).
//!
//! Pure decisions live in `fence`, `gang`, `inventory`, `job_builder`, `plan`, `report` and `usage`; the
//! tasks that talk to apiservers are `heartbeat`, `member_status`, `fencer` and `sync`, over the
//! caches and shared state of [`context`] and [`state`].

pub mod api;
pub mod cache;
pub mod cached;
pub mod clock;
pub mod context;
pub mod fence;
pub mod fencer;
pub mod gang;
pub mod heartbeat;
pub mod inventory;
pub mod job_builder;
pub mod job_data;
pub mod logs;
pub mod member_lease;
pub mod member_status;
pub mod offer;
pub mod plan;
pub mod receipts;
pub mod report;
pub mod serving;
pub mod slim;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod token;
pub mod usage;

#[cfg(test)]
mod fixtures;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gpufed_crds::naming::{LABEL_MANAGED_BY, MANAGED_BY, heartbeat_lease_name, member_namespace};
use gpufed_crds::{GpuNode, Placement};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use self::cache::Cache;
use crate::cli::AgentArgs;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::server::Health;
use api::{API_TIMEOUT, FIELD_MANAGER, timed_opt};
use cached::Pod;
use context::{Context, Stores};
use state::Shared;

/// Label that makes a namespace enforce a Pod Security Standard.
pub const PSS_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Why the jobs namespace cannot be used, if it cannot: it must exist and enforce `restricted`.
pub fn jobs_namespace_problem(name: &str, ns: Option<&Namespace>) -> Option<String> {
    let Some(ns) = ns else {
        return Some(format!(
            "the jobs namespace {name:?} does not exist on this cluster: install the gpufed-member chart (it creates it with {PSS_ENFORCE_LABEL}=restricted) or pass --jobs-namespace"
        ));
    };
    let level = ns.labels().get(PSS_ENFORCE_LABEL).map(String::as_str);
    if level != Some("restricted") {
        return Some(format!(
            "the jobs namespace {name:?} must carry the label {PSS_ENFORCE_LABEL}=restricted (it has {}): other people's workloads run there",
            level.map_or("none".to_string(), |l| format!("{l:?}"))
        ));
    }
    None
}

/// Starts a watch of `api` feeding a cache; `on_change` hears of every object that changes (and
/// of `None` when a full list has been read), after the cache has it.
fn reflect<K>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    mut slim: impl FnMut(&mut K) + Send + 'static,
    on_change: impl Fn(Option<&K>) + Send + 'static,
) -> Cache<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, mut writer) = cache::new();
    let stream = watcher(api, config)
        .backoff(api::WatchBackoff::default())
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            slim(o);
        });
    tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(event) => writer.apply(event, &on_change),
            Err(e) => {
                tracing::warn!(watch = what, error = %e, "watch failed; retrying with backoff")
            }
        }
        futures::future::ready(())
    }));
    reader
}

/// A callback that wakes `n` on every change.
fn waker<K>(n: &Arc<Notify>) -> impl Fn(Option<&K>) + Send + 'static {
    let n = n.clone();
    move |_| n.notify_one()
}

/// Waits for the first full list of `store`, saying every 30 s what it is waiting for.
async fn synced<K: Resource>(store: &Cache<K>, what: &str) -> Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => return Err(Error::Config(format!("the {what} watch stopped"))),
            Err(_) => tracing::warn!(
                watch = what,
                "still waiting for the first list of {what}: is the API reachable and may the agent list it?"
            ),
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT. Local Jobs keep running across agent restarts.
pub async fn run(
    local: Client,
    args: AgentArgs,
    limit: crate::kube_client::RateLimit,
    metrics: Metrics,
    health: Health,
) -> Result<()> {
    let mut hub_config = crate::kube_config(Some(&args.hub_kubeconfig))
        .await
        .map_err(|e| {
            Error::Config(format!(
                "hub kubeconfig {}: {e:#}",
                args.hub_kubeconfig.display()
            ))
        })?;
    // A member that joined by stake holds a short-lived token, renewed into a file (ADR 0031).
    if let Some(file) = &args.hub_token_file {
        token::use_token_file(&mut hub_config, &args.hub_kubeconfig, file)?;
        if let Some(url) = &args.hub_renew_url {
            tokio::spawn(
                token::Renewal {
                    url: url.clone(),
                    ca_file: args.hub_renew_ca_file.clone(),
                    token_file: file.clone(),
                }
                .run(),
            );
        }
    }
    let hub = crate::kube_client::client(&hub_config, limit)
        .map_err(|e| Error::Config(format!("building the hub client: {e:#}")))?;
    let jobs_ns = timed_opt(
        format!("reading the jobs namespace {}", args.jobs_namespace),
        API_TIMEOUT,
        Api::<Namespace>::all(local.clone()).get(&args.jobs_namespace),
    )
    .await?;
    if let Some(problem) = jobs_namespace_problem(&args.jobs_namespace, jobs_ns.as_ref()) {
        return Err(Error::Config(problem));
    }

    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "agent".into());
        format!("{host}-{}", std::process::id())
    });
    let member_ns = member_namespace(&args.cluster);
    tracing::info!(cluster = %args.cluster, %identity, hub_namespace = %member_ns, jobs_namespace = %args.jobs_namespace, "agent starting");
    let shared = Arc::new(Shared::new());
    tokio::spawn(heartbeat::run(
        Api::<Lease>::namespaced(hub.clone(), &member_ns),
        heartbeat_lease_name(&args.cluster),
        identity.clone(),
        args.heartbeat_interval,
        shared.clone(),
        metrics.clone(),
    ));

    let offer_key = match &args.offer_signing_key_file {
        Some(path) => Some(offer::read_key(path)?),
        None => None,
    };
    tokio::spawn(offer::run(
        hub.clone(),
        shared.clone(),
        args.cluster.clone(),
        args.offers.clone(),
        offer_key.map(|key| offer::Signer {
            key,
            valid_for: args.offer_valid_for,
        }),
    ));

    let sync_wake = Arc::new(Notify::new());
    let logs_wake = Arc::new(Notify::new());
    let inventory_changed = Arc::new(Notify::new());
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let pods_changed = {
        let (inventory, sync) = (inventory_changed.clone(), sync_wake.clone());
        let jobs_ns = args.jobs_namespace.clone();
        move |pod: Option<&Pod>| {
            // Every pod changes free GPUs; only pods of the jobs namespace change placements.
            inventory.notify_one();
            if pod.is_none_or(|p| p.metadata.namespace.as_deref() == Some(jobs_ns.as_str())) {
                sync.notify_one();
            }
        }
    };
    let stores = Stores {
        placements: reflect(
            "placements",
            Api::<Placement>::namespaced(hub.clone(), &member_ns),
            watcher::Config::default(),
            slim::placement,
            {
                let (sync, logs) = (sync_wake.clone(), logs_wake.clone());
                move |_: Option<&Placement>| {
                    sync.notify_one();
                    logs.notify_one();
                }
            },
        ),
        jobs: reflect(
            "jobs",
            Api::<cached::Job>::namespaced(local.clone(), &args.jobs_namespace),
            watcher::Config::default().labels(&managed),
            slim::job,
            waker(&sync_wake),
        ),
        pods: reflect(
            "pods",
            Api::<Pod>::all(local.clone()),
            watcher::Config::default(),
            {
                let ns = args.jobs_namespace.clone();
                move |p: &mut Pod| slim::pod(p, &ns)
            },
            pods_changed,
        ),
        nodes: reflect(
            "nodes",
            Api::<Node>::all(local.clone()),
            watcher::Config::default(),
            slim::node,
            waker(&inventory_changed),
        ),
        gpu_nodes: reflect(
            "gpunodes",
            Api::<GpuNode>::all(local.clone()),
            watcher::Config::default(),
            {
                let shared = shared.clone();
                move |g: &mut GpuNode| shared.saw_reading(g)
            },
            waker(&inventory_changed),
        ),
        services: reflect(
            "services",
            Api::<Service>::namespaced(local.clone(), &args.jobs_namespace),
            watcher::Config::default().labels(&managed),
            |_: &mut _| {},
            waker(&sync_wake),
        ),
    };
    let reporter = |instance: &str| crate::events::Reporter {
        controller: FIELD_MANAGER.into(),
        instance: instance.to_string(),
    };
    let dropped = metrics.events_dropped.clone();
    let ctx = Arc::new(Context {
        hub_events: crate::events::Events::start(hub.clone(), reporter(&identity), dropped.clone()),
        local_events: crate::events::Events::start(local.clone(), reporter(&identity), dropped),
        identity,
        args,
        hub,
        local,
        stores,
        shared: shared.clone(),
        metrics,
        health,
        sealing: crate::sealing::SealingKey::generate(),
    });
    // The lease's state is judged on the member's clock: read its offset before the fencer looks.
    clock::update(&ctx.local, &ctx.shared, &ctx.metrics).await;
    tokio::spawn(clock::run(
        ctx.local.clone(),
        ctx.shared.clone(),
        ctx.metrics.clone(),
    ));
    // Fencing needs only the local Jobs; it must work while the hub is unreachable.
    tokio::spawn(fencer::run(ctx.clone()));

    let start = {
        let ctx = ctx.clone();
        async move {
            synced(&ctx.stores.nodes, "nodes").await?;
            synced(&ctx.stores.gpu_nodes, "GpuNodes").await?;
            synced(&ctx.stores.pods, "pods").await?;
            tokio::spawn(member_status::run(ctx.clone(), inventory_changed));
            synced(&ctx.stores.jobs, "local Jobs").await?;
            synced(&ctx.stores.services, "gang Services").await?;
            // Until the Placements are listed, every local Job would look orphaned.
            synced(&ctx.stores.placements, "Placements on the hub").await?;
            tokio::spawn(forward(sync_wake, ctx.clone()));
            tokio::spawn(logs::run(ctx.clone(), logs_wake));
            tracing::info!("caches synced; running placements");
            sync::run(ctx).await;
            Ok::<(), Error>(())
        }
    };
    tokio::select! {
        r = start => r,
        _ = crate::shutdown_signal() => {
            tracing::info!("agent stopping; local Jobs keep running");
            Ok(())
        }
    }
}

/// Passes wake-ups of the watches on to the sync.
async fn forward(from: Arc<Notify>, ctx: Arc<Context>) {
    loop {
        from.notified().await;
        ctx.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ns(labels: &[(&str, &str)]) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some("gpufed-jobs".into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        n
    }

    #[test]
    fn a_missing_jobs_namespace_is_named_with_the_fix() {
        let p = jobs_namespace_problem("gpufed-jobs", None).unwrap();
        assert!(p.contains("\"gpufed-jobs\" does not exist"), "{p}");
        assert!(p.contains("gpufed-member chart"), "{p}");
    }

    #[test]
    fn the_jobs_namespace_must_enforce_restricted_pod_security() {
        assert_eq!(
            jobs_namespace_problem(
                "gpufed-jobs",
                Some(&ns(&[(PSS_ENFORCE_LABEL, "restricted")]))
            ),
            None
        );
        let p =
            jobs_namespace_problem("gpufed-jobs", Some(&ns(&[(PSS_ENFORCE_LABEL, "baseline")])))
                .unwrap();
        assert!(p.contains("(it has \"baseline\")"), "{p}");
        assert!(jobs_namespace_problem("gpufed-jobs", Some(&ns(&[]))).is_some());
    }
}
