//! The gpufed operator: one binary, two modes.
//!
//! * [`hub`]: on the hub cluster — places `ComputeJob`s with the pure scheduling core
//!   (`gpufed-scheduler`), runs their lifecycle through `Placement`s, watches member health and
//!   fails over lost attempts, rolls up pool capacity, and (with a chain) settles payment.
//! * [`agent`]: on each member cluster — heartbeats to the hub, reports GPU inventory, and runs the
//!   Placements addressed to it as local `batch/v1` Jobs (pull model: the hub never holds
//!   credentials to a member).
//!
//! Shared pieces: command line ([`cli`]), logging ([`telemetry`]), metrics and health endpoints
//! ([`metrics`], [`server`]), leader election ([`leader`]) and the writes it fences ([`fenced`]),
//! errors ([`error`]), tenant Secrets sealed to one member ([`sealing`]).

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod error;
pub mod events;
pub mod fenced;
pub mod hub;
pub mod kube_client;
pub mod leader;
pub mod malloc;
pub mod metrics;
pub mod presign;
pub mod sealing;
pub mod server;
pub mod telemetry;
pub mod usage_check;

use std::path::Path;

use cli::{Cli, Command, CrdSide};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Makes ring the process's TLS crypto provider (kube and the chain RPC client both use rustls).
/// Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Resolves after SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A kube client configuration from a kubeconfig file, or inferred (in-cluster, then ~/.kube/config).
pub async fn kube_config(path: Option<&Path>) -> anyhow::Result<kube::Config> {
    let mut config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    // Bound every call; watches use server-side timeouts below the read timeout.
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.write_timeout = Some(std::time::Duration::from_secs(30));
    Ok(config)
}

/// Runs the mode chosen on the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Crd(args) = &cli.command {
        let side = match args.side {
            CrdSide::All => None,
            CrdSide::Hub => Some(gpufed_crds::Side::Hub),
            CrdSide::Member => Some(gpufed_crds::Side::Member),
        };
        for (s, crd) in gpufed_crds::all_crds() {
            if side.is_none_or(|want| want == s) {
                println!("---\n{}", gpufed_crds::crd_yaml(&crd)?);
            }
        }
        return Ok(());
    }
    install_crypto();
    tokio::spawn(malloc::trim_every(cli.malloc_trim_interval));
    let metrics = metrics::Metrics::new()?;
    let health = server::Health::new(metrics.clone());
    let addr = cli.metrics_addr;
    let server_health = health.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve(addr, server_health).await {
            tracing::error!(error = %e, %addr, "metrics server stopped");
        }
    });
    let config = kube_config(cli.kubeconfig.as_deref()).await?;
    let limit = cli.rate_limit();
    let client = kube_client::client(&config, limit)?;
    match cli.command {
        Command::Hub(args) => hub::run(client, &config, limit, args, metrics, health).await?,
        Command::Agent(args) => agent::run(client, args, limit, metrics, health).await?,
        Command::Crd(_) => {}
    }
    Ok(())
}
