//! Where readings come from: one trait, two backends.
//!
//! [`nvml::NvmlBackend`] reads real GPUs through libnvidia-ml (loaded at run time, so this crate
//! builds and its tests run on machines without a GPU); [`crate::sim::SimBackend`] makes up
//! plausible, deterministic figures for fake (kwok) nodes. The rest of the probe sees only
//! [`GpuBackend`].

pub mod nvml;

use gpufed_crds::ProbeBackend;

use crate::error::ProbeError;
use crate::reading::{GpuReading, NodeReading};

/// A source of GPU readings for one node.
pub trait GpuBackend: Send {
    /// Which kind of backend this is (goes into `GpuNode.spec.backend`).
    fn kind(&self) -> ProbeBackend;

    /// Read every GPU of the node now. A GPU that does not answer yields a reading marked
    /// unresponsive rather than an error; an error means the node as a whole could not be read.
    fn read(&mut self) -> Result<Vec<GpuReading>, ProbeError>;

    /// The driver version, if known.
    fn driver_version(&self) -> Option<String>;

    /// The CUDA driver API version (`major.minor`), if known.
    fn cuda_version(&self) -> Option<String>;

    /// [`GpuBackend::read`] together with the versions.
    fn read_node(&mut self) -> Result<NodeReading, ProbeError> {
        let gpus = self.read()?;
        Ok(NodeReading {
            driver_version: self.driver_version(),
            cuda_version: self.cuda_version(),
            gpus,
        })
    }
}
