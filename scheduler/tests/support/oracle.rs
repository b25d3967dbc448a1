//! A deliberately naive reference scheduler: no index, no interning, no aggregates; it walks every
//! node of every cluster for every job. The property tests check the real scheduler against it.

use std::collections::BTreeMap;

use gpufed_scheduler::{ClusterState, JobRequest, Reservation, Strategy};

/// A (cluster, model) that fits a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub cluster: String,
    pub model: String,
    pub price: u128,
    pub free: u64,
}

/// Free GPUs per (cluster, node), taken as placements are made.
pub struct Oracle {
    clusters: Vec<ClusterState>,
    free: BTreeMap<(String, String), u32>,
}

impl Oracle {
    pub fn new(clusters: &[ClusterState], reservations: &[Reservation]) -> Oracle {
        let mut free = BTreeMap::new();
        for c in clusters {
            for n in &c.nodes {
                let offered = if n.ready {
                    n.free_gpus
                        .min(n.allocatable_gpus.saturating_sub(n.unhealthy_gpus))
                } else {
                    0
                };
                free.insert((c.name.clone(), n.name.clone()), offered);
            }
        }
        for r in reservations {
            if let Some(f) = free.get_mut(&(r.cluster.clone(), r.node.clone())) {
                *f = f.saturating_sub(r.gpus);
            }
        }
        Oracle {
            clusters: clusters.to_vec(),
            free,
        }
    }

    pub fn free(&self, cluster: &str, node: &str) -> Option<u32> {
        self.free
            .get(&(cluster.to_string(), node.to_string()))
            .copied()
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterState> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The first cluster-level filter `c` fails for `job`, as a `ReasonKind` name.
    pub fn cluster_gate(c: &ClusterState, job: &JobRequest) -> Option<&'static str> {
        use gpufed_scheduler::BondState::*;
        use gpufed_scheduler::VerificationState;
        if !c.ready {
            Some("NotReady")
        } else if !c.has_inventory {
            Some("NoInventory")
        } else if c.cordoned {
            Some("Cordoned")
        } else if matches!(c.bond, Insufficient { .. }) {
            Some("BondInsufficient")
        } else if c.bond == NoWallet {
            Some("NoWallet")
        } else if c.bond == Unknown {
            Some("BondUnknown")
        } else if matches!(c.verification, VerificationState::Failed { .. }) {
            Some("FailedVerification")
        } else if c.below_floor.is_some() {
            Some("BelowReputationFloor")
        } else if matches!(c.verification, VerificationState::Unverified { .. })
            && !job.allow_unverified
        {
            Some("Unverified")
        } else if job.exclude.contains(&c.name) {
            Some("Excluded")
        } else if job.failed_on.contains(&c.name) {
            Some("FailedBefore")
        } else if !job.regions.is_empty() && !job.regions.contains(&c.region) {
            Some("Region")
        } else {
            None
        }
    }

    /// Every (cluster, model) that fits `job` now.
    pub fn candidates(&self, job: &JobRequest) -> Vec<Candidate> {
        let need = u64::from(job.replicas) * u64::from(job.gpus_per_replica);
        let mut out = Vec::new();
        for c in &self.clusters {
            if Self::cluster_gate(c, job).is_some() {
                continue;
            }
            let mut models = job.models.clone();
            models.sort();
            models.dedup();
            for model in models {
                let Some(&price) = c.prices.get(&model) else {
                    continue;
                };
                if job.max_price.is_some_and(|max| price > max) {
                    continue;
                }
                if c.durations
                    .get(&model)
                    .is_some_and(|d| !d.takes(job.max_duration_secs))
                {
                    continue;
                }
                let (mut free, mut fit) = (0u64, 0u64);
                for n in &c.nodes {
                    if n.model == model && n.gpu_memory_mib >= job.memory_threshold_mib() {
                        let f = self.free(&c.name, &n.name).unwrap_or(0);
                        free += u64::from(f);
                        fit += u64::from(f / job.gpus_per_replica);
                    }
                }
                if free >= need && fit >= u64::from(job.replicas) {
                    out.push(Candidate {
                        cluster: c.name.clone(),
                        model,
                        price,
                        free,
                    });
                }
            }
        }
        out
    }

    /// The candidate the strategy should pick.
    pub fn best(&self, job: &JobRequest, strategy: Strategy) -> Option<Candidate> {
        let need = u64::from(job.replicas) * u64::from(job.gpus_per_replica);
        let mut all = self.candidates(job);
        all.sort_by(|a, b| {
            let key = |c: &Candidate| {
                let after = c.free - need;
                let (first, second) = match strategy {
                    Strategy::CheapestFit | Strategy::Auction => {
                        (c.price, u128::from(u64::MAX - c.free))
                    }
                    Strategy::BinPack => (u128::from(after), c.price),
                    Strategy::Spread => (u128::from(u64::MAX - after), c.price),
                };
                (first, second, c.cluster.clone(), c.model.clone())
            };
            key(a).cmp(&key(b))
        });
        all.into_iter().next()
    }

    /// Number of distinct clusters with a fitting model.
    pub fn fitting_clusters(&self, job: &JobRequest) -> usize {
        let mut names: Vec<String> = self
            .candidates(job)
            .into_iter()
            .map(|c| c.cluster)
            .collect();
        names.dedup();
        names.len()
    }

    /// Takes `gpus` from a node; an error if it does not have them (an over-commit).
    pub fn take(&mut self, cluster: &str, node: &str, gpus: u32) -> Result<(), String> {
        let slot = self
            .free
            .get_mut(&(cluster.to_string(), node.to_string()))
            .ok_or_else(|| format!("{cluster}/{node} does not exist"))?;
        *slot = slot
            .checked_sub(gpus)
            .ok_or_else(|| format!("{cluster}/{node}: {gpus} GPUs taken, {} free", *slot))?;
        Ok(())
    }
}
