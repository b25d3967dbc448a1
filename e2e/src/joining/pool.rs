//! A pool joined the way the docs tell cluster owners to do it (docs/cluster-owners.md), on harness
//! clusters:
//!
//! 1. the hub chart is `helm install`ed into the hub (CRDs, RBAC; its Deployment never runs on a
//!    hub without nodes) and `gpufed-operator hub` runs as a process **with the chart's
//!    ServiceAccount token**, so the chart's ClusterRole is what the hub really has;
//! 2. the admin creates a GpuPool and the MemberClusters; the hub registers them;
//! 3. each owner (all of them at once, as separate owners would) copies the hub-made kubeconfig
//!    Secret into its cluster, `helm install`s the member chart (`probe.backend=sim`), and runs
//!    `gpu-probe --backend sim --all-nodes` and `gpufed-operator agent` as processes with the
//!    chart's ServiceAccount tokens and the hub-made kubeconfig — so the charts' and the hub's RBAC
//!    for members are exactly what is exercised.
//!
//! kwok runs no containers, which is why the components run as host processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;
use gpufed_crds::naming::{member_kubeconfig_secret, member_namespace};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Helm, TcpProxy, service_account_kubeconfig, service_account_kubeconfig_for};
use crate::bench::settings::chart_value;
use crate::process::free_port;
use crate::{Cluster, ClusterSpec, Error, NodeSpec, Tools, wait_until};

/// Namespace of the hub and of the member charts' components.
pub const SYSTEM_NAMESPACE: &str = "gpufed-system";
/// Name of the Secret the owner copies the hub's kubeconfig into, on the member.
pub const HUB_KUBECONFIG_SECRET: &str = "gpufed-hub-kubeconfig";
/// The member chart's jobs namespace.
pub const JOBS_NAMESPACE: &str = "gpufed-jobs";

/// Where the components of a [`Pool`] run differently from the charts' defaults, for quick tests;
/// the peer benchmark lists each against the charts (`bench::settings::compare_pool`). The client
/// rate limits and the usage-report interval are read from the charts' values instead.
pub mod flags {
    /// The hub's `--lease-duration`.
    pub const HUB_LEASE_DURATION: &str = "4s";

    /// The hub's `--lease-duration`: the hub chart's `leaseDuration` under release builds
    /// ([`default_logs`]: what `make bench` runs — a 4 s lease leaves a loaded 2-core machine
    /// under 3 s to renew, and a hub that cannot renew in time stops writing and exits), else
    /// [`HUB_LEASE_DURATION`] so that failover tests take over quickly.
    pub fn hub_lease_duration(root: &std::path::Path) -> Result<String, crate::Error> {
        if default_logs() {
            crate::bench::settings::chart_value(root, "gpufed-hub", "leaseDuration")
        } else {
            Ok(HUB_LEASE_DURATION.to_string())
        }
    }
    /// `--log-format` of the hub, the agents and gpu-probe.
    pub const LOG_FORMAT: &str = "text";
    /// `RUST_LOG` of the hub and the agents in tests.
    pub const TEST_RUST_LOG: &str = "info,gpufed_operator=debug";
    /// `RUST_LOG` of gpu-probe in tests.
    pub const TEST_PROBE_RUST_LOG: &str = "info,gpu_probe=info";
    /// gpu-probe's log filter when `RUST_LOG` is unset (`gpu-probe/src/main.rs`).
    pub const PROBE_DEFAULT_LOG: &str = "info";

    /// Whether the components run as the charts run them in this respect: release builds
    /// (`GPUFED_E2E_PROFILE=release`, what `make bench` sets) log at the binaries' defaults, test
    /// builds at debug level for gpufed's own crates.
    pub fn default_logs() -> bool {
        std::env::var("GPUFED_E2E_PROFILE").is_ok_and(|p| p == "release")
    }

    /// `RUST_LOG` of the hub and the agents: the operator's default (what the charts run with,
    /// they set none) under [`default_logs`], else [`TEST_RUST_LOG`].
    pub fn operator_rust_log() -> &'static str {
        if default_logs() {
            crate::bench::settings::OPERATOR_DEFAULT_LOG
        } else {
            TEST_RUST_LOG
        }
    }

    /// `RUST_LOG` of gpu-probe, likewise.
    pub fn probe_rust_log() -> &'static str {
        if default_logs() {
            PROBE_DEFAULT_LOG
        } else {
            TEST_PROBE_RUST_LOG
        }
    }
    /// The agents' `--heartbeat-interval`.
    pub const AGENT_HEARTBEAT_INTERVAL: &str = "1s";
    /// The agents' `--inventory-interval`.
    pub const AGENT_INVENTORY_INTERVAL: &str = "2s";
    /// The agents' `--telemetry-max-age`: gpu-probe reads every [`PROBE_INTERVAL`] here, so five
    /// missed readings make a node's GPUs unknown.
    pub const AGENT_TELEMETRY_MAX_AGE: &str = "10s";
    /// gpu-probe's `--interval`.
    pub const PROBE_INTERVAL: &str = "2s";
}

/// One member cluster to join.
#[derive(Clone, Debug)]
pub struct MemberPlan {
    /// MemberCluster name.
    pub name: String,
    /// Fake GPU nodes.
    pub nodes: Vec<NodeSpec>,
    /// Prices per model, e.g. `[("H100", "2.40")]`.
    pub prices: Vec<(String, String)>,
    /// Region of the MemberCluster.
    pub region: String,
    /// Reach the hub through a [`TcpProxy`] that the test can cut.
    pub via_proxy: bool,
    /// The provider's wallet (`spec.wallet`), for pools that pay on chain.
    pub wallet: Option<String>,
    /// A real node (containerd, runc, kubelet) beside the kwok ones: pods placed there really run.
    /// The agent then never pulls (`--image-pull-policy=Never`): the harness images are imported.
    pub real_node: Option<NodeSpec>,
    /// The agent's `--gang-unschedulable-grace`, if not the chart's default.
    pub gang_unschedulable_grace: Option<String>,
    /// Run the agent and gpu-probe under libfaketime, their wall clocks shifted by the offsets in
    /// [`Joined::clock_offset`] (`+0` at first; [`Joined::skew_clock`] changes them). Their
    /// monotonic clock is left alone, as a host whose NTP is off would have it.
    pub skewable_clock: bool,
    /// The provider's own prices, `(model, price)`, which the agent publishes as its Offer
    /// (`--offer`, the chart's `offer.prices`).
    pub offer: Vec<(String, String)>,
    /// The wallet's private key (hex) the agent signs its Offer with (`--offer-signing-key-file`,
    /// the chart's `offer.signingKeySecret`).
    pub offer_signing_key: Option<String>,
    /// The credential the provider got by joining an open pool itself (ADR 0031), used instead of
    /// the hub-made kubeconfig Secret; see [`Pool::add_member`].
    pub join_credential: Option<JoinCredential>,
    /// Serving endpoints behind the member's load balancer of this class (`--serving-exposure
    /// LoadBalancer`, the chart's `agent.serving`), instead of the chart's default.
    pub serving_load_balancer: Option<String>,
}

impl MemberPlan {
    /// A member `name` in `eu-west` with `nodes`, offering `model` at `price`.
    pub fn new(name: &str, nodes: Vec<NodeSpec>, model: &str, price: &str) -> Self {
        MemberPlan {
            name: name.into(),
            nodes,
            prices: vec![(model.into(), price.into())],
            region: "eu-west".into(),
            via_proxy: false,
            wallet: None,
            real_node: None,
            gang_unschedulable_grace: None,
            skewable_clock: false,
            offer: vec![],
            offer_signing_key: None,
            join_credential: None,
            serving_load_balancer: None,
        }
    }

    /// Publishes serving endpoints through a load balancer of `class` (ADR 0030).
    pub fn serving_load_balancer(mut self, class: &str) -> Self {
        self.serving_load_balancer = Some(class.into());
        self
    }

    /// Runs the agent and gpu-probe with a wall clock the test can shift ([`Joined::skew_clock`]).
    pub fn skewable_clock(mut self) -> Self {
        self.skewable_clock = true;
        self
    }

    /// Has the agent publish its own price `price` for `model` (an Offer, ADR 0024).
    pub fn offer(mut self, model: &str, price: &str) -> Self {
        self.offer.push((model.into(), price.into()));
        self
    }

    /// Joins with the credential `kubectl gpufed join` returned rather than one the admin made.
    pub fn join_credential(mut self, credential: JoinCredential) -> Self {
        self.join_credential = Some(credential);
        self
    }

    /// Has the agent sign its Offer with the wallet key `key` (hex).
    pub fn offer_signing_key(mut self, key: &str) -> Self {
        self.offer_signing_key = Some(key.into());
        self
    }

    /// Sets the agent's `--gang-unschedulable-grace` (e.g. `"2s"`, for a test that waits on it).
    pub fn gang_unschedulable_grace(mut self, grace: &str) -> Self {
        self.gang_unschedulable_grace = Some(grace.into());
        self
    }

    /// Adds a real node (see [`crate::realnode`]).
    pub fn real_node(mut self, node: NodeSpec) -> Self {
        self.real_node = Some(node);
        self
    }

    /// Sets the region.
    pub fn region(mut self, region: &str) -> Self {
        self.region = region.into();
        self
    }

    /// Also offers `model` at `price`.
    pub fn price(mut self, model: &str, price: &str) -> Self {
        self.prices.push((model.into(), price.into()));
        self
    }

    /// Sets the provider's wallet.
    pub fn wallet(mut self, wallet: &str) -> Self {
        self.wallet = Some(wallet.into());
        self
    }

    /// Puts a cuttable proxy between the agent and the hub.
    pub fn via_proxy(mut self) -> Self {
        self.via_proxy = true;
        self
    }
}

/// What a provider that joined an open pool by stake holds (ADR 0031): the kubeconfig `kubectl
/// gpufed join` wrote, and where the agent renews its short-lived token (the member chart's
/// `hub.renewUrl` and `hub.renewCaKey`).
#[derive(Clone, Debug)]
pub struct JoinCredential {
    /// The kubeconfig.
    pub kubeconfig: String,
    /// The registration endpoint, e.g. `https://127.0.0.1:8443`.
    pub renew_url: String,
    /// PEM CA bundle of the endpoint.
    pub renew_ca: PathBuf,
}

/// Extra settings of the hub for [`Pool::join_with_hub`]: chart values and process flags (e.g.
/// the registration endpoint's, ADR 0031).
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    /// `--set` values of the hub chart.
    pub chart_values: Vec<(String, String)>,
    /// Flags added to the hub's.
    pub args: Vec<String>,
    /// Run the hub's apiserver with API Priority and Fairness, so that the hub chart's
    /// FlowSchemas (the hub's own priority level, its leader Lease in `leader-election`) take
    /// effect as on a production apiserver ([`ClusterSpec::api_priority_and_fairness`]).
    pub api_priority_and_fairness: bool,
}

/// Paths and handles of one joined member.
pub struct Joined {
    /// The member's hub kubeconfig (from the hub-made Secret), as the agent uses it.
    pub hub_kubeconfig: PathBuf,
    /// Kubeconfig of the member chart's agent ServiceAccount.
    pub agent_kubeconfig: PathBuf,
    /// Kubeconfig of the member chart's gpu-probe ServiceAccount.
    pub probe_kubeconfig: PathBuf,
    /// The proxy between agent and hub, if asked for.
    pub proxy: Option<TcpProxy>,
    /// Address of the agent's /metrics.
    pub agent_metrics: SocketAddr,
    /// The files libfaketime reads the agent's and gpu-probe's clock offsets from, when the plan
    /// asked for a skewable clock.
    pub clock_offset: Option<(PathBuf, PathBuf)>,
}

impl Joined {
    /// Shifts the wall clock of the member's agent and gpu-probe by `seconds` from the host's
    /// (0 puts it back), as a host whose clock is off would; they read it within a second. An
    /// error if the plan did not ask for it.
    pub fn skew_clock(&self, seconds: i64) -> Result<(), Error> {
        let (agent, probe) = self.clock_files()?;
        write_offset(agent, seconds)?;
        write_offset(probe, seconds)
    }

    fn clock_files(&self) -> Result<(&PathBuf, &PathBuf), Error> {
        self.clock_offset
            .as_ref()
            .map(|(a, p)| (a, p))
            .ok_or_else(|| {
                Error::Other(
                    "this member's clock is not skewable (MemberPlan::skewable_clock)".into(),
                )
            })
    }
}

fn write_offset(file: &Path, seconds: i64) -> Result<(), Error> {
    std::fs::write(file, format!("{seconds:+}\n"))
        .map_err(|e| Error::Other(format!("writing {}: {e}", file.display())))
}

/// A hub and members that joined it with the charts.
pub struct Pool {
    /// The hub cluster.
    pub hub: Cluster,
    /// Member clusters, in the order planned.
    pub members: Vec<Cluster>,
    /// Per member name.
    pub joined: BTreeMap<String, Joined>,
    /// The hub's metrics address.
    pub hub_metrics: std::net::SocketAddr,
}

impl Pool {
    /// The member cluster `name`.
    pub fn member(&self, name: &str) -> Result<&Cluster, Error> {
        self.members
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Other(format!("no member {name}")))
    }

    /// Member `name`, to change (signal or restart its processes).
    pub fn member_mut(&mut self, name: &str) -> Result<&mut Cluster, Error> {
        self.members
            .iter_mut()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Other(format!("no member {name}")))
    }

    /// Kills member `name`'s `process` (`SIGKILL`) and starts it again with the same command.
    pub fn restart(&mut self, name: &str, process: &str) -> Result<(), Error> {
        let member = self.member_mut(name)?;
        if let Some(p) = member.process_mut(process) {
            p.signal(libc::SIGKILL);
        }
        member.respawn(process)
    }

    /// What joined for member `name`.
    pub fn joined(&self, name: &str) -> Result<&Joined, Error> {
        self.joined
            .get(name)
            .ok_or_else(|| Error::Other(format!("no member {name}")))
    }
}

/// Applies the ComputeJob `name` in `team-a` of pool `default`: one replica of `gpus` H100 GPUs
/// at most `max_price` per GPU-hour, `maxDuration` 10m, whose kwok pods run for `runs`
/// (`GPUFED_SIM_DURATION`, e.g. `"20s"`).
pub async fn submit_sim_job(
    client: &Client,
    name: &str,
    gpus: u32,
    max_price: &str,
    runs: &str,
) -> Result<(), Error> {
    apply(
        client,
        "computejobs",
        &serde_json::json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"gpusPerReplica": gpus, "gpu": {"models": ["H100"]},
                         "maxPricePerGpuHour": max_price, "maxDuration": "10m",
                         "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                             "env": [{"name": "GPUFED_SIM_DURATION", "value": runs}]}]}}}),
    )
    .await
}

/// Server-side applies `doc` (any kind with a `plural` given) as `e2e-admin`.
pub async fn apply(client: &Client, plural: &str, doc: &Value) -> Result<(), Error> {
    let (group, version) = doc["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .unwrap_or(("", "v1"));
    let gvk =
        kube::core::GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap_or_default());
    let ar = kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<kube::core::DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply("e2e-admin").force(),
        &Patch::Apply(doc),
    )
    .await
    .map_err(Error::kube("applying a manifest"))?;
    Ok(())
}

async fn wait_crds(cluster: &Cluster, names: &[&str]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client());
    for name in names {
        let api = api.clone();
        wait_until(
            Duration::from_secs(30),
            &format!("CRD {name} from the chart"),
            || {
                let api = api.clone();
                async move {
                    let crd = api.get(name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// How [`spawn_chart_hub`] runs the hub process.
#[derive(Clone, Debug)]
pub struct ChartHub {
    /// The process's name in the cluster (its log file, [`Cluster::pid_of`]).
    pub process: String,
    /// `--log-format`.
    pub log_format: String,
    /// `--lease-duration`.
    pub lease_duration: String,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// How long the ServiceAccount token the hub runs with lasts (the process is not given a new
    /// one, so it must outlast the run).
    pub token_lifetime: Duration,
    /// Flags added after the hub's own (`hub` subcommand flags).
    pub args: Vec<String>,
}

/// `helm install`s the hub chart into `hub` (with `memberApiServer` set to its apiserver, then
/// `values`) and waits for the chart's CRDs to be established. Its Deployment never runs on a hub
/// without nodes: [`spawn_chart_hub`] runs the hub as a process instead.
pub async fn install_hub_chart(
    tools: &Tools,
    hub: &Cluster,
    values: &[(String, String)],
) -> Result<(), Error> {
    let server = hub.server().to_string();
    let values: Vec<(&str, &str)> = [("memberApiServer", server.as_str())]
        .into_iter()
        .chain(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    Helm::new(tools, hub)?
        .install(
            "gpufed-hub",
            &chart(tools, "gpufed-hub"),
            SYSTEM_NAMESPACE,
            &values,
        )
        .await?;
    wait_crds(
        hub,
        &[
            "gpupools.gpufed.io",
            "memberclusters.gpufed.io",
            "computejobs.gpufed.io",
            "placements.gpufed.io",
            "providerbonds.gpufed.io",
        ],
    )
    .await
}

/// Starts `gpufed-operator hub` as the hub chart runs it, where a
/// process can: with a token of the chart's ServiceAccount (so the chart's RBAC, and on an
/// apiserver with API Priority and Fairness the chart's FlowSchemas, apply to it) and the chart's
/// client rate limit; [`install_hub_chart`] first. Returns the address of its `/metrics`.
pub async fn spawn_chart_hub(
    tools: &Tools,
    hub: &mut Cluster,
    how: &ChartHub,
) -> Result<SocketAddr, Error> {
    let hub_sa = service_account_kubeconfig_for(
        hub,
        SYSTEM_NAMESPACE,
        "gpufed-hub",
        &hub.dir()?.join("hub-sa.kubeconfig"),
        how.token_lifetime,
    )
    .await?;
    let hub_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    hub.spawn(
        &how.process,
        &tools.workspace_bin("gpufed-operator")?,
        &[
            format!("--kubeconfig={}", hub_sa.display()),
            format!("--metrics-addr={hub_metrics}"),
            format!("--log-format={}", how.log_format),
            format!(
                "--kube-api-qps={}",
                chart_value(tools.root(), "gpufed-hub", "kubeApi.qps")?
            ),
            format!(
                "--kube-api-burst={}",
                chart_value(tools.root(), "gpufed-hub", "kubeApi.burst")?
            ),
            "hub".into(),
            format!("--namespace={SYSTEM_NAMESPACE}"),
            "--identity=hub-0".into(),
            format!("--lease-duration={}", how.lease_duration),
        ]
        .into_iter()
        .chain(how.args.iter().cloned())
        .collect::<Vec<_>>(),
        &[("RUST_LOG".to_string(), how.rust_log.clone())],
    )?;
    Ok(hub_metrics)
}

fn chart(tools: &Tools, name: &str) -> PathBuf {
    tools.root().join("charts").join(name)
}

/// Rewrites the `server` of a kubeconfig to `addr` (https, same CA and token).
fn via(kubeconfig: &str, addr: SocketAddr) -> Result<String, Error> {
    let mut doc: Value =
        serde_norway::from_str(kubeconfig).map_err(|e| Error::Other(e.to_string()))?;
    for c in doc["clusters"].as_array_mut().into_iter().flatten() {
        c["cluster"]["server"] = json!(format!("https://{addr}"));
    }
    serde_norway::to_string(&doc).map_err(|e| Error::Other(e.to_string()))
}

async fn join_member(
    tools: &Tools,
    hub: &Cluster,
    member: &mut Cluster,
    plan: &MemberPlan,
) -> Result<Joined, Error> {
    let name = plan.name.as_str();
    let kubeconfig = match &plan.join_credential {
        Some(c) => c.kubeconfig.clone(),
        None => {
            let secrets: Api<Secret> = Api::namespaced(hub.client(), &member_namespace(name));
            let secret_name = member_kubeconfig_secret(name);
            wait_until(
                Duration::from_secs(60),
                &format!("the hub's kubeconfig Secret for {name}"),
                || {
                    let secrets = secrets.clone();
                    let secret_name = secret_name.clone();
                    async move {
                        let s = secrets.get_opt(&secret_name).await.ok()??;
                        let bytes = s.data?.get("kubeconfig")?.0.clone();
                        String::from_utf8(bytes).ok()
                    }
                },
            )
            .await?
        }
    };

    // The owner's side: copy the Secret, install the chart.
    member.create_namespace(SYSTEM_NAMESPACE).await?;
    let copy = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(HUB_KUBECONFIG_SECRET.into()),
            namespace: Some(SYSTEM_NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            ByteString(kubeconfig.clone().into_bytes()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(member.client(), SYSTEM_NAMESPACE)
        .create(&PostParams::default(), &copy)
        .await
        .map_err(Error::kube("copying the hub kubeconfig Secret"))?;
    let mut chart_values = vec![
        ("cluster", name),
        ("hub.kubeconfigSecret", HUB_KUBECONFIG_SECRET),
        ("probe.backend", "sim"),
    ];
    if let Some(c) = &plan.join_credential {
        chart_values.extend([
            ("hub.renewUrl", c.renew_url.as_str()),
            ("hub.renewCaKey", "renew-ca.crt"),
        ]);
    }
    Helm::new(tools, member)?
        .install(
            "gpufed-member",
            &chart(tools, "gpufed-member"),
            SYSTEM_NAMESPACE,
            &chart_values,
        )
        .await?;
    wait_crds(member, &["gpunodes.gpufed.io"]).await?;

    let dir = member.dir()?.to_path_buf();
    let proxy = if plan.via_proxy {
        let target: SocketAddr = hub
            .server()
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| Error::Other(format!("hub address: {e}")))?;
        Some(TcpProxy::start(target).await?)
    } else {
        None
    };
    // The wallet key, as the chart mounts it from offer.signingKeySecret.
    let offer_key_file = match &plan.offer_signing_key {
        Some(key) => {
            let f = dir.join("offer-signing.key");
            std::fs::write(&f, format!("{key}\n"))
                .map_err(|e| Error::Other(format!("{}: {e}", f.display())))?;
            Some(f)
        }
        None => None,
    };
    let hub_kubeconfig = dir.join("hub-credential.kubeconfig");
    let content = match &proxy {
        Some(p) => via(&kubeconfig, p.addr())?,
        None => kubeconfig,
    };
    std::fs::write(&hub_kubeconfig, content)
        .map_err(|e| Error::Other(format!("writing {}: {e}", hub_kubeconfig.display())))?;
    let agent_kubeconfig = service_account_kubeconfig(
        member,
        SYSTEM_NAMESPACE,
        "gpufed-agent",
        &dir.join("agent-sa.kubeconfig"),
    )
    .await?;
    let probe_kubeconfig = service_account_kubeconfig(
        member,
        SYSTEM_NAMESPACE,
        "gpu-probe",
        &dir.join("probe-sa.kubeconfig"),
    )
    .await?;

    let mut probe_env = vec![("RUST_LOG".to_string(), flags::probe_rust_log().to_string())];
    let mut env = vec![(
        "RUST_LOG".to_string(),
        flags::operator_rust_log().to_string(),
    )];
    let clock_offset = if plan.skewable_clock {
        let lib = tools.libfaketime()?.display().to_string();
        let files = (
            dir.join("agent-clock-offset"),
            dir.join("probe-clock-offset"),
        );
        for (file, env) in [(&files.0, &mut env), (&files.1, &mut probe_env)] {
            write_offset(file, 0)?;
            for (k, v) in [
                ("LD_PRELOAD", lib.clone()),
                ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
                // Re-read the file every second.
                ("FAKETIME_CACHE_DURATION", "1".to_string()),
                // Only the wall clock is off; timers and durations run true.
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
            ] {
                env.push((k.to_string(), v));
            }
        }
        Some(files)
    } else {
        None
    };
    let values = |path: &str| chart_value(tools.root(), "gpufed-member", path);
    let agent_metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    member.spawn(
        "gpu-probe",
        &tools.workspace_bin("gpu-probe")?,
        &[
            "--backend=sim".into(),
            "--all-nodes".into(),
            format!("--kubeconfig={}", probe_kubeconfig.display()),
            format!("--interval={}", flags::PROBE_INTERVAL),
            format!("--metrics-addr=127.0.0.1:{}", free_port()?),
            format!("--log-format={}", flags::LOG_FORMAT),
        ],
        &probe_env,
    )?;
    member.spawn(
        "gpufed-agent",
        &tools.workspace_bin("gpufed-operator")?,
        &[
            format!("--kubeconfig={}", agent_kubeconfig.display()),
            format!("--metrics-addr={agent_metrics}"),
            format!("--log-format={}", flags::LOG_FORMAT),
            format!("--kube-api-qps={}", values("agent.kubeApi.qps")?),
            format!("--kube-api-burst={}", values("agent.kubeApi.burst")?),
            "agent".into(),
            format!("--cluster={name}"),
            format!("--hub-kubeconfig={}", hub_kubeconfig.display()),
            format!("--jobs-namespace={JOBS_NAMESPACE}"),
            format!("--heartbeat-interval={}", flags::AGENT_HEARTBEAT_INTERVAL),
            format!("--inventory-interval={}", flags::AGENT_INVENTORY_INTERVAL),
            format!(
                "--usage-report-interval={}",
                values("agent.usageReportInterval")?
            ),
            format!(
                "--usage-report-max-rate={}",
                values("agent.usageReportMaxRate")?
            ),
            format!("--telemetry-max-age={}", flags::AGENT_TELEMETRY_MAX_AGE),
            format!(
                "--gang-unschedulable-grace={}",
                match &plan.gang_unschedulable_grace {
                    Some(g) => g.clone(),
                    None => values("agent.gangUnschedulableGrace")?,
                }
            ),
            format!(
                "--image-pull-policy={}",
                if plan.real_node.is_some() {
                    "Never"
                } else {
                    "IfNotPresent"
                }
            ),
            // The chart always names a data image (jobs.dataImage); on a real node a test that
            // needs it imports it (`Image::data`).
            format!("--data-image={}", crate::image::DATA),
        ]
        .into_iter()
        .chain(
            plan.offer
                .iter()
                .map(|(model, price)| format!("--offer={model}={price}")),
        )
        .chain(offer_key_file.map(|f| format!("--offer-signing-key-file={}", f.display())))
        // A join credential's token is short-lived: the agent keeps it in a file and renews it
        // at the registration endpoint (the chart's hub.renewUrl).
        .chain(plan.join_credential.iter().flat_map(|c| {
            [
                format!("--hub-token-file={}", dir.join("hub-token").display()),
                format!("--hub-renew-url={}", c.renew_url),
                format!("--hub-renew-ca-file={}", c.renew_ca.display()),
            ]
        }))
        .chain(match &plan.serving_load_balancer {
            Some(class) => vec![
                "--serving-exposure=LoadBalancer".to_string(),
                format!("--serving-load-balancer-class={class}"),
            ],
            None => vec![format!(
                "--serving-exposure={}",
                values("agent.serving.exposure")?
            )],
        })
        .collect::<Vec<_>>(),
        &env,
    )?;
    Ok(Joined {
        hub_kubeconfig,
        agent_kubeconfig,
        probe_kubeconfig,
        proxy,
        agent_metrics,
        clock_offset,
    })
}

impl Pool {
    /// Starts the hub and the members, installs the charts, runs the hub, creates the pool
    /// `default` (with `heartbeat_timeout`) and the MemberClusters, and joins every member (all at
    /// once).
    pub async fn join(
        tools: &Tools,
        heartbeat_timeout: &str,
        plans: &[MemberPlan],
    ) -> Result<Pool, Error> {
        Pool::join_with(
            tools,
            json!({"heartbeatTimeout": heartbeat_timeout}),
            plans,
            |_| async { Ok(()) },
        )
        .await
    }

    /// Two members on real nodes (kubelet, containerd, runc) with 2 L4 GPUs each: `alpha` at 0.50
    /// and `beta` at 0.80 per GPU-hour, so a job goes to alpha first and to beta when alpha is
    /// lost; heartbeat timeout 15 s. Returns once namespace `tenant` exists on the hub and both
    /// members are Ready with their GPUs free.
    pub async fn two_real_l4_members(
        tools: &Tools,
        tenant: &str,
        timeout: Duration,
    ) -> Result<Pool, Error> {
        let member = |name: &str, price: &str| {
            MemberPlan::new(name, vec![], "L4", price).real_node(NodeSpec::new(
                &format!("{name}-node"),
                "L4-24GB",
                2,
                "eu-west",
            ))
        };
        let pool = Pool::join(
            tools,
            "15s",
            &[member("alpha", "0.50"), member("beta", "0.80")],
        )
        .await?;
        pool.hub.create_namespace(tenant).await?;
        let hub = pool.hub.client();
        for name in ["alpha", "beta"] {
            super::wait_ready_with_free(&hub, name, 2, timeout).await?;
        }
        Ok(pool)
    }

    /// Like [`Pool::join`], with the pool `default`'s whole `spec` given, and `before_pool` run on
    /// the hub (chart installed, hub not started yet) — e.g. to create the chain key Secret a pool
    /// with a chain names.
    pub async fn join_with<F, Fut>(
        tools: &Tools,
        pool_spec: Value,
        plans: &[MemberPlan],
        before_pool: F,
    ) -> Result<Pool, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        Pool::join_with_hub(tools, pool_spec, plans, before_pool, HubOptions::default()).await
    }

    /// [`Pool::join_with`] with the hub chart's extra values and the hub's extra flags in `hub`.
    pub async fn join_with_hub<F, Fut>(
        tools: &Tools,
        pool_spec: Value,
        plans: &[MemberPlan],
        before_pool: F,
        options: HubOptions,
    ) -> Result<Pool, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        let mut hub_spec = ClusterSpec::api_only("hub").with_controller_manager();
        hub_spec.api_priority_and_fairness = options.api_priority_and_fairness;
        let member_specs: Vec<ClusterSpec> = plans
            .iter()
            .map(|p| {
                let spec = p
                    .nodes
                    .iter()
                    .cloned()
                    .fold(ClusterSpec::new(&p.name), ClusterSpec::node);
                match &p.real_node {
                    Some(n) => spec.real_node(n.clone()),
                    None => spec,
                }
            })
            .collect();
        let (mut hub, mut members) = futures::try_join!(
            Cluster::start(tools, &hub_spec),
            try_join_all(member_specs.iter().map(|s| Cluster::start(tools, s)))
        )?;

        let server = hub.server().to_string();
        install_hub_chart(tools, &hub, &options.chart_values).await?;
        before_pool(hub.client()).await?;
        let hub_metrics = spawn_chart_hub(
            tools,
            &mut hub,
            &ChartHub {
                process: "gpufed-hub".into(),
                log_format: flags::LOG_FORMAT.into(),
                lease_duration: flags::hub_lease_duration(tools.root())?,
                rust_log: flags::operator_rust_log().into(),
                token_lifetime: Duration::from_secs(3600),
                args: std::iter::once(format!("--member-api-server={server}"))
                    .chain(options.args)
                    .collect(),
            },
        )
        .await?;

        let admin = hub.client();
        apply(
            &admin,
            "gpupools",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "default"},
                    "spec": pool_spec}),
        )
        .await?;
        // The MemberClusters, then each owner's side of joining: one owner never waits on another,
        // so every member joins at once (as separate owners would) rather than one after the other.
        try_join_all(plans.iter().map(|p| {
            let admin = &admin;
            async move {
                let prices: Vec<Value> = p
                    .prices
                    .iter()
                    .map(|(m, price)| json!({"model": m, "pricePerGpuHour": price}))
                    .collect();
                let mut spec = json!({"pool": "default", "region": p.region, "displayName": format!("{} GPUs", p.name), "prices": prices});
                if let Some(w) = &p.wallet {
                    spec["wallet"] = json!(w);
                }
                apply(
                    admin,
                    "memberclusters",
                    &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": p.name},
                            "spec": spec}),
                )
                .await
            }
        }))
        .await?;
        let hub_ref = &hub;
        let joined: BTreeMap<String, Joined> = try_join_all(
            plans
                .iter()
                .zip(members.iter_mut())
                .map(|(plan, member)| async move {
                    let j = join_member(tools, hub_ref, member, plan).await?;
                    Ok::<_, Error>((plan.name.clone(), j))
                }),
        )
        .await?
        .into_iter()
        .collect();
        hub.check_alive()?;
        Ok(Pool {
            hub,
            members,
            joined,
            hub_metrics,
        })
    }

    /// Starts member cluster `plan.name` and joins it to the running pool: a provider that
    /// joined by itself ([`MemberPlan::join_credential`]), or one whose MemberCluster the admin
    /// made. `before_join` runs on the started member first (e.g. to import images into its real
    /// node before the hub sends it a challenge).
    pub async fn add_member<F>(
        &mut self,
        tools: &Tools,
        plan: &MemberPlan,
        before_join: F,
    ) -> Result<(), Error>
    where
        F: FnOnce(&Cluster) -> Result<(), Error>,
    {
        let spec = plan
            .nodes
            .iter()
            .cloned()
            .fold(ClusterSpec::new(&plan.name), ClusterSpec::node);
        let spec = match &plan.real_node {
            Some(n) => spec.real_node(n.clone()),
            None => spec,
        };
        let mut member = Cluster::start(tools, &spec).await?;
        before_join(&member)?;
        let joined = join_member(tools, &self.hub, &mut member, plan).await?;
        self.members.push(member);
        self.joined.insert(plan.name.clone(), joined);
        Ok(())
    }
}
