//! Prometheus metrics of the operator, all prefixed `gpufed_`. Labels are bounded: controller
//! names, error kinds, results, pools, clusters and GPU models — never a job or placement name.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the operator exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles per controller.
    pub reconciles: IntCounterVec,
    /// Failed reconciles per controller and error kind.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration per controller.
    pub reconcile_duration: HistogramVec,
    /// Jobs waiting for a cluster, per pool.
    pub pending_jobs: IntGaugeVec,
    /// Time from a job entering the queue to its placement.
    pub placement_latency: HistogramVec,
    /// Scheduling decisions per result (`placed`, `nofit`).
    pub decisions: IntCounterVec,
    /// Scheduling passes.
    pub scheduling_passes: IntCounterVec,
    /// Time one scheduling pass takes: decisions made and writes started (a wait for a free write slot counts).
    pub scheduling_pass_duration: prometheus::Histogram,
    /// Free GPUs per cluster and model, as the hub sees them (after reservations).
    pub free_gpus: GaugeVec,
    /// GPUs held per pool, namespace and quota group.
    pub quota_used: IntGaugeVec,
    /// Nominal quota per pool, namespace and group.
    pub quota_limit: IntGaugeVec,
    /// GPUs held beyond nominal quota (borrowed from the cohort) per pool, namespace and group.
    pub quota_borrowed: IntGaugeVec,
    /// GPU-hours used or committed in the current period, per pool, namespace and quota group
    /// with a period limit (ADR 0019).
    pub quota_period_gpu_hours: GaugeVec,
    /// Tokens settled or locked in the current period, per pool, namespace and quota group with a
    /// spend limit (ADR 0019).
    pub quota_period_spent: GaugeVec,
    /// GPU-hours allocated ÷ available over the last hour, per pool.
    pub pool_utilization: GaugeVec,
    /// Each namespace's dominant share of a fair-sharing pool (0 to 1, before weight).
    pub fair_share: GaugeVec,
    /// Price per GPU-hour (tokens) of the latest placement, per pool and GPU model: the last
    /// point of the clearing-price index (ADR 0024).
    pub clearing_price: GaugeVec,
    /// Attempts re-placed after their member was lost, per reason.
    pub failovers: IntCounterVec,
    /// Running attempts the hub stopped for a job of higher priority, per pool (ADR 0025).
    pub preemptions: IntCounterVec,
    /// Whether this replica holds the leader Lease (1) or not (0).
    pub leader: IntGauge,
    /// Hub writes refused because this replica may have lost the leader Lease, per target
    /// (`kube`, `chain`).
    pub hub_writes_refused: IntCounterVec,
    /// Settlement outcomes (`locked`, `settled`, `expired`, `error`).
    pub settlements: IntCounterVec,
    /// Challenge verdicts per pool and verdict (`Passed`, `Failed`), ADR 0027.
    pub challenges: IntCounterVec,
    /// Requests to the registration endpoint per route (`join`, `renew`, `pool`) and outcome
    /// (`Accepted` or the refusal's reason), ADR 0031.
    pub registration_requests: IntCounterVec,
    /// Slash state changes the hub made or saw, per pool and state (ADR 0023).
    pub slashes: IntCounterVec,
    /// Members per readiness (`ready`, `not_ready`).
    pub members: IntGaugeVec,
    /// Objects in the hub's caches, per kind.
    pub cached_objects: IntGaugeVec,
    /// Events not published, per reason (`queue_full`, `spam`).
    pub events_dropped: IntCounterVec,
    /// Agent: heartbeat Lease renewals that failed.
    pub agent_heartbeat_failures: IntCounter,
    /// Agent: this member's Placements per reported phase (`none` before the first report).
    pub agent_placements: IntGaugeVec,
    /// Agent: times the agent fenced itself off (lost the hub for longer than the fence timeout).
    pub agent_fenced: IntCounter,
    /// Agent: local Jobs deleted, per reason (`orphan`, `stale`, `fenced`).
    pub agent_jobs_deleted: IntCounterVec,
    /// Agent: the fence timeout in force (flag, or two thirds of the pool's heartbeat timeout).
    pub agent_fence_timeout: Gauge,
    /// Agent: renewals of the member's lease Job (ADR 0021).
    pub agent_lease_renewals: IntCounter,
    /// Agent: times the agent found the member's lease Job run out (every local Job it owned is
    /// deleted by the member's garbage collector).
    pub agent_lease_lapsed: IntCounter,
    /// The member's apiserver clock minus the agent's, in seconds.
    pub agent_clock_offset: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("gpufed_reconcile_total", "Reconciles per controller."),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "gpufed_reconcile_errors_total",
                "Failed reconciles per controller and error kind.",
            ),
            &["controller", "kind"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "gpufed_reconcile_duration_seconds",
                "Reconcile duration per controller.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let pending_jobs = IntGaugeVec::new(
            Opts::new(
                "gpufed_pending_jobs",
                "Jobs waiting for a cluster, per pool.",
            ),
            &["pool"],
        )?;
        let placement_latency = HistogramVec::new(
            HistogramOpts::new(
                "gpufed_placement_latency_seconds",
                "Seconds from a job entering the queue to the hub choosing its cluster.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["pool"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "gpufed_scheduling_decisions_total",
                "Scheduling decisions per result.",
            ),
            &["result"],
        )?;
        let scheduling_pass_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "gpufed_scheduling_pass_duration_seconds",
                "Time one scheduling pass takes: every pool decided, and its writes started (waiting for a free write slot counts).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(scheduling_pass_duration.clone()))?;
        let scheduling_passes = IntCounterVec::new(
            Opts::new(
                "gpufed_scheduling_passes_total",
                "Scheduling passes over the pending queue.",
            ),
            &["pool"],
        )?;
        let free_gpus = GaugeVec::new(
            Opts::new(
                "gpufed_cluster_free_gpus",
                "Free GPUs per member cluster and model, after in-flight reservations.",
            ),
            &["cluster", "model"],
        )?;
        let quota_labels = ["pool", "namespace", "group"];
        let quota_used = IntGaugeVec::new(
            Opts::new(
                "gpufed_quota_used_gpus",
                "GPUs held by placed or running jobs, per pool, namespace and quota group.",
            ),
            &quota_labels,
        )?;
        let quota_limit = IntGaugeVec::new(
            Opts::new(
                "gpufed_quota_limit_gpus",
                "Nominal quota in GPUs, per pool, namespace and quota group.",
            ),
            &quota_labels,
        )?;
        let quota_borrowed = IntGaugeVec::new(
            Opts::new(
                "gpufed_quota_borrowed_gpus",
                "GPUs held beyond nominal quota, borrowed from idle quota of the cohort.",
            ),
            &quota_labels,
        )?;
        let pool_utilization = GaugeVec::new(
            Opts::new(
                "gpufed_pool_utilization_ratio",
                "Pool GPU-hours allocated divided by GPU-hours available over the last hour (0 to 1).",
            ),
            &["pool"],
        )?;
        registry.register(Box::new(quota_used.clone()))?;
        registry.register(Box::new(quota_limit.clone()))?;
        registry.register(Box::new(quota_borrowed.clone()))?;
        let quota_period_gpu_hours = GaugeVec::new(
            Opts::new(
                "gpufed_quota_period_gpu_hours",
                "GPU-hours used or committed (placed and running attempts at their worst case) in the current period, per pool, namespace and quota group with a gpuHours or spend limit.",
            ),
            &quota_labels,
        )?;
        let quota_period_spent = GaugeVec::new(
            Opts::new(
                "gpufed_quota_period_spent_tokens",
                "Tokens settled or locked in the current period, per pool, namespace and quota group with a spend limit.",
            ),
            &quota_labels,
        )?;
        registry.register(Box::new(quota_period_gpu_hours.clone()))?;
        registry.register(Box::new(quota_period_spent.clone()))?;
        registry.register(Box::new(pool_utilization.clone()))?;
        let fair_share = GaugeVec::new(
            Opts::new(
                "gpufed_fair_share_dominant_ratio",
                "Dominant share of a namespace in a fair-sharing pool: the largest fraction it holds of any GPU model's capacity (0 to 1, before weight).",
            ),
            &["pool", "namespace"],
        )?;
        registry.register(Box::new(fair_share.clone()))?;
        let clearing_price = GaugeVec::new(
            Opts::new(
                "gpufed_clearing_price_per_gpu_hour",
                "Price per GPU-hour, in tokens, of the latest placement per pool and GPU model (the clearing-price index).",
            ),
            &["pool", "model"],
        )?;
        registry.register(Box::new(clearing_price.clone()))?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "gpufed_failovers_total",
                "Attempts lost with their member and re-placed.",
            ),
            &["reason"],
        )?;
        let preemptions = IntCounterVec::new(
            Opts::new(
                "gpufed_hub_preemptions_total",
                "Running attempts the hub asked their member to stop for a job of higher priority.",
            ),
            &["pool"],
        )?;
        registry.register(Box::new(preemptions.clone()))?;
        let leader = IntGauge::new(
            "gpufed_leader",
            "1 while this replica holds the leader Lease.",
        )?;
        let hub_writes_refused = IntCounterVec::new(
            Opts::new(
                "gpufed_hub_writes_refused_total",
                "Hub writes refused because this replica may have lost the leader Lease, per target.",
            ),
            &["target"],
        )?;
        let settlements = IntCounterVec::new(
            Opts::new("gpufed_settlements_total", "Escrow operations per outcome."),
            &["outcome"],
        )?;
        let members = IntGaugeVec::new(
            Opts::new("gpufed_members", "Member clusters per readiness."),
            &["state"],
        )?;
        let cached_objects = IntGaugeVec::new(
            Opts::new(
                "gpufed_hub_cached_objects",
                "Objects the hub holds in its caches, per kind (ComputeJobAtRest: the records of jobs at rest).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(cached_objects.clone()))?;
        let challenges = IntCounterVec::new(
            Opts::new(
                "gpufed_hub_challenges_total",
                "Challenge verdicts the hub reached, per pool and verdict.",
            ),
            &["pool", "verdict"],
        )?;
        registry.register(Box::new(challenges.clone()))?;
        let registration_requests = IntCounterVec::new(
            Opts::new(
                "gpufed_registration_requests_total",
                "Requests to the hub's registration endpoint (open joining), per route and outcome.",
            ),
            &["route", "outcome"],
        )?;
        registry.register(Box::new(registration_requests.clone()))?;
        let slashes = IntCounterVec::new(
            Opts::new(
                "gpufed_hub_slashes_total",
                "Automatic slashes of members on failed challenges, per pool and state reached.",
            ),
            &["pool", "state"],
        )?;
        registry.register(Box::new(slashes.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(pending_jobs.clone()))?;
        registry.register(Box::new(placement_latency.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(scheduling_passes.clone()))?;
        registry.register(Box::new(free_gpus.clone()))?;
        registry.register(Box::new(failovers.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(hub_writes_refused.clone()))?;
        // Both targets exist from the start, so a scrape tells "none refused" from "not exported".
        for target in ["kube", "chain"] {
            hub_writes_refused.with_label_values(&[target]);
        }
        registry.register(Box::new(settlements.clone()))?;
        registry.register(Box::new(members.clone()))?;
        let events_dropped = IntCounterVec::new(
            Opts::new(
                "gpufed_events_dropped_total",
                "Kubernetes Events not published: the queue was full, or the object had too many lately.",
            ),
            &["why"],
        )?;
        registry.register(Box::new(events_dropped.clone()))?;
        let agent_heartbeat_failures = IntCounter::new(
            "gpufed_agent_heartbeat_failures_total",
            "Heartbeat Lease renewals of the member agent that failed.",
        )?;
        let agent_placements = IntGaugeVec::new(
            Opts::new(
                "gpufed_agent_placements",
                "This member's Placements per reported phase.",
            ),
            &["phase"],
        )?;
        let agent_fenced = IntCounter::new(
            "gpufed_agent_fenced_total",
            "Times the agent lost the hub for longer than the fence timeout and stopped its Jobs.",
        )?;
        let agent_jobs_deleted = IntCounterVec::new(
            Opts::new(
                "gpufed_agent_jobs_deleted_total",
                "Local Jobs the agent deleted, per reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(agent_heartbeat_failures.clone()))?;
        registry.register(Box::new(agent_placements.clone()))?;
        registry.register(Box::new(agent_fenced.clone()))?;
        registry.register(Box::new(agent_jobs_deleted.clone()))?;
        let agent_fence_timeout = Gauge::new(
            "gpufed_agent_fence_timeout_seconds",
            "The agent's fence timeout: the flag, or two thirds of the pool's heartbeat timeout.",
        )?;
        registry.register(Box::new(agent_fence_timeout.clone()))?;
        let agent_lease_renewals = IntCounter::new(
            "gpufed_agent_member_lease_renewals_total",
            "Renewals of the member's lease Job, which owns every local gpufed Job.",
        )?;
        let agent_lease_lapsed = IntCounter::new(
            "gpufed_agent_member_lease_lapsed_total",
            "Times the member's lease Job was found run out: the member's control plane deleted every local Job it owned.",
        )?;
        registry.register(Box::new(agent_lease_renewals.clone()))?;
        registry.register(Box::new(agent_lease_lapsed.clone()))?;
        let agent_clock_offset = Gauge::new(
            "gpufed_agent_clock_offset_seconds",
            "The member's kube-apiserver clock minus the agent's host clock, last measured; the agent measures time on the apiserver's clock.",
        )?;
        registry.register(Box::new(agent_clock_offset.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            pending_jobs,
            placement_latency,
            decisions,
            scheduling_passes,
            scheduling_pass_duration,
            free_gpus,
            quota_used,
            quota_limit,
            quota_borrowed,
            quota_period_gpu_hours,
            quota_period_spent,
            pool_utilization,
            fair_share,
            clearing_price,
            failovers,
            preemptions,
            leader,
            hub_writes_refused,
            settlements,
            challenges,
            registration_requests,
            slashes,
            members,
            cached_objects,
            events_dropped,
            agent_heartbeat_failures,
            agent_placements,
            agent_fenced,
            agent_jobs_deleted,
            agent_fence_timeout,
            agent_lease_renewals,
            agent_lease_lapsed,
            agent_clock_offset,
        })
    }

    /// Records one reconcile of `controller` that took `took`.
    pub fn reconciled(&self, controller: &str, took: Duration) {
        self.reconciles.with_label_values(&[controller]).inc();
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    /// Records a failed reconcile.
    pub fn failed(&self, controller: &str, kind: &str) {
        self.reconcile_errors
            .with_label_values(&[controller, kind])
            .inc();
    }

    /// The registry, for extra collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = vec![];
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_gpufed_prefix_and_bounded_labels() {
        let m = Metrics::new().unwrap();
        m.reconciled("computejob", Duration::from_millis(3));
        m.failed("computejob", "kube");
        m.free_gpus.with_label_values(&["alpha", "H100"]).set(8.0);
        m.leader.set(1);
        let text = m.render();
        assert!(
            text.contains("gpufed_reconcile_total{controller=\"computejob\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "gpufed_reconcile_errors_total{controller=\"computejob\",kind=\"kube\"} 1"
            )
        );
        assert!(text.contains("gpufed_cluster_free_gpus{cluster=\"alpha\",model=\"H100\"} 8"));
        assert!(text.contains("gpufed_leader 1"));
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("gpufed_"), "{line}");
        }
    }
}
