//! How gpufed is packaged, checked without a cluster: both Helm charts lint clean with the real
//! helm and render what the design promises (restricted jobs namespace, probe DaemonSet or sim
//! Deployment, downward-API identities, RBAC without wildcards or Secrets for members), every value
//! is documented, and the Dockerfiles are multi-stage builds of a workspace binary into a non-root
//! runtime (no Docker engine here to build them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use gpufed_e2e::Tools;
use serde::Deserialize;
use serde_json::Value;

fn helm_template(tools: &Tools, chart: &str, sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(tools.bin("helm").unwrap());
    cmd.args(["template", "t"])
        .arg(tools.root().join("charts").join(chart))
        .args(["--namespace", "gpufed-system", "--kube-version", "1.33.0"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn member(tools: &Tools, extra: &[&str]) -> Vec<Value> {
    let mut sets = vec![
        "cluster=alpha",
        "hub.kubeconfigSecret=gpufed-hub-kubeconfig",
    ];
    sets.extend_from_slice(extra);
    helm_template(tools, "gpufed-member", &sets)
}

fn hub(tools: &Tools, extra: &[&str]) -> Vec<Value> {
    let mut sets = vec!["memberApiServer=https://hub.example.com:6443"];
    sets.extend_from_slice(extra);
    helm_template(tools, "gpufed-hub", &sets)
}

fn env_field_ref<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["valueFrom"]["fieldRef"]["fieldPath"]
        .as_str()
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn both_charts_lint_clean_and_render_every_variant() {
    let tools = Tools::locate().unwrap();
    let out = Command::new(tools.root().join("charts/lint.sh"))
        .env("HELM", tools.bin("helm").unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_jobs_namespace_enforces_restricted_pod_security() {
    let docs = member(&Tools::locate().unwrap(), &[]);
    let ns = find(&docs, "Namespace", "gpufed-jobs").unwrap();
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
}

#[test]
fn the_probe_is_a_daemonset_on_gpu_nodes_with_nvml_and_one_pod_for_all_nodes_in_sim() {
    let tools = Tools::locate().unwrap();
    let nvml = member(&tools, &[]);
    let ds = find(&nvml, "DaemonSet", "gpu-probe").unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"]["nvidia.com/gpu.present"], "true");
    let c = &spec["containers"][0];
    assert_eq!(env_field_ref(c, "NODE_NAME"), Some("spec.nodeName"));
    assert!(args(c).contains(&"--backend=nvml".to_string()));
    assert!(find(&nvml, "Deployment", "gpu-probe").is_none());

    let sim = member(&tools, &["probe.backend=sim"]);
    assert!(find(&sim, "DaemonSet", "gpu-probe").is_none());
    let d = find(&sim, "Deployment", "gpu-probe").unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    let a = args(&d["spec"]["template"]["spec"]["containers"][0]);
    assert!(
        a.contains(&"--backend=sim".to_string()) && a.contains(&"--all-nodes".to_string()),
        "{a:?}"
    );
}

#[test]
fn the_agent_mounts_the_hub_kubeconfig_from_the_owners_secret() {
    let docs = member(&Tools::locate().unwrap(), &[]);
    let d = find(&docs, "Deployment", "gpufed-agent").unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "gpufed-agent");
    let volume = &spec["volumes"][0]["secret"];
    assert_eq!(volume["secretName"], "gpufed-hub-kubeconfig");
    assert_eq!(volume["items"][0]["key"], "kubeconfig");
    let c = &spec["containers"][0];
    let a = args(c);
    for want in [
        "agent",
        "--cluster=alpha",
        "--hub-kubeconfig=/etc/gpufed/hub/kubeconfig",
        "--jobs-namespace=gpufed-jobs",
    ] {
        assert!(a.contains(&want.to_string()), "{want} not in {a:?}");
    }
    assert_eq!(env_field_ref(c, "POD_NAME"), Some("metadata.name"));
}

#[test]
fn the_owners_prices_become_the_agents_offer_flags_and_none_by_default() {
    let tools = Tools::locate().unwrap();
    let offer_args = |docs: &[Value]| -> Vec<String> {
        let d = find(docs, "Deployment", "gpufed-agent").unwrap();
        args(&d["spec"]["template"]["spec"]["containers"][0])
            .into_iter()
            .filter(|a| a.starts_with("--offer"))
            .collect()
    };
    assert!(offer_args(&member(&tools, &[])).is_empty());
    let docs = member(
        &tools,
        &[
            "offer.prices[0].model=H100",
            "offer.prices[0].pricePerGpuHour=2.40",
            "offer.prices[1].model=L4",
            "offer.prices[1].pricePerGpuHour=0.35",
            "offer.prices[1].gpus=4",
            "offer.prices[1].maxDuration=24h",
        ],
    );
    assert_eq!(
        offer_args(&docs),
        [
            "--offer=H100=2.40",
            "--offer=L4=0.35,gpus=4,maxDuration=24h"
        ]
    );
    // The agent parses what the chart renders.
    let limited =
        gpufed_operator::agent::offer::parse_offer("L4=0.35,gpus=4,maxDuration=24h").unwrap();
    assert_eq!(limited.gpus, Some(4));

    // With the wallet's key Secret the agent signs: the key is mounted read-only into the agent
    // alone, and the flags name the file and the validity.
    let docs = member(
        &tools,
        &[
            "offer.prices[0].model=H100",
            "offer.prices[0].pricePerGpuHour=2.40",
            "offer.signingKeySecret.name=gpufed-wallet",
            "offer.validFor=6h",
        ],
    );
    assert_eq!(
        offer_args(&docs),
        [
            "--offer=H100=2.40",
            "--offer-signing-key-file=/etc/gpufed/offer-key/key",
            "--offer-valid-for=6h"
        ]
    );
    let d = find(&docs, "Deployment", "gpufed-agent").unwrap();
    let spec = &d["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "offer-key")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "gpufed-wallet");
    assert_eq!(volume["secret"]["items"][0]["key"], "privateKey");
    assert_eq!(volume["secret"]["defaultMode"], 0o400);
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "offer-key")
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    let probe = find(&docs, "DaemonSet", "gpu-probe")
        .or_else(|| find(&docs, "Deployment", "gpu-probe"))
        .unwrap();
    assert!(!probe.to_string().contains("offer-key"));
    // A key without prices to sign is refused by name.
    let mut cmd = Command::new(tools.bin("helm").unwrap());
    cmd.args(["template", "t"])
        .arg(tools.root().join("charts/gpufed-member"))
        .args(["--namespace", "gpufed-system", "--kube-version", "1.33.0"])
        .args(["--set", "cluster=alpha", "--set", "hub.kubeconfigSecret=k"])
        .args(["--set", "offer.signingKeySecret.name=gpufed-wallet"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "offer.signingKeySecret signs the Offer of offer.prices: set offer.prices too"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_hub_runs_two_leader_elected_replicas_with_its_pod_name_as_identity() {
    let tools = Tools::locate().unwrap();
    let docs = hub(&tools, &[]);
    let d = find(&docs, "Deployment", "gpufed-hub").unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env_field_ref(c, "POD_NAME"), Some("metadata.name"));
    let a = args(c);
    assert!(a.contains(&"hub".to_string()));
    assert!(a.contains(&"--member-api-server=https://hub.example.com:6443".to_string()));
    assert!(find(&docs, "Service", "gpufed-hub-metrics").is_some());
    assert!(find(&docs, "ServiceMonitor", "gpufed-hub").is_none());
    let with_monitor = hub(&tools, &["serviceMonitor.enabled=true"]);
    assert!(find(&with_monitor, "ServiceMonitor", "gpufed-hub").is_some());
}

#[test]
fn every_pod_the_charts_run_is_non_root_without_privilege_escalation() {
    let tools = Tools::locate().unwrap();
    let mut docs = hub(&tools, &[]);
    docs.extend(member(&tools, &[]));
    docs.extend(member(&tools, &["probe.backend=sim"]));
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
    {
        let spec = &d["spec"]["template"]["spec"];
        let name = &d["metadata"]["name"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for c in spec["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
            assert!(
                sc["privileged"].is_null() || sc["privileged"] == false,
                "{name}"
            );
        }
    }
}

fn rules(doc: &Value) -> Vec<&Value> {
    doc["rules"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn chart_rbac_has_no_wildcards_and_members_get_no_secrets() {
    let tools = Tools::locate().unwrap();
    let mut docs = hub(&tools, &[]);
    docs.extend(member(&tools, &[]));
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for r in rules(d) {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !strings(&r[field]).contains(&"*"),
                    "{} has a wildcard: {r}",
                    d["metadata"]["name"]
                );
            }
        }
    }
    // The hub grants members their rights by holding them, never by `escalate`; its one `bind` is
    // on the ClusterRole it binds itself to in member namespaces (ADR 0017). Its exact rights are
    // checked on a real apiserver in hub_rbac.rs.
    let hub_role = find(&docs, "ClusterRole", "gpufed-hub").unwrap();
    for r in rules(hub_role) {
        let verbs = strings(&r["verbs"]);
        assert!(
            !verbs.contains(&"escalate") && !verbs.contains(&"impersonate"),
            "{r}"
        );
        if verbs.contains(&"bind") {
            assert_eq!(verbs, ["bind"], "{r}");
            assert_eq!(strings(&r["resources"]), ["clusterroles"], "{r}");
            assert_eq!(
                strings(&r["resourceNames"]),
                ["gpufed-hub-member-namespace"],
                "{r}"
            );
        }
    }
    for name in ["gpufed-agent", "gpu-probe"] {
        for kind in ["ClusterRole", "Role"] {
            let Some(role) = find(&docs, kind, name) else {
                continue;
            };
            for r in rules(role) {
                let res = strings(&r["resources"]);
                // The agent creates the local Secrets of an attempt (opened from its sealed blob,
                // ADR 0020) in the jobs namespace; it never reads one.
                assert!(
                    !res.contains(&"secrets")
                        || (kind == "Role"
                            && name == "gpufed-agent"
                            && res == ["secrets"]
                            && strings(&r["verbs"]) == ["create"]),
                    "{kind} {name} reads Secrets: {r}"
                );
                // No exec, attach, port-forward or proxy into pods. The one subresource: the agent
                // reads placed jobs' logs (a failed container's last lines go into its status),
                // with `get` only, in the jobs namespace only.
                for sub in res.iter().filter(|x| x.starts_with("pods/")) {
                    assert!(
                        *sub == "pods/log"
                            && kind == "Role"
                            && name == "gpufed-agent"
                            && strings(&r["verbs"]) == ["get"],
                        "{kind} {name}: {r}"
                    );
                }
            }
        }
    }
    // The agent writes only in the jobs namespace; cluster-wide it reads.
    let agent_cluster = find(&docs, "ClusterRole", "gpufed-agent").unwrap();
    for r in rules(agent_cluster) {
        for v in strings(&r["verbs"]) {
            assert!(
                ["get", "list", "watch"].contains(&v),
                "cluster-wide {v}: {r}"
            );
        }
    }
    let agent_ns = find(&docs, "Role", "gpufed-agent").unwrap();
    assert_eq!(agent_ns["metadata"]["namespace"], "gpufed-jobs");
}

/// Top-level keys of a values.yaml that have no comment line right above them.
fn undocumented(values: &str) -> Vec<String> {
    let lines: Vec<&str> = values.lines().collect();
    let mut missing = vec![];
    for (i, line) in lines.iter().enumerate() {
        let top_level = !line.starts_with(' ') && !line.starts_with('#') && line.contains(':');
        if top_level && !(i > 0 && lines[i - 1].trim_start().starts_with('#')) {
            missing.push(line.to_string());
        }
    }
    missing
}

#[test]
fn every_chart_value_is_documented() {
    let root = Tools::locate().unwrap().root().to_path_buf();
    for chart in ["gpufed-hub", "gpufed-member"] {
        let values =
            std::fs::read_to_string(root.join("charts").join(chart).join("values.yaml")).unwrap();
        assert_eq!(undocumented(&values), Vec::<String>::new(), "{chart}");
        assert!(
            root.join("charts").join(chart).join("README.md").exists(),
            "{chart} has no README"
        );
    }
}

/// The stages of a Dockerfile: (base image, alias, instructions).
fn stages(dockerfile: &str) -> Vec<(String, Option<String>, Vec<String>)> {
    let mut out: Vec<(String, Option<String>, Vec<String>)> = vec![];
    let mut logical = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_suffix('\\') {
            logical.push_str(rest);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let instr = std::mem::take(&mut logical);
        let mut words = instr.split_whitespace();
        if words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            let words: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let alias = (words.len() >= 3 && words[1].eq_ignore_ascii_case("AS"))
                .then(|| words[2].to_string());
            out.push((words[0].to_string(), alias, vec![]));
        } else if let Some(stage) = out.last_mut() {
            stage.2.push(instr);
        }
    }
    out
}

fn check_dockerfile(root: &Path, file: &str, package_manifest: &str, binary: &str) {
    let text = std::fs::read_to_string(root.join("deploy/docker").join(file)).unwrap();
    let stages = stages(&text);
    assert!(stages.len() >= 2, "{file}: not multi-stage");
    let (builder, builder_alias, build) = &stages[0];
    assert!(
        builder.contains("rust:"),
        "{file}: first stage builds with {builder}"
    );
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
    let version = builder
        .split(':')
        .nth(1)
        .unwrap()
        .split('-')
        .next()
        .unwrap();
    assert!(
        toolchain.contains(&format!("\"{version}\"")),
        "{file}: builder {version} is not rust-toolchain.toml's"
    );
    assert!(
        build.iter().any(|i| i.contains("cargo build")
            && i.contains("--release")
            && i.contains("--locked")
            && i.contains(&format!("--bin {binary}"))),
        "{file}: {build:?}"
    );
    let (runtime, _, run) = stages.last().unwrap();
    assert!(
        !runtime.contains("rust"),
        "{file}: runtime is the builder image"
    );
    assert!(
        runtime.contains("distroless") || runtime.contains("slim"),
        "{file}: runtime {runtime}"
    );
    let user = run
        .iter()
        .rev()
        .find(|i| i.starts_with("USER"))
        .unwrap_or_else(|| panic!("{file}: no USER"));
    let who = user
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(who != "root" && who != "0", "{file}: runs as {who}");
    let copies: Vec<&String> = run
        .iter()
        .filter(|i| i.starts_with("COPY") || i.starts_with("ADD"))
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "{file}: the runtime gets only the binary: {copies:?}"
    );
    assert!(
        copies[0].contains(&format!("--from={}", builder_alias.clone().unwrap()))
            && copies[0].contains(binary),
        "{file}: {}",
        copies[0]
    );
    for (_, _, instrs) in &stages {
        for i in instrs {
            assert!(
                !(i.starts_with("ADD") && (i.contains("http://") || i.contains("https://"))),
                "{file}: remote ADD: {i}"
            );
        }
    }
    let entry = run.iter().find(|i| i.starts_with("ENTRYPOINT")).unwrap();
    assert!(entry.contains(binary), "{file}: {entry}");
    // The binary is one the workspace builds.
    let manifest = std::fs::read_to_string(root.join(package_manifest)).unwrap();
    assert!(
        manifest.contains(&format!("name = \"{binary}\"")),
        "{package_manifest} builds no {binary}"
    );
}

#[test]
fn the_dockerfiles_build_one_binary_into_a_non_root_runtime() {
    let root = Tools::locate().unwrap().root().to_path_buf();
    check_dockerfile(
        &root,
        "operator.Dockerfile",
        "operator/Cargo.toml",
        "gpufed-operator",
    );
    check_dockerfile(
        &root,
        "gpu-probe.Dockerfile",
        "gpu-probe/Cargo.toml",
        "gpu-probe",
    );
    check_dockerfile(
        &root,
        "gpufed-data.Dockerfile",
        "data/Cargo.toml",
        "gpufed-data",
    );
}

#[test]
fn the_dockerfile_check_catches_a_root_runtime_and_remote_adds() {
    let bad = "FROM rust:1.95.0 AS b\nRUN cargo build\nFROM debian:bookworm-slim\nADD https://x/y /y\nUSER root\n";
    let s = stages(bad);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].1.as_deref(), Some("b"));
    assert!(s[1].2.iter().any(|i| i == "USER root"));
    assert!(s[1].2.iter().any(|i| i.starts_with("ADD https://")));
    assert_eq!(undocumented("# ok\na: 1\nb: 2\n"), ["b: 2"]);
}
