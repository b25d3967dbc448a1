//! The gpufed e2e harness: real Kubernetes clusters on 127.0.0.1 for tests and the demo.
//!
//! Each [`Cluster`] is etcd + kube-apiserver (RBAC, client-certificate users) + controller-manager +
//! scheduler + kwok, built from Go modules by `e2e/tools/build.sh` and started as processes of the
//! test, on free ports, side by side. [`Federation`] starts a hub and members in parallel. Nothing
//! here fakes an apiserver: tests talk to the real thing with the same clients the product uses.
//!
//! Processes die with the test (process groups, `PR_SET_PDEATHSIG`), directories are removed, and a
//! failing test prints every component's log tail.

pub mod access;
pub mod bench;
pub mod chain;
pub mod chaos;
pub mod cluster;
pub mod demo;
pub mod federation;
pub mod hubctl;
pub mod image;
pub mod joining;
pub mod market;
pub mod nodes;
pub mod peer;
pub mod pki;
pub mod placements;
pub mod process;
pub mod realnode;
pub mod storage;
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
    /// A component (a process or a real node) exited.
    #[error("{what}; last log lines:\n{log_tail}")]
    Exited {
        /// Which component, of which cluster, with its exit status.
        what: String,
        /// What it last logged.
        log_tail: String,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The error in one line: for a component that exited, which and how, without its log tail
    /// (for reports; the tail is in the component's log file).
    pub fn summary(&self) -> String {
        match self {
            Error::Exited { what, .. } => what.clone(),
            other => other.to_string(),
        }
    }

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

/// The message a panic was raised with (`panic!`'s text, or the `Err` an `unwrap` found), at
/// most [`PANIC_MESSAGE_MAX`] bytes.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a text message)");
    if text.len() <= PANIC_MESSAGE_MAX {
        return text.to_string();
    }
    let mut cut = PANIC_MESSAGE_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..cut], text.len())
}

/// Longest panic message [`run_test`] repeats after the components' logs.
const PANIC_MESSAGE_MAX: usize = 4000;

/// Runs the body of an e2e test and fails the test if it has not finished within `deadline`.
///
/// The body runs on its own multi-thread runtime, on a thread of its own, so the deadline holds
/// even where a `tokio::time::timeout` inside the body cannot fire (every worker stuck in a
/// blocking call, a runtime that never finishes shutting down). When the deadline passes, the
/// components the test started are killed, their log tails printed, and the test fails with its
/// captured output; the stuck thread is abandoned and goes with the test process. Tests still
/// bound each wait on their own: this is the backstop that keeps a test run finite.
pub fn run_test<F, Fut>(deadline: Duration, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    init_test_logging();
    // libtest names each test's thread after the test; the runtime's threads take the same name,
    // which is how the components this test starts are told from those of a test beside it.
    let name = std::thread::current()
        .name()
        .unwrap_or("gpufed-e2e-test")
        .to_string();
    let (done_tx, done) = std::sync::mpsc::channel();
    let owner = name.clone();
    let started = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .thread_name(owner)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = done_tx.send(Err(Box::new(format!("building a tokio runtime: {e}"))
                        as Box<dyn std::any::Any + Send>));
                    return;
                }
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| runtime.block_on(body())));
            // Tasks the body left behind are cancelled; none may hold the test up for long.
            runtime.shutdown_timeout(Duration::from_secs(10));
            let _ = done_tx.send(outcome);
        });
    if let Err(e) = started {
        panic!("starting the thread of {name}: {e}");
    }
    match done.recv_timeout(deadline) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            // The components' logs were printed while the body unwound, after the panic's own
            // message: say it again last, so that a log cut to its tail still shows why.
            eprintln!(
                "===== {name} failed: {} =====",
                panic_message(panic.as_ref())
            );
            resume_unwind(panic)
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{name}: the test's thread ended without a result")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            for (component, log) in process::kill_owned_by(&name, 40) {
                eprintln!("----- {component} (killed at the deadline), last lines -----\n{log}");
            }
            panic!(
                "{name} did not finish within its hard deadline of {deadline:?} and was stopped \
                 (its components were killed; the tracing output above shows where it was)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panics_message_is_its_text_cut_at_a_character() {
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("left != right"));
        assert_eq!(panic_message(owned.as_ref()), "left != right");
        let literal: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(literal.as_ref()), "boom");
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(
            panic_message(other.as_ref()),
            "(a panic without a text message)"
        );
        // 'é' is two bytes: a cut inside it moves back to the character's start.
        let long = format!("a{}", "é".repeat(PANIC_MESSAGE_MAX));
        let long: Box<dyn std::any::Any + Send> = Box::new(long);
        let cut = panic_message(long.as_ref());
        assert!(cut.starts_with('a'), "{cut}");
        assert!(
            cut.ends_with(&format!("… ({} bytes in all)", 1 + 2 * PANIC_MESSAGE_MAX)),
            "{cut}"
        );
        assert_eq!(
            cut.split('…').next().map(str::len),
            Some(PANIC_MESSAGE_MAX - 1)
        );
    }
}
