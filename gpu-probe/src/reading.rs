//! What a backend reads from one node's GPUs, and the health rules applied to it.
//!
//! Backends fill [`GpuReading`]s; everything downstream (GpuNode status, Node labels, metrics) is
//! built from them by pure functions, so the same code path serves NVML and the simulator.

use serde::Serialize;

/// One GPU's figures at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuReading {
    /// Index on the node, as `nvidia-smi` numbers them.
    pub index: u32,
    /// GPU UUID (`GPU-…`); `unresponsive-<index>` when the GPU did not answer.
    pub uuid: String,
    /// Product name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Normalised model, e.g. `H100` (see [`crate::normalize_model`]).
    pub model: String,
    /// Total framebuffer memory, MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: u64,
    /// Used framebuffer memory, MiB.
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: u64,
    /// Compute utilisation over the driver's last sample period, percent (0–100).
    pub utilization_percent: u32,
    /// Core temperature, °C.
    pub temperature_celsius: u32,
    /// Temperature at which the GPU starts hardware slowdown, °C, when the driver reports one.
    pub slowdown_temperature_celsius: Option<u32>,
    /// Power draw, milliwatts.
    pub power_milliwatts: u64,
    /// Enforced power limit, milliwatts.
    pub power_limit_milliwatts: u64,
    /// Corrected (single-bit) ECC errors since the driver loaded.
    pub ecc_corrected: u64,
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    pub ecc_uncorrected: u64,
    /// Whether the GPU reports ECC counters at all; when it does not, both counts are 0.
    pub ecc_supported: bool,
    /// Whether MIG mode is currently enabled.
    pub mig_enabled: bool,
    /// Why the GPU did not answer the driver, if it did not (the GPU is then unhealthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresponsive: Option<String>,
}

impl GpuReading {
    /// Free framebuffer memory, MiB.
    pub fn memory_free_mib(&self) -> u64 {
        self.memory_total_mib.saturating_sub(self.memory_used_mib)
    }

    /// A reading for a GPU that did not answer: figures zero, health false.
    pub fn unresponsive(index: u32, name: String, why: String) -> Self {
        GpuReading {
            index,
            uuid: format!("unresponsive-{index}"),
            model: crate::normalize_model(&name),
            name,
            memory_total_mib: 0,
            memory_used_mib: 0,
            utilization_percent: 0,
            temperature_celsius: 0,
            slowdown_temperature_celsius: None,
            power_milliwatts: 0,
            power_limit_milliwatts: 0,
            ecc_corrected: 0,
            ecc_uncorrected: 0,
            ecc_supported: false,
            mig_enabled: false,
            unresponsive: Some(why),
        }
    }

    /// Health by the probe's rules: the GPU answers the driver, has no uncorrected ECC errors, and
    /// runs below its slowdown temperature (when the driver reports that threshold).
    pub fn health(&self) -> Health {
        let mut reasons = Vec::new();
        if let Some(why) = &self.unresponsive {
            reasons.push(format!("not answering NVML: {why}"));
        }
        if self.ecc_uncorrected > 0 {
            reasons.push(format!(
                "{} uncorrected ECC error{} since driver load",
                self.ecc_uncorrected,
                if self.ecc_uncorrected == 1 { "" } else { "s" }
            ));
        }
        if let Some(slowdown) = self.slowdown_temperature_celsius
            && self.unresponsive.is_none()
            && self.temperature_celsius >= slowdown
        {
            reasons.push(format!(
                "temperature {} °C at or above slowdown threshold {} °C",
                self.temperature_celsius, slowdown
            ));
        }
        if reasons.is_empty() {
            Health::Healthy
        } else {
            Health::Unhealthy(reasons.join("; "))
        }
    }
}

/// The verdict of [`GpuReading::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Fit for work.
    Healthy,
    /// Not fit for work, with the reasons.
    Unhealthy(String),
}

impl Health {
    /// Whether the GPU is fit for work.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    /// The reasons, when unhealthy.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Healthy => None,
            Health::Unhealthy(r) => Some(r),
        }
    }
}

/// Everything read from one node in one pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReading {
    /// Driver version, e.g. `550.90.07`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA driver API version, e.g. `12.4`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// The GPUs, in index order.
    pub gpus: Vec<GpuReading>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A healthy H100 reading for tests; change fields with struct update syntax.
    pub(crate) fn h100(index: u32) -> GpuReading {
        GpuReading {
            index,
            uuid: format!("GPU-00000000-0000-0000-0000-00000000000{index}"),
            name: "NVIDIA H100 80GB HBM3".into(),
            model: "H100".into(),
            memory_total_mib: 81559,
            memory_used_mib: 40000,
            utilization_percent: 50,
            temperature_celsius: 55,
            slowdown_temperature_celsius: Some(87),
            power_milliwatts: 385_000,
            power_limit_milliwatts: 700_000,
            ecc_corrected: 0,
            ecc_uncorrected: 0,
            ecc_supported: true,
            mig_enabled: false,
            unresponsive: None,
        }
    }

    #[test]
    fn a_cool_gpu_without_ecc_errors_is_healthy() {
        let h = h100(0).health();
        assert!(h.is_healthy());
        assert_eq!(h.reason(), None);
    }

    #[test]
    fn corrected_ecc_errors_alone_do_not_make_a_gpu_unhealthy() {
        let r = GpuReading {
            ecc_corrected: 12,
            ..h100(0)
        };
        assert!(r.health().is_healthy());
    }

    #[test]
    fn one_uncorrected_ecc_error_makes_a_gpu_unhealthy() {
        let r = GpuReading {
            ecc_uncorrected: 1,
            ..h100(0)
        };
        assert_eq!(
            r.health(),
            Health::Unhealthy("1 uncorrected ECC error since driver load".into())
        );
    }

    #[test]
    fn reaching_the_slowdown_temperature_makes_a_gpu_unhealthy() {
        let at = GpuReading {
            temperature_celsius: 87,
            ..h100(0)
        };
        let below = GpuReading {
            temperature_celsius: 86,
            ..h100(0)
        };
        assert!(!at.health().is_healthy());
        assert!(at.health().reason().is_some_and(|r| r.contains("87 °C")));
        assert!(below.health().is_healthy());
    }

    #[test]
    fn without_a_slowdown_threshold_temperature_is_not_judged() {
        let r = GpuReading {
            temperature_celsius: 120,
            slowdown_temperature_celsius: None,
            ..h100(0)
        };
        assert!(r.health().is_healthy());
    }

    #[test]
    fn a_gpu_that_does_not_answer_is_unhealthy_with_every_reason_listed() {
        let r = GpuReading {
            ecc_uncorrected: 3,
            ..GpuReading::unresponsive(2, "NVIDIA H100 80GB HBM3".into(), "GPU is lost".into())
        };
        let reason = r.health().reason().map(str::to_string).unwrap_or_default();
        assert_eq!(
            reason,
            "not answering NVML: GPU is lost; 3 uncorrected ECC errors since driver load"
        );
        assert_eq!(r.uuid, "unresponsive-2");
        assert_eq!(r.model, "H100");
    }

    #[test]
    fn free_memory_never_goes_negative() {
        let r = GpuReading {
            memory_used_mib: 90000,
            ..h100(0)
        };
        assert_eq!(r.memory_free_mib(), 0);
        assert_eq!(h100(0).memory_free_mib(), 41559);
    }
}
