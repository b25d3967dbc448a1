//! Fixture builders for tests in every crate (`features = ["testing"]`): readable, typed objects
//! instead of copy-pasted YAML, e.g. `job("train").gpus(8).models(&["H100"]).build()`.
//! A malformed literal (price, duration) stops the test at once rather than becoming a default.

#![allow(clippy::expect_used)]

use kube::core::ObjectMeta;

use crate::job::{
    AttemptPhase, AttemptRecord, ComputeJob, ComputeJobSpec, GpuRequirements, RetryPolicy,
};
use crate::member::{MemberCluster, MemberClusterSpec, ModelPrice};
use crate::pool::{GpuPool, GpuPoolSpec};
use crate::units::KubeDuration;
use crate::workload::{Container, WorkloadTemplate};

/// Attempt `n` of a job on `cluster` in `phase`: Placement `p<n>`, H100 at 1 token per GPU-hour,
/// nothing else recorded. Tests set the fields they care about with `..attempt(…)`.
pub fn attempt(n: u32, cluster: &str, phase: AttemptPhase) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        cluster: cluster.into(),
        placement: format!("p{n}"),
        model: "H100".into(),
        price_per_gpu_hour: "1".parse().expect("price literal"),
        provider: None,
        phase,
        reason: None,
        message: None,
        placed_time: None,
        start_time: None,
        finish_time: None,
        gpu_seconds: 0,
        exits: vec![],
        planned_nodes: vec![],
        settlement: None,
        unverified_member: false,
        offer: None,
        usage_check: None,
    }
}

/// Builds a [`ComputeJob`] in namespace `team-a` with one replica of one GPU of any of H100/A100.
pub fn job(name: &str) -> JobBuilder {
    JobBuilder(ComputeJob {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("team-a".to_string()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..Default::default()
        },
        spec: ComputeJobSpec {
            pool: "default".into(),
            replicas: 1,
            gpus_per_replica: 1,
            gpu: GpuRequirements {
                models: vec!["H100".into(), "A100".into()],
                min_memory_gib: 0,
            },
            max_price_per_gpu_hour: None,
            max_duration: KubeDuration::from_secs(3600),
            regions: None,
            exclude_clusters: None,
            retry: RetryPolicy::default(),
            priority: 0,
            priority_class_name: None,
            template: WorkloadTemplate {
                containers: vec![Container {
                    name: "main".into(),
                    image: "busybox:1.36".into(),
                    command: vec![],
                    args: vec![],
                    env: vec![],
                    env_from: vec![],
                    working_dir: None,
                    resources: None,
                }],
                shm_size: None,
                scratch_size: None,
                secret_files: vec![],
                image_pull_secrets: vec![],
                inputs: vec![],
                outputs: vec![],
            },
            serving: None,
            allow_unverified: false,
            result_check: None,
        },
        status: None,
    })
}

/// Builder returned by [`job`].
pub struct JobBuilder(ComputeJob);

impl JobBuilder {
    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }
    /// Sets the number of replicas.
    pub fn replicas(mut self, n: u32) -> Self {
        self.0.spec.replicas = n;
        self
    }
    /// Sets GPUs per replica.
    pub fn gpus(mut self, n: u32) -> Self {
        self.0.spec.gpus_per_replica = n;
        self
    }
    /// Sets the accepted models.
    pub fn models(mut self, models: &[&str]) -> Self {
        self.0.spec.gpu.models = models.iter().map(|m| m.to_string()).collect();
        self
    }
    /// Sets the minimum GPU memory in GiB.
    pub fn min_memory_gib(mut self, gib: u32) -> Self {
        self.0.spec.gpu.min_memory_gib = gib;
        self
    }
    /// Sets the price cap.
    pub fn max_price(mut self, price: &str) -> Self {
        self.0.spec.max_price_per_gpu_hour = Some(price.parse().expect("a valid token amount"));
        self
    }
    /// Sets the accepted regions.
    pub fn regions(mut self, regions: &[&str]) -> Self {
        self.0.spec.regions = Some(regions.iter().map(|r| r.to_string()).collect());
        self
    }
    /// Sets the excluded clusters.
    pub fn exclude(mut self, clusters: &[&str]) -> Self {
        self.0.spec.exclude_clusters = Some(clusters.iter().map(|r| r.to_string()).collect());
        self
    }
    /// Sets the maximum duration.
    pub fn max_duration(mut self, d: &str) -> Self {
        self.0.spec.max_duration = d.parse().expect("a valid Kubernetes duration");
        self
    }
    /// Sets the priority.
    pub fn priority(mut self, p: i32) -> Self {
        self.0.spec.priority = p;
        self
    }
    /// Sets the pool.
    pub fn pool(mut self, pool: &str) -> Self {
        self.0.spec.pool = pool.into();
        self
    }
    /// Sets max attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.0.spec.retry.max_attempts = n;
        self
    }
    /// Makes it a serving job on `port`, probed at `readiness_path`.
    pub fn serving(mut self, port: u32, readiness_path: &str) -> Self {
        self.0.spec.serving = Some(Box::new(crate::serving::ServingSpec {
            port,
            readiness_path: readiness_path.into(),
            settlement_period: KubeDuration::from_secs(3600),
        }));
        self
    }
    /// The job.
    pub fn build(self) -> ComputeJob {
        self.0
    }
}

/// Builds a [`MemberCluster`] in pool `default`, region `eu-west`, offering `model` at `price`.
pub fn member(name: &str, model: &str, price: &str) -> MemberBuilder {
    MemberBuilder(MemberCluster {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            generation: Some(1),
            ..Default::default()
        },
        spec: MemberClusterSpec {
            pool: "default".into(),
            region: "eu-west".into(),
            wallet: None,
            display_name: None,
            prices: vec![ModelPrice::new(
                model,
                price.parse().expect("a valid token amount"),
            )],
            cordoned: false,
        },
        status: None,
    })
}

/// Builder returned by [`member`].
pub struct MemberBuilder(MemberCluster);

impl MemberBuilder {
    /// Sets the region.
    pub fn region(mut self, region: &str) -> Self {
        self.0.spec.region = region.into();
        self
    }
    /// Adds a price for another model.
    pub fn price(mut self, model: &str, price: &str) -> Self {
        self.0.spec.prices.push(ModelPrice::new(
            model,
            price.parse().expect("a valid token amount"),
        ));
        self
    }
    /// Cordons the member.
    pub fn cordoned(mut self) -> Self {
        self.0.spec.cordoned = true;
        self
    }
    /// The member.
    pub fn build(self) -> MemberCluster {
        self.0
    }
}

/// A pool's spec with the defaults a fresh GpuPool gets (`CheapestFit`, 40 s heartbeat timeout,
/// 10 m start timeout, no bond, no chain, no payers, no priority classes, no quotas). Tests change the fields
/// they care about with `..pool_spec()`.
pub fn pool_spec() -> GpuPoolSpec {
    GpuPoolSpec {
        strategy: Default::default(),
        heartbeat_timeout: KubeDuration::from_secs(40),
        start_timeout: KubeDuration::from_secs(600),
        min_bond: None,
        chain: None,
        payers: vec![],
        priority_classes: vec![],
        quotas: vec![],
        fair_sharing: None,
        preemption: Default::default(),
        preemption_grace_period: None,
        reclaim_within_cohort: Default::default(),
        verification: None,
        admission: Default::default(),
        reputation_window: None,
        reputation_floor: None,
        usage_check: None,
    }
}

/// The pool `name` with [`pool_spec`].
pub fn pool(name: &str) -> GpuPool {
    GpuPool::new(name, pool_spec())
}

/// The signing domain of a member of pool `default` on chain 31337 (verifying contract
/// `0x…bb`) whose wallet is `wallet`.
pub fn offer_signing(wallet: &str) -> crate::OfferSigning {
    crate::OfferSigning {
        pool: "default".into(),
        chain_id: 31337,
        verifying_contract: "0x00000000000000000000000000000000000000bb"
            .parse()
            .expect("a valid address"),
        wallet: wallet.parse().expect("a valid address"),
    }
}
