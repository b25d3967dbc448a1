//! The simulator backend: plausible, deterministic GPU figures for nodes that have no GPU (kwok).
//!
//! Every figure is a pure function of `(seed, node name, GPU index, time)`, so a restarted probe,
//! a second replica and a test all see the same numbers for the same moment, and different nodes
//! differ. Time is wall-clock seconds since the Unix epoch in the running probe.
//!
//! How figures evolve (per GPU):
//! * utilisation = node baseline + per-GPU offset + a slow sine (period 5–30 min) + smooth noise,
//!   clamped to 0–100 %;
//! * memory used follows utilisation (1 % of memory when idle, up to ~95 % at full load);
//! * power = idle + utilisation × (limit − idle), with ±2 % noise, never above the limit;
//! * temperature = ambient (26–34 °C) + k × power, k chosen so full load reaches the profile's
//!   full-load temperature, which stays below the slowdown threshold;
//! * a faulty GPU (picked by `--sim-fail-rate` or the node annotation
//!   [`ANNOTATION_UNHEALTHY_GPUS`]) reports uncorrected ECC errors and so is unhealthy.

pub mod profiles;

use std::collections::BTreeSet;
use std::f64::consts::TAU;
use std::time::{SystemTime, UNIX_EPOCH};

use gpufed_crds::ProbeBackend;

pub use profiles::{PROFILES, SimProfile, profile, profile_names};

use crate::backend::GpuBackend;
use crate::error::ProbeError;
use crate::reading::GpuReading;

/// Node label naming the sim profile of a fake node, e.g. `H100-SXM-80GB`.
pub const LABEL_SIM_PROFILE: &str = "gpufed.io/sim-profile";
/// Node annotation listing GPU indices to report faulty (`"0,3"`), or `"all"`. Read every tick, so
/// annotating a node makes its GPUs fail on the next tick and removing it heals them.
pub const ANNOTATION_UNHEALTHY_GPUS: &str = "gpufed.io/sim-unhealthy-gpus";
/// Node annotation with a utilisation in percent (`"0"` to `"100"`) that every simulated GPU of
/// the node reports instead of its drawn curve, e.g. `"0"` for GPUs that sit idle. Read every
/// tick; removing it brings the curve back. Other values are ignored.
pub const ANNOTATION_UTILIZATION: &str = "gpufed.io/sim-utilization";
/// Driver version the simulator reports.
pub const SIM_DRIVER_VERSION: &str = "550.90.07";
/// CUDA driver version the simulator reports.
pub const SIM_CUDA_VERSION: &str = "12.4";

/// splitmix64's finaliser: a fast, well-mixed, platform-independent 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one node: a stable hash of the global seed and the node name (FNV-1a, then mixed).
pub fn node_seed(seed: u64, node_name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h ^ mix(seed))
}

/// A uniform number in `[0, 1)` from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth noise in `[-1, 1]`: random values at multiples of `step` seconds, interpolated with a
/// smoothstep, so it changes gradually and is a pure function of `t`.
fn value_noise(key: u64, t: f64, step: f64) -> f64 {
    let x = t / step;
    let i = x.floor();
    let frac = x - i;
    let at = |k: f64| unit(mix(key ^ (k as i64 as u64))) * 2.0 - 1.0;
    let s = frac * frac * (3.0 - 2.0 * frac);
    at(i) * (1.0 - s) + at(i + 1.0) * s
}

/// Salts that keep the noise streams of one GPU independent.
const SALT_UTIL_FAST: u64 = 0x11;
const SALT_UTIL_SLOW: u64 = 0x12;
const SALT_MEMORY: u64 = 0x13;
const SALT_POWER: u64 = 0x14;
const SALT_FAULT: u64 = 0x15;

/// One simulated GPU: its fixed character (drawn once from the seed) and [`SimGpu::reading_at`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimGpu {
    profile: &'static SimProfile,
    index: u32,
    key: u64,
    uuid: String,
    /// Mean utilisation, 0–1.
    baseline: f64,
    /// Amplitude of the slow sine, 0–1.
    amplitude: f64,
    period_s: f64,
    phase: f64,
    ambient_celsius: f64,
    /// Drawn faulty by the fail rate.
    drawn_faulty: bool,
    /// Made faulty by the node annotation.
    forced_faulty: bool,
    /// Utilisation set by the node annotation, 0–1.
    forced_utilization: Option<f64>,
}

impl SimGpu {
    /// GPU `index` of a node whose seed is `node_seed` (see [`node_seed`]); faulty when a draw
    /// from the seed falls under `fail_rate` (0–1).
    pub fn new(profile: &'static SimProfile, node_seed: u64, index: u32, fail_rate: f64) -> Self {
        let key = mix(node_seed ^ mix(u64::from(index) + 1));
        let node_baseline = 0.15 + 0.6 * unit(mix(node_seed ^ 0xba5e));
        let offset = (unit(mix(key ^ 1)) - 0.5) * 0.16;
        let (a, b) = (mix(key ^ 2), mix(key ^ 3));
        let uuid = format!(
            "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        SimGpu {
            profile,
            index,
            key,
            uuid,
            baseline: (node_baseline + offset).clamp(0.05, 0.9),
            amplitude: 0.08 + 0.17 * unit(mix(key ^ 4)),
            period_s: 300.0 + 1500.0 * unit(mix(key ^ 5)),
            phase: TAU * unit(mix(key ^ 6)),
            ambient_celsius: 26.0 + 8.0 * unit(mix(key ^ 7)),
            drawn_faulty: unit(mix(key ^ SALT_FAULT)) < fail_rate,
            forced_faulty: false,
            forced_utilization: None,
        }
    }

    /// The GPU's UUID (stable for a seed, node and index).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Whether this GPU reports ECC errors.
    pub fn is_faulty(&self) -> bool {
        self.drawn_faulty || self.forced_faulty
    }

    /// Utilisation at `t` seconds, 0–1.
    fn utilization_at(&self, t: f64) -> f64 {
        if let Some(u) = self.forced_utilization {
            return u;
        }
        let wave = self.amplitude * (TAU * t / self.period_s + self.phase).sin();
        let slow = 0.10 * value_noise(self.key ^ SALT_UTIL_SLOW, t, 45.0);
        let fast = 0.05 * value_noise(self.key ^ SALT_UTIL_FAST, t, 7.0);
        (self.baseline + wave + slow + fast).clamp(0.0, 1.0)
    }

    /// The GPU's figures at `t` seconds (any origin; the probe uses the Unix epoch). Pure: the same
    /// GPU and `t` always give the same reading.
    pub fn reading_at(&self, t: f64) -> GpuReading {
        let p = self.profile;
        let util = self.utilization_at(t);
        let utilization_percent = (util * 100.0).round() as u32;

        let memory_frac =
            0.01 + 0.88 * util.powf(0.8) + 0.03 * value_noise(self.key ^ SALT_MEMORY, t, 60.0);
        let memory_used_mib = (p.memory_mib as f64 * memory_frac.clamp(0.005, 0.97)).round() as u64;

        let idle = f64::from(p.idle_power_watts);
        let limit = f64::from(p.power_limit_watts);
        let noise = 0.02 * limit * value_noise(self.key ^ SALT_POWER, t, 3.0);
        let power_watts = (idle + util * (limit - idle) + noise).clamp(idle * 0.9, limit);

        let k = (f64::from(p.full_load_celsius) - 30.0) / limit;
        let temperature_celsius = (self.ambient_celsius + k * power_watts).round() as u32;

        let (ecc_corrected, ecc_uncorrected) = if self.is_faulty() {
            (4 + self.key % 20, 1 + self.key % 3)
        } else {
            (0, 0)
        };
        GpuReading {
            index: self.index,
            uuid: self.uuid.clone(),
            name: p.product_name.to_string(),
            model: p.model.to_string(),
            memory_total_mib: p.memory_mib,
            memory_used_mib,
            utilization_percent,
            temperature_celsius,
            slowdown_temperature_celsius: Some(p.slowdown_celsius),
            power_milliwatts: (power_watts * 1000.0).round() as u64,
            power_limit_milliwatts: u64::from(p.power_limit_watts) * 1000,
            ecc_corrected,
            ecc_uncorrected,
            ecc_supported: true,
            mig_enabled: false,
            unresponsive: None,
        }
    }
}

/// Which GPUs the node annotation marks faulty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ForcedFaults {
    /// None (no annotation).
    #[default]
    None,
    /// These indices.
    Some(BTreeSet<u32>),
    /// Every GPU.
    All,
}

impl ForcedFaults {
    /// Parse the annotation value: `all`, or comma-separated GPU indices (others are ignored and
    /// returned as the second element so the caller can warn).
    pub fn parse(value: &str) -> (Self, Vec<String>) {
        if value.trim().eq_ignore_ascii_case("all") {
            return (ForcedFaults::All, Vec::new());
        }
        let mut set = BTreeSet::new();
        let mut bad = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(i) => {
                    set.insert(i);
                }
                Err(_) => bad.push(part.to_string()),
            }
        }
        let faults = if set.is_empty() {
            ForcedFaults::None
        } else {
            ForcedFaults::Some(set)
        };
        (faults, bad)
    }

    fn contains(&self, index: u32) -> bool {
        match self {
            ForcedFaults::None => false,
            ForcedFaults::Some(set) => set.contains(&index),
            ForcedFaults::All => true,
        }
    }
}

/// The simulated GPUs of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct SimBackend {
    profile: &'static SimProfile,
    gpus: Vec<SimGpu>,
}

impl SimBackend {
    /// `gpu_count` GPUs of `profile` on node `node_name`, seeded by `hash(seed, node_name)`.
    pub fn new(
        profile: &'static SimProfile,
        gpu_count: u32,
        seed: u64,
        node_name: &str,
        fail_rate: f64,
    ) -> Self {
        let node = node_seed(seed, node_name);
        SimBackend {
            profile,
            gpus: (0..gpu_count)
                .map(|i| SimGpu::new(profile, node, i, fail_rate))
                .collect(),
        }
    }

    /// The profile simulated.
    pub fn profile(&self) -> &'static SimProfile {
        self.profile
    }

    /// Number of GPUs.
    pub fn gpu_count(&self) -> u32 {
        self.gpus.len() as u32
    }

    /// Apply the node annotation's faults (replacing earlier ones).
    pub fn set_forced_faults(&mut self, faults: &ForcedFaults) {
        for gpu in &mut self.gpus {
            gpu.forced_faulty = faults.contains(gpu.index);
        }
    }

    /// Apply the node annotation's utilisation in percent (replacing an earlier one; `None`: the
    /// drawn curve).
    pub fn set_forced_utilization(&mut self, percent: Option<u32>) {
        for gpu in &mut self.gpus {
            gpu.forced_utilization = percent.map(|p| f64::from(p.min(100)) / 100.0);
        }
    }

    /// Every GPU's reading at `t` seconds.
    pub fn read_at(&self, t: f64) -> Vec<GpuReading> {
        self.gpus.iter().map(|g| g.reading_at(t)).collect()
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl GpuBackend for SimBackend {
    fn kind(&self) -> ProbeBackend {
        ProbeBackend::Sim
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, ProbeError> {
        Ok(self.read_at(now_seconds()))
    }

    fn driver_version(&self) -> Option<String> {
        Some(SIM_DRIVER_VERSION.to_string())
    }

    fn cuda_version(&self) -> Option<String> {
        Some(SIM_CUDA_VERSION.to_string())
    }
}

#[cfg(test)]
mod tests;
