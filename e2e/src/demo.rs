//! The `make demo` scenario: a local federation — a hub, three member clusters run by different
//! providers with different GPUs and prices, anvil with the contracts, bonds staked and payers
//! funded — joined with the real Helm charts and binaries, then the sample jobs from
//! `deploy/examples/`, narrated one screen per step with real `kubectl` and `kubectl gpufed` output.
//!
//! The same code runs in `e2e/tests/demo.rs` (short simulated run times, processes tied to the
//! test) so the demo cannot rot, and in `gpufed-demo up` (detached: it leaves the federation
//! running for the user and writes `.demo/state.json` for `gpufed-demo down`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use gpufed_crds::{ComputeJob, JobPhase, MemberCluster, SettlementState, TokenAmount};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde_json::{Value, json};

use crate::chain::{Chain, Contracts, accounts};
use crate::hubctl::apply;
use crate::joining::pool::{JOBS_NAMESPACE, SYSTEM_NAMESPACE};
use crate::joining::{HubOptions, MemberPlan, Pool};
use crate::{Error, NodeSpec, Tools, wait_until};
use gpufed_crds::naming::LABEL_JOB_UID;

/// Settings of one demo run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Where the demo keeps its files (anvil state, kubeconfigs for the user).
    pub dir: PathBuf,
    /// How long each simulated job runs (`GPUFED_SIM_DURATION`).
    pub sim_duration: Duration,
    /// How long to wait for each step before giving up.
    pub step_timeout: Duration,
}

/// What happened, for the test and the final screen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DemoReport {
    /// Job (`ns/name`) → cluster it ran on.
    pub placed: BTreeMap<String, String>,
    /// The job that could not fit and its explanation.
    pub pending: Option<(String, String)>,
    /// Job → GPU-seconds used.
    pub gpu_seconds: BTreeMap<String, u64>,
    /// Job → tokens paid (provider share plus fee).
    pub paid: BTreeMap<String, String>,
    /// Account → (label, before, after) in tokens.
    pub balances: Vec<(String, String, String, String)>,
    /// Hub kubeconfig for the user.
    pub hub_kubeconfig: PathBuf,
    /// Member kubeconfigs.
    pub member_kubeconfigs: BTreeMap<String, PathBuf>,
    /// anvil's RPC URL.
    pub rpc_url: String,
    /// The log of the job that ran in a real container.
    pub real_log: String,
}

/// A running demo federation.
pub struct Demo {
    /// Hub and members.
    pub pool: Pool,
    /// anvil.
    pub chain: Chain,
    /// Contract addresses.
    pub contracts: Contracts,
    /// What happened.
    pub report: DemoReport,
}

/// The jobs the demo submits: `(file in deploy/examples, namespace/name, expected cluster or None)`.
pub const JOBS: [(&str, &str, Option<&str>); 6] = [
    ("job-8-gpu.yaml", "team-a/finetune-llama", Some("alpha")),
    ("job-single-gpu.yaml", "team-a/notebook-eval", Some("gamma")),
    ("job-gang.yaml", "team-b/ddp-resnet", Some("beta")),
    (
        "job-price-capped.yaml",
        "team-a/batch-inference",
        Some("gamma"),
    ),
    ("job-too-cheap.yaml", "team-a/too-cheap", None),
    ("job-real-node.yaml", "team-b/hello-real", Some("gamma")),
];

/// The job of [`JOBS`] that runs in a real container (gamma's real node), and what it logs first.
pub const REAL_JOB: (&str, &str) = ("team-b/hello-real", "hello from a real container on ");

struct Screen<'a> {
    out: &'a mut (dyn Write + Send),
    step: usize,
    total: usize,
    t0: Instant,
}

impl Screen<'_> {
    fn title(&mut self, text: &str) {
        self.step += 1;
        let _ = writeln!(
            self.out,
            "\n━━━ {}/{}  {text}  [{:.0}s] {}",
            self.step,
            self.total,
            self.t0.elapsed().as_secs_f64(),
            "━".repeat(60usize.saturating_sub(text.len()))
        );
    }
    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

/// Runs `kubectl ARGS` (real kubectl, plugins from this workspace on PATH) against `kubeconfig`.
pub async fn kubectl(tools: &Tools, kubeconfig: &Path, args: &[&str]) -> Result<String, Error> {
    let kubectl = tools.bin("kubectl")?;
    let plugin_dir = tools
        .workspace_bin("kubectl-gpufed")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // kubectl passes no flags before a plugin's name, so the kubeconfig goes in the environment.
    let out = tokio::process::Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .output()
        .await
        .map_err(|e| Error::Other(format!("running kubectl: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(Error::Other(format!(
            "kubectl {}: {}{}",
            args.join(" "),
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(text)
}

async fn show(
    screen: &mut Screen<'_>,
    tools: &Tools,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<(), Error> {
    let text = kubectl(tools, kubeconfig, args).await?;
    screen.say(&format!(
        "$ kubectl {}\n{}",
        args.join(" "),
        text.trim_end()
    ));
    Ok(())
}

fn plans() -> Vec<MemberPlan> {
    let nodes = |name: &str, profile: &str, n: usize, gpus: u32, region: &str| -> Vec<NodeSpec> {
        (0..n)
            .map(|i| NodeSpec::new(&format!("{name}-gpu-{i}"), profile, gpus, region))
            .collect()
    };
    vec![
        MemberPlan::new(
            "alpha",
            nodes("alpha", "H100-SXM-80GB", 2, 8, "eu-west"),
            "H100",
            "2.40",
        )
        .region("eu-west")
        .wallet(accounts::ALPHA.1),
        MemberPlan::new(
            "beta",
            nodes("beta", "A100-SXM-40GB", 2, 8, "us-east"),
            "A100",
            "1.20",
        )
        .region("us-east")
        .wallet(accounts::BETA.1),
        MemberPlan::new(
            "gamma",
            nodes("gamma", "RTX4090-24GB", 4, 4, "ap-south"),
            "RTX4090",
            "0.35",
        )
        // One node of gamma is real (containerd, runc, kubelet): its pods really run.
        .real_node(NodeSpec::new("gamma-real-0", "L4-24GB", 2, "ap-south"))
        .price("L4", "0.50")
        .region("ap-south")
        .wallet(accounts::GAMMA.1),
    ]
}

/// The demo's pool `default`: CheapestFit, paying on `chain`, payers team-a and team-b.
pub fn pool_spec(chain: &Chain, c: &Contracts, heartbeat_timeout: &str) -> Value {
    json!({
        "strategy": "CheapestFit",
        "heartbeatTimeout": heartbeat_timeout,
        "minBond": "100",
        "chain": {
            "rpcUrl": chain.url, "chainId": 31337,
            "token": c.token.to_string(), "escrow": c.escrow.to_string(), "bond": c.bond.to_string(),
            "hubKeySecretRef": {"namespace": SYSTEM_NAMESPACE, "name": "gpufed-hub-chain-key", "key": "privateKey"}
        },
        "payers": [{"namespace": "team-a", "account": accounts::PAYER_A.1},
                   {"namespace": "team-b", "account": accounts::PAYER_B.1}],
        "priorityClasses": [{"name": "batch", "value": 0},
                            {"name": "high", "value": 100, "namespaces": ["team-a"]}]
    })
}

/// Joins `plans` to a hub whose pool `default` has `spec` (one that pays on a chain, e.g.
/// [`pool_spec`]), the hub's chain key ([`accounts::HUB`]) in the Secret the spec names.
pub async fn join_paying_pool(
    tools: &Tools,
    spec: Value,
    plans: &[MemberPlan],
) -> Result<Pool, Error> {
    join_paying_pool_with(tools, spec, plans, HubOptions::default()).await
}

/// [`join_paying_pool`] with the hub's extra chart values and flags.
pub async fn join_paying_pool_with(
    tools: &Tools,
    spec: Value,
    plans: &[MemberPlan],
    hub: HubOptions,
) -> Result<Pool, Error> {
    let key = accounts::HUB.0.to_string();
    Pool::join_with_hub(
        tools,
        spec,
        plans,
        |hub| async move {
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": "gpufed-hub-chain-key", "namespace": SYSTEM_NAMESPACE},
                "stringData": {"privateKey": key}
            }))
            .map_err(|e| Error::Other(e.to_string()))?;
            Api::<Secret>::namespaced(hub, SYSTEM_NAMESPACE)
                .create(&PostParams::default(), &secret)
                .await
                .map_err(Error::kube("creating the hub's chain key Secret"))?;
            Ok(())
        },
        hub,
    )
    .await
}

/// `a` rounded down to 6 decimals, for people.
fn rounded(a: TokenAmount) -> String {
    let micro = 10u128.pow(12);
    TokenAmount::from_atto(a.atto() / micro * micro).to_string()
}

/// A token amount in whole tokens, from the ERC-20's base units.
fn tokens_of(v: U256) -> TokenAmount {
    TokenAmount::from_atto(u128::try_from(v).unwrap_or(u128::MAX))
}

/// The accounts whose balances the demo shows: `(label, address, is a deposit)`.
const ACCOUNTS: [(&str, &str, bool); 6] = [
    ("alpha (provider wallet)", accounts::ALPHA.1, false),
    ("beta (provider wallet)", accounts::BETA.1, false),
    ("gamma (provider wallet)", accounts::GAMMA.1, false),
    ("pool treasury (fees)", accounts::TREASURY.1, false),
    ("team-a payer (escrow deposit)", accounts::PAYER_A.1, true),
    ("team-b payer (escrow deposit)", accounts::PAYER_B.1, true),
];

async fn balances(chain: &Chain, c: &Contracts) -> Result<Vec<TokenAmount>, Error> {
    let mut out = vec![];
    for (_, addr, deposit) in ACCOUNTS {
        let v = if deposit {
            chain.deposit_of(c, addr).await?
        } else {
            chain.balance_of(c, addr).await?
        };
        out.push(tokens_of(v));
    }
    Ok(out)
}

/// A job manifest from `deploy/examples`, with `GPUFED_SIM_DURATION` added to its first container so
/// the simulated pods run for a while on kwok nodes.
fn example_job(tools: &Tools, file: &str, sim: Duration) -> Result<Value, Error> {
    let path = tools.root().join("deploy/examples").join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let mut doc: Value = serde_norway::from_str(&text)
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let container = &mut doc["spec"]["template"]["containers"][0];
    let env = container["env"].as_array().cloned().unwrap_or_default();
    let mut env: Vec<Value> = env
        .into_iter()
        .filter(|e| e["name"] != "GPUFED_SIM_DURATION")
        .collect();
    env.push(json!({"name": "GPUFED_SIM_DURATION", "value": format!("{}s", sim.as_secs())}));
    container["env"] = json!(env);
    Ok(doc)
}

async fn job(client: &Client, key: &str) -> Option<ComputeJob> {
    let (ns, name) = key.split_once('/')?;
    Api::<ComputeJob>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()?
}

/// What the last screen suggests, one command a line; each works as printed in a new shell (the
/// demo test runs them so).
pub fn try_lines(root: &str, hub: &Path, gamma: &Path) -> Vec<String> {
    let (real_ns, real) = REAL_JOB.0.split_once('/').unwrap_or(("", REAL_JOB.0));
    [
        format!("cd {root}"),
        format!(
            "export PATH=\"{root}/.tools/bin:$PATH\" KUBECONFIG={}",
            hub.display()
        ),
        "kubectl get gpufed".into(),
        "kubectl describe computejob too-cheap -n team-a".into(),
        "kubectl gpufed top".into(),
        "kubectl gpufed explain finetune-llama -n team-a".into(),
        // The member knows the job by UID only (ADR 0037); the hub says which.
        format!(
            "kubectl --kubeconfig {} logs -n {JOBS_NAMESPACE} -l {LABEL_JOB_UID}=$(kubectl get computejob {real} -n {real_ns} -o jsonpath='{{.metadata.uid}}')",
            gamma.display()
        ),
        "kubectl delete -f deploy/examples/job-single-gpu.yaml && kubectl apply -f deploy/examples/job-single-gpu.yaml".into(),
    ]
    .into_iter()
    .map(|l| format!("  {l}"))
    .collect()
}

/// Links the kubectl plugin next to kubectl in `.tools/bin`, so the PATH the demo suggests finds
/// `kubectl gpufed`.
fn link_plugin(tools: &Tools) -> Result<(), Error> {
    let plugin = tools.workspace_bin("kubectl-gpufed")?;
    let link = tools.root().join(".tools/bin/kubectl-gpufed");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&plugin, &link)
        .map_err(|e| Error::Other(format!("linking {}: {e}", link.display())))
}

/// Runs the whole scenario, narrating to `out`.
pub async fn run(
    tools: &Tools,
    cfg: &DemoConfig,
    out: &mut (dyn Write + Send),
) -> Result<Demo, Error> {
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| Error::Other(format!("{}: {e}", cfg.dir.display())))?;
    link_plugin(tools)?;
    let mut screen = Screen {
        out,
        step: 0,
        total: 9,
        t0: Instant::now(),
    };
    let t = cfg.step_timeout;

    screen.title("A local chain: token, escrow and bond contracts on anvil");
    let chain = Chain::start(tools, &cfg.dir).await?;
    let contracts = chain.deploy_all(tools, 250, 10_000, 500, 200).await?;
    screen.say(&format!(
        "anvil at {}\n  GpuFedToken  {}\n  JobEscrow    {}   (pool fee 2.5 %)\n  ProviderBond {}\n\
         Payers team-a and team-b deposited 500 tokens each and authorised the hub's account to lock from them;
  providers alpha, beta, gamma staked 200 (the pool requires 100).",
        chain.url, contracts.token, contracts.escrow, contracts.bond
    ));

    screen.title("A hub and three providers' clusters join with Helm");
    screen.say(
        "Starting 4 Kubernetes clusters (etcd, kube-apiserver, controller-manager, scheduler, kwok GPU nodes;\n\
         gamma also gets one real node: containerd, runc and a kubelet, where pods really run);\n\
         installing charts/gpufed-hub on the hub and charts/gpufed-member on each member; the hub, agents and\n\
         gpu-probe (simulated NVML) run as processes with the charts' own ServiceAccount credentials …",
    );
    let pool = join_paying_pool(tools, pool_spec(&chain, &contracts, "30s"), &plans()).await?;
    let hub = pool.hub.client();
    for ns in ["team-a", "team-b"] {
        pool.hub.create_namespace(ns).await?;
    }
    let members: Api<MemberCluster> = Api::all(hub.clone());
    // Ready, Bonded and Schedulable, and every GPU reported and free: a member whose inventory has
    // not arrived yet is Schedulable with no GPUs, and the jobs below would go elsewhere (a CI run
    // once placed the gang on alpha because beta's GPUs were not reported yet).
    wait_until(
        t,
        "every member Ready, Bonded and Schedulable, with its GPUs reported",
        || async {
            let list = members.list(&Default::default()).await.ok()?;
            let ok = list.items.len() == 3
                && list.items.iter().all(|m| {
                    m.status.as_ref().is_some_and(|s| {
                        ["Ready", "Bonded", "Schedulable"]
                            .iter()
                            .all(|c| gpufed_crds::conditions::is_true(&s.conditions, c))
                            && s.total_gpus > 0
                            && s.free_gpus == s.total_gpus
                    })
                });
            ok.then_some(())
        },
    )
    .await?;
    let kc = pool.hub.kubeconfig().to_path_buf();
    show(&mut screen, tools, &kc, &["get", "memberclusters"]).await?;
    show(&mut screen, tools, &kc, &["gpufed", "top"]).await?;
    let before = balances(&chain, &contracts).await?;

    screen.title("Platform teams submit the sample jobs (deploy/examples)");
    for (file, key, _) in JOBS {
        let doc = example_job(tools, file, cfg.sim_duration)?;
        apply::<ComputeJob>(&hub, &doc).await?;
        screen.say(&format!("  applied {file:<24} → ComputeJob {key}"));
    }
    screen.say(&format!(
        "(each simulated pod runs for {}s: the demo adds GPUFED_SIM_DURATION to the first container)",
        cfg.sim_duration.as_secs()
    ));

    screen.title("Where each job went, and why");
    let mut report = DemoReport {
        hub_kubeconfig: kc.clone(),
        member_kubeconfigs: pool
            .members
            .iter()
            .map(|m| (m.name().to_string(), m.kubeconfig().to_path_buf()))
            .collect(),
        rpc_url: chain.url.clone(),
        ..Default::default()
    };
    for (_, key, expected) in JOBS {
        let Some(expected) = expected else { continue };
        let j = wait_until(t, &format!("{key} running"), || async {
            let j = job(&hub, key).await?;
            (j.status.as_ref()?.phase == JobPhase::Running).then_some(j)
        })
        .await?;
        let st = j.status.unwrap_or_default();
        let cluster = st.placement.map(|p| p.cluster).unwrap_or_default();
        if cluster != expected {
            return Err(Error::Other(format!(
                "{key} ran on {cluster}, the demo expects {expected}"
            )));
        }
        screen.say(&format!(
            "  {key:<24} {}",
            st.explanation.unwrap_or_default()
        ));
        report.placed.insert(key.to_string(), cluster);
    }
    show(&mut screen, tools, &kc, &["get", "computejobs", "-A"]).await?;

    screen.title("One job cannot fit: the hub says why, cluster by cluster");
    let pending = wait_until(t, "the explanation of too-cheap", || async {
        let j = job(&hub, "team-a/too-cheap").await?;
        let e = j.status.as_ref()?.explanation.clone()?;
        e.contains("clusters fit").then_some(e)
    })
    .await?;
    report.pending = Some(("team-a/too-cheap".into(), pending));
    show(
        &mut screen,
        tools,
        &kc,
        &["gpufed", "explain", "too-cheap", "-n", "team-a"],
    )
    .await?;

    screen.title("The jobs complete on their members");
    for (_, key, expected) in JOBS {
        if expected.is_none() {
            continue;
        }
        let j = wait_until(t, &format!("{key} succeeded"), || async {
            let j = job(&hub, key).await?;
            (j.status.as_ref()?.phase == JobPhase::Succeeded).then_some(j)
        })
        .await?;
        let used = j
            .status
            .and_then(|s| s.usage)
            .map(|u| u.gpu_seconds)
            .unwrap_or(0);
        report.gpu_seconds.insert(key.to_string(), used);
    }
    show(
        &mut screen,
        tools,
        &kc,
        &["get", "computejobs", "-A", "-o", "wide"],
    )
    .await?;

    screen.title("One of them ran in a real container: its log, from gamma's real node");
    let gamma_kc = pool.member("gamma")?.kubeconfig().to_path_buf();
    let (real_key, greeting) = REAL_JOB;
    let real = job(&hub, real_key)
        .await
        .ok_or_else(|| Error::Other(format!("{real_key} is gone")))?;
    let real_uid = real.metadata.uid.clone().unwrap_or_default();
    let log = kubectl(
        tools,
        &gamma_kc,
        &[
            "logs",
            "-n",
            JOBS_NAMESPACE,
            "-l",
            &format!("{LABEL_JOB_UID}={real_uid}"),
        ],
    )
    .await?;
    if !log.contains(greeting) {
        return Err(Error::Other(format!(
            "the real job's log lacks {greeting:?}: {log}"
        )));
    }
    screen.say(&format!(
        "$ kubectl --kubeconfig {} logs -n {JOBS_NAMESPACE} -l {LABEL_JOB_UID}={real_uid}   # {real_key}'s UID\n{}",
        gamma_kc.display(),
        log.trim_end()
    ));
    if let Some(a) = real.status.as_ref().and_then(|s| s.attempts.last()) {
        for e in &a.exits {
            screen.say(&format!(
                "container {} of replica {} exited with code {} ({}); {} GPU-seconds billed",
                e.container,
                e.replica,
                e.exit_code,
                e.reason.as_deref().unwrap_or("-"),
                a.gpu_seconds
            ));
        }
    }
    report.real_log = log;

    screen.title(
        "Payment: GPU-seconds × price to each provider, minus the pool fee, the rest refunded",
    );
    for (_, key, expected) in JOBS {
        if expected.is_none() {
            continue;
        }
        let j = wait_until(t, &format!("{key} settled"), || async {
            let j = job(&hub, key).await?;
            let settled = j.status.as_ref()?.attempts.iter().all(|a| {
                a.settlement
                    .as_ref()
                    .is_none_or(|s| s.state == SettlementState::Settled)
            });
            settled.then_some(j)
        })
        .await?;
        let cost = j.status.and_then(|s| s.cost).unwrap_or(TokenAmount::ZERO);
        report.paid.insert(key.to_string(), cost.to_string());
    }
    show(
        &mut screen,
        tools,
        &kc,
        &["gpufed", "payments", "finetune-llama", "-n", "team-a"],
    )
    .await?;
    let after = balances(&chain, &contracts).await?;
    screen.say(&format!(
        "\nBalances in tokens (rounded to 6 decimals here; exact figures in `kubectl gpufed payments`):\n  {:<32} {:>14} {:>14} {:>12}",
        "account", "before", "after", "change"
    ));
    for (i, (label, _, _)) in ACCOUNTS.iter().enumerate() {
        let (b, a) = (before[i], after[i]);
        let (sign, delta) = if a >= b {
            ('+', a.saturating_sub(b))
        } else {
            ('-', b.saturating_sub(a))
        };
        screen.say(&format!(
            "  {label:<32} {:>14} {:>14} {:>12}",
            rounded(b),
            rounded(a),
            format!("{sign}{}", rounded(delta))
        ));
        report.balances.push((
            label.to_string(),
            b.to_string(),
            a.to_string(),
            format!("{sign}{delta}"),
        ));
    }

    screen.title("Your turn");
    let member_list: Vec<String> = report
        .member_kubeconfigs
        .iter()
        .map(|(n, p)| format!("  {n:<6} {}", p.display()))
        .collect();
    let root = tools.root().display().to_string();
    screen.say(&format!(
        "Kubeconfigs:\n  hub    {}\n{}\nanvil RPC: {}\n\nTry:\n{}\n\nStop everything with: make demo-down",
        kc.display(),
        member_list.join("\n"),
        chain.url,
        try_lines(&root, &kc, &gamma_kc).join("\n")
    ));
    Ok(Demo {
        pool,
        chain,
        contracts,
        report,
    })
}
