//! The agent's apiserver calls, each bounded by a deadline.
//!
//! The agent talks to two apiservers, its own cluster's and the hub's, and the hub may be slow or
//! gone for minutes. A call that hangs must never hold up fencing or the heartbeat, so every call
//! the agent makes goes through [`timed`], which turns both an API error and a missed deadline into
//! an [`Error`] naming what was being done.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// Field manager of everything the agent writes with server-side apply (hub and member).
pub const FIELD_MANAGER: &str = "gpufed-agent";

/// Deadline of one apiserver call that is not a watch.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `call` with a deadline of `after`; `what` names the call in the error.
pub async fn timed<T>(
    what: impl Into<String>,
    after: Duration,
    call: impl Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<T> {
    match tokio::time::timeout(after, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::kube(what)(e)),
        Err(_) => Err(Error::Timeout {
            what: what.into(),
            after,
        }),
    }
}

/// Longest wait before a failed watch is retried: after a hub outage the agent must see new and
/// deleted Placements again within seconds, not kube's default half-minute.
pub const WATCH_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Backoff of the agent's watches: [`crate::backoff::delay`] (1 s, 2 s, 4 s …) capped at
/// [`WATCH_BACKOFF_CAP`], reset by the first event after a failure.
#[derive(Clone, Debug, Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(crate::backoff::delay(self.failures).min(WATCH_BACKOFF_CAP))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Like [`timed`], but a 404 Not Found is `Ok(None)`.
pub async fn timed_opt<T>(
    what: impl Into<String>,
    after: Duration,
    call: impl Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<Option<T>> {
    match timed(what, after, call).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Like [`timed`], for a create where an object of that name already existing (409 Conflict) is
/// as good as creating it: `Ok(true)` if created, `Ok(false)` if it was there.
pub async fn timed_create<T>(
    what: impl Into<String>,
    after: Duration,
    call: impl Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<bool> {
    match timed(what, after, call).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the apiserver refused the request as invalid (422 Unprocessable Entity): the object,
/// not the agent or the network, is at fault.
pub fn is_invalid(err: &Error) -> bool {
    matches!(err, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 422))
}

/// The apiserver's message of an API error, else the error's text.
pub fn api_message(err: &Error) -> String {
    match err {
        Error::Kube { source, .. } => match source.as_ref() {
            kube::Error::Api(s) => s.message.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_outlives_its_deadline_is_a_timeout_error() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, kube::Error>(1)
        };
        let err = timed("renewing the Lease", Duration::from_millis(10), slow)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "timeout");
        assert!(err.to_string().contains("renewing the Lease"), "{err}");
    }

    #[test]
    fn watches_retry_sooner_and_sooner_but_never_wait_more_than_five_seconds() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let waits: Vec<u64> = b.by_ref().take(5).map(|d| d.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn not_found_is_none_and_other_errors_stay_errors() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "nope".into(),
                ..Default::default()
            }))
        };
        let missing = timed_opt("get", API_TIMEOUT, async { Err::<u8, _>(status(404)) }).await;
        assert!(matches!(missing, Ok(None)));
        let invalid = timed_opt("get", API_TIMEOUT, async { Err::<u8, _>(status(422)) })
            .await
            .unwrap_err();
        assert!(is_invalid(&invalid));
        assert_eq!(api_message(&invalid), "nope");
    }

    #[tokio::test]
    async fn a_create_that_finds_the_object_there_is_not_an_error_but_others_are() {
        let status = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "nope".into(),
                ..Default::default()
            }))
        };
        let made = timed_create("create", API_TIMEOUT, async { Ok::<u8, kube::Error>(1) }).await;
        assert!(matches!(made, Ok(true)));
        let there = timed_create("create", API_TIMEOUT, async { Err::<u8, _>(status(409)) }).await;
        assert!(matches!(there, Ok(false)));
        let refused =
            timed_create("create", API_TIMEOUT, async { Err::<u8, _>(status(403)) }).await;
        assert!(refused.is_err());
    }
}
