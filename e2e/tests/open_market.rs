//! The open market end to end (issue 16), every part real: anvil with the contracts (the
//! provider's wallet staked 200, the pool asks 100), a hub with its chart's registration endpoint
//! over TLS, and a member cluster with a real node (containerd, runc, kubelet). The provider —
//! with no admin involvement — joins with `kubectl gpufed join` (its wallet signs the request),
//! installs the member chart with the credential it got (`hub.renewUrl`: the agent keeps the
//! short-lived token in a file and renews it), and its agent publishes an Offer signed by the same
//! wallet. The member is on probation until the hub's challenge (a real container on its node)
//! passes; then a tenant job runs there at the signed price, the attempt carries the signed offer,
//! and the attempt is settled on chain to the provider's wallet.
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpu_probe::sim::{SimGpu, node_seed, profile};
use gpufed_crds::join::LABEL_ADMISSION;
use gpufed_crds::naming::member_namespace;
use gpufed_crds::{ComputeJob, JobPhase, MemberCluster, Offer, VerificationVerdict};
use gpufed_e2e::chain::{Chain, accounts};
use gpufed_e2e::demo::{join_paying_pool_with, pool_spec};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::Image;
use gpufed_e2e::joining::{HubOptions, JoinCredential, MemberPlan};
use gpufed_e2e::process::free_port;
use gpufed_e2e::{Error, NodeSpec, Tools, market, run_test, wait_until};
use kube::Api;
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(600);
const LONG: Duration = Duration::from_secs(240);
const IMAGE: &str = "docker.io/gpufed/probe:e2e";
const NS: &str = "team-a";

/// A self-signed certificate for 127.0.0.1 and its key, written under `dir`.
fn tls(dir: &Path) -> (PathBuf, PathBuf) {
    gpufed_e2e::pki::self_signed_localhost(dir, "registration").unwrap()
}

#[test]
fn a_provider_stakes_signs_joins_with_helm_passes_verification_and_is_paid_at_its_signed_price() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // ALPHA, BETA and GAMMA staked 200 each; team-a's payer deposited 500.
        let (chain, contracts) = Chain::start_deployed(&tools, dir.path(), 250, 10_000, 500, 200)
            .await
            .unwrap();
        let (cert, key) = tls(dir.path());
        let listen = format!("127.0.0.1:{}", free_port().unwrap());
        let url = format!("https://{listen}");
        let mut spec = pool_spec(&chain, &contracts, "30s");
        spec["admission"] = json!("Open");
        spec["verification"] = json!({"required": true, "image": IMAGE, "backend": "Cpu",
                                      "matrixSize": 64, "deadline": "60s"});
        // The pool has no member: the admin makes none.
        let mut pool = join_paying_pool_with(
            &tools,
            spec,
            &[],
            HubOptions {
                chart_values: vec![
                    ("registration.enabled".into(), "true".into()),
                    ("registration.tlsSecret".into(), "registration-tls".into()),
                ],
                args: vec![
                    format!("--registration-listen={listen}"),
                    format!("--registration-tls-cert={}", cert.display()),
                    format!("--registration-tls-key={}", key.display()),
                    "--registration-token-ttl=10m".into(),
                ],
                ..HubOptions::default()
            },
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace(NS).await.unwrap();
        wait_until(LONG, "the registration endpoint", || async {
            tokio::net::TcpStream::connect(&listen).await.ok()
        })
        .await
        .unwrap();

        // The provider joins with its wallet (ALPHA's key) and nothing from the admin.
        let kubeconfig = dir.path().join("carol.kubeconfig");
        let out = gpufed_e2e::joining::plugin_join(
            &tools,
            &gpufed_e2e::joining::JoinRequest {
                member: "carol",
                url: &url,
                ca_file: &cert,
                pool: "default",
                price: "L4=0.90",
                kubeconfig_out: &kubeconfig,
                wallet_key: accounts::ALPHA.0,
            },
        )
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("member carol joined pool default"),
            "{stdout}"
        );
        let members: Api<MemberCluster> = Api::all(hub.clone());
        let carol = members.get("carol").await.unwrap();
        assert_eq!(carol.metadata.labels.unwrap()[LABEL_ADMISSION], "open");

        // The owner installs the member chart with that credential, its own (signed) price and a
        // real node whose containerd holds the image the hub's challenge runs. gpu-probe's sim
        // backend names the node's GPUs from its name, as the device plugin would hand them out.
        let uuids: Vec<String> = (0..2)
            .map(|i| {
                SimGpu::new(
                    profile("L4-24GB").unwrap(),
                    node_seed(0, "carol-node"),
                    i,
                    0.0,
                )
                .uuid()
                .to_string()
            })
            .collect();
        let probe = tools.workspace_bin("gpu-probe").unwrap();
        let plan = MemberPlan::new("carol", vec![], "L4", "0.90")
            .real_node(NodeSpec::new("carol-node", "L4-24GB", 2, "eu-west"))
            .offer("L4", "0.70")
            .offer_signing_key(accounts::ALPHA.0)
            .join_credential(JoinCredential {
                kubeconfig: std::fs::read_to_string(&kubeconfig).unwrap(),
                renew_url: url.clone(),
                renew_ca: cert.clone(),
            });
        pool.add_member(&tools, &plan, |member| {
            let image = Image::new(IMAGE)
                .binary(&probe, "usr/local/bin/gpu-probe")?
                .entrypoint(&["/usr/local/bin/gpu-probe"])
                .user("65534:65534")
                .env(&format!("NVIDIA_VISIBLE_DEVICES={}", uuids.join(",")));
            member
                .real_node()
                .ok_or_else(|| Error::Other("carol has no real node".into()))?
                .import(&image)
        })
        .await
        .unwrap();

        // The hub's challenge runs on the member and passes.
        let verification = wait_until(LONG, "carol's verdict", || async {
            members.get("carol").await.ok()?.status?.verification
        })
        .await
        .unwrap();
        assert_eq!(
            verification.verdict,
            VerificationVerdict::Passed,
            "{verification:?}"
        );

        // Its agent's Offer is signed by the wallet, and accepted.
        let offers: Api<Offer> = Api::namespaced(hub.clone(), &member_namespace("carol"));
        let accepted = wait_until(LONG, "carol's signed offer accepted", || async {
            let o = offers.get_opt("offer").await.ok()??;
            let st = o.status?;
            st.conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True")
                .then_some(st.accepted?)
        })
        .await
        .unwrap();
        assert_eq!(
            accepted.signer.map(|s| s.as_str().to_string()),
            Some(accounts::ALPHA.1.to_lowercase())
        );

        // A tenant job (no opt-in to unverified members) runs there at the signed 0.70 and is
        // settled.
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "train", "namespace": NS},
                    "spec": {"replicas": 1, "gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                             "maxPricePerGpuHour": "1.00", "maxDuration": "5m",
                             "template": {"containers": [{"name": "main", "image": IMAGE,
                                 "command": ["/usr/local/bin/gpu-probe", "--version"]}]}}}),
        )
        .await
        .unwrap();
        let job: ComputeJob = wait_job(&hub, NS, "train", LONG, "paid", |j| {
            j.status.as_ref().is_some_and(|s| s.phase.is_finished()) && market::settled(j)
        })
        .await
        .unwrap();
        let st = job.status.unwrap();
        assert_eq!(st.phase, JobPhase::Succeeded, "{st:?}");
        let a = &st.attempts[0];
        assert_eq!(
            (
                a.cluster.as_str(),
                a.price_per_gpu_hour.to_string().as_str()
            ),
            ("carol", "0.70")
        );
        assert!(!a.unverified_member);
        assert_eq!(a.offer.as_ref().and_then(|o| o.nonce), accepted.nonce);
        // Settled on chain, to the wallet that joined.
        assert_eq!(
            a.provider.as_ref().map(|p| p.as_str().to_string()),
            Some(accounts::ALPHA.1.to_lowercase())
        );
        drop(chain);
    });
}
