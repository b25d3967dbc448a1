//! The HTTP side: `/metrics` (Prometheus text), `/healthz` (the process is alive) and `/readyz`
//! (ready once the probe has written to the apiserver at least once).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{error, info};

use crate::error::ProbeError;
use crate::metrics::Metrics;

/// What the HTTP handlers share with the probe loop.
#[derive(Debug)]
pub struct ProbeState {
    /// The probe's metrics.
    pub metrics: Metrics,
    ready: AtomicBool,
}

impl ProbeState {
    /// Fresh metrics, not ready.
    pub fn new() -> Result<Self, ProbeError> {
        Ok(ProbeState {
            metrics: Metrics::new()?,
            ready: AtomicBool::new(false),
        })
    }

    /// Mark the probe ready (after its first successful write).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether the probe is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The router with the three endpoints.
pub fn router(state: Arc<ProbeState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<ProbeState>>) -> Response {
    match state.metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e.chain(), "rendering metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

async fn readyz(State(state): State<Arc<ProbeState>>) -> Response {
    if state.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no successful write yet").into_response()
    }
}

/// Serve on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProbeState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProbeError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ProbeError::Metrics { addr, source })
}
