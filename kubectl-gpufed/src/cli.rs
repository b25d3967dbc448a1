//! The command line: kubectl's connection flags (`--kubeconfig`, `--context`, `-n`), an output
//! format (`-o table|wide|json|yaml`), and one subcommand per view of the federation.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kubectl gpufed`: see the GPU federation from the hub — capacity and prices, jobs, member
/// clusters, why a job waits, how a cluster joins, and what was paid.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kubectl-gpufed",
    bin_name = "kubectl gpufed",
    version,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// How to reach the hub and what to print.
    #[command(flatten)]
    pub global: GlobalFlags,
    /// What to show.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, as kubectl spells them.
#[derive(Args, Debug, Clone)]
pub struct GlobalFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of ComputeJobs (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns, like `kubectl get`.
    Table,
    /// The table with more columns.
    Wide,
    /// The underlying objects (or computed summary) as JSON.
    Json,
    /// The underlying objects (or computed summary) as YAML.
    Yaml,
}

impl OutputFormat {
    /// Whether a table with the extra columns is wanted.
    pub fn is_wide(self) -> bool {
        self == OutputFormat::Wide
    }
}

/// The subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Capacity, free GPUs and prices by GPU model and by member cluster.
    Top(TopArgs),
    /// The clearing-price index: what the latest jobs paid per GPU-hour, per pool and GPU
    /// model, beside the asks on offer now.
    Market(TopArgs),
    /// ComputeJobs: phase, cluster, GPUs, model, price, attempt, usage, cost, age.
    Jobs(JobsArgs),
    /// MemberClusters: pool, region, health conditions, GPUs, heartbeat, cordon.
    Members(MembersArgs),
    /// Why a ComputeJob is pending, or where and why it was placed; its attempts and Events.
    Explain(ExplainArgs),
    /// The commands a cluster owner runs to connect a joined MemberCluster to the hub.
    Join(JoinArgs),
    /// As a provider of an Open pool: leave it with a request signed by the member's wallet
    /// (ADR 0031). The hub cordons the member and removes it once its attempts have ended and
    /// settled; then unbond (the contract's delay applies).
    Leave(LeaveArgs),
    /// Escrow state of each attempt of a ComputeJob and its total cost.
    Payments(PaymentsArgs),
    /// The container log of one replica of a ComputeJob, read through the hub from the member
    /// that runs it (`-f` to follow it while it runs).
    Logs(LogsArgs),
    /// As a payer: authorise the hub's settlement account to lock up to an amount of your
    /// deposit in a pool's escrow until a time (an EIP-712 permit signed with your key).
    #[command(alias = "authorize")]
    Authorise(AuthoriseArgs),
    /// As a provider: submit the hub-signed usage receipts of your member's ended attempts to the
    /// escrow yourself (`JobEscrow.claim`), for locks the hub has not settled.
    Claim(ClaimArgs),
}

/// Arguments of `claim`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["member", "from_configmap"])))]
pub struct ClaimArgs {
    /// Read the receipts from this MemberCluster's Placements on the hub (the kubeconfig is the
    /// member's hub credential or any that may list them).
    #[arg(long, value_name = "MEMBER")]
    pub member: Option<String>,
    /// Read the receipts the agent kept on the member cluster instead (the kubeconfig is the
    /// member cluster's; the ConfigMap `gpufed-usage-receipts` in `-n`, the agent's jobs
    /// namespace, e.g. `gpufed-jobs`). Works when the hub is gone.
    #[arg(long)]
    pub from_configmap: bool,
    /// File holding the key (hex) of the account that sends the claims and pays their gas (any
    /// account: the payment goes to the lock's provider). Never printed.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// JSON-RPC endpoint to use instead of the one the hub wrote into the receipt.
    #[arg(long, value_name = "URL")]
    pub rpc_url: Option<String>,
    /// Only list the receipts and whether each lock can still be claimed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `authorise`.
#[derive(Args, Debug, Clone)]
pub struct AuthoriseArgs {
    /// The GpuPool whose escrow and hub account to authorise.
    #[arg(long, value_name = "POOL")]
    pub pool: String,
    /// Most the hub may lock from now on, in tokens (e.g. `500` or `12.5`). `0` revokes.
    #[arg(long, value_name = "TOKENS")]
    pub amount: gpufed_crds::TokenAmount,
    /// How long the authorisation lasts, e.g. `720h`.
    #[arg(long, value_name = "DURATION", default_value = "720h")]
    pub valid_for: gpufed_crds::KubeDuration,
    /// File holding the payer's private key (hex). Never printed.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Only sign: print the permit (anyone can submit it with `permitSpending`) instead of
    /// sending it from the payer's account.
    #[arg(long)]
    pub sign_only: bool,
}

/// Arguments of `top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Only this GpuPool.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
}

/// Arguments of `jobs`.
#[derive(Args, Debug, Clone)]
pub struct JobsArgs {
    /// Only the job of this name.
    pub name: Option<String>,
    /// List jobs of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `team=ml` (as `kubectl get -l`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

/// Arguments of `members`.
#[derive(Args, Debug, Clone)]
pub struct MembersArgs {
    /// Only the member of this name.
    pub name: Option<String>,
    /// Only members of this GpuPool.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
}

/// Arguments of `explain`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The ComputeJob.
    pub job: String,
}

/// Arguments of `join`.
#[derive(Args, Debug, Clone)]
pub struct JoinArgs {
    /// The MemberCluster.
    pub name: String,
    /// Write the member's hub kubeconfig (it holds a token) to this file, mode 0600. Without it
    /// nothing secret is printed; the output says how to fetch the kubeconfig instead.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Namespace on the member cluster that the member chart is installed into.
    #[arg(long, value_name = "NAMESPACE", default_value = "gpufed-system")]
    pub member_namespace: String,
    /// Name of the Secret to create on the member cluster (the chart's `hub.kubeconfigSecret`).
    #[arg(long, value_name = "NAME", default_value = "gpufed-hub-kubeconfig")]
    pub secret_name: String,
    /// Path or reference of the member chart in the printed `helm install`.
    #[arg(long, value_name = "CHART", default_value = "charts/gpufed-member")]
    pub chart: String,
    /// Join an Open pool by stake (ADR 0031) through the hub's registration endpoint at this
    /// URL, e.g. `https://hub.example.com:8443`, instead of reading an admin-made member from
    /// the hub: signs a join request with `--key-file`'s wallet and writes the answer's
    /// kubeconfig to `--kubeconfig-out`. Needs no hub kubeconfig.
    #[arg(long, value_name = "URL", requires_all = ["pool", "region", "prices", "kubeconfig_out"])]
    pub registration_url: Option<String>,
    /// PEM CA bundle of the registration endpoint (default: the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The Open GpuPool to join.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Region of the cluster.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Price per GPU-hour of a GPU model, `MODEL=PRICE` (e.g. `H100=2.40`), repeated per model;
    /// optionally with how many GPUs and which job lengths it is offered for
    /// (`H100=2.40,gpus=8,minDuration=10m,maxDuration=24h`).
    #[arg(long = "price", value_name = "MODEL=PRICE")]
    pub prices: Vec<String>,
    /// File holding the provider wallet's private key (hex). Never printed. Default: the
    /// environment variable `GPUFED_WALLET_KEY`.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// How long the signed request stays valid (at most 15m).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub valid_for: gpufed_crds::KubeDuration,
}

/// Arguments of `leave`.
#[derive(Args, Debug, Clone)]
pub struct LeaveArgs {
    /// The MemberCluster that leaves (one that joined by stake).
    pub name: String,
    /// The hub's registration endpoint, e.g. `https://hub.example.com:8443`.
    #[arg(long, value_name = "URL")]
    pub registration_url: String,
    /// PEM CA bundle of the registration endpoint (default: the system roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The member's GpuPool.
    #[arg(long, value_name = "POOL")]
    pub pool: String,
    /// File holding the member wallet's private key (hex). Never printed. Default: the
    /// environment variable `GPUFED_WALLET_KEY`.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// How long the signed request stays valid (at most 15m).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub valid_for: gpufed_crds::KubeDuration,
}

/// Arguments of `logs`.
#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// The ComputeJob.
    pub job: String,
    /// Keep printing new lines while the container runs, like `kubectl logs -f`.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The replica (its completion index, from 0) whose log to read.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub replica: u32,
    /// The container (default: the workload's first).
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,
    /// How long to wait for each chunk before giving up.
    #[arg(long, value_name = "DURATION", default_value = "45s")]
    pub timeout: gpufed_crds::KubeDuration,
}

/// Arguments of `payments`.
#[derive(Args, Debug, Clone)]
pub struct PaymentsArgs {
    /// The ComputeJob.
    pub job: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_are_spelled_like_kubectl_and_may_come_after_the_command() {
        let cli = Cli::try_parse_from([
            "kubectl-gpufed",
            "jobs",
            "-A",
            "-o",
            "wide",
            "--context",
            "hub",
            "--kubeconfig",
            "/tmp/k",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Wide);
        assert_eq!(cli.global.context.as_deref(), Some("hub"));
        assert!(matches!(
            cli.command,
            Command::Jobs(JobsArgs {
                all_namespaces: true,
                ..
            })
        ));
        let cli =
            Cli::try_parse_from(["kubectl-gpufed", "-n", "team-a", "explain", "train"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.global.output, OutputFormat::Table);
    }

    #[test]
    fn join_defaults_match_the_member_chart_conventions() {
        let cli = Cli::try_parse_from(["kubectl-gpufed", "join", "alpha"]).unwrap();
        let Command::Join(args) = cli.command else {
            panic!("not join")
        };
        assert_eq!(args.member_namespace, "gpufed-system");
        assert_eq!(args.secret_name, "gpufed-hub-kubeconfig");
        assert_eq!(args.chart, "charts/gpufed-member");
        assert!(args.kubeconfig_out.is_none());
    }

    #[test]
    fn an_unknown_output_format_is_rejected() {
        assert!(Cli::try_parse_from(["kubectl-gpufed", "top", "-o", "csv"]).is_err());
    }
}
