//! The probe loop keeps going when the apiserver does not answer, and says so in its metrics.
//! No cluster is involved: the client points at a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use gpu_probe::{ProbeConfig, ProbeError, ProbeState, SimOverrides, run, run_with_state};
use gpufed_crds::ProbeBackend;

/// A client for an apiserver that is not there (port 1 on loopback refuses connections).
fn unreachable_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn fast(mut config: ProbeConfig) -> ProbeConfig {
    config.interval = Duration::from_millis(20);
    config.api_timeout = Duration::from_millis(500);
    config.metrics_addr = None;
    config
}

const KUBE_ERRORS: &str = "gpufed_probe_errors_total{kind=\"kube\"}";

/// Resolves once the probe has counted `n` failed calls to the apiserver — it kept retrying — or
/// after 60 s, when the test fails on the count. No fixed window: how many retries fit in a few
/// hundred milliseconds depends on how loaded the machine is (a run of `.ci/run` next to other
/// builds counted one in 300 ms).
async fn after_kube_errors(state: Arc<ProbeState>, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if counter(&state.metrics.render().unwrap(), KUBE_ERRORS) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn an_unreachable_apiserver_is_retried_until_shutdown_and_counted() {
    let state = Arc::new(ProbeState::new().unwrap());
    let config = fast(ProbeConfig::sim_all_nodes(1));
    let shutdown = after_kube_errors(state.clone(), 3.0);
    let result = run_with_state(unreachable_client(), config, state.clone(), shutdown).await;
    assert!(result.is_ok(), "{result:?}");
    let text = state.metrics.render().unwrap();
    assert!(counter(&text, KUBE_ERRORS) >= 3.0, "{text}");
    assert!(!state.is_ready());
}

#[tokio::test]
async fn a_single_sim_node_that_cannot_be_fetched_is_retried_until_shutdown() {
    let state = Arc::new(ProbeState::new().unwrap());
    let mut config = fast(ProbeConfig::node(ProbeBackend::Sim, "kwok-1"));
    config.sim.overrides = SimOverrides {
        profile: Some("H100-SXM-80GB".into()),
        gpus: Some(2),
    };
    let shutdown = after_kube_errors(state.clone(), 3.0);
    run_with_state(unreachable_client(), config, state.clone(), shutdown)
        .await
        .unwrap();
    // The Node cannot be fetched, so nothing is served yet; the probe keeps trying, counting errors.
    let text = state.metrics.render().unwrap();
    assert!(counter(&text, KUBE_ERRORS) >= 3.0, "{text}");
    assert!(!text.contains("DCGM_FI_DEV_GPU_UTIL{"), "{text}");
}

#[tokio::test]
async fn once_mode_returns_the_error_of_its_single_pass() {
    let config = ProbeConfig {
        once: true,
        ..fast(ProbeConfig::sim_all_nodes(1))
    };
    let err = run(unreachable_client(), config, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Kube { .. }), "{err}");
    assert!(err.to_string().contains("list Nodes"), "{err}");
}

#[tokio::test]
async fn a_bad_configuration_ends_run_before_any_call() {
    let config = ProbeConfig {
        backend: ProbeBackend::Nvml,
        ..fast(ProbeConfig::sim_all_nodes(1))
    };
    let err = run(unreachable_client(), config, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Config(_)), "{err}");
}
