//! Why a cluster does not fit a job: one [`Reason`] per cluster, with short human text
//! (`no H100 (has L4)`, `4 free GPUs, needs 8`, `price 3.10 > max 2.50`) for `kubectl get` and
//! Events, and a bounded [`ReasonKind`] for aggregation and metric labels.
//!
//! Variants are declared in filter order (see `docs/scheduler.md`): the scheduler reports the first
//! filter a cluster fails, and `ReasonKind`'s ordering is that order.

use std::fmt;
use std::sync::Arc;

use crate::money::format_tokens;

/// Why a cluster cannot take a job right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The member's heartbeat expired (Ready is false).
    NotReady,
    /// The member's agent has never reported an inventory.
    NoInventory,
    /// The admin cordoned the member.
    Cordoned,
    /// The provider's bond does not allow new placements.
    Bond(BondIssue),
    /// The pool requires verified GPUs and the member's are not (ADR 0027).
    Verification(VerificationIssue),
    /// The member is below its pool's reputation floor (uptime, attempts ended by its fault or
    /// challenges failed over the pool's window).
    Reputation {
        /// Which figure, e.g. `uptime 80% < 95%`.
        message: String,
    },
    /// The job excludes this cluster.
    Excluded,
    /// An earlier attempt of the job failed or was lost here.
    FailedBefore,
    /// The cluster's region is not one the job accepts.
    Region {
        /// The cluster's region.
        region: String,
    },
    /// The cluster has no GPUs of any accepted model. The lists are shared (one allocation per job
    /// and per cluster, not per reason), since most clusters of a big pool give this reason.
    NoModel {
        /// The job's accepted models, deduplicated, in the job's order.
        wanted: Arc<[String]>,
        /// Models the cluster has GPUs of, sorted.
        has: Arc<[String]>,
    },
    /// The cluster has GPUs of the model but asks no price for them, so it does not offer them.
    NoPrice {
        /// The model.
        model: String,
    },
    /// Every GPU of the model has less memory than the job needs.
    Memory {
        /// The model.
        model: String,
        /// Largest memory per GPU of the model in the cluster, MiB.
        has_mib: u64,
        /// Memory per GPU the job needs, MiB.
        need_mib: u64,
    },
    /// The cluster asks more than the job's price cap (atto-tokens per GPU-hour).
    Price {
        /// The model.
        model: String,
        /// The cluster's price.
        price: u128,
        /// The job's cap.
        max: u128,
    },
    /// The cluster's offer of the model does not take jobs of this length (the job's
    /// `maxDuration` is outside the offer's `minDuration`..`maxDuration`).
    Duration {
        /// The model.
        model: String,
        /// The job's `maxDuration`, seconds.
        job_secs: u64,
        /// The offer's shortest job, seconds (0: none).
        min_secs: u64,
        /// The offer's longest job, seconds (`u64::MAX`: none).
        max_secs: u64,
    },
    /// No node of the model (with enough memory) is big enough for one replica, however many of
    /// its GPUs are free: waiting does not help.
    NodeTooSmall {
        /// The model.
        model: String,
        /// Most healthy allocatable GPUs on one ready node of the model with enough memory.
        largest: u32,
        /// GPUs of one replica.
        per_replica: u32,
    },
    /// Too few free GPUs of the model in the whole cluster.
    Capacity {
        /// The model.
        model: String,
        /// Free GPUs of the model (on nodes with enough memory, after reservations).
        free: u64,
        /// GPUs the gang needs.
        need: u64,
    },
    /// Enough free GPUs in total, but no single node can hold one replica.
    NodeSize {
        /// The model.
        model: String,
        /// Most free GPUs on one node.
        largest_free: u32,
        /// GPUs of one replica.
        need_per_replica: u32,
    },
    /// Enough free GPUs in total and some nodes fit a replica, but not all replicas fit.
    Fragmented {
        /// The model.
        model: String,
        /// Replicas the free GPUs can hold.
        fit: u64,
        /// Replicas of the gang.
        replicas: u32,
        /// GPUs of one replica.
        need_per_replica: u32,
    },
}

/// What is wrong with a provider's bond.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BondIssue {
    /// Bonded less than the pool's minimum (atto-tokens).
    Insufficient {
        /// Tokens bonded.
        bonded: u128,
        /// The pool's minimum.
        required: u128,
    },
    /// The member names no wallet, so it cannot hold a bond.
    NoWallet,
    /// The bond has not been read from the chain yet.
    Unknown,
}

/// Why a member's GPUs do not count as verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerificationIssue {
    /// No passing verdict for its current inventory yet.
    Unverified {
        /// Why (e.g. "challenge pending", "GPU inventory changed since the last challenge").
        message: String,
    },
    /// Its latest challenge failed.
    Failed {
        /// The verdict's message.
        message: String,
    },
}

/// The kind of a [`Reason`], without per-cluster details: bounded, ordered like the filters, and
/// fit for metric labels and for aggregating many clusters into one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReasonKind {
    /// See [`Reason::NotReady`].
    NotReady,
    /// See [`Reason::NoInventory`].
    NoInventory,
    /// See [`Reason::Cordoned`].
    Cordoned,
    /// [`BondIssue::Insufficient`].
    BondInsufficient,
    /// [`BondIssue::NoWallet`].
    NoWallet,
    /// [`BondIssue::Unknown`].
    BondUnknown,
    /// [`VerificationIssue::Unverified`].
    Unverified,
    /// [`VerificationIssue::Failed`].
    FailedVerification,
    /// See [`Reason::Reputation`].
    Reputation,
    /// See [`Reason::Excluded`].
    Excluded,
    /// See [`Reason::FailedBefore`].
    FailedBefore,
    /// See [`Reason::Region`].
    Region,
    /// See [`Reason::NoModel`].
    NoModel,
    /// See [`Reason::NoPrice`].
    NoPrice,
    /// See [`Reason::Memory`].
    Memory,
    /// See [`Reason::Price`].
    Price,
    /// See [`Reason::Duration`].
    Duration,
    /// See [`Reason::NodeTooSmall`].
    NodeTooSmall,
    /// See [`Reason::Capacity`].
    Capacity,
    /// See [`Reason::NodeSize`].
    NodeSize,
    /// See [`Reason::Fragmented`].
    Fragmented,
}

impl ReasonKind {
    /// Every kind, in filter order: `ALL[kind as usize] == kind`.
    pub(crate) const ALL: [ReasonKind; 21] = [
        ReasonKind::NotReady,
        ReasonKind::NoInventory,
        ReasonKind::Cordoned,
        ReasonKind::BondInsufficient,
        ReasonKind::NoWallet,
        ReasonKind::BondUnknown,
        ReasonKind::Unverified,
        ReasonKind::FailedVerification,
        ReasonKind::Reputation,
        ReasonKind::Excluded,
        ReasonKind::FailedBefore,
        ReasonKind::Region,
        ReasonKind::NoModel,
        ReasonKind::NoPrice,
        ReasonKind::Memory,
        ReasonKind::Price,
        ReasonKind::Duration,
        ReasonKind::NodeTooSmall,
        ReasonKind::Capacity,
        ReasonKind::NodeSize,
        ReasonKind::Fragmented,
    ];

    /// A stable CamelCase name, e.g. for a condition reason or a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::NotReady => "NotReady",
            ReasonKind::NoInventory => "NoInventory",
            ReasonKind::Cordoned => "Cordoned",
            ReasonKind::BondInsufficient => "BondInsufficient",
            ReasonKind::NoWallet => "NoWallet",
            ReasonKind::BondUnknown => "BondUnknown",
            ReasonKind::Unverified => "Unverified",
            ReasonKind::FailedVerification => "FailedVerification",
            ReasonKind::Reputation => "BelowReputationFloor",
            ReasonKind::Excluded => "Excluded",
            ReasonKind::FailedBefore => "FailedBefore",
            ReasonKind::Region => "Region",
            ReasonKind::NoModel => "NoModel",
            ReasonKind::NoPrice => "NoPrice",
            ReasonKind::Memory => "Memory",
            ReasonKind::Price => "Price",
            ReasonKind::Duration => "Duration",
            ReasonKind::NodeTooSmall => "NodeTooSmall",
            ReasonKind::Capacity => "Capacity",
            ReasonKind::NodeSize => "NodeSize",
            ReasonKind::Fragmented => "Fragmented",
        }
    }
}

impl Reason {
    /// The kind of this reason.
    pub fn kind(&self) -> ReasonKind {
        match self {
            Reason::NotReady => ReasonKind::NotReady,
            Reason::NoInventory => ReasonKind::NoInventory,
            Reason::Cordoned => ReasonKind::Cordoned,
            Reason::Bond(BondIssue::Insufficient { .. }) => ReasonKind::BondInsufficient,
            Reason::Bond(BondIssue::NoWallet) => ReasonKind::NoWallet,
            Reason::Bond(BondIssue::Unknown) => ReasonKind::BondUnknown,
            Reason::Verification(VerificationIssue::Unverified { .. }) => ReasonKind::Unverified,
            Reason::Verification(VerificationIssue::Failed { .. }) => {
                ReasonKind::FailedVerification
            }
            Reason::Reputation { .. } => ReasonKind::Reputation,
            Reason::Excluded => ReasonKind::Excluded,
            Reason::FailedBefore => ReasonKind::FailedBefore,
            Reason::Region { .. } => ReasonKind::Region,
            Reason::NoModel { .. } => ReasonKind::NoModel,
            Reason::NoPrice { .. } => ReasonKind::NoPrice,
            Reason::Memory { .. } => ReasonKind::Memory,
            Reason::Price { .. } => ReasonKind::Price,
            Reason::Duration { .. } => ReasonKind::Duration,
            Reason::NodeTooSmall { .. } => ReasonKind::NodeTooSmall,
            Reason::Capacity { .. } => ReasonKind::Capacity,
            Reason::NodeSize { .. } => ReasonKind::NodeSize,
            Reason::Fragmented { .. } => ReasonKind::Fragmented,
        }
    }

    /// Text shared by every cluster with this kind of reason for one job, used when many clusters
    /// are summed up in one line (`412 clusters: no H100`). It keeps what is the job's (the models
    /// it wants, its price cap, its memory need) and drops what is the cluster's.
    pub fn summary(&self) -> String {
        match self {
            Reason::NotReady => "not ready".into(),
            Reason::NoInventory => "no inventory yet".into(),
            Reason::Cordoned => "cordoned".into(),
            Reason::Bond(BondIssue::Insufficient { required, .. }) => {
                format!("bond < required {}", format_tokens(*required))
            }
            Reason::Bond(BondIssue::NoWallet) => "no wallet for the bond".into(),
            Reason::Bond(BondIssue::Unknown) => "bond not read from chain yet".into(),
            Reason::Verification(VerificationIssue::Unverified { .. }) => {
                "GPUs not verified yet".into()
            }
            Reason::Verification(VerificationIssue::Failed { .. }) => {
                "failed GPU verification".into()
            }
            Reason::Reputation { .. } => "below the pool's reputation floor".into(),
            Reason::Excluded => "excluded by the job".into(),
            Reason::FailedBefore => "an earlier attempt failed there".into(),
            Reason::Region { .. } => "region not accepted".into(),
            Reason::NoModel { wanted, .. } => format!("no {}", wanted.join(" or ")),
            Reason::NoPrice { .. } => "no price for the model".into(),
            Reason::Memory { need_mib, .. } => {
                format!("GPUs under {} memory", format_mib(*need_mib))
            }
            Reason::Price { max, .. } => format!("price > max {}", format_tokens(*max)),
            Reason::Duration { job_secs, .. } => {
                format!("no offer for jobs of {}", format_secs(*job_secs))
            }
            Reason::NodeTooSmall { per_replica, .. } => {
                format!(
                    "no node has {per_replica} {}",
                    gpus(u64::from(*per_replica))
                )
            }
            Reason::Capacity { need, .. } => format!("fewer than {need} free GPUs"),
            Reason::NodeSize {
                need_per_replica, ..
            } => format!("no node with {need_per_replica} free GPUs"),
            Reason::Fragmented { replicas, .. } => {
                format!("free GPUs too scattered for {replicas} replicas")
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("not ready (heartbeat expired)"),
            Reason::NoInventory => f.write_str("no inventory reported yet"),
            Reason::Cordoned => f.write_str("cordoned"),
            Reason::Bond(BondIssue::Insufficient { bonded, required }) => write!(
                f,
                "bond {} < required {}",
                format_tokens(*bonded),
                format_tokens(*required)
            ),
            Reason::Bond(BondIssue::NoWallet) => f.write_str("no wallet for the bond"),
            Reason::Bond(BondIssue::Unknown) => f.write_str("bond not read from chain yet"),
            Reason::Verification(VerificationIssue::Unverified { message }) => {
                write!(f, "GPUs not verified yet: {message}")
            }
            Reason::Verification(VerificationIssue::Failed { message }) => {
                write!(f, "failed GPU verification: {message}")
            }
            Reason::Reputation { message } => {
                write!(f, "below the pool's reputation floor: {message}")
            }
            Reason::Excluded => f.write_str("excluded by the job"),
            Reason::FailedBefore => f.write_str("an earlier attempt failed here"),
            Reason::Region { region } => write!(f, "region {region} not accepted"),
            Reason::NoModel { wanted, has } => {
                let has = if has.is_empty() {
                    "no GPUs".to_string()
                } else {
                    has.join(", ")
                };
                write!(f, "no {} (has {has})", wanted.join(" or "))
            }
            Reason::NoPrice { model } => write!(f, "no price for {model}"),
            Reason::Memory {
                model,
                has_mib,
                need_mib,
            } => write!(
                f,
                "{model} has {} per GPU, needs {}",
                format_mib(*has_mib),
                format_mib(*need_mib)
            ),
            Reason::Price { price, max, .. } => write!(
                f,
                "price {} > max {}",
                format_tokens(*price),
                format_tokens(*max)
            ),
            Reason::Duration {
                model,
                job_secs,
                min_secs,
                max_secs,
            } => write!(
                f,
                "{model} offered for jobs of {}, not {}",
                duration_range(*min_secs, *max_secs),
                format_secs(*job_secs)
            ),
            Reason::NodeTooSmall {
                model,
                largest,
                per_replica,
            } => write!(
                f,
                "no node has {per_replica} {model} {} (largest: {largest})",
                gpus(u64::from(*per_replica))
            ),
            Reason::Capacity { free, need, .. } => {
                write!(f, "{free} free {}, needs {need}", gpus(*free))
            }
            Reason::NodeSize {
                largest_free,
                need_per_replica,
                ..
            } => write!(
                f,
                "largest node has {largest_free} free {}, a replica needs {need_per_replica}",
                gpus(u64::from(*largest_free))
            ),
            Reason::Fragmented {
                fit,
                replicas,
                need_per_replica,
                ..
            } => write!(
                f,
                "free GPUs fit {fit} of {replicas} replicas of {need_per_replica} {}",
                gpus(u64::from(*need_per_replica))
            ),
        }
    }
}

fn gpus(n: u64) -> &'static str {
    if n == 1 { "GPU" } else { "GPUs" }
}

/// `5400` → `1h30m`; `90` → `1m30s`; `0` → `0s`.
pub fn format_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// An offer's duration limits: `10m to 2h`, `at least 10m`, `at most 2h`.
fn duration_range(min_secs: u64, max_secs: u64) -> String {
    match (min_secs, max_secs) {
        (0, u64::MAX) => "any length".into(),
        (0, max) => format!("at most {}", format_secs(max)),
        (min, u64::MAX) => format!("at least {}", format_secs(min)),
        (min, max) => format!("{} to {}", format_secs(min), format_secs(max)),
    }
}

/// `81920` → `80 GiB`; `40000` → `40000 MiB`.
fn format_mib(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::ONE_TOKEN;

    fn tokens(cents: u128) -> u128 {
        cents * ONE_TOKEN / 100
    }

    #[test]
    fn every_reason_reads_as_short_human_text() {
        let cases = [
            (Reason::NotReady, "not ready (heartbeat expired)"),
            (Reason::NoInventory, "no inventory reported yet"),
            (Reason::Cordoned, "cordoned"),
            (
                Reason::Bond(BondIssue::Insufficient {
                    bonded: tokens(5000),
                    required: tokens(10000),
                }),
                "bond 50.00 < required 100.00",
            ),
            (Reason::Bond(BondIssue::NoWallet), "no wallet for the bond"),
            (
                Reason::Bond(BondIssue::Unknown),
                "bond not read from chain yet",
            ),
            (Reason::Excluded, "excluded by the job"),
            (Reason::FailedBefore, "an earlier attempt failed here"),
            (
                Reason::Region {
                    region: "us-east".into(),
                },
                "region us-east not accepted",
            ),
            (
                Reason::NoModel {
                    wanted: vec!["H100".into()].into(),
                    has: vec!["L4".into()].into(),
                },
                "no H100 (has L4)",
            ),
            (
                Reason::NoModel {
                    wanted: vec!["H100".into(), "A100".into()].into(),
                    has: Arc::from([]),
                },
                "no H100 or A100 (has no GPUs)",
            ),
            (
                Reason::NoPrice {
                    model: "H100".into(),
                },
                "no price for H100",
            ),
            (
                Reason::Memory {
                    model: "A100".into(),
                    has_mib: 40 * 1024,
                    need_mib: 80 * 1024,
                },
                "A100 has 40 GiB per GPU, needs 80 GiB",
            ),
            (
                Reason::Memory {
                    model: "L4".into(),
                    has_mib: 23034,
                    need_mib: 24 * 1024,
                },
                "L4 has 23034 MiB per GPU, needs 24 GiB",
            ),
            (
                Reason::Price {
                    model: "H100".into(),
                    price: tokens(310),
                    max: tokens(250),
                },
                "price 3.10 > max 2.50",
            ),
            (
                Reason::Duration {
                    model: "H100".into(),
                    job_secs: 48 * 3600,
                    min_secs: 600,
                    max_secs: 24 * 3600,
                },
                "H100 offered for jobs of 10m to 24h, not 48h",
            ),
            (
                Reason::Duration {
                    model: "L4".into(),
                    job_secs: 90,
                    min_secs: 3600,
                    max_secs: u64::MAX,
                },
                "L4 offered for jobs of at least 1h, not 1m30s",
            ),
            (
                Reason::NodeTooSmall {
                    model: "H100".into(),
                    largest: 8,
                    per_replica: 16,
                },
                "no node has 16 H100 GPUs (largest: 8)",
            ),
            (
                Reason::Capacity {
                    model: "H100".into(),
                    free: 4,
                    need: 8,
                },
                "4 free GPUs, needs 8",
            ),
            (
                Reason::Capacity {
                    model: "H100".into(),
                    free: 1,
                    need: 2,
                },
                "1 free GPU, needs 2",
            ),
            (
                Reason::NodeSize {
                    model: "H100".into(),
                    largest_free: 4,
                    need_per_replica: 8,
                },
                "largest node has 4 free GPUs, a replica needs 8",
            ),
            (
                Reason::Fragmented {
                    model: "H100".into(),
                    fit: 2,
                    replicas: 3,
                    need_per_replica: 4,
                },
                "free GPUs fit 2 of 3 replicas of 4 GPUs",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text, "{reason:?}");
        }
    }

    #[test]
    fn summaries_keep_the_jobs_terms_and_drop_the_clusters() {
        let a = Reason::Price {
            model: "H100".into(),
            price: tokens(310),
            max: tokens(250),
        };
        let b = Reason::Price {
            model: "A100".into(),
            price: tokens(990),
            max: tokens(250),
        };
        assert_eq!(a.summary(), "price > max 2.50");
        assert_eq!(a.summary(), b.summary());
        let no_model = Reason::NoModel {
            wanted: vec!["H100".into(), "A100".into()].into(),
            has: vec!["L4".into()].into(),
        };
        assert_eq!(no_model.summary(), "no H100 or A100");
        let capacity = Reason::Capacity {
            model: "H100".into(),
            free: 3,
            need: 8,
        };
        assert_eq!(capacity.summary(), "fewer than 8 free GPUs");
        let too_small = Reason::NodeTooSmall {
            model: "A100".into(),
            largest: 4,
            per_replica: 16,
        };
        assert_eq!(too_small.summary(), "no node has 16 GPUs");
    }

    #[test]
    fn kinds_are_ordered_like_the_filters_and_have_stable_names() {
        let kinds = [
            Reason::NotReady.kind(),
            Reason::NoInventory.kind(),
            Reason::Cordoned.kind(),
            Reason::Bond(BondIssue::Unknown).kind(),
            Reason::Excluded.kind(),
            Reason::FailedBefore.kind(),
            Reason::Region { region: "x".into() }.kind(),
            Reason::NoPrice { model: "x".into() }.kind(),
        ];
        assert!(kinds.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
        assert!(ReasonKind::Price < ReasonKind::NodeTooSmall);
        assert!(ReasonKind::NodeTooSmall < ReasonKind::Capacity);
        assert!(ReasonKind::Capacity < ReasonKind::NodeSize);
        assert_eq!(ReasonKind::NodeSize.as_str(), "NodeSize");
        assert_eq!(ReasonKind::NodeTooSmall.as_str(), "NodeTooSmall");
        assert_eq!(
            Reason::Bond(BondIssue::NoWallet).kind().as_str(),
            "NoWallet"
        );
    }

    #[test]
    fn the_list_of_every_kind_is_complete_and_indexed_by_the_kind() {
        for (i, kind) in ReasonKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            // A kind added to the enum but not to the list fails to compile here.
            match kind {
                ReasonKind::NotReady
                | ReasonKind::NoInventory
                | ReasonKind::Cordoned
                | ReasonKind::BondInsufficient
                | ReasonKind::NoWallet
                | ReasonKind::BondUnknown
                | ReasonKind::Unverified
                | ReasonKind::FailedVerification
                | ReasonKind::Reputation
                | ReasonKind::Excluded
                | ReasonKind::FailedBefore
                | ReasonKind::Region
                | ReasonKind::NoModel
                | ReasonKind::NoPrice
                | ReasonKind::Memory
                | ReasonKind::Price
                | ReasonKind::Duration
                | ReasonKind::NodeTooSmall
                | ReasonKind::Capacity
                | ReasonKind::NodeSize
                | ReasonKind::Fragmented => {}
            }
        }
        assert_eq!(ReasonKind::ALL.len(), ReasonKind::Fragmented as usize + 1);
    }
}
