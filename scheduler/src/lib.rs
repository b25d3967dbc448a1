//! The pure scheduling core of the gpufed hub: given pending `ComputeJob`s (as [`JobRequest`]s),
//! a snapshot of member clusters ([`ClusterState`]), the GPUs already promised to in-flight
//! placements ([`Reservation`]) and the pool's [`Policy`], decide for each job either where its
//! whole gang goes ([`Decision::Place`]) or why no cluster fits ([`Decision::NoFit`]), and explain
//! either in one line.
//!
//! No Kubernetes, no I/O, no clock, no randomness, no floats: the same inputs give the same output
//! whatever order clusters, nodes or reservations come in. The hub fills the plain input structs
//! from its CRDs; this crate does not depend on them. How filters, scoring, reservations and
//! explanations work, and how fast, is in `docs/scheduler.md`.
//!
//! Modules: [`input`] (what goes in), `index` (the per-batch working copy), `roster` (what a
//! no-fit decision keeps of the snapshot), `filter` (why a cluster fits or not), `scan` (the
//! indexed search for the best fit, and the reasons that depend on free GPUs), `score`
//! (strategies), `packing` (nodes inside the chosen cluster), [`scheduler`] (entry points),
//! [`quota`] (namespace quotas and cohort borrowing), [`period`] (calendar
//! periods of GPU-hours and spend quotas), [`fairshare`] (fair-share order and the
//! hold that keeps large gangs from starving), [`preempt`] (which lower-priority attempts a job
//! would evict), [`reclaim`] (which borrowers' attempts a cohort member may evict to get its
//! nominal quota back), [`auction`] (the clearing price of `Auction`
//! pools), [`decision`], [`nofit`] and [`reason`] (what comes out), [`mod@explain`] (text), [`money`]
//! (token amounts as text), [`error`].

pub mod auction;
pub mod decision;
pub mod error;
pub mod explain;
pub mod fairshare;
mod filter;
mod index;
pub mod input;
pub mod money;
pub mod nofit;
mod packing;
pub mod period;
pub mod preempt;
pub mod quota;
pub mod reason;
pub mod reclaim;
#[cfg(any(test, feature = "testing"))]
pub mod reference;
mod roster;
mod scan;
pub mod scheduler;
mod score;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use auction::clearing_price;
pub use decision::{Assignment, Decision};
pub use error::{MoneyError, ScheduleError};
pub use explain::{MAX_EXPLANATION_LEN, ReasonList, explain, explain_placement};
pub use fairshare::{Before, FairPass, FairShare, Hold, Share, schedule_batch_fair, shares};
pub use input::{
    BondState, ClusterState, DurationLimits, JobRequest, MEMORY_TOLERANCE_PERCENT, NodeState,
    Policy, Reservation, Strategy, VerificationState,
};
pub use money::{ONE_TOKEN, format_tokens, parse_tokens};
pub use nofit::{NoFit, NoFitSignature};
pub use period::{Period, PeriodQuota, PeriodUsage};
pub use preempt::{MAX_PREEMPTORS, Preempt, Running, Victim, plan_preemptions};
pub use quota::{
    GroupQuota, Limit, NamespaceQuota, OverQuota, PeriodUse, QuotaBook, QuotaUse, Usage,
};
pub use reason::{BondIssue, Reason, ReasonKind, VerificationIssue};
pub use reclaim::{Claim, ReclaimPolicy, Reclaimed, reclaim_victims};
pub use scheduler::{Scheduler, schedule, schedule_batch, schedule_batch_with_quotas};
