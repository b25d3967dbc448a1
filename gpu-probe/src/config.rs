//! What a probe run is asked to do, independent of how it was asked (flags, env, a test harness).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gpufed_crds::ProbeBackend;

use crate::error::ProbeError;
use crate::nodes::SimOverrides;
use crate::sim::LABEL_SIM_PROFILE;

/// Which nodes a probe serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One node (DaemonSet mode): the node the probe runs on.
    Node(String),
    /// Every Node matching a label selector (sim mode for kwok clusters), re-listed every tick.
    AllNodes {
        /// Label selector, e.g. `gpufed.io/sim-profile` (has the label).
        selector: String,
    },
}

/// Simulator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    /// Global seed; each node's seed is `hash(seed, node name)`.
    pub seed: u64,
    /// Share of GPUs (0–1) drawn faulty: they report uncorrected ECC errors.
    pub fail_rate: f64,
    /// Profile and GPU count that override the Node's label and capacity.
    pub overrides: SimOverrides,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 0,
            fail_rate: 0.0,
            overrides: SimOverrides::default(),
        }
    }
}

/// Everything [`crate::run`] needs besides the client.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    /// Where figures come from.
    pub backend: ProbeBackend,
    /// Which nodes to serve.
    pub target: Target,
    /// Time between reads (and writes).
    pub interval: Duration,
    /// Deadline of every apiserver call.
    pub api_timeout: Duration,
    /// Where to serve `/metrics`, `/healthz`, `/readyz`; `None` serves nothing (tests, harness).
    pub metrics_addr: Option<SocketAddr>,
    /// NVML library to load instead of `libnvidia-ml.so.1`.
    pub nvml_library: Option<PathBuf>,
    /// Simulator settings (ignored by the NVML backend).
    pub sim: SimOptions,
    /// Do one pass and return (its error, if the pass failed to write).
    pub once: bool,
}

impl ProbeConfig {
    /// The simulator serving every Node labelled `gpufed.io/sim-profile`, every 10 s, with
    /// metrics on `0.0.0.0:9400`: what the kwok clusters of the e2e harness run.
    pub fn sim_all_nodes(seed: u64) -> Self {
        ProbeConfig {
            backend: ProbeBackend::Sim,
            target: Target::AllNodes {
                selector: LABEL_SIM_PROFILE.to_string(),
            },
            sim: SimOptions {
                seed,
                ..SimOptions::default()
            },
            ..Self::node(ProbeBackend::Nvml, "")
        }
    }

    /// One node with the given backend (DaemonSet mode), every 10 s, metrics on `0.0.0.0:9400`.
    pub fn node(backend: ProbeBackend, node_name: &str) -> Self {
        ProbeConfig {
            backend,
            target: Target::Node(node_name.to_string()),
            interval: Duration::from_secs(10),
            api_timeout: Duration::from_secs(10),
            metrics_addr: Some(SocketAddr::from(([0, 0, 0, 0], 9400))),
            nvml_library: None,
            sim: SimOptions::default(),
            once: false,
        }
    }

    /// Reject configurations that cannot work, with a message naming the flag.
    pub fn validate(&self) -> Result<(), ProbeError> {
        let bad = |m: &str| Err(ProbeError::Config(m.to_string()));
        match &self.target {
            Target::AllNodes { .. } if self.backend == ProbeBackend::Nvml => {
                return bad(
                    "--all-nodes needs --backend sim: NVML can only read the GPUs of the node it runs on",
                );
            }
            Target::Node(name) if name.is_empty() => {
                return bad(
                    "--node-name (or NODE_NAME) is empty; pass the node to serve, or --all-nodes with --backend sim",
                );
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.sim.fail_rate) {
            return bad("--sim-fail-rate must be between 0 and 1");
        }
        if self.interval.is_zero() {
            return bad("--interval must be greater than zero");
        }
        if self.api_timeout.is_zero() {
            return bad("--api-timeout must be greater than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_cannot_serve_all_nodes() {
        let config = ProbeConfig {
            backend: ProbeBackend::Nvml,
            ..ProbeConfig::sim_all_nodes(1)
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--all-nodes needs --backend sim"), "{err}");
        assert!(ProbeConfig::sim_all_nodes(1).validate().is_ok());
    }

    #[test]
    fn out_of_range_settings_are_refused_with_the_flag_named() {
        let mut c = ProbeConfig::node(ProbeBackend::Sim, "n");
        c.sim.fail_rate = 1.5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--sim-fail-rate")
        );
        let mut c = ProbeConfig::node(ProbeBackend::Sim, "n");
        c.interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("--interval"));
        let c = ProbeConfig::node(ProbeBackend::Nvml, "");
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--node-name")
        );
    }

    #[test]
    fn the_all_nodes_preset_selects_sim_profile_nodes_every_ten_seconds() {
        let c = ProbeConfig::sim_all_nodes(7);
        assert_eq!(c.backend, ProbeBackend::Sim);
        assert_eq!(
            c.target,
            Target::AllNodes {
                selector: LABEL_SIM_PROFILE.into()
            }
        );
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.sim.seed, 7);
    }
}
