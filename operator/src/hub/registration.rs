//! What the hub creates when a `MemberCluster` joins: the member namespace on the hub, a
//! ServiceAccount for the member's agent with least privilege (its own namespace's Placements and
//! heartbeat Lease and Offer; its own MemberCluster's status, by `resourceNames`), the heartbeat Lease, a
//! token Secret, and the kubeconfig Secret the cluster owner hands to the member chart.
//!
//! Before any of that, right after the namespace, the hub binds itself to the ClusterRole
//! [`HUB_MEMBER_NAMESPACE_ROLE`] in that namespace ([`hub_role_binding`]): the hub chart gives it
//! Secrets, ServiceAccounts, Roles and Leases nowhere else (ADR 0017).
//!
//! Pure builders: no API calls here, so the exact permissions are unit-tested; the member
//! controller applies them, and the e2e suite proves against a real apiserver that they are
//! enough and no more (member A gets Forbidden on member B's objects; the hub's own rights are
//! an exact allow-list, `e2e/tests/hub_rbac.rs`).

use std::collections::BTreeMap;

use gpufed_crds::naming::{
    LABEL_CLUSTER, LABEL_MANAGED_BY, MANAGED_BY, heartbeat_lease_name, member_cluster_role,
    member_kubeconfig_secret, member_namespace, member_service_account,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

/// Name of the Role (in the member namespace) the agent's ServiceAccount is bound to.
pub const AGENT_ROLE: &str = "gpufed-agent";
/// Key of the kubeconfig in the kubeconfig Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// The ClusterRole of the hub chart that holds what the hub does inside a member namespace. The
/// chart binds it to nobody; the hub binds itself to it in each member namespace, which its
/// ClusterRole allows by `bind` on this one name.
pub const HUB_MEMBER_NAMESPACE_ROLE: &str = "gpufed-hub-member-namespace";
/// Name of the hub's own RoleBinding in a member namespace.
pub const HUB_ROLE_BINDING: &str = "gpufed-hub";
/// How the apiserver names a ServiceAccount it authenticated.
const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// Name of the token Secret of a member's ServiceAccount.
pub fn token_secret_name(cluster: &str) -> String {
    format!("{}-token", member_service_account(cluster))
}

fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
    ])
}

fn meta(name: &str, namespace: Option<&str>, cluster: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(cluster)),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        non_resource_urls: None,
    }
}

/// The member namespace on the hub (Placements and the heartbeat Lease live here).
pub fn namespace(cluster: &str) -> Namespace {
    Namespace {
        metadata: meta(&member_namespace(cluster), None, cluster),
        ..Default::default()
    }
}

/// The RBAC subject of the user the apiserver authenticated as `username` (from a
/// SelfSubjectReview): a ServiceAccount for `system:serviceaccount:<namespace>:<name>`, else a User.
pub fn subject_of(username: &str) -> Subject {
    match username
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    {
        Some((namespace, name)) => Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(namespace.into()),
            api_group: None,
        },
        None => Subject {
            kind: "User".into(),
            name: username.into(),
            namespace: None,
            api_group: Some("rbac.authorization.k8s.io".into()),
        },
    }
}

/// Binds the hub (`hub`, as [`subject_of`] its own identity) to [`HUB_MEMBER_NAMESPACE_ROLE`] in
/// the member namespace: what it needs to create the rest of the member's objects there.
pub fn hub_role_binding(cluster: &str, hub: Subject) -> RoleBinding {
    RoleBinding {
        metadata: meta(HUB_ROLE_BINDING, Some(&member_namespace(cluster)), cluster),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: HUB_MEMBER_NAMESPACE_ROLE.into(),
        },
        subjects: Some(vec![hub]),
    }
}

/// The agent's ServiceAccount.
pub fn service_account(cluster: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(
            &member_service_account(cluster),
            Some(&member_namespace(cluster)),
            cluster,
        ),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// The agent's permissions inside its own member namespace.
pub fn role(cluster: &str) -> Role {
    let lease = heartbeat_lease_name(cluster);
    Role {
        metadata: meta(AGENT_ROLE, Some(&member_namespace(cluster)), cluster),
        rules: Some(vec![
            rule(
                &["gpufed.io"],
                &["placements"],
                &["get", "list", "watch"],
                &[],
            ),
            rule(
                &["gpufed.io"],
                &["placements/status"],
                &["get", "patch", "update"],
                &[],
            ),
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "update", "patch"],
                &[&lease],
            ),
            // The provider's own prices (ADR 0024); the hub reads only the one named `offer`.
            rule(
                &["gpufed.io"],
                &["offers"],
                &["get", "create", "update", "patch"],
                &[],
            ),
            rule(
                &["", "events.k8s.io"],
                &["events"],
                &["create", "patch"],
                &[],
            ),
        ]),
    }
}

/// Binds [`role`] to the agent's ServiceAccount.
pub fn role_binding(cluster: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(AGENT_ROLE, Some(&member_namespace(cluster)), cluster),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: AGENT_ROLE.into(),
        },
        subjects: Some(vec![subject(cluster)]),
    }
}

fn subject(cluster: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: member_service_account(cluster),
        namespace: Some(member_namespace(cluster)),
        api_group: None,
    }
}

/// The agent's cluster-scoped permissions: read its own MemberCluster and write its status, nothing else.
pub fn cluster_role(cluster: &str) -> ClusterRole {
    ClusterRole {
        metadata: meta(&member_cluster_role(cluster), None, cluster),
        rules: Some(vec![
            rule(
                &["gpufed.io"],
                &["memberclusters"],
                &["get", "list", "watch"],
                &[cluster],
            ),
            rule(
                &["gpufed.io"],
                &["memberclusters/status"],
                &["get", "patch", "update"],
                &[cluster],
            ),
        ]),
        aggregation_rule: None,
    }
}

/// Binds [`cluster_role`] to the agent's ServiceAccount.
pub fn cluster_role_binding(cluster: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(&member_cluster_role(cluster), None, cluster),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: member_cluster_role(cluster),
        },
        subjects: Some(vec![subject(cluster)]),
    }
}

/// A Secret the token controller fills with a token of the agent's ServiceAccount. Deleting it
/// revokes the member's access; the hub then makes a new one.
pub fn token_secret(cluster: &str) -> Secret {
    let mut m = meta(
        &token_secret_name(cluster),
        Some(&member_namespace(cluster)),
        cluster,
    );
    m.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".to_string(),
        member_service_account(cluster),
    )]));
    Secret {
        metadata: m,
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Default::default()
    }
}

/// The heartbeat Lease the agent renews (created empty by the hub, so the agent needs no create right).
pub fn heartbeat_lease(cluster: &str) -> Lease {
    Lease {
        metadata: meta(
            &heartbeat_lease_name(cluster),
            Some(&member_namespace(cluster)),
            cluster,
        ),
        spec: Some(LeaseSpec::default()),
    }
}

/// The kubeconfig the member's agent uses to reach the hub, as a YAML string.
pub fn kubeconfig_yaml(
    cluster: &str,
    server: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<String, serde_norway::Error> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let name = format!("gpufed-hub-{cluster}");
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gpufed-hub", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "gpufed-hub", "user": name, "namespace": member_namespace(cluster)}}],
        "current-context": name,
    });
    serde_norway::to_string(&doc)
}

/// The Secret holding [`kubeconfig_yaml`] under `kubeconfig`, in the member namespace.
pub fn kubeconfig_secret(cluster: &str, kubeconfig: String) -> Secret {
    Secret {
        metadata: meta(
            &member_kubeconfig_secret(cluster),
            Some(&member_namespace(cluster)),
            cluster,
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KUBECONFIG_KEY.to_string(),
            ByteString(kubeconfig.into_bytes()),
        )])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs_on(rules: &[PolicyRule], resource: &str) -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
            })
            .flat_map(|r| r.verbs.clone())
            .collect()
    }

    #[test]
    fn the_agent_may_read_placements_and_write_only_their_status() {
        let r = role("alpha");
        assert_eq!(r.metadata.namespace.as_deref(), Some("gpufed-member-alpha"));
        let rules = r.rules.unwrap();
        assert_eq!(verbs_on(&rules, "placements"), ["get", "list", "watch"]);
        assert_eq!(
            verbs_on(&rules, "placements/status"),
            ["get", "patch", "update"]
        );
        assert!(
            verbs_on(&rules, "secrets").is_empty(),
            "no Secrets, not even its own kubeconfig"
        );
    }

    #[test]
    fn the_agent_may_write_its_own_offer_and_nothing_deletes_it() {
        let r = role("alpha");
        assert_eq!(r.metadata.namespace.as_deref(), Some("gpufed-member-alpha"));
        assert_eq!(
            verbs_on(&r.rules.unwrap(), "offers"),
            ["get", "create", "update", "patch"]
        );
    }

    #[test]
    fn the_agent_may_renew_only_its_own_lease_and_not_create_others() {
        let rules = role("alpha").rules.unwrap();
        let lease = rules
            .iter()
            .find(|r| {
                r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.contains(&"leases".to_string()))
            })
            .unwrap();
        assert_eq!(
            lease.resource_names.as_deref(),
            Some(&["alpha-heartbeat".to_string()][..])
        );
        assert!(!lease.verbs.contains(&"create".to_string()));
    }

    #[test]
    fn cluster_scoped_rights_are_limited_to_its_own_member_cluster() {
        let cr = cluster_role("alpha");
        for r in cr.rules.unwrap() {
            assert_eq!(
                r.resource_names.as_deref(),
                Some(&["alpha".to_string()][..]),
                "{r:?}"
            );
            assert!(
                !r.verbs.iter().any(|v| v == "delete" || v == "create"),
                "{r:?}"
            );
        }
        let b = cluster_role_binding("alpha");
        assert_eq!(b.subjects.unwrap()[0].name, "gpufed-agent-alpha");
    }

    #[test]
    fn the_hub_binds_only_itself_and_only_to_the_member_namespace_role() {
        let b = hub_role_binding(
            "alpha",
            subject_of("system:serviceaccount:gpufed-system:gpufed-hub"),
        );
        assert_eq!(b.metadata.namespace.as_deref(), Some("gpufed-member-alpha"));
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(b.role_ref.name, "gpufed-hub-member-namespace");
        let subjects = b.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "gpufed-hub");
        assert_eq!(subjects[0].namespace.as_deref(), Some("gpufed-system"));
    }

    #[test]
    fn a_hub_running_as_a_user_binds_that_user() {
        let s = subject_of("e2e-admin");
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("User", "e2e-admin"));
        assert_eq!(s.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
        // A malformed ServiceAccount name is not mistaken for a ServiceAccount.
        assert_eq!(subject_of("system:serviceaccount:nocolon").kind, "User");
    }

    #[test]
    fn the_kubeconfig_uses_the_token_and_defaults_to_the_member_namespace() {
        let y = kubeconfig_yaml("alpha", "https://hub:6443", b"PEM", "tok").unwrap();
        let v: serde_json::Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://hub:6443");
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(
            v["contexts"][0]["context"]["namespace"],
            "gpufed-member-alpha"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
    }

    #[test]
    fn every_object_is_labelled_with_its_cluster() {
        let names = [
            namespace("a").metadata,
            service_account("a").metadata,
            role("a").metadata,
            role_binding("a").metadata,
            hub_role_binding("a", subject_of("hub")).metadata,
            cluster_role("a").metadata,
            cluster_role_binding("a").metadata,
            token_secret("a").metadata,
            heartbeat_lease("a").metadata,
        ];
        for m in names {
            assert_eq!(m.labels.unwrap()[LABEL_CLUSTER], "a");
        }
    }
}
