//! The hub chart's API Priority and Fairness objects on an apiserver that enforces APF: requests of
//! the hub's ServiceAccount are classified into the chart's FlowSchema and priority level (the
//! apiserver says so in its `X-Kubernetes-PF-*` response headers), and nobody else's are.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_e2e::joining::{Helm, SYSTEM_NAMESPACE, service_account_kubeconfig};
use gpufed_e2e::{Cluster, ClusterSpec, Tools, client_from_kubeconfig, run_test, wait_until};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use kube::Client;
use kube::api::Api;

const HARD_DEADLINE: Duration = Duration::from_secs(180);

/// The (FlowSchema UID, PriorityLevel UID) the apiserver classified a request of `client` into.
async fn classified(client: &Client) -> (String, String) {
    classified_at(client, "/apis/gpufed.io/v1alpha1/computejobs").await
}

/// The same for a GET of `path` (answered or not: APF classifies before the handler runs).
async fn classified_at(client: &Client, path: &str) -> (String, String) {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let res = client.send(req.map(Into::into)).await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (
        header("X-Kubernetes-PF-FlowSchema-UID"),
        header("X-Kubernetes-PF-PriorityLevel-UID"),
    )
}

#[test]
fn the_hubs_requests_get_the_charts_priority_level_its_lease_the_leader_election_one_and_no_one_elses_do()
 {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let hub = Cluster::start(
            &tools,
            &ClusterSpec::api_only("apf").with_api_priority_and_fairness(),
        )
        .await
        .unwrap();
        Helm::new(&tools, &hub)
            .unwrap()
            .install(
                "gpufed-hub",
                &tools.root().join("charts/gpufed-hub"),
                SYSTEM_NAMESPACE,
                &[("memberApiServer", hub.server())],
            )
            .await
            .unwrap();
        let schema = Api::<FlowSchema>::all(hub.client())
            .get("gpufed-hub")
            .await
            .unwrap();
        let level = Api::<PriorityLevelConfiguration>::all(hub.client())
            .get("gpufed-hub")
            .await
            .unwrap();
        let expected = (
            schema.metadata.uid.clone().unwrap(),
            level.metadata.uid.clone().unwrap(),
        );

        let sa = service_account_kubeconfig(
            &hub,
            SYSTEM_NAMESPACE,
            "gpufed-hub",
            &hub.dir().unwrap().join("hub-sa.kubeconfig"),
        )
        .await
        .unwrap();
        let as_hub = client_from_kubeconfig(&sa).await.unwrap();
        // The apiserver picks new FlowSchemas up within a moment.
        wait_until(
            Duration::from_secs(30),
            "the hub's requests in the chart's flow schema",
            || {
                let as_hub = as_hub.clone();
                let expected = expected.clone();
                async move { (classified(&as_hub).await == expected).then_some(()) }
            },
        )
        .await
        .unwrap();

        // The hub's leader Lease goes to the built-in leader-election level, as the controller
        // manager's does: its renewals never queue behind the hub's own writes.
        let lease_schema = Api::<FlowSchema>::all(hub.client())
            .get("gpufed-hub-leader-election")
            .await
            .unwrap();
        let election = Api::<PriorityLevelConfiguration>::all(hub.client())
            .get("leader-election")
            .await
            .unwrap();
        let lease_path =
            format!("/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases/gpufed-hub");
        let want = (
            lease_schema.metadata.uid.clone().unwrap(),
            election.metadata.uid.clone().unwrap(),
        );
        wait_until(
            Duration::from_secs(30),
            "the hub's Lease requests at the leader-election level",
            || {
                let (as_hub, lease_path, want) = (as_hub.clone(), lease_path.clone(), want.clone());
                async move { (classified_at(&as_hub, &lease_path).await == want).then_some(()) }
            },
        )
        .await
        .unwrap();

        // A tenant's requests stay where they were (here: the built-in global-default).
        let tenant = hub.client_as("alice", &["team-a"]).await.unwrap();
        let (flow, level_uid) = classified(&tenant).await;
        assert!(!flow.is_empty(), "APF classified the tenant's request");
        assert_ne!(flow, expected.0);
        assert_ne!(level_uid, expected.1);
    });
}
