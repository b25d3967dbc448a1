//! Which Kueue the peer run starts: as shipped, or with every client at gpufed's rate — Kueue's
//! own client through its `clientConnection` setting, MultiKueue's clients of each worker through
//! `e2e/tools/kueue/multikueue-worker-rate.patch` (built by `e2e/tools/build.sh --with-peers`),
//! since Kueue builds those from the kubeconfig alone and has no setting for their rate.

/// The shipped manifest's client rate (`clientConnection` of
/// `config/components/manager/controller_manager_config.yaml`): QPS, burst.
pub const SHIPPED_CLIENT_RATE: (f64, u32) = (50.0, 100);

/// The binary `e2e/tools/build.sh --with-peers` builds from Kueue with
/// `e2e/tools/kueue/multikueue-worker-rate.patch`.
pub const WORKER_RATE_BINARY: &str = "kueue-worker-rate";

/// Which Kueue a run starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KueueSetup {
    /// Kueue as built from its module, with its shipped manifest's client rate; MultiKueue's worker
    /// clients at client-go's default (5 QPS, burst 10, per API type).
    Shipped,
    /// [`WORKER_RATE_BINARY`], with Kueue's own client (`clientConnection`) and MultiKueue's
    /// clients of each worker (the patch's environment) at `qps` and `burst`.
    Matched {
        /// Requests per second.
        qps: f64,
        /// Requests at once.
        burst: u32,
    },
}

impl KueueSetup {
    pub(crate) fn binary(self) -> &'static str {
        match self {
            KueueSetup::Shipped => "kueue",
            KueueSetup::Matched { .. } => WORKER_RATE_BINARY,
        }
    }

    pub(crate) fn client_rate(self) -> (f64, u32) {
        match self {
            KueueSetup::Shipped => SHIPPED_CLIENT_RATE,
            KueueSetup::Matched { qps, burst } => (qps, burst),
        }
    }

    /// The environment that sets the patched binary's worker-client rate.
    pub(crate) fn env(self) -> Vec<(String, String)> {
        match self {
            KueueSetup::Shipped => vec![],
            KueueSetup::Matched { qps, burst } => vec![
                ("KUEUE_MULTIKUEUE_WORKER_QPS".into(), qps.to_string()),
                ("KUEUE_MULTIKUEUE_WORKER_BURST".into(), burst.to_string()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matched_setup_raises_every_client_and_the_shipped_one_none() {
        assert_eq!(KueueSetup::Shipped.client_rate(), SHIPPED_CLIENT_RATE);
        assert!(KueueSetup::Shipped.env().is_empty());
        assert_eq!(KueueSetup::Shipped.binary(), "kueue");
        let matched = KueueSetup::Matched {
            qps: 500.0,
            burst: 1000,
        };
        assert_eq!(matched.client_rate(), (500.0, 1000));
        assert_eq!(
            matched.env(),
            [
                ("KUEUE_MULTIKUEUE_WORKER_QPS".to_string(), "500".to_string()),
                (
                    "KUEUE_MULTIKUEUE_WORKER_BURST".to_string(),
                    "1000".to_string()
                ),
            ]
        );
        assert_eq!(matched.binary(), WORKER_RATE_BINARY);
    }
}
