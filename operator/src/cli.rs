//! Command line of `gpufed-operator`: global flags (kubeconfig, logs, metrics address) and one
//! subcommand per mode. Every flag can also come from an environment variable (`GPUFED_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The gpufed operator: `hub` on the hub cluster, `agent` on each member cluster.
#[derive(Parser, Debug)]
#[command(name = "gpufed-operator", version, about)]
pub struct Cli {
    /// Kubeconfig of the cluster this process runs against (default: in-cluster, then ~/.kube/config).
    #[arg(long, global = true, env = "GPUFED_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "GPUFED_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(
        long,
        global = true,
        default_value = "0.0.0.0:8080",
        env = "GPUFED_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// Requests per second this process sends to each apiserver it talks to, on average
    /// (client-side limit, like client-go's QPS; watches count when opened).
    #[arg(
        long,
        global = true,
        default_value_t = 500.0,
        env = "GPUFED_KUBE_API_QPS"
    )]
    pub kube_api_qps: f64,
    /// Requests that may go out back to back above `--kube-api-qps` after an idle spell.
    #[arg(
        long,
        global = true,
        default_value_t = 1000,
        env = "GPUFED_KUBE_API_BURST"
    )]
    pub kube_api_burst: u32,
    /// How often freed heap memory is given back to the system (glibc's `malloc_trim`;
    /// ADR 0035); `0s` turns it off.
    #[arg(
        long,
        global = true,
        default_value = "10s",
        value_parser = parse_duration,
        env = "GPUFED_MALLOC_TRIM_INTERVAL"
    )]
    pub malloc_trim_interval: Duration,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Modes of the operator.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the hub: scheduler, ComputeJob lifecycle, member health and failover, settlement.
    Hub(HubArgs),
    /// Run a member's agent: heartbeat, inventory, placements to local Jobs.
    Agent(AgentArgs),
    /// Print the CRD YAML.
    Crd(CrdArgs),
}

/// Flags of `hub`.
#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// Namespace of the hub's own objects (leader Lease, chain key Secrets by convention).
    #[arg(long, default_value = "gpufed-system", env = "GPUFED_NAMESPACE")]
    pub namespace: String,
    /// Identity in the leader election (default: $POD_NAME, else the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "gpufed-hub", env = "GPUFED_LEASE_NAME")]
    pub lease_name: String,
    /// How long a leader's Lease is valid without renewal before another replica may take over.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "GPUFED_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// API server URL that member agents use to reach the hub (written into member kubeconfigs).
    /// Default: the server of this process's own kubeconfig.
    #[arg(long, env = "GPUFED_MEMBER_API_SERVER")]
    pub member_api_server: Option<String>,
    /// CA bundle (PEM) members use to verify the hub's API server. Default: this process's own.
    #[arg(long, env = "GPUFED_MEMBER_API_CA_FILE")]
    pub member_api_ca_file: Option<PathBuf>,
    /// Serve the registration endpoint for open joining by stake (ADR 0031) on this address,
    /// e.g. `0.0.0.0:8443`, over TLS (the leader serves it). Absent: no endpoint.
    #[arg(long, env = "GPUFED_REGISTRATION_LISTEN", requires_all = ["registration_tls_cert", "registration_tls_key"])]
    pub registration_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain of the registration endpoint.
    #[arg(long, env = "GPUFED_REGISTRATION_TLS_CERT")]
    pub registration_tls_cert: Option<PathBuf>,
    /// PEM private key of the registration endpoint.
    #[arg(long, env = "GPUFED_REGISTRATION_TLS_KEY")]
    pub registration_tls_key: Option<PathBuf>,
    /// Lifetime of the tokens the endpoint hands to members (at least 10m, the apiserver's
    /// minimum); agents renew them before half of it has passed.
    #[arg(long, default_value = "1h", value_parser = parse_duration, env = "GPUFED_REGISTRATION_TOKEN_TTL")]
    pub registration_token_ttl: Duration,
    /// Requests one source address may send to the endpoint back to back.
    #[arg(long, default_value_t = 5, env = "GPUFED_REGISTRATION_BURST")]
    pub registration_burst: u32,
    /// Time after which a source may send one more request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "GPUFED_REGISTRATION_REFILL")]
    pub registration_refill: Duration,
}

/// Flags of `agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// This member's name (its MemberCluster on the hub).
    #[arg(long, env = "GPUFED_CLUSTER")]
    pub cluster: String,
    /// Kubeconfig for the hub (the Secret the hub made for this member, mounted as a file).
    #[arg(long, env = "GPUFED_HUB_KUBECONFIG")]
    pub hub_kubeconfig: PathBuf,
    /// A writable file the hub token is read from instead of the kubeconfig's (re-read every
    /// minute); started from the kubeconfig's token when missing. For members that joined by
    /// stake, whose token is short-lived (ADR 0031).
    #[arg(long, env = "GPUFED_HUB_TOKEN_FILE")]
    pub hub_token_file: Option<PathBuf>,
    /// The hub's registration endpoint (e.g. `https://hub.example.com:8443`): the token in
    /// `--hub-token-file` is renewed there before half of its lifetime has passed.
    #[arg(long, env = "GPUFED_HUB_RENEW_URL", requires = "hub_token_file")]
    pub hub_renew_url: Option<String>,
    /// PEM CA bundle of the registration endpoint (default: the system roots).
    #[arg(long, env = "GPUFED_HUB_RENEW_CA_FILE")]
    pub hub_renew_ca_file: Option<PathBuf>,
    /// Local namespace where the member runs placed jobs.
    #[arg(long, default_value = "gpufed-jobs", env = "GPUFED_JOBS_NAMESPACE")]
    pub jobs_namespace: String,
    /// How often the heartbeat Lease is renewed.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "GPUFED_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Duration,
    /// The provider's own price for a GPU model, `MODEL=PRICE` per GPU-hour (e.g. `H100=2.40`),
    /// repeated for each model offered: published as this member's Offer on the hub, which replaces
    /// the admin's `MemberCluster.spec.prices` (ADR 0024). None: nothing is published.
    #[arg(long = "offer", value_name = "MODEL=PRICE", value_parser = crate::agent::offer::parse_offer)]
    pub offers: Vec<gpufed_crds::ModelPrice>,
    /// File with the member wallet's private key (hex), mounted from the member chart's
    /// `offer.signingKeySecret`: the agent signs the Offer with it (EIP-712, in the domain the hub
    /// publishes in `MemberCluster.status.offerSigning`), as pools that pay on a chain require.
    /// The key never leaves the member cluster.
    #[arg(long, env = "GPUFED_OFFER_SIGNING_KEY_FILE", requires = "offers")]
    pub offer_signing_key_file: Option<PathBuf>,
    /// How long a signed Offer is valid; the agent signs it again (higher nonce) once half of it
    /// has passed.
    #[arg(long, default_value = "24h", value_parser = parse_duration, env = "GPUFED_OFFER_VALID_FOR")]
    pub offer_valid_for: Duration,
    /// Stop local jobs after failing to renew the heartbeat for this long. Default: two thirds of the
    /// pool's heartbeat timeout (read from the MemberCluster), so the member stops before the hub
    /// re-places its work.
    #[arg(long, value_parser = parse_duration, env = "GPUFED_FENCE_TIMEOUT")]
    pub fence_timeout: Option<Duration>,
    /// How often the inventory is reported.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "GPUFED_INVENTORY_INTERVAL")]
    pub inventory_interval: Duration,
    /// How often a running placement's GPU-seconds are written to the hub between its phase
    /// changes (a checkpoint; the final figure is always written when the placement ends). Each
    /// checkpoint costs a Placement and a ComputeJob status write per running job.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "GPUFED_USAGE_REPORT_INTERVAL")]
    pub usage_report_interval: Duration,
    /// At most this many checkpoints of running placements per second, `0` for no limit. A
    /// member running more jobs than this rate times `--usage-report-interval` checkpoints each
    /// of them less often, every (running jobs ÷ rate) seconds, so that checkpoints cost the hub
    /// at most twice this many writes per second however many jobs the member runs. The final
    /// figure is always written when a placement ends.
    #[arg(long, default_value = "20", value_parser = parse_rate, env = "GPUFED_USAGE_REPORT_MAX_RATE")]
    pub usage_report_max_rate: f64,
    /// A node whose GpuNode gpu-probe has not updated for this long offers no GPUs (their health
    /// is unknown) until the probe reports again. Keep it several probe intervals long.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "GPUFED_TELEMETRY_MAX_AGE")]
    pub telemetry_max_age: Duration,
    /// A replica of a multi-replica job that kube-scheduler has marked `Unschedulable` for this long
    /// fails the whole attempt (`GangUnschedulable`): the agent stops the local Job, so the replicas
    /// that started release their GPUs, and the hub runs the job elsewhere instead of waiting out
    /// the pool's `startTimeout`. Shorter-lived Unschedulable marks are kube-scheduler retrying and
    /// are ignored. `0s` turns fast failing off. Raise it on a cluster whose autoscaler adds nodes.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "GPUFED_GANG_UNSCHEDULABLE_GRACE")]
    pub gang_unschedulable_grace: Duration,
    /// `imagePullPolicy` of the workload containers: `Never` on a member that runs only images it
    /// already holds (air-gapped, or pre-loaded), `Always` to re-check the registry each start.
    #[arg(long, value_enum, default_value_t = PullPolicy::IfNotPresent, env = "GPUFED_IMAGE_PULL_POLICY")]
    pub image_pull_policy: PullPolicy,
    /// The image with the `gpufed-data` helper at `/usr/local/bin/gpufed-data`
    /// (deploy/docker/gpufed-data.Dockerfile), run in the pods of jobs with `inputs` or `outputs`
    /// to fetch and upload their data (docs/adr/0029-job-data-on-s3.md). Unset: such jobs are
    /// refused (`DataUnsupported`) and the hub places them elsewhere.
    #[arg(long, env = "GPUFED_DATA_IMAGE")]
    pub data_image: Option<String>,
    /// How this member publishes serving jobs' endpoints (docs/adr/0030-serving-jobs.md):
    /// `PodNetwork` reports each ready replica's pod IP (clients can reach the pod network);
    /// `LoadBalancer` makes each serving job's Service `type: LoadBalancer` and reports the address
    /// the member's load balancer assigns to it.
    #[arg(long, value_enum, default_value_t = ServingExposure::PodNetwork, env = "GPUFED_SERVING_EXPOSURE")]
    pub serving_exposure: ServingExposure,
    /// `loadBalancerClass` of serving Services with `--serving-exposure LoadBalancer`; the
    /// cluster's default load balancer when unset.
    #[arg(long, env = "GPUFED_SERVING_LOAD_BALANCER_CLASS")]
    pub serving_load_balancer_class: Option<String>,
}

/// How a member publishes serving jobs' endpoints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[value(rename_all = "verbatim")]
pub enum ServingExposure {
    /// Each ready replica's pod IP: the member's pod network is reachable by clients.
    #[default]
    PodNetwork,
    /// The address the member's load balancer assigns to the job's Service.
    LoadBalancer,
}

/// A container's `imagePullPolicy`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[value(rename_all = "verbatim")]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull: the image must already be on the node.
    Never,
}

impl Cli {
    /// The client-side rate limit of every Kubernetes client of this process.
    pub fn rate_limit(&self) -> crate::kube_client::RateLimit {
        crate::kube_client::RateLimit {
            qps: self.kube_api_qps,
            burst: self.kube_api_burst,
        }
    }
}

impl PullPolicy {
    /// The value Kubernetes takes.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Flags of `crd`.
#[derive(Args, Debug, Clone)]
pub struct CrdArgs {
    /// Which CRDs to print.
    #[arg(long, value_enum, default_value_t = CrdSide::All)]
    pub side: CrdSide,
}

/// Which CRDs to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CrdSide {
    /// Hub and member CRDs.
    All,
    /// The hub's CRDs.
    Hub,
    /// The member's CRDs (GpuNode).
    Member,
}

/// Parses a rate per second for flags: a finite number, zero or more.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give a number of times per second, 0 or more (0: no limit)"
        )),
    }
}

/// Parses a Kubernetes duration (`90s`, `1m30s`) for flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<gpufed_crds::KubeDuration>()
        .map(|d| d.as_duration())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["gpufed-operator", "hub"]).unwrap();
        let Command::Hub(ref h) = cli.command else {
            panic!("not hub")
        };
        assert_eq!(h.namespace, "gpufed-system");
        assert_eq!(h.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.log_format, LogFormat::Text);
        assert_eq!(cli.rate_limit().window().unwrap(), Duration::from_secs(2));
        assert_eq!(cli.malloc_trim_interval, Duration::from_secs(10));
        let off =
            Cli::try_parse_from(["gpufed-operator", "--malloc-trim-interval=0s", "hub"]).unwrap();
        assert_eq!(off.malloc_trim_interval, Duration::ZERO);
    }

    #[test]
    fn the_charts_trim_memory_as_often_as_the_binary_does_by_default() {
        // The benchmarks start the operator without the flag and report the charts' settings.
        let cli = Cli::try_parse_from(["gpufed-operator", "hub"]).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for chart in ["gpufed-hub", "gpufed-member"] {
            let values =
                std::fs::read_to_string(root.join(format!("charts/{chart}/values.yaml"))).unwrap();
            let value = values
                .lines()
                .find_map(|l| l.trim().strip_prefix("mallocTrimInterval:"))
                .unwrap_or_else(|| panic!("{chart} has no mallocTrimInterval"));
            assert_eq!(
                parse_duration(value.trim()).unwrap(),
                cli.malloc_trim_interval,
                "{chart}"
            );
        }
    }

    #[test]
    fn agent_needs_a_cluster_name_and_a_hub_kubeconfig() {
        assert!(Cli::try_parse_from(["gpufed-operator", "agent"]).is_err());
        let cli = Cli::try_parse_from([
            "gpufed-operator",
            "--log-format",
            "json",
            "agent",
            "--cluster",
            "alpha",
            "--hub-kubeconfig",
            "/k",
            "--fence-timeout",
            "20s",
        ])
        .unwrap();
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.cluster, "alpha");
        assert_eq!(a.fence_timeout, Some(Duration::from_secs(20)));
        assert_eq!(a.gang_unschedulable_grace, Duration::from_secs(60));
        assert_eq!(a.usage_report_max_rate, 20.0);
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn the_usage_report_rate_is_a_number_zero_or_more() {
        let agent = |rate: &str| {
            Cli::try_parse_from([
                "gpufed-operator",
                "agent",
                "--cluster=alpha",
                "--hub-kubeconfig=/k",
                &format!("--usage-report-max-rate={rate}"),
            ])
        };
        for ok in ["0", "2.5", "100"] {
            assert!(agent(ok).is_ok(), "{ok}");
        }
        for bad in ["-1", "fast", "inf", "NaN"] {
            let err = agent(bad).unwrap_err().to_string();
            assert!(err.contains("0 or more (0: no limit)"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_durations_are_rejected_with_the_allowed_form() {
        let err =
            Cli::try_parse_from(["gpufed-operator", "hub", "--lease-duration", "15"]).unwrap_err();
        assert!(err.to_string().contains("Kubernetes duration"), "{err}");
    }
}
