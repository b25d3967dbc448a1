//! The hub's least privilege, asked of a real apiserver (ADR 0017). The hub chart is installed with
//! the real helm; the apiserver's SelfSubjectRulesReview, made with the chart ServiceAccount's own
//! token, says what the hub may do in each namespace, and that must be **exactly** the allow-list
//! below (beyond what every ServiceAccount may do): cluster-wide rules as listed, no Secrets in
//! `default` or `kube-system`, a read of Secrets in its own namespace (chain keys), and in a member
//! namespace exactly what registration needs. The hub then runs as a process with that token,
//! registers a member and removes it again, and the chart's admission policies refuse what RBAC
//! alone would let it do: delete a namespace that is not a member's, bind itself to Secrets
//! outside member namespaces, write other ClusterRoles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use gpufed_crds::{GpuPool, MemberCluster};
use gpufed_e2e::hubctl::{apply, create_member, create_pool, wait_member_condition};
use gpufed_e2e::joining::{Helm, SYSTEM_NAMESPACE, service_account_kubeconfig};
use gpufed_e2e::process::free_port;
use gpufed_e2e::{Cluster, ClusterSpec, Tools, client_from_kubeconfig, run_test, wait_until};
use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(60);

/// What the hub may do in every namespace and on cluster-scoped objects: `(verbs, resource)`,
/// the resource as `plural[.group][#resourceName]`.
const CLUSTER_WIDE: &[(&str, &str)] = &[
    (
        "get list watch create patch update",
        "computejobs.gpufed.io",
    ),
    ("get patch update", "computejobs/status.gpufed.io"),
    ("update", "computejobs/finalizers.gpufed.io"),
    ("update", "memberclusters/finalizers.gpufed.io"),
    ("get list watch create delete patch", "placements.gpufed.io"),
    ("get patch update", "placements/status.gpufed.io"),
    ("get list watch patch update", "memberclusters.gpufed.io"),
    ("get patch update", "memberclusters/status.gpufed.io"),
    ("get list watch", "gpupools.gpufed.io"),
    ("get list watch", "joblogs.gpufed.io"),
    ("get patch update", "joblogs/status.gpufed.io"),
    ("get list watch", "offers.gpufed.io"),
    ("get patch update", "offers/status.gpufed.io"),
    ("get patch update", "gpupools/status.gpufed.io"),
    (
        "get list watch create patch update",
        "providerbonds.gpufed.io",
    ),
    ("get patch update", "providerbonds/status.gpufed.io"),
    ("create patch delete", "namespaces"),
    ("create patch", "rolebindings.rbac.authorization.k8s.io"),
    (
        "bind",
        "clusterroles.rbac.authorization.k8s.io#gpufed-hub-member-namespace",
    ),
    (
        "create patch delete",
        "clusterroles.rbac.authorization.k8s.io",
    ),
    (
        "create patch delete",
        "clusterrolebindings.rbac.authorization.k8s.io",
    ),
    ("list watch", "leases.coordination.k8s.io"),
    ("create patch", "events"),
    ("create patch", "events.events.k8s.io"),
];

/// What the hub may do in its own namespace on top: the leader Lease, chain key Secrets (read).
const OWN_NAMESPACE: &[(&str, &str)] = &[
    ("get create update", "leases.coordination.k8s.io"),
    ("get", "secrets"),
];

/// What the hub may do in its jobs namespace `gpufed-hub-jobs` on top (ADR 0027): create its
/// challenge ComputeJobs and delete them once judged, keep the evidence of each verdict and list
/// it to count the members' verdicts (reputation).
const HUB_JOBS_NAMESPACE: &[(&str, &str)] = &[
    ("create delete", "computejobs.gpufed.io"),
    ("get list create", "configmaps"),
];

/// What the hub may do in a member namespace on top, through the binding it makes there.
const MEMBER_NAMESPACE: &[(&str, &str)] = &[
    ("create patch", "serviceaccounts"),
    ("create patch", "roles.rbac.authorization.k8s.io"),
    ("get create patch", "secrets"),
    ("get create update patch", "leases.coordination.k8s.io"),
    ("create update patch", "offers.gpufed.io"),
];

fn expand(lists: &[&[(&str, &str)]]) -> BTreeSet<String> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .flat_map(|(verbs, res)| verbs.split(' ').map(move |v| format!("{v} {res}")))
        .collect()
}

/// Every `verb resource[.group][#name]` (and `verb url` for non-resource rules) the client's user
/// may use in `namespace`, as the apiserver's SelfSubjectRulesReview says.
async fn rules(client: &Client, namespace: &str) -> BTreeSet<String> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.into()),
        },
        ..Default::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        !status.incomplete,
        "the rules review is incomplete: {:?}",
        status.evaluation_error
    );
    let mut out = BTreeSet::new();
    for r in status.resource_rules {
        let names = r.resource_names.unwrap_or_default();
        for verb in &r.verbs {
            for group in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    let base = if group.is_empty() {
                        res.clone()
                    } else {
                        format!("{res}.{group}")
                    };
                    if names.is_empty() {
                        out.insert(format!("{verb} {base}"));
                    }
                    for n in &names {
                        out.insert(format!("{verb} {base}#{n}"));
                    }
                }
            }
        }
    }
    for r in status.non_resource_rules {
        for verb in &r.verbs {
            for url in r.non_resource_urls.iter().flatten() {
                out.insert(format!("{verb} {url}"));
            }
        }
    }
    out
}

/// What the hub may do in `namespace` beyond what a ServiceAccount without bindings may.
async fn hub_rules(hub: &Client, nobody: &Client, namespace: &str) -> BTreeSet<String> {
    let baseline = rules(nobody, namespace).await;
    rules(hub, namespace)
        .await
        .difference(&baseline)
        .cloned()
        .collect()
}

fn assert_exactly(namespace: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "the hub's rights in {namespace} are not the allow-list:\n  more than allowed: {extra:?}\n  missing: {missing:?}"
    );
}

/// The apiserver's message of a refused request, or a panic if it was not refused.
fn refused<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

async fn sa_client(cluster: &Cluster, name: &str) -> Client {
    let path = cluster.dir().unwrap().join(format!("{name}.kubeconfig"));
    let kubeconfig = service_account_kubeconfig(cluster, SYSTEM_NAMESPACE, name, &path)
        .await
        .unwrap();
    client_from_kubeconfig(&kubeconfig).await.unwrap()
}

#[test]
fn the_hub_may_do_exactly_its_allow_list_and_registers_and_removes_a_member_with_it() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut hub = Cluster::start(
            &tools,
            &ClusterSpec::api_only("hub-rbac").with_controller_manager(),
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
        let admin = hub.client();
        for ns in ["team-a", "tenant-x"] {
            hub.create_namespace(ns).await.unwrap();
        }
        Api::<ServiceAccount>::namespaced(admin.clone(), SYSTEM_NAMESPACE)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "rbac-baseline"}})).unwrap(),
            )
            .await
            .unwrap();
        let as_hub = sa_client(&hub, "gpufed-hub").await;
        let nobody = sa_client(&hub, "rbac-baseline").await;

        // 1. The allow-list, cluster-wide and per namespace, before the hub has run.
        let cluster_wide = expand(&[CLUSTER_WIDE]);
        for ns in ["default", "kube-system", "team-a"] {
            let got = hub_rules(&as_hub, &nobody, ns).await;
            assert_exactly(ns, &got, &cluster_wide);
            for verb in ["get", "list", "watch", "create", "patch"] {
                assert!(
                    !got.contains(&format!("{verb} secrets")),
                    "{verb} secrets in {ns}"
                );
            }
        }
        assert_exactly(
            SYSTEM_NAMESPACE,
            &hub_rules(&as_hub, &nobody, SYSTEM_NAMESPACE).await,
            &expand(&[CLUSTER_WIDE, OWN_NAMESPACE]),
        );
        assert_exactly(
            gpufed_crds::naming::HUB_JOBS_NAMESPACE,
            &hub_rules(&as_hub, &nobody, gpufed_crds::naming::HUB_JOBS_NAMESPACE).await,
            &expand(&[CLUSTER_WIDE, HUB_JOBS_NAMESPACE]),
        );
        for ns in ["default", "kube-system"] {
            refused(
                Api::<Secret>::namespaced(as_hub.clone(), ns)
                    .list(&Default::default())
                    .await,
                &format!("listing Secrets in {ns}"),
            );
        }

        // 2. The admission policies are in force (a dry run of a refused delete is refused too).
        let namespaces = Api::<Namespace>::all(as_hub.clone());
        wait_until(T, "the chart's admission policies in force", || async {
            let dry = DeleteParams {
                dry_run: true,
                ..Default::default()
            };
            matches!(namespaces.delete("tenant-x", &dry).await, Err(kube::Error::Api(s)) if s.code == 403)
                .then_some(())
        })
        .await
        .unwrap();

        // 3. The hub, as that ServiceAccount, registers a member.
        let hub_kubeconfig = hub.dir().unwrap().join("gpufed-hub.kubeconfig");
        let server = hub.server().to_string();
        hub.spawn(
            "gpufed-hub",
            &tools.workspace_bin("gpufed-operator").unwrap(),
            &[
                format!("--kubeconfig={}", hub_kubeconfig.display()),
                format!("--metrics-addr=127.0.0.1:{}", free_port().unwrap()),
                "--log-format=text".into(),
                "hub".into(),
                format!("--namespace={SYSTEM_NAMESPACE}"),
                "--identity=hub-0".into(),
                "--lease-duration=4s".into(),
                format!("--member-api-server={server}"),
            ],
            &[("RUST_LOG".into(), "info,gpufed_operator=debug".into())],
        )
        .unwrap();
        create_pool(&admin, "default", "CheapestFit", "20s")
            .await
            .unwrap();
        create_member(&admin, "alpha", "default", "eu-west", &[("L4", "0.50")])
            .await
            .unwrap();
        wait_member_condition(&admin, &["alpha"], "Joined", true, T)
            .await
            .unwrap();
        let member_ns = "gpufed-member-alpha";
        let kubeconfig = Api::<Secret>::namespaced(admin.clone(), member_ns)
            .get("gpufed-member-alpha-kubeconfig")
            .await
            .unwrap();
        assert!(kubeconfig.data.unwrap().contains_key("kubeconfig"));
        assert_exactly(
            member_ns,
            &hub_rules(&as_hub, &nobody, member_ns).await,
            &expand(&[CLUSTER_WIDE, MEMBER_NAMESPACE]),
        );

        // 4. What RBAC alone would allow the hub, refused by the chart's admission policies.
        let msg = refused(
            namespaces
                .delete("tenant-x", &DeleteParams::default())
                .await,
            "the hub deleting tenant-x",
        );
        assert!(msg.contains("only member namespaces"), "{msg}");
        assert!(
            Api::<Namespace>::all(admin.clone())
                .get_opt("tenant-x")
                .await
                .unwrap()
                .is_some()
        );
        let self_binding = |ns: &str, sa: (&str, &str)| -> RoleBinding {
            serde_json::from_value(json!({
                "metadata": {"name": "gpufed-hub-escape", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gpufed-hub-member-namespace"},
                "subjects": [{"kind": "ServiceAccount", "namespace": sa.0, "name": sa.1}],
            }))
            .unwrap()
        };
        let msg = refused(
            Api::<RoleBinding>::namespaced(as_hub.clone(), "tenant-x")
                .create(
                    &PostParams::default(),
                    &self_binding("tenant-x", (SYSTEM_NAMESPACE, "gpufed-hub")),
                )
                .await,
            "the hub binding itself to Secrets in tenant-x",
        );
        assert!(msg.contains("only in member namespaces"), "{msg}");
        let msg = refused(
            Api::<RoleBinding>::namespaced(as_hub.clone(), member_ns)
                .create(
                    &PostParams::default(),
                    &self_binding(member_ns, ("tenant-x", "default")),
                )
                .await,
            "the hub handing its member-namespace rights to another ServiceAccount",
        );
        assert!(msg.contains("only to its own"), "{msg}");
        let cluster_role = |name: &str, labels: serde_json::Value| -> ClusterRole {
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "rules": [{"apiGroups": ["gpufed.io"], "resources": ["memberclusters"], "verbs": ["get"]}],
            }))
            .unwrap()
        };
        let roles = Api::<ClusterRole>::all(as_hub.clone());
        let msg = refused(
            roles
                .create(
                    &PostParams::default(),
                    &cluster_role("gpufed-anything", json!({})),
                )
                .await,
            "the hub creating a ClusterRole not named for a member",
        );
        assert!(msg.contains("only member ClusterRoles"), "{msg}");
        let msg = refused(
            roles
                .create(
                    &PostParams::default(),
                    &cluster_role(
                        "gpufed-member-beta",
                        json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
                    ),
                )
                .await,
            "the hub aggregating a ClusterRole into view",
        );
        assert!(msg.contains("may not be aggregated"), "{msg}");
        let msg = refused(
            roles.delete("gpufed-hub", &DeleteParams::default()).await,
            "the hub deleting its own ClusterRole",
        );
        assert!(msg.contains("only member ClusterRoles"), "{msg}");
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "gpufed-member-beta"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gpufed-member-alpha"},
            "subjects": [{"kind": "ServiceAccount", "namespace": "tenant-x", "name": "default"}],
        }))
        .unwrap();
        let msg = refused(
            Api::<ClusterRoleBinding>::all(as_hub.clone())
                .create(&PostParams::default(), &binding)
                .await,
            "the hub binding another member's ClusterRole",
        );
        assert!(msg.contains("of the same name"), "{msg}");
        // A job on a tenant's account: only a result check's run, owned by the job it checks.
        let job = |labels: serde_json::Value| -> gpufed_crds::ComputeJob {
            serde_json::from_value(json!({
                "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": "mine", "namespace": "tenant-x", "labels": labels},
                "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                         "template": {"containers": [{"name": "main", "image": "busybox"}]}},
            }))
            .unwrap()
        };
        let tenant_jobs = Api::<gpufed_crds::ComputeJob>::namespaced(as_hub.clone(), "tenant-x");
        let msg = refused(
            tenant_jobs
                .create(&PostParams::default(), &job(json!({})))
                .await,
            "the hub submitting a job of its own on tenant-x's account",
        );
        assert!(msg.contains("only as the replica or referee"), "{msg}");
        let msg = refused(
            tenant_jobs
                .create(
                    &PostParams::default(),
                    &job(json!({"gpufed.io/result-check-of": "0d3c", "gpufed.io/result-check-role": "replica"})),
                )
                .await,
            "the hub labelling a job as a replica without the job it checks owning it",
        );
        assert!(msg.contains("owned by that job"), "{msg}");
        // A run of a job that asks for a result check, owned by it, is what the hub may make.
        let mut checked = job(json!({}));
        checked.metadata.name = Some("checked".into());
        checked.spec.result_check = Some(Default::default());
        let checked = Api::<gpufed_crds::ComputeJob>::namespaced(admin.clone(), "tenant-x")
            .create(&PostParams::default(), &checked)
            .await
            .unwrap();
        let uid = checked.metadata.uid.clone().unwrap();
        let mut run = job(
            json!({"gpufed.io/result-check-of": uid, "gpufed.io/result-check-role": "replica"}),
        );
        run.metadata.name = Some("checked-replica".into());
        run.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "gpufed.io/v1alpha1".into(),
                kind: "ComputeJob".into(),
                name: "checked".into(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(false),
            },
        ]);
        tenant_jobs
            .create(&PostParams::default(), &run)
            .await
            .unwrap();

        // 5. A pool naming a key Secret outside the hub's namespace is refused with the fix.
        apply::<GpuPool>(
            &admin,
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": "elsewhere"},
                    "spec": {"chain": {"rpcUrl": "http://127.0.0.1:1", "chainId": 31337,
                             "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                             "escrow": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                             "hubKeySecretRef": {"namespace": "team-a", "name": "hub-key", "key": "privateKey"}}}}),
        )
        .await
        .unwrap();
        let pools = Api::<GpuPool>::all(admin.clone());
        let message = wait_until(
            T,
            "the pool elsewhere to say why its chain is not ready",
            || async {
                let s = pools.get("elsewhere").await.ok()?.status?;
                let c = gpufed_crds::conditions::find(&s.conditions, "ChainReady")?;
                (c.status == "False").then(|| c.message.clone())
            },
        )
        .await
        .unwrap();
        assert!(
            message.contains("spec.chain.hubKeySecretRef.namespace is \"team-a\"")
                && message.contains(&format!(
                    "set spec.chain.hubKeySecretRef.namespace to \"{SYSTEM_NAMESPACE}\""
                )),
            "{message}"
        );

        // 6. Removing the member: its namespace and cluster-scoped RBAC go, under the same rights.
        Api::<MemberCluster>::all(admin.clone())
            .delete("alpha", &DeleteParams::default())
            .await
            .unwrap();
        let members = Api::<MemberCluster>::all(admin.clone());
        wait_until(T, "the member to be cleaned up and gone", || async {
            members.get_opt("alpha").await.ok()?.is_none().then_some(())
        })
        .await
        .unwrap();
        assert!(
            Api::<ClusterRole>::all(admin.clone())
                .get_opt("gpufed-member-alpha")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            Api::<ClusterRoleBinding>::all(admin.clone())
                .get_opt("gpufed-member-alpha")
                .await
                .unwrap()
                .is_none()
        );
        let ns = Api::<Namespace>::all(admin.clone())
            .get_opt(member_ns)
            .await
            .unwrap();
        assert!(
            ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
            "the member namespace is being deleted"
        );
        hub.check_alive().unwrap();
        // Nothing the hub did along the way was refused: its rights were enough, not just in the end.
        let log = std::fs::read_to_string(hub.dir().unwrap().join("gpufed-hub.log")).unwrap();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect();
        assert!(refusals.is_empty(), "the hub was refused: {refusals:#?}");
    });
}
