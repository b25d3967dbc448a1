//! Errors of the operator. Each variant names what failed; `kind()` gives a short, bounded label
//! for the `gpufed_reconcile_errors_total` metric.

/// An operator error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object lacks a field the apiserver always sets (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingObjectKey(&'static str),
    /// A value in an object could not be used.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which value.
        what: String,
        /// Why.
        detail: String,
    },
    /// Serialising or deserialising failed.
    #[error("serialising {context}: {source}")]
    Serde {
        /// What.
        context: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The kube-runtime finalizer helper failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The chain could not be reached or refused a transaction.
    #[error("chain: {0}")]
    Chain(String),
    /// Configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// This replica lost the leader Lease.
    #[error("lost leadership")]
    LostLeadership,
    /// A task of the process ended by panicking.
    #[error("the {task} task panicked: {detail}")]
    Panicked {
        /// Which task.
        task: &'static str,
        /// The panic.
        detail: String,
    },
    /// An apiserver call did not answer in time (the agent bounds every call it makes).
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        what: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
}

impl Error {
    /// Wraps a kube error with what was being done, for `map_err`.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube {
            context,
            source: Box::new(source),
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::MissingObjectKey(_) => "missing_key",
            Error::Invalid { .. } => "invalid",
            Error::Serde { .. } => "serde",
            Error::Finalizer(_) => "finalizer",
            Error::Chain(_) => "chain",
            Error::Config(_) => "config",
            Error::LostLeadership => "leadership",
            Error::Panicked { .. } => "panic",
            Error::Timeout { .. } => "timeout",
        }
    }

    /// Whether the apiserver answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404))
    }

    /// Whether the apiserver answered 409 Conflict (already exists, or a stale resourceVersion).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 409))
    }
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
