//! Every manifest in `deploy/examples/` parses into the Rust types with no unknown field, passes
//! the CRD's CEL rules, and the examples cover what the README promises (a pool, three members
//! with different models, prices and regions, and jobs of several shapes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use gpufed_crds::{ComputeJob, GpuPool, MemberCluster};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut docs = vec![];
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}#{i}: not YAML: {e}", path.display()));
            if !value.is_null() {
                docs.push((
                    format!("{}#{i}", path.file_name().unwrap().to_string_lossy()),
                    value,
                ));
            }
        }
    }
    docs
}

/// Parses `value` as `T`, failing on any field the type does not know.
fn strict<T: DeserializeOwned>(name: &str, value: &Value) -> T {
    let mut unknown = vec![];
    let parsed: Result<T, _> =
        serde_ignored::deserialize(value.clone(), |path| unknown.push(path.to_string()));
    let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
    // The generated root types check apiVersion and kind instead of storing them.
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    assert_eq!(value["apiVersion"], "gpufed.io/v1alpha1", "{name}");
    assert!(unknown.is_empty(), "{name}: unknown fields {unknown:?}");
    parsed
}

#[test]
fn every_example_parses_strictly_and_passes_cel() {
    let docs = examples();
    assert!(!docs.is_empty());
    for (name, value) in &docs {
        match value["kind"].as_str() {
            Some("GpuPool") => {
                let p: GpuPool = strict(name, value);
                kube::core::cel::validate_cel(&p).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
            Some("MemberCluster") => {
                let m: MemberCluster = strict(name, value);
                kube::core::cel::validate_cel(&m).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            }
            Some("ComputeJob") => {
                let j: ComputeJob = strict(name, value);
                kube::core::cel::validate_cel(&j).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert!(j.spec.gpus_per_replica >= 1);
            }
            other => panic!("{name}: unexpected kind {other:?}"),
        }
    }
}

#[test]
fn examples_cover_three_different_members_and_several_job_shapes() {
    let docs = examples();
    let members: Vec<MemberCluster> = docs
        .iter()
        .filter(|(_, v)| v["kind"] == "MemberCluster")
        .map(|(n, v)| strict(n, v))
        .collect();
    assert_eq!(members.len(), 3);
    let mut models: Vec<_> = members
        .iter()
        .map(|m| m.spec.prices[0].model.clone())
        .collect();
    let mut regions: Vec<_> = members.iter().map(|m| m.spec.region.clone()).collect();
    models.dedup();
    regions.dedup();
    assert_eq!(models.len(), 3, "members should offer different models");
    assert_eq!(regions.len(), 3, "members should be in different regions");

    let jobs: Vec<ComputeJob> = docs
        .iter()
        .filter(|(_, v)| v["kind"] == "ComputeJob")
        .map(|(n, v)| strict(n, v))
        .collect();
    assert!(
        jobs.iter()
            .any(|j| j.spec.replicas == 1 && j.spec.gpus_per_replica == 1),
        "single GPU"
    );
    assert!(jobs.iter().any(|j| j.spec.gpus_per_replica == 8), "8-GPU");
    assert!(jobs.iter().any(|j| j.spec.replicas > 1), "gang");
    assert!(
        jobs.iter().any(|j| j.spec.max_price_per_gpu_hour.is_some()),
        "price cap"
    );
}
