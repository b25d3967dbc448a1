//! The hub's writes fenced by leadership (docs/adr/0016-leadership-fenced-writes.md).
//!
//! Every write of the hub passes one of two checks of its [`Leadership`] immediately before it is
//! sent, and is refused once this replica's write deadline has passed:
//!
//! * Kubernetes writes: [`FenceLayer`], the innermost layer of the hub's API client (below the
//!   rate limiter, the retry layer and authentication, so a request that waited in any of them,
//!   and every retry of it, is checked when it is handed to the connection). Reads and watches
//!   pass; so does the leader election, which has a client of its own.
//! * Chain transactions: [`WriteFence::permits`], called by the chain client right before it
//!   hands a signed transaction to the RPC node.
//!
//! A refusal is logged at error level and counted in `gpufed_hub_writes_refused_total{target}`.
//! The caller sees an error (the reconcile fails and is retried, by which time the process has
//! exited as a standby or renewed the Lease).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request};
use prometheus::IntCounterVec;
use tower::{BoxError, Layer, Service};

use crate::leader::Leadership;

/// The error a refused Kubernetes write fails with (inside `kube::Error::Service`).
#[derive(Debug, thiserror::Error)]
#[error("refused {what}: this replica's leadership lapsed {lapsed:?} ago")]
pub struct NotLeader {
    /// The write (method and path, or the transaction).
    pub what: String,
    /// How long ago the write deadline passed.
    pub lapsed: std::time::Duration,
}

/// Whether a request changes anything: everything but GET, HEAD and OPTIONS.
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The leadership check shared by the hub's write paths, with its refusal counter.
#[derive(Clone, Debug)]
pub struct WriteFence {
    leadership: Leadership,
    refused: IntCounterVec,
}

impl WriteFence {
    /// A fence on `leadership`, counting refusals in `refused` (label `target`).
    pub fn new(leadership: Leadership, refused: IntCounterVec) -> Self {
        WriteFence {
            leadership,
            refused,
        }
    }

    /// Whether `what` may be sent to `target` (`kube`, `chain`) now. A refusal is logged and
    /// counted here.
    pub fn permits(&self, target: &'static str, what: &dyn fmt::Display) -> Result<(), NotLeader> {
        let now = Instant::now();
        if self.leadership.allows_at(now) {
            return Ok(());
        }
        let lapsed = self.leadership.lapsed_for(now);
        self.refused.with_label_values(&[target]).inc();
        tracing::error!(%target, write = %what, ?lapsed, "refused a write: this replica is no longer sure to hold the leader Lease");
        Err(NotLeader {
            what: what.to_string(),
            lapsed,
        })
    }

    /// The client layer that applies this fence to Kubernetes writes.
    pub fn layer(&self) -> FenceLayer {
        FenceLayer {
            fence: self.clone(),
        }
    }
}

/// A tower layer refusing Kubernetes writes once the write deadline passed (see the module docs).
#[derive(Clone, Debug)]
pub struct FenceLayer {
    fence: WriteFence,
}

impl<S> Layer<S> for FenceLayer {
    type Service = Fence<S>;

    fn layer(&self, inner: S) -> Fence<S> {
        Fence {
            inner,
            fence: self.fence.clone(),
        }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fence<S> {
    inner: S,
    fence: WriteFence,
}

/// What a fenced request returns.
pub type FenceFuture<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B> Service<Request<B>> for Fence<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FenceFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_write(req.method()) {
            let what = format!("{} {}", req.method(), req.uri().path());
            if let Err(refused) = self.fence.permits("kube", &what) {
                return Box::pin(std::future::ready(Err(BoxError::from(refused))));
            }
        }
        let call = self.inner.call(req);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("refused", "refused"), &["target"]).unwrap()
    }

    /// A service that counts the requests that reach it.
    #[derive(Clone, Default)]
    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Service<Request<()>> for Count {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    fn request(method: Method) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("/apis/gpufed.io/v1alpha1/namespaces/team-a/computejobs/j/status")
            .body(())
            .unwrap()
    }

    #[test]
    fn only_reads_are_not_writes() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_write(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_write(&m), "{m}");
        }
    }

    #[tokio::test]
    async fn writes_pass_while_leader_and_are_refused_and_counted_once_the_deadline_passed() {
        let leadership = Leadership::new();
        let refused = counter();
        let fence = WriteFence::new(leadership.clone(), refused.clone());
        let reached = Count::default();
        let mut svc = fence.layer().layer(reached.clone());

        leadership.extend(Instant::now() + Duration::from_secs(60));
        svc.call(request(Method::PATCH)).await.unwrap();
        assert_eq!(reached.0.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Paused past the deadline: the deadline is in the past when the process runs again.
        leadership.revoke();
        leadership.extend(Instant::now() - Duration::from_millis(1));
        let err = svc.call(request(Method::PATCH)).await.unwrap_err();
        let refusal = err.downcast_ref::<NotLeader>().unwrap();
        assert!(
            refusal.what.starts_with("PATCH /apis/gpufed.io"),
            "{refusal}"
        );
        assert_eq!(reached.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(refused.with_label_values(&["kube"]).get(), 1);

        // Reads still pass (caches keep working until the process exits).
        svc.call(request(Method::GET)).await.unwrap();
        assert_eq!(reached.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_replica_that_never_led_may_not_write() {
        let fence = WriteFence::new(Leadership::new(), counter());
        assert!(fence.permits("chain", &"a lock").is_err());
    }
}
