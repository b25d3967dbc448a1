//! Fixture builders for tests here and in other crates (`features = ["testing"]`): readable inputs
//! instead of copy-pasted struct literals, e.g.
//! `cluster("alpha").region("eu-west").node("n1", "H100", 80 * 1024, 8).price("H100", "2.40")`.
//!
//! Amounts are written as decimal text, as users write them; a malformed literal is a bug in the
//! test that uses it, so the builders stop the test rather than price something at zero.
#![allow(clippy::expect_used)]

use crate::input::{BondState, ClusterState, JobRequest, NodeState, Reservation};
use crate::money::parse_tokens;

/// Atto-tokens of a decimal literal such as `"2.40"` (test code only: stops on a bad literal).
pub fn tokens(text: &str) -> u128 {
    parse_tokens(text).expect("a token amount literal in a test")
}

/// A ready cluster in `eu-west` with an inventory, no bond requirement, no nodes and no prices.
pub fn cluster(name: &str) -> ClusterBuilder {
    ClusterBuilder(ClusterState {
        name: name.into(),
        region: "eu-west".into(),
        ready: true,
        cordoned: false,
        bond: BondState::NotRequired,
        prices: Default::default(),
        durations: Default::default(),
        nodes: Vec::new(),
        has_inventory: true,
        verification: crate::VerificationState::NotRequired,
        below_floor: None,
    })
}

/// Builder returned by [`cluster`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder(ClusterState);

impl ClusterBuilder {
    /// Sets the region.
    pub fn region(mut self, region: &str) -> Self {
        self.0.region = region.into();
        self
    }
    /// Adds a ready node with `gpus` GPUs, all free and healthy.
    pub fn node(self, name: &str, model: &str, memory_mib: u64, gpus: u32) -> Self {
        self.node_free(name, model, memory_mib, gpus, gpus)
    }
    /// Adds a ready node with `allocatable` GPUs of which `free` are free.
    pub fn node_free(
        self,
        name: &str,
        model: &str,
        memory_mib: u64,
        allocatable: u32,
        free: u32,
    ) -> Self {
        self.node_state(NodeState {
            name: name.into(),
            model: model.into(),
            gpu_memory_mib: memory_mib,
            allocatable_gpus: allocatable,
            free_gpus: free,
            unhealthy_gpus: 0,
            ready: true,
            utilization_percent: 0,
        })
    }
    /// Adds a node as given.
    pub fn node_state(mut self, node: NodeState) -> Self {
        self.0.nodes.push(node);
        self
    }
    /// Sets the price per GPU-hour of `model`, e.g. `"2.40"`.
    pub fn price(mut self, model: &str, price: &str) -> Self {
        self.0.prices.insert(model.into(), tokens(price));
        self
    }
    /// Offers `model` only for jobs of `min_secs` to `max_secs` (`maxDuration`).
    pub fn durations(mut self, model: &str, min_secs: u64, max_secs: u64) -> Self {
        self.0
            .durations
            .insert(model.into(), crate::DurationLimits { min_secs, max_secs });
        self
    }
    /// Marks the cluster not ready (heartbeat expired).
    pub fn not_ready(mut self) -> Self {
        self.0.ready = false;
        self
    }
    /// Cordons the cluster.
    pub fn cordoned(mut self) -> Self {
        self.0.cordoned = true;
        self
    }
    /// Marks the cluster as never having reported an inventory.
    pub fn no_inventory(mut self) -> Self {
        self.0.has_inventory = false;
        self
    }
    /// Sets the bond state.
    pub fn bond(mut self, bond: BondState) -> Self {
        self.0.bond = bond;
        self
    }
    /// Sets the verification state.
    pub fn verification(mut self, verification: crate::VerificationState) -> Self {
        self.0.verification = verification;
        self
    }
    /// The cluster.
    pub fn build(self) -> ClusterState {
        self.0
    }
}

/// A job `key` of one replica of one GPU, accepting `H100` at any price in any region.
pub fn job(key: &str) -> JobBuilder {
    JobBuilder(JobRequest {
        key: key.into(),
        replicas: 1,
        gpus_per_replica: 1,
        models: vec!["H100".into()],
        min_gpu_memory_mib: 0,
        max_price: None,
        regions: Vec::new(),
        exclude: Vec::new(),
        failed_on: Vec::new(),
        allow_unverified: false,
        priority: 0,
        order: 0,
        max_duration_secs: 3600,
        max_spend: None,
    })
}

/// Builder returned by [`job`].
#[derive(Clone, Debug)]
pub struct JobBuilder(JobRequest);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl JobBuilder {
    /// Sets the number of replicas.
    pub fn replicas(mut self, n: u32) -> Self {
        self.0.replicas = n;
        self
    }
    /// Sets GPUs per replica.
    pub fn gpus(mut self, n: u32) -> Self {
        self.0.gpus_per_replica = n;
        self
    }
    /// Sets the accepted models.
    pub fn models(mut self, models: &[&str]) -> Self {
        self.0.models = strings(models);
        self
    }
    /// Sets the minimum memory per GPU in GiB.
    pub fn min_memory_gib(mut self, gib: u64) -> Self {
        self.0.min_gpu_memory_mib = gib * 1024;
        self
    }
    /// Sets the price cap, e.g. `"2.50"`.
    pub fn max_price(mut self, price: &str) -> Self {
        self.0.max_price = Some(tokens(price));
        self
    }
    /// Sets the accepted regions.
    pub fn regions(mut self, regions: &[&str]) -> Self {
        self.0.regions = strings(regions);
        self
    }
    /// Sets the excluded clusters.
    pub fn exclude(mut self, clusters: &[&str]) -> Self {
        self.0.exclude = strings(clusters);
        self
    }
    /// Opts in to members whose GPUs are not verified yet.
    pub fn allow_unverified(mut self) -> Self {
        self.0.allow_unverified = true;
        self
    }
    /// Sets the clusters where earlier attempts failed.
    pub fn failed_on(mut self, clusters: &[&str]) -> Self {
        self.0.failed_on = strings(clusters);
        self
    }
    /// Sets the priority.
    pub fn priority(mut self, p: i32) -> Self {
        self.0.priority = p;
        self
    }
    /// Sets the creation order.
    pub fn order(mut self, order: u64) -> Self {
        self.0.order = order;
        self
    }
    /// Sets the longest run of one attempt, in seconds.
    pub fn max_duration(mut self, secs: u64) -> Self {
        self.0.max_duration_secs = secs;
        self
    }
    /// Sets the escrow lock, e.g. `"20"` tokens.
    pub fn max_spend(mut self, amount: &str) -> Self {
        self.0.max_spend = Some(tokens(amount));
        self
    }
    /// The job.
    pub fn build(self) -> JobRequest {
        self.0
    }
}

/// `gpus` GPUs promised on `node` of `cluster`.
pub fn reservation(cluster: &str, node: &str, gpus: u32) -> Reservation {
    Reservation {
        cluster: cluster.into(),
        node: node.into(),
        gpus,
    }
}
