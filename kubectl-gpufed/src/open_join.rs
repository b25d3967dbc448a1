//! `kubectl gpufed join NAME --registration-url URL`: a provider joins an Open pool by stake
//! (ADR 0031). Reads the pool's signing domain from the hub's registration endpoint
//! (`GET /v1/pools/<pool>`), signs a `JoinRequest` (EIP-712, [`gpufed_crds::join::typed`]) with
//! the wallet's key, sends it (`POST /v1/join`), and writes the kubeconfig of the answer (a
//! short-lived token the agent renews) to `--kubeconfig-out`. `kubectl gpufed leave NAME` signs a
//! `LeaveRequest` the same way and sends it (`POST /v1/leave`). The key is read from a file or the
//! environment and never printed.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::signers::Signer as _;
use alloy::signers::local::PrivateKeySigner;
use gpufed_crds::ModelPrice;
use gpufed_crds::join::{
    JOIN_PATH, JoinErrorBody, JoinRequestBody, JoinResponse, LEAVE_PATH, LeaveRequestBody,
    LeaveResponse, POOLS_PATH, PoolInfo, typed,
};

use crate::cli::{JoinArgs, LeaveArgs};
use crate::error::{Error, Result};

/// Environment variable holding the wallet key when `--key-file` is not given.
pub const KEY_ENV: &str = "GPUFED_WALLET_KEY";

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Registration(what.to_string())
}

/// `MODEL=PRICE[,gpus=N][,minDuration=D][,maxDuration=D]` as a model price (signed with the
/// join request).
pub fn parse_price(text: &str) -> Result<ModelPrice> {
    text.parse()
        .map_err(|e: String| fail(format!("--price {e}")))
}

/// The wallet's key from `--key-file` or [`KEY_ENV`]; the error never contains the key.
fn signer(key_file: Option<&std::path::Path>) -> Result<PrivateKeySigner> {
    let (key, from) = match key_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read --key-file {}: {e}", path.display())))?,
            format!("--key-file {}", path.display()),
        ),
        None => (
            std::env::var(KEY_ENV)
                .map_err(|_| fail(format!("give --key-file or set {KEY_ENV}")))?,
            KEY_ENV.to_string(),
        ),
    };
    PrivateKeySigner::from_str(key.trim())
        .map_err(|_| fail(format!("{from} does not hold a hex private key")))
}

fn client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| fail(format!("cannot read --ca-file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| fail(format!("--ca-file {}: {e}", ca.display())))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(fail)
}

/// The hub's refusal as `Reason: message`, or the raw body.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<JoinErrorBody>(body) {
        Ok(e) => fail(format!(
            "the hub refused ({status}) {}: {}",
            e.reason, e.message
        )),
        Err(_) => fail(format!(
            "the hub answered {status}: {}",
            String::from_utf8_lossy(body)
        )),
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>)> {
    let resp = req
        .send()
        .await
        .map_err(|e| fail(format!("cannot reach the registration endpoint: {e}")))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(fail)?;
    Ok((status, body.to_vec()))
}

/// Runs the open join and returns what to print.
pub async fn run(args: &JoinArgs) -> Result<String> {
    let url = args
        .registration_url
        .as_deref()
        .ok_or_else(|| fail("--registration-url is required"))?
        .trim_end_matches('/');
    let pool = args
        .pool
        .clone()
        .ok_or_else(|| fail("--pool is required"))?;
    let out = args
        .kubeconfig_out
        .clone()
        .ok_or_else(|| fail("--kubeconfig-out is required"))?;
    let prices = args
        .prices
        .iter()
        .map(|p| parse_price(p))
        .collect::<Result<Vec<_>>>()?;
    let signer = signer(args.key_file.as_deref())?;
    let http = client(args.ca_file.as_deref())?;
    let info = pool_info(&http, url, &pool).await?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(fail)?;
    let mut request = JoinRequestBody {
        pool,
        cluster: args.name.clone(),
        region: args.region.clone().unwrap_or_default(),
        prices,
        nonce: nonce(now),
        expires: now.as_secs() + args.valid_for.as_secs_ceil(),
        wallet: wallet(&signer)?,
        signature: String::new(),
    };
    let bond = alloy::primitives::Address::from(info.bond.to_bytes());
    request.signature = sign(
        &signer,
        typed::signing_hash(&request, info.chain_id, bond),
        "join",
    )
    .await?;
    let joined: JoinResponse = post(&http, url, JOIN_PATH, &request).await?;
    crate::commands::write_private(&out, joined.kubeconfig.as_bytes())?;
    let (ca_file, ca_set) = match &args.ca_file {
        Some(ca) => (
            format!(" --from-file=renew-ca.crt={}", ca.display()),
            " --set hub.renewCaKey=renew-ca.crt",
        ),
        None => (String::new(), ""),
    };
    Ok(format!(
        "member {} joined pool {} with wallet {} (bond {} per member in ProviderBond {}).\n\
         It is on probation: it gets only the pool's challenges until its GPUs pass one.\n\
         Its hub kubeconfig is in {} (token valid until unix time {}; the agent renews it).\n\
         Next, on the member cluster:\n  \
         kubectl create namespace {ns}\n  \
         kubectl -n {ns} create secret generic {secret} --from-file=kubeconfig={}{ca_file}\n  \
         helm install gpufed-member {chart} -n {ns} --set cluster={} \\\n    \
         --set hub.kubeconfigSecret={secret} --set hub.renewUrl={url}{ca_set}\n",
        joined.cluster,
        info.pool,
        request.wallet,
        info.min_bond,
        info.bond,
        out.display(),
        joined.expires,
        out.display(),
        joined.cluster,
        ns = args.member_namespace,
        secret = args.secret_name,
        chart = args.chart,
    ))
}

/// The pool's signing domain from the registration endpoint.
async fn pool_info(http: &reqwest::Client, url: &str, pool: &str) -> Result<PoolInfo> {
    let (status, body) = send(http.get(format!("{url}{POOLS_PATH}{pool}"))).await?;
    if !status.is_success() {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| fail(format!("the hub's pool answer: {e}")))
}

/// Unique per request; the hub refuses a request it has seen.
fn nonce(now: Duration) -> u64 {
    u64::try_from(now.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
}

fn wallet(signer: &PrivateKeySigner) -> Result<gpufed_crds::EvmAddress> {
    signer
        .address()
        .to_string()
        .parse()
        .map_err(|e| fail(format!("wallet address: {e}")))
}

/// `digest` signed by `signer`, as the hex the hub reads.
async fn sign(
    signer: &PrivateKeySigner,
    digest: alloy::primitives::B256,
    what: &str,
) -> Result<String> {
    let signature = signer
        .sign_hash(&digest)
        .await
        .map_err(|e| fail(format!("signing the {what} request: {e}")))?;
    Ok(format!("0x{}", alloy::hex::encode(signature.as_bytes())))
}

/// Posts `request` to `path` and reads the answer as `T`, or the hub's refusal.
async fn post<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    request: &impl serde::Serialize,
) -> Result<T> {
    let (status, body) = send(
        http.post(format!("{url}{path}"))
            .body(serde_json::to_vec(request).map_err(fail)?)
            .header("content-type", "application/json"),
    )
    .await?;
    if !status.is_success() {
        return Err(refusal(status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| fail(format!("the hub's answer: {e}")))
}

/// Runs `kubectl gpufed leave` and returns what to print.
pub async fn leave(args: &LeaveArgs) -> Result<String> {
    let url = args.registration_url.trim_end_matches('/');
    let signer = signer(args.key_file.as_deref())?;
    let http = client(args.ca_file.as_deref())?;
    let info = pool_info(&http, url, &args.pool).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(fail)?;
    let mut request = LeaveRequestBody {
        pool: args.pool.clone(),
        cluster: args.name.clone(),
        nonce: nonce(now),
        expires: now.as_secs() + args.valid_for.as_secs_ceil(),
        wallet: wallet(&signer)?,
        signature: String::new(),
    };
    let bond = alloy::primitives::Address::from(info.bond.to_bytes());
    request.signature = sign(
        &signer,
        typed::leave_signing_hash(&request, info.chain_id, bond),
        "leave",
    )
    .await?;
    let left: LeaveResponse = post(&http, url, LEAVE_PATH, &request).await?;
    let when = if left.running_attempts == 0 {
        "now".to_string()
    } else {
        format!(
            "once its {} attempt(s) have ended and settled",
            left.running_attempts
        )
    };
    Ok(format!(
        "member {} is leaving pool {}: cordoned (no new jobs), removed by the hub {when}; its \
         credential stops working then.\nThen `helm uninstall` the member chart and unbond your \
         stake from ProviderBond {} (the contract's unbonding delay applies).\n",
        left.cluster, info.pool, info.bond
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn prices_are_model_equals_price() {
        let p = parse_price("H100=2.40").unwrap();
        assert_eq!(p.model, "H100");
        assert_eq!(p.price_per_gpu_hour, "2.40".parse().unwrap());
        assert!(parse_price("H100").is_err());
        assert!(parse_price("H100=cheap").is_err());
        let limited = parse_price("H100=2.40,gpus=8,maxDuration=24h").unwrap();
        assert_eq!(limited.gpus, Some(8));
        assert!(
            parse_price("H100=2.40,gpus=0")
                .unwrap_err()
                .to_string()
                .contains("gpus must be a whole number")
        );
    }

    #[test]
    fn a_bad_key_file_is_refused_without_printing_it() {
        let dir = std::env::temp_dir().join(format!("gpufed-key-{}", std::process::id()));
        std::fs::write(&dir, "not-a-key-but-secret").unwrap();
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "kubectl-gpufed",
            "join",
            "alpha",
            "--registration-url",
            "https://127.0.0.1:1",
            "--pool",
            "p",
            "--region",
            "eu",
            "--price",
            "H100=1",
            "--kubeconfig-out",
            "/tmp/x",
            "--key-file",
            dir.to_str().unwrap(),
        ])
        .unwrap();
        let crate::cli::Command::Join(args) = cli.command else {
            panic!("not join")
        };
        let err = signer(args.key_file.as_deref()).unwrap_err().to_string();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.contains("does not hold a hex private key"), "{err}");
        assert!(!err.contains("not-a-key-but-secret"), "{err}");
    }
}
