//! The `gpu-probe` binary: parse flags, set up logging and the client, run the probe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gpu_probe::{ProbeConfig, SimOptions, SimOverrides, Target};
use gpufed_crds::ProbeBackend;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// GPU telemetry for gpufed: reads GPUs (NVML, or simulated for kwok nodes), writes GpuNode status
/// and Node labels, serves DCGM-style Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "gpu-probe", version)]
struct Args {
    /// Run something else than the probe loop.
    #[command(subcommand)]
    command: Option<Command>,
    /// Where figures come from.
    #[arg(long, value_enum, env = "GPU_PROBE_BACKEND", default_value = "nvml")]
    backend: Backend,
    /// The node to serve (DaemonSet mode); usually from the downward API.
    #[arg(long, env = "NODE_NAME", conflicts_with = "all_nodes")]
    node_name: Option<String>,
    /// Serve every Node matching --node-selector (sim backend only).
    #[arg(long, env = "GPU_PROBE_ALL_NODES")]
    all_nodes: bool,
    /// Label selector of the nodes served with --all-nodes.
    #[arg(
        long,
        env = "GPU_PROBE_NODE_SELECTOR",
        default_value = "gpufed.io/sim-profile"
    )]
    node_selector: String,
    /// Kubeconfig file; default: in-cluster config, then $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Time between reads and writes, e.g. 10s, 500ms, 1m.
    #[arg(long, env = "GPU_PROBE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// Deadline of every apiserver call.
    #[arg(long, env = "GPU_PROBE_API_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    api_timeout: Duration,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(long, env = "GPU_PROBE_METRICS_ADDR", default_value = "0.0.0.0:9400")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, env = "GPU_PROBE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// NVML library to load (default libnvidia-ml.so.1, then libnvidia-ml.so).
    #[arg(long, env = "GPU_PROBE_NVML_LIBRARY")]
    nvml_library: Option<PathBuf>,
    /// Seed of the simulator; each node's figures depend on hash(seed, node name).
    #[arg(long, env = "GPU_PROBE_SEED", default_value_t = 0)]
    seed: u64,
    /// Share of simulated GPUs (0-1) that report uncorrected ECC errors (unhealthy).
    #[arg(long, env = "GPU_PROBE_SIM_FAIL_RATE", default_value_t = 0.0)]
    sim_fail_rate: f64,
    /// Sim profile, overriding the node's gpufed.io/sim-profile label (needed with --print).
    #[arg(long, env = "GPU_PROBE_SIM_PROFILE")]
    sim_profile: Option<String>,
    /// Simulated GPUs per node, overriding the node's nvidia.com/gpu capacity.
    #[arg(long, env = "GPU_PROBE_SIM_GPUS")]
    sim_gpus: Option<u32>,
    /// Do one pass, then exit (non-zero if it failed).
    #[arg(long)]
    once: bool,
    /// Print readings as JSON lines instead of writing to the apiserver.
    #[arg(long)]
    print: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run a challenge (docs/adr/0022-challenges.md): a seeded matrix product on every device,
    /// answered as one JSON line on stdout and in the termination message.
    Challenge(ChallengeArgs),
}

#[derive(Debug, clap::Args)]
struct ChallengeArgs {
    /// Where the products are computed: `cuda` (every GPU the container sees, through the CUDA
    /// driver loaded at run time) or `cpu` (tests, and the sizes the CPU profile covers).
    #[arg(long, value_enum, default_value = "cpu")]
    backend: ChallengeBackend,
    /// The challenge id the hub gave.
    #[arg(long)]
    id: String,
    /// The hub's nonce, 64 hex digits.
    #[arg(long)]
    nonce: String,
    /// Matrix size, a multiple of 8.
    #[arg(long)]
    n: usize,
    /// Devices the CPU backend computes for: named by the GPU UUIDs in `NVIDIA_VISIBLE_DEVICES`
    /// (set by the NVIDIA device plugin), `CPU-0`… for those it does not name.
    #[arg(long, env = "GPU_PROBE_CHALLENGE_CPU_DEVICES", default_value_t = 1)]
    cpu_devices: usize,
    /// The GPUs the container was given, as the NVIDIA device plugin sets them (UUIDs, comma
    /// separated); the CPU backend answers under these names.
    #[arg(long, env = "NVIDIA_VISIBLE_DEVICES", hide = true)]
    visible_devices: Option<String>,
    /// Where the answer is written besides stdout (the container's termination message).
    #[arg(long, default_value = "/dev/termination-log")]
    answer_file: PathBuf,
    /// Write the answer to stdout only (e.g. by hand, outside a container).
    #[arg(long)]
    stdout_only: bool,
    /// Test only: answer digests of another product (a dishonest member).
    #[arg(long, env = "GPU_PROBE_CHALLENGE_CHEAT_WRONG", hide = true)]
    cheat_wrong: bool,
    /// Test only: sleep this long in each device's timed section (a slow member).
    #[arg(long, env = "GPU_PROBE_CHALLENGE_CHEAT_DELAY", hide = true, value_parser = parse_duration)]
    cheat_delay: Option<Duration>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ChallengeBackend {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Nvml,
    Sim,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<gpufed_crds::KubeDuration>()
        .map(|d| d.as_duration())
        .map_err(|e| e.to_string())
}

impl Args {
    fn config(&self) -> ProbeConfig {
        let target = if self.all_nodes {
            Target::AllNodes {
                selector: self.node_selector.clone(),
            }
        } else {
            Target::Node(self.node_name.clone().unwrap_or_default())
        };
        ProbeConfig {
            backend: match self.backend {
                Backend::Nvml => ProbeBackend::Nvml,
                Backend::Sim => ProbeBackend::Sim,
            },
            target,
            interval: self.interval,
            api_timeout: self.api_timeout,
            metrics_addr: Some(self.metrics_addr),
            nvml_library: self.nvml_library.clone(),
            sim: SimOptions {
                seed: self.seed,
                fail_rate: self.sim_fail_rate,
                overrides: SimOverrides {
                    profile: self.sim_profile.clone(),
                    gpus: self.sim_gpus,
                },
            },
            once: self.once,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config and no usable kubeconfig (pass --kubeconfig)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so `--print` output on stdout stays pure JSON.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match start(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, without a backtrace: this is what an operator reads.
            let message = match e.downcast_ref::<gpu_probe::ProbeError>() {
                Some(probe) => probe.chain(),
                None => gpu_probe::error_chain(e.as_ref()),
            };
            eprintln!("gpu-probe: error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `gpu-probe challenge`: runs the challenge, prints the answer and writes it to `answer_file`.
fn challenge(args: &ChallengeArgs) -> anyhow::Result<()> {
    use gpu_probe::challenge::{Challenge, run};
    let challenge = Challenge::new(&args.id, &args.nonce, args.n)?;
    if args.cpu_devices == 0 {
        anyhow::bail!("--cpu-devices must be at least 1");
    }
    let misbehave = run::Misbehaviour {
        wrong: args.cheat_wrong,
        delay: args.cheat_delay.unwrap_or_default(),
    };
    let answer = match args.backend {
        ChallengeBackend::Cpu => {
            let names = run::device_names(args.cpu_devices, args.visible_devices.as_deref());
            run::run_cpu_as(&challenge, &names, misbehave)
        }
        ChallengeBackend::Cuda => gpu_probe::challenge::cuda::run_cuda(&challenge, misbehave)?,
    };
    let line = answer.to_line()?;
    println!("{line}");
    if !args.stdout_only {
        std::fs::write(&args.answer_file, &line)
            .with_context(|| format!("writing the answer to {}", args.answer_file.display()))?;
    }
    Ok(())
}

async fn start(args: &Args) -> anyhow::Result<()> {
    if let Some(Command::Challenge(c)) = &args.command {
        return challenge(c);
    }
    let config = args.config();
    if args.print {
        gpu_probe::print::print_loop(&config, std::io::stdout(), shutdown_signal()).await?;
        return Ok(());
    }
    config.validate()?;
    let client = client(args.kubeconfig.as_ref()).await?;
    gpu_probe::run(client, config, shutdown_signal()).await?;
    Ok(())
}
