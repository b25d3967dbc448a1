//! The members' agents as the benchmark stands in for them: each member's heartbeat Lease is
//! renewed every [`HEARTBEAT_INTERVAL`] (the member chart's `agent.heartbeatInterval`), and every
//! renewal is counted, so that the writes the apiserver counts during a phase can be split exactly
//! into the harness's and everyone else's. A scrape of the apiserver's counters and the reading
//! of the renewal count happen while no renewal is in flight.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::Mutex;

use super::apimetrics::{Counters, RequestCount, RequestKey};
use crate::Error;
use crate::hubctl::heartbeat;

/// How often each fake agent renews its heartbeat Lease: the member chart's default.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The fake agents' heartbeats, running until dropped.
pub struct Heartbeats {
    renewals: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeats {
    /// Renews the heartbeat Lease of each of `members` every [`HEARTBEAT_INTERVAL`].
    pub fn start(client: Client, members: Vec<String>) -> Heartbeats {
        let renewals = Arc::new(Mutex::new(0u64));
        let count = renewals.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                for name in &members {
                    // Held across the request: a scrape never sees a renewal half-counted.
                    let mut n = count.lock().await;
                    if let Err(e) = heartbeat(&client, name).await {
                        tracing::debug!(member = %name, error = %e, "fake heartbeat");
                    }
                    *n += 1;
                }
            }
        });
        Heartbeats { renewals, task }
    }

    /// Reads the apiserver's request counters and the number of renewals sent so far, with no
    /// renewal in flight.
    pub async fn scrape(&self, client: &Client) -> Result<(Counters, u64), Error> {
        let n = self.renewals.lock().await;
        let counters = Counters::scrape(client).await?;
        Ok((counters, *n))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The harness's own writes of a phase: `job_creates` ComputeJob creates and `renewals` Lease
/// renewals (merge patches), in the apiserver's terms.
pub fn harness_writes(job_creates: u64, renewals: u64) -> Vec<RequestCount> {
    let mut out = vec![];
    if job_creates > 0 {
        out.push(RequestCount {
            key: RequestKey {
                group: "gpufed.io".into(),
                resource: "computejobs".into(),
                subresource: String::new(),
                verb: "POST".into(),
            },
            total: job_creates,
            failed: 0,
        });
    }
    if renewals > 0 {
        out.push(RequestCount {
            key: RequestKey {
                group: "coordination.k8s.io".into(),
                resource: "leases".into(),
                subresource: String::new(),
                verb: "PATCH".into(),
            },
            total: renewals,
            failed: 0,
        });
    }
    out
}
