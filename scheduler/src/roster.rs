//! What a [`crate::NoFit`] needs of the snapshot after the pass is over: cluster names, the
//! per-cluster facts that do not change within a pass (gate, region, models and their prices,
//! bond), and the sums a signature starts from. Built once per [`crate::Scheduler`] from the index and shared by `Arc` with every
//! no-fit decision of the pass, so a decision owns nothing per cluster but the few clusters whose
//! reason depends on the job's numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::{ClusterEntry, Gate};
use crate::input::{BondState, VerificationState};
use crate::reason::{BondIssue, ReasonKind, VerificationIssue};

/// The static facts of one snapshot's clusters, by position (name order).
#[derive(Debug, Default)]
pub(crate) struct Roster {
    /// Cluster names back to back, in position order, ending at `name_ends[pos]`: one
    /// allocation for every name, read without touching the `ClusterState`s.
    name_buf: String,
    name_ends: Vec<usize>,
    clusters: Vec<Facts>,
    /// Names of each cluster's models, sorted; one shared list per distinct set in the pool.
    has: Vec<Arc<[String]>>,
    /// Models each cluster has nodes of, ids ascending, back to back: cluster `pos`'s are at
    /// `model_ends[pos - 1]..model_ends[pos]`.
    model_ids: Vec<u32>,
    /// The cluster's price of each model in `model_ids`, if it asks one.
    prices: Vec<Option<u128>>,
    model_ends: Vec<usize>,
    /// Model names by id.
    model_names: Vec<String>,
    /// Region names by id.
    region_names: Vec<String>,
    /// What is wrong with the bond of each cluster gated by it, by position.
    bonds: Vec<(usize, BondIssue)>,
    /// Verification issues of the clusters gated by verification and of the unverified open ones,
    /// by position (ascending).
    verifications: Vec<(usize, VerificationIssue)>,
    /// Why each cluster gated by the pool's reputation floor is below it, by position.
    reputations: Vec<(usize, String)>,
    /// For [`crate::NoFit::signature`]: the sum of [`pair_hash`] over the gated clusters, with
    /// their gate's kind.
    pub(crate) gated_sum: u64,
    /// Per region id, the sums of [`pair_hash`] over its open clusters as if each gave `Region`,
    /// and as if each gave `NoModel`: the reason of every open cluster a job's codes do not cover,
    /// unless it is blocked or has one of the job's models without a price.
    pub(crate) region_sums: Vec<(u64, u64)>,
    /// Positions of the open clusters that have a model but ask no price for it, per
    /// `model id × regions + region id`, ascending.
    unpriced: Vec<Vec<u32>>,
}

/// What one cluster's reason kind depends on, whatever the job: 24 bytes, read for every cluster
/// each time a no-fit decision is walked.
#[derive(Debug)]
pub(crate) struct Facts {
    /// [`name_hash`] of the cluster's name, for [`crate::NoFit::signature`].
    pub(crate) name_hash: u64,
    /// [`crate::index::model_mask`] of its models.
    pub(crate) model_mask: u64,
    /// Region id.
    pub(crate) region: u32,
    /// The cluster-level reason that does not depend on the job, if any, as the gate it fails.
    pub(crate) gate: Option<Gate>,
    /// Its kind (for a bond, which issue), so a walk over every cluster needs no bond lookup.
    pub(crate) gate_kind: Option<ReasonKind>,
}

impl Roster {
    /// The roster of `clusters` (in position order), with `model_names` and `region_names` by id.
    pub(crate) fn build(
        clusters: &[ClusterEntry<'_>],
        model_names: &[&str],
        region_names: &[&str],
    ) -> Roster {
        let mut roster = Roster {
            name_buf: String::new(),
            name_ends: Vec::with_capacity(clusters.len()),
            clusters: Vec::with_capacity(clusters.len()),
            has: Vec::with_capacity(clusters.len()),
            model_ids: Vec::with_capacity(clusters.len()),
            prices: Vec::with_capacity(clusters.len()),
            model_ends: Vec::with_capacity(clusters.len()),
            model_names: model_names.iter().map(|m| m.to_string()).collect(),
            region_names: region_names.iter().map(|r| r.to_string()).collect(),
            bonds: Vec::new(),
            verifications: Vec::new(),
            reputations: Vec::new(),
            gated_sum: 0,
            region_sums: vec![(0, 0); region_names.len()],
            unpriced: vec![Vec::new(); model_names.len() * region_names.len().max(1)],
        };
        // Most clusters of a big pool share a handful of model sets: one list per set.
        let mut lists: BTreeMap<u64, Vec<Arc<[String]>>> = BTreeMap::new();
        for (pos, entry) in clusters.iter().enumerate() {
            let name = entry.state.name.as_str();
            roster.name_buf.push_str(name);
            roster.name_ends.push(roster.name_buf.len());
            for model in &entry.models {
                roster.model_ids.push(model.model);
                roster.prices.push(model.price);
            }
            roster.model_ends.push(roster.model_ids.len());
            let has: Arc<[String]> = entry
                .models
                .iter()
                .map(|m| roster.model_name(m.model).to_string())
                .collect();
            let same = lists.entry(entry.model_mask).or_default();
            roster
                .has
                .push(match same.iter().find(|shared| **shared == has) {
                    Some(shared) => Arc::clone(shared),
                    None => {
                        same.push(Arc::clone(&has));
                        has
                    }
                });
            if entry.gate.is_none() && entry.state.verification.allows_opt_in() {
                // Open to the jobs that opt in; the others give its issue as their reason.
                roster
                    .verifications
                    .push((pos, verification_issue(&entry.state.verification)));
            }
            let gate_kind = entry.gate.map(|gate| match gate {
                Gate::NotReady => ReasonKind::NotReady,
                Gate::NoInventory => ReasonKind::NoInventory,
                Gate::Cordoned => ReasonKind::Cordoned,
                Gate::Bond => {
                    let issue = bond_issue(&entry.state.bond);
                    let kind = match issue {
                        BondIssue::Insufficient { .. } => ReasonKind::BondInsufficient,
                        BondIssue::NoWallet => ReasonKind::NoWallet,
                        BondIssue::Unknown => ReasonKind::BondUnknown,
                    };
                    roster.bonds.push((pos, issue));
                    kind
                }
                Gate::Verification => {
                    let issue = verification_issue(&entry.state.verification);
                    let kind = match issue {
                        VerificationIssue::Unverified { .. } => ReasonKind::Unverified,
                        VerificationIssue::Failed { .. } => ReasonKind::FailedVerification,
                    };
                    roster.verifications.push((pos, issue));
                    kind
                }
                Gate::Reputation => {
                    let why = entry.state.below_floor.clone().unwrap_or_default();
                    roster.reputations.push((pos, why));
                    ReasonKind::Reputation
                }
            });
            let hash = name_hash(name);
            match gate_kind {
                Some(kind) => {
                    roster.gated_sum = roster.gated_sum.wrapping_add(pair_hash(hash, kind))
                }
                None => {
                    if let Some((region, no_model)) =
                        roster.region_sums.get_mut(entry.region as usize)
                    {
                        *region = region.wrapping_add(pair_hash(hash, ReasonKind::Region));
                        *no_model = no_model.wrapping_add(pair_hash(hash, ReasonKind::NoModel));
                    }
                    let regions = region_names.len().max(1);
                    for model in entry.models.iter().filter(|m| m.price.is_none()) {
                        let at = model.model as usize * regions + entry.region as usize;
                        if let (Some(list), Ok(pos)) =
                            (roster.unpriced.get_mut(at), u32::try_from(pos))
                        {
                            list.push(pos);
                        }
                    }
                }
            }
            roster.clusters.push(Facts {
                name_hash: hash,
                model_mask: entry.model_mask,
                region: entry.region,
                gate: entry.gate,
                gate_kind,
            });
        }
        roster
    }

    /// Number of regions (region ids are `0..regions()`).
    pub(crate) fn regions(&self) -> u32 {
        u32::try_from(self.region_names.len()).unwrap_or(u32::MAX)
    }

    /// Open clusters in `region` that have `model` without a price, by position.
    pub(crate) fn unpriced(&self, model: u32, region: u32) -> &[u32] {
        let at = model as usize * self.region_names.len().max(1) + region as usize;
        self.unpriced.get(at).map_or(&[], Vec::as_slice)
    }

    /// Number of clusters.
    pub(crate) fn len(&self) -> usize {
        self.clusters.len()
    }

    /// The facts of the cluster at `pos`.
    #[inline]
    pub(crate) fn facts(&self, pos: usize) -> Option<&Facts> {
        self.clusters.get(pos)
    }

    /// Names of the models the cluster at `pos` has, sorted.
    pub(crate) fn has(&self, pos: usize) -> Arc<[String]> {
        self.has.get(pos).map_or_else(|| Arc::from([]), Arc::clone)
    }

    /// Name of the cluster at `pos` (empty past the end).
    pub(crate) fn name(&self, pos: usize) -> &str {
        let start = pos
            .checked_sub(1)
            .and_then(|p| self.name_ends.get(p))
            .copied()
            .unwrap_or(0);
        let end = self.name_ends.get(pos).copied().unwrap_or(start);
        self.name_buf.get(start..end).unwrap_or("")
    }

    /// Where the models of the cluster at `pos` are in `model_ids` and `prices`.
    fn model_range(&self, pos: usize) -> std::ops::Range<usize> {
        let start = pos
            .checked_sub(1)
            .and_then(|p| self.model_ends.get(p))
            .copied()
            .unwrap_or(0);
        let end = self.model_ends.get(pos).copied().unwrap_or(start);
        start..end
    }

    /// Model ids the cluster at `pos` has nodes of, ascending.
    pub(crate) fn models(&self, pos: usize) -> &[u32] {
        self.model_ids.get(self.model_range(pos)).unwrap_or(&[])
    }

    /// The price the cluster at `pos` asks for `model`, if it has the model and prices it.
    pub(crate) fn price(&self, pos: usize, model: u32) -> Option<u128> {
        let range = self.model_range(pos);
        let at = self
            .model_ids
            .get(range.clone())?
            .binary_search(&model)
            .ok()?;
        self.prices.get(range.start + at).copied().flatten()
    }

    /// Name of a model id.
    pub(crate) fn model_name(&self, id: u32) -> &str {
        self.model_names.get(id as usize).map_or("", String::as_str)
    }

    /// Name of a region id.
    pub(crate) fn region_name(&self, id: u32) -> &str {
        self.region_names
            .get(id as usize)
            .map_or("", String::as_str)
    }

    /// What is wrong with the bond of the cluster at `pos`, gated by its bond.
    pub(crate) fn bond(&self, pos: usize) -> BondIssue {
        self.bonds
            .binary_search_by_key(&pos, |(p, _)| *p)
            .ok()
            .and_then(|at| self.bonds.get(at))
            .map_or(BondIssue::Unknown, |(_, issue)| issue.clone())
    }
}

impl Roster {
    /// Why the cluster at `pos`, gated by the pool's reputation floor, is below it.
    pub(crate) fn reputation(&self, pos: usize) -> String {
        self.reputations
            .binary_search_by_key(&pos, |(p, _)| *p)
            .ok()
            .and_then(|at| self.reputations.get(at))
            .map_or_else(String::new, |(_, why)| why.clone())
    }

    /// The verification issue of the gated cluster at `pos`.
    pub(crate) fn verification(&self, pos: usize) -> VerificationIssue {
        self.verifications
            .binary_search_by_key(&pos, |(p, _)| *p)
            .ok()
            .and_then(|at| self.verifications.get(at))
            .map_or_else(
                || VerificationIssue::Unverified {
                    message: String::new(),
                },
                |(_, issue)| issue.clone(),
            )
    }
}

/// The verification issue of a state that does not allow placements.
pub(crate) fn verification_issue(state: &VerificationState) -> VerificationIssue {
    match state {
        VerificationState::Failed { message } => VerificationIssue::Failed {
            message: message.clone(),
        },
        VerificationState::Unverified { message } => VerificationIssue::Unverified {
            message: message.clone(),
        },
        VerificationState::NotRequired | VerificationState::Passed => {
            VerificationIssue::Unverified {
                message: String::new(),
            }
        }
    }
}

/// The bond issue of a state that does not allow placements.
pub(crate) fn bond_issue(bond: &BondState) -> BondIssue {
    match *bond {
        BondState::Insufficient { bonded, required } => {
            BondIssue::Insufficient { bonded, required }
        }
        BondState::NoWallet => BondIssue::NoWallet,
        BondState::Unknown | BondState::NotRequired | BondState::Eligible => BondIssue::Unknown,
    }
}

/// 64-bit FNV-1a of a cluster name: fixed, so a signature computed in one pass (or process)
/// compares with one from another.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The hash of one (cluster, reason kind) pair, from the cluster's [`name_hash`]. A signature is
/// the wrapping sum of these over every cluster (the pairs are a set: names are unique), so a
/// cluster's term can be taken out and another put in.
pub(crate) fn pair_hash(name_hash: u64, kind: ReasonKind) -> u64 {
    mix(name_hash ^ (kind as u64 + 1).wrapping_mul(KIND_SALT))
}

/// Spreads each reason kind over the whole word before it is mixed in.
const KIND_SALT: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: every input bit moves about half the output bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
