//! The probe loop: every tick, find the nodes to serve, read their GPUs, export metrics, and write
//! GpuNode status and Node labels, each node on its own backoff.
//!
//! The loop never ends on an apiserver error: a failed call is logged, counted
//! (`gpufed_probe_writes_total{result="error"}`, `gpufed_probe_errors_total{kind}`) and retried on
//! a later tick. Only start-up problems (NVML missing, a bad configuration, a busy metrics port)
//! end [`run`] with an error.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use gpufed_crds::{GpuNodeStatus, ProbeBackend};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::backend::GpuBackend;
use crate::backend::nvml::NvmlBackend;
use crate::backoff::Backoff;
use crate::config::{ProbeConfig, Target};
use crate::error::ProbeError;
use crate::nodes::{SimTarget, sim_target};
use crate::server::{ProbeState, serve};
use crate::sim::SimBackend;
use crate::status::{NodeOwner, build_status, node_labels};
use crate::writer::Writer;

/// Every this many successful writes, spec and labels are applied again even if unchanged, which
/// repairs edits made by someone else (a deleted label, a GpuNode recreated by hand).
const RESYNC_TICKS: u32 = 30;
/// Nodes written at the same time.
const WRITE_CONCURRENCY: usize = 8;

/// Run the probe until `shutdown` completes: serve metrics (if `config.metrics_addr` is set) and
/// write every `config.interval`. With `config.once`, do one pass and return its first error.
pub async fn run(
    client: Client,
    config: ProbeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProbeError> {
    run_with_state(client, config, Arc::new(ProbeState::new()?), shutdown).await
}

/// [`run`] with metrics and readiness that the caller holds too (an in-process harness reads
/// `state.metrics.render()` and `state.is_ready()` without HTTP).
pub async fn run_with_state(
    client: Client,
    config: ProbeConfig,
    state: Arc<ProbeState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProbeError> {
    config.validate()?;
    let mut probe = Probe::new(
        Writer::new(client, config.api_timeout),
        config,
        state.clone(),
    )?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = match probe.config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProbeError::Metrics {
                    addr: addr.to_string(),
                    source,
                })?;
            let stopped = async move {
                // An Err means the sender is gone, which also means stop.
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            Some(tokio::spawn(serve(listener, state, stopped)))
        }
        None => None,
    };
    let result = probe.run_until(shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e.chain(), "metrics server ended with an error"),
            Err(e) => warn!(error = %e, "metrics server task failed"),
        }
    }
    result
}

/// The source of one served node's figures.
enum Source {
    /// Boxed: NVML's function table is large, and there is at most one per probe.
    Nvml(Box<NvmlBackend>),
    Sim(SimBackend),
}

impl Source {
    fn backend(&mut self) -> &mut dyn GpuBackend {
        match self {
            Source::Nvml(b) => b.as_mut(),
            Source::Sim(b) => b,
        }
    }
}

/// One node the probe serves, with what it last wrote.
struct Served {
    source: Source,
    owner: Option<NodeOwner>,
    backoff: Backoff,
    /// The owner the spec was last applied with; `None` until the spec is applied.
    spec_applied_with: Option<Option<NodeOwner>>,
    labels_applied: Option<BTreeMap<String, String>>,
    writes_since_resync: u32,
}

impl Served {
    fn new(source: Source, owner: Option<NodeOwner>) -> Self {
        Served {
            source,
            owner,
            backoff: Backoff::default(),
            spec_applied_with: None,
            labels_applied: None,
            writes_since_resync: 0,
        }
    }
}

/// What to write for one node this tick.
struct WriteJob {
    node: String,
    backend: ProbeBackend,
    owner: Option<NodeOwner>,
    status: GpuNodeStatus,
    labels: BTreeMap<String, String>,
    apply_spec: bool,
    apply_labels: bool,
}

struct Probe {
    writer: Writer,
    config: ProbeConfig,
    state: Arc<ProbeState>,
    served: BTreeMap<String, Served>,
    /// Nodes already warned about (so a bad node is logged once, not every tick).
    warned: BTreeSet<String>,
}

impl Probe {
    fn new(
        writer: Writer,
        config: ProbeConfig,
        state: Arc<ProbeState>,
    ) -> Result<Self, ProbeError> {
        let mut served = BTreeMap::new();
        if let (ProbeBackend::Nvml, Target::Node(name)) = (config.backend, &config.target) {
            let nvml = NvmlBackend::open(config.nvml_library.as_deref())?;
            served.insert(
                name.clone(),
                Served::new(Source::Nvml(Box::new(nvml)), None),
            );
        }
        Ok(Probe {
            writer,
            config,
            state,
            served,
            warned: BTreeSet::new(),
        })
    }

    async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), ProbeError> {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        info!(backend = ?self.config.backend, target = ?self.config.target, interval = ?self.config.interval, "probe started");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            let pass = tokio::select! {
                () = &mut shutdown => break,
                pass = self.tick() => pass,
            };
            if self.config.once {
                return pass;
            }
        }
        info!("probe stopped");
        Ok(())
    }

    /// One pass; returns the first error of the pass (all errors are logged and counted).
    async fn tick(&mut self) -> Result<(), ProbeError> {
        let mut first_error = None;
        if let Err(e) = self.refresh().await {
            self.note_error(&e);
            first_error.get_or_insert(e);
        }
        let jobs = self.read_all(&mut first_error);
        let writer = &self.writer;
        let outcomes: Vec<(WriteJob, Result<(), ProbeError>)> = futures::stream::iter(jobs)
            .map(|job| async move {
                let result = write_node(writer, &job).await;
                (job, result)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (job, result) in outcomes {
            let ok = result.is_ok();
            self.state.metrics.count_write(ok);
            let Some(served) = self.served.get_mut(&job.node) else {
                continue;
            };
            match result {
                Ok(()) => {
                    served.backoff.succeeded();
                    served.spec_applied_with = Some(job.owner);
                    served.labels_applied = Some(job.labels);
                    served.writes_since_resync = if job.apply_spec && job.apply_labels {
                        0
                    } else {
                        served.writes_since_resync + 1
                    };
                    self.state.set_ready();
                    debug!(node = %job.node, "wrote GpuNode status");
                }
                Err(e) => {
                    let skip = served.backoff.failed();
                    warn!(node = %job.node, error = %e.chain(), failures = served.backoff.failures(), retry_after_ticks = skip, "write failed");
                    self.state.metrics.count_error(&e);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                // Covers a sim probe with no matching nodes: its lists succeed, so it is ready.
                self.state.set_ready();
                Ok(())
            }
        }
    }

    fn note_error(&self, e: &ProbeError) {
        warn!(error = %e.chain(), "refreshing the nodes to serve failed; keeping the previous set");
        self.state.metrics.count_error(e);
    }

    /// Bring `served` up to date with the cluster.
    async fn refresh(&mut self) -> Result<(), ProbeError> {
        match (self.config.backend, self.config.target.clone()) {
            (ProbeBackend::Nvml, Target::Node(name)) => {
                let needs_owner = self.served.get(&name).is_some_and(|s| s.owner.is_none());
                if needs_owner {
                    let node = self.writer.get_node(&name).await?;
                    let owner = node.metadata.uid.map(|uid| NodeOwner {
                        name: name.clone(),
                        uid,
                    });
                    if let Some(s) = self.served.get_mut(&name) {
                        s.owner = owner;
                    }
                }
                Ok(())
            }
            (ProbeBackend::Sim, Target::Node(name)) => {
                let node = self.writer.get_node(&name).await?;
                match sim_target(&node, &self.config.sim.overrides) {
                    Ok(Some(target)) => self.upsert_sim(target),
                    Ok(None) => self.warn_once(
                        &name,
                        "the node has no GPUs (profile none or 0 nvidia.com/gpu)",
                    ),
                    Err(reason) => self.warn_once(&name, &reason),
                }
                Ok(())
            }
            (ProbeBackend::Sim, Target::AllNodes { selector }) => {
                let nodes = self.writer.list_nodes(&selector).await?;
                let mut wanted = BTreeSet::new();
                for node in &nodes {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    match sim_target(node, &self.config.sim.overrides) {
                        Ok(Some(target)) => {
                            wanted.insert(target.owner.name.clone());
                            self.upsert_sim(target);
                        }
                        // A CPU node of the kwok cluster: nothing to serve, nothing to say.
                        Ok(None) => debug!(node = %name, "node has no GPUs"),
                        Err(reason) => self.warn_once(&name, &reason),
                    }
                }
                let gone: Vec<String> = self
                    .served
                    .keys()
                    .filter(|n| !wanted.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    self.stop_serving(&name).await;
                }
                self.delete_orphans().await
            }
            (ProbeBackend::Nvml, Target::AllNodes { .. }) => {
                Err(ProbeError::Config("--all-nodes needs --backend sim".into()))
            }
        }
    }

    fn warn_once(&mut self, node: &str, reason: &str) {
        if self.warned.insert(format!("{node}\n{reason}")) {
            warn!(node, reason, "not serving node");
        }
    }

    /// Start serving a sim node, or update one already served.
    fn upsert_sim(&mut self, target: SimTarget) {
        let name = target.owner.name.clone();
        self.warned.retain(|w| !w.starts_with(&format!("{name}\n")));
        if let Some(served) = self.served.get_mut(&name)
            && let Source::Sim(sim) = &mut served.source
            && sim.profile().name == target.profile.name
            && sim.gpu_count() == target.gpus
        {
            sim.set_forced_faults(&target.faults);
            sim.set_forced_utilization(target.utilization);
            served.owner = Some(target.owner);
            return;
        }
        let mut sim = SimBackend::new(
            target.profile,
            target.gpus,
            self.config.sim.seed,
            &name,
            self.config.sim.fail_rate,
        );
        sim.set_forced_faults(&target.faults);
        sim.set_forced_utilization(target.utilization);
        info!(node = %name, profile = target.profile.name, gpus = target.gpus, "serving simulated node");
        self.served
            .insert(name, Served::new(Source::Sim(sim), Some(target.owner)));
    }

    /// Stop serving a node: drop its metrics and remove the labels the probe set (best effort;
    /// the node is usually gone). Its GpuNode is deleted by [`Probe::delete_orphans`].
    async fn stop_serving(&mut self, name: &str) {
        info!(node = name, "node no longer served");
        self.served.remove(name);
        self.state.metrics.forget_node(name);
        match self.writer.apply_node_labels(name, &BTreeMap::new()).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                debug!(node = name, error = %e.chain(), "could not remove labels of a node no longer served");
            }
        }
    }

    /// Delete sim GpuNodes whose node is not served (removed while the probe was down, too).
    async fn delete_orphans(&mut self) -> Result<(), ProbeError> {
        let existing = self.writer.list_gpu_nodes(ProbeBackend::Sim).await?;
        let mut first_error = None;
        for name in existing
            .into_iter()
            .filter(|n| !self.served.contains_key(n))
        {
            match self.writer.delete_gpu_node(&name).await {
                Ok(()) => info!(node = %name, "deleted GpuNode of a node no longer served"),
                Err(e) => {
                    self.state.metrics.count_error(&e);
                    warn!(node = %name, error = %e.chain(), "deleting GpuNode failed; retrying next tick");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Read every served node, export metrics, and build the writes due this tick.
    fn read_all(&mut self, first_error: &mut Option<ProbeError>) -> Vec<WriteJob> {
        let now = Timestamp::now();
        let mut jobs = Vec::new();
        for (name, served) in &mut self.served {
            let backend = served.source.backend();
            let kind = backend.kind();
            let reading = match backend.read_node() {
                Ok(r) => r,
                Err(e) => {
                    self.state.metrics.count_read(false);
                    self.state.metrics.count_error(&e);
                    warn!(node = %name, error = %e.chain(), "reading GPUs failed");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            self.state.metrics.count_read(true);
            self.state.metrics.observe_node(name, &reading);
            if !served.backoff.tick() {
                continue;
            }
            let labels = node_labels(&reading);
            let resync = served.writes_since_resync >= RESYNC_TICKS;
            jobs.push(WriteJob {
                node: name.clone(),
                backend: kind,
                apply_spec: resync || served.spec_applied_with.as_ref() != Some(&served.owner),
                apply_labels: resync || served.labels_applied.as_ref() != Some(&labels),
                owner: served.owner.clone(),
                status: build_status(&reading, now),
                labels,
            });
        }
        jobs
    }
}

/// Write one node: spec when due, status always (re-creating the GpuNode if it was deleted), labels
/// when changed.
async fn write_node(writer: &Writer, job: &WriteJob) -> Result<(), ProbeError> {
    let owner = job.owner.as_ref();
    if job.apply_spec {
        writer.apply_gpu_node(&job.node, job.backend, owner).await?;
    }
    match writer.apply_status(&job.node, &job.status).await {
        Err(e) if e.is_not_found() && !job.apply_spec => {
            info!(node = %job.node, "GpuNode was deleted; creating it again");
            writer.apply_gpu_node(&job.node, job.backend, owner).await?;
            writer.apply_status(&job.node, &job.status).await?;
        }
        other => other?,
    }
    if job.apply_labels {
        writer.apply_node_labels(&job.node, &job.labels).await?;
    }
    Ok(())
}
