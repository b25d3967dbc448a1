//! Price discovery in a pool with strategy `Auction` (ADR 0024) against a real apiserver with the
//! hub as a process (the test stands in for the member agents): the lowest ask wins and the job
//! pays the next-lowest ask; a provider that raises its price loses the next job to the one it
//! undercut before, which is then paid the raised price; a provider that joins and undercuts both
//! wins (through its own Offer too); a job whose limit only one provider meets pays that provider's own ask. The pool's
//! clearing-price index, its metric and `kubectl gpufed market` show the prices in order.
//!
//! alpha raises its price with its own hub credential (the kubeconfig the hub made for its agent),
//! by writing the `Offer` in its member namespace; that credential may not read or write beta's
//! Offer. Signing offers with the provider's wallet (ADR 0024) is designed, not built.
//! Build the binaries first: `cargo build -p kubectl-gpufed -p gpufed-operator --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::{member_kubeconfig_secret, member_namespace};
use gpufed_crds::{ComputeJob, GpuPool, MemberCluster, Offer};
use gpufed_e2e::hubctl::{
    apply, hub_cluster, keep_heartbeating, node, report_inventory, start_hub, wait_job,
};
use gpufed_e2e::joining::is_forbidden;
use gpufed_e2e::{Cluster, client_from_kubeconfig};
use gpufed_e2e::{Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

async fn member(c: &Client, name: &str, price: &str) {
    let m = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": name},
                   "spec": {"pool": "bazaar", "region": "eu-west",
                            "prices": [{"model": "H100", "pricePerGpuHour": price}]}});
    apply::<MemberCluster>(c, &m).await.unwrap();
    std::mem::forget(keep_heartbeating(c.clone(), name));
    report_inventory(
        c,
        name,
        vec![node(&format!("{name}-0"), "H100", 81559, 8, 8)],
    )
    .await
    .unwrap();
}

/// Waits until the pool's roll-up shows `asks` (lowest, highest) for H100, so the hub's caches
/// hold the members' current prices before the next job is submitted.
async fn wait_asks(c: &Client, lowest: &str, highest: &str) {
    let pools: Api<GpuPool> = Api::all(c.clone());
    wait_until(T, &format!("H100 asks {lowest}..{highest}"), || async {
        let p = pools.get("bazaar").await.ok()?;
        let cap = p.status?.capacity.into_iter().find(|m| m.model == "H100")?;
        (cap.min_price?.to_string() == lowest && cap.max_price?.to_string() == highest)
            .then_some(())
    })
    .await
    .unwrap();
}

/// Submits a 4-GPU H100 job with limit `max` and returns (cluster, price) of its placement.
async fn clear(c: &Client, name: &str, max: &str) -> (String, String, String) {
    let j = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                   "metadata": {"name": name, "namespace": "team-a"},
                   "spec": {"pool": "bazaar", "gpusPerReplica": 4, "gpu": {"models": ["H100"]},
                            "maxPricePerGpuHour": max,
                            "template": {"containers": [{"name": "main", "image": "busybox"}]}}});
    apply::<ComputeJob>(c, &j).await.unwrap();
    let j = wait_job(c, "team-a", name, T, "placed", |j| {
        j.status.as_ref().is_some_and(|s| s.placement.is_some())
    })
    .await
    .unwrap();
    let st = j.status.unwrap();
    let p = st.placement.unwrap();
    assert_eq!(
        st.attempts[0].price_per_gpu_hour, p.price_per_gpu_hour,
        "frozen in the attempt"
    );
    (
        p.cluster,
        p.price_per_gpu_hour.to_string(),
        st.explanation.unwrap_or_default(),
    )
}

/// A client with member `name`'s hub credential: the kubeconfig the hub made for its agent.
async fn member_client(hub: &Cluster, name: &str) -> Client {
    let secrets: Api<Secret> = Api::namespaced(hub.client(), &member_namespace(name));
    let kubeconfig = wait_until(T, &format!("{name}'s kubeconfig Secret"), || async {
        let s = secrets
            .get_opt(&member_kubeconfig_secret(name))
            .await
            .ok()??;
        Some(s.data?.get("kubeconfig")?.0.clone())
    })
    .await
    .unwrap();
    let path = hub
        .dir()
        .unwrap()
        .join(format!("{name}-credential.kubeconfig"));
    std::fs::write(&path, kubeconfig).unwrap();
    client_from_kubeconfig(&path).await.unwrap()
}

/// `name`'s Offer asking `price` for H100, as JSON.
fn offer(name: &str, price: &str) -> serde_json::Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "Offer",
           "metadata": {"name": "offer", "namespace": member_namespace(name)},
           "spec": {"prices": [{"model": "H100", "pricePerGpuHour": price}]}})
}

async fn metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[test]
fn the_lowest_ask_wins_at_the_next_lowest_and_the_index_follows_price_changes() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = hub_cluster(&tools, "auction", &["gpufed-system"])
            .await
            .unwrap();
        let port = start_hub(&tools, &mut hub, "hub-0", &[]).unwrap();
        let c = hub.client();
        let pool = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
                          "metadata": {"name": "bazaar"}, "spec": {"strategy": "Auction"}});
        apply::<GpuPool>(&c, &pool).await.unwrap();
        member(&c, "alpha", "2.00").await;
        member(&c, "beta", "2.60").await;
        wait_asks(&c, "2.00", "2.60").await;

        // alpha asks least and is paid beta's ask.
        let (cluster, price, why) = clear(&c, "j1", "3.00").await;
        assert_eq!((cluster.as_str(), price.as_str()), ("alpha", "2.60"));
        assert_eq!(
            why,
            "placed on alpha: lowest ask of 2 fitting clusters (H100 asked 2.00, pays 2.60/GPU-hour, the next-lowest ask)"
        );

        // alpha raises its price above beta's with its own credential, by publishing its Offer:
        // beta wins the next job and is paid alpha's new ask.
        let alpha = member_client(&hub, "alpha").await;
        let params = PatchParams::apply("gpufed-agent").force();
        // alpha's credential cannot touch beta's Offer, nor write one with another name.
        let beta_offers: Api<Offer> = Api::namespaced(alpha.clone(), &member_namespace("beta"));
        let undercut = offer("beta", "9.00");
        assert!(is_forbidden(
            &beta_offers
                .patch("offer", &params, &Patch::Apply(&undercut))
                .await
        ));
        assert!(is_forbidden(&beta_offers.get("offer").await));
        let own: Api<Offer> = Api::namespaced(alpha.clone(), &member_namespace("alpha"));
        let mut misnamed = offer("alpha", "2.80");
        misnamed["metadata"]["name"] = json!("cheap");
        let err = own
            .patch("cheap", &params, &Patch::Apply(&misnamed))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata.name must be 'offer'"), "{err}");
        own.patch("offer", &params, &Patch::Apply(&offer("alpha", "2.80")))
            .await
            .unwrap();
        wait_asks(&c, "2.60", "2.80").await;
        let (cluster, price, why) = clear(&c, "j2", "3.00").await;
        assert_eq!((cluster.as_str(), price.as_str()), ("beta", "2.80"));
        assert!(why.contains("H100 asked 2.60, pays 2.80/GPU-hour"), "{why}");

        // gamma joins (the admin's price for it is 3.50) and undercuts both with its own Offer:
        // it wins and is paid the lowest other ask (beta's 2.60).
        member(&c, "gamma", "3.50").await;
        wait_asks(&c, "2.60", "3.50").await;
        let gamma = member_client(&hub, "gamma").await;
        Api::<Offer>::namespaced(gamma, &member_namespace("gamma"))
            .patch("offer", &params, &Patch::Apply(&offer("gamma", "1.50")))
            .await
            .unwrap();
        wait_asks(&c, "1.50", "2.80").await;
        let (cluster, price, _) = clear(&c, "j3", "3.00").await;
        assert_eq!((cluster.as_str(), price.as_str()), ("gamma", "2.60"));

        // A limit only gamma meets: gamma alone fits, and is paid its own ask.
        let (cluster, price, why) = clear(&c, "j4", "2.00").await;
        assert_eq!((cluster.as_str(), price.as_str()), ("gamma", "1.50"));
        assert!(why.contains("the only fitting cluster"), "{why}");

        // The clearing-price index: every placement's price in order, the last one, the mean.
        let pools: Api<GpuPool> = Api::all(c.clone());
        let index = wait_until(T, "four H100 placements in the index", || async {
            let p = pools.get("bazaar").await.ok()?;
            let m = p
                .status?
                .clearing_prices
                .into_iter()
                .find(|m| m.model == "H100")?;
            (m.history.len() == 4).then_some(m)
        })
        .await
        .unwrap();
        let prices: Vec<String> = index
            .history
            .iter()
            .map(|p| p.price_per_gpu_hour.to_string())
            .collect();
        assert_eq!(prices, ["2.60", "2.80", "2.60", "1.50"]);
        let winners: Vec<&str> = index.history.iter().map(|p| p.cluster.as_str()).collect();
        assert_eq!(winners, ["alpha", "beta", "gamma", "gamma"]);
        assert_eq!(index.last.to_string(), "1.50");
        assert_eq!(index.mean.to_string(), "2.375");
        wait_until(T, "the clearing-price metric", || async {
            let text = metrics(port).await;
            text.lines()
                .any(|l| {
                    l.starts_with("gpufed_clearing_price_per_gpu_hour{")
                        && l.contains("model=\"H100\"")
                        && l.contains("pool=\"bazaar\"")
                        && l.ends_with(" 1.5")
                })
                .then_some(())
        })
        .await
        .unwrap();

        // kubectl gpufed market prints the index beside the asks on offer now.
        let out = tokio::process::Command::new(tools.workspace_bin("kubectl-gpufed").unwrap())
            .arg("--kubeconfig")
            .arg(hub.kubeconfig())
            .args(["market", "--pool", "bazaar", "-o", "wide"])
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
        let row = stdout.lines().nth(1).unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..9],
            [
                "bazaar", "Auction", "H100", "1.50", "2.80", "8", "1.50", "2.375", "4"
            ],
            "{stdout}"
        );
        assert!(row.ends_with("2.60 2.80 2.60 1.50"), "{stdout}");
    });
}
