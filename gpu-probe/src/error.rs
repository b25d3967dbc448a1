//! The one error type of gpu-probe.
//!
//! Start-up errors (NVML cannot load, a bad flag) end the process with a message that says what to
//! do; everything that can happen while running (an apiserver hiccup, a GPU that stops answering)
//! is logged, counted in a metric and retried on the next tick.

use std::time::Duration;

/// What can go wrong in gpu-probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// libnvidia-ml could not be loaded or initialised.
    ///
    /// Like every variant with a `#[source]`, the message leaves the cause out; [`error_chain`]
    /// (used in logs and by the binary) appends it.
    #[error(
        "cannot load NVML (tried {library}); run gpu-probe on a node with the NVIDIA driver \
         installed (and libnvidia-ml.so.1 visible, e.g. through the NVIDIA container toolkit), \
         or use `--backend sim`"
    )]
    NvmlUnavailable {
        /// The library that was tried.
        library: String,
        /// The loader's or NVML's error.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// An NVML call failed for the whole node (not one GPU).
    #[error("NVML call {call} failed")]
    Nvml {
        /// The NVML function that failed.
        call: &'static str,
        /// NVML's error.
        #[source]
        source: nvml_wrapper::error::NvmlError,
    },
    /// A sim profile name that is not in the table.
    #[error("unknown sim profile {0:?}; known profiles: {1}")]
    UnknownProfile(String, String),
    /// The configuration cannot work (e.g. `--backend nvml --all-nodes`).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Kubernetes API call failed.
    #[error("{action} failed")]
    Kube {
        /// What was being done, e.g. `apply GpuNode/node-1 status`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A Kubernetes API call did not answer in time.
    #[error("{action} timed out after {timeout:?}")]
    Timeout {
        /// What was being done.
        action: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A Node object lacks something the probe needs.
    #[error("node {node}: {problem}")]
    Node {
        /// The Node's name.
        node: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// The metrics server could not bind or serve.
    #[error("metrics server on {addr}")]
    Metrics {
        /// The listen address.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// A Prometheus metric could not be registered (a bug: names are fixed).
    #[error("registering metric")]
    Prometheus(#[source] prometheus::Error),
    /// Output (stdout in `--print` mode) could not be written.
    #[error("writing output")]
    Output(#[source] std::io::Error),
    /// A reading could not be serialised.
    #[error("serialising {what}")]
    Json {
        /// What was being serialised.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// An error and its causes on one line, `outer: cause: root cause`, leaving out a cause whose text
/// the previous message already contains (some libraries repeat their source in their message).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut last = out.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    out
}

impl ProbeError {
    /// [`error_chain`] of this error.
    pub fn chain(&self) -> String {
        error_chain(self)
    }

    /// A short, bounded label for metrics and logs: the kind of error, never an object name.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeError::NvmlUnavailable { .. } => "nvml_unavailable",
            ProbeError::Nvml { .. } => "nvml",
            ProbeError::UnknownProfile(..) => "unknown_profile",
            ProbeError::Config(_) => "config",
            ProbeError::Kube { .. } => "kube",
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Node { .. } => "node",
            ProbeError::Metrics { .. } => "metrics",
            ProbeError::Prometheus(_) => "prometheus",
            ProbeError::Output(_) => "output",
            ProbeError::Json { .. } => "json",
        }
    }

    /// Whether this is the apiserver answering 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ProbeError::Kube { source: kube::Error::Api(status), .. } if status.code == 404
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = ProbeError::Metrics {
            addr: "0.0.0.0:9400".into(),
            source: io,
        };
        assert_eq!(e.to_string(), "metrics server on 0.0.0.0:9400");
        assert_eq!(e.chain(), "metrics server on 0.0.0.0:9400: address in use");
    }

    #[test]
    fn error_kinds_are_short_metric_labels() {
        assert_eq!(ProbeError::Config("x".into()).kind(), "config");
        let t = ProbeError::Timeout {
            action: "get Node/n".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(t.kind(), "timeout");
        assert!(!t.is_not_found());
    }
}
