//! `kubectl gpufed` (the built `kubectl-gpufed` binary) against a real hub: a harness apiserver
//! with the CRDs and the hub running as a process, members stood in for by fake agents (heartbeat
//! Leases and inventories). Every command is run as a user would, with `--kubeconfig`, and its
//! output checked: `top`, `jobs`, `members`, `explain` of a pending and of a placed job, `join`,
//! `payments` in a pool without chain, `-o json|yaml`, and the errors a user meets (hub
//! unreachable, CRDs missing, job not found, RBAC, a member that has not joined).
//!
//! Build the binaries first: `cargo build -p kubectl-gpufed -p gpufed-operator --bins`.
//! `GPUFED_E2E_SHOW=1` prints every command's output (the samples in docs/kubectl.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{ComputeJob, GpuPool, JobPhase, MemberCluster, PlacementPhase, PlacementStatus};
use gpufed_e2e::chain::{Chain, accounts};
use gpufed_e2e::hubctl::{
    apply, create_member, create_pool, keep_heartbeating, node, placements, report_inventory,
    report_placement, start_hub, wait_job,
};
use gpufed_e2e::process::free_port;
use gpufed_e2e::{Cluster, ClusterSpec, Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

#[path = "support/plugin.rs"]
mod plugin_cli;
use plugin_cli::Plugin;

/// The most a test here may take, start-up included: past it the test fails and its
/// components are killed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const T: Duration = Duration::from_secs(60);

async fn hub_cluster(name: &str) -> (Tools, Cluster) {
    let tools = Tools::locate().unwrap();
    let c = gpufed_e2e::hubctl::hub_cluster(&tools, name, &[])
        .await
        .unwrap();
    (tools, c)
}

async fn submit(client: &Client, name: &str, mut spec: Value) {
    spec["template"] = json!({"containers": [{"name": "main", "image": "busybox:1.36"}]});
    let manifest = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                          "metadata": {"name": name, "namespace": "team-a"}, "spec": spec});
    apply::<ComputeJob>(client, &manifest).await.unwrap();
}

/// The line of `out` that starts with `first` (a table row by its first cell).
fn row<'a>(out: &'a str, first: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{out}"))
}

fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Starts the hub and three members (alpha: 16 H100 at 2.40, beta: 8 A100 40 GiB at 1.20, gamma:
/// 8 RTX4090 at 0.35; one node each), all Schedulable, plus one in a pool that does not exist.
async fn federation(tools: &Tools, hub: &mut Cluster) -> Vec<tokio::task::JoinHandle<()>> {
    start_hub(tools, hub, "hub-0", &[]).unwrap();
    let c = hub.client();
    create_pool(&c, "default", "CheapestFit", "20s")
        .await
        .unwrap();
    for (name, region, model, price) in [
        ("alpha", "eu-west", "H100", "2.40"),
        ("beta", "us-east", "A100", "1.20"),
        ("gamma", "ap-south", "RTX4090", "0.35"),
    ] {
        create_member(&c, name, "default", region, &[(model, price)])
            .await
            .unwrap();
    }
    create_member(&c, "delta", "nope", "eu-west", &[("L4", "0.50")])
        .await
        .unwrap();
    let beats = ["alpha", "beta", "gamma"]
        .iter()
        .map(|m| keep_heartbeating(c.clone(), m))
        .collect();
    let inventories = [
        ("alpha", node("a-0", "H100", 81559, 16, 16)),
        ("beta", node("b-0", "A100", 40960, 8, 8)),
        ("gamma", node("g-0", "RTX4090", 24564, 8, 8)),
    ];
    for (name, node) in inventories {
        report_inventory(&c, name, vec![node]).await.unwrap();
    }
    let api: Api<MemberCluster> = Api::all(c.clone());
    for name in ["alpha", "beta", "gamma"] {
        wait_until(T, &format!("{name} Schedulable"), || async {
            let s = api.get(name).await.ok()?.status?;
            gpufed_crds::conditions::is_true(&s.conditions, "Schedulable").then_some(())
        })
        .await
        .unwrap();
    }
    beats
}

#[test]
fn the_plugin_shows_capacity_jobs_members_explanations_joins_and_payments_of_a_real_hub() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("plugin").await;
        let _beats = federation(&tools, &mut hub).await;
        let c = hub.client();
        let plugin = Plugin::new(&tools, hub.kubeconfig());

        submit(
            &c,
            "train",
            json!({"gpusPerReplica": 8, "gpu": {"models": ["H100"]}}),
        )
        .await;
        submit(
            &c,
            "big-a100",
            json!({"gpusPerReplica": 1, "gpu": {"models": ["A100"], "minMemoryGiB": 80}}),
        )
        .await;
        wait_job(&c, "team-a", "train", T, "train placed", |j| {
            j.status.as_ref().is_some_and(|s| s.placement.is_some())
        })
        .await
        .unwrap();
        let p = wait_until(T, "train's placement", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
        let running = PlacementStatus {
            phase: Some(PlacementPhase::Running),
            active_replicas: 1,
            start_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            gpu_seconds: 40,
            ..Default::default()
        };
        report_placement(&c, &p, running).await.unwrap();
        wait_job(&c, "team-a", "train", T, "train running with usage", |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Running
                    && s.usage.as_ref().is_some_and(|u| u.gpu_seconds == 40)
            })
        })
        .await
        .unwrap();
        wait_job(&c, "team-a", "big-a100", T, "big-a100 explained", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.explanation.as_deref())
                .is_some_and(|e| e.starts_with("0/3 clusters fit"))
        })
        .await
        .unwrap();
        let pools: Api<GpuPool> = Api::all(c.clone());
        wait_until(T, "the pool's capacity roll-up", || async {
            let p = pools.get("default").await.ok()?;
            (p.status?.capacity.len() == 3).then_some(())
        })
        .await
        .unwrap();

        // top: per model from the pool's roll-up, per cluster from the inventories.
        let top = plugin.ok(&["top"]).await;
        assert!(
            top.starts_with(
                "POOL     MODEL    CLUSTERS  GPUS  FREE  MIN-PRICE  MAX-PRICE  PRICE-INDEX\n"
            ),
            "{top}"
        );
        let h100 = top
            .lines()
            .find(|l| cells(l).get(1) == Some(&"H100"))
            .unwrap();
        // FREE is the hub's roll-up (whether it counts GPUs in flight is the hub's business).
        assert_eq!(cells(h100)[..4], ["default", "H100", "1", "16"], "{top}");
        assert_eq!(cells(h100)[5..], ["2.40", "2.40", "2.40"], "{top}");
        let alpha = row(&top, "alpha");
        assert_eq!(
            cells(alpha),
            [
                "alpha",
                "default",
                "eu-west",
                "True",
                "H100x16",
                "16",
                "16",
                "H100=2.40"
            ],
            "{top}"
        );

        // jobs: like kubectl get, with what matters first.
        let jobs = plugin.ok(&["jobs", "-n", "team-a"]).await;
        assert!(
            jobs.starts_with(
                "NAME      PHASE    CLUSTER  GPUS  MODEL   PRICE   ATTEMPT  GPU-SECONDS  COST    AGE\n"
            ),
            "{jobs}"
        );
        assert_eq!(
            cells(row(&jobs, "train"))[..8],
            ["train", "Running", "alpha", "8", "H100", "2.40", "1", "40"],
            "{jobs}"
        );
        assert_eq!(
            cells(row(&jobs, "big-a100"))[..4],
            ["big-a100", "Pending", "<none>", "1"],
            "{jobs}"
        );
        let wide = plugin.ok(&["jobs", "-A", "-o", "wide"]).await;
        assert!(row(&wide, "team-a").contains("0/"), "{wide}");

        // members: health, capacity, heartbeat age.
        let members = plugin.ok(&["members"]).await;
        let alpha = cells(row(&members, "alpha"));
        assert_eq!(
            alpha[..9],
            [
                "alpha", "default", "eu-west", "True", "True", "True", "H100x16", "16", "16"
            ],
            "{members}"
        );
        assert!(alpha[9].ends_with('s'), "heartbeat seconds ago: {members}");
        assert_eq!(alpha[10], "false", "{members}");
        assert_eq!(
            cells(row(&members, "delta"))[3],
            "False",
            "never heartbeated: {members}"
        );
        let wide = plugin.ok(&["members", "-o", "wide"]).await;
        assert_eq!(cells(row(&wide, "alpha"))[12], "True", "Joined: {wide}");
        assert_eq!(
            cells(row(&wide, "delta"))[12],
            "False",
            "not Joined: {wide}"
        );
        let wide = plugin.ok(&["top", "-o", "wide"]).await;
        assert!(wide.contains("  SCHEDULABLE  UNHEALTHY  UTIL\n"), "{wide}");

        // explain: a pending job lists each cluster's reason on its own line.
        let pending = plugin.ok(&["explain", "big-a100", "-n", "team-a"]).await;
        assert!(
            pending.contains("\nPhase:        Pending (NoFit)\n"),
            "{pending}"
        );
        for reason in [
            "\n  alpha: no A100 (has H100)\n",
            "\n  beta: A100 has 40 GiB per GPU, needs 80 GiB\n",
            "\n  gamma: no A100 (has RTX4090)\n",
        ] {
            assert!(pending.contains(reason), "{reason:?} in:\n{pending}");
        }
        assert!(pending.contains("\nAttempts:  <none>\n"), "{pending}");
        assert!(
            pending
                .lines()
                .any(|l| cells(l).starts_with(&["Warning", "Pending"])),
            "the hub's Pending event: {pending}"
        );

        // explain: a placed job says where and why, and lists its attempts and events.
        let placed = plugin.ok(&["explain", "train", "-n", "team-a"]).await;
        assert!(
            placed.contains(
                "\nCluster:      alpha (H100 at 2.40/GPU-hour), attempt 1 of at most 3\n"
            ),
            "{placed}"
        );
        assert!(
            placed.contains(
                "\nExplanation:  placed on alpha: the only fitting cluster (H100 at 2.40/GPU-hour)\n"
            ),
            "{placed}"
        );
        assert!(
            placed.contains("\nUsage:        40 GPU-seconds\n"),
            "{placed}"
        );
        let attempt = placed.lines().find(|l| l.starts_with("  1  ")).unwrap();
        let attempt = cells(attempt);
        assert_eq!(
            (attempt[1], attempt[2], attempt[6]),
            ("alpha", "Running", "40"),
            "{placed}"
        );
        assert!(
            placed
                .lines()
                .any(|l| cells(l).starts_with(&["Normal", "Placed"])),
            "the hub's Placed event: {placed}"
        );

        // join: the helm line with the member chart's values, the kubeconfig in a private file only.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alpha-hub.kubeconfig");
        let file_arg = file.display().to_string();
        let join = plugin
            .ok(&["join", "alpha", "--kubeconfig-out", &file_arg])
            .await;
        assert!(join.contains("\n  helm install gpufed-member charts/gpufed-member --namespace gpufed-system --set cluster=alpha --set hub.kubeconfigSecret=gpufed-hub-kubeconfig\n"), "{join}");
        assert!(join.contains(&format!("\n  kubectl -n gpufed-system create secret generic gpufed-hub-kubeconfig --from-file=kubeconfig={file_arg}\n")), "{join}");
        let written = std::fs::read_to_string(&file).unwrap();
        let secret = Api::<Secret>::namespaced(c.clone(), "gpufed-member-alpha")
            .get("gpufed-member-alpha-kubeconfig")
            .await
            .unwrap();
        assert_eq!(
            written.as_bytes(),
            secret.data.unwrap()["kubeconfig"].0.as_slice()
        );
        let kubeconfig: Value = serde_norway::from_str(&written).unwrap();
        let token = kubeconfig["users"][0]["user"]["token"].as_str().unwrap();
        assert!(!token.is_empty());
        assert!(!join.contains(token), "the token is never printed");
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let no_file = plugin.ok(&["join", "alpha"]).await;
        assert!(
            no_file.contains("-o jsonpath='{.data.kubeconfig}' | base64 -d > alpha-hub.kubeconfig"),
            "{no_file}"
        );
        assert!(!no_file.contains(token), "the token is never printed");
        let not_joined = plugin.fails(&["join", "delta"]).await;
        assert_eq!(
            not_joined,
            "error: membercluster \"delta\" has not joined yet: GpuPool \"nope\" does not exist (PoolNotFound)"
        );

        // payments in a pool without chain.
        let payments = plugin.ok(&["payments", "train", "-n", "team-a"]).await;
        assert!(
            payments.contains(
                "which has no chain: it runs without escrow and nothing is paid on chain."
            ),
            "{payments}"
        );
        assert!(
            payments.contains("Usage: 40 GPU-seconds over 1 attempt."),
            "{payments}"
        );

        // -o json / yaml parse and carry the objects (or top's summary).
        let list: Value =
            serde_json::from_str(&plugin.ok(&["jobs", "-n", "team-a", "-o", "json"]).await)
                .unwrap();
        assert_eq!(list["kind"], "List");
        let names: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"train") && names.contains(&"big-a100"));
        let summary: Value =
            serde_json::from_str(&plugin.ok(&["top", "-o", "json"]).await).unwrap();
        assert_eq!(summary["models"].as_array().unwrap().len(), 3);
        let explained: Value = serde_norway::from_str(
            &plugin
                .ok(&["explain", "train", "-n", "team-a", "-o", "yaml"])
                .await,
        )
        .unwrap();
        assert_eq!(explained["items"][0]["kind"], "ComputeJob");
        assert!(
            explained["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["reason"] == "Placed")
        );
        let members: Value =
            serde_norway::from_str(&plugin.ok(&["members", "-o", "yaml"]).await).unwrap();
        assert_eq!(members["items"].as_array().unwrap().len(), 4);

        // Errors: a missing job, and a user without RBAC.
        assert_eq!(
            plugin.fails(&["explain", "nope", "-n", "team-a"]).await,
            "error: computejob \"nope\" not found in namespace \"team-a\""
        );
        let alice = Plugin::new(&tools, &hub.user_kubeconfig("alice", &[]).unwrap());
        assert_eq!(
            alice.fails(&["jobs", "-n", "team-a"]).await,
            "error: forbidden: User \"alice\" cannot list computejobs.gpufed.io in namespace \"team-a\"; ask the hub's admin for that permission or use another --context"
        );
    });
}

#[test]
fn an_unreachable_hub_and_a_cluster_without_the_crds_are_one_line_errors_with_the_fix() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let bare = Cluster::start(&tools, &ClusterSpec::api_only("plugin-bare"))
            .await
            .unwrap();
        let plugin = Plugin::new(&tools, bare.kubeconfig());
        assert_eq!(
            plugin.fails(&["jobs", "-n", "team-a"]).await,
            "error: the gpufed.io API is not installed on this cluster (no computejobs.gpufed.io): install the gpufed-hub chart"
        );
        assert_eq!(
            plugin.fails(&["top"]).await,
            "error: the gpufed.io API is not installed on this cluster (no gpupools.gpufed.io): install the gpufed-hub chart"
        );
        assert_eq!(
            plugin.fails(&["explain", "train"]).await,
            "error: the gpufed.io API is not installed on this cluster (no computejobs.gpufed.io): install the gpufed-hub chart"
        );

        // The same credentials, pointed at a port nobody listens on.
        let port = free_port().unwrap();
        let mut doc: Value =
            serde_norway::from_str(&std::fs::read_to_string(bare.kubeconfig()).unwrap()).unwrap();
        for c in doc["clusters"].as_array_mut().unwrap() {
            c["cluster"]["server"] = json!(format!("https://127.0.0.1:{port}"));
        }
        let closed = bare.dir().unwrap().join("closed-port.kubeconfig");
        std::fs::write(&closed, serde_norway::to_string(&doc).unwrap()).unwrap();
        let unreachable = Plugin::new(&tools, &closed);
        assert_eq!(
            unreachable.fails(&["members"]).await,
            format!(
                "error: cannot reach the hub at https://127.0.0.1:{port}: connection refused; check --kubeconfig/--context"
            )
        );
        let e = unreachable.fails(&["members", "--context", "nope"]).await;
        assert!(
            e.starts_with("error: cannot load the kubeconfig: ")
                && e.ends_with("; check --kubeconfig/--context"),
            "{e}"
        );
    });
}

#[test]
fn payments_in_a_pool_with_a_chain_show_each_attempts_escrow_record_and_the_cost() {
    run_test(HARD_DEADLINE, || async {
        let (tools, mut hub) = hub_cluster("plugin-chain").await;
        hub.create_namespace("gpufed-system").await.unwrap();
        let chain = Chain::start(&tools, hub.dir().unwrap()).await.unwrap();
        let contracts = chain
            .deploy_all(&tools, 500, 10_000, 1000, 200)
            .await
            .unwrap();
        let key: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hub-chain-key", "namespace": "gpufed-system"},
            "stringData": {"privateKey": accounts::HUB.0}
        }))
        .unwrap();
        Api::<Secret>::namespaced(hub.client(), "gpufed-system")
            .create(&PostParams::default(), &key)
            .await
            .unwrap();
        let escrow = contracts.escrow.to_string().to_lowercase();
        let pool = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "market"},
            "spec": {
                "heartbeatTimeout": "20s", "minBond": "100",
                "chain": {"rpcUrl": chain.url, "chainId": 31337,
                          "token": contracts.token.to_string(), "escrow": escrow,
                          "bond": contracts.bond.to_string(),
                          "hubKeySecretRef": {"namespace": "gpufed-system", "name": "hub-chain-key", "key": "privateKey"}},
                "payers": [{"namespace": "team-a", "account": accounts::PAYER_A.1}]
            }
        });
        apply::<GpuPool>(&hub.client(), &pool).await.unwrap();
        start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let member = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": "alpha"},
                            "spec": {"pool": "market", "region": "eu-west", "wallet": accounts::ALPHA.1,
                                     "prices": [{"model": "H100", "pricePerGpuHour": "3.60"}]}});
        apply::<MemberCluster>(&c, &member).await.unwrap();
        let _beat = keep_heartbeating(c.clone(), "alpha");
        report_inventory(&c, "alpha", vec![node("alpha-0", "H100", 81559, 8, 8)])
            .await
            .unwrap();
        submit(
            &c,
            "train",
            json!({"pool": "market", "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                   "maxPricePerGpuHour": "3.60", "maxDuration": "1h"}),
        )
        .await;

        // The agent stand-in reports 1000 GPU-seconds; the hub believes at most what one GPU can have
        // run since the placement, and pays that at 3.60/h.
        let p = wait_until(T, "the placement after the lock", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let done = PlacementStatus {
            phase: Some(PlacementPhase::Succeeded),
            gpu_seconds: 1000,
            start_time: Some(now.clone()),
            finish_time: Some(now),
            ..Default::default()
        };
        report_placement(&c, &p, done).await.unwrap();
        let settled = wait_job(&c, "team-a", "train", T, "settled", |j| {
            j.status.as_ref().is_some_and(|s| s.cost.is_some())
        })
        .await
        .unwrap();
        let used = settled.status.as_ref().unwrap().attempts[0].gpu_seconds;
        let price: gpufed_crds::TokenAmount = "3.60".parse().unwrap();
        let paid = price.cost_of_gpu_seconds(used).unwrap();
        let refunded = price.checked_sub(paid).unwrap();

        let plugin = Plugin::new(&tools, hub.kubeconfig());
        let out = plugin.ok(&["payments", "train", "-n", "team-a"]).await;
        assert!(
            out.starts_with(&format!(
                "Job team-a/train pays through JobEscrow {escrow} on chain 31337 (pool \"market\").\n"
            )),
            "{out}"
        );
        let attempt = cells(row(&out, "1"));
        assert_eq!(attempt[1], "alpha", "{out}");
        assert!(
            attempt[2].starts_with("0x") && attempt[2].ends_with('…'),
            "{out}"
        );
        assert_eq!(
            attempt[3..7],
            [
                "Settled".to_string(),
                "3.60".to_string(),
                paid.to_string(),
                refunded.to_string()
            ],
            "{out}"
        );
        assert!(
            attempt[7].starts_with("0x") && attempt[8].starts_with("0x"),
            "{out}"
        );
        assert!(
            out.ends_with(&format!(
                "Usage: {used} GPU-seconds over 1 attempt.\nTotal cost: {paid} (paid to providers over settled attempts, pool fee included).\n"
            )),
            "{out}"
        );
        let wide = plugin
            .ok(&["payments", "train", "-n", "team-a", "-o", "wide"])
            .await;
        let job = Api::<ComputeJob>::namespaced(c.clone(), "team-a")
            .get("train")
            .await
            .unwrap();
        let settlement = job.status.unwrap().attempts[0].settlement.clone().unwrap();
        assert!(
            wide.contains(&settlement.job_id)
                && wide.contains(settlement.settle_tx.as_deref().unwrap()),
            "{wide}"
        );
        let summary: Value = serde_json::from_str(
            &plugin
                .ok(&["payments", "train", "-n", "team-a", "-o", "json"])
                .await,
        )
        .unwrap();
        assert_eq!(summary["payment"]["kind"], "chain");
        assert_eq!(summary["attempts"][0]["jobId"], settlement.job_id.as_str());
        assert_eq!(summary["totalCost"], paid.to_string());
    });
}
