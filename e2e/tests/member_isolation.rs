//! Least privilege, against real apiservers and real RBAC: a member's hub credential (the
//! kubeconfig the hub made) reaches its own namespace and its own MemberCluster status and nothing
//! else — above all nothing of another member — and the member chart's ServiceAccounts can do
//! their work on the member cluster and nothing more.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::{heartbeat_lease_name, member_kubeconfig_secret, member_namespace};
use gpufed_crds::{ComputeJob, GpuNode, MemberCluster, Placement};
use gpufed_e2e::joining::{
    JOBS_NAMESPACE, MemberPlan, Pool, SYSTEM_NAMESPACE, is_forbidden, member_ready,
};
use gpufed_e2e::{NodeSpec, Tools, client_from_kubeconfig, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Longest this test may take, start-up of the clusters included: past it the test fails, its
/// components are killed and their logs printed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

fn merge() -> PatchParams {
    PatchParams::default()
}

/// Asks the apiserver whether the caller of `client` may `verb` `resource` (in `namespace`).
async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    may_named(client, verb, group, resource, namespace, None).await
}

/// [`may`] for the object `name` only.
async fn may_named(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    gpufed_e2e::access::may(client, verb, group, resource, namespace, name)
        .await
        .unwrap()
}

fn placement_doc(ns: &str) -> Value {
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": "forged", "namespace": ns},
        "spec": {"job": {"uid": "u"}, "attempt": 1, "cluster": "alpha",
                 "replicas": 1, "gpusPerReplica": 1, "totalGpus": 1, "model": "H100",
                 "pricePerGpuHour": "1", "maxDuration": "1h",
                 "template": {"containers": [{"name": "main", "image": "busybox"}]}}
    })
}

#[test]
fn member_and_chart_credentials_allow_their_work_and_nothing_else() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[
                MemberPlan::new(
                    "alpha",
                    vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                    "H100",
                    "2.40",
                ),
                MemberPlan::new(
                    "beta",
                    vec![NodeSpec::new("beta-l4-0", "L4-24GB", 4, "eu-west")],
                    "L4",
                    "0.80",
                ),
            ],
        )
        .await
        .unwrap();
        let admin = pool.hub.client();
        let members: Api<MemberCluster> = Api::all(admin.clone());
        for name in ["alpha", "beta"] {
            wait_until(Duration::from_secs(120), &format!("{name} Ready"), || {
                let members = members.clone();
                async move { members.get(name).await.ok().filter(member_ready) }
            })
            .await
            .unwrap();
        }

        // ---- alpha's hub credential, exactly as the agent holds it ----
        let a = client_from_kubeconfig(&pool.joined("alpha").unwrap().hub_kubeconfig)
            .await
            .unwrap();
        let alpha_ns = member_namespace("alpha");
        let beta_ns = member_namespace("beta");
        let own_placements: Api<Placement> = Api::namespaced(a.clone(), &alpha_ns);
        let beta_placements: Api<Placement> = Api::namespaced(a.clone(), &beta_ns);
        let a_members: Api<MemberCluster> = Api::all(a.clone());

        // What it needs works (so the refusals below are RBAC, not a broken credential).
        assert!(own_placements.list(&ListParams::default()).await.is_ok());
        assert!(a_members.get("alpha").await.is_ok());
        let own_lease: Api<Lease> = Api::namespaced(a.clone(), &alpha_ns);
        assert!(own_lease.get(&heartbeat_lease_name("alpha")).await.is_ok());

        // Another member's Placements: neither read nor written.
        assert!(is_forbidden(
            &beta_placements.list(&ListParams::default()).await
        ));
        assert!(is_forbidden(&beta_placements.get("anything").await));
        assert!(is_forbidden(
            &beta_placements
                .patch_status(
                    "anything",
                    &merge(),
                    &Patch::Merge(json!({"status": {"phase": "Succeeded"}}))
                )
                .await
        ));
        let forged: Placement = serde_json::from_value(placement_doc(&beta_ns)).unwrap();
        assert!(is_forbidden(
            &beta_placements
                .create(&PostParams::default(), &forged)
                .await
        ));
        // Nor may it make or remove Placements of its own: only the hub places work.
        let forged_own: Placement = serde_json::from_value(placement_doc(&alpha_ns)).unwrap();
        assert!(is_forbidden(
            &own_placements
                .create(&PostParams::default(), &forged_own)
                .await
        ));
        assert!(is_forbidden(
            &own_placements.delete("anything", &Default::default()).await
        ));

        // Another member's MemberCluster and its status; its own spec (prices, cordon) is the admin's.
        assert!(is_forbidden(&a_members.get("beta").await));
        assert!(is_forbidden(&a_members.list(&ListParams::default()).await));
        assert!(is_forbidden(
            &a_members
                .patch_status(
                    "beta",
                    &merge(),
                    &Patch::Merge(json!({"status": {"freeGpus": 999}}))
                )
                .await
        ));
        assert!(is_forbidden(
            &a_members
                .patch(
                    "alpha",
                    &merge(),
                    &Patch::Merge(json!({"spec": {"cordoned": true}}))
                )
                .await
        ));

        // Secrets: not even its own kubeconfig, let alone another member's.
        let own_secrets: Api<Secret> = Api::namespaced(a.clone(), &alpha_ns);
        let beta_secrets: Api<Secret> = Api::namespaced(a.clone(), &beta_ns);
        assert!(is_forbidden(
            &own_secrets.list(&ListParams::default()).await
        ));
        assert!(is_forbidden(
            &own_secrets.get(&member_kubeconfig_secret("alpha")).await
        ));
        assert!(is_forbidden(
            &beta_secrets.get(&member_kubeconfig_secret("beta")).await
        ));
        let hub_secrets: Api<Secret> = Api::namespaced(a.clone(), SYSTEM_NAMESPACE);
        assert!(is_forbidden(
            &hub_secrets.list(&ListParams::default()).await
        ));

        // Leases: it renews its own; it creates none and touches no other.
        let lease: Lease = serde_json::from_value(
            json!({"metadata": {"name": "extra", "namespace": alpha_ns}, "spec": {}}),
        )
        .unwrap();
        assert!(is_forbidden(
            &own_lease.create(&PostParams::default(), &lease).await
        ));
        let beta_lease: Api<Lease> = Api::namespaced(a.clone(), &beta_ns);
        assert!(is_forbidden(
            &beta_lease
                .patch(
                    &heartbeat_lease_name("beta"),
                    &merge(),
                    &Patch::Merge(json!({"spec": {"holderIdentity": "alpha"}}))
                )
                .await
        ));
        let hub_leases: Api<Lease> = Api::namespaced(a.clone(), SYSTEM_NAMESPACE);
        assert!(
            is_forbidden(&hub_leases.list(&ListParams::default()).await),
            "not the hub's leader Lease either"
        );

        // Tenants' ComputeJobs are none of its business.
        assert!(is_forbidden(
            &Api::<ComputeJob>::all(a.clone())
                .list(&ListParams::default())
                .await
        ));

        // ---- the member chart's ServiceAccounts on alpha ----
        let alpha = pool.member("alpha").unwrap();
        let joined = pool.joined("alpha").unwrap();
        let agent = client_from_kubeconfig(&joined.agent_kubeconfig)
            .await
            .unwrap();
        let probe = client_from_kubeconfig(&joined.probe_kubeconfig)
            .await
            .unwrap();

        // The agent runs Jobs in the jobs namespace and reads the inventory.
        let agent_jobs: Api<Job> = Api::namespaced(agent.clone(), JOBS_NAMESPACE);
        assert!(agent_jobs.list(&ListParams::default()).await.is_ok());
        assert!(
            Api::<Node>::all(agent.clone())
                .list(&ListParams::default())
                .await
                .is_ok()
        );
        assert!(
            Api::<GpuNode>::all(agent.clone())
                .list(&ListParams::default())
                .await
                .is_ok()
        );
        // …and nothing more: no Secrets (the hub kubeconfig is mounted, not read through the API), no
        // pods of its own, no Jobs elsewhere, no node or GpuNode writes, no RBAC.
        assert!(is_forbidden(
            &Api::<Secret>::namespaced(agent.clone(), SYSTEM_NAMESPACE)
                .list(&ListParams::default())
                .await
        ));
        assert!(is_forbidden(
            &Api::<Secret>::namespaced(agent.clone(), SYSTEM_NAMESPACE)
                .get("gpufed-hub-kubeconfig")
                .await
        ));
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
        assert!(is_forbidden(
            &Api::<Pod>::namespaced(agent.clone(), JOBS_NAMESPACE)
                .create(&PostParams::default(), &pod)
                .await
        ));
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
        assert!(is_forbidden(
            &Api::<Job>::namespaced(agent.clone(), "default")
                .create(&PostParams::default(), &job)
                .await
        ));
        assert!(is_forbidden(
            &Api::<Node>::all(agent.clone())
                .patch(
                    "alpha-h100-0",
                    &merge(),
                    &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))
                )
                .await
        ));
        assert!(!may(&agent, "delete", "", "namespaces", None).await);
        assert!(!may(&agent, "create", "gpufed.io", "gpunodes", None).await);
        assert!(
            !may(
                &agent,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                Some(JOBS_NAMESPACE)
            )
            .await
        );
        assert!(!may(&agent, "create", "", "pods/exec", Some(JOBS_NAMESPACE)).await);
        // Jobs: run, renew their lease (patch) and stop them in the jobs namespace only.
        for verb in ["create", "patch", "delete"] {
            assert!(
                may(&agent, verb, "batch", "jobs", Some(JOBS_NAMESPACE)).await,
                "{verb}"
            );
            assert!(
                !may(&agent, verb, "batch", "jobs", Some("default")).await,
                "{verb}"
            );
        }
        assert!(!may(&agent, "update", "batch", "jobs", Some(JOBS_NAMESPACE)).await);
        // The usage receipts ConfigMap, in the jobs namespace only, and no other ConfigMap.
        assert!(may(&agent, "create", "", "configmaps", Some(JOBS_NAMESPACE)).await);
        assert!(!may(&agent, "create", "", "configmaps", Some("default")).await);
        for verb in ["get", "patch"] {
            let receipts = Some("gpufed-usage-receipts");
            assert!(
                may_named(
                    &agent,
                    verb,
                    "",
                    "configmaps",
                    Some(JOBS_NAMESPACE),
                    receipts
                )
                .await
            );
            assert!(
                !may_named(
                    &agent,
                    verb,
                    "",
                    "configmaps",
                    Some(JOBS_NAMESPACE),
                    Some("other")
                )
                .await
            );
        }
        assert!(!may(&agent, "list", "", "configmaps", Some(JOBS_NAMESPACE)).await);
        // Logs of placed jobs' pods (a failed one's last lines go into its status), nowhere else.
        assert!(may(&agent, "get", "", "pods/log", Some(JOBS_NAMESPACE)).await);
        assert!(!may(&agent, "get", "", "pods/log", Some("default")).await);
        // Its pods' scheduling gate, removed by a patch in the jobs namespace only; it creates no
        // pods.
        assert!(may(&agent, "patch", "", "pods", Some(JOBS_NAMESPACE)).await);
        assert!(!may(&agent, "patch", "", "pods", Some("default")).await);
        assert!(!may(&agent, "create", "", "pods", Some(JOBS_NAMESPACE)).await);
        // A preempted attempt's pods are deleted with the pool's grace (ADR 0025), in the jobs
        // namespace only.
        assert!(may(&agent, "delete", "", "pods", Some(JOBS_NAMESPACE)).await);
        assert!(!may(&agent, "delete", "", "pods", Some("default")).await);
        // A gang's Service and NetworkPolicy: created in the jobs namespace only, never changed or
        // deleted by the agent (they go with their Job).
        assert!(may(&agent, "create", "", "services", Some(JOBS_NAMESPACE)).await);
        assert!(
            may(
                &agent,
                "create",
                "networking.k8s.io",
                "networkpolicies",
                Some(JOBS_NAMESPACE)
            )
            .await
        );
        assert!(!may(&agent, "create", "", "services", Some("default")).await);
        assert!(
            !may(
                &agent,
                "create",
                "networking.k8s.io",
                "networkpolicies",
                Some("default")
            )
            .await
        );
        for verb in ["delete", "update", "patch"] {
            assert!(
                !may(
                    &agent,
                    verb,
                    "networking.k8s.io",
                    "networkpolicies",
                    Some(JOBS_NAMESPACE)
                )
                .await
            );
            assert!(!may(&agent, verb, "", "services", Some(JOBS_NAMESPACE)).await);
        }
        // The chart's policy admits nothing into the jobs namespace.
        let isolation = Api::<NetworkPolicy>::namespaced(alpha.client(), JOBS_NAMESPACE)
            .get("gpufed-jobs-isolation")
            .await
            .unwrap()
            .spec
            .unwrap();
        assert_eq!(
            isolation.pod_selector.unwrap_or_default(),
            Default::default()
        );
        assert_eq!(isolation.policy_types, Some(vec!["Ingress".to_string()]));
        assert!(isolation.ingress.unwrap_or_default().is_empty());

        // The probe reads nodes and writes GpuNodes and node labels…
        assert!(
            Api::<GpuNode>::all(probe.clone())
                .list(&ListParams::default())
                .await
                .is_ok()
        );
        assert!(may(&probe, "patch", "", "nodes", None).await);
        // …and nothing else: no pods, no Jobs, no Secrets, no deleting nodes.
        assert!(is_forbidden(
            &Api::<Pod>::all(probe.clone())
                .list(&ListParams::default())
                .await
        ));
        assert!(is_forbidden(
            &Api::<Job>::namespaced(probe.clone(), JOBS_NAMESPACE)
                .create(&PostParams::default(), &job)
                .await
        ));
        assert!(is_forbidden(
            &Api::<Secret>::namespaced(probe.clone(), SYSTEM_NAMESPACE)
                .list(&ListParams::default())
                .await
        ));
        assert!(!may(&probe, "delete", "", "nodes", None).await);

        // The charts' RBAC was enough for the real work: the probe wrote GpuNodes and the agent (with
        // only the chart's rights) reported an inventory built from them.
        // (The probe and the agent report on their own schedules: Ready does not wait for them.)
        let gpu_nodes: Api<GpuNode> = Api::all(alpha.client());
        wait_until(Duration::from_secs(60), "the probe's GpuNode", || {
            let gpu_nodes = gpu_nodes.clone();
            async move {
                let items = gpu_nodes.list(&ListParams::default()).await.ok()?.items;
                (items.len() == 1).then_some(())
            }
        })
        .await
        .unwrap();
        wait_until(
            Duration::from_secs(60),
            "alpha's inventory from the GpuNode",
            || {
                let members = members.clone();
                async move {
                    let m = members.get("alpha").await.ok()?;
                    (m.status?.model_summary.as_deref() == Some("H100x8")).then_some(())
                }
            },
        )
        .await
        .unwrap();
    });
}
