//! What a [`crate::NoFit`] needs of the snapshot after the pass is over: cluster names, and the
//! per-cluster facts that do not change within a pass (gate, region, models and their prices,
//! bond). Built once per [`crate::Scheduler`] from the index and shared by `Arc` with every
//! no-fit decision of the pass, so a decision owns nothing per cluster but the few clusters whose
//! reason depends on the job's numbers.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::{ClusterEntry, Gate};
use crate::input::BondState;
use crate::reason::{BondIssue, ReasonKind};

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
            });
            roster.clusters.push(Facts {
                name_hash: name_hash(name),
                model_mask: entry.model_mask,
                region: entry.region,
                gate: entry.gate,
                gate_kind,
            });
        }
        roster
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
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
