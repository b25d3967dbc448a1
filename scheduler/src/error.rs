//! Errors of the scheduling core. They all mean the caller handed over inputs that the CRD schemas
//! already rule out (duplicate names, a gang of zero GPUs), so they point at a bug in the hub's
//! mapping from CRDs to plain structs. Failing loudly beats silently placing a malformed job.

/// Why a token amount could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a plain non-negative decimal with at most 18 decimals.
    #[error(
        "invalid token amount {0:?}: write a non-negative decimal number of tokens such as \"2.40\" (at most 18 decimals, no sign, no exponent)"
    )]
    Malformed(String),
}

/// Why the scheduler refused its inputs. Checked before anything is placed, so an error never
/// leaves a batch half-scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Two clusters of the snapshot share a name, so reasons and reservations would be ambiguous.
    #[error("cluster {name:?} appears more than once in the snapshot")]
    DuplicateCluster {
        /// The repeated cluster name.
        name: String,
    },
    /// Two nodes of one cluster share a name, so reservations would be ambiguous.
    #[error("node {node:?} appears more than once in cluster {cluster:?}")]
    DuplicateNode {
        /// The cluster.
        cluster: String,
        /// The repeated node name.
        node: String,
    },
    /// Two jobs of one batch share a key.
    #[error("job {key:?} appears more than once in the batch")]
    DuplicateJob {
        /// The repeated job key.
        key: String,
    },
    /// A job that asks for nothing placeable.
    #[error("job {key:?} is invalid: {problem}")]
    InvalidJob {
        /// The job key.
        key: String,
        /// What is wrong, e.g. `replicas is 0`.
        problem: &'static str,
    },
}
