//! The short-lived hub token of a member that joined by stake (ADR 0031): the agent reads it from
//! a file (`--hub-token-file`), which kube's client re-reads every minute, and before half of its
//! lifetime has passed asks the hub's registration endpoint for a new one (`POST /v1/renew` with
//! the current token as bearer), written to the file atomically. A token that could not be
//! renewed before it expired needs a new signed join request (`kubectl gpufed join`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use gpufed_crds::join::{RENEW_PATH, RenewResponse};

use crate::error::{Error, Result};

/// How long to wait after a failed renewal before trying again.
const RETRY_EVERY: Duration = Duration::from_secs(15);

/// The `exp` claim (Unix seconds) of a JWT, without checking its signature (the hub's apiserver
/// does that; the agent only needs to know when to renew).
pub fn expiry_of(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// When to renew a token that expires at `expires`: half way from `now`, at least 10 s from now.
pub fn renew_at(now: u64, expires: u64) -> u64 {
    now + (expires.saturating_sub(now) / 2).max(10)
}

/// Writes `token` to `path` through a temporary file and a rename, mode 0600, so the client
/// never reads half a token.
pub fn write_token(path: &Path, token: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e: std::io::Error| {
        Error::Config(format!("{what} token file {}: {e}", path.display()))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("writing the", e))?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing the", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("replacing the", e))
}

/// The inline token of the kubeconfig at `kubeconfig`, if its user has one.
fn inline_token(kubeconfig: &Path) -> Result<Option<String>> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| Error::Config(format!("reading {}: {e}", kubeconfig.display())))?;
    let doc: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| Error::Config(format!("parsing {}: {e}", kubeconfig.display())))?;
    Ok(doc["users"]
        .as_array()
        .and_then(|users| users.first())
        .and_then(|u| u["user"]["token"].as_str())
        .map(str::to_string))
}

/// Makes the hub client read its token from `token_file`, first writing there the kubeconfig's
/// own token when the file does not exist yet (a fresh install).
pub fn use_token_file(
    config: &mut kube::Config,
    kubeconfig: &Path,
    token_file: &Path,
) -> Result<()> {
    if !token_file.exists() {
        let token = inline_token(kubeconfig)?.ok_or_else(|| {
            Error::Config(format!(
                "--hub-token-file {} does not exist and {} has no token to start it with",
                token_file.display(),
                kubeconfig.display()
            ))
        })?;
        write_token(token_file, &token)?;
    }
    config.auth_info = serde_json::from_value(serde_json::json!({
        "tokenFile": token_file.display().to_string(),
    }))
    .map_err(|e| Error::Config(format!("hub credentials: {e}")))?;
    Ok(())
}

/// The renewal loop's settings.
#[derive(Clone, Debug)]
pub struct Renewal {
    /// Base URL of the hub's registration endpoint, e.g. `https://hub.example.com:8443`.
    pub url: String,
    /// PEM CA bundle of the endpoint (default: the system roots).
    pub ca_file: Option<PathBuf>,
    /// The token file the hub client reads.
    pub token_file: PathBuf,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Renewal {
    fn client(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Config(format!("reading {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("CA bundle {}: {e}", ca.display())))?;
            b = b.tls_certs_only(certs);
        }
        b.build()
            .map_err(|e| Error::Config(format!("registration endpoint client: {e}")))
    }

    /// Asks the hub for a new token with `current`, and writes it to the token file.
    pub async fn renew_once(&self, client: &reqwest::Client, current: &str) -> Result<u64> {
        let url = format!("{}{RENEW_PATH}", self.url.trim_end_matches('/'));
        let resp = client
            .post(&url)
            .bearer_auth(current)
            .send()
            .await
            .map_err(|e| Error::Config(format!("renewing the hub token at {url}: {e}")))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::Config(format!("renewing the hub token: {e}")))?;
        if !status.is_success() {
            return Err(Error::Config(format!(
                "the hub refused to renew the token ({status}): {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let renewed: RenewResponse =
            serde_json::from_slice(&body).map_err(|source| Error::Serde {
                context: "the renewal answer".into(),
                source,
            })?;
        write_token(&self.token_file, &renewed.token)?;
        Ok(renewed.expires)
    }

    /// Renews before each token's half life, until the task is dropped.
    pub async fn run(self) {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "hub token renewal disabled");
                return;
            }
        };
        loop {
            let current = match std::fs::read_to_string(&self.token_file) {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    tracing::warn!(file = %self.token_file.display(), error = %e, "reading the hub token");
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            let now = now_secs();
            let at = expiry_of(&current).map_or(now, |exp| renew_at(now, exp));
            tokio::time::sleep(Duration::from_secs(at.saturating_sub(now))).await;
            match self.renew_once(&client, &current).await {
                Ok(expires) => tracing::info!(expires, "hub token renewed"),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the hub token failed; retrying");
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jwt(exp: u64) -> String {
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            enc(serde_json::json!({"alg": "RS256"})),
            enc(serde_json::json!({"exp": exp, "sub": "x"}))
        )
    }

    #[test]
    fn a_token_is_renewed_half_way_through_its_life() {
        assert_eq!(expiry_of(&jwt(1_700_003_600)), Some(1_700_003_600));
        assert_eq!(expiry_of("not-a-jwt"), None);
        assert_eq!(renew_at(1000, 4600), 2800);
        assert_eq!(renew_at(1000, 1000), 1010, "an expired token is tried soon");
    }

    #[test]
    fn the_token_file_is_started_from_the_kubeconfig_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\nclusters: [{name: h, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: abc}}]\ncontexts: [{name: c, context: {cluster: h, user: u}}]\ncurrent-context: c\n",
        )
        .unwrap();
        let file = dir.path().join("token");
        let mut config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        use_token_file(&mut config, &kc, &file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "abc");
        assert_eq!(
            config.auth_info.token_file.as_deref(),
            Some(file.to_str().unwrap())
        );
        write_token(&file, "def").unwrap();
        // An existing file is kept (it holds a renewed token).
        use_token_file(&mut config, &kc, &file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "def");
    }
}
