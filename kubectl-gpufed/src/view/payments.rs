//! `kubectl gpufed payments JOB`: where the money of each attempt is — the escrow job id, its
//! state, what was locked, paid and refunded, the lock and settle transactions — and the job's
//! total cost. Pools without a chain pay nothing on chain, and the output says so.

use gpufed_crds::{ComputeJob, GpuPool, SettlementState, TokenAmount};
use kube::ResourceExt;
use serde::Serialize;

use crate::format::{or_none, plural, short_hash};
use crate::table::Table;

/// How the job's pool pays.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum PoolPayment {
    /// Through JobEscrow on an EVM chain.
    Chain {
        /// EVM chain id.
        chain_id: u64,
        /// The JobEscrow contract.
        escrow: String,
        /// The ERC-20 token.
        token: String,
    },
    /// Without a chain: jobs run without escrow.
    NoChain,
    /// The pool does not exist (any more).
    PoolNotFound,
}

/// Escrow record of one attempt.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptPayment {
    /// Attempt number.
    pub attempt: u32,
    /// Its member cluster.
    pub cluster: String,
    /// GPU-seconds reported.
    pub gpu_seconds: u64,
    /// Escrow job id.
    pub job_id: Option<String>,
    /// Escrow state.
    pub state: Option<SettlementState>,
    /// Tokens locked.
    pub locked: Option<TokenAmount>,
    /// Tokens paid.
    pub paid: Option<TokenAmount>,
    /// Tokens refunded.
    pub refunded: Option<TokenAmount>,
    /// Lock transaction.
    pub lock_tx: Option<String>,
    /// Settlement transaction.
    pub settle_tx: Option<String>,
    /// Latest problem, e.g. the RPC being unreachable.
    pub message: Option<String>,
}

/// What `payments` shows; also its `-o json|yaml` output.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSummary {
    /// The job's namespace.
    pub namespace: String,
    /// The job.
    pub job: String,
    /// Its pool.
    pub pool: String,
    /// How that pool pays.
    pub payment: PoolPayment,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptPayment>,
    /// GPU-seconds over all attempts.
    pub gpu_seconds: u64,
    /// Total paid over settled attempts (pool fee included).
    pub total_cost: Option<TokenAmount>,
}

/// The payment summary of `job` in `pool` (`None` when the pool was not found).
pub fn summarize(job: &ComputeJob, pool: Option<&GpuPool>) -> PaymentSummary {
    let payment = match pool {
        None => PoolPayment::PoolNotFound,
        Some(p) => match &p.spec.chain {
            None => PoolPayment::NoChain,
            Some(c) => PoolPayment::Chain {
                chain_id: c.chain_id,
                escrow: c.escrow.to_string(),
                token: c.token.to_string(),
            },
        },
    };
    let status = job.status.clone().unwrap_or_default();
    let attempts: Vec<AttemptPayment> = status
        .attempts
        .iter()
        .map(|a| {
            let s = a.settlement.as_ref();
            AttemptPayment {
                attempt: a.attempt,
                cluster: a.cluster.clone(),
                gpu_seconds: a.gpu_seconds,
                job_id: s.map(|s| s.job_id.clone()),
                state: s.map(|s| s.state),
                locked: s.and_then(|s| s.locked),
                paid: s.and_then(|s| s.paid),
                refunded: s.and_then(|s| s.refunded),
                lock_tx: s.and_then(|s| s.lock_tx.clone()),
                settle_tx: s.and_then(|s| s.settle_tx.clone()),
                message: s.and_then(|s| s.message.clone()),
            }
        })
        .collect();
    // The hub keeps `status.cost`; summing settled payments covers a hub that has not yet.
    let settled_sum = attempts
        .iter()
        .filter(|a| a.state == Some(SettlementState::Settled))
        .filter_map(|a| a.paid)
        .try_fold(None::<TokenAmount>, |acc, p| {
            Some(Some(acc.unwrap_or(TokenAmount::ZERO).checked_add(p)?))
        })
        .flatten();
    PaymentSummary {
        namespace: job.namespace().unwrap_or_default(),
        job: job.name_any(),
        pool: job.spec.pool.clone(),
        payment,
        gpu_seconds: status
            .usage
            .as_ref()
            .map(|u| u.gpu_seconds)
            .unwrap_or_else(|| attempts.iter().map(|a| a.gpu_seconds).sum()),
        total_cost: status.cost.or(settled_sum),
        attempts,
    }
}

/// The payments, for a terminal; `wide` shows hashes in full and the latest problem.
pub fn render(s: &PaymentSummary, wide: bool) -> String {
    let job = format!("{}/{}", s.namespace, s.job);
    let usage = format!(
        "Usage: {} GPU-seconds over {}.\n",
        s.gpu_seconds,
        plural(s.attempts.len(), "attempt", "attempts")
    );
    let mut out = match &s.payment {
        PoolPayment::NoChain => {
            return format!(
                "Job {job} runs in pool {:?}, which has no chain: it runs without escrow and nothing is paid on chain.\n{usage}",
                s.pool
            );
        }
        PoolPayment::PoolNotFound => format!(
            "Pool {:?} of job {job} was not found, so whether it pays on chain is unknown; escrow records of the job follow.\n",
            s.pool
        ),
        PoolPayment::Chain {
            chain_id, escrow, ..
        } => format!(
            "Job {job} pays through JobEscrow {escrow} on chain {chain_id} (pool {:?}).\n",
            s.pool
        ),
    };
    out.push('\n');
    if s.attempts.is_empty() {
        out.push_str("No attempts yet: nothing locked.\n");
    } else {
        let mut headers = vec![
            "attempt",
            "cluster",
            "job-id",
            "state",
            "locked",
            "paid",
            "refunded",
            "lock-tx",
            "settle-tx",
        ];
        if wide {
            headers.push("message");
        }
        let hash = |h: &Option<String>| {
            or_none(
                h.as_deref()
                    .map(|h| if wide { h.to_string() } else { short_hash(h) }),
            )
        };
        let mut t = Table::new(&headers);
        for a in &s.attempts {
            let mut row = vec![
                a.attempt.to_string(),
                a.cluster.clone(),
                hash(&a.job_id),
                or_none(a.state.map(|st| format!("{st:?}"))),
                or_none(a.locked),
                or_none(a.paid),
                or_none(a.refunded),
                hash(&a.lock_tx),
                hash(&a.settle_tx),
            ];
            if wide {
                row.push(or_none(a.message.clone()));
            }
            t.push(row);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    out.push_str(&usage);
    out.push_str(&format!(
        "Total cost: {} (paid to providers over settled attempts, pool fee included).\n",
        or_none(s.total_cost)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pool, running_job};
    use gpufed_crds::{ChainSpec, SecretKeyRef, Settlement};

    fn chain_pool() -> GpuPool {
        let mut p = pool("default", &[]);
        p.spec.chain = Some(ChainSpec {
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 31337,
            token: "0x5fbdb2315678afecb367f032d93f642f64180aa3"
                .parse()
                .unwrap(),
            escrow: "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"
                .parse()
                .unwrap(),
            bond: None,
            hub_key_secret_ref: SecretKeyRef {
                namespace: "gpufed-system".into(),
                name: "hub-key".into(),
                key: "key".into(),
            },
            lock_grace: gpufed_crds::KubeDuration::from_secs(3600),
            tx_timeout: gpufed_crds::KubeDuration::from_secs(60),
            confirmations: 1,
            log_block_range: 5000,
        });
        p
    }

    fn paid_job() -> ComputeJob {
        let mut j = running_job();
        let st = j.status.as_mut().unwrap();
        st.attempts[0].settlement = Some(Box::new(Settlement {
            state: SettlementState::Settled,
            job_id: format!("0x{}", "11".repeat(32)),
            locked: Some("19.20".parse().unwrap()),
            paid: Some("0.266666666666666666".parse().unwrap()),
            refunded: Some("18.933333333333333334".parse().unwrap()),
            lock_tx: Some(format!("0x{}", "aa".repeat(32))),
            settle_tx: Some(format!("0x{}", "bb".repeat(32))),
            message: None,
            ..Default::default()
        }));
        st.attempts[1].settlement = Some(Box::new(Settlement {
            state: SettlementState::Locked,
            job_id: format!("0x{}", "22".repeat(32)),
            locked: Some("24.00".parse().unwrap()),
            lock_tx: Some(format!("0x{}", "cc".repeat(32))),
            ..Default::default()
        }));
        j
    }

    #[test]
    fn each_attempt_shows_its_escrow_record_and_the_total_is_what_was_settled() {
        let out = render(&summarize(&paid_job(), Some(&chain_pool())), false);
        assert_eq!(
            out,
            "\
Job team-a/train pays through JobEscrow 0xe7f1725e7734ce288f8367e1bb143e90bb3f0512 on chain 31337 (pool \"default\").

ATTEMPT  CLUSTER  JOB-ID       STATE    LOCKED  PAID                  REFUNDED               LOCK-TX      SETTLE-TX
1        alpha    0x11111111…  Settled  19.20   0.266666666666666666  18.933333333333333334  0xaaaaaaaa…  0xbbbbbbbb…
2        beta     0x22222222…  Locked   24.00   <none>                <none>                 0xcccccccc…  <none>

Usage: 1600 GPU-seconds over 2 attempts.
Total cost: 0.266666666666666666 (paid to providers over settled attempts, pool fee included).
"
        );
    }

    #[test]
    fn wide_shows_full_hashes_and_the_latest_problem() {
        let mut j = paid_job();
        j.status.as_mut().unwrap().attempts[1]
            .settlement
            .as_mut()
            .unwrap()
            .message = Some("rpc unreachable".into());
        let out = render(&summarize(&j, Some(&chain_pool())), true);
        assert!(out.contains(&format!("0x{}", "aa".repeat(32))), "{out}");
        assert!(out.contains("rpc unreachable"), "{out}");
    }

    #[test]
    fn a_pool_without_chain_says_nothing_is_paid_on_chain() {
        let out = render(
            &summarize(&running_job(), Some(&pool("default", &[]))),
            false,
        );
        assert_eq!(
            out,
            "Job team-a/train runs in pool \"default\", which has no chain: it runs without escrow and nothing is paid on chain.\nUsage: 1600 GPU-seconds over 2 attempts.\n"
        );
    }

    #[test]
    fn a_missing_pool_still_lists_the_escrow_records() {
        let s = summarize(&paid_job(), None);
        assert_eq!(s.payment, PoolPayment::PoolNotFound);
        let out = render(&s, false);
        assert!(
            out.starts_with("Pool \"default\" of job team-a/train was not found"),
            "{out}"
        );
        assert!(out.contains("Settled"), "{out}");
    }

    #[test]
    fn a_job_without_attempts_has_locked_nothing() {
        let out = render(
            &summarize(&crate::fixtures::pending_job(), Some(&chain_pool())),
            false,
        );
        assert!(out.contains("No attempts yet: nothing locked."), "{out}");
        assert!(out.contains("Total cost: <none>"), "{out}");
    }

    #[test]
    fn the_summary_serialises_with_the_payment_kind() {
        let v = serde_json::to_value(summarize(&paid_job(), Some(&chain_pool()))).unwrap();
        assert_eq!(v["payment"]["kind"], "chain");
        assert_eq!(v["payment"]["chainId"], 31337);
        assert_eq!(v["attempts"][0]["state"], "Settled");
        assert_eq!(v["totalCost"], "0.266666666666666666");
    }
}
