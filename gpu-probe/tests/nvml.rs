//! The NVML backend against a real GPU, when this machine has one.
//!
//! Where libnvidia-ml cannot be loaded (CI, laptops) the test prints why it skips and passes; on a
//! GPU machine it checks real values and prints one line per GPU. Run it by hand with
//! `cargo test -p gpu-probe --test nvml -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gpu_probe::{GpuBackend, NvmlBackend, ProbeError, normalize_model};
use gpufed_crds::ProbeBackend;

/// NVML, or `None` (with a message) where it cannot load.
fn open() -> Option<NvmlBackend> {
    match NvmlBackend::open(None) {
        Ok(nvml) => Some(nvml),
        Err(e @ ProbeError::NvmlUnavailable { .. }) => {
            println!("skipping: libnvidia-ml.so not loadable: {}", e.chain());
            None
        }
        Err(e) => panic!("unexpected error opening NVML: {e}"),
    }
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[test]
fn nvml_reports_real_gpus_within_physical_bounds() {
    let Some(mut nvml) = open() else { return };
    assert_eq!(nvml.kind(), ProbeBackend::Nvml);
    let node = nvml.read_node().unwrap();
    let driver = node.driver_version.clone().unwrap_or_default();
    let cuda = node.cuda_version.clone().unwrap_or_default();
    println!(
        "NVML via {}: driver {driver}, CUDA {cuda}, {} GPU(s)",
        nvml.library(),
        node.gpus.len()
    );
    assert!(!driver.is_empty(), "driver version is empty");
    assert!(
        cuda.split('.').count() == 2 && cuda.split('.').all(|p| p.parse::<u32>().is_ok()),
        "CUDA version {cuda:?} is not major.minor"
    );
    assert!(!node.gpus.is_empty(), "NVML loaded but reports no GPU");
    for g in &node.gpus {
        let health = g.health();
        println!(
            "gpu {} {} {:?} -> {}: {}/{} MiB, {} %, {} °C (slowdown {:?}), {:.1}/{:.1} W, ECC {}/{} (supported: {}), MIG {}, {}",
            g.index,
            g.uuid,
            g.name,
            g.model,
            g.memory_used_mib,
            g.memory_total_mib,
            g.utilization_percent,
            g.temperature_celsius,
            g.slowdown_temperature_celsius,
            g.power_milliwatts as f64 / 1000.0,
            g.power_limit_milliwatts as f64 / 1000.0,
            g.ecc_corrected,
            g.ecc_uncorrected,
            g.ecc_supported,
            g.mig_enabled,
            health.reason().unwrap_or("healthy"),
        );
        assert_eq!(g.unresponsive, None, "GPU {} did not answer", g.index);
        assert!(g.uuid.starts_with("GPU-") && g.uuid.len() > 4, "{}", g.uuid);
        assert!(!g.name.is_empty());
        assert_eq!(g.model, normalize_model(&g.name));
        assert!(is_label_value(&g.model), "{}", g.model);
        assert!(g.model != "unknown", "{} normalised to unknown", g.name);
        assert!(g.memory_total_mib > 0);
        assert!(g.memory_used_mib <= g.memory_total_mib);
        assert!(g.utilization_percent <= 100);
        assert!(
            (1..=120).contains(&g.temperature_celsius),
            "{} °C",
            g.temperature_celsius
        );
        if g.power_limit_milliwatts > 0 {
            // Draw can exceed the limit briefly; 50 % over means a unit error.
            assert!(g.power_milliwatts <= g.power_limit_milliwatts * 3 / 2);
            assert!(
                g.power_limit_milliwatts <= 2_000_000,
                "{} mW",
                g.power_limit_milliwatts
            );
        }
    }
    let uuids: std::collections::BTreeSet<_> = node.gpus.iter().map(|g| &g.uuid).collect();
    assert_eq!(uuids.len(), node.gpus.len(), "UUIDs are not unique");
}

#[test]
fn a_missing_nvml_library_is_reported_with_the_library_and_the_fix() {
    let err = NvmlBackend::open(Some(std::path::Path::new("/nonexistent/libnvidia-ml.so.1")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/libnvidia-ml.so.1"), "{err}");
    assert!(err.contains("NVIDIA driver"), "{err}");
    assert!(err.contains("--backend sim"), "{err}");
}
