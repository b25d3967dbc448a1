//! Open joining by stake (ADR 0031) against a real apiserver and a real anvil with the real
//! ProviderBond: the hub serves its registration endpoint over TLS; a provider with enough stake
//! joins with `kubectl gpufed join --registration-url` and no admin involvement, and its member
//! registers, heartbeats with the short-lived credential it got and shows in probation; a bad
//! signature, an expired request, too little bond, a replay, a taken name and a flood each get
//! their reason and create nothing; the credential can do what a member may and no more, and
//! renews; a credential that did not come from a join cannot renew. The hub runs with the token of
//! the hub chart's ServiceAccount (installed with `registration.enabled`), so the chart's RBAC is
//! proven enough for all of it. A tenant job without `spec.allowUnverified` waits naming the
//! member's probation; one with it is placed there, its attempt marked `unverifiedMember`.
//! Leaving by a request signed with the member's wallet: refused for another wallet, an
//! admin-made member, an unknown one and a replay; an idle member is removed at once with its
//! credential, a busy one (`kubectl gpufed leave`) only after its attempt ended and settled.
//!
//! Needs `cargo build -p gpufed-operator -p kubectl-gpufed --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use base64::Engine as _;
use gpufed_crds::join::{
    JOIN_PATH, JoinErrorBody, JoinRequestBody, JoinResponse, LABEL_ADMISSION, LEAVE_PATH,
    LeaveRequestBody, POOLS_PATH, PoolInfo, RENEW_PATH, RenewResponse, typed,
};
use gpufed_crds::naming::{member_kubeconfig_secret, member_namespace};
use gpufed_crds::{GpuPool, MemberCluster, ModelPrice};
use gpufed_e2e::chain::{accounts, unix_now};
use gpufed_e2e::hubctl::{keep_heartbeating, node, report_inventory};
use gpufed_e2e::joining::{Helm, SYSTEM_NAMESPACE, service_account_kubeconfig};
use gpufed_e2e::market;
use gpufed_e2e::process::free_port;
use gpufed_e2e::{client_from_kubeconfig, run_test, wait_until};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// The most this test may take, start-up included.
const HARD_DEADLINE: Duration = Duration::from_secs(300);
/// Requests one source may send back to back (the test's own requests all come from 127.0.0.1).
const BURST: u32 = 40;

/// A self-signed certificate for 127.0.0.1 and its key, written under `dir`.
fn tls(dir: &Path) -> (PathBuf, PathBuf) {
    gpufed_e2e::pki::self_signed_localhost(dir, "registration").unwrap()
}

/// The endpoint with the test's CA.
struct Endpoint {
    url: String,
    http: reqwest::Client,
}

impl Endpoint {
    async fn post(&self, path: &str, body: Vec<u8>, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let mut v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        if let Some(r) = retry_after {
            v["retryAfterHeader"] = r.into();
        }
        (status, v)
    }

    async fn join(&self, body: &JoinRequestBody) -> (u16, Value) {
        self.post(JOIN_PATH, serde_json::to_vec(body).unwrap(), None)
            .await
    }

    async fn leave(&self, body: &LeaveRequestBody) -> (u16, Value) {
        self.post(LEAVE_PATH, serde_json::to_vec(body).unwrap(), None)
            .await
    }

    /// A refused join: its status, reason and message.
    async fn refused(&self, body: &JoinRequestBody) -> (u16, String, String) {
        let (status, v) = self.join(body).await;
        let e: JoinErrorBody = serde_json::from_value(v.clone())
            .unwrap_or_else(|_| panic!("not a refusal: {status} (an answer with a token)"));
        (status, e.reason, e.message)
    }
}

/// A join request for `cluster` by the wallet `key`, signed for `info`'s domain, changed by `f`
/// before signing.
fn signed(
    key: &str,
    info: &PoolInfo,
    cluster: &str,
    f: impl FnOnce(&mut JoinRequestBody),
) -> JoinRequestBody {
    let signer = PrivateKeySigner::from_str(key).unwrap();
    let mut b = JoinRequestBody {
        pool: info.pool.clone(),
        cluster: cluster.into(),
        region: "eu-west".into(),
        prices: vec![ModelPrice::new("H100", "2.40".parse().unwrap())],
        nonce: rand::random(),
        expires: unix_now() + 300,
        wallet: signer.address().to_string().parse().unwrap(),
        signature: String::new(),
    };
    f(&mut b);
    let bond = Address::from(info.bond.to_bytes());
    let sig = signer
        .sign_hash_sync(&typed::signing_hash(&b, info.chain_id, bond))
        .unwrap();
    b.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
    b
}

/// A leave request for `cluster` by the wallet `key`, signed for `info`'s domain.
fn leave_signed(key: &str, info: &PoolInfo, cluster: &str) -> LeaveRequestBody {
    let signer = PrivateKeySigner::from_str(key).unwrap();
    let mut b = LeaveRequestBody {
        pool: info.pool.clone(),
        cluster: cluster.into(),
        nonce: rand::random(),
        expires: unix_now() + 300,
        wallet: signer.address().to_string().parse().unwrap(),
        signature: String::new(),
    };
    let bond = Address::from(info.bond.to_bytes());
    let sig = signer
        .sign_hash_sync(&typed::leave_signing_hash(&b, info.chain_id, bond))
        .unwrap();
    b.signature = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
    b
}

/// Whether the caller of `client` may `verb` `resource` (`resource/subresource`) of API group
/// `group`, in `ns`, named `name`.
async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> bool {
    gpufed_e2e::access::may(client, verb, group, resource, ns, name)
        .await
        .unwrap()
}

/// The `exp` claim of a JWT.
fn exp_of(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&raw).unwrap()["exp"]
        .as_u64()
        .unwrap()
}

async fn member_names(c: &Client) -> Vec<String> {
    let mut names: Vec<String> = Api::<MemberCluster>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_provider_joins_an_open_pool_by_stake_and_every_bad_request_is_refused_creating_nothing() {
    run_test(HARD_DEADLINE, || async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // anvil with the contracts; ALPHA, BETA and GAMMA staked 200; pool `market`, minBond 100;
        // team-a's payer has 50 in escrow for the jobs that test opting in.
        let mut m = market::market("openjoin", 50, json!({})).await.unwrap();
        let admin = m.hub.client();
        Api::<GpuPool>::all(admin.clone())
            .patch(
                "market",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {
                    "admission": "Open",
                    "verification": {"required": true, "image": "gpufed/gpu-probe:e2e", "backend": "Cpu"}
                }})),
            )
            .await
            .unwrap();
        let dir = m.hub.dir().unwrap().to_path_buf();
        let (cert, key) = tls(&dir);
        let port = free_port().unwrap();
        let listen = format!("127.0.0.1:{port}");
        // The hub chart with registration enabled, and the hub running with its ServiceAccount's
        // token: the chart's RBAC is enough for the whole flow (ADR 0017, ADR 0031).
        let server = m.hub.server().to_string();
        Helm::new(&m.tools, &m.hub)
            .unwrap()
            .install(
                "gpufed-hub",
                &m.tools.root().join("charts/gpufed-hub"),
                SYSTEM_NAMESPACE,
                &[
                    ("memberApiServer", &server),
                    ("registration.enabled", "true"),
                    ("registration.tlsSecret", "registration-tls"),
                ],
            )
            .await
            .unwrap();
        let hub_kubeconfig = service_account_kubeconfig(
            &m.hub,
            SYSTEM_NAMESPACE,
            "gpufed-hub",
            &dir.join("gpufed-hub.kubeconfig"),
        )
        .await
        .unwrap();
        let metrics_addr = format!("127.0.0.1:{}", free_port().unwrap());
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", hub_kubeconfig.display()),
            format!("--metrics-addr={metrics_addr}"),
            "hub".into(),
            format!("--namespace={SYSTEM_NAMESPACE}"),
            "--identity=hub-0".into(),
            "--lease-duration=4s".into(),
            format!("--member-api-server={server}"),
            format!("--registration-listen={listen}"),
            format!("--registration-tls-cert={}", cert.display()),
            format!("--registration-tls-key={}", key.display()),
            "--registration-token-ttl=10m".into(),
            format!("--registration-burst={BURST}"),
            "--registration-refill=1h".into(),
        ];
        let bin = m.tools.workspace_bin("gpufed-operator").unwrap();
        m.hub
            .spawn(
                "hub",
                &bin,
                &args,
                &[("RUST_LOG".into(), "info,gpufed_operator=debug".into())],
            )
            .unwrap();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
        let ep = Endpoint {
            url: format!("https://{listen}"),
            http: reqwest::Client::builder()
                .tls_certs_only([ca])
                .build()
                .unwrap(),
        };
        let info: PoolInfo = wait_until(Duration::from_secs(60), "the endpoint", || async {
            let r = ep
                .http
                .get(format!("{}{POOLS_PATH}market", ep.url))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            serde_json::from_slice(&r.bytes().await.ok()?).ok()
        })
        .await
        .unwrap();
        assert_eq!(info.min_bond, "100".parse().unwrap());
        assert_eq!(
            info.bond.to_string().to_lowercase(),
            m.contracts.bond.to_string().to_lowercase()
        );
        // An admin-made member of the pool, beta.
        market::member(&admin, "beta", accounts::BETA.1, "H100", "2.00")
            .await
            .unwrap();

        // The honest join, with the plugin and nothing but the wallet key and the endpoint's CA.
        let kubeconfig = dir.join("alpha.kubeconfig");
        let out = gpufed_e2e::joining::plugin_join(
            &m.tools,
            &gpufed_e2e::joining::JoinRequest {
                member: "alpha",
                url: &ep.url,
                ca_file: &cert,
                pool: "market",
                price: "H100=2.40",
                kubeconfig_out: &kubeconfig,
                wallet_key: accounts::ALPHA.0,
            },
        )
        .await
        .unwrap();
        let (stdout, stderr) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains("member alpha joined pool market"),
            "{stdout}"
        );
        assert!(stdout.contains("probation"), "{stdout}");
        let bare_key = accounts::ALPHA.0.trim_start_matches("0x");
        assert!(
            !stdout.contains(bare_key) && !stderr.contains(bare_key),
            "the key is never printed"
        );

        let alpha = Api::<MemberCluster>::all(admin.clone())
            .get("alpha")
            .await
            .unwrap();
        assert_eq!(
            alpha.metadata.labels.as_ref().unwrap()[LABEL_ADMISSION],
            "open"
        );
        assert_eq!(
            alpha
                .spec
                .wallet
                .as_ref()
                .unwrap()
                .to_string()
                .to_lowercase(),
            accounts::ALPHA.1.to_lowercase()
        );
        assert_eq!(alpha.spec.pool, "market");

        // The member registers with the credential it got: heartbeat and inventory as its agent.
        let member = client_from_kubeconfig(&kubeconfig).await.unwrap();
        let hb = keep_heartbeating(member.clone(), "alpha");
        // Two nodes: a challenge the hub sends takes one, the tenant jobs below fit on the other.
        report_inventory(
            &member,
            "alpha",
            vec![
                node("alpha-0", "H100", 81559, 8, 8),
                node("alpha-1", "H100", 81559, 8, 8),
            ],
        )
        .await
        .unwrap();
        gpufed_e2e::hubctl::wait_member_condition(
            &admin,
            &["alpha"],
            "Ready",
            true,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        // In probation: not Verified (the pool requires it), shown so by the plugin.
        let alpha = Api::<MemberCluster>::all(admin.clone())
            .get("alpha")
            .await
            .unwrap();
        let verified = alpha
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Verified"))
            .map(|c| c.status.clone());
        assert_ne!(verified.as_deref(), Some("True"));
        let members_out =
            tokio::process::Command::new(m.tools.workspace_bin("kubectl-gpufed").unwrap())
                .arg("--kubeconfig")
                .arg(m.hub.kubeconfig())
                .args(["members", "-o", "wide"])
                .output()
                .await
                .unwrap();
        let table = String::from_utf8(members_out.stdout).unwrap();
        let row = table.lines().find(|l| l.starts_with("alpha ")).unwrap();
        assert!(row.contains("Probation"), "{table}");

        // Jobs that opt in to unverified members (ADR 0031): without it a tenant job waits and
        // says how to accept the member on probation; with it, it is placed there and its
        // attempt records that the member was unverified.
        let jobs = Api::<gpufed_crds::ComputeJob>::namespaced(admin.clone(), "team-a");
        market::submit(&admin, "team-a", "careful", "H100", 1, "3.00")
            .await
            .unwrap();
        let why = wait_until(Duration::from_secs(60), "careful's explanation", || async {
            let j = jobs.get("careful").await.ok()?;
            let e = j.status?.explanation?;
            e.contains("alpha: GPUs not verified yet").then_some(e)
        })
        .await;
        let why = match why {
            Ok(why) => why,
            Err(e) => panic!("{e}: {:?}", jobs.get("careful").await.map(|j| j.status)),
        };
        assert!(
            why.contains(
                "on probation (joined by stake, no challenge passed yet); set \
                 spec.allowUnverified: true on the job to accept it"
            ),
            "{why}"
        );
        market::submit_with(
            &admin,
            "team-a",
            "cheap",
            "H100",
            1,
            "3.00",
            json!({"allowUnverified": true}),
        )
        .await
        .unwrap();
        let attempt = wait_until(Duration::from_secs(60), "cheap placed", || async {
            let st = jobs.get("cheap").await.ok()?.status?;
            st.attempts.last().cloned()
        })
        .await;
        let attempt = match attempt {
            Ok(a) => a,
            Err(e) => panic!("{e}: {:?}", jobs.get("cheap").await.map(|j| j.status)),
        };
        assert_eq!(attempt.cluster, "alpha");
        assert!(attempt.unverified_member, "{attempt:?}");
        let careful = jobs.get("careful").await.unwrap();
        assert!(
            careful.status.unwrap().attempts.is_empty(),
            "a job without opt-in is never placed on a member on probation"
        );

        // Least privilege: what a member may, and nothing of beta's, no Secrets, no new members.
        let own = member_namespace("alpha");
        let beta_ns = member_namespace("beta");
        let g = "gpufed.io";
        assert!(may(&member, "list", g, "placements", Some(&own), None).await);
        assert!(may(&member, "patch", g, "placements/status", Some(&own), None).await);
        assert!(
            may(
                &member,
                "patch",
                g,
                "memberclusters/status",
                None,
                Some("alpha")
            )
            .await
        );
        assert!(!may(&member, "list", g, "placements", Some(&beta_ns), None).await);
        assert!(
            !may(
                &member,
                "patch",
                g,
                "memberclusters/status",
                None,
                Some("beta")
            )
            .await
        );
        assert!(!may(&member, "create", g, "memberclusters", None, None).await);
        assert!(!may(&member, "get", "", "secrets", Some(&own), None).await);
        assert!(
            !may(
                &member,
                "create",
                "",
                "serviceaccounts/token",
                Some(&own),
                None
            )
            .await
        );

        // Short-lived: the token expires within the TTL asked for (10 minutes).
        let first: Value =
            serde_norway::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
        let token = first["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        let left = exp_of(&token).saturating_sub(unix_now());
        assert!((500..=660).contains(&left), "token lives {left}s");
        // Renewal with the current token gives a new one that works.
        let (status, v) = ep.post(RENEW_PATH, vec![], Some(&token)).await;
        assert_eq!(status, 200, "{v}");
        let renewed: RenewResponse = serde_json::from_value(v).unwrap();
        assert_ne!(renewed.token, token);
        assert!(renewed.expires >= exp_of(&token));
        // The agent's own renewal code: it starts the token file from the kubeconfig, renews
        // into it, and a client reading the file works with the new token.
        let token_file = dir.join("alpha.token");
        let mut config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let mut hub_config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        gpufed_operator::agent::token::use_token_file(&mut config, &kubeconfig, &token_file)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
        let renewal = gpufed_operator::agent::token::Renewal {
            url: ep.url.clone(),
            ca_file: Some(cert.clone()),
            token_file: token_file.clone(),
        };
        let http = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
            ])
            .build()
            .unwrap();
        renewal.renew_once(&http, &token).await.unwrap();
        let rotated = std::fs::read_to_string(&token_file).unwrap();
        assert_ne!(rotated, token);
        hub_config.auth_info = config.auth_info.clone();
        let via_file = Client::try_from(hub_config).unwrap();
        Api::<MemberCluster>::all(via_file)
            .get("alpha")
            .await
            .unwrap();
        // beta's long-lived admin-made token cannot renew (it did not join by stake), nor can junk.
        let beta_secret = wait_until(Duration::from_secs(30), "beta's kubeconfig", || async {
            Api::<Secret>::namespaced(admin.clone(), &beta_ns)
                .get_opt(&member_kubeconfig_secret("beta"))
                .await
                .ok()
                .flatten()
        })
        .await
        .unwrap();
        let kc: Value =
            serde_norway::from_slice(&beta_secret.data.unwrap()["kubeconfig"].0).unwrap();
        let beta_token = kc["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, v) = ep.post(RENEW_PATH, vec![], Some(&beta_token)).await;
        assert_eq!(
            (status, v["reason"].as_str().unwrap()),
            (401, "Unauthorized"),
            "{v}"
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("did not join by stake"),
            "{v}"
        );
        let (status, v) = ep.post(RENEW_PATH, vec![], Some("not-a-token")).await;
        assert_eq!(
            (status, v["reason"].as_str().unwrap()),
            (401, "Unauthorized"),
            "{v}"
        );

        // Each bad request: its reason, and nothing created.
        let before = member_names(&admin).await;
        assert_eq!(before, ["alpha", "beta"]);
        // Signed by BETA's key but claiming ALPHA's (bonded) wallet.
        let forged = signed(accounts::BETA.0, &info, "mallory", |b| {
            b.wallet = accounts::ALPHA.1.parse().unwrap()
        });
        let (status, reason, msg) = ep.refused(&forged).await;
        assert_eq!((status, reason.as_str()), (401, "BadSignature"), "{msg}");
        assert!(msg.contains("not by the claimed wallet"), "{msg}");
        let expired = signed(accounts::GAMMA.0, &info, "late", |b| {
            b.expires = unix_now() - 1
        });
        let (status, reason, msg) = ep.refused(&expired).await;
        assert_eq!((status, reason.as_str()), (400, "Expired"), "{msg}");
        let unstaked = format!("0x{}", alloy::hex::encode(rand::random::<[u8; 32]>()));
        let (status, reason, msg) = ep.refused(&signed(&unstaked, &info, "poor", |_| {})).await;
        assert_eq!(
            (status, reason.as_str()),
            (402, "InsufficientBond"),
            "{msg}"
        );
        assert!(
            msg.contains("has 0.00 bonded") && msg.contains("stake 100.00 more"),
            "{msg}"
        );
        // A second member on ALPHA's 200 is fine; its request replayed is refused; a third is
        // more than the stake backs.
        let second = signed(accounts::ALPHA.0, &info, "alpha2", |_| {});
        let (status, v) = ep.join(&second).await;
        assert_eq!(status, 201, "{v}");
        let joined: JoinResponse = serde_json::from_value(v).unwrap();
        assert_eq!(joined.namespace, member_namespace("alpha2"));
        let (status, reason, msg) = ep.refused(&second).await;
        assert_eq!((status, reason.as_str()), (409, "Replayed"), "{msg}");
        let third = signed(accounts::ALPHA.0, &info, "alpha3", |_| {});
        let (status, reason, msg) = ep.refused(&third).await;
        assert_eq!(
            (status, reason.as_str()),
            (402, "InsufficientBond"),
            "{msg}"
        );
        assert!(msg.contains("already has 2 member(s)"), "{msg}");
        // Names held by another wallet, or by the admin, are taken.
        for name in ["alpha", "beta"] {
            let (status, reason, msg) = ep
                .refused(&signed(accounts::GAMMA.0, &info, name, |_| {}))
                .await;
            assert_eq!(
                (status, reason.as_str()),
                (409, "NameTaken"),
                "{name}: {msg}"
            );
        }
        assert_eq!(member_names(&admin).await, ["alpha", "alpha2", "beta"]);

        // Leaving by a request signed with the member's wallet (ADR 0031): only the member's own
        // wallet, only a member that joined by stake; nothing changes on a refusal.
        let refusals = [
            (
                leave_signed(accounts::BETA.0, &info, "alpha2"),
                403,
                "NotYourMember",
            ),
            (
                leave_signed(accounts::BETA.0, &info, "beta"),
                401,
                "Unauthorized",
            ),
            (
                leave_signed(accounts::ALPHA.0, &info, "nobody"),
                404,
                "UnknownMember",
            ),
        ];
        for (req, code, reason) in refusals {
            let (status, v) = ep.leave(&req).await;
            assert_eq!(
                (status, v["reason"].as_str().unwrap()),
                (code, reason),
                "{v}"
            );
        }
        let members = Api::<MemberCluster>::all(admin.clone());
        assert!(!members.get("alpha2").await.unwrap().spec.cordoned);
        // alpha2 runs nothing: it goes at once, and its credential with it; the same signed
        // request again is a replay.
        let bye = leave_signed(accounts::ALPHA.0, &info, "alpha2");
        let (status, v) = ep.leave(&bye).await;
        assert_eq!(
            (status, v["runningAttempts"].as_u64()),
            (202, Some(0)),
            "{v}"
        );
        let (status, v) = ep.leave(&bye).await;
        assert_eq!(
            (status, v["reason"].as_str().unwrap()),
            (409, "Replayed"),
            "{v}"
        );
        wait_until(Duration::from_secs(30), "alpha2 removed", || async {
            members
                .get_opt("alpha2")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await
        .unwrap();
        let gone = client_from_kubeconfig(&{
            let p = dir.join("alpha2.kubeconfig");
            std::fs::write(&p, &joined.kubeconfig).unwrap();
            p
        })
        .await
        .unwrap();
        wait_until(
            Duration::from_secs(30),
            "alpha2's token refused",
            || async {
                Api::<MemberCluster>::all(gone.clone())
                    .get("alpha2")
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await
        .unwrap();
        // alpha, with the plugin, while the opted-in job's attempt is on it: cordoned, leaving,
        // and removed only once that attempt has ended and its lock is settled.
        let out = tokio::process::Command::new(m.tools.workspace_bin("kubectl-gpufed").unwrap())
            .args(["leave", "alpha", "--registration-url", &ep.url, "--ca-file"])
            .arg(&cert)
            .args(["--pool", "market"])
            .env("GPUFED_WALLET_KEY", accounts::ALPHA.0)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("member alpha is leaving pool market")
                && stdout.contains("once its 1 attempt(s) have ended and settled"),
            "{stdout}"
        );
        let schedulable = wait_until(Duration::from_secs(30), "alpha leaving", || async {
            let m = members.get("alpha").await.ok()?;
            let c = m
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Schedulable" && c.reason == "Leaving")?;
            m.spec.cordoned.then_some(c)
        })
        .await
        .unwrap();
        assert_eq!(schedulable.status, "False");
        assert!(
            schedulable.message.contains("1 attempt(s)"),
            "{}",
            schedulable.message
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(members.get_opt("alpha").await.unwrap().is_some());
        jobs.delete("cheap", &Default::default()).await.unwrap();
        wait_until(Duration::from_secs(60), "alpha removed", || async {
            members
                .get_opt("alpha")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await
        .unwrap();
        hb.abort();

        // Flooding: the rest of the burst is answered (junk: Malformed), then 429 with Retry-After.
        let mut limited = None;
        for i in 0..(BURST + 5) {
            let (status, v) = ep.post(JOIN_PATH, b"{\"junk\": true}".to_vec(), None).await;
            if status == 429 {
                limited = Some((i, v));
                break;
            }
            assert_eq!(
                (status, v["reason"].as_str().unwrap()),
                (400, "Malformed"),
                "{v}"
            );
        }
        let (at, v) = limited.expect("no 429 within the burst");
        assert!(at < BURST, "limited after {at} more requests");
        assert_eq!(v["reason"], "RateLimited", "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("too many join requests from 127.0.0.1"),
            "{v}"
        );
        assert!(
            v["retryAfterHeader"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        // Even a good request is now refused, and nothing was created.
        let (status, v) = ep
            .join(&signed(accounts::GAMMA.0, &info, "gamma", |_| {}))
            .await;
        assert_eq!(status, 429, "{v}");
        assert_eq!(member_names(&admin).await, ["beta"]);
        // Each outcome is counted.
        let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for outcome in [
            "Accepted",
            "BadSignature",
            "Expired",
            "InsufficientBond",
            "Replayed",
            "NameTaken",
            "RateLimited",
            "Malformed",
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with("gpufed_registration_requests_total{")
                        && l.contains("route=\"join\"")
                        && l.contains(&format!("outcome=\"{outcome}\""))),
                "{outcome} not counted"
            );
        }
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("route=\"leave\"") && l.contains("outcome=\"Accepted\"")),
            "leave not counted"
        );
    });
}
