//! The NVML backend: real figures from libnvidia-ml through `nvml-wrapper`.
//!
//! `nvml-wrapper` opens the library with `dlopen` when [`NvmlBackend::open`] is called, so nothing
//! here links against the driver. A call that a GPU does not support (`NotSupported`, e.g. ECC
//! counters on a GeForce card, utilisation under MIG) counts as 0 and is logged once per GPU; any
//! other per-GPU failure marks that GPU unresponsive (and so unhealthy) without failing the node.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;

use gpufed_crds::ProbeBackend;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml, cuda_driver_version_major, cuda_driver_version_minor};
use tracing::{info, warn};

use super::GpuBackend;
use crate::error::ProbeError;
use crate::reading::GpuReading;

/// The soname the NVIDIA driver (and its container toolkit) installs.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";
/// The development symlink, tried when the soname is missing.
const NVML_LIBRARY_FALLBACK: &str = "libnvidia-ml.so";

const MIB: u64 = 1024 * 1024;

/// Reads the GPUs of this machine through NVML.
pub struct NvmlBackend {
    nvml: Nvml,
    library: String,
    /// GPUs (by index) already logged as lacking some counter, so the log says it once.
    unsupported_logged: HashSet<(u32, &'static str)>,
}

impl std::fmt::Debug for NvmlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlBackend")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl NvmlBackend {
    /// Load and initialise NVML: `library` when given, else `libnvidia-ml.so.1` and then
    /// `libnvidia-ml.so`. Fails with [`ProbeError::NvmlUnavailable`], whose message names the
    /// library and the fix, where there is no NVIDIA driver.
    pub fn open(library: Option<&Path>) -> Result<Self, ProbeError> {
        let candidates: Vec<&OsStr> = match library {
            Some(path) => vec![path.as_os_str()],
            None => vec![OsStr::new(NVML_LIBRARY), OsStr::new(NVML_LIBRARY_FALLBACK)],
        };
        let mut first_error = None;
        for candidate in &candidates {
            match Nvml::builder().lib_path(candidate).init() {
                Ok(nvml) => {
                    let library = candidate.to_string_lossy().into_owned();
                    info!(%library, "NVML initialised");
                    return Ok(NvmlBackend {
                        nvml,
                        library,
                        unsupported_logged: HashSet::new(),
                    });
                }
                // The first candidate's error is the telling one (the soname, or the given path).
                Err(source) => {
                    first_error.get_or_insert(source);
                }
            }
        }
        let library = candidates
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ");
        match first_error {
            Some(source) => Err(ProbeError::NvmlUnavailable { library, source }),
            None => Err(ProbeError::Config("no NVML library to try".into())),
        }
    }

    /// The library that was loaded.
    pub fn library(&self) -> &str {
        &self.library
    }
}

/// `Ok(None)` for NotSupported (logged once per GPU and counter), the value otherwise.
fn supported<T>(
    logged: &mut HashSet<(u32, &'static str)>,
    index: u32,
    what: &'static str,
    result: Result<T, NvmlError>,
) -> Result<Option<T>, NvmlError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(NvmlError::NotSupported) => {
            if logged.insert((index, what)) {
                info!(
                    gpu = index,
                    counter = what,
                    "not supported by this GPU; reported as 0"
                );
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Every figure of one GPU; any error other than NotSupported is returned (the GPU is then
/// reported unresponsive).
fn read_device_with(
    logged: &mut HashSet<(u32, &'static str)>,
    index: u32,
    device: &Device<'_>,
) -> Result<GpuReading, NvmlError> {
    let name = device.name()?;
    let uuid = device.uuid()?;
    let memory = device.memory_info()?;
    let utilization = supported(logged, index, "utilization", device.utilization_rates())?;
    let temperature = supported(
        logged,
        index,
        "temperature",
        device.temperature(TemperatureSensor::Gpu),
    )?;
    let slowdown = supported(
        logged,
        index,
        "slowdown temperature",
        device.temperature_threshold(TemperatureThreshold::Slowdown),
    )?;
    let power = supported(logged, index, "power usage", device.power_usage())?;
    let limit = supported(logged, index, "power limit", device.enforced_power_limit())?;
    let corrected = supported(
        logged,
        index,
        "ECC counters",
        device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
    )?;
    let uncorrected = supported(
        logged,
        index,
        "ECC counters",
        device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
    )?;
    let mig = supported(logged, index, "MIG mode", device.mig_mode())?;
    Ok(GpuReading {
        index,
        uuid,
        model: crate::normalize_model(&name),
        name,
        memory_total_mib: memory.total / MIB,
        memory_used_mib: memory.used / MIB,
        utilization_percent: utilization.map_or(0, |u| u.gpu.min(100)),
        temperature_celsius: temperature.unwrap_or(0),
        slowdown_temperature_celsius: slowdown.filter(|t| *t > 0),
        power_milliwatts: u64::from(power.unwrap_or(0)),
        power_limit_milliwatts: u64::from(limit.unwrap_or(0)),
        ecc_supported: corrected.is_some() && uncorrected.is_some(),
        ecc_corrected: corrected.unwrap_or(0),
        ecc_uncorrected: uncorrected.unwrap_or(0),
        // NVML_DEVICE_MIG_ENABLE is 1.
        mig_enabled: mig.is_some_and(|m| m.current == 1),
        unresponsive: None,
    })
}

fn unresponsive(index: u32, name: String, error: &NvmlError) -> GpuReading {
    warn!(gpu = index, %error, "GPU did not answer NVML; reporting it unhealthy");
    GpuReading::unresponsive(index, name, error.to_string())
}

impl GpuBackend for NvmlBackend {
    fn kind(&self) -> ProbeBackend {
        ProbeBackend::Nvml
    }

    fn read(&mut self) -> Result<Vec<GpuReading>, ProbeError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|source| ProbeError::Nvml {
                call: "nvmlDeviceGetCount",
                source,
            })?;
        let mut readings = Vec::with_capacity(count as usize);
        for index in 0..count {
            let reading = match self.nvml.device_by_index(index) {
                Ok(device) => {
                    let name = device.name().unwrap_or_default();
                    let result = read_device_with(&mut self.unsupported_logged, index, &device);
                    result.unwrap_or_else(|e| unresponsive(index, name, &e))
                }
                Err(e) => unresponsive(index, String::new(), &e),
            };
            readings.push(reading);
        }
        Ok(readings)
    }

    fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    fn cuda_version(&self) -> Option<String> {
        self.nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                cuda_driver_version_major(v),
                cuda_driver_version_minor(v)
            )
        })
    }
}
