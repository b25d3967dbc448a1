//! Tests of the metrics: render, parse the text format back, check names, labels and values.

use std::collections::BTreeMap;

use super::*;
use crate::reading::GpuReading;
use crate::reading::tests::h100;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser for the Prometheus text format as `TextEncoder` writes it (label values here
/// hold no escaped quotes).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().unwrap(),
        });
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, uuid: &str) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get("UUID").map(String::as_str) == Some(uuid))
}

fn node(gpus: Vec<GpuReading>) -> NodeReading {
    NodeReading {
        driver_version: None,
        cuda_version: None,
        gpus,
    }
}

#[test]
fn gpu_figures_render_under_dcgm_names_with_dcgm_labels() {
    let m = Metrics::new().unwrap();
    let gpu = GpuReading {
        utilization_percent: 73,
        memory_used_mib: 1000,
        temperature_celsius: 61,
        power_milliwatts: 412_500,
        ecc_corrected: 5,
        ecc_uncorrected: 1,
        ..h100(3)
    };
    let uuid = gpu.uuid.clone();
    m.observe_node("node-a", &node(vec![gpu]));
    let samples = parse(&m.render().unwrap());
    let expect = [
        ("DCGM_FI_DEV_GPU_UTIL", 73.0),
        ("DCGM_FI_DEV_FB_USED", 1000.0),
        ("DCGM_FI_DEV_FB_FREE", 80559.0),
        ("DCGM_FI_DEV_FB_TOTAL", 81559.0),
        ("DCGM_FI_DEV_GPU_TEMP", 61.0),
        ("DCGM_FI_DEV_POWER_USAGE", 412.5),
        ("DCGM_FI_DEV_POWER_MGMT_LIMIT", 700.0),
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 5.0),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 1.0),
        ("gpufed_probe_gpu_healthy", 0.0),
    ];
    for (name, value) in expect {
        let s = find(&samples, name, &uuid).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(s.value, value, "{name}");
        assert_eq!(s.labels["gpu"], "3");
        assert_eq!(s.labels["device"], "nvidia3");
        assert_eq!(s.labels["modelName"], "NVIDIA H100 80GB HBM3");
        assert_eq!(s.labels["Hostname"], "node-a");
    }
    let nodes = samples
        .iter()
        .find(|s| s.name == "gpufed_probe_nodes")
        .unwrap();
    assert_eq!(nodes.value, 1.0);
}

#[test]
fn gpus_that_disappear_lose_their_series() {
    let m = Metrics::new().unwrap();
    let (a, b) = (h100(0), h100(1));
    let (ua, ub) = (a.uuid.clone(), b.uuid.clone());
    m.observe_node("n", &node(vec![a.clone(), b]));
    m.observe_node("n", &node(vec![a]));
    let samples = parse(&m.render().unwrap());
    assert!(find(&samples, "DCGM_FI_DEV_GPU_UTIL", &ua).is_some());
    assert!(find(&samples, "DCGM_FI_DEV_GPU_UTIL", &ub).is_none());
    assert!(find(&samples, "gpufed_probe_gpu_healthy", &ub).is_none());
}

#[test]
fn forgotten_nodes_lose_every_series_and_other_nodes_keep_theirs() {
    let m = Metrics::new().unwrap();
    let other = GpuReading {
        uuid: "GPU-other".into(),
        ..h100(0)
    };
    m.observe_node("gone", &node(vec![h100(0)]));
    m.observe_node("stays", &node(vec![other]));
    m.forget_node("gone");
    let samples = parse(&m.render().unwrap());
    let hosts: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "DCGM_FI_DEV_GPU_TEMP")
        .map(|s| s.labels["Hostname"].as_str())
        .collect();
    assert_eq!(hosts, vec!["stays"]);
    let nodes = samples
        .iter()
        .find(|s| s.name == "gpufed_probe_nodes")
        .unwrap();
    assert_eq!(nodes.value, 1.0);
}

#[test]
fn reads_writes_and_errors_are_counted_by_result_and_kind() {
    let m = Metrics::new().unwrap();
    m.count_read(true);
    m.count_read(true);
    m.count_read(false);
    m.count_write(false);
    m.count_error(&ProbeError::Config("x".into()));
    let samples = parse(&m.render().unwrap());
    let value = |name: &str, key: &str, val: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.get(key).map(String::as_str) == Some(val))
            .map(|s| s.value)
    };
    assert_eq!(value("gpufed_probe_reads_total", "result", "ok"), Some(2.0));
    assert_eq!(
        value("gpufed_probe_reads_total", "result", "error"),
        Some(1.0)
    );
    assert_eq!(
        value("gpufed_probe_writes_total", "result", "error"),
        Some(1.0)
    );
    assert_eq!(value("gpufed_probe_writes_total", "result", "ok"), None);
    assert_eq!(
        value("gpufed_probe_errors_total", "kind", "config"),
        Some(1.0)
    );
}

#[test]
fn every_metric_has_help_and_type_lines() {
    let m = Metrics::new().unwrap();
    m.observe_node("n", &node(vec![h100(0)]));
    let text = m.render().unwrap();
    for name in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_POWER_USAGE",
        "gpufed_probe_gpu_healthy",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
    }
}
