//! `kubectl gpufed top`: capacity, free GPUs and prices, per GPU model (from each GpuPool's status,
//! the hub's roll-up over Ready members) and per member cluster (from MemberCluster status and
//! inventory, and the prices in its spec).

use std::collections::BTreeMap;

use gpufed_crds::conditions::member as mc;
use gpufed_crds::{GpuPool, GpuPoolStatus, MemberCluster, ModelPrice, TokenAmount};
use kube::ResourceExt;
use serde::Serialize;

use crate::format::{NONE, condition_status, or_none};
use crate::table::Table;

/// What `top` shows; also its `-o json|yaml` output.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopSummary {
    /// One row per pool and GPU model.
    pub models: Vec<ModelRow>,
    /// One row per member cluster.
    pub clusters: Vec<ClusterRow>,
    /// One row per pool, namespace and quota group (from `status.quotaUsage`); absent when no
    /// pool has quotas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaRow>,
    /// One row per pool and namespace of a fair-sharing pool (from `status.shares`); absent when
    /// no pool shares fairly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareRow>,
}

/// One namespace's fair share of one pool (ADR 0025).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShareRow {
    /// The pool.
    pub pool: String,
    /// The tenant namespace.
    pub namespace: String,
    /// Its fair-share weight.
    pub weight: u32,
    /// GPUs it holds.
    pub gpus: u64,
    /// The model of its dominant share.
    pub dominant_model: Option<String>,
    /// Its dominant share in thousandths of that model's capacity.
    pub dominant_per_mille: u64,
}

/// One namespace's use of one quota group in one pool, and the pool's utilisation.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaRow {
    /// The pool.
    pub pool: String,
    /// The tenant namespace.
    pub namespace: String,
    /// The quota group.
    pub group: String,
    /// GPUs held.
    pub used: u64,
    /// Nominal quota.
    pub limit: u64,
    /// GPUs held beyond the nominal quota, borrowed from the cohort.
    pub borrowed: u64,
    /// The period of the group's GPU-hours or spend limit (`Day`, `Week`, `Month`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// GPU-hours used or committed in the current period, and the limit: `1.50/2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_hours: Option<String>,
    /// Tokens settled or locked in the current period, and the limit: `7.20/10.00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<String>,
}

/// Capacity and prices of one GPU model in one pool.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRow {
    /// The pool.
    pub pool: String,
    /// GPU model.
    pub model: String,
    /// Ready clusters offering it.
    pub clusters: u32,
    /// Allocatable GPUs.
    pub total_gpus: u32,
    /// Free GPUs.
    pub free_gpus: u32,
    /// Lowest price per GPU-hour.
    pub min_price: Option<TokenAmount>,
    /// Highest price per GPU-hour.
    pub max_price: Option<TokenAmount>,
    /// Average price weighted by free GPUs.
    pub price_index: Option<TokenAmount>,
}

/// Capacity and prices of one member cluster.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    /// MemberCluster name.
    pub cluster: String,
    /// Its pool.
    pub pool: String,
    /// Its region.
    pub region: String,
    /// Status of its Ready condition (`True`, `False`, or `<none>` before the hub saw it).
    pub ready: String,
    /// Status of its Schedulable condition.
    pub schedulable: String,
    /// GPUs per model from its inventory, e.g. `H100x16,L4x8`.
    pub models: Option<String>,
    /// Allocatable GPUs.
    pub total_gpus: u32,
    /// Free GPUs.
    pub free_gpus: u32,
    /// GPUs reported unhealthy.
    pub unhealthy_gpus: u32,
    /// Mean GPU utilisation over its nodes, in percent.
    pub utilization_percent: Option<u32>,
    /// Price per GPU-hour of each model it offers.
    pub prices: Vec<ModelPrice>,
}

/// The summary of `pools` and `members`, restricted to `pool` when given. Rows are sorted by pool,
/// then model or cluster name.
pub fn summarize(pools: &[GpuPool], members: &[MemberCluster], pool: Option<&str>) -> TopSummary {
    let wanted = |p: &str| pool.is_none_or(|want| want == p);
    // One row per item of a list in each wanted pool's status, with the pool's name.
    let per_pool = |rows: &mut dyn FnMut(&str, &GpuPoolStatus)| {
        for p in pools.iter().filter(|p| wanted(&p.name_any())) {
            if let Some(status) = &p.status {
                rows(&p.name_any(), status);
            }
        }
    };
    let (mut models, mut quotas, mut shares) = (vec![], vec![], vec![]);
    per_pool(&mut |name, s| {
        models.extend(s.capacity.iter().map(|c| ModelRow {
            pool: name.to_string(),
            model: c.model.clone(),
            clusters: c.clusters,
            total_gpus: c.total_gpus,
            free_gpus: c.free_gpus,
            min_price: c.min_price,
            max_price: c.max_price,
            price_index: c.price_index,
        }));
        quotas.extend(s.quota_usage.iter().map(|q| {
            QuotaRow {
                pool: name.to_string(),
                namespace: q.namespace.clone(),
                group: q.group.clone(),
                used: q.used,
                limit: q.limit,
                borrowed: q.borrowed,
                period: q.period.map(|p| format!("{p:?}")),
                gpu_hours: q
                    .gpu_hours_limit
                    .map(|l| format!("{}/{l}", q.gpu_hours_used.as_deref().unwrap_or("0.00"))),
                spend: q
                    .spend_limit
                    .map(|l| format!("{}/{l}", q.spent.unwrap_or_default())),
            }
        }));
        shares.extend(s.shares.iter().map(|sh| ShareRow {
            pool: name.to_string(),
            namespace: sh.namespace.clone(),
            weight: sh.weight,
            gpus: sh.gpus,
            dominant_model: sh.dominant_model.clone(),
            dominant_per_mille: sh.dominant_per_mille,
        }));
    });
    models.sort_by(|a: &ModelRow, b: &ModelRow| (&a.pool, &a.model).cmp(&(&b.pool, &b.model)));
    quotas.sort_by(|a: &QuotaRow, b: &QuotaRow| {
        (&a.pool, &a.namespace, &a.group).cmp(&(&b.pool, &b.namespace, &b.group))
    });
    shares.sort_by(|a: &ShareRow, b: &ShareRow| {
        (&a.pool, &a.namespace).cmp(&(&b.pool, &b.namespace))
    });
    let mut clusters: Vec<ClusterRow> = members
        .iter()
        .filter(|m| wanted(&m.spec.pool))
        .map(cluster_row)
        .collect();
    clusters.sort_by(|a, b| (&a.pool, &a.cluster).cmp(&(&b.pool, &b.cluster)));
    TopSummary {
        models,
        clusters,
        quotas,
        shares,
    }
}

fn cluster_row(m: &MemberCluster) -> ClusterRow {
    let status = m.status.clone().unwrap_or_default();
    let nodes = status
        .inventory
        .as_ref()
        .map(|i| i.nodes.as_slice())
        .unwrap_or_default();
    let utilization = (!nodes.is_empty()).then(|| {
        let sum: u64 = nodes.iter().map(|n| u64::from(n.utilization_percent)).sum();
        u32::try_from(sum / nodes.len() as u64).unwrap_or(u32::MAX)
    });
    ClusterRow {
        cluster: m.name_any(),
        pool: m.spec.pool.clone(),
        region: m.spec.region.clone(),
        ready: condition_status(&status.conditions, mc::READY),
        schedulable: condition_status(&status.conditions, mc::SCHEDULABLE),
        models: model_counts(m).or(status.model_summary.clone()),
        total_gpus: status.total_gpus,
        free_gpus: status.free_gpus,
        unhealthy_gpus: nodes.iter().map(|n| n.unhealthy_gpus).sum(),
        utilization_percent: utilization,
        prices: m.spec.prices.clone(),
    }
}

/// `H100x16,L4x8` from a member's inventory (allocatable GPUs per model), `None` without one.
pub fn model_counts(m: &MemberCluster) -> Option<String> {
    let nodes = &m.status.as_ref()?.inventory.as_ref()?.nodes;
    if nodes.is_empty() {
        return None;
    }
    let mut by_model: BTreeMap<&str, u32> = BTreeMap::new();
    for n in nodes {
        *by_model.entry(n.model.as_str()).or_default() += n.allocatable_gpus;
    }
    Some(
        by_model
            .iter()
            .map(|(model, n)| format!("{model}x{n}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `H100=2.40,A100=1.20`.
pub fn price_list(prices: &[ModelPrice]) -> String {
    prices
        .iter()
        .map(|p| format!("{}={}", p.model, p.price_per_gpu_hour))
        .collect::<Vec<_>>()
        .join(",")
}

/// The two tables of `top`, separated by a blank line; `wide` adds health and load columns.
pub fn render(summary: &TopSummary, wide: bool) -> String {
    if summary.models.is_empty() && summary.clusters.is_empty() {
        return "No GPU pools or member clusters found.\n".into();
    }
    let mut models = Table::new(&[
        "pool",
        "model",
        "clusters",
        "gpus",
        "free",
        "min-price",
        "max-price",
        "price-index",
    ]);
    for r in &summary.models {
        models.push(vec![
            r.pool.clone(),
            r.model.clone(),
            r.clusters.to_string(),
            r.total_gpus.to_string(),
            r.free_gpus.to_string(),
            or_none(r.min_price),
            or_none(r.max_price),
            or_none(r.price_index),
        ]);
    }
    let mut headers = vec![
        "cluster", "pool", "region", "ready", "models", "gpus", "free", "prices",
    ];
    if wide {
        headers.extend(["schedulable", "unhealthy", "util"]);
    }
    let mut clusters = Table::new(&headers);
    for r in &summary.clusters {
        let mut row = vec![
            r.cluster.clone(),
            r.pool.clone(),
            r.region.clone(),
            r.ready.clone(),
            r.models.clone().unwrap_or_else(|| NONE.into()),
            r.total_gpus.to_string(),
            r.free_gpus.to_string(),
            price_list(&r.prices),
        ];
        if wide {
            row.extend([
                r.schedulable.clone(),
                r.unhealthy_gpus.to_string(),
                or_none(r.utilization_percent.map(|u| format!("{u}%"))),
            ]);
        }
        clusters.push(row);
    }
    let mut out = String::new();
    if models.is_empty() {
        out.push_str("No Ready capacity in any pool yet (GpuPool status has no models).\n");
    } else {
        out.push_str(&models.render());
    }
    out.push('\n');
    out.push_str(&clusters.render());
    if !summary.quotas.is_empty() {
        // The period columns only when some group limits GPU-hours or spend per period.
        let periods = summary.quotas.iter().any(|q| q.period.is_some());
        let mut head = vec!["pool", "namespace", "group", "used", "limit", "borrowed"];
        if periods {
            head.extend(["period", "gpu-hours", "spend"]);
        }
        let mut quotas = Table::new(&head);
        for q in &summary.quotas {
            let mut row = vec![
                q.pool.clone(),
                q.namespace.clone(),
                q.group.clone(),
                q.used.to_string(),
                q.limit.to_string(),
                q.borrowed.to_string(),
            ];
            if periods {
                let dash = || "-".to_string();
                row.push(q.period.clone().unwrap_or_else(dash));
                row.push(q.gpu_hours.clone().unwrap_or_else(dash));
                row.push(q.spend.clone().unwrap_or_else(dash));
            }
            quotas.push(row);
        }
        out.push('\n');
        out.push_str(&quotas.render());
    }
    if !summary.shares.is_empty() {
        let mut shares = Table::new(&["pool", "namespace", "weight", "gpus", "dominant-share"]);
        for s in &summary.shares {
            let dominant = match &s.dominant_model {
                Some(m) => format!(
                    "{}.{}% of {m}",
                    s.dominant_per_mille / 10,
                    s.dominant_per_mille % 10
                ),
                None => NONE.into(),
            };
            shares.push(vec![
                s.pool.clone(),
                s.namespace.clone(),
                s.weight.to_string(),
                s.gpus.to_string(),
                dominant,
            ]);
        }
        out.push('\n');
        out.push_str(&shares.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node, pool, ready_member};
    use gpufed_crds::testing::member;

    fn fixture() -> (Vec<GpuPool>, Vec<MemberCluster>) {
        let alpha = ready_member(
            member("alpha", "H100", "2.40").price("L4", "0.50").build(),
            vec![
                node("a-0", "H100", 8, 6),
                node("a-1", "H100", 8, 2),
                node("a-2", "L4", 4, 4),
            ],
        );
        let beta = ready_member(
            member("beta", "A100", "1.20").region("us-east").build(),
            vec![node("b-0", "A100", 8, 8)],
        );
        let joining = member("new", "H100", "3.00").build();
        (
            vec![
                pool(
                    "default",
                    &[
                        ("H100", 1, 16, 8, "2.40", "2.40", "2.40"),
                        ("A100", 1, 8, 8, "1.20", "1.20", "1.20"),
                        ("L4", 1, 4, 4, "0.50", "0.50", "0.50"),
                    ],
                ),
                pool("other", &[]),
            ],
            vec![joining, beta, alpha],
        )
    }

    #[test]
    fn models_come_from_the_pool_roll_up_and_clusters_from_their_inventory() {
        let (pools, members) = fixture();
        let s = summarize(&pools, &members, None);
        let h100 = s.models.iter().find(|m| m.model == "H100").unwrap();
        assert_eq!((h100.clusters, h100.total_gpus, h100.free_gpus), (1, 16, 8));
        assert_eq!(h100.price_index.unwrap().to_string(), "2.40");
        let names: Vec<_> = s.clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "new"]);
        assert_eq!(s.clusters[0].models.as_deref(), Some("H100x16,L4x4"));
        assert_eq!(s.clusters[0].ready, "True");
        assert_eq!(s.clusters[2].ready, "<none>");
    }

    #[test]
    fn the_table_lists_models_then_clusters_with_their_prices() {
        let (pools, members) = fixture();
        let out = render(&summarize(&pools, &members, None), false);
        assert_eq!(
            out,
            "\
POOL     MODEL  CLUSTERS  GPUS  FREE  MIN-PRICE  MAX-PRICE  PRICE-INDEX
default  A100   1         8     8     1.20       1.20       1.20
default  H100   1         16    8     2.40       2.40       2.40
default  L4     1         4     4     0.50       0.50       0.50

CLUSTER  POOL     REGION   READY   MODELS        GPUS  FREE  PRICES
alpha    default  eu-west  True    H100x16,L4x4  20    12    H100=2.40,L4=0.50
beta     default  us-east  True    A100x8        8     8     A100=1.20
new      default  eu-west  <none>  <none>        0     0     H100=3.00
"
        );
    }

    #[test]
    fn quota_use_of_each_namespace_is_listed_after_the_clusters() {
        let (mut pools, members) = fixture();
        if let Some(st) = pools[0].status.as_mut() {
            st.quota_usage = vec![gpufed_crds::QuotaUsage {
                namespace: "team-a".into(),
                group: "h100".into(),
                used: 10,
                limit: 8,
                borrowed: 2,
                ..Default::default()
            }];
        }
        let out = render(&summarize(&pools, &members, None), false);
        assert!(
            out.ends_with(
                "\nPOOL     NAMESPACE  GROUP  USED  LIMIT  BORROWED\n\
                 default  team-a     h100   10    8      2\n"
            ),
            "{out}"
        );
        let none = render(&summarize(&pools, &members, Some("other")), false);
        assert!(!none.contains("NAMESPACE"), "{none}");
    }

    #[test]
    fn period_use_is_shown_when_a_group_limits_gpu_hours_or_spend() {
        let (mut pools, members) = fixture();
        if let Some(st) = pools[0].status.as_mut() {
            st.quota_usage = vec![
                gpufed_crds::QuotaUsage {
                    namespace: "team-a".into(),
                    group: "all".into(),
                    used: 2,
                    limit: 8,
                    period: Some(gpufed_crds::QuotaPeriod::Month),
                    gpu_hours_used: Some("1.50".into()),
                    gpu_hours_limit: Some(2),
                    spent: Some("7.20".parse().unwrap()),
                    spend_limit: Some("10".parse().unwrap()),
                    ..Default::default()
                },
                gpufed_crds::QuotaUsage {
                    namespace: "team-b".into(),
                    group: "all".into(),
                    used: 1,
                    limit: 4,
                    ..Default::default()
                },
            ];
        }
        let out = render(&summarize(&pools, &members, None), false);
        assert!(
            out.ends_with(
                "\nPOOL     NAMESPACE  GROUP  USED  LIMIT  BORROWED  PERIOD  GPU-HOURS  SPEND\n\
                 default  team-a     all    2     8      0         Month   1.50/2     7.20/10.00\n\
                 default  team-b     all    1     4      0         -       -          -\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn fair_shares_of_each_namespace_are_listed_last() {
        let (mut pools, members) = fixture();
        if let Some(st) = pools[0].status.as_mut() {
            st.shares = vec![
                gpufed_crds::NamespaceShare {
                    namespace: "team-b".into(),
                    weight: 2,
                    gpus: 4,
                    dominant_model: Some("H100".into()),
                    dominant_per_mille: 666,
                },
                gpufed_crds::NamespaceShare {
                    namespace: "team-a".into(),
                    weight: 1,
                    gpus: 0,
                    dominant_model: None,
                    dominant_per_mille: 0,
                },
            ];
        }
        let out = render(&summarize(&pools, &members, None), false);
        assert!(
            out.ends_with(
                "\nPOOL     NAMESPACE  WEIGHT  GPUS  DOMINANT-SHARE\n\
                 default  team-a     1       0     <none>\n\
                 default  team-b     2       4     66.6% of H100\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn wide_adds_schedulable_unhealthy_and_utilisation() {
        let (pools, members) = fixture();
        let out = render(&summarize(&pools, &members, Some("default")), true);
        let header = out.lines().nth(5).unwrap();
        assert!(
            header.ends_with("PRICES             SCHEDULABLE  UNHEALTHY  UTIL"),
            "{header}"
        );
        assert!(out.contains("True         0          25%"), "{out}");
    }

    #[test]
    fn a_pool_filter_keeps_only_that_pool() {
        let (pools, members) = fixture();
        let s = summarize(&pools, &members, Some("other"));
        assert!(s.models.is_empty() && s.clusters.is_empty());
        assert_eq!(
            render(&s, false),
            "No GPU pools or member clusters found.\n"
        );
    }

    #[test]
    fn members_without_pool_capacity_still_show_with_a_note() {
        let (_, members) = fixture();
        let out = render(&summarize(&[], &members, None), false);
        assert!(
            out.starts_with("No Ready capacity in any pool yet"),
            "{out}"
        );
        assert!(out.contains("\nCLUSTER  POOL"), "{out}");
    }

    #[test]
    fn the_summary_serialises_with_camel_case_fields() {
        let (pools, members) = fixture();
        let v = serde_json::to_value(summarize(&pools, &members, None)).unwrap();
        assert_eq!(v["models"][0]["priceIndex"], "1.20");
        assert_eq!(v["clusters"][0]["prices"][0]["pricePerGpuHour"], "2.40");
        assert_eq!(v["clusters"][0]["freeGpus"], 12);
    }
}
