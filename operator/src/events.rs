//! Kubernetes Events off the hot path. Controllers hand an Event to [`Events::publish`], which
//! never waits on the apiserver: the Event goes into a bounded queue that a background task
//! writes (a few at a time). Two bounds keep Events from costing what the work itself costs:
//!
//! * **the queue** holds [`QUEUE`] Events; when the apiserver falls behind, new Events are dropped
//!   and counted (`gpufed_events_dropped_total{why="queue_full"}`);
//! * **a spam filter per object** like client-go's: [`SPAM_BURST`] Events, then one per
//!   [`SPAM_REFILL`] (`why="spam"`), so a loop on one object cannot flood the namespace.
//!
//! Unlike kube-runtime's `Recorder`, nothing is cached per Event (its series cache is scanned on
//! every publish and holds every Event of the last six minutes), so memory stays bounded by
//! [`QUEUE`] and [`FILTER_OBJECTS`] at any rate. Each Event is a new object; Kubernetes removes
//! them after the apiserver's event TTL (one hour by default).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use prometheus::IntCounterVec;
use tokio::sync::mpsc;

/// Events waiting to be written, at most.
pub const QUEUE: usize = 1024;
/// Events written at once.
pub const CONCURRENCY: usize = 4;
/// Events an object may get back to back.
pub const SPAM_BURST: f64 = 25.0;
/// After the burst, one more Event per object this often.
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Objects the spam filter remembers; beyond that, the quietest are forgotten.
pub const FILTER_OBJECTS: usize = 10_000;
/// Longest note, in bytes (the apiserver's limit is 1 KiB).
pub const NOTE_MAX: usize = 1000;

/// Who reports the Events.
#[derive(Clone, Debug)]
pub struct Reporter {
    /// `reportingController` (e.g. `gpufed-hub`).
    pub controller: String,
    /// `reportingInstance` (the pod name when known, else the controller).
    pub instance: String,
}

/// Per-object token buckets.
#[derive(Debug, Default)]
struct SpamFilter {
    buckets: HashMap<String, (f64, Instant)>,
}

impl SpamFilter {
    /// Whether one more Event about `key` may go out at `now`.
    fn allow(&mut self, key: &str, now: Instant) -> bool {
        if self.buckets.len() >= FILTER_OBJECTS && !self.buckets.contains_key(key) {
            // Forget objects whose bucket has refilled; if that frees nothing, forget them all
            // (the bound on memory matters more than a burst of Events for a few objects).
            let full_after = SPAM_REFILL.mul_f64(SPAM_BURST);
            self.buckets
                .retain(|_, (_, last)| now.duration_since(*last) < full_after);
            if self.buckets.len() >= FILTER_OBJECTS {
                self.buckets.clear();
            }
        }
        let (tokens, last) = self
            .buckets
            .entry(key.to_string())
            .or_insert((SPAM_BURST, now));
        let refilled = now.duration_since(*last).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(SPAM_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Publishes Events through a bounded queue; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    reporter: Arc<Reporter>,
    filter: Arc<Mutex<SpamFilter>>,
    dropped: IntCounterVec,
}

impl Events {
    /// Starts the writer task (on the current Tokio runtime) and returns the handle.
    pub fn start(client: Client, reporter: Reporter, dropped: IntCounterVec) -> Events {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let queued = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        tokio::spawn(queued.for_each_concurrent(CONCURRENCY, move |ev| {
            let client = client.clone();
            async move {
                let ns = ev.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client, &ns);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::warn!(error = %e, event = %ev.name_any(), reason = ?ev.reason, "publishing event");
                }
            }
        }));
        Events {
            tx,
            reporter: Arc::new(reporter),
            filter: Arc::default(),
            dropped,
        }
    }

    /// Queues an Event about `obj`; returns at once. Dropped (and counted) when the queue is full
    /// or the object has had too many Events lately.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let reference = obj.object_ref(&());
        let key = reference
            .uid
            .clone()
            .unwrap_or_else(|| format!("{:?}/{:?}", reference.namespace, reference.name));
        let allowed = match self.filter.lock() {
            Ok(mut f) => f.allow(&key, Instant::now()),
            Err(_) => true,
        };
        if !allowed {
            self.dropped.with_label_values(&["spam"]).inc();
            tracing::debug!(object = %obj.name_any(), reason, "event dropped by the spam filter");
            return;
        }
        let ev = event(&self.reporter, reference, warning, reason, action, note);
        if self.tx.try_send(ev).is_err() {
            self.dropped.with_label_values(&["queue_full"]).inc();
            tracing::debug!(object = %obj.name_any(), reason, "event dropped: the queue is full");
        }
    }
}

/// The events.k8s.io/v1 Event about `regarding`.
fn event(
    reporter: &Reporter,
    regarding: ObjectReference,
    warning: bool,
    reason: &str,
    action: &str,
    note: &str,
) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let name = format!(
        "{}.{:x}",
        regarding.name.as_deref().unwrap_or(&reporter.controller),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..Default::default()
        },
        action: Some(action.to_string()),
        reason: Some(reason.to_string()),
        note: Some(crate::hub::context::truncate(note, NOTE_MAX)),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_gets_its_burst_then_one_event_per_refill() {
        let mut f = SpamFilter::default();
        let t0 = Instant::now();
        let allowed = (0..40).filter(|_| f.allow("job-a", t0)).count();
        assert_eq!(allowed, SPAM_BURST as usize);
        assert!(f.allow("job-b", t0), "another object has its own bucket");
        assert!(!f.allow("job-a", t0 + SPAM_REFILL / 2));
        assert!(f.allow("job-a", t0 + SPAM_REFILL + Duration::from_secs(1)));
    }

    #[test]
    fn the_filter_never_remembers_more_than_its_bound() {
        let mut f = SpamFilter::default();
        let t0 = Instant::now();
        for i in 0..(FILTER_OBJECTS + 50) {
            assert!(f.allow(&format!("job-{i}"), t0));
        }
        assert!(f.buckets.len() <= FILTER_OBJECTS);
    }

    #[test]
    fn events_name_their_object_reporter_and_type() {
        let reporter = Reporter {
            controller: "gpufed-hub".into(),
            instance: "hub-0".into(),
        };
        let regarding = ObjectReference {
            name: Some("train".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        let long = "x".repeat(5000);
        let ev = event(&reporter, regarding, true, "Pending", "Schedule", &long);
        assert!(ev.metadata.name.unwrap().starts_with("train."));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reporting_instance.as_deref(), Some("hub-0"));
        assert_eq!(ev.note.unwrap().len(), NOTE_MAX);
    }
}
