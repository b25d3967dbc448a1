//! Running a challenge on this machine's devices (the binary's side; measures time).

use std::time::{Duration, Instant};

use super::{Answer, Challenge, GpuAnswer, cpu_digests};

/// How a test member misbehaves (hidden flags of `gpu-probe challenge`, for the e2e tests of
/// dishonest members; an honest member never sets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Answer digests of a product from another seed.
    pub wrong: bool,
    /// Sleep this long inside each GPU's timed section.
    pub delay: Duration,
}

/// Runs `challenge` on `devices` CPU "devices" (`CPU-0`, `CPU-1`, …), one after another.
pub fn run_cpu(challenge: &Challenge, devices: usize, misbehave: Misbehaviour) -> Answer {
    run_cpu_as(challenge, &device_names(devices, None), misbehave)
}

/// The names the CPU backend answers for `devices` devices: the GPU UUIDs in `visible` (the
/// container's `NVIDIA_VISIBLE_DEVICES`, which the NVIDIA device plugin sets to the UUIDs of the
/// GPUs it allocated) in its order, `CPU-<i>` for each device it does not name. `all`, `none`,
/// `void` and indices name nothing. So on a member whose device plugin hands the pod its GPUs, the
/// CPU backend answers for the GPUs the pod was given, as the CUDA backend would (ADR 0027: the hub
/// checks the UUIDs against the member's `GpuNode` status).
pub fn device_names(devices: usize, visible: Option<&str>) -> Vec<String> {
    let given: Vec<&str> = visible
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| u.starts_with("GPU-") || u.starts_with("MIG-"))
        .collect();
    (0..devices)
        .map(|i| {
            given
                .get(i)
                .map_or_else(|| format!("CPU-{i}"), |u| (*u).to_string())
        })
        .collect()
}

/// Runs `challenge` on one CPU "device" per name in `uuids`, one after another, answering for each
/// under its name.
pub fn run_cpu_as(challenge: &Challenge, uuids: &[String], misbehave: Misbehaviour) -> Answer {
    let gpus = uuids
        .iter()
        .map(|uuid| {
            let uuid = uuid.as_str();
            let start = Instant::now();
            let digests = if misbehave.wrong {
                let other = Challenge {
                    id: format!("{}-not", challenge.id),
                    ..challenge.clone()
                };
                cpu_digests(&other, uuid)
            } else {
                cpu_digests(challenge, uuid)
            };
            if !misbehave.delay.is_zero() {
                std::thread::sleep(misbehave.delay);
            }
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            GpuAnswer::new(uuid, ms, &digests)
        })
        .collect();
    Answer::new(challenge, gpus)
}
