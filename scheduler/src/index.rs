//! The working copy of a snapshot that one scheduling pass reads and updates.
//!
//! Built once per batch: clusters sorted by name (so results never depend on the order the hub
//! listed them in), model and region names interned as small integers, reservations subtracted
//! from node free counts, and per (cluster, model) aggregates precomputed so that checking a job
//! against a cluster touches none of its nodes. Only the chosen cluster's nodes are visited, once
//! to pack the gang and once to refresh that model's aggregates after the placement.
//!
//! On top of that, the clusters a job could fit are listed once per (model, region) as compact
//! [`Row`]s: only clusters that pass the static gates (ready, inventory, not cordoned, bond) and
//! price the model. A job reads only the rows of its models and regions, one after another in
//! memory, and most rows are rejected or accepted from the row alone (see `scan.rs`).
//!
//! What does not change within the pass and a no-fit decision needs after it (names, gates,
//! regions, models and prices) is copied once into a shared [`Roster`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ScheduleError;
use crate::input::{ClusterState, NodeState, Reservation};
use crate::roster::Roster;

/// A cluster-level reason that does not depend on the job, computed once per pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    NotReady,
    NoInventory,
    Cordoned,
    Bond,
    Verification,
    Reputation,
}

/// The snapshot indexed for one scheduling pass.
#[derive(Debug)]
pub(crate) struct Index<'a> {
    /// Sorted by name, so a cluster's position orders it by name.
    pub(crate) clusters: Vec<ClusterEntry<'a>>,
    /// Model names by id; ids follow name order.
    pub(crate) model_names: Vec<&'a str>,
    model_ids: BTreeMap<&'a str, u32>,
    region_ids: BTreeMap<&'a str, u32>,
    /// Names and static facts of the clusters, shared with every no-fit decision of the pass.
    pub(crate) roster: Arc<Roster>,
    /// Rows of the open clusters (no gate) that price a model, at `model id × regions + region id`,
    /// ascending by cluster position.
    rows: Vec<Vec<Row>>,
    /// Positions of the open clusters whose GPUs are not verified yet
    /// ([`crate::VerificationState::Unverified`]), ascending: open to the jobs that opt in to
    /// unverified members, blocked for the others (ADR 0031).
    pub(crate) unverified: Vec<usize>,
    /// Some open cluster limits the job lengths of a model it prices: rows cannot decide those
    /// (their limits are in the [`ModelEntry`], not the row), so the scan reads the entry.
    pub(crate) duration_limited: bool,
    /// How many times free GPUs changed since the index was built ([`Index::commit`],
    /// [`Index::hold`]): a no-fit decision's reasons, worked out at one count, hold for any job
    /// with the same terms until it moves (the scheduler's cache of them, `scheduler.rs`).
    pub(crate) changes: u64,
}

/// Replica sizes (GPUs per replica) whose fit a [`Row`] records: 1 to 8, the sizes of the GPU
/// nodes in use, so the row decides almost every job without reading the cluster's tiers.
pub(crate) const ROW_REPLICA_SIZES: usize = 8;

/// What a scan needs of one (open cluster, priced model) without touching the cluster: its free
/// GPUs on all the model's nodes, which bound every memory tier, how many replicas of each common
/// size those nodes hold, its largest node, the least and most memory per GPU, and its price. 64
/// bytes, one cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) price: u128,
    /// Free GPUs of the model on all its nodes (the tier of the least memory).
    pub(crate) free: u64,
    /// Least memory per GPU among the model's nodes: a job needing no more reads `free` and
    /// `max_free` as its own tier's.
    pub(crate) min_mem_mib: u64,
    /// Most memory per GPU among the model's nodes: a job needing more fails on memory.
    pub(crate) max_mem_mib: u64,
    /// Cluster position.
    pub(crate) cluster: u32,
    /// Position in the cluster's [`ClusterEntry::models`].
    pub(crate) model_pos: u32,
    /// Most free GPUs of the model on one node.
    pub(crate) max_free: u32,
    /// Most GPUs of the model on one node, free or not ([`Tier::max_size`]).
    pub(crate) max_size: u32,
    /// `fits[g - 1]`: replicas of `g` GPUs the model's nodes hold, each on one node
    /// ([`Tier::replicas_fit`] of the tier of all nodes); `u8::MAX` stands for that many or more.
    fits: [u8; ROW_REPLICA_SIZES],
}

/// How many replicas of one size a [`Row`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowFit {
    /// Exactly this many.
    Exactly(u64),
    /// This many or more.
    AtLeast(u64),
}

impl Row {
    /// Replicas of `gpus` GPUs the model's nodes hold, if the row records that size.
    pub(crate) fn replicas_fit(&self, gpus: u32) -> Option<RowFit> {
        let at = usize::try_from(gpus).ok()?.checked_sub(1)?;
        let fit = *self.fits.get(at)?;
        Some(if fit < u8::MAX {
            RowFit::Exactly(u64::from(fit))
        } else {
            RowFit::AtLeast(u64::from(fit))
        })
    }
}

/// One cluster of the working copy.
#[derive(Debug)]
pub(crate) struct ClusterEntry<'a> {
    pub(crate) state: &'a ClusterState,
    pub(crate) region: u32,
    pub(crate) gate: Option<Gate>,
    /// Sorted by name, so a node's position orders it by name.
    pub(crate) nodes: Vec<NodeEntry<'a>>,
    /// Models the cluster has nodes of, sorted by id.
    pub(crate) models: Vec<ModelEntry>,
    /// Bit `id` set for each model id below 64 it has; all bits when it has a model id above.
    pub(crate) model_mask: u64,
}

/// Bit `id` for each of `ids`, or every bit if an id is 64 or more, so `a & b == 0` proves that
/// two sets share no id.
pub(crate) fn model_mask(ids: impl IntoIterator<Item = u32>) -> u64 {
    ids.into_iter().fold(0, |mask, id| {
        mask | 1u64.checked_shl(id).unwrap_or(u64::MAX)
    })
}

/// One node of the working copy.
#[derive(Debug)]
pub(crate) struct NodeEntry<'a> {
    pub(crate) state: &'a NodeState,
    /// GPUs still free: offered by the inventory, less reservations and this pass's placements.
    pub(crate) free: u32,
}

/// Aggregates of one GPU model within one cluster.
#[derive(Debug)]
pub(crate) struct ModelEntry {
    pub(crate) model: u32,
    pub(crate) price: Option<u128>,
    /// The job lengths the offer takes; `None`: any.
    pub(crate) durations: Option<crate::input::DurationLimits>,
    /// Positions in [`ClusterEntry::nodes`] of the nodes with this model.
    pub(crate) nodes: Vec<usize>,
    /// One tier per distinct memory size, largest first; each tier aggregates every node with at
    /// least its memory, so a job's tier is the last one that still meets its memory need.
    pub(crate) tiers: Vec<Tier>,
    /// Where this model's [`Row`] is (list, position), if the cluster is open and prices it.
    row: Option<(usize, usize)>,
}

/// Free capacity of the nodes of one model with at least `mem_mib` per GPU.
#[derive(Debug, Default)]
pub(crate) struct Tier {
    pub(crate) mem_mib: u64,
    /// Free GPUs summed over the nodes.
    pub(crate) free: u64,
    /// Most free GPUs on one node.
    pub(crate) max_free: u32,
    /// Most GPUs on one ready node, free or not (healthy allocatable ones, before reservations):
    /// a replica wider than this never fits, however long it waits.
    pub(crate) max_size: u32,
    /// `(free GPUs, nodes with that many)`, ascending, nodes with none left out.
    hist: Vec<(u32, u32)>,
}

impl Tier {
    /// Replicas of `gpus` GPUs that fit, each on one node, counting no further than `enough`.
    pub(crate) fn replicas_fit(&self, gpus: u32, enough: u64) -> u64 {
        if gpus == 0 {
            return enough;
        }
        let mut fit = 0u64;
        for &(free, nodes) in self.hist.iter().rev() {
            if free < gpus {
                break;
            }
            fit += u64::from(free / gpus) * u64::from(nodes);
            if fit >= enough {
                break;
            }
        }
        fit
    }
}

impl ModelEntry {
    /// The tier of nodes with at least `min_mib` per GPU, if any node has that much.
    pub(crate) fn tier(&self, min_mib: u64) -> Option<&Tier> {
        self.tiers
            .iter()
            .take_while(|t| t.mem_mib >= min_mib)
            .last()
    }

    /// Largest memory per GPU among the model's nodes.
    pub(crate) fn max_mem_mib(&self) -> u64 {
        self.tiers.first().map_or(0, |t| t.mem_mib)
    }

    /// The row's figures from the tier of all nodes (the last one).
    fn update_row(&self, row: &mut Row) {
        if let Some(all) = self.tiers.last() {
            row.free = all.free;
            row.max_free = all.max_free;
            row.max_size = all.max_size;
            row.min_mem_mib = all.mem_mib;
            row.max_mem_mib = self.max_mem_mib();
            for (gpus, fit) in (1u32..).zip(row.fits.iter_mut()) {
                let n = all.replicas_fit(gpus, u64::from(u8::MAX));
                *fit = u8::try_from(n).unwrap_or(u8::MAX);
            }
        }
    }

    fn refresh(&mut self, nodes: &[NodeEntry<'_>]) {
        let mut mems: Vec<u64> = self
            .nodes
            .iter()
            .map(|&i| nodes[i].state.gpu_memory_mib)
            .collect();
        mems.sort_unstable_by(|a, b| b.cmp(a));
        mems.dedup();
        self.tiers = mems
            .into_iter()
            .map(|mem_mib| {
                let mut hist: BTreeMap<u32, u32> = BTreeMap::new();
                let mut tier = Tier {
                    mem_mib,
                    ..Tier::default()
                };
                for node in self.nodes.iter().map(|&i| &nodes[i]) {
                    if node.state.gpu_memory_mib < mem_mib {
                        continue;
                    }
                    tier.max_size = tier.max_size.max(node.state.size_gpus());
                    if node.free > 0 {
                        tier.free += u64::from(node.free);
                        tier.max_free = tier.max_free.max(node.free);
                        *hist.entry(node.free).or_default() += 1;
                    }
                }
                tier.hist = hist.into_iter().collect();
                tier
            })
            .collect();
    }
}

impl<'a> Index<'a> {
    /// Indexes `clusters` and subtracts `reservations`. Fails on duplicate cluster names or
    /// duplicate node names within a cluster.
    pub(crate) fn build(
        clusters: &'a [ClusterState],
        reservations: &[Reservation],
    ) -> Result<Index<'a>, ScheduleError> {
        let mut sorted: Vec<&ClusterState> = clusters.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = sorted.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(ScheduleError::DuplicateCluster {
                name: w[0].name.clone(),
            });
        }
        let mut model_ids: BTreeMap<&str, u32> = sorted
            .iter()
            .flat_map(|c| c.nodes.iter().map(|n| (n.model.as_str(), 0)))
            .collect();
        for (id, slot) in (0u32..).zip(model_ids.values_mut()) {
            *slot = id;
        }
        let mut region_ids: BTreeMap<&str, u32> =
            sorted.iter().map(|c| (c.region.as_str(), 0)).collect();
        for (id, slot) in (0u32..).zip(region_ids.values_mut()) {
            *slot = id;
        }
        let mut index = Index {
            clusters: Vec::with_capacity(sorted.len()),
            model_names: model_ids.keys().copied().collect(),
            model_ids,
            region_ids,
            roster: Arc::default(),
            rows: Vec::new(),
            unverified: Vec::new(),
            duration_limited: false,
            changes: 0,
        };
        for state in sorted {
            let entry = index.entry(state)?;
            index.clusters.push(entry);
        }
        index.duration_limited = index.clusters.iter().any(|c| {
            c.gate.is_none()
                && c.models
                    .iter()
                    .any(|m| m.price.is_some() && m.durations.is_some())
        });
        index.unverified = index
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.gate.is_none() && c.state.verification.allows_opt_in())
            .map(|(pos, _)| pos)
            .collect();
        let regions: Vec<&str> = index.region_ids.keys().copied().collect();
        index.roster = Arc::new(Roster::build(&index.clusters, &index.model_names, &regions));
        index.reserve(reservations);
        for cluster in &mut index.clusters {
            let ClusterEntry { nodes, models, .. } = cluster;
            for model in models.iter_mut() {
                model.refresh(nodes);
            }
        }
        index.build_rows();
        Ok(index)
    }

    fn build_rows(&mut self) {
        let regions = self.region_ids.len().max(1);
        let mut rows = vec![Vec::new(); self.model_names.len() * regions];
        for (pos, cluster) in self.clusters.iter_mut().enumerate() {
            if cluster.gate.is_some() {
                continue;
            }
            let region = cluster.region as usize;
            for (model_pos, model) in cluster.models.iter_mut().enumerate() {
                let Some(price) = model.price else {
                    continue;
                };
                let list_at = model.model as usize * regions + region;
                let (Some(list), Ok(cluster), Ok(model_pos)) = (
                    rows.get_mut(list_at),
                    u32::try_from(pos),
                    u32::try_from(model_pos),
                ) else {
                    continue;
                };
                let mut row = Row {
                    price,
                    free: 0,
                    min_mem_mib: 0,
                    max_mem_mib: 0,
                    cluster,
                    model_pos,
                    max_free: 0,
                    max_size: 0,
                    fits: [0; ROW_REPLICA_SIZES],
                };
                model.update_row(&mut row);
                model.row = Some((list_at, list.len()));
                list.push(row);
            }
        }
        self.rows = rows;
    }

    /// Whether `row`'s offer limits job lengths, so that the row alone cannot decide a job.
    #[inline]
    pub(crate) fn row_limits_duration(&self, row: &Row) -> bool {
        self.duration_limited
            && self
                .clusters
                .get(row.cluster as usize)
                .and_then(|c| c.models.get(row.model_pos as usize))
                .is_some_and(|m| m.durations.is_some())
    }

    /// Rows of the open clusters pricing model `model` in region `region`, by cluster position.
    pub(crate) fn rows(&self, model: u32, region: u32) -> &[Row] {
        let at = model as usize * self.region_ids.len().max(1) + region as usize;
        self.rows.get(at).map_or(&[], Vec::as_slice)
    }

    /// Number of regions known to the snapshot (region ids are `0..regions()`).
    pub(crate) fn regions(&self) -> u32 {
        u32::try_from(self.region_ids.len()).unwrap_or(u32::MAX)
    }

    fn entry(&self, state: &'a ClusterState) -> Result<ClusterEntry<'a>, ScheduleError> {
        let mut nodes: Vec<NodeEntry<'a>> = state
            .nodes
            .iter()
            .map(|n| NodeEntry {
                state: n,
                free: n.offered_gpus(),
            })
            .collect();
        nodes.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        if let Some(w) = nodes
            .windows(2)
            .find(|w| w[0].state.name == w[1].state.name)
        {
            return Err(ScheduleError::DuplicateNode {
                cluster: state.name.clone(),
                node: w[0].state.name.clone(),
            });
        }
        let mut by_model: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (pos, node) in nodes.iter().enumerate() {
            if let Some(id) = self.model_id(&node.state.model) {
                by_model.entry(id).or_default().push(pos);
            }
        }
        let model_mask = model_mask(by_model.keys().copied());
        let models = by_model
            .into_iter()
            .map(|(model, positions)| ModelEntry {
                model,
                price: self
                    .model_names
                    .get(model as usize)
                    .and_then(|name| state.prices.get(*name))
                    .copied(),
                durations: self
                    .model_names
                    .get(model as usize)
                    .and_then(|name| state.durations.get(*name))
                    .copied(),
                nodes: positions,
                tiers: Vec::new(),
                row: None,
            })
            .collect();
        let gate = if !state.ready {
            Some(Gate::NotReady)
        } else if !state.has_inventory {
            Some(Gate::NoInventory)
        } else if state.cordoned {
            Some(Gate::Cordoned)
        } else if !state.bond.allows_placement() {
            Some(Gate::Bond)
        } else if !state.verification.allows_placement() && !state.verification.allows_opt_in() {
            // Unverified members stay open: each job that does not opt in blocks them.
            Some(Gate::Verification)
        } else if state.below_floor.is_some() {
            Some(Gate::Reputation)
        } else {
            None
        };
        Ok(ClusterEntry {
            state,
            region: self.region_id(&state.region).unwrap_or(u32::MAX),
            gate,
            nodes,
            models,
            model_mask,
        })
    }

    fn reserve(&mut self, reservations: &[Reservation]) {
        for r in reservations {
            let Some(ci) = self.cluster_position(&r.cluster) else {
                continue;
            };
            let nodes = &mut self.clusters[ci].nodes;
            if let Ok(ni) = nodes.binary_search_by(|n| n.state.name.as_str().cmp(&r.node)) {
                nodes[ni].free = nodes[ni].free.saturating_sub(r.gpus);
            }
        }
    }

    /// Position of the cluster called `name`.
    pub(crate) fn cluster_position(&self, name: &str) -> Option<usize> {
        self.clusters
            .binary_search_by(|c| c.state.name.as_str().cmp(name))
            .ok()
    }

    /// Id of a model that some node of the snapshot has.
    pub(crate) fn model_id(&self, name: &str) -> Option<u32> {
        self.model_ids.get(name).copied()
    }

    /// Id of a region that some cluster of the snapshot is in.
    pub(crate) fn region_id(&self, name: &str) -> Option<u32> {
        self.region_ids.get(name).copied()
    }

    /// Name of a model id.
    pub(crate) fn model_name(&self, id: u32) -> &'a str {
        self.model_names.get(id as usize).copied().unwrap_or("")
    }

    /// Takes `gpus` GPUs per replica from each `(node position, replicas)` of one cluster's model
    /// and refreshes that model's aggregates.
    pub(crate) fn commit(
        &mut self,
        cluster: usize,
        model_pos: usize,
        gpus: u32,
        picks: &[(usize, u32)],
    ) {
        self.changes += 1;
        let Some(entry) = self.clusters.get_mut(cluster) else {
            return;
        };
        for &(node, replicas) in picks {
            if let Some(n) = entry.nodes.get_mut(node) {
                n.free = n.free.saturating_sub(gpus.saturating_mul(replicas));
            }
        }
        let ClusterEntry { nodes, models, .. } = entry;
        if let Some(model) = models.get_mut(model_pos) {
            model.refresh(nodes);
            if let Some(row) = model
                .row
                .and_then(|(list, at)| self.rows.get_mut(list)?.get_mut(at))
            {
                model.update_row(row);
            }
        }
    }

    /// Takes every free GPU of the named `nodes` of `cluster` for the rest of the pass (the hold
    /// of fair share, `fairshare.rs`), keeping the cluster's per-model counts and rows in step.
    pub(crate) fn hold(&mut self, cluster: &str, nodes: &[&str]) {
        self.changes += 1;
        let Some(ci) = self.cluster_position(cluster) else {
            return;
        };
        let Some(entry) = self.clusters.get_mut(ci) else {
            return;
        };
        for name in nodes {
            if let Ok(ni) = entry
                .nodes
                .binary_search_by(|n| n.state.name.as_str().cmp(name))
                && let Some(n) = entry.nodes.get_mut(ni)
            {
                n.free = 0;
            }
        }
        let ClusterEntry { nodes, models, .. } = entry;
        for model in models.iter_mut() {
            model.refresh(nodes);
            if let Some(row) = model
                .row
                .and_then(|(list, at)| self.rows.get_mut(list)?.get_mut(at))
            {
                model.update_row(row);
            }
        }
    }
}

#[cfg(test)]
mod tests;
