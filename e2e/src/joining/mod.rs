//! Helpers for tests of members joining a pool the way a cluster owner does it ([`pool`]): real
//! `helm` installs of the charts ([`helm`]), credentials of the charts' ServiceAccounts as kubeconfigs
//! ([`token`]), `kubectl get`-style tables ([`table`]), a TCP proxy that can cut one agent off from
//! the hub ([`proxy`]), and a check for 403 answers.

pub mod helm;
pub mod pool;
pub mod proxy;
pub mod table;
pub mod token;

pub use helm::Helm;
pub use pool::{
    ChartHub, HubOptions, JOBS_NAMESPACE, JoinCredential, MemberPlan, Pool, SYSTEM_NAMESPACE,
    install_hub_chart, spawn_chart_hub,
};
pub use proxy::TcpProxy;
pub use table::{Table, table};
pub use token::{service_account_kubeconfig, service_account_kubeconfig_for};

/// Whether `result` is the apiserver's 403 Forbidden.
pub fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Whether the hub reports `member` Ready.
pub fn member_ready(member: &gpufed_crds::MemberCluster) -> bool {
    member.status.as_ref().is_some_and(|s| {
        gpufed_crds::conditions::is_true(&s.conditions, gpufed_crds::conditions::member::READY)
    })
}

/// Waits until the hub reports member `name` Ready with `free` free GPUs.
pub async fn wait_ready_with_free(
    hub: &kube::Client,
    name: &str,
    free: u32,
    timeout: std::time::Duration,
) -> Result<(), crate::Error> {
    let members: kube::Api<gpufed_crds::MemberCluster> = kube::Api::all(hub.clone());
    crate::wait_until(
        timeout,
        &format!("{name} Ready with {free} free GPUs"),
        || {
            let members = members.clone();
            async move {
                let m = members.get(name).await.ok()?;
                (member_ready(&m) && m.status.as_ref()?.free_gpus == free).then_some(())
            }
        },
    )
    .await
}

/// The phase and reason a Placement's status reports.
pub fn placement_phase(
    p: &gpufed_crds::Placement,
) -> (Option<gpufed_crds::PlacementPhase>, Option<String>) {
    p.status
        .as_ref()
        .map(|s| (s.phase, s.reason.clone()))
        .unwrap_or_default()
}

/// The value of the Prometheus sample `name` (exactly, labels included) served at `addr`/metrics,
/// if the endpoint answers and has it.
pub async fn scrape(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let timeout = std::time::Duration::from_secs(5);
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
    })
    .await
    .ok()
    .flatten()
}

/// What `kubectl gpufed join` asks of an Open pool's registration endpoint (ADR 0031).
pub struct JoinRequest<'a> {
    /// The member's name.
    pub member: &'a str,
    /// The endpoint's URL.
    pub url: &'a str,
    /// The endpoint's CA certificate (PEM file).
    pub ca_file: &'a std::path::Path,
    /// The pool.
    pub pool: &'a str,
    /// `MODEL=PRICE`.
    pub price: &'a str,
    /// Where the plugin writes the member's kubeconfig.
    pub kubeconfig_out: &'a std::path::Path,
    /// The provider's wallet key (hex).
    pub wallet_key: &'a str,
}

/// Runs `kubectl gpufed join` as a provider would (region `eu-west`, the wallet key in
/// `GPUFED_WALLET_KEY`, no kubeconfig of its own); returns its exit status and output.
pub async fn plugin_join(
    tools: &crate::Tools,
    r: &JoinRequest<'_>,
) -> Result<std::process::Output, crate::Error> {
    tokio::process::Command::new(tools.workspace_bin("kubectl-gpufed")?)
        .args(["join", r.member, "--registration-url", r.url, "--ca-file"])
        .arg(r.ca_file)
        .args(["--pool", r.pool, "--region", "eu-west", "--price", r.price])
        .arg("--kubeconfig-out")
        .arg(r.kubeconfig_out)
        .env("GPUFED_WALLET_KEY", r.wallet_key)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .map_err(|e| crate::Error::Other(format!("running kubectl gpufed join: {e}")))
}
