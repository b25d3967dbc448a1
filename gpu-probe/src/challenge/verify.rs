//! The hub's check of an answer: parse, refuse what is malformed, replayed, short of GPUs or too
//! slow, then recompute the row groups the hub picked after the answer arrived.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Answer, Challenge, GROUPS, MAX_ANSWER_BYTES, VERSION};

/// Why an answer is refused. Each message says what was wrong, for the member's status and events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// More bytes than a termination message holds.
    #[error("answer is {0} bytes, more than the {MAX_ANSWER_BYTES} a termination message holds")]
    Oversize(usize),
    /// Not the JSON an answer is.
    #[error("answer is malformed: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("answer speaks protocol version {0}, the hub speaks {VERSION}")]
    UnsupportedVersion(u32),
    /// The answer names another challenge: a replay.
    #[error("answer is for challenge {got:?}, not {expected:?} (replayed from another challenge?)")]
    WrongChallenge {
        /// The challenge asked.
        expected: String,
        /// The challenge the answer names.
        got: String,
    },
    /// The same GPU answered twice.
    #[error("GPU {0} answered more than once")]
    DuplicateGpu(String),
    /// Fewer GPUs answered than the attempt was given.
    #[error("{got} GPUs answered, the attempt was given {expected}")]
    TooFewGpus {
        /// GPUs the attempt was given.
        expected: usize,
        /// GPUs in the answer.
        got: usize,
    },
    /// More GPUs answered than the attempt was given.
    #[error("{got} GPUs answered, the attempt was given only {expected}")]
    TooManyGpus {
        /// GPUs the attempt was given.
        expected: usize,
        /// GPUs in the answer.
        got: usize,
    },
    /// A GPU took longer than the profile of the claimed model allows.
    #[error("GPU {uuid} took {ms} ms, the profile allows at most {max_ms} ms")]
    TooSlow {
        /// The GPU.
        uuid: String,
        /// Its time.
        ms: u64,
        /// The profile's bound.
        max_ms: u64,
    },
    /// A recomputed row group does not match the answer's digest.
    #[error(
        "GPU {uuid} row group {group}: digest {received} does not match the product ({expected})"
    )]
    WrongResult {
        /// The GPU.
        uuid: String,
        /// The group checked.
        group: usize,
        /// What the hub computed (hex).
        expected: String,
        /// What the member answered (hex).
        received: String,
    },
}

/// An answer that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The UUIDs of the GPUs proven.
    pub gpus: Vec<String>,
}

/// One row group the hub recomputed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckedGroup {
    /// The GPU.
    pub uuid: String,
    /// The row group.
    pub group: usize,
    /// The digest the hub computed (hex).
    pub expected: String,
    /// The digest the member answered (hex).
    pub received: String,
}

/// Everything needed to check a verdict again: inputs, the answer as received, what the hub
/// computed, and the outcome. Its [`Evidence::sha256`] is what goes on chain with a slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The challenge (id, nonce, n).
    pub challenge: Challenge,
    /// GPUs the attempt was given.
    pub expected_gpus: usize,
    /// The profile's bound per GPU (ms).
    pub max_ms: u64,
    /// The answer as received (cut to [`MAX_ANSWER_BYTES`]); it carries the member's timings.
    pub received: String,
    /// The groups recomputed, with expected and received digests.
    pub checked: Vec<CheckedGroup>,
    /// `verified`, or the refusal's message.
    pub outcome: String,
}

impl Evidence {
    /// sha256 of the evidence's JSON (fields in declaration order), in hex.
    pub fn sha256(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// The outcome of a check and its evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Passed, or why not.
    pub result: Result<Verified, Refusal>,
    /// The record of the check.
    pub evidence: Evidence,
}

/// Checks `raw`, the answer to `challenge` from an attempt given `expected_gpus` GPUs whose claimed
/// model allows `max_ms` per product. `groups` are the row groups to recompute for every GPU
/// (taken modulo [`GROUPS`]); the hub draws them from its own randomness *after* the answer
/// arrived, which is what makes skipping work a gamble (docs/adr/0022-challenges.md).
pub fn verify(
    challenge: &Challenge,
    expected_gpus: usize,
    max_ms: u64,
    raw: &str,
    groups: &[usize],
) -> Verdict {
    let mut checked = Vec::new();
    let result = check(challenge, expected_gpus, max_ms, raw, groups, &mut checked);
    let mut received = raw.to_string();
    if received.len() > MAX_ANSWER_BYTES {
        let mut cut = MAX_ANSWER_BYTES;
        while !received.is_char_boundary(cut) {
            cut -= 1;
        }
        received.truncate(cut);
    }
    let evidence = Evidence {
        challenge: challenge.clone(),
        expected_gpus,
        max_ms,
        received,
        checked,
        outcome: match &result {
            Ok(_) => "verified".to_string(),
            Err(refusal) => refusal.to_string(),
        },
    };
    Verdict { result, evidence }
}

fn check(
    challenge: &Challenge,
    expected_gpus: usize,
    max_ms: u64,
    raw: &str,
    groups: &[usize],
    checked: &mut Vec<CheckedGroup>,
) -> Result<Verified, Refusal> {
    if raw.len() > MAX_ANSWER_BYTES {
        return Err(Refusal::Oversize(raw.len()));
    }
    let answer: Answer =
        serde_json::from_str(raw.trim()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if answer.v != VERSION {
        return Err(Refusal::UnsupportedVersion(answer.v));
    }
    if answer.id != challenge.id {
        return Err(Refusal::WrongChallenge {
            expected: challenge.id.clone(),
            got: answer.id,
        });
    }
    let mut seen = BTreeSet::new();
    for gpu in &answer.gpus {
        if gpu.uuid.is_empty() {
            return Err(Refusal::Malformed("a GPU has an empty uuid".to_string()));
        }
        if !seen.insert(gpu.uuid.as_str()) {
            return Err(Refusal::DuplicateGpu(gpu.uuid.clone()));
        }
    }
    let got = answer.gpus.len();
    if got < expected_gpus {
        return Err(Refusal::TooFewGpus {
            expected: expected_gpus,
            got,
        });
    }
    if got > expected_gpus {
        return Err(Refusal::TooManyGpus {
            expected: expected_gpus,
            got,
        });
    }
    let mut digests = Vec::with_capacity(got);
    for gpu in &answer.gpus {
        digests.push(gpu.digests().map_err(Refusal::Malformed)?);
    }
    for gpu in &answer.gpus {
        if gpu.ms > max_ms {
            return Err(Refusal::TooSlow {
                uuid: gpu.uuid.clone(),
                ms: gpu.ms,
                max_ms,
            });
        }
    }
    let groups: BTreeSet<usize> = groups.iter().map(|g| g % GROUPS).collect();
    for (gpu, digests) in answer.gpus.iter().zip(&digests) {
        for &group in &groups {
            let expected = hex::encode(challenge.expected_group(&gpu.uuid, group));
            let received = hex::encode(digests[group]);
            checked.push(CheckedGroup {
                uuid: gpu.uuid.clone(),
                group,
                expected: expected.clone(),
                received: received.clone(),
            });
            if expected != received {
                return Err(Refusal::WrongResult {
                    uuid: gpu.uuid.clone(),
                    group,
                    expected,
                    received,
                });
            }
        }
    }
    Ok(Verified {
        gpus: answer.gpus.into_iter().map(|g| g.uuid).collect(),
    })
}
