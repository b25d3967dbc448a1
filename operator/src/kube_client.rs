//! The operator's Kubernetes client: kube's default stack (TLS, auth, base URI, server-error
//! retries, timeouts) built here instead of by `Client::try_from`, for two things kube 5 does not
//! expose:
//!
//! * **TCP_NODELAY** on every connection. Requests are small writes on long-lived keep-alive
//!   connections; without it a write can wait on Nagle's algorithm for the peer's delayed ACK.
//! * **A client-side rate limit** (`--kube-api-qps`, `--kube-api-burst`, like client-go's
//!   QPS/Burst): a runaway loop slows down instead of flooding the apiserver. Watches count once,
//!   when they are opened. The apiserver's own protection (API Priority and Fairness, a FlowSchema
//!   in the hub chart) stays the real limit between tenants.
//!
//! The hub's controllers get a client with one more layer, innermost: the leadership fence
//! ([`crate::fenced`]), which refuses writes once the replica may have lost the leader Lease.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::Client;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::ServiceBuilder;
use tower::limit::RateLimitLayer;
use tower::retry::RetryLayer;

use crate::fenced::FenceLayer;

/// How many requests the client may send: `qps` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per second on average.
    pub qps: f64,
    /// Requests that may go out back to back after an idle spell.
    pub burst: u32,
}

impl RateLimit {
    /// The window the limiter counts `burst` requests in, so that the average is `qps`.
    pub fn window(&self) -> Result<Duration, String> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Err(format!(
                "--kube-api-qps must be a positive number, not {}",
                self.qps
            ));
        }
        if self.burst == 0 {
            return Err("--kube-api-burst must be at least 1".into());
        }
        Ok(Duration::from_secs_f64(f64::from(self.burst) / self.qps))
    }
}

/// A client for `config` with TCP_NODELAY and `limit`.
pub fn client(config: &kube::Config, limit: RateLimit) -> anyhow::Result<Client> {
    fenced_client(config, limit, None)
}

/// A client like [`client`] whose requests pass `fence` last, right before the connection (so a
/// request held by the rate limiter, and each retry, is checked when it is really sent).
pub fn fenced_client(
    config: &kube::Config,
    limit: RateLimit,
    fence: Option<FenceLayer>,
) -> anyhow::Result<Client> {
    let window = limit.window().map_err(anyhow::Error::msg)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(u64::from(limit.burst), window))
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .option_layer(fence)
        .map_err(tower::BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_burst_requests_at_the_average_rate() {
        let w = RateLimit {
            qps: 200.0,
            burst: 400,
        }
        .window()
        .unwrap();
        assert_eq!(w, Duration::from_secs(2));
    }

    #[test]
    fn zero_or_negative_limits_are_refused_with_the_flag_name() {
        for (qps, burst, flag) in [
            (0.0, 10, "--kube-api-qps"),
            (-1.0, 10, "--kube-api-qps"),
            (f64::NAN, 10, "--kube-api-qps"),
            (5.0, 0, "--kube-api-burst"),
        ] {
            let err = RateLimit { qps, burst }.window().unwrap_err();
            assert!(err.contains(flag), "{err}");
        }
    }
}
