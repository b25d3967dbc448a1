//! `kubectl gpufed jobs`: ComputeJobs as `kubectl get` would list them, with the columns a
//! platform team asks about first (phase, where, how many GPUs of what, at what price, usage, cost).

use gpufed_crds::ComputeJob;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::format::{age_of, or_none};
use crate::table::Table;

/// The jobs table. `all_namespaces` adds a leading NAMESPACE column; `wide` adds pool and the
/// hub's explanation. `namespace` words the empty result.
pub fn render(jobs: &[ComputeJob], namespace: Option<&str>, wide: bool, now: Timestamp) -> String {
    if jobs.is_empty() {
        return match namespace {
            Some(ns) => format!("No resources found in {ns} namespace.\n"),
            None => "No resources found\n".into(),
        };
    }
    let all_namespaces = namespace.is_none();
    let mut headers = vec![];
    if all_namespaces {
        headers.push("namespace");
    }
    headers.extend([
        "name",
        "phase",
        "cluster",
        "gpus",
        "model",
        "price",
        "attempt",
        "gpu-seconds",
        "cost",
        "age",
    ]);
    if wide {
        headers.extend(["pool", "explanation"]);
    }
    let mut sorted: Vec<&ComputeJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| (j.namespace(), j.name_any()));
    let mut table = Table::new(&headers);
    for j in sorted {
        let status = j.status.as_ref();
        let placement = status.and_then(|s| s.placement.as_ref());
        let mut row = vec![];
        if all_namespaces {
            row.push(j.namespace().unwrap_or_default());
        }
        row.extend([
            j.name_any(),
            or_none(status.map(|s| format!("{:?}", s.phase))),
            or_none(placement.map(|p| p.cluster.clone())),
            (j.spec.replicas * j.spec.gpus_per_replica).to_string(),
            or_none(placement.map(|p| p.model.clone())),
            or_none(placement.map(|p| p.price_per_gpu_hour)),
            or_none(status.map(|s| s.attempt)),
            or_none(status.and_then(|s| s.usage.as_ref()).map(|u| u.gpu_seconds)),
            or_none(status.and_then(|s| s.cost)),
            age_of(j.metadata.creation_timestamp.as_ref(), now),
        ]);
        if wide {
            row.extend([
                j.spec.pool.clone(),
                or_none(status.and_then(|s| s.explanation.clone())),
            ]);
        }
        table.push(row);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{now, pending_job, running_job};

    #[test]
    fn jobs_show_phase_cluster_gpus_model_price_attempt_usage_cost_and_age() {
        let out = render(
            &[running_job(), pending_job()],
            Some("team-a"),
            false,
            now(),
        );
        assert_eq!(
            out,
            "\
NAME      PHASE    CLUSTER  GPUS  MODEL   PRICE   ATTEMPT  GPU-SECONDS  COST    AGE
big-a100  Pending  <none>   1     <none>  <none>  0        <none>       <none>  5m
train     Running  beta     8     H100    3.00    2        1600         <none>  120m
"
        );
    }

    #[test]
    fn all_namespaces_adds_the_namespace_column_first() {
        let other = gpufed_crds::testing::job("infer")
            .namespace("team-b")
            .build();
        let out = render(&[other, running_job()], None, false, now());
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  NAME   PHASE"), "{out}");
        assert!(lines[1].starts_with("team-a     train  Running"), "{out}");
        assert!(lines[2].starts_with("team-b     infer  <none>"), "{out}");
    }

    #[test]
    fn wide_adds_the_pool_and_the_explanation() {
        let out = render(&[pending_job()], Some("team-a"), true, now());
        assert!(
            out.lines()
                .next()
                .unwrap()
                .ends_with("AGE  POOL     EXPLANATION"),
            "{out}"
        );
        assert!(
            out.contains("5m   default  0/3 clusters fit: alpha: no A100 (has H100); beta:"),
            "{out}"
        );
    }

    #[test]
    fn no_jobs_says_so_like_kubectl() {
        assert_eq!(
            render(&[], Some("team-a"), false, now()),
            "No resources found in team-a namespace.\n"
        );
        assert_eq!(render(&[], None, false, now()), "No resources found\n");
    }
}
