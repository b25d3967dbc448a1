//! The Grafana dashboard (`deploy/grafana/`) and the alert rules (`deploy/prometheus/`) may only use
//! metrics and labels that the code defines — read from `operator/src/metrics.rs` and
//! `gpu-probe/src/metrics.rs` as text — every alert must link to a runbook entry that exists in
//! `docs/operations.md`, and that page must document every metric the code defines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use regex_lite::Regex;
use serde_json::Value;

fn read(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// A metrics source file without its tests.
fn metrics_source(path: &str) -> String {
    let text = read(path);
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// What the code defines: metric names, histogram names, and every identifier-like string literal
/// (label names among them).
struct Defined {
    metrics: BTreeSet<String>,
    histograms: BTreeSet<String>,
    identifiers: BTreeSet<String>,
}

fn defined() -> Defined {
    let name = Regex::new(r#""((?:gpufed|DCGM)_[A-Za-z0-9_]+)""#).unwrap();
    let histogram = Regex::new(r#"HistogramOpts::new\(\s*"([A-Za-z0-9_]+)""#).unwrap();
    let literal = Regex::new(r#""([A-Za-z_][A-Za-z0-9_]*)""#).unwrap();
    let mut d = Defined {
        metrics: BTreeSet::new(),
        histograms: BTreeSet::new(),
        identifiers: BTreeSet::new(),
    };
    for path in ["operator/src/metrics.rs", "gpu-probe/src/metrics.rs"] {
        let src = metrics_source(path);
        d.metrics
            .extend(name.captures_iter(&src).map(|c| c[1].to_string()));
        d.histograms
            .extend(histogram.captures_iter(&src).map(|c| c[1].to_string()));
        d.identifiers
            .extend(literal.captures_iter(&src).map(|c| c[1].to_string()));
    }
    d
}

/// Every PromQL expression of the dashboard (panel targets and variable queries).
fn dashboard_queries() -> Vec<String> {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/gpufed-dashboard.json")).unwrap();
    let mut out = vec![];
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

fn alert_rules() -> Vec<Value> {
    let rules: Value = serde_norway::from_str(&read("deploy/prometheus/alerts.yaml")).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn all_queries() -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .map(|e| ("dashboard".to_string(), e))
        .collect();
    for r in alert_rules() {
        q.push((
            r["alert"].as_str().unwrap().to_string(),
            r["expr"].as_str().unwrap().to_string(),
        ));
    }
    q
}

#[test]
fn dashboard_and_alerts_use_only_metrics_the_code_defines() {
    let d = defined();
    assert!(
        d.metrics.contains("gpufed_leader") && d.metrics.contains("DCGM_FI_DEV_GPU_UTIL"),
        "reading the metric definitions failed: {:?}",
        d.metrics
    );
    let used = Regex::new(r"\b((?:gpufed|DCGM)_[A-Za-z0-9_]+)").unwrap();
    let mut seen = 0;
    for (source, expr) in all_queries() {
        for c in used.captures_iter(&expr) {
            let metric = &c[1];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| metric.strip_suffix(s))
                .filter(|b| d.histograms.contains(*b));
            assert!(
                d.metrics.contains(metric) || base.is_some(),
                "{source} uses {metric}, which no metrics.rs defines: {expr}"
            );
            seen += 1;
        }
    }
    assert!(seen > 20, "only {seen} metric references found");
}

#[test]
fn queries_group_and_filter_only_by_labels_the_metrics_have() {
    let d = defined();
    // Labels Prometheus adds from the scrape target, and the histogram bucket label.
    let target = ["job", "instance", "pod", "namespace", "service", "le"];
    let grouping = Regex::new(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)").unwrap();
    let matcher = Regex::new(r"\{([^}]*)\}").unwrap();
    let label = Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    for (source, expr) in all_queries() {
        let mut labels = vec![];
        for c in grouping.captures_iter(&expr) {
            labels.extend(
                c[1].split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        for c in matcher.captures_iter(&expr) {
            labels.extend(label.captures_iter(&c[1]).map(|l| l[1].to_string()));
        }
        for l in labels {
            assert!(
                target.contains(&l.as_str()) || d.identifiers.contains(&l),
                "{source} uses label {l:?}, which no metric has: {expr}"
            );
        }
    }
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_entry_that_exists() {
    let ops = read("docs/operations.md");
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 8, "only {} alerts", rules.len());
    let mut names = BTreeSet::new();
    for r in rules {
        let name = r["alert"].as_str().unwrap();
        assert!(names.insert(name.to_string()), "{name} defined twice");
        assert!(
            ["critical", "warning", "info"].contains(&r["labels"]["severity"].as_str().unwrap()),
            "{name}: severity"
        );
        assert!(
            r["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}: summary"
        );
        let url = r["annotations"]["runbook_url"].as_str().unwrap();
        let (page, fragment) = url.split_once('#').unwrap();
        assert!(page.ends_with("docs/operations.md"), "{name}: {url}");
        assert!(
            anchors.contains(fragment),
            "{name}: docs/operations.md has no heading for #{fragment}"
        );
        assert!(
            ops.contains(&format!("`{name}`")),
            "{name} is not described in docs/operations.md"
        );
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/gpufed-dashboard.json")).unwrap();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        assert!(
            p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty query"
            );
        }
    }
    // What the operations guide promises the dashboard shows.
    let exprs = dashboard_queries().join("\n");
    for metric in [
        "gpufed_pending_jobs",
        "gpufed_placement_latency_seconds_bucket",
        "gpufed_cluster_free_gpus",
        "gpufed_failovers_total",
        "gpufed_reconcile_errors_total",
        "gpufed_settlements_total",
        "gpufed_leader",
        "gpufed_members",
    ] {
        assert!(
            exprs.contains(metric),
            "the dashboard does not show {metric}"
        );
    }
}

#[test]
fn every_metric_the_code_defines_is_documented_in_the_operations_guide() {
    let ops = read("docs/operations.md");
    for metric in defined().metrics {
        assert!(
            ops.contains(&format!("`{metric}`")),
            "docs/operations.md does not document {metric}"
        );
    }
}
