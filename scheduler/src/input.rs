//! The scheduler's inputs: plain structs the hub fills from `MemberCluster`, `ProviderBond`,
//! `GpuPool` and `ComputeJob` objects. Keeping them free of Kubernetes types is what lets the core
//! be a pure function, tested without an apiserver and benchmarked on its own.

use std::collections::BTreeMap;

use crate::error::ScheduleError;

/// One member cluster as the hub sees it at the start of a scheduling pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// MemberCluster name, unique in the snapshot.
    pub name: String,
    /// Region, e.g. `eu-west`.
    pub region: String,
    /// The member's heartbeat is fresh (Ready condition true).
    pub ready: bool,
    /// The admin cordoned the member: no new placements.
    pub cordoned: bool,
    /// Whether the provider's bond allows new placements.
    pub bond: BondState,
    /// Whether the member's GPUs are verified, in a pool that requires it.
    pub verification: VerificationState,
    /// Why the member is below its pool's reputation floor (`GpuPool.spec.reputationFloor`): no
    /// tenant jobs go there. `None` when it is not, or for the hub's own jobs.
    pub below_floor: Option<String>,
    /// Price per GPU-hour by normalised model, in atto-tokens (10^-18 token). GPUs of a model
    /// without a price are not offered.
    pub prices: BTreeMap<String, u128>,
    /// The job lengths each model is offered for (the offer's `minDuration`/`maxDuration`); a
    /// model not listed takes any.
    pub durations: BTreeMap<String, DurationLimits>,
    /// GPU nodes from the member's last inventory report.
    pub nodes: Vec<NodeState>,
    /// The agent has reported an inventory at least once (an empty `nodes` then means no GPUs).
    pub has_inventory: bool,
}

/// The job lengths (`maxDuration`, seconds) an offer of one model takes, bounds included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationLimits {
    /// Shortest; 0: none.
    pub min_secs: u64,
    /// Longest; `u64::MAX`: none.
    pub max_secs: u64,
}

impl Default for DurationLimits {
    fn default() -> Self {
        DurationLimits {
            min_secs: 0,
            max_secs: u64::MAX,
        }
    }
}

impl DurationLimits {
    /// Whether a job of `secs` is within the limits.
    pub fn takes(&self, secs: u64) -> bool {
        self.min_secs <= secs && secs <= self.max_secs
    }
}

/// The provider's bond as far as the scheduler cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BondState {
    /// The pool has no chain or a minimum bond of zero.
    #[default]
    NotRequired,
    /// Bonded at least the pool's minimum.
    Eligible,
    /// Bonded less than the pool's minimum (atto-tokens).
    Insufficient {
        /// Tokens bonded and not unbonding.
        bonded: u128,
        /// The pool's minimum.
        required: u128,
    },
    /// The pool has a chain but the member names no wallet, so it cannot hold a bond.
    NoWallet,
    /// The bond has not been read from the chain yet.
    Unknown,
}

impl BondState {
    /// Whether new placements may go to a member in this state.
    pub fn allows_placement(&self) -> bool {
        matches!(self, BondState::NotRequired | BondState::Eligible)
    }
}

/// The member's challenge verdict as far as the scheduler cares (ADR 0027).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VerificationState {
    /// The pool does not require verification, or the job is one of the hub's own (a challenge).
    #[default]
    NotRequired,
    /// The latest challenge passed for the member's current inventory.
    Passed,
    /// No verdict yet for the current inventory (never challenged, or its GPUs changed since).
    Unverified {
        /// Why, for the job's explanation.
        message: String,
    },
    /// The latest challenge failed.
    Failed {
        /// The verdict's message.
        message: String,
    },
}

impl VerificationState {
    /// Whether tenant jobs may be placed on a member in this state.
    pub fn allows_placement(&self) -> bool {
        matches!(
            self,
            VerificationState::NotRequired | VerificationState::Passed
        )
    }

    /// Whether jobs that opt in to unverified members may be placed on a member in this state:
    /// no verdict yet, but none failed either.
    pub fn allows_opt_in(&self) -> bool {
        matches!(self, VerificationState::Unverified { .. })
    }
}

/// The GPUs of one node, from the member's inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Node name, unique in its cluster.
    pub name: String,
    /// Normalised GPU model, e.g. `H100`.
    pub model: String,
    /// Memory per GPU in MiB.
    pub gpu_memory_mib: u64,
    /// GPUs the node offers to pods.
    pub allocatable_gpus: u32,
    /// Allocatable GPUs not used by running pods, unhealthy ones excluded.
    pub free_gpus: u32,
    /// GPUs reported unhealthy.
    pub unhealthy_gpus: u32,
    /// The node is Ready and schedulable; a node that is not offers nothing.
    pub ready: bool,
    /// Mean GPU utilisation in percent (informational; not used for placement).
    pub utilization_percent: u32,
}

impl NodeState {
    /// GPUs this node can take before reservations: nothing when not ready, and never more than
    /// its healthy allocatable GPUs even if a report says otherwise.
    pub fn offered_gpus(&self) -> u32 {
        self.free_gpus.min(self.size_gpus())
    }

    /// GPUs this node could ever offer as it stands, free or not: its healthy allocatable GPUs,
    /// nothing when not ready. A replica wider than every node's size cannot wait its way in.
    pub fn size_gpus(&self) -> u32 {
        if !self.ready {
            return 0;
        }
        self.allocatable_gpus.saturating_sub(self.unhealthy_gpus)
    }
}

/// GPUs the hub has promised to a placement that the member's inventory does not show yet.
/// Reservations naming a cluster or node missing from the snapshot are ignored (the node is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// GPUs promised.
    pub gpus: u32,
}

/// A pending job to place: one gang of `replicas` × `gpus_per_replica` GPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRequest {
    /// `namespace/name`, unique in a batch.
    pub key: String,
    /// Replicas of the gang, all on one cluster.
    pub replicas: u32,
    /// GPUs per replica, all on one node.
    pub gpus_per_replica: u32,
    /// Accepted GPU models, in the job's order of preference (used only to break ties between
    /// equally informative reasons).
    pub models: Vec<String>,
    /// Minimum memory per GPU in MiB, as advertised (`80 GiB` for an H100 80GB). Drivers report a
    /// little less than the advertised size (an H100 80GB reports 81,559 MiB), so a GPU qualifies
    /// when it reports at least [`MEMORY_TOLERANCE_PERCENT`] of it; see
    /// [`JobRequest::memory_threshold_mib`].
    pub min_gpu_memory_mib: u64,
    /// Highest accepted price per GPU-hour in atto-tokens; `None` accepts any price.
    pub max_price: Option<u128>,
    /// Accepted regions; empty accepts any.
    pub regions: Vec<String>,
    /// Clusters the job must not use.
    pub exclude: Vec<String>,
    /// Clusters where an earlier attempt failed or was lost; not used again.
    pub failed_on: Vec<String>,
    /// The job accepts members whose GPUs are not verified yet
    /// ([`VerificationState::Unverified`], e.g. a member on probation after joining by stake,
    /// ADR 0031); members whose challenge failed stay out.
    pub allow_unverified: bool,
    /// Higher is placed first.
    pub priority: i32,
    /// Creation order; among equal priorities smaller (older) is placed first.
    pub order: u64,
    /// Longest run of one attempt in seconds (`spec.maxDuration`): with the GPUs, the job's worst
    /// case against a GPU-hours quota.
    pub max_duration_secs: u64,
    /// Atto-tokens the escrow locks for one attempt (price cap × GPUs × maxDuration), counted
    /// against a spend quota; `None`: no bound (the job sets no price cap).
    pub max_spend: Option<u128>,
}

/// Share, in percent, of a job's advertised minimum GPU memory that a GPU must report to qualify.
pub const MEMORY_TOLERANCE_PERCENT: u64 = 93;

/// `jobs` in the order the scheduler decides them: highest priority first, then by `order`
/// (submission), then by key.
pub fn queue_order(jobs: &[JobRequest]) -> Vec<&JobRequest> {
    let mut order: Vec<&JobRequest> = jobs.iter().collect();
    order.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.order.cmp(&b.order))
            .then(a.key.cmp(&b.key))
    });
    order
}

impl JobRequest {
    /// The least memory per GPU, in MiB as reported, that satisfies [`JobRequest::min_gpu_memory_mib`].
    pub fn memory_threshold_mib(&self) -> u64 {
        self.min_gpu_memory_mib * MEMORY_TOLERANCE_PERCENT / 100
    }

    /// Total GPUs of the gang.
    pub fn total_gpus(&self) -> u64 {
        u64::from(self.replicas) * u64::from(self.gpus_per_replica)
    }

    /// Checks what the ComputeJob schema guarantees: at least one replica of at least one GPU, and
    /// at least one accepted model.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let problem = if self.replicas == 0 {
            "replicas is 0"
        } else if self.gpus_per_replica == 0 {
            "gpus_per_replica is 0"
        } else if self.models.is_empty() {
            "no accepted GPU models"
        } else {
            return Ok(());
        };
        Err(ScheduleError::InvalidJob {
            key: self.key.clone(),
            problem,
        })
    }
}

/// How the pool ranks clusters that fit (mirrors `GpuPool.spec.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Lowest price; ties go to more free GPUs of the model, then to the cluster name.
    #[default]
    CheapestFit,
    /// Fewest free GPUs of the model left after placing; then price, then name.
    BinPack,
    /// Most free GPUs of the model left after placing; then price, then name.
    Spread,
    /// A sealed-bid reverse auction per job: the eligible offers are its bids, the lowest ask wins
    /// (ranked as `CheapestFit`) and the job pays the lowest ask of any *other* eligible cluster
    /// (second price), or the winner's own ask when no other cluster fits; never above the job's
    /// `max_price`, never below the winner's ask (ADR 0024, `auction.rs`).
    Auction,
}

/// The pool's scheduling policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// How fitting clusters are ranked.
    pub strategy: Strategy,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(free: u32, allocatable: u32, unhealthy: u32, ready: bool) -> NodeState {
        NodeState {
            free_gpus: free,
            allocatable_gpus: allocatable,
            unhealthy_gpus: unhealthy,
            ready,
            ..NodeState::default()
        }
    }

    #[test]
    fn a_node_that_is_not_ready_offers_nothing() {
        assert_eq!(node(8, 8, 0, false).offered_gpus(), 0);
        assert_eq!(node(8, 8, 0, true).offered_gpus(), 8);
    }

    #[test]
    fn a_node_never_offers_more_than_its_healthy_allocatable_gpus() {
        assert_eq!(node(8, 8, 2, true).offered_gpus(), 6);
        assert_eq!(node(5, 8, 2, true).offered_gpus(), 5);
        assert_eq!(node(9, 8, 0, true).offered_gpus(), 8);
        assert_eq!(node(4, 2, 5, true).offered_gpus(), 0);
    }

    #[test]
    fn only_eligible_or_unneeded_bonds_allow_placement() {
        assert!(BondState::NotRequired.allows_placement());
        assert!(BondState::Eligible.allows_placement());
        assert!(!BondState::NoWallet.allows_placement());
        assert!(!BondState::Unknown.allows_placement());
        let short = BondState::Insufficient {
            bonded: 1,
            required: 2,
        };
        assert!(!short.allows_placement());
    }

    #[test]
    fn jobs_without_replicas_gpus_or_models_are_invalid() {
        let ok = JobRequest {
            key: "ns/a".into(),
            replicas: 1,
            gpus_per_replica: 1,
            models: vec!["H100".into()],
            ..JobRequest::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.total_gpus(), 1);
        for (job, problem) in [
            (
                JobRequest {
                    replicas: 0,
                    ..ok.clone()
                },
                "replicas is 0",
            ),
            (
                JobRequest {
                    gpus_per_replica: 0,
                    ..ok.clone()
                },
                "gpus_per_replica is 0",
            ),
            (
                JobRequest {
                    models: vec![],
                    ..ok.clone()
                },
                "no accepted GPU models",
            ),
        ] {
            let err = job.validate().unwrap_err();
            assert_eq!(
                err,
                ScheduleError::InvalidJob {
                    key: "ns/a".into(),
                    problem
                }
            );
            assert!(err.to_string().contains(problem));
        }
    }
}
