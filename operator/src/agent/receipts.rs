//! Keeps the hub's signed usage receipts on the member cluster. When an attempt ends in a pool
//! with a chain, the hub puts a receipt on its Placement (annotation `gpufed.io/usage-receipt`);
//! the agent copies each one into the ConfigMap [`CONFIGMAP`] in its jobs namespace, keyed by lock
//! id, so the provider still holds them if the hub — its apiserver included — is gone, and can
//! submit them with `kubectl gpufed claim --from-configmap`.
//!
//! At most [`MAX_RECEIPTS`] are kept: when more arrive, receipts whose Placement the hub no longer
//! has (the job was deleted after its settlement, or the attempt failed over) make room first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gpufed_crds::naming::ANNOTATION_USAGE_RECEIPT;
use gpufed_crds::{ClaimableReceipt, Placement};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::api::API_TIMEOUT;
use crate::error::{Error, Result};

/// The ConfigMap (in the agent's jobs namespace) that holds the receipts: lock id → receipt JSON.
pub const CONFIGMAP: &str = "gpufed-usage-receipts";
/// Most receipts kept (a receipt is about 450 bytes; a ConfigMap holds at most 1 MiB).
pub const MAX_RECEIPTS: usize = 1000;

/// The receipts on `placements`: lock id → receipt JSON (as the hub wrote it, validated).
pub fn on_placements(placements: &[Arc<Placement>]) -> BTreeMap<String, String> {
    placements
        .iter()
        .filter_map(|p| {
            let raw = p.annotations().get(ANNOTATION_USAGE_RECEIPT)?;
            let r: ClaimableReceipt = serde_json::from_str(raw).ok()?;
            Some((r.job_id, raw.clone()))
        })
        .collect()
}

/// The JSON merge patch of the ConfigMap's data that adds `new` to `stored` (lock ids) and, when the
/// result would exceed `max`, removes stored receipts not in `live` (the ones whose Placement is
/// gone). `None` when there is nothing to add.
pub fn data_patch(
    stored: &BTreeSet<String>,
    new: &BTreeMap<String, String>,
    live: &BTreeSet<String>,
    max: usize,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let adding: Vec<(&String, &String)> =
        new.iter().filter(|(k, _)| !stored.contains(*k)).collect();
    if adding.is_empty() {
        return None;
    }
    let mut patch = serde_json::Map::new();
    let mut total = stored.len() + adding.len();
    for k in stored {
        if total <= max {
            break;
        }
        if !live.contains(k) {
            patch.insert(k.clone(), serde_json::Value::Null);
            total -= 1;
        }
    }
    for (k, v) in adding {
        patch.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    Some(patch)
}

/// Copies the receipts of `placements` that `saved` does not list yet into the ConfigMap; returns
/// the lock ids the ConfigMap holds afterwards.
pub async fn save(
    api: &Api<ConfigMap>,
    placements: &[Arc<Placement>],
    saved: &BTreeSet<String>,
) -> Result<Option<BTreeSet<String>>> {
    let live = on_placements(placements);
    if live.keys().all(|k| saved.contains(k)) {
        return Ok(None);
    }
    let current = tokio::time::timeout(API_TIMEOUT, api.get_opt(CONFIGMAP))
        .await
        .map_err(|_| Error::Timeout {
            what: "reading the usage receipts ConfigMap".into(),
            after: API_TIMEOUT,
        })?
        .map_err(Error::kube("reading the usage receipts ConfigMap"))?;
    let stored: BTreeSet<String> = current
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    let live_ids: BTreeSet<String> = live.keys().cloned().collect();
    let Some(patch) = data_patch(&stored, &live, &live_ids, MAX_RECEIPTS) else {
        return Ok(Some(stored));
    };
    let mut after = stored;
    for (k, v) in &patch {
        if v.is_null() {
            after.remove(k);
        } else {
            after.insert(k.clone());
        }
    }
    if current.is_none() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": CONFIGMAP, "labels": {"app.kubernetes.io/managed-by": "gpufed"}},
            "data": patch.into_iter().filter(|(_, v)| !v.is_null()).collect::<serde_json::Map<_, _>>(),
        }))
        .map_err(|source| Error::Serde {
            context: "the usage receipts ConfigMap".into(),
            source,
        })?;
        tokio::time::timeout(API_TIMEOUT, api.create(&PostParams::default(), &cm))
            .await
            .map_err(|_| Error::Timeout {
                what: "creating the usage receipts ConfigMap".into(),
                after: API_TIMEOUT,
            })?
            .map_err(Error::kube("creating the usage receipts ConfigMap"))?;
    } else {
        let body = serde_json::json!({ "data": patch });
        tokio::time::timeout(
            API_TIMEOUT,
            api.patch(CONFIGMAP, &PatchParams::default(), &Patch::Merge(&body)),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "updating the usage receipts ConfigMap".into(),
            after: API_TIMEOUT,
        })?
        .map_err(Error::kube("updating the usage receipts ConfigMap"))?;
    }
    Ok(Some(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn new(v: &[&str]) -> BTreeMap<String, String> {
        v.iter()
            .map(|s| (s.to_string(), format!("r-{s}")))
            .collect()
    }

    #[test]
    fn only_receipts_not_stored_yet_are_added() {
        assert_eq!(
            data_patch(&ids(&["a"]), &new(&["a"]), &ids(&["a"]), 10),
            None
        );
        let p = data_patch(&ids(&["a"]), &new(&["a", "b"]), &ids(&["a", "b"]), 10).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p["b"], serde_json::json!("r-b"));
    }

    #[test]
    fn when_full_receipts_whose_placement_is_gone_make_room_and_live_ones_stay() {
        // 3 stored (x and y gone from the hub, a live), room for 3, 2 new: one gone receipt goes.
        let p = data_patch(
            &ids(&["a", "x", "y"]),
            &new(&["b", "c"]),
            &ids(&["a", "b", "c"]),
            3,
        )
        .unwrap();
        let removed: Vec<&String> = p
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(removed.len(), 2, "{p:?}");
        assert!(
            !removed.contains(&&"a".to_string()),
            "a live receipt is never dropped"
        );
        // Only live receipts stored: nothing is dropped, even past the limit.
        let p = data_patch(&ids(&["a"]), &new(&["b"]), &ids(&["a", "b"]), 1).unwrap();
        assert!(p.values().all(|v| !v.is_null()));
    }
}
