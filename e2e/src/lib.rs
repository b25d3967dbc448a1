//! The gpufed e2e harness: real Kubernetes clusters on 127.0.0.1 for tests and the demo.
//!
//! Each [`Cluster`] is etcd + kube-apiserver (RBAC, client-certificate users) + controller-manager +
//! scheduler + kwok, built from Go modules by `e2e/tools/build.sh` and started as processes of the
//! test, on free ports, side by side. [`Federation`] starts a hub and members in parallel. Nothing
//! here fakes an apiserver: tests talk to the real thing with the same clients the product uses.
//!
//! Processes die with the test (process groups, `PR_SET_PDEATHSIG`), directories are removed, and a
//! failing test prints every component's log tail.

pub mod bench;
pub mod chain;
pub mod cluster;
pub mod demo;
pub mod federation;
pub mod hubctl;
pub mod joining;
pub mod nodes;
pub mod peer;
pub mod pki;
pub mod process;
pub mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterSpec, client_from_kubeconfig};
pub use federation::Federation;
pub use nodes::NodeSpec;
pub use process::Process;
pub use tools::Tools;
pub use wait::wait_until;

use std::time::Duration;

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An apiserver call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    fn io(what: String, source: std::io::Error) -> Error {
        Error::Io { what, source }
    }

    fn cert(e: rcgen::Error) -> Error {
        Error::Cert(e)
    }

    /// Maps a kube error with context, for `map_err`.
    pub fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube {
            what,
            source: Box::new(source),
        }
    }
}

/// Installs a tracing subscriber for tests (idempotent; `RUST_LOG` controls the level) and ring as
/// the TLS crypto provider.
pub fn init_test_logging() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
            }),
        )
        .with_test_writer()
        .try_init();
}
