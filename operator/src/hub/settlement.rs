//! Payment for pools with a chain: no lock, no run; settle exactly once.
//!
//! * **Funding check** before a job is queued: its payer's free deposit must cover
//!   `maxPricePerGpuHour × GPUs × maxDuration`; otherwise it waits in `Funding` with the numbers.
//! * **Lock** after the scheduler chose a cluster: `JobEscrow.lock(jobId = keccak256(uid, attempt),
//!   payer, provider, amount, deadline)`; only then is the Placement written. A lock refused for
//!   lack of deposit undoes the decision (the attempt number is reused: nothing was locked under it).
//! * **Settle** when an attempt ends (succeeded, failed, lost, cancelled): `GPU-seconds × price`,
//!   never more than the lock, through a batching worker. Before sending, and whenever status and
//!   chain might disagree (a hub killed mid-way), the chain's lock state is the truth: a lock
//!   already Settled is recorded from its `Settled` event, never paid again.
//!
//! Pure helpers at the top are unit-tested; the async steps use the [`ChainClient`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::{
    AttemptPhase, ComputeJob, ComputeJobStatus, JobPhase, Settlement, SettlementState, TokenAmount,
};
use tokio::sync::{Mutex, mpsc};

use crate::error::Result;
use crate::hub::chain::{ChainClient, LockRefused, LockState, job_id};

/// Tokens to lock for one attempt: the price cap for every GPU for the whole `maxDuration`.
pub fn lock_amount(job: &ComputeJob) -> Option<TokenAmount> {
    let gpus = u64::from(job.spec.replicas * job.spec.gpus_per_replica);
    job.spec
        .max_price_per_gpu_hour?
        .cost_of_gpu_seconds(gpus.checked_mul(job.spec.max_duration.as_secs_ceil())?)
}

/// What an attempt owes: its GPU-seconds at its price, never more than was locked.
pub fn amount_due(
    price: TokenAmount,
    gpu_seconds: u64,
    locked: Option<TokenAmount>,
) -> TokenAmount {
    let due = price
        .cost_of_gpu_seconds(gpu_seconds)
        .unwrap_or(TokenAmount::from_atto(u128::MAX));
    match locked {
        Some(l) => due.min(l),
        None => due,
    }
}

/// Unix-seconds deadline of a lock made at `now`: twice the job's maxDuration (time to start plus
/// time to run) plus the pool's grace, after which the payer may take the funds back.
pub fn lock_deadline(now: u64, job: &ComputeJob, grace: Duration) -> u64 {
    now + 2 * job.spec.max_duration.as_secs_ceil() + grace.as_secs()
}

/// Total paid over settled attempts.
pub fn total_cost(status: &ComputeJobStatus) -> Option<TokenAmount> {
    let settled: Vec<TokenAmount> = status
        .attempts
        .iter()
        .filter_map(|a| a.settlement.as_ref())
        .filter(|s| s.state == SettlementState::Settled)
        .filter_map(|s| s.paid)
        .collect();
    if settled.is_empty() {
        return None;
    }
    settled
        .into_iter()
        .try_fold(TokenAmount::ZERO, |acc, p| acc.checked_add(p))
}

/// One settlement waiting for the batch worker.
#[derive(Clone, Debug)]
pub struct SettleRequest {
    /// Pool whose chain settles it.
    pub pool: String,
    /// Chain client of that pool.
    pub chain: Arc<ChainClient>,
    /// Escrow job id (0x-hex).
    pub job_id: String,
    /// Amount to pay.
    pub paid: TokenAmount,
}

/// Hands settlements to the batch worker and remembers what it sent.
pub struct Settler {
    tx: mpsc::UnboundedSender<SettleRequest>,
    /// Escrow job ids already queued (not yet sent), so a busy reconcile loop queues each once.
    queued: Mutex<HashMap<String, ()>>,
    /// The newest chain client of each pool: a settlement waiting for a retry is sent with the
    /// current client (after a key rotation, say), not the one it was queued with.
    chains: Mutex<HashMap<String, Arc<ChainClient>>>,
}

impl Settler {
    /// A settler and the receiving end for [`run_worker`].
    pub fn new() -> (Settler, mpsc::UnboundedReceiver<SettleRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Settler {
                tx,
                queued: Mutex::new(HashMap::new()),
                chains: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    /// Queues `req` unless the same lock is already queued.
    pub async fn queue(&self, req: SettleRequest) {
        self.chains
            .lock()
            .await
            .insert(req.pool.clone(), req.chain.clone());
        let mut q = self.queued.lock().await;
        if q.insert(req.job_id.clone(), ()).is_none() && self.tx.send(req).is_err() {
            tracing::error!("the settlement worker stopped");
        }
    }

    async fn chain_for(&self, pool: &str) -> Option<Arc<ChainClient>> {
        self.chains.lock().await.get(pool).cloned()
    }

    async fn done(&self, ids: &[String]) {
        let mut q = self.queued.lock().await;
        for id in ids {
            q.remove(id);
        }
    }
}

/// Largest batch sent in one transaction.
pub const MAX_BATCH: usize = 100;
/// How long the worker gathers settlements before sending.
pub const BATCH_WINDOW: Duration = Duration::from_millis(300);

/// The batch worker: gathers queued settlements for [`BATCH_WINDOW`], drops locks the chain shows
/// as no longer Locked, and sends one `settleBatch` per pool. The job controller, which requeues
/// settling jobs every few seconds, then records the outcome from the chain.
///
/// A reverted batch is retried one settlement at a time, so one that keeps reverting (say, a token
/// that refuses transfers to one provider) cannot hold back the others; an RPC failure backs the
/// whole batch off together. Each failing settlement backs off on its own, is sent with the pool's
/// newest chain client, and nothing waits on a sleep while other pools have work.
pub async fn run_worker(
    settler: Arc<Settler>,
    mut rx: mpsc::UnboundedReceiver<SettleRequest>,
    metrics: crate::metrics::Metrics,
) {
    let mut retries: Vec<Retry> = vec![];
    loop {
        let now = tokio::time::Instant::now();
        let (mut batch, waiting): (Vec<Retry>, Vec<Retry>) = std::mem::take(&mut retries)
            .into_iter()
            .partition(|r| r.due <= now);
        retries = waiting;
        if batch.is_empty() {
            let next_due = retries.iter().map(|r| r.due).min();
            let received = match next_due {
                Some(due) => tokio::time::timeout_at(due, rx.recv()).await.ok(),
                None => Some(rx.recv().await),
            };
            match received {
                Some(Some(r)) => batch.push(Retry::new(r)),
                Some(None) => return,
                None => continue,
            }
        }
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(Retry::new(r)),
                _ => break,
            }
        }
        let mut by_pool: HashMap<String, Vec<Retry>> = HashMap::new();
        for r in batch {
            by_pool.entry(r.req.pool.clone()).or_default().push(r);
        }
        for (pool, items) in by_pool {
            let Some(chain) = settler.chain_for(&pool).await else {
                continue;
            };
            let reqs: Vec<SettleRequest> = items.iter().map(|r| r.req.clone()).collect();
            let failed = match settle_pool(&chain, &reqs).await {
                Ok(sent) => {
                    record_sent(&metrics, &pool, sent);
                    settler.done(&ids(&items)).await;
                    continue;
                }
                // A revert names no culprit: find it by sending the batch's settlements one by one.
                Err(e) if items.len() > 1 && reverted(&e) => {
                    tracing::warn!(%pool, error = %e, jobs = items.len(), "settlement batch reverted; sending one by one");
                    let mut failed = vec![];
                    for r in items {
                        match settle_pool(&chain, std::slice::from_ref(&r.req)).await {
                            Ok(sent) => {
                                record_sent(&metrics, &pool, sent);
                                settler.done(&ids(std::slice::from_ref(&r))).await;
                            }
                            Err(e) => failed.push((r, e.to_string())),
                        }
                    }
                    failed
                }
                // Anything else (an RPC down, a timeout) affects the whole batch: back off together.
                Err(e) => {
                    let message = e.to_string();
                    items.into_iter().map(|r| (r, message.clone())).collect()
                }
            };
            if !failed.is_empty() {
                metrics.settlements.with_label_values(&["error"]).inc();
            }
            for (mut r, error) in failed {
                r.failures += 1;
                let delay = crate::backoff::delay(r.failures).min(Duration::from_secs(60));
                tracing::warn!(%pool, job_id = %r.req.job_id, %error, retry_in = ?delay, "settlement failed; will retry");
                r.due = tokio::time::Instant::now() + delay;
                retries.push(r);
            }
        }
    }
}

/// Whether a chain error is the contract refusing (a revert), rather than the RPC failing.
fn reverted(e: &crate::error::Error) -> bool {
    matches!(e, crate::error::Error::Chain(m) if m.contains("revert"))
}

/// A settlement waiting to be (re)sent.
struct Retry {
    req: SettleRequest,
    failures: u32,
    due: tokio::time::Instant,
}

impl Retry {
    fn new(req: SettleRequest) -> Self {
        Retry {
            req,
            failures: 0,
            due: tokio::time::Instant::now(),
        }
    }
}

fn ids(items: &[Retry]) -> Vec<String> {
    items.iter().map(|r| r.req.job_id.clone()).collect()
}

fn record_sent(metrics: &crate::metrics::Metrics, pool: &str, sent: usize) {
    if sent > 0 {
        metrics
            .settlements
            .with_label_values(&["settled"])
            .inc_by(sent as u64);
        tracing::info!(%pool, jobs = sent, "settled a batch");
    }
}

/// Sends one batch for one pool. Returns how many locks it paid.
async fn settle_pool(chain: &ChainClient, items: &[SettleRequest]) -> Result<usize> {
    let mut send = vec![];
    let mut seen = std::collections::HashSet::new();
    for r in items {
        if !seen.insert(r.job_id.clone()) {
            continue;
        }
        let id = job_id(&r.job_id)?;
        // The chain decides: a lock a previous hub already settled (or the payer expired) is skipped.
        if chain.get_lock(id).await?.state == LockState::Locked {
            send.push((id, r.paid));
        }
    }
    if send.is_empty() {
        return Ok(0);
    }
    chain.settle_batch(&send).await?;
    Ok(send.len())
}

/// What the job controller should do after a settlement step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The status changed.
    pub changed: bool,
    /// Come back soon (a lock or settlement is in flight).
    pub again_soon: bool,
    /// Events: (warning, reason, message).
    pub events: Vec<(bool, &'static str, String)>,
    /// Locks made in this step.
    pub locked: u64,
    /// Locks found expired by their payer in this step.
    pub expired: u64,
    /// Lock transactions that failed in this step.
    pub lock_errors: u64,
}

/// Advances the money of `job` (status in `st`, already advanced by the lifecycle): checks funding
/// of a waiting job, locks a decided attempt, settles finished ones, and records what the chain says.
pub async fn advance(
    chain: &Arc<ChainClient>,
    settler: &Settler,
    pool: &gpufed_crds::GpuPool,
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    now_secs: u64,
) -> Result<Step> {
    let mut step = Step::default();
    let Some(payer) = st.payer.clone() else {
        return Ok(step);
    };
    let Some(required) = lock_amount(job) else {
        return Ok(step);
    };
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let grace = pool
        .spec
        .chain
        .as_ref()
        .map(|c| c.lock_grace.as_duration())
        .unwrap_or_default();

    // 1. A job waiting for a cluster must be covered by its payer's deposit.
    let has_active = st
        .attempts
        .iter()
        .any(|a| a.attempt == st.attempt && !a.phase.is_finished());
    if !has_active && matches!(st.phase, JobPhase::Pending | JobPhase::Funding) {
        let deposit = chain.deposit_of(&payer).await?;
        if deposit < required {
            let message = format!(
                "payer {payer} has {deposit} deposited in JobEscrow; this job locks {required} \
                 (maxPricePerGpuHour × {} GPUs × maxDuration {}): deposit at least {} more",
                job.spec.replicas * job.spec.gpus_per_replica,
                job.spec.max_duration,
                required.saturating_sub(deposit)
            );
            let before = job.status.as_ref();
            let news = before.is_none_or(|b| {
                b.phase != JobPhase::Funding || b.explanation.as_deref() != Some(&message)
            });
            st.phase = JobPhase::Funding;
            st.reason = Some("InsufficientDeposit".into());
            st.explanation = Some(message.clone());
            step.changed = true;
            if news {
                step.events.push((true, "InsufficientDeposit", message));
            }
            step.again_soon = true;
            return Ok(step);
        }
        if st.reason.as_deref() == Some("InsufficientDeposit") {
            st.phase = JobPhase::Pending;
            st.reason = None;
            st.explanation = Some("the deposit covers the lock; waiting for a cluster".into());
            step.changed = true;
        }
    }

    // 2. Lock the current attempt once the scheduler has decided.
    let current = st.attempt;
    let mut undo_attempt = false;
    for a in st.attempts.iter_mut() {
        let Some(s) = a.settlement.as_mut() else {
            continue;
        };
        let id = job_id(&s.job_id)?;
        if a.attempt == current
            && !a.phase.is_finished()
            && matches!(
                s.state,
                SettlementState::Unfunded | SettlementState::Locking
            )
        {
            let provider = a.provider.clone();
            let on_chain = chain.get_lock(id).await?;
            if on_chain.state == LockState::Locked {
                s.state = SettlementState::Locked;
                s.locked = Some(on_chain.amount);
                s.lock_tx = chain.lock_tx(id).await?;
                s.message = None;
                step.changed = true;
                continue;
            }
            let Some(provider) = provider else {
                s.message = Some("the member has no wallet to be paid into".into());
                step.changed = true;
                continue;
            };
            let deadline = lock_deadline(now_secs, job, grace);
            match chain.lock(id, &payer, &provider, required, deadline).await {
                Ok(Ok(tx)) => {
                    step.locked += 1;
                    s.state = SettlementState::Locked;
                    s.locked = Some(required);
                    s.lock_tx = Some(tx.clone());
                    s.message = None;
                    step.changed = true;
                    step.events.push((
                        false,
                        "Funded",
                        format!("locked {required} for attempt {} (tx {tx})", a.attempt),
                    ));
                }
                Ok(Err(LockRefused::InsufficientDeposit {
                    available,
                    required,
                })) => {
                    undo_attempt = true;
                    st.explanation = Some(format!(
                        "payer {payer} has {available} deposited; the lock needs {required}: deposit more"
                    ));
                    break;
                }
                Err(e) => {
                    // Shown on the job (condition Funded=False/LockFailed) and retried.
                    let message = e.to_string();
                    if s.message.as_deref() != Some(&message) {
                        step.events.push((
                            true,
                            "LockFailed",
                            format!("attempt {}: {message}", a.attempt),
                        ));
                    }
                    s.state = SettlementState::Locking;
                    s.message = Some(message);
                    step.changed = true;
                    step.again_soon = true;
                    step.lock_errors += 1;
                }
            }
        }
    }
    if undo_attempt {
        st.attempts.retain(|a| a.attempt != current);
        st.attempt = current.saturating_sub(1);
        st.placement = None;
        st.phase = JobPhase::Funding;
        st.reason = Some("InsufficientDeposit".into());
        step.changed = true;
        step.again_soon = true;
        step.events.push((
            true,
            "InsufficientDeposit",
            st.explanation.clone().unwrap_or_default(),
        ));
        return Ok(step);
    }

    // 3. Settle attempts that ended.
    for a in st.attempts.iter_mut() {
        let ended = a.phase.is_finished();
        let Some(s) = a.settlement.as_mut() else {
            continue;
        };
        if !ended || !matches!(s.state, SettlementState::Locked | SettlementState::Settling) {
            continue;
        }
        let id = job_id(&s.job_id)?;
        match chain.get_lock(id).await?.state {
            LockState::Settled => {
                if let Some(ev) = chain.settled_event(id).await? {
                    s.paid = Some(ev.paid);
                    s.refunded = Some(ev.refund);
                    s.settle_tx = Some(ev.tx.clone());
                    step.events.push((
                        false,
                        "Paid",
                        format!(
                            "attempt {}: paid {} ({} GPU-seconds, fee {}), refunded {} (tx {})",
                            a.attempt, ev.paid, a.gpu_seconds, ev.fee, ev.refund, ev.tx
                        ),
                    ));
                }
                s.state = SettlementState::Settled;
                s.message = None;
                step.changed = true;
            }
            LockState::Expired => {
                step.expired += 1;
                s.state = SettlementState::Expired;
                s.refunded = s.locked;
                step.changed = true;
            }
            LockState::Locked => {
                let paid = amount_due(a.price_per_gpu_hour, a.gpu_seconds, s.locked);
                settler
                    .queue(SettleRequest {
                        pool: pool_name.clone(),
                        chain: chain.clone(),
                        job_id: s.job_id.clone(),
                        paid,
                    })
                    .await;
                if s.state != SettlementState::Settling {
                    s.state = SettlementState::Settling;
                    step.changed = true;
                }
                step.again_soon = true;
            }
            LockState::None => {
                s.message = Some("the chain has no lock under this id".into());
                step.changed = true;
            }
        }
    }
    let cost = total_cost(st);
    if st.cost != cost {
        st.cost = cost;
        step.changed = true;
    }
    Ok(step)
}

/// Whether any attempt still has money in flight (locked, not settled).
pub fn unsettled(st: &ComputeJobStatus) -> bool {
    st.attempts.iter().any(|a| {
        a.settlement.as_ref().is_some_and(|s| {
            matches!(
                s.state,
                SettlementState::Locking | SettlementState::Locked | SettlementState::Settling
            )
        })
    })
}

/// Marks the running attempt of a job being deleted as Cancelled with its last reported usage.
pub fn cancel_current(
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    gpu_seconds: u64,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> bool {
    let current = st.attempt;
    let mut changed = false;
    for a in st
        .attempts
        .iter_mut()
        .filter(|a| a.attempt == current && !a.phase.is_finished())
    {
        // The same cap as while it ran: never more than its GPUs could have used since placement.
        let cap = crate::hub::lifecycle::usage_cap(job, a, now);
        a.phase = AttemptPhase::Cancelled;
        a.reason = Some("JobDeleted".into());
        a.gpu_seconds = a.gpu_seconds.max(gpu_seconds.min(cap));
        a.finish_time = Some(now.clone());
        changed = true;
    }
    changed
}

/// A fresh settlement record for an attempt.
pub fn unfunded(job_id: String) -> Settlement {
    Settlement {
        state: SettlementState::Unfunded,
        job_id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;

    #[test]
    fn only_reverts_split_a_batch_other_chain_errors_back_it_off_whole() {
        use crate::error::Error;
        assert!(reverted(&Error::Chain("settlement 0xab reverted".into())));
        assert!(reverted(&Error::Chain(
            "sending a settlement: execution reverted: LockNotActive".into()
        )));
        assert!(!reverted(&Error::Chain(
            "sending a settlement: no answer from the RPC within 20s".into()
        )));
        assert!(!reverted(&Error::Config("bad key".into())));
    }

    #[test]
    fn a_cancelled_attempt_is_paid_no_more_than_its_gpus_could_have_run() {
        let mut j = job("j").gpus(2).build();
        let placed = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1000).unwrap(),
        );
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1010).unwrap(),
        );
        let mut st = ComputeJobStatus {
            attempt: 1,
            ..Default::default()
        };
        st.attempts.push(gpufed_crds::AttemptRecord {
            attempt: 1,
            cluster: "a".into(),
            placement: "p".into(),
            model: "H100".into(),
            price_per_gpu_hour: "1".parse().unwrap(),
            provider: None,
            phase: AttemptPhase::Running,
            reason: None,
            message: None,
            placed_time: Some(placed),
            start_time: None,
            finish_time: None,
            gpu_seconds: 0,
            exits: vec![],
            planned_nodes: vec![],
            settlement: None,
        });
        j.status = Some(st.clone());
        assert!(cancel_current(&j, &mut st, 1_000_000, &now));
        assert_eq!(st.attempts[0].phase, AttemptPhase::Cancelled);
        assert_eq!(st.attempts[0].gpu_seconds, 20, "2 GPUs for 10 s");
    }

    #[test]
    fn the_lock_covers_the_price_cap_for_every_gpu_for_the_whole_duration() {
        let j = job("j")
            .replicas(2)
            .gpus(4)
            .max_price("2.50")
            .max_duration("30m")
            .build();
        // 2.50 × 8 GPUs × 0.5 h = 10.00
        assert_eq!(lock_amount(&j).unwrap().to_string(), "10.00");
        assert_eq!(
            lock_amount(&job("j").build()),
            None,
            "no cap, no lock amount"
        );
    }

    #[test]
    fn an_attempt_owes_its_gpu_seconds_at_its_price_but_never_more_than_the_lock() {
        let price: TokenAmount = "3.60".parse().unwrap();
        assert_eq!(amount_due(price, 100, None).to_string(), "0.10");
        let lock: TokenAmount = "0.05".parse().unwrap();
        assert_eq!(amount_due(price, 100, Some(lock)), lock);
        assert_eq!(amount_due(price, 0, Some(lock)), TokenAmount::ZERO);
    }

    #[test]
    fn the_deadline_leaves_time_to_start_run_and_settle() {
        let j = job("j").max_duration("1h").build();
        assert_eq!(
            lock_deadline(1000, &j, Duration::from_secs(600)),
            1000 + 7200 + 600
        );
    }

    #[test]
    fn cost_sums_settled_attempts_only() {
        let mut st = ComputeJobStatus::default();
        assert_eq!(total_cost(&st), None);
        for (n, state, paid) in [
            (1, SettlementState::Settled, "1.50"),
            (2, SettlementState::Locked, "9"),
            (3, SettlementState::Settled, "0.25"),
        ] {
            st.attempts.push(gpufed_crds::AttemptRecord {
                attempt: n,
                cluster: "a".into(),
                placement: "p".into(),
                model: "H100".into(),
                price_per_gpu_hour: "1".parse().unwrap(),
                phase: AttemptPhase::Succeeded,
                reason: None,
                message: None,
                placed_time: None,
                start_time: None,
                finish_time: None,
                gpu_seconds: 0,
                exits: vec![],
                planned_nodes: vec![],
                provider: None,
                settlement: Some(Settlement {
                    state,
                    job_id: "0x".into(),
                    paid: Some(paid.parse().unwrap()),
                    ..Default::default()
                }),
            });
        }
        assert_eq!(total_cost(&st).unwrap().to_string(), "1.75");
        assert!(unsettled(&st));
    }
}
