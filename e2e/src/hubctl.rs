//! Helpers for tests that run the real hub (`gpufed-operator hub` as a process) against a harness
//! cluster and need to create pools, members and jobs, or stand in for a member's agent before
//! the real agent is involved (renew the heartbeat Lease, report an inventory, report Placement
//! status), as the hub issue allows for hub-only tests.

use std::time::Duration;

use gpufed_crds::naming::{heartbeat_lease_name, member_namespace};
use gpufed_crds::{
    ComputeJob, GpuPool, Inventory, MemberCluster, NodeInventory, Placement, PlacementStatus,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::process::free_port;
use crate::{Cluster, Error, Tools, wait_until};

/// A hub cluster for hub tests: API server and controller-manager, the hub CRDs, and the tenant
/// namespaces `team-a` and `team-b` (plus any `extra_namespaces`).
pub async fn hub_cluster(
    tools: &Tools,
    name: &str,
    extra_namespaces: &[&str],
) -> Result<Cluster, Error> {
    hub_cluster_from(
        tools,
        crate::ClusterSpec::api_only(name).with_controller_manager(),
        extra_namespaces,
    )
    .await
}

/// A hub cluster like [`hub_cluster`] whose apiserver records every write in an audit log
/// ([`Cluster::audited_writes`]), to tell which replica wrote what.
pub async fn audited_hub_cluster(
    tools: &Tools,
    name: &str,
    extra_namespaces: &[&str],
) -> Result<Cluster, Error> {
    hub_cluster_from(
        tools,
        crate::ClusterSpec::api_only(name)
            .with_controller_manager()
            .with_write_audit(),
        extra_namespaces,
    )
    .await
}

async fn hub_cluster_from(
    tools: &Tools,
    spec: crate::ClusterSpec,
    extra_namespaces: &[&str],
) -> Result<Cluster, Error> {
    let c = Cluster::start(tools, &spec).await?;
    c.install_crds(&gpufed_crds::crds_for(gpufed_crds::Side::Hub))
        .await?;
    for ns in ["team-a", "team-b"].iter().chain(extra_namespaces) {
        c.create_namespace(ns).await?;
    }
    Ok(c)
}

/// Waits until each member in `names` has the condition `condition` equal to `want`.
pub async fn wait_member_condition(
    client: &Client,
    names: &[&str],
    condition: &str,
    want: bool,
    timeout: Duration,
) -> Result<(), Error> {
    let api: Api<MemberCluster> = Api::all(client.clone());
    for name in names {
        wait_until(timeout, &format!("{name} {condition}={want}"), || async {
            let s = api.get(name).await.ok()?.status?;
            let c = gpufed_crds::conditions::find(&s.conditions, condition)?;
            ((c.status == "True") == want).then_some(())
        })
        .await?;
    }
    Ok(())
}

/// Field manager used when a test stands in for an agent.
pub const FAKE_AGENT: &str = "e2e-fake-agent";

/// The hub's log filter in tests: the operator at debug, for the logs printed when a test fails.
pub const TEST_HUB_LOG: &str = "info,gpufed_operator=debug";

/// The leader Lease of a hub in tests: short, so takeover tests stay quick.
pub const TEST_LEASE_DURATION: &str = "4s";

/// Starts `gpufed-operator hub` as a process of `cluster` named `name`, with a short leader
/// Lease so takeover tests stay quick. Returns the metrics port.
pub fn start_hub(
    tools: &Tools,
    cluster: &mut Cluster,
    name: &str,
    extra: &[&str],
) -> Result<u16, Error> {
    start_hub_with(
        tools,
        cluster,
        name,
        TEST_LEASE_DURATION,
        TEST_HUB_LOG,
        extra,
    )
}

/// Starts `gpufed-operator hub` like [`start_hub`], with the leader Lease lasting
/// `lease_duration` and `RUST_LOG` set to `rust_log` (the benchmark runs it at the operator's
/// own default, as the chart does). Returns the metrics port.
pub fn start_hub_with(
    tools: &Tools,
    cluster: &mut Cluster,
    name: &str,
    lease_duration: &str,
    rust_log: &str,
    extra: &[&str],
) -> Result<u16, Error> {
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    spawn_hub(
        tools,
        cluster,
        name,
        &kubeconfig,
        lease_duration,
        rust_log,
        extra,
    )
}

/// Starts `gpufed-operator hub` like [`start_hub`], authenticated as a user of its own (named
/// `name`, in `system:masters`), so the apiserver's audit log tells its requests from another
/// replica's. Returns the metrics port.
pub fn start_hub_as_own_user(
    tools: &Tools,
    cluster: &mut Cluster,
    name: &str,
    extra: &[&str],
) -> Result<u16, Error> {
    let kubeconfig = cluster.user_kubeconfig(name, &["system:masters"])?;
    spawn_hub(
        tools,
        cluster,
        name,
        &kubeconfig,
        TEST_LEASE_DURATION,
        TEST_HUB_LOG,
        extra,
    )
}

fn spawn_hub(
    tools: &Tools,
    cluster: &mut Cluster,
    name: &str,
    kubeconfig: &std::path::Path,
    lease_duration: &str,
    rust_log: &str,
    extra: &[&str],
) -> Result<u16, Error> {
    let port = free_port()?;
    let kubeconfig = kubeconfig.display().to_string();
    let mut args: Vec<String> = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--metrics-addr=127.0.0.1:{port}"),
        "hub".into(),
        "--namespace=gpufed-system".into(),
        format!("--identity={name}"),
        format!("--lease-duration={lease_duration}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let env = vec![("RUST_LOG".to_string(), rust_log.to_string())];
    cluster.spawn(name, &tools.workspace_bin("gpufed-operator")?, &args, &env)?;
    Ok(port)
}

/// Applies a manifest (server-side apply, field manager `e2e`).
pub async fn apply<K>(client: &Client, obj: &serde_json::Value) -> Result<K, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(Error::kube("applying a manifest"))?;
    let value = serde_json::to_value(applied).map_err(|e| Error::Other(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| Error::Other(format!("reading back {name}: {e}")))
}

/// Makes the apiserver refuse `operations` on `resource` (`group`'s, e.g. `computejobs/status` of
/// `gpufed.io`, `""` for the core group) in `namespace`, whoever asks, with `message`: a
/// ValidatingAdmissionPolicy and its binding, both named `name`. Returns once they are applied;
/// the apiserver may take a moment more to enforce them.
pub async fn deny_writes(
    client: &Client,
    name: &str,
    namespace: &str,
    (group, resource): (&str, &str),
    operations: &[&str],
    message: &str,
) -> Result<(), Error> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let _: ValidatingAdmissionPolicy = apply(
        client,
        &serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
                "spec": {"failurePolicy": "Fail",
                         "matchConstraints": {
                             "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                             "resourceRules": [{"apiGroups": [group],
                                                "apiVersions": ["*"],
                                                "operations": operations,
                                                "resources": [resource]}]},
                         "validations": [{"expression": "false", "message": message}]}}),
    )
    .await?;
    let _: ValidatingAdmissionPolicyBinding = apply(
        client,
        &serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
                "spec": {"policyName": name, "validationActions": ["Deny"]}}),
    )
    .await?;
    Ok(())
}

/// A pool named `name` with the given strategy and heartbeat timeout.
pub async fn create_pool(
    client: &Client,
    name: &str,
    strategy: &str,
    heartbeat: &str,
) -> Result<GpuPool, Error> {
    apply(
        client,
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": name},
                "spec": {"strategy": strategy, "heartbeatTimeout": heartbeat}}),
    )
    .await
}

/// A member of pool `pool` in `region` pricing each `(model, price)`.
pub async fn create_member(
    client: &Client,
    name: &str,
    pool: &str,
    region: &str,
    prices: &[(&str, &str)],
) -> Result<MemberCluster, Error> {
    let prices: Vec<_> = prices
        .iter()
        .map(|(m, p)| json!({"model": m, "pricePerGpuHour": p}))
        .collect();
    apply(
        client,
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": name},
                "spec": {"pool": pool, "region": region, "prices": prices}}),
    )
    .await
}

/// A fake node inventory entry: `(name, model, memory MiB, allocatable, free)`.
pub fn node(
    name: &str,
    model: &str,
    memory_mib: u64,
    allocatable: u32,
    free: u32,
) -> NodeInventory {
    NodeInventory {
        name: name.into(),
        model: model.into(),
        gpu_memory_mib: memory_mib,
        allocatable_gpus: allocatable,
        free_gpus: free,
        unhealthy_gpus: 0,
        telemetry_stale: false,
        utilization_percent: 0,
        ready: true,
        // What an agent copies from gpu-probe's GpuNode status (at most 64 per node).
        gpu_uuids: (0..allocatable.min(64))
            .map(|i| gpu_uuid(name, i))
            .collect(),
    }
}

/// The UUID [`node`] reports for GPU `i` of node `node` (the form NVML gives: `GPU-…`).
pub fn gpu_uuid(node: &str, i: u32) -> String {
    format!("GPU-{node}-{i}")
}

/// Reports `nodes` as member `name`'s inventory, as its agent would.
pub async fn report_inventory(
    client: &Client,
    name: &str,
    nodes: Vec<NodeInventory>,
) -> Result<(), Error> {
    let total: u32 = nodes.iter().map(|n| n.allocatable_gpus).sum();
    let free: u32 = nodes.iter().map(|n| n.free_gpus).sum();
    let inventory = Inventory {
        update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        nodes,
    };
    let body = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster", "metadata": {"name": name},
                      "status": {"inventory": inventory, "totalGpus": total, "freeGpus": free}});
    Api::<MemberCluster>::all(client.clone())
        .patch_status(
            name,
            &PatchParams::apply(FAKE_AGENT).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube("reporting an inventory"))?;
    Ok(())
}

/// Renews member `name`'s heartbeat Lease once (waits for the hub to have created it).
pub async fn heartbeat(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &member_namespace(name));
    let lease_name = heartbeat_lease_name(name);
    let body = json!({"spec": {"holderIdentity": format!("{name}-agent"), "leaseDurationSeconds": 10,
                               "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
    api.patch(&lease_name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(Error::kube("renewing a heartbeat"))?;
    Ok(())
}

/// Renews member `name`'s heartbeat every second until the returned handle is aborted.
pub fn keep_heartbeating(client: Client, name: &str) -> tokio::task::JoinHandle<()> {
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            if let Err(e) = heartbeat(&client, &name).await {
                tracing::debug!(member = %name, error = %e, "fake heartbeat");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Writes a Placement's status as the member's agent would.
pub async fn report_placement(
    client: &Client,
    placement: &Placement,
    status: PlacementStatus,
) -> Result<(), Error> {
    let ns = placement.metadata.namespace.clone().unwrap_or_default();
    let name = placement.metadata.name.clone().unwrap_or_default();
    let body = json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "Placement", "metadata": {"name": name},
                      "status": status});
    Api::<Placement>::namespaced(client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(FAKE_AGENT).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube("reporting a placement"))?;
    Ok(())
}

/// Waits until job `ns/name` satisfies `pred`, returning it; on timeout the error shows its last status.
pub async fn wait_job(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ComputeJob) -> bool,
) -> Result<ComputeJob, Error> {
    let api: Api<ComputeJob> = Api::namespaced(client.clone(), ns);
    let last = std::sync::Mutex::new(None);
    let result = wait_until(timeout, what, || async {
        let j = api.get_opt(name).await.ok().flatten()?;
        let ok = pred(&j);
        if let Ok(mut l) = last.lock() {
            *l = Some(j.status.clone());
        }
        ok.then_some(j)
    })
    .await;
    result.map_err(|e| {
        let status = last.lock().ok().and_then(|l| l.clone());
        Error::Other(format!("{e}; last status of {ns}/{name}: {status:?}"))
    })
}

/// Notes of the Events of `reason` about job `name` in `ns`.
pub async fn job_events(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<String>, Error> {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map_err(Error::kube("listing Events"))?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect())
}

/// Every Placement in member `cluster`'s namespace.
pub async fn placements(client: &Client, cluster: &str) -> Result<Vec<Placement>, Error> {
    Ok(
        Api::<Placement>::namespaced(client.clone(), &member_namespace(cluster))
            .list(&Default::default())
            .await
            .map_err(Error::kube("listing placements"))?
            .items,
    )
}
