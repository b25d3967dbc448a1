//! Prometheus metrics of the probe, named like NVIDIA's DCGM exporter where the meaning is the
//! same, so existing dashboards and alerts work on gpufed members unchanged.
//!
//! Per-GPU gauges carry DCGM's labels (`gpu`, `UUID`, `device`, `modelName`, `Hostname`); a GPU or
//! node that disappears has its series removed, so a scrape never shows stale GPUs. The probe's own
//! counters have the `gpufed_probe_` prefix and bounded labels.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::error::ProbeError;
use crate::reading::NodeReading;

/// Labels of every per-GPU series, in DCGM exporter's spelling.
pub const GPU_LABELS: [&str; 5] = ["gpu", "UUID", "device", "modelName", "Hostname"];

type LabelSet = [String; 5];

/// The probe's metrics, in a registry of their own (several probes can run in one process).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    util: GaugeVec,
    fb_used: GaugeVec,
    fb_free: GaugeVec,
    fb_total: GaugeVec,
    temp: GaugeVec,
    power: GaugeVec,
    power_limit: GaugeVec,
    ecc_sbe: GaugeVec,
    ecc_dbe: GaugeVec,
    healthy: GaugeVec,
    reads: IntCounterVec,
    writes: IntCounterVec,
    errors: IntCounterVec,
    nodes: IntGauge,
    /// Label sets currently exported, per node.
    series: Mutex<BTreeMap<String, BTreeSet<LabelSet>>>,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<GaugeVec, ProbeError> {
    let g = GaugeVec::new(Opts::new(name, help), &GPU_LABELS).map_err(ProbeError::Prometheus)?;
    registry
        .register(Box::new(g.clone()))
        .map_err(ProbeError::Prometheus)?;
    Ok(g)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> Result<IntCounterVec, ProbeError> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).map_err(ProbeError::Prometheus)?;
    registry
        .register(Box::new(c.clone()))
        .map_err(ProbeError::Prometheus)?;
    Ok(c)
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, ProbeError> {
        let r = Registry::new();
        let nodes = IntGauge::new("gpufed_probe_nodes", "Nodes this probe serves.")
            .map_err(ProbeError::Prometheus)?;
        r.register(Box::new(nodes.clone()))
            .map_err(ProbeError::Prometheus)?;
        Ok(Metrics {
            util: gauge(&r, "DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).")?,
            fb_used: gauge(
                &r,
                "DCGM_FI_DEV_FB_USED",
                "Framebuffer memory used (in MiB).",
            )?,
            fb_free: gauge(
                &r,
                "DCGM_FI_DEV_FB_FREE",
                "Framebuffer memory free (in MiB).",
            )?,
            fb_total: gauge(
                &r,
                "DCGM_FI_DEV_FB_TOTAL",
                "Framebuffer memory total (in MiB).",
            )?,
            temp: gauge(&r, "DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).")?,
            power: gauge(&r, "DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")?,
            power_limit: gauge(
                &r,
                "DCGM_FI_DEV_POWER_MGMT_LIMIT",
                "Power management limit (in W).",
            )?,
            ecc_sbe: gauge(
                &r,
                "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
                "Total number of single-bit volatile ECC errors.",
            )?,
            ecc_dbe: gauge(
                &r,
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
                "Total number of double-bit volatile ECC errors.",
            )?,
            healthy: gauge(
                &r,
                "gpufed_probe_gpu_healthy",
                "1 if the GPU passes gpu-probe's health rules, else 0.",
            )?,
            reads: counter(
                &r,
                "gpufed_probe_reads_total",
                "GPU reads of a node, by result (ok, error).",
                "result",
            )?,
            writes: counter(
                &r,
                "gpufed_probe_writes_total",
                "GpuNode writes of a node, by result (ok, error).",
                "result",
            )?,
            errors: counter(
                &r,
                "gpufed_probe_errors_total",
                "Errors by kind (kube, timeout, nvml, node, ...).",
                "kind",
            )?,
            nodes,
            registry: r,
            series: Mutex::new(BTreeMap::new()),
        })
    }

    /// Export a node's reading; series of GPUs no longer on the node are removed.
    pub fn observe_node(&self, node: &str, reading: &NodeReading) {
        let mut now = BTreeSet::new();
        for g in &reading.gpus {
            let labels: LabelSet = [
                g.index.to_string(),
                g.uuid.clone(),
                format!("nvidia{}", g.index),
                g.name.clone(),
                node.to_string(),
            ];
            let l: [&str; 5] = [&labels[0], &labels[1], &labels[2], &labels[3], &labels[4]];
            self.util
                .with_label_values(&l)
                .set(f64::from(g.utilization_percent));
            self.fb_used
                .with_label_values(&l)
                .set(g.memory_used_mib as f64);
            self.fb_free
                .with_label_values(&l)
                .set(g.memory_free_mib() as f64);
            self.fb_total
                .with_label_values(&l)
                .set(g.memory_total_mib as f64);
            self.temp
                .with_label_values(&l)
                .set(f64::from(g.temperature_celsius));
            self.power
                .with_label_values(&l)
                .set(g.power_milliwatts as f64 / 1000.0);
            self.power_limit
                .with_label_values(&l)
                .set(g.power_limit_milliwatts as f64 / 1000.0);
            self.ecc_sbe
                .with_label_values(&l)
                .set(g.ecc_corrected as f64);
            self.ecc_dbe
                .with_label_values(&l)
                .set(g.ecc_uncorrected as f64);
            self.healthy
                .with_label_values(&l)
                .set(if g.health().is_healthy() { 1.0 } else { 0.0 });
            now.insert(labels);
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let before = series.insert(node.to_string(), now.clone());
        for gone in before.unwrap_or_default().difference(&now) {
            self.remove(gone);
        }
        self.nodes.set(series.len() as i64);
    }

    /// Remove every series of a node the probe no longer serves.
    pub fn forget_node(&self, node: &str) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for gone in series.remove(node).unwrap_or_default() {
            self.remove(&gone);
        }
        self.nodes.set(series.len() as i64);
    }

    fn remove(&self, labels: &LabelSet) {
        let l: [&str; 5] = [&labels[0], &labels[1], &labels[2], &labels[3], &labels[4]];
        for g in [
            &self.util,
            &self.fb_used,
            &self.fb_free,
            &self.fb_total,
            &self.temp,
            &self.power,
            &self.power_limit,
            &self.ecc_sbe,
            &self.ecc_dbe,
            &self.healthy,
        ] {
            // Absent only if never set; nothing to remove then.
            let _ = g.remove_label_values(&l);
        }
    }

    /// Count one read of a node.
    pub fn count_read(&self, ok: bool) {
        self.reads.with_label_values(&[result(ok)]).inc();
    }

    /// Count one write of a node.
    pub fn count_write(&self, ok: bool) {
        self.writes.with_label_values(&[result(ok)]).inc();
    }

    /// Count an error by its kind.
    pub fn count_error(&self, error: &ProbeError) {
        self.errors.with_label_values(&[error.kind()]).inc();
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, ProbeError> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(ProbeError::Prometheus)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

#[cfg(test)]
mod tests;
