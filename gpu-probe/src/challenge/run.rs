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
    let gpus = (0..devices)
        .map(|i| {
            let uuid = format!("CPU-{i}");
            let start = Instant::now();
            let digests = if misbehave.wrong {
                let other = Challenge {
                    id: format!("{}-not", challenge.id),
                    ..challenge.clone()
                };
                cpu_digests(&other, &uuid)
            } else {
                cpu_digests(challenge, &uuid)
            };
            if !misbehave.delay.is_zero() {
                std::thread::sleep(misbehave.delay);
            }
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            GpuAnswer::new(&uuid, ms, &digests)
        })
        .collect();
    Answer::new(challenge, gpus)
}
