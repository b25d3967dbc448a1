//! The recorded history of a chaos run: what the hub, every member's apiserver, the chain and the
//! fault scheduler said, with times. Serialisable, so that a run's history can be saved as JSON and
//! checked again later (`check::check` is pure).
//!
//! Times are milliseconds since the Unix epoch. Member-side times (`AttemptRun`) come from the
//! member's apiserver (pod `startTime`, container `finishedAt`, `deletionTimestamp`), hub-side
//! times from the hub's apiserver; all clusters of a run share one host clock (see
//! docs/reliability.md).

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A job, as `namespace/name` plus its uid (a deleted and re-created job is another job).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobRef {
    /// `namespace/name`.
    pub key: String,
    /// metadata.uid.
    pub uid: String,
}

/// One event of the history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Event {
    /// The hub accepted a ComputeJob (its creation on the hub).
    JobAccepted {
        /// Hub-side creation time.
        at: Millis,
        /// The job.
        job: JobRef,
    },
    /// The hub decided: a Placement of `attempt` on `member` was created.
    Decision {
        /// Hub-side creation time of the Placement.
        at: Millis,
        /// The job.
        job: JobRef,
        /// Attempt number.
        attempt: u32,
        /// Chosen member.
        member: String,
    },
    /// A Placement was deleted (observed by the recorder; hub-side deletion time when known).
    PlacementDeleted {
        /// When.
        at: Millis,
        /// The job.
        job: JobRef,
        /// Attempt number.
        attempt: u32,
        /// Its member.
        member: String,
    },
    /// A member's readiness or cordon as the hub had it from `at` on.
    MemberState {
        /// When it took this state (the Ready condition's transition time, or when the recorder
        /// saw the cordon change).
        at: Millis,
        /// MemberCluster name.
        member: String,
        /// Ready condition True.
        ready: bool,
        /// `spec.cordoned`.
        cordoned: bool,
    },
    /// One pod of an attempt ran on a member from `start` to `end` (member-side times; `end` is
    /// `None` while it still ran when the history ended).
    AttemptRun {
        /// Member cluster.
        member: String,
        /// The job.
        job: JobRef,
        /// Attempt number (pod label `gpufed.io/attempt`).
        attempt: u32,
        /// Pod name.
        pod: String,
        /// Pod start (member apiserver).
        start: Millis,
        /// Container finish or pod deletion deadline, whichever is first.
        end: Option<Millis>,
    },
    /// A fault injected or healed by the scheduler.
    Fault {
        /// When.
        at: Millis,
        /// What, e.g. `kill-agent`.
        fault: String,
        /// Which component, e.g. `alpha/gpufed-agent`.
        target: String,
        /// `false` when injected, `true` when healed.
        healed: bool,
    },
    /// A JobEscrow event.
    Chain(ChainEvent),
}

/// JobEscrow events (contracts/src/JobEscrow.sol), amounts in token base units as decimal strings
/// (u128 covers every amount a test mints).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum ChainEvent {
    /// `Deposited(payer, from, amount)`.
    Deposited {
        /// Block number.
        block: u64,
        /// Payer address.
        payer: String,
        /// Amount.
        #[serde(with = "dec")]
        amount: u128,
    },
    /// `Withdrawn(payer, amount)`.
    Withdrawn {
        /// Block number.
        block: u64,
        /// Payer address.
        payer: String,
        /// Amount.
        #[serde(with = "dec")]
        amount: u128,
    },
    /// `Locked(jobId, payer, provider, amount, …)`.
    Locked {
        /// Block number.
        block: u64,
        /// The lock's id, 0x-hex.
        job_id: String,
        /// Amount locked.
        #[serde(with = "dec")]
        amount: u128,
    },
    /// `Settled(jobId, payer, provider, paid, fee, refund)`.
    Settled {
        /// Block number.
        block: u64,
        /// The lock's id.
        job_id: String,
        /// Paid out (provider share plus fee).
        #[serde(with = "dec")]
        paid: u128,
        /// Fee part of `paid`.
        #[serde(with = "dec")]
        fee: u128,
        /// Returned to the payer's free deposit.
        #[serde(with = "dec")]
        refund: u128,
    },
    /// `Expired(jobId, payer, amount)`.
    Expired {
        /// Block number.
        block: u64,
        /// The lock's id.
        job_id: String,
        /// Returned to the payer's free deposit.
        #[serde(with = "dec")]
        amount: u128,
    },
}

/// How an attempt stood on the hub at the end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptEnd {
    /// Attempt number.
    pub attempt: u32,
    /// Member.
    pub member: String,
    /// `status.attempts[].phase`, e.g. `Succeeded`, `Lost`.
    pub phase: String,
    /// The escrow lock's id, for pools with a chain.
    pub job_id: Option<String>,
}

/// How a job stood on the hub at the end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobEnd {
    /// The job.
    pub job: JobRef,
    /// `status.phase`.
    pub phase: String,
    /// `status.reason`, or for a Pending job its explanation.
    pub reason: Option<String>,
    /// Its attempts.
    pub attempts: Vec<AttemptEnd>,
}

/// The escrow's balances read from the contract at the end (not from events).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EscrowReadout {
    /// Σ `deposits(payer)` over the payers seen (free deposit).
    #[serde(with = "dec")]
    pub free: u128,
    /// Σ amounts of locks still open (`locks(jobId)`).
    #[serde(with = "dec")]
    pub locked: u128,
    /// The escrow contract's token balance (`balanceOf(escrow)`).
    #[serde(with = "dec")]
    pub escrow_balance: u128,
    /// Locks the hub recorded on an attempt that exist on the contract (`locks(jobId)` state not
    /// 0) but have no `Locked` event in the chain's logs; open ones are counted in `locked`.
    #[serde(default)]
    pub unlogged: Vec<UnloggedLock>,
}

/// A lock that the contract holds and the hub knows but the chain's logs never announced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnloggedLock {
    /// The lock's id, 0x-hex.
    pub job_id: String,
    /// `locks(jobId).state`: 1 open, 2 settled, 3 expired.
    pub state: u8,
    /// `locks(jobId).amount`.
    #[serde(with = "dec")]
    pub amount: u128,
}

/// A recorded run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The seed that drew the workload and the faults.
    pub seed: u64,
    /// Profile name.
    pub profile: String,
    /// When recording ended (a pod still running has run until here).
    pub ended_at: Millis,
    /// Events, in no particular order.
    pub events: Vec<Event>,
    /// Every job the hub still knows at the end.
    pub jobs: Vec<JobEnd>,
    /// Jobs deleted on purpose during the run (not expected at the end).
    pub deleted: Vec<JobRef>,
    /// The escrow read at the end, for runs with a chain.
    pub escrow: Option<EscrowReadout>,
}

/// u128 as a decimal string: JSON numbers cannot hold every token amount, and serde_json cannot
/// buffer u128 inside internally tagged enums.
mod dec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}
