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
use crate::hub::chain::{ChainClient, LockState, Refusal, job_id};

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
        // Settled attempts, and what periods of a running serving attempt paid (ADR 0030).
        .filter(|s| s.state == SettlementState::Settled || s.periods_paid > 0)
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

    /// Queues what `step` found due on `pool`'s chain: call it only once the status holding the
    /// step's receipts is written.
    pub async fn send(&self, pool: &str, chain: &Arc<ChainClient>, step: &Step) {
        for due in &step.settle {
            self.queue(SettleRequest {
                pool: pool.to_string(),
                chain: chain.clone(),
                job_id: due.job_id.clone(),
                paid: due.paid,
            })
            .await;
        }
    }

    /// Queues `req` unless the same lock is already queued.
    async fn queue(&self, req: SettleRequest) {
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
    match chain.settle_batch(&send).await? {
        Ok(_) => Ok(send.len()),
        // Reported as a revert, so the worker finds the culprit one by one.
        Err(r) => Err(crate::error::Error::Chain(format!(
            "settlement reverted: {r}"
        ))),
    }
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
    /// Come back after this at the latest (a serving attempt's next period ends, ADR 0030).
    pub recheck_in: Option<Duration>,
    /// Settlements to send once the status with their receipts is written ([`Settler::send`]):
    /// a pass whose status write fails (a stale cached job) must not pay, nor publish a receipt
    /// for, an amount the job never recorded.
    pub settle: Vec<Due>,
}

/// A finished attempt's lock to settle for `paid` (what its status's receipt is signed for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Escrow job id (0x-hex).
    pub job_id: String,
    /// Amount to pay.
    pub paid: TokenAmount,
}

/// Reason of an attempt whose lock the escrow refused (nothing was locked; its number is not reused).
pub const LOCK_REFUSED: &str = "LockRefused";
/// Reason of an attempt whose lock the escrow refused for anything but the payer's deposit or
/// authorisation (e.g. a deadline beyond its `maxLockDuration`): it counts against
/// `retry.maxAttempts`, so a refusal that repeats ends the job instead of placing it forever.
pub const LOCK_REJECTED: &str = "LockRejected";
/// Reason of an attempt whose id the chain already holds a lock for that is not this attempt's.
pub const LOCK_CONFLICT: &str = "LockConflict";

/// How far the hub's clock may differ from the chain's block time without a lock being refused:
/// deadlines stay this far inside `maxLockDuration`, and an authorisation must stay valid this much
/// longer than now before a job is scheduled on it.
pub const CLOCK_MARGIN_SECS: u64 = 300;

/// Whether an attempt counts against `retry.maxAttempts`: refused or conflicting locks never ran,
/// and a preempted attempt was stopped for another job, not for anything of its own (ADR 0025).
pub fn attempt_ran(a: &gpufed_crds::AttemptRecord) -> bool {
    a.phase != AttemptPhase::Preempted
        && !matches!(a.reason.as_deref(), Some(LOCK_REFUSED | LOCK_CONFLICT))
}

/// Ends the current attempt without running it: nothing was locked for it, nothing is owed.
fn close_unrun(st: &mut ComputeJobStatus, i: usize, reason: &str, message: String, funding: bool) {
    let a = &mut st.attempts[i];
    a.phase = AttemptPhase::Cancelled;
    a.reason = Some(reason.to_string());
    a.message = Some(message.clone());
    if let Some(s) = a.settlement.as_mut() {
        s.state = SettlementState::Closed;
        s.message = Some(message.clone());
    }
    st.placement = None;
    st.phase = if funding {
        JobPhase::Funding
    } else {
        JobPhase::Pending
    };
    st.explanation = Some(message);
}

/// Advances the money of `job` (status in `st`, already advanced by the lifecycle): checks funding
/// of a waiting job, locks a decided attempt, settles finished ones, and records what the chain says.
///
/// The chain is the truth at every step: a lock id is recomputed from the job's UID and the
/// attempt, a lock found on chain is used only if its payer, provider and amount are this
/// attempt's, and after any error the lock is read again before anything else is decided.
pub async fn advance(
    chain: &Arc<ChainClient>,
    pool: &gpufed_crds::GpuPool,
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    now_secs: u64,
) -> Result<Step> {
    let mut step = Step::default();
    // A challenge (the hub's own job, ADR 0027) is never locked nor settled, even if a payer
    // were somehow recorded on it.
    if crate::hub::challenges::is_hub_job(job) {
        return Ok(step);
    }
    let Some(payer) = st.payer.clone() else {
        return Ok(step);
    };
    let Some(required) = lock_amount(job) else {
        return Ok(step);
    };
    let grace = pool
        .spec
        .chain
        .as_ref()
        .map(|c| c.lock_grace.as_duration())
        .unwrap_or_default();

    // 0. Lock ids are recomputed, never trusted from status.
    let uid = kube::ResourceExt::uid(job).unwrap_or_default();
    for a in st.attempts.iter_mut() {
        if let Some(s) = a.settlement.as_mut() {
            let want = gpufed_crds::naming::chain_job_id_hex(&uid, a.attempt);
            if s.job_id != want {
                s.job_id = want;
                step.changed = true;
            }
        }
    }

    // 1. A job waiting for a cluster must be covered by its payer's deposit and authorisation.
    let has_active = st
        .attempts
        .iter()
        .any(|a| a.attempt == st.attempt && !a.phase.is_finished());
    if !has_active && matches!(st.phase, JobPhase::Pending | JobPhase::Funding) {
        if let Some((reason, message)) = funding_gap(chain, job, &payer, required, now_secs).await?
        {
            let before = job.status.as_ref();
            let news = before.is_none_or(|b| {
                b.phase != JobPhase::Funding || b.explanation.as_deref() != Some(&message)
            });
            st.phase = JobPhase::Funding;
            st.reason = Some(reason.into());
            st.explanation = Some(message.clone());
            step.changed = true;
            if news {
                step.events.push((true, reason, message));
            }
            step.again_soon = true;
            return Ok(step);
        }
        if matches!(
            st.reason.as_deref(),
            Some("InsufficientDeposit" | "SpendingNotAuthorised")
        ) || st.phase == JobPhase::Funding
        {
            st.phase = JobPhase::Pending;
            st.reason = None;
            st.explanation =
                Some("the deposit and authorisation cover the lock; waiting for a cluster".into());
            step.changed = true;
        }
    }

    // 2. Lock the current attempt once the scheduler has decided.
    let current = st.attempt;
    if let Some(i) = st.attempts.iter().position(|a| {
        a.attempt == current
            && !a.phase.is_finished()
            && a.settlement.as_ref().is_some_and(|s| {
                matches!(
                    s.state,
                    SettlementState::Unfunded | SettlementState::Locking
                )
            })
    }) {
        lock_current(
            chain, job, st, i, &payer, required, grace, now_secs, &mut step,
        )
        .await?;
        if st.attempts[i].phase.is_finished() {
            step.changed = true;
            step.again_soon = true;
            return Ok(step);
        }
    }

    // 2b. A running serving attempt is paid period by period out of its lock (ADR 0030).
    crate::hub::periods::advance(chain, job, st, now_secs, &mut step).await?;

    // 3. Settle attempts that ended (also those that ended before their lock was made).
    let mut head: Option<u64> = None;
    for a in st.attempts.iter_mut() {
        if !a.phase.is_finished() {
            continue;
        }
        // In a pool that checks usage, only what telemetry supports (docs/contracts.md).
        let gpu_seconds = crate::hub::lifecycle::paid_gpu_seconds(a);
        let (attempt, price) = (a.attempt, a.price_per_gpu_hour);
        let provider = a.provider.clone();
        let Some(s) = a.settlement.as_mut() else {
            continue;
        };
        if !matches!(
            s.state,
            SettlementState::Unfunded
                | SettlementState::Locking
                | SettlementState::Locked
                | SettlementState::Settling
        ) {
            continue;
        }
        let id = job_id(&s.job_id)?;
        let lock = chain.get_lock(id).await?;
        // A serving attempt's renewals the record missed count before anything is compared.
        if job.spec.serving.is_some() {
            crate::hub::periods::reconcile_windows(chain, s, &lock, required, &mut step).await?;
        }
        let ours = match &provider {
            Some(p) => {
                chain
                    .lock_matches(&lock, &payer, p, s.locked.unwrap_or(required))
                    .await?
            }
            None => false,
        };
        if lock.state != LockState::None && !ours {
            let message = format!(
                "the chain's lock under {} (payer {}, provider {}, amount {}) is not this \
                 attempt's: nothing is settled for it",
                s.job_id, lock.payer, lock.provider, lock.amount
            );
            if s.state != SettlementState::Closed {
                step.events
                    .push((true, LOCK_CONFLICT, format!("attempt {attempt}: {message}")));
            }
            s.state = SettlementState::Closed;
            s.message = Some(message);
            step.changed = true;
            continue;
        }
        match lock.state {
            LockState::None if s.state == SettlementState::Locking => {
                // A lock was sent and may still be waiting to be mined: cancel it first, so it
                // cannot land after the attempt is closed; then the chain decides.
                if chain.cancel_unmined().await?
                    && chain.get_lock(id).await?.state == LockState::None
                {
                    s.state = SettlementState::Closed;
                    s.message = Some(
                        "the attempt ended before its lock was mined; the lock transaction was \
                         cancelled and nothing is owed"
                            .into(),
                    );
                } else {
                    s.message = Some(
                        "the attempt ended while its lock transaction was pending; cancelling it"
                            .into(),
                    );
                    step.again_soon = true;
                }
                step.changed = true;
            }
            LockState::None if s.state == SettlementState::Unfunded => {
                s.state = SettlementState::Closed;
                s.message = Some(
                    "the attempt ended before its lock was made: nothing is locked or owed".into(),
                );
                step.changed = true;
            }
            LockState::None => {
                // Locked before, gone now: a reorganisation removed the lock. It is made again
                // (same id, payer, provider and amount), so that the work done can be settled.
                let Some(p) = provider.as_ref() else {
                    continue;
                };
                let amount = s.locked.unwrap_or(required);
                let deadline = bounded_deadline(chain, job, grace, now_secs).await?;
                step.again_soon = true;
                step.changed = true;
                match chain.lock(id, &payer, p, amount, deadline).await {
                    Ok(Ok(mined)) => {
                        s.state = SettlementState::Locked;
                        s.lock_tx = Some(mined.tx.clone());
                        s.lock_block = Some(mined.block);
                        s.message = Some(format!(
                            "the lock disappeared from the chain (a reorganisation) and was made again (tx {})",
                            mined.tx
                        ));
                        step.events.push((
                            true,
                            "Relocked",
                            format!(
                                "attempt {attempt}: {}",
                                s.message.clone().unwrap_or_default()
                            ),
                        ));
                    }
                    Ok(Err(r)) => {
                        let message = format!(
                            "the lock disappeared from the chain (a reorganisation) and cannot be made \
                             again: {r}; nothing can be settled for this attempt"
                        );
                        step.events.push((
                            true,
                            LOCK_REFUSED,
                            format!("attempt {attempt}: {message}"),
                        ));
                        s.state = SettlementState::Closed;
                        s.message = Some(message);
                    }
                    Err(e) => {
                        s.message = Some(format!(
                            "the lock disappeared from the chain (a reorganisation); making it again: {e}"
                        ));
                    }
                }
            }
            LockState::Settled => {
                let Some(ev) = chain.settled_event(id, s.lock_block).await? else {
                    step.again_soon = true;
                    continue;
                };
                let head = match head {
                    Some(h) => h,
                    None => *head.insert(chain.block_number().await?),
                };
                let confirmations = (head + 1).saturating_sub(ev.block);
                if confirmations < chain.confirmations {
                    if s.settle_block != Some(ev.block) || s.state != SettlementState::Settling {
                        s.state = SettlementState::Settling;
                        s.settle_tx = Some(ev.tx.clone());
                        s.settle_block = Some(ev.block);
                        s.message = Some(format!(
                            "settled in block {}; waiting for {} confirmations",
                            ev.block, chain.confirmations
                        ));
                        step.changed = true;
                    }
                    step.again_soon = true;
                    continue;
                }
                // Plus what periods paid before (ADR 0030): the lock kept only the rest.
                let by_periods = s.locked.unwrap_or(lock.amount).saturating_sub(lock.amount);
                s.paid = ev.paid.checked_add(by_periods).or(Some(ev.paid));
                s.refunded = Some(ev.refund);
                s.settle_tx = Some(ev.tx.clone());
                s.settle_block = Some(ev.block);
                step.events.push((
                    false,
                    "Paid",
                    format!(
                        "attempt {attempt}: paid {} ({gpu_seconds} GPU-seconds, fee {}), refunded {} (tx {})",
                        ev.paid, ev.fee, ev.refund, ev.tx
                    ),
                ));
                s.state = SettlementState::Settled;
                s.message = None;
                step.changed = true;
            }
            LockState::Expired => {
                step.expired += 1;
                s.state = SettlementState::Expired;
                // What periods paid (ADR 0030) is not refunded: the lock kept only the rest.
                s.refunded = Some(s.locked.map_or(lock.amount, |l| l.min(lock.amount)));
                step.changed = true;
            }
            LockState::Locked => {
                // What periods paid while a serving attempt ran is gone from the lock (ADR 0030).
                let by_periods = s.locked.unwrap_or(lock.amount).saturating_sub(lock.amount);
                let paid = amount_due(price, gpu_seconds, Some(s.locked.unwrap_or(lock.amount)))
                    .saturating_sub(by_periods)
                    .min(lock.amount);
                if s.locked.is_none() {
                    s.locked = Some(lock.amount);
                    step.changed = true;
                }
                let paid_base = chain.units().await?.to_base_floor(paid).to_string();
                let signer = chain.hub_account.to_string();
                // Signed again when the amount or the hub's key changed (a rotated key's old
                // receipts stop counting once its role is revoked).
                if s.receipt
                    .as_ref()
                    .is_none_or(|r| r.paid_base_units != paid_base || r.signer != signer)
                {
                    let (base, signature) = chain.sign_receipt(id, paid).await?;
                    s.receipt = Some(gpufed_crds::UsageReceipt {
                        paid_base_units: base.to_string(),
                        signer,
                        signature,
                    });
                    step.changed = true;
                }
                step.settle.push(Due {
                    job_id: s.job_id.clone(),
                    paid,
                });
                if s.state != SettlementState::Settling {
                    s.state = SettlementState::Settling;
                    step.changed = true;
                }
                step.again_soon = true;
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

/// Why `payer` cannot fund a lock of `required` now: (reason, message naming the fix), or `None`.
async fn funding_gap(
    chain: &ChainClient,
    job: &ComputeJob,
    payer: &gpufed_crds::EvmAddress,
    required: TokenAmount,
    now_secs: u64,
) -> Result<Option<(&'static str, String)>> {
    let gpus = job.spec.replicas * job.spec.gpus_per_replica;
    let deposit = chain.deposit_of(payer).await?;
    if deposit < required {
        return Ok(Some((
            "InsufficientDeposit",
            format!(
                "payer {payer} has {deposit} deposited in JobEscrow; this job locks {required} \
                 (maxPricePerGpuHour × {gpus} GPUs × maxDuration {}): deposit at least {} more",
                job.spec.max_duration,
                required.saturating_sub(deposit)
            ),
        )));
    }
    let allowance = chain.allowance_of(payer).await?;
    if allowance.valid_until < now_secs + CLOCK_MARGIN_SECS || allowance.remaining < required {
        let state = if allowance.valid_until == 0 {
            "has not authorised".to_string()
        } else if allowance.valid_until < now_secs + CLOCK_MARGIN_SECS {
            format!(
                "authorised until unix time {} (expired, or within {CLOCK_MARGIN_SECS} s of it)",
                allowance.valid_until
            )
        } else {
            format!("has {} left of its authorisation", allowance.remaining)
        };
        return Ok(Some((
            "SpendingNotAuthorised",
            format!(
                "payer {payer} {state} for the hub's account {}; this job locks {required}: \
                 the payer runs `kubectl gpufed authorise --pool {} --amount <tokens> --valid-for <duration>`",
                chain.hub_account, job.spec.pool
            ),
        )));
    }
    Ok(None)
}

/// [`lock_deadline`], kept [`CLOCK_MARGIN_SECS`] inside the escrow's `maxLockDuration`.
async fn bounded_deadline(
    chain: &ChainClient,
    job: &ComputeJob,
    grace: Duration,
    now_secs: u64,
) -> Result<u64> {
    let max = chain.max_lock_duration().await?;
    Ok(lock_deadline(now_secs, job, grace).min(now_secs + max.saturating_sub(CLOCK_MARGIN_SECS)))
}

/// Locks the current attempt `st.attempts[i]`, or ends it unrun when the escrow refuses.
#[allow(clippy::too_many_arguments)]
async fn lock_current(
    chain: &ChainClient,
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    i: usize,
    payer: &gpufed_crds::EvmAddress,
    required: TokenAmount,
    grace: Duration,
    now_secs: u64,
    step: &mut Step,
) -> Result<()> {
    let attempt = st.attempts[i].attempt;
    let Some(provider) = st.attempts[i].provider.clone() else {
        if let Some(s) = st.attempts[i].settlement.as_mut() {
            s.message = Some("the member has no wallet to be paid into".into());
        }
        step.changed = true;
        return Ok(());
    };
    let Some(id_hex) = st.attempts[i].settlement.as_ref().map(|s| s.job_id.clone()) else {
        return Ok(());
    };
    let id = job_id(&id_hex)?;
    let on_chain = chain.get_lock(id).await?;
    let sent = if on_chain.state == LockState::None {
        let deadline = bounded_deadline(chain, job, grace, now_secs).await?;
        Some(chain.lock(id, payer, &provider, required, deadline).await)
    } else {
        None
    };
    let refusal = match sent {
        Some(Ok(Ok(mined))) => {
            step.locked += 1;
            let s = st.attempts[i]
                .settlement
                .get_or_insert_with(Default::default);
            s.state = SettlementState::Locked;
            s.locked = Some(required);
            s.lock_tx = Some(mined.tx.clone());
            s.lock_block = Some(mined.block);
            s.message = None;
            step.changed = true;
            step.events.push((
                false,
                "Funded",
                format!("locked {required} for attempt {attempt} (tx {})", mined.tx),
            ));
            return Ok(());
        }
        Some(Ok(Err(r))) => Some(r),
        Some(Err(e)) => {
            // The outcome is unknown: the chain says what happened.
            let again = chain.get_lock(id).await;
            match again {
                Ok(l)
                    if l.state == LockState::Locked
                        && chain.lock_matches(&l, payer, &provider, required).await? =>
                {
                    adopt(chain, id, &l, st, i, step).await?;
                    return Ok(());
                }
                _ => {
                    let message = e.to_string();
                    let s = st.attempts[i]
                        .settlement
                        .get_or_insert_with(Default::default);
                    if s.message.as_deref() != Some(&message) {
                        step.events.push((
                            true,
                            "LockFailed",
                            format!("attempt {attempt}: {message}"),
                        ));
                    }
                    s.state = SettlementState::Locking;
                    s.message = Some(message);
                    step.changed = true;
                    step.again_soon = true;
                    step.lock_errors += 1;
                    return Ok(());
                }
            }
        }
        None => None,
    };
    if let Some(r) = refusal {
        let (reason, funding) = match r {
            Refusal::InsufficientDeposit { .. } => ("InsufficientDeposit", true),
            Refusal::NotAuthorised { .. } | Refusal::AuthorisationExpired { .. } => {
                ("SpendingNotAuthorised", true)
            }
            // Anything else may refuse again for the next attempt: it counts as an attempt, so
            // `retry.maxAttempts` bounds the tries instead of placing again forever.
            Refusal::Other(_) => (LOCK_REJECTED, false),
        };
        let attempt_reason = if funding { LOCK_REFUSED } else { LOCK_REJECTED };
        let message = format!("attempt {attempt} was not locked: {r}");
        close_unrun(st, i, attempt_reason, message.clone(), funding);
        st.reason = Some(reason.into());
        step.events.push((true, attempt_reason, message.clone()));
        let ran = st.attempts.iter().filter(|a| attempt_ran(a)).count();
        let max = job.spec.retry.max_attempts;
        if !funding && ran >= max as usize {
            let why = format!("{message}; no attempts left (retry.maxAttempts = {max})");
            let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(i64::try_from(now_secs).unwrap_or(0))
                    .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            );
            st.phase = JobPhase::Failed;
            st.message = Some(why.clone());
            st.explanation = Some(why.clone());
            st.completion_time = Some(at.clone());
            gpufed_crds::conditions::set_condition(
                &mut st.conditions,
                gpufed_crds::conditions::condition(
                    gpufed_crds::conditions::job::FINISHED,
                    true,
                    "Failed",
                    why,
                    job.metadata.generation,
                    at,
                ),
            );
        }
        return Ok(());
    }
    // A lock already exists under this attempt's id: ours (a hub stopped before recording it)
    // or not (then this attempt cannot be locked and ends unrun).
    if on_chain.state == LockState::Locked
        && chain
            .lock_matches(&on_chain, payer, &provider, required)
            .await?
    {
        return adopt(chain, id, &on_chain, st, i, step).await;
    }
    let message = format!(
        "attempt {attempt}'s lock id {id_hex} is already used on chain (payer {}, provider {}, \
         amount {}, state {:?}): placing a new attempt",
        on_chain.payer, on_chain.provider, on_chain.amount, on_chain.state
    );
    close_unrun(st, i, LOCK_CONFLICT, message.clone(), false);
    step.events.push((true, LOCK_CONFLICT, message));
    Ok(())
}

/// Records a lock found on chain that is this attempt's.
async fn adopt(
    chain: &ChainClient,
    id: alloy::primitives::B256,
    lock: &crate::hub::chain::LockInfo,
    st: &mut ComputeJobStatus,
    i: usize,
    step: &mut Step,
) -> Result<()> {
    let mined = chain.lock_tx(id).await?;
    let s = st.attempts[i]
        .settlement
        .get_or_insert_with(Default::default);
    s.state = SettlementState::Locked;
    s.locked = Some(lock.amount);
    s.lock_tx = mined.as_ref().map(|m| m.tx.clone());
    s.lock_block = mined.map(|m| m.block);
    s.message = None;
    step.changed = true;
    Ok(())
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

    /// Attempt `n` on cluster `a` at 1 token per GPU-hour, in `phase`, nothing else recorded.
    fn record(n: u32, phase: AttemptPhase) -> gpufed_crds::AttemptRecord {
        gpufed_crds::testing::attempt(n, "a", phase)
    }

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
            placed_time: Some(placed),
            ..record(1, AttemptPhase::Running)
        });
        j.status = Some(st.clone());
        assert!(cancel_current(&j, &mut st, 1_000_000, &now));
        assert_eq!(st.attempts[0].phase, AttemptPhase::Cancelled);
        assert_eq!(
            st.attempts[0].gpu_seconds, 22,
            "2 GPUs for 10 s and the clock margin"
        );
    }

    #[test]
    fn attempts_whose_lock_was_refused_or_conflicted_never_ran() {
        let mut a = gpufed_crds::AttemptRecord {
            reason: Some(LOCK_REFUSED.into()),
            ..record(1, AttemptPhase::Cancelled)
        };
        assert!(!attempt_ran(&a));
        a.reason = Some(LOCK_CONFLICT.into());
        assert!(!attempt_ran(&a));
        a.reason = Some("HeartbeatExpired".into());
        assert!(attempt_ran(&a));
        a.reason = None;
        assert!(attempt_ran(&a));
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
                settlement: Some(Box::new(Settlement {
                    state,
                    job_id: "0x".into(),
                    paid: Some(paid.parse().unwrap()),
                    ..Default::default()
                })),
                ..record(n, AttemptPhase::Succeeded)
            });
        }
        assert_eq!(total_cost(&st).unwrap().to_string(), "1.75");
        assert!(unsettled(&st));
    }
}
