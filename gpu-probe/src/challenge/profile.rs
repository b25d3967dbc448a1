//! Time bands: how long one product may take on each model, measured on real hardware.
//!
//! Only figures measured with the command named beside them belong here (docs/adr/0022-challenges.md).
//! CUDA models are added once measured on a real GPU with
//! `gpu-probe challenge --backend cuda --id profile --nonce <64 hex> --n <n>` (repeated, the
//! largest `ms` of 20 runs times the margin).

/// The bound of one model at one size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Normalised model (as `gpufed.io/gpu-model`), or `CPU` for the CPU backend.
    pub model: &'static str,
    /// Matrix size.
    pub n: usize,
    /// Most milliseconds one GPU may take for one product.
    pub max_ms: u64,
    /// How the figure was obtained.
    pub measured_with: &'static str,
}

/// Every profile committed.
pub const PROFILES: &[Profile] = &[Profile {
    model: "CPU",
    n: 256,
    max_ms: CPU_256_MAX_MS,
    measured_with: CPU_256_MEASURED_WITH,
}];

/// Ten runs on the development VM (2 shared vCPUs, AMD EPYC, debug build, other builds running)
/// took 143 to 303 ms; the bound is ten times the slowest, so the e2e tests' debug binaries pass
/// on a loaded machine. The CPU backend proves no hardware: this profile is for tests and the sim.
const CPU_256_MAX_MS: u64 = 3_000;
const CPU_256_MEASURED_WITH: &str = "for i in $(seq 10); do gpu-probe challenge --backend cpu \
    --id profile --nonce $(printf '00%.0s' $(seq 32)) --n 256 --stdout-only; done";

/// The profile of `model` at size `n`, if one was measured.
pub fn profile_for(model: &str, n: usize) -> Option<&'static Profile> {
    PROFILES
        .iter()
        .find(|p| p.model.eq_ignore_ascii_case(model) && p.n == n)
}
