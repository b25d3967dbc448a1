//! The CUDA backend of `gpu-probe challenge` (docs/adr/0022-challenges.md): the challenge product
//! on every GPU the container sees, through the CUDA driver API loaded at run time (`cudarc`), so
//! the binary builds and runs without a GPU and fails with a clear error where there is none.
//!
//! Per GPU, in the order CUDA enumerates them: its UUID as NVML writes it (`GPU-…`, the name the
//! hub checks against the member's `GpuNode`), the seeded inputs generated on the host
//! ([`Challenge::matrices`], untimed), `C = A·B mod 2³²` by the hand-written PTX kernel
//! [`KERNEL_PTX`] (timed: launch to completion, inputs already on the GPU), and the row-group
//! digests of `C` computed on the host ([`Challenge::digests`]). The arithmetic is the CPU
//! backend's bit for bit, so the hub checks a CUDA answer with the same
//! [`expected_group`](Challenge::expected_group).

// Two calls have no safe form: probing for libcuda and launching the kernel (the driver cannot
// check a kernel's parameters). Each block says why it is sound.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::run::Misbehaviour;
use super::{Answer, Challenge, GpuAnswer, MAX_N};

/// The kernel: one thread per entry of `C`, 16×16 blocks.
pub const KERNEL_PTX: &str = include_str!("matmul_u32.ptx");
/// The kernel's entry point.
pub const KERNEL: &str = "matmul_u32";
/// Threads per block side.
pub const BLOCK: u32 = 16;

/// Why the CUDA backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No `libcuda` to load.
    #[error(
        "the CUDA driver library (libcuda.so.1) is not loadable: the CUDA backend needs the NVIDIA \
         driver in the container (the NVIDIA container toolkit mounts it where the device plugin \
         gives the pod GPUs); use --backend cpu where there is no GPU"
    )]
    NoDriver,
    /// The driver sees no GPU.
    #[error(
        "the CUDA driver sees no GPU: the container was given none (check the pod's \
         nvidia.com/gpu request and NVIDIA_VISIBLE_DEVICES)"
    )]
    NoDevices,
    /// A driver call failed.
    #[error("CUDA: {what}: {source}")]
    Driver {
        /// What was being done.
        what: String,
        /// The driver's error.
        source: DriverError,
    },
    /// The binding library gave up (a symbol missing from an old driver, say).
    #[error("CUDA: {0}")]
    Panicked(String),
    /// The challenge cannot be run here.
    #[error("matrix size {0} is beyond what the CUDA backend computes ({MAX_N})")]
    TooLarge(usize),
}

fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> CudaError {
    let what = what.into();
    move |source| CudaError::Driver { what, source }
}

/// The UUID string NVML gives the GPU whose 16 UUID bytes are `bytes`:
/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lowercase hex).
pub fn nvml_uuid(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The launch shape for an `n×n` product: 16×16 blocks covering it.
pub fn launch_config(n: usize) -> LaunchConfig {
    let side = u32::try_from(n.div_ceil(BLOCK as usize)).unwrap_or(u32::MAX);
    LaunchConfig {
        grid_dim: (side, side, 1),
        block_dim: (BLOCK, BLOCK, 1),
        shared_mem_bytes: 0,
    }
}

/// Runs `challenge` on every GPU the CUDA driver sees, one after another; `misbehave` as the CPU
/// backend's test flags (a wrong product, a delay in the timed section).
pub fn run_cuda(challenge: &Challenge, misbehave: Misbehaviour) -> Result<Answer, CudaError> {
    if challenge.n > MAX_N {
        return Err(CudaError::TooLarge(challenge.n));
    }
    // SAFETY: only tries to open the library (no symbol is called).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    // The bindings panic on a symbol an old driver lacks: that is an error here, not a crash.
    std::panic::catch_unwind(|| run_devices(challenge, misbehave)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "the CUDA bindings panicked".to_string());
        Err(CudaError::Panicked(msg))
    })
}

fn run_devices(challenge: &Challenge, misbehave: Misbehaviour) -> Result<Answer, CudaError> {
    let count = CudaContext::device_count().map_err(driver("counting GPUs"))?;
    if count <= 0 {
        return Err(CudaError::NoDevices);
    }
    let mut gpus = vec![];
    for ordinal in 0..usize::try_from(count).unwrap_or(0) {
        gpus.push(run_device(challenge, ordinal, misbehave)?);
    }
    Ok(Answer::new(challenge, gpus))
}

fn run_device(
    challenge: &Challenge,
    ordinal: usize,
    misbehave: Misbehaviour,
) -> Result<GpuAnswer, CudaError> {
    let ctx = CudaContext::new(ordinal).map_err(driver(format!("opening GPU {ordinal}")))?;
    let raw = ctx
        .uuid()
        .map_err(driver(format!("reading the UUID of GPU {ordinal}")))?;
    let bytes: [u8; 16] = raw.bytes.map(|b| b as u8);
    let uuid = nvml_uuid(&bytes);
    // A dishonest member (tests): the product of another challenge's inputs.
    let seeded = if misbehave.wrong {
        Challenge {
            id: format!("{}-not", challenge.id),
            ..challenge.clone()
        }
    } else {
        challenge.clone()
    };
    let (a, b) = seeded.matrices(&uuid);
    let n = challenge.n;
    let stream = ctx.default_stream();
    let module = ctx
        .load_module(Ptx::from_src(KERNEL_PTX))
        .map_err(driver(format!("loading the kernel on {uuid}")))?;
    let kernel = module
        .load_function(KERNEL)
        .map_err(driver(format!("finding the kernel on {uuid}")))?;
    let a_dev = stream
        .clone_htod(&a)
        .map_err(driver(format!("copying A to {uuid}")))?;
    let b_dev = stream
        .clone_htod(&b)
        .map_err(driver(format!("copying B to {uuid}")))?;
    let mut c_dev = stream
        .alloc_zeros::<u32>(n * n)
        .map_err(driver(format!("allocating C on {uuid}")))?;
    stream
        .synchronize()
        .map_err(driver(format!("waiting for the copies to {uuid}")))?;
    let n_arg = u32::try_from(n).map_err(|_| CudaError::TooLarge(n))?;
    let start = Instant::now();
    let mut launch = stream.launch_builder(&kernel);
    launch.arg(&a_dev).arg(&b_dev).arg(&mut c_dev).arg(&n_arg);
    // SAFETY: the kernel's parameters are (const u32* a, const u32* b, u32* c, u32 n) and each
    // buffer holds n×n u32; threads outside the matrix return before touching memory.
    unsafe { launch.launch(launch_config(n)) }
        .map_err(driver(format!("launching the product on {uuid}")))?;
    stream
        .synchronize()
        .map_err(driver(format!("computing the product on {uuid}")))?;
    if !misbehave.delay.is_zero() {
        std::thread::sleep(misbehave.delay);
    }
    let elapsed: Duration = start.elapsed();
    let c = stream
        .clone_dtoh(&c_dev)
        .map_err(driver(format!("copying C from {uuid}")))?;
    let digests = challenge.digests(&uuid, &c);
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    Ok(GpuAnswer::new(&uuid, ms, &digests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_written_as_nvml_writes_them() {
        let bytes: [u8; 16] = [
            0x7f, 0x3e, 0x9a, 0x21, 0x0b, 0x4c, 0x11, 0xee, 0x8a, 0x10, 0x02, 0x42, 0xac, 0x12,
            0x00, 0x02,
        ];
        assert_eq!(
            nvml_uuid(&bytes),
            "GPU-7f3e9a21-0b4c-11ee-8a10-0242ac120002"
        );
    }

    #[test]
    fn the_grid_covers_every_entry_of_c() {
        for n in [8, 16, 24, 256, 4096, 16_376] {
            let cfg = launch_config(n);
            assert!(cfg.grid_dim.0 as usize * BLOCK as usize >= n, "{n}");
            assert!(
                (cfg.grid_dim.0 as usize - 1) * (BLOCK as usize) < n,
                "{n}: no idle block"
            );
            assert_eq!(cfg.grid_dim.0, cfg.grid_dim.1);
        }
    }

    #[test]
    fn the_kernel_is_plain_ascii_ptx_with_its_entry_point() {
        // The driver's PTX parser refuses anything else.
        assert!(KERNEL_PTX.is_ascii());
        assert!(KERNEL_PTX.contains(&format!(".visible .entry {KERNEL}(")));
        assert!(KERNEL_PTX.contains(".target sm_70"));
    }

    /// The GPU test (run where a GPU is lent: `cargo test -p gpu-probe cuda`): every GPU's
    /// answer is the CPU reference's for its UUID, and the hub's check accepts it.
    #[test]
    fn on_a_gpu_the_answers_are_the_cpu_references_bit_for_bit() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return; // no driver here: the test above covers this machine
        }
        let c = Challenge::new("gpu-test", &"5a".repeat(32), 72).unwrap();
        let answer = run_cuda(&c, Misbehaviour::default()).unwrap();
        assert!(!answer.gpus.is_empty());
        for gpu in &answer.gpus {
            assert!(gpu.uuid.starts_with("GPU-"), "{}", gpu.uuid);
            let want = super::super::cpu_digests(&c, &gpu.uuid);
            assert_eq!(gpu.digests().unwrap(), want, "{}", gpu.uuid);
        }
    }

    #[test]
    fn without_a_driver_the_error_says_what_is_missing_and_what_to_use() {
        // SAFETY: only tries to open the library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return; // a machine with a GPU: covered by the device run (docs/gpu-probe.md)
        }
        let c = Challenge::new("t", &"00".repeat(32), 8).unwrap();
        let err = run_cuda(&c, Misbehaviour::default()).unwrap_err();
        assert!(matches!(err, CudaError::NoDriver), "{err}");
        assert!(err.to_string().contains("--backend cpu"), "{err}");
    }
}
