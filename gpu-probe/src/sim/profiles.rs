//! The GPU models the simulator can pretend to be, with figures taken from the vendors' data
//! sheets and what `nvidia-smi` reports on real machines (memory in MiB as NVML counts it, board
//! power limits at their defaults). The H100's slowdown threshold (89 °C) and idle draw (~70 W)
//! are what NVML reported on a real H100 SXM; the other idle powers, slowdown and full-load
//! temperatures are typical values, close enough for scheduling and dashboards, not for thermal
//! studies.

use crate::error::ProbeError;

/// One simulated GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimProfile {
    /// Profile name, the value of the Node label `gpufed.io/sim-profile`, e.g. `H100-SXM-80GB`.
    pub name: &'static str,
    /// Product name as NVML would report it.
    pub product_name: &'static str,
    /// Normalised model, e.g. `H100`.
    pub model: &'static str,
    /// Framebuffer memory, MiB.
    pub memory_mib: u64,
    /// Default power limit, watts.
    pub power_limit_watts: u32,
    /// Power draw when idle, watts.
    pub idle_power_watts: u32,
    /// Temperature at which the GPU starts hardware slowdown, °C.
    pub slowdown_celsius: u32,
    /// Typical core temperature at full load in a 30 °C inlet, °C.
    pub full_load_celsius: u32,
    /// GPUs per node when neither the Node's capacity nor a flag says how many.
    pub default_gpus: u32,
}

/// Every profile the simulator knows.
pub const PROFILES: &[SimProfile] = &[
    SimProfile {
        name: "H100-SXM-80GB",
        product_name: "NVIDIA H100 80GB HBM3",
        model: "H100",
        memory_mib: 81559,
        power_limit_watts: 700,
        idle_power_watts: 70,
        slowdown_celsius: 89,
        full_load_celsius: 78,
        default_gpus: 8,
    },
    SimProfile {
        name: "H200-SXM-141GB",
        product_name: "NVIDIA H200",
        model: "H200",
        memory_mib: 143771,
        power_limit_watts: 700,
        // Idle draw and slowdown threshold as NVML read them on a real H200 (docs/gpu-probe.md).
        idle_power_watts: 80,
        slowdown_celsius: 89,
        full_load_celsius: 78,
        default_gpus: 8,
    },
    SimProfile {
        name: "A100-SXM-80GB",
        product_name: "NVIDIA A100-SXM4-80GB",
        model: "A100",
        memory_mib: 81920,
        power_limit_watts: 400,
        idle_power_watts: 60,
        slowdown_celsius: 89,
        full_load_celsius: 72,
        default_gpus: 8,
    },
    SimProfile {
        name: "A100-SXM-40GB",
        product_name: "NVIDIA A100-SXM4-40GB",
        model: "A100",
        memory_mib: 40960,
        power_limit_watts: 400,
        idle_power_watts: 55,
        slowdown_celsius: 89,
        full_load_celsius: 72,
        default_gpus: 8,
    },
    SimProfile {
        name: "L40S-48GB",
        product_name: "NVIDIA L40S",
        model: "L40S",
        memory_mib: 46068,
        power_limit_watts: 350,
        idle_power_watts: 35,
        slowdown_celsius: 90,
        full_load_celsius: 80,
        default_gpus: 4,
    },
    SimProfile {
        name: "L4-24GB",
        product_name: "NVIDIA L4",
        model: "L4",
        memory_mib: 23034,
        power_limit_watts: 72,
        idle_power_watts: 16,
        slowdown_celsius: 92,
        full_load_celsius: 75,
        default_gpus: 4,
    },
    SimProfile {
        name: "RTX4090-24GB",
        product_name: "NVIDIA GeForce RTX 4090",
        model: "RTX4090",
        memory_mib: 24564,
        power_limit_watts: 450,
        idle_power_watts: 25,
        slowdown_celsius: 90,
        full_load_celsius: 80,
        default_gpus: 4,
    },
    SimProfile {
        name: "T4-16GB",
        product_name: "Tesla T4",
        model: "T4",
        memory_mib: 15360,
        power_limit_watts: 70,
        idle_power_watts: 10,
        slowdown_celsius: 93,
        full_load_celsius: 80,
        default_gpus: 4,
    },
];

/// The profile called `name` (case-insensitive), or else the first profile of the normalised model
/// `name` (so `H100` means `H100-SXM-80GB`).
pub fn profile(name: &str) -> Result<&'static SimProfile, ProbeError> {
    PROFILES
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .or_else(|| PROFILES.iter().find(|p| p.model.eq_ignore_ascii_case(name)))
        .ok_or_else(|| ProbeError::UnknownProfile(name.to_string(), profile_names()))
}

/// The profile names, comma-separated (for error messages and `--help`).
pub fn profile_names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize_model;

    #[test]
    fn every_profile_name_normalises_to_its_model() {
        for p in PROFILES {
            assert_eq!(normalize_model(p.product_name), p.model, "{}", p.name);
        }
    }

    #[test]
    fn required_profiles_carry_their_data_sheet_figures() {
        let table = [
            ("H100-SXM-80GB", 81559, 700),
            ("A100-SXM-80GB", 81920, 400),
            ("A100-SXM-40GB", 40960, 400),
            ("L40S-48GB", 46068, 350),
            ("L4-24GB", 23034, 72),
            ("RTX4090-24GB", 24564, 450),
            ("T4-16GB", 15360, 70),
        ];
        for (name, mib, watts) in table {
            let p = profile(name).unwrap();
            assert_eq!((p.memory_mib, p.power_limit_watts), (mib, watts), "{name}");
        }
    }

    #[test]
    fn profiles_are_found_by_name_in_any_case_or_by_model() {
        assert_eq!(profile("h100-sxm-80gb").unwrap().name, "H100-SXM-80GB");
        assert_eq!(profile("A100").unwrap().name, "A100-SXM-80GB");
        let err = profile("Z9000").unwrap_err().to_string();
        assert!(err.contains("Z9000") && err.contains("T4-16GB"), "{err}");
    }

    #[test]
    fn profile_names_are_label_values_and_physics_is_consistent() {
        for p in PROFILES {
            assert!(
                p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            );
            assert!(p.idle_power_watts < p.power_limit_watts, "{}", p.name);
            // Hottest ambient (34 °C) at full power must stay below slowdown, or a healthy
            // simulated GPU could flap to unhealthy.
            assert!(p.full_load_celsius + 4 < p.slowdown_celsius, "{}", p.name);
        }
    }
}
