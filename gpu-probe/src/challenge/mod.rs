//! Challenges: the seeded work that proves a member's GPUs (docs/adr/0022-challenges.md).
//!
//! The hub names a challenge `(id, nonce, n)`. For every GPU it was given, `gpu-probe challenge`
//! computes `C = A·B` for `n×n` matrices of `u32` seeded by the challenge and the GPU's UUID
//! (wrapping arithmetic, so CPU and GPU agree bit for bit), cuts `C` into [`GROUPS`] row groups
//! and answers one 64-bit digest per group. The hub then recomputes a few groups it picks *after*
//! the answer arrived ([`verify`]), so a member that skipped work cannot know which rows to do.
//!
//! This module is pure (no I/O, no clock): the binary and the hub both call it.

mod answer;
pub mod cuda;
pub mod profile;
pub mod run;
mod verify;

#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

pub use answer::{Answer, GpuAnswer, MAX_ANSWER_BYTES};
pub use profile::{Profile, profile_for};
pub use verify::{CheckedGroup, Evidence, Refusal, Verdict, Verified, verify};

/// Version of the protocol an answer speaks; a change of arithmetic, groups or digests is a new one.
pub const VERSION: u32 = 1;
/// Row groups of `C`, one digest each.
pub const GROUPS: usize = 8;
/// Bytes kept of each group's sha256.
pub const DIGEST_BYTES: usize = 8;
/// Largest matrix size a challenge may ask for (a 16384² `u32` matrix is 1 GiB).
pub const MAX_N: usize = 16_384;
/// Longest challenge id (a Kubernetes object name).
pub const MAX_ID_LEN: usize = 253;

const SEED_DOMAIN: &[u8] = b"gpufed-challenge-v1/seed";
const ROWS_DOMAIN: &[u8] = b"gpufed-challenge-v1/rows";
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the hub asks: the same for every GPU of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    /// The challenge's name, unique per hub; answers carry it back.
    pub id: String,
    /// 32 random bytes the hub drew for this challenge.
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 32],
    /// Matrix size; a multiple of [`GROUPS`].
    pub n: usize,
}

/// A challenge the program or the hub cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// `n` is zero, too large or not a multiple of [`GROUPS`].
    #[error("matrix size {0} is invalid: it must be a positive multiple of {GROUPS} up to {MAX_N}")]
    BadSize(usize),
    /// The nonce is not 64 hex digits.
    #[error("nonce must be 64 hex digits (32 bytes)")]
    BadNonce,
    /// The id is empty or too long.
    #[error("challenge id must be 1 to {MAX_ID_LEN} characters")]
    BadId,
}

impl Challenge {
    /// A challenge from its command-line form; checks every field.
    pub fn new(id: &str, nonce_hex: &str, n: usize) -> Result<Self, ChallengeError> {
        let bytes = hex::decode(nonce_hex).map_err(|_| ChallengeError::BadNonce)?;
        let nonce: [u8; 32] = bytes.try_into().map_err(|_| ChallengeError::BadNonce)?;
        let challenge = Self {
            id: id.to_string(),
            nonce,
            n,
        };
        challenge.validate()?;
        Ok(challenge)
    }

    /// Checks the size and id.
    pub fn validate(&self) -> Result<(), ChallengeError> {
        if self.n == 0 || self.n > MAX_N || !self.n.is_multiple_of(GROUPS) {
            return Err(ChallengeError::BadSize(self.n));
        }
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(ChallengeError::BadId);
        }
        Ok(())
    }

    /// Rows per group.
    pub fn rows_per_group(&self) -> usize {
        self.n / GROUPS
    }

    /// `id ‖ 0x00 ‖ nonce ‖ uuid` after a domain tag: binds a value to this challenge and GPU.
    fn bound(&self, domain: &[u8], uuid: &str) -> Sha256 {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(self.id.as_bytes());
        h.update([0u8]);
        h.update(self.nonce);
        h.update(uuid.as_bytes());
        h
    }

    /// The PRNG seed of one GPU's matrices.
    pub fn seed(&self, uuid: &str) -> u64 {
        let digest = self.bound(SEED_DOMAIN, uuid).finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    /// The inputs of one GPU: `A` then `B`, row-major.
    pub fn matrices(&self, uuid: &str) -> (Vec<u32>, Vec<u32>) {
        let seed = self.seed(uuid);
        let nn = self.n * self.n;
        let a = (0..nn).map(|k| entry(seed, k)).collect();
        let b = (nn..2 * nn).map(|k| entry(seed, k)).collect();
        (a, b)
    }

    /// The digest of row group `group` of one GPU's product, given those rows (row-major).
    pub fn group_digest(&self, uuid: &str, group: usize, rows: &[u32]) -> [u8; DIGEST_BYTES] {
        let mut h = self.bound(ROWS_DOMAIN, uuid);
        h.update((group as u32).to_le_bytes());
        for v in rows {
            h.update(v.to_le_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; DIGEST_BYTES];
        out.copy_from_slice(&digest[..DIGEST_BYTES]);
        out
    }

    /// All [`GROUPS`] digests of one GPU's product `c` (`n×n`, row-major).
    pub fn digests(&self, uuid: &str, c: &[u32]) -> Vec<[u8; DIGEST_BYTES]> {
        let per = self.rows_per_group() * self.n;
        c.chunks(per)
            .enumerate()
            .map(|(j, rows)| self.group_digest(uuid, j, rows))
            .collect()
    }

    /// Recomputes one row group of one GPU's product on the CPU: `n³/GROUPS` multiply-adds.
    /// This is the hub's check.
    pub fn expected_group(&self, uuid: &str, group: usize) -> [u8; DIGEST_BYTES] {
        let seed = self.seed(uuid);
        let n = self.n;
        let first_row = group * self.rows_per_group();
        let a: Vec<u32> = (first_row * n..(first_row + self.rows_per_group()) * n)
            .map(|k| entry(seed, k))
            .collect();
        let b: Vec<u32> = (n * n..2 * n * n).map(|k| entry(seed, k)).collect();
        let rows = matmul(&a, &b, n);
        self.group_digest(uuid, group, &rows)
    }
}

/// Entry `k` of a GPU's input stream: splitmix64 at counter `k`, low 32 bits.
pub fn entry(seed: u64, k: usize) -> u32 {
    let mut z = seed.wrapping_add((k as u64).wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// `a·b` mod 2³², where `a` has `a.len()/n` rows and `b` is `n×n` (row-major).
///
/// i-k-j order so the inner loop streams a row of `b` (and vectorises).
pub fn matmul(a: &[u32], b: &[u32], n: usize) -> Vec<u32> {
    let rows = a.len() / n;
    let mut c = vec![0u32; rows * n];
    for i in 0..rows {
        let out = &mut c[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a[i * n + k];
            let brow = &b[k * n..(k + 1) * n];
            for (o, bkj) in out.iter_mut().zip(brow) {
                *o = o.wrapping_add(aik.wrapping_mul(*bkj));
            }
        }
    }
    c
}

/// The whole work of one GPU on the CPU: what the CPU backend answers.
pub fn cpu_digests(challenge: &Challenge, uuid: &str) -> Vec<[u8; DIGEST_BYTES]> {
    let (a, b) = challenge.matrices(uuid);
    let c = matmul(&a, &b, challenge.n);
    challenge.digests(uuid, &c)
}

/// Hex (de)serialisation of the 32-byte nonce.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("nonce must be 32 bytes"))
    }
}
