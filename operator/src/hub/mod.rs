//! `gpufed-operator hub`: waits to become leader (a second replica stands by), then runs the
//! ComputeJob, MemberCluster and GpuPool controllers and the scheduling loop over shared caches,
//! until it loses the Lease or is asked to stop.

pub mod bond_controller;
pub mod chain;
pub mod context;
pub mod job_controller;
pub mod lifecycle;
pub mod member_controller;
pub mod pool_controller;
pub mod registration;
pub mod scheduling;
pub mod settlement;
pub mod snapshot;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use gpufed_crds::naming::{LABEL_MANAGED_BY, MANAGED_BY};
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Placement, ProviderBond};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::cli::HubArgs;
use crate::error::{Error, Result};
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::Metrics;
use crate::server::Health;
use crate::shutdown_signal;
use context::{Context, HubConfig, Stores};

fn reflect<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    reader
}

async fn start_stores(client: &Client) -> Result<Stores> {
    let all = watcher::Config::default;
    let stores = Stores {
        jobs: reflect(Api::<ComputeJob>::all(client.clone()), all()),
        members: reflect(Api::<MemberCluster>::all(client.clone()), all()),
        pools: reflect(Api::<GpuPool>::all(client.clone()), all()),
        bonds: reflect(Api::<ProviderBond>::all(client.clone()), all()),
        placements: reflect(Api::<Placement>::all(client.clone()), all()),
        leases: reflect(
            Api::<Lease>::all(client.clone()),
            all().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
        ),
    };
    let not_synced =
        |what: &str| Error::Config(format!("the {what} cache stopped before it synced"));
    stores
        .jobs
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("ComputeJob"))?;
    stores
        .members
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("MemberCluster"))?;
    stores
        .pools
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("GpuPool"))?;
    stores
        .bonds
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("ProviderBond"))?;
    stores
        .placements
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("Placement"))?;
    stores
        .leases
        .wait_until_ready()
        .await
        .map_err(|_| not_synced("Lease"))?;
    Ok(stores)
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

/// Runs the hub until it loses leadership (an error) or receives SIGTERM/SIGINT.
pub async fn run(
    client: Client,
    kube_config: &kube::Config,
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
    tracing::info!(%identity, lease = %args.lease_name, "waiting to become leader");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown_signal() => return Ok(()),
    }
    metrics.leader.set(1);

    let stores = start_stores(&client).await?;
    let (settler, settle_rx) = settlement::Settler::new();
    let settler = Arc::new(settler);
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        config,
        stores,
        settler.clone(),
    ));
    tokio::spawn(settlement::run_worker(settler, settle_rx, metrics.clone()));
    let controllers = async {
        tokio::join!(
            job_controller::run(ctx.clone(), shutdown_signal()),
            member_controller::run(ctx.clone(), shutdown_signal()),
            pool_controller::run(ctx.clone(), shutdown_signal()),
        );
    };
    tracing::info!("hub controllers started");
    let result = tokio::select! {
        lost = elector.hold() => Err(lost),
        _ = controllers => Ok(()),
        _ = scheduling::run(ctx.clone()) => Ok(()),
        _ = bond_controller::run(ctx.clone()) => Ok(()),
    };
    metrics.leader.set(0);
    if result.is_ok() {
        // A clean stop (SIGTERM in a rolling update): let the standby take over now.
        elector.release().await;
    }
    result
}
