//! The answer of `gpu-probe challenge`: one JSON line, small enough for a termination message.

use serde::{Deserialize, Serialize};

use super::{Challenge, DIGEST_BYTES, GROUPS, VERSION};

/// Kubernetes keeps at most this many bytes of a container's termination message.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// What a member answers to a challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Protocol version ([`VERSION`]).
    pub v: u32,
    /// The challenge answered.
    pub id: String,
    /// One entry per GPU the container saw.
    pub gpus: Vec<GpuAnswer>,
}

/// The work of one GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuAnswer {
    /// The GPU's UUID as CUDA/NVML reports it (`GPU-…`); the CPU backend uses `CPU-<index>`.
    pub uuid: String,
    /// Milliseconds the GPU took for its product, as the member measured them.
    pub ms: u64,
    /// The [`GROUPS`] row-group digests, [`DIGEST_BYTES`] bytes each, concatenated, in hex.
    pub d: String,
}

impl GpuAnswer {
    /// The entry of one GPU from its digests.
    pub fn new(uuid: &str, ms: u64, digests: &[[u8; DIGEST_BYTES]]) -> Self {
        Self {
            uuid: uuid.to_string(),
            ms,
            d: hex::encode(digests.concat()),
        }
    }

    /// The digests, or why they cannot be read.
    pub fn digests(&self) -> Result<Vec<[u8; DIGEST_BYTES]>, String> {
        let bytes = hex::decode(&self.d)
            .map_err(|e| format!("digests of {} are not hex: {e}", self.uuid))?;
        if bytes.len() != GROUPS * DIGEST_BYTES {
            return Err(format!(
                "GPU {} has {} digest bytes, expected {}",
                self.uuid,
                bytes.len(),
                GROUPS * DIGEST_BYTES
            ));
        }
        Ok(bytes
            .chunks(DIGEST_BYTES)
            .map(|c| {
                let mut d = [0u8; DIGEST_BYTES];
                d.copy_from_slice(c);
                d
            })
            .collect())
    }
}

impl Answer {
    /// An answer to `challenge` from the GPUs' entries.
    pub fn new(challenge: &Challenge, gpus: Vec<GpuAnswer>) -> Self {
        Self {
            v: VERSION,
            id: challenge.id.clone(),
            gpus,
        }
    }

    /// The one-line JSON form written to the termination message.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}
