//! The scheduler's output for one job: where its gang goes, or why no cluster can take it.

use crate::nofit::NoFit;
use crate::quota::OverQuota;

/// What the scheduler decided for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Place the whole gang here.
    Place(Assignment),
    /// No cluster fits now: exactly one reason per cluster of the snapshot, sorted by cluster name,
    /// kept compact (see [`NoFit`]). Empty when the snapshot has no clusters.
    NoFit(NoFit),
    /// The job's namespace has no room in its quota for any accepted model (no cluster was
    /// looked at): it waits until its own jobs end or its cohort has idle quota to lend.
    OverQuota(Box<OverQuota>),
}

/// Where a gang goes: every replica on one cluster, each replica's GPUs on one node, one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The member cluster.
    pub cluster: String,
    /// The GPU model used.
    pub model: String,
    /// What the job pays per GPU-hour, in atto-tokens: the cluster's ask for the model, except in
    /// an `Auction` pool, where it is the clearing price (`crate::auction`).
    pub price: u128,
    /// The cluster's ask per GPU-hour for the model, in atto-tokens (`price` is never below it).
    pub ask: u128,
    /// Replicas per node, sorted by node name; every listed node gets at least one replica.
    pub nodes: Vec<(String, u32)>,
    /// Free GPUs of the model left in the cluster after this placement (on nodes with enough memory
    /// for the job), the figure BinPack and Spread rank by.
    pub free_after: u64,
    /// How many clusters fit the job (with any accepted model), the chosen one included.
    pub fitting_clusters: usize,
}

impl Assignment {
    /// Replicas placed, summed over nodes.
    pub fn replicas(&self) -> u32 {
        self.nodes.iter().map(|(_, r)| *r).sum()
    }
}

impl Decision {
    /// The assignment, if the job was placed.
    pub fn assignment(&self) -> Option<&Assignment> {
        match self {
            Decision::Place(a) => Some(a),
            Decision::NoFit(_) | Decision::OverQuota(_) => None,
        }
    }
}
