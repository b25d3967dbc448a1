//! The MemberCluster controller: registration (namespace, least-privilege credentials, heartbeat
//! Lease, the kubeconfig Secret for the owner), health from the heartbeat Lease (Ready/NotReady),
//! bond state, and whether new jobs may go there (Schedulable). On deletion it removes everything
//! it created; the member's running attempts are then failed over by the job controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gpufed_crds::conditions::{self, member as mc};
use gpufed_crds::join::ANNOTATION_LEAVING;
use gpufed_crds::naming::{
    LABEL_CLUSTER, heartbeat_lease_name, member_cluster_role, member_kubeconfig_secret,
    member_namespace,
};
use gpufed_crds::{ComputeJob, KubeDuration, MemberCluster, MemberClusterStatus, SettlementState};
use gpufed_scheduler::BondState;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::hub::context::{
    Context, MANAGER, REREGISTER_NOT_READY, Registered, now, registration_due,
};
use crate::hub::registration::{self, token_secret_name};
use crate::hub::snapshot;

/// Finalizer that keeps a member until its namespace and cluster-scoped RBAC are removed.
pub const FINALIZER: &str = "gpufed.io/member-cleanup";
const CONTROLLER: &str = "membercluster";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: (
        crate::hub::Subscription<MemberCluster>,
        crate::hub::Subscription<Lease>,
        crate::hub::Subscription<gpufed_crds::ProviderBond>,
    ),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (members, leases, bonds) = subs;
    Controller::for_shared_stream(members, ctx.stores.members.clone())
        .watches_shared_stream(leases, |l: Arc<Lease>| {
            l.labels().get(LABEL_CLUSTER).map(|c| ObjectRef::new(c))
        })
        .watches_shared_stream(bonds, |b: Arc<gpufed_crds::ProviderBond>| {
            Some(ObjectRef::new(&b.spec.member_cluster))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(member: Arc<MemberCluster>, err: &Error, ctx: Arc<Context>) -> Requeue {
    let delay = ctx.backoffs.next(&format!("member/{}", member.name_any()));
    tracing::warn!(member = %member.name_any(), error = %err, kind = err.kind(), retry_in = ?delay, "reconcile failed");
    ctx.metrics.failed(CONTROLLER, err.kind());
    Requeue::requeue(delay)
}

#[tracing::instrument(skip_all, fields(member = %member.name_any()))]
async fn reconcile(member: Arc<MemberCluster>, ctx: Arc<Context>) -> Result<Requeue> {
    let t0 = Instant::now();
    let name = member.name_any();
    let api: Api<MemberCluster> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, member, |event| async {
        match event {
            Finalizer::Apply(m) => apply(m, &ctx).await,
            Finalizer::Cleanup(m) => cleanup(m, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(CONTROLLER, t0.elapsed());
    if result.is_ok() {
        ctx.backoffs.reset(&format!("member/{name}"));
    }
    result
}

async fn ssa<K>(api: Api<K>, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.name"))?;
    let mut body = serde_json::to_value(obj).map_err(|source| Error::Serde {
        context: K::kind(&()).to_string(),
        source,
    })?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!("applying {} {name}", K::kind(&()))))?;
    Ok(())
}

/// Creates or updates everything a member needs on the hub. Returns the kubeconfig Secret's name
/// once the ServiceAccount token exists (the token controller fills it asynchronously).
async fn register(name: &str, ctx: &Context) -> Result<Option<String>> {
    let c = &ctx.client;
    let ns = member_namespace(name);
    ssa(
        Api::<Namespace>::all(c.clone()),
        &registration::namespace(name),
    )
    .await?;
    // The hub may write Secrets, ServiceAccounts, Roles and Leases only in member namespaces,
    // through its own binding in each (ADR 0017): that binding first, effective before the rest.
    ssa(
        Api::<RoleBinding>::namespaced(c.clone(), &ns),
        &registration::hub_role_binding(name, hub_subject(c).await?),
    )
    .await?;
    member_namespace_rights_effective(c, &ns).await?;
    ssa(
        Api::<ServiceAccount>::namespaced(c.clone(), &ns),
        &registration::service_account(name),
    )
    .await?;
    ssa(
        Api::<Role>::namespaced(c.clone(), &ns),
        &registration::role(name),
    )
    .await?;
    ssa(
        Api::<RoleBinding>::namespaced(c.clone(), &ns),
        &registration::role_binding(name),
    )
    .await?;
    ssa(
        Api::<ClusterRole>::all(c.clone()),
        &registration::cluster_role(name),
    )
    .await?;
    ssa(
        Api::<ClusterRoleBinding>::all(c.clone()),
        &registration::cluster_role_binding(name),
    )
    .await?;
    ssa(
        Api::<Secret>::namespaced(c.clone(), &ns),
        &registration::token_secret(name),
    )
    .await?;
    // The Lease is created once and then renewed by the agent: never overwrite it. One the cache
    // already holds is not created again (each re-registration would be a refused POST).
    let lease_cached = ctx
        .stores
        .leases
        .get(&ObjectRef::new(&heartbeat_lease_name(name)).within(&ns))
        .is_some();
    if !lease_cached {
        match Api::<Lease>::namespaced(c.clone(), &ns)
            .create(&PostParams::default(), &registration::heartbeat_lease(name))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube("creating the heartbeat Lease")(e)),
        }
    }
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns);
    let token = secrets
        .get_opt(&token_secret_name(name))
        .await
        .map_err(Error::kube("reading the member token"))?
        .and_then(|s| s.data)
        .and_then(|d| d.get("token").cloned())
        .map(|t| String::from_utf8_lossy(&t.0).to_string());
    let Some(token) = token else {
        return Ok(None);
    };
    let kubeconfig = registration::kubeconfig_yaml(
        name,
        &ctx.config.member_api_server,
        &ctx.config.member_api_ca,
        &token,
    )
    .map_err(|e| Error::Config(format!("writing the member kubeconfig: {e}")))?;
    ssa(secrets, &registration::kubeconfig_secret(name, kubeconfig)).await?;
    Ok(Some(member_kubeconfig_secret(name)))
}

/// Who the hub is, as the apiserver authenticates it: asked once per process.
static HUB_SUBJECT: tokio::sync::OnceCell<Subject> = tokio::sync::OnceCell::const_new();

/// The hub's own RBAC subject, from a SelfSubjectReview (which every authenticated user may make).
async fn hub_subject(client: &kube::Client) -> Result<Subject> {
    HUB_SUBJECT
        .get_or_try_init(|| async {
            let review = Api::<SelfSubjectReview>::all(client.clone())
                .create(&PostParams::default(), &SelfSubjectReview::default())
                .await
                .map_err(Error::kube("asking the apiserver who the hub is"))?;
            let username = review
                .status
                .and_then(|s| s.user_info)
                .and_then(|u| u.username)
                .ok_or(Error::MissingObjectKey(".status.userInfo.username"))?;
            Ok(registration::subject_of(&username))
        })
        .await
        .cloned()
}

/// How long a new binding of the hub may take to reach the apiserver's RBAC authorizer (which
/// learns of bindings through a watch, usually within milliseconds).
const BINDING_EFFECTIVE_WITHIN: Duration = Duration::from_secs(10);

/// Waits until the hub's binding in member namespace `ns` is in force (a SelfSubjectAccessReview
/// for creating Secrets there), so the writes after it are not refused while the authorizer
/// catches up.
async fn member_namespace_rights_effective(client: &kube::Client, ns: &str) -> Result<()> {
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                verb: Some("create".into()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let deadline = Instant::now() + BINDING_EFFECTIVE_WITHIN;
    loop {
        let allowed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::kube(format!(
                "asking whether the hub may write Secrets in {ns}"
            )))?
            .status
            .is_some_and(|s| s.allowed);
        if allowed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Config(format!(
                "the hub may not write Secrets in {ns} {BINDING_EFFECTIVE_WITHIN:?} after binding itself to the ClusterRole {} there: install or upgrade the hub chart, which ships that ClusterRole",
                registration::HUB_MEMBER_NAMESPACE_ROLE
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A renewal of a member's heartbeat Lease as the hub observed it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenRenewal {
    /// The Lease's renewTime (written with the member's clock).
    renew_time: Time,
    /// When the hub first saw that value, on its own monotonic clock.
    seen_at: Instant,
    /// The value was already known to be expired when first seen (see [`heartbeat`]).
    expired_when_seen: bool,
}

/// Heartbeat state: `(ready, last renewal, what the hub has now seen)`.
///
/// Freshness is judged on the hub's own clock — how long since the hub *saw* `renewTime` change —
/// never by comparing the member's timestamp with the hub's, so a member whose clock is off cannot
/// make the hub fail over early (and run an attempt twice) or late. A Lease first seen after a hub
/// restart counts as fresh for one timeout, as client-go's leader election does — unless the
/// member's status (written by the previous leader) already says this very renewal expired
/// (`expired_in_status`), so a member that died long ago does not come back Ready for a while
/// after every leader change.
pub fn heartbeat(
    lease: Option<&Lease>,
    timeout: std::time::Duration,
    previous: Option<&SeenRenewal>,
    expired_in_status: bool,
    now: Instant,
) -> (bool, Option<Time>, Option<SeenRenewal>) {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| Time(t.0));
    let Some(renew_time) = renewed.clone() else {
        return (false, None, None);
    };
    let seen = match previous {
        Some(p) if p.renew_time == renew_time => p.clone(),
        Some(_) => SeenRenewal {
            renew_time,
            seen_at: now,
            expired_when_seen: false,
        },
        None => SeenRenewal {
            renew_time,
            seen_at: now,
            expired_when_seen: expired_in_status,
        },
    };
    let ready = !seen.expired_when_seen && now.saturating_duration_since(seen.seen_at) < timeout;
    (ready, renewed, Some(seen))
}

/// How long a Ready member's `status.lastHeartbeatTime` and `status.activePlacements` may go
/// unrefreshed (ADR 0036; the Lease holds the exact renewal, as a Node's Lease does next to its
/// status, which kubelet refreshes every 5 minutes when nothing changed).
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a member's heartbeat time and active count are due to be written: always while it is
/// not Ready (the time must then be exact), and once the written time is [`STATUS_REFRESH`] (or a
/// quarter of the heartbeat timeout, if longer) behind the Lease's renewal.
fn status_refresh_due(
    current: &MemberClusterStatus,
    ready: bool,
    renewed: Option<&Time>,
    timeout: std::time::Duration,
) -> bool {
    match (&current.last_heartbeat_time, renewed) {
        (Some(old), Some(new)) if ready => {
            let behind = new.0.duration_since(old.0).as_secs_f64();
            behind >= STATUS_REFRESH.max(timeout / 4).as_secs_f64()
        }
        _ => true,
    }
}

/// The hub-owned part of a member's status.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct HubStatus {
    namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heartbeat_time: Option<Time>,
    heartbeat_timeout: KubeDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    offer_signing: Option<gpufed_crds::OfferSigning>,
    active_placements: u32,
    observed_generation: Option<i64>,
    conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outages: Vec<gpufed_crds::Outage>,
}

/// Tenant attempts on `member` that have not ended, or whose escrow lock is not settled yet: a
/// leaving member is deleted only once there are none (its Placements, with the usage receipts on
/// them, go with its namespace). The hub's own challenges do not count: they pay nothing, and
/// verify a member that is going.
pub fn attempts_on<J: std::borrow::Borrow<ComputeJob>>(jobs: &[J], member: &str) -> u32 {
    let n = jobs
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|j| !crate::hub::challenges::is_hub_job(j))
        .filter_map(|j| j.status.as_ref())
        .flat_map(|s| s.attempts.iter())
        .filter(|a| a.cluster == member)
        .filter(|a| {
            let in_flight = a.settlement.as_ref().is_some_and(|st| {
                matches!(
                    st.state,
                    SettlementState::Locking | SettlementState::Locked | SettlementState::Settling
                )
            });
            !a.phase.is_finished() || in_flight
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether `member`'s provider asked to leave (ADR 0031): cordoned and annotated by the
/// registration endpoint.
fn leaving(member: &MemberCluster) -> Option<&str> {
    member
        .annotations()
        .get(ANNOTATION_LEAVING)
        .filter(|_| member.spec.cordoned)
        .map(String::as_str)
}

async fn apply(member: Arc<MemberCluster>, ctx: &Context) -> Result<Requeue> {
    let name = member.name_any();
    let generation = member.metadata.generation;
    let at = now();
    let draining = match leaving(&member) {
        Some(since) => {
            let left = attempts_on(&ctx.stores.jobs.state(), &name);
            if left == 0 {
                // Drained: the deletion runs the cleanup below (namespace, credentials).
                match Api::<MemberCluster>::all(ctx.client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::kube(format!("deleting MemberCluster {name}"))(e)),
                }
                tracing::info!(member = %name, "member left the pool at its provider's request");
                return Ok(Requeue::await_change());
            }
            Some((since.to_string(), left))
        }
        None => None,
    };
    let current = member.status.clone().unwrap_or_default();
    // `Verified` is the challenge loop's, written under its own field manager: this controller
    // never applies it, so it never takes it over (nor writes back a stale copy).
    let mut conds: Vec<Condition> = current
        .conditions
        .iter()
        .filter(|c| c.type_ != mc::VERIFIED)
        .cloned()
        .collect();
    let set = |conds: &mut Vec<Condition>, t: &str, ok: bool, reason: &str, msg: String| {
        conditions::set_condition(
            conds,
            conditions::condition(t, ok, reason, msg, generation, at.clone()),
        );
    };

    let pool = ctx.stores.pool(&member.spec.pool);
    let timeout = pool
        .as_ref()
        .map(|p| p.spec.heartbeat_timeout)
        .unwrap_or(KubeDuration::from_secs(40));
    let lease = ctx
        .stores
        .leases
        .get(&ObjectRef::new(&heartbeat_lease_name(&name)).within(&member_namespace(&name)));
    let (ready, renewed, seen) = {
        let mut seen_map = ctx.heartbeats_seen.lock().await;
        // The previous leader recorded this renewal as expired: it stays expired.
        let lease_renew = lease
            .as_deref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| Time(t.0));
        let expired_in_status = !conditions::is_true(&conds, mc::READY)
            && conditions::find(&conds, mc::READY).is_some_and(|c| c.reason == "HeartbeatExpired")
            && current.last_heartbeat_time.is_some()
            && current.last_heartbeat_time == lease_renew;
        let (ready, renewed, seen) = heartbeat(
            lease.as_deref(),
            timeout.as_duration(),
            seen_map.get(&name),
            expired_in_status,
            Instant::now(),
        );
        match &seen {
            Some(s) => {
                seen_map.insert(name.clone(), s.clone());
            }
            None => {
                seen_map.remove(&name);
            }
        }
        (ready, renewed, seen)
    };
    let was_ready = conditions::is_true(&conds, mc::READY);
    if ready {
        set(
            &mut conds,
            mc::READY,
            true,
            "Heartbeat",
            format!("heartbeat within {timeout}"),
        );
    } else if renewed.is_some() {
        set(
            &mut conds,
            mc::READY,
            false,
            "HeartbeatExpired",
            format!("no heartbeat for more than {timeout}"),
        );
    } else {
        set(
            &mut conds,
            mc::READY,
            false,
            "NeverSeen",
            "the member's agent has not sent a heartbeat yet".into(),
        );
    }

    let uid = member.metadata.uid.clone().unwrap_or_default();
    let due = {
        let registered = ctx.registered.lock().await;
        registration_due(
            registered.get(&name),
            &uid,
            &name,
            (ready, was_ready),
            Instant::now(),
        )
    };
    let credentials = if !due && current.credentials_secret.is_some() {
        current.credentials_secret.clone()
    } else {
        let (credentials, failed) = match register(&name, ctx).await {
            Ok(credentials) => (credentials, false),
            // A member registered before keeps its credentials while a repair fails: the failure
            // must not hold up its status, which carries a lost heartbeat to the jobs on it.
            Err(e) if current.credentials_secret.is_some() => {
                tracing::warn!(member = %name, error = %e, kind = e.kind(), retry_in = ?REREGISTER_NOT_READY, "registering the member again failed");
                ctx.metrics.failed(CONTROLLER, e.kind());
                ctx.event(
                    member.as_ref(),
                    true,
                    "RegistrationFailed",
                    "Register",
                    format!("registering {name} again failed (tried again in {REREGISTER_NOT_READY:?}): {e}"),
                );
                (current.credentials_secret.clone(), true)
            }
            Err(e) => return Err(e),
        };
        if credentials.is_some() {
            let at = Instant::now();
            let done = Registered { uid, at, failed };
            ctx.registered.lock().await.insert(name.clone(), done);
        }
        credentials
    };
    match (&pool, &credentials) {
        (None, _) => set(
            &mut conds,
            mc::JOINED,
            false,
            "PoolNotFound",
            format!("GpuPool {:?} does not exist", member.spec.pool),
        ),
        (Some(_), None) => set(
            &mut conds,
            mc::JOINED,
            false,
            "WaitingForToken",
            "waiting for the ServiceAccount token".into(),
        ),
        (Some(_), Some(secret)) => set(
            &mut conds,
            mc::JOINED,
            true,
            "Registered",
            format!(
                "namespace {} and credentials ready: copy Secret {secret} from that namespace into the member cluster and name the copy in the member chart's hub.kubeconfigSecret",
                member_namespace(&name)
            ),
        ),
    }

    // Downtime for the member's reputation: from its heartbeat expiring until it is Ready again
    // (a member that never heartbeated is not down, it has not started).
    let outages = {
        let window = crate::hub::reputation::window(pool.as_deref());
        let since = crate::hub::reputation::window_start(&member, window, at.0.as_second());
        crate::hub::reputation::sample(&current.outages, ready || renewed.is_none(), &at, since)
    };

    let bond = pool
        .as_ref()
        .map(|p| snapshot::bond_state(p, &member, ctx.stores.bond(&name).as_deref()))
        .unwrap_or_default();
    let (bonded, bond_reason, bond_msg) = match &bond {
        BondState::NotRequired => (true, "NotRequired", "the pool requires no bond".to_string()),
        BondState::Eligible => (
            true,
            "Bonded",
            "the on-chain bond covers the pool minimum".to_string(),
        ),
        BondState::Insufficient { bonded, required } => (
            false,
            "InsufficientBond",
            format!(
                "bond {} < required {}",
                gpufed_scheduler::format_tokens(*bonded),
                gpufed_scheduler::format_tokens(*required)
            ),
        ),
        BondState::NoWallet => (
            false,
            "NoWallet",
            "set spec.wallet: the pool pays on chain".to_string(),
        ),
        BondState::Unknown => (
            false,
            "Unknown",
            "the bond has not been read from the chain yet".to_string(),
        ),
    };
    set(&mut conds, mc::BONDED, bonded, bond_reason, bond_msg);
    let has_inventory = current.inventory.is_some();
    let (schedulable, reason, msg) = if let Some((since, left)) = &draining {
        (
            false,
            "Leaving",
            format!(
                "its provider asked to leave at {since}; it is removed once its {left} attempt(s) end and settle"
            ),
        )
    } else if member.spec.cordoned {
        (false, "Cordoned", "spec.cordoned is true".to_string())
    } else if !ready {
        (false, "NotReady", "no recent heartbeat".to_string())
    } else if !bonded {
        (
            false,
            bond_reason,
            "the provider's bond does not allow new jobs".to_string(),
        )
    } else if !has_inventory {
        (
            false,
            "NoInventory",
            "the agent has not reported an inventory yet".to_string(),
        )
    } else {
        (
            true,
            "Schedulable",
            "new jobs may be placed here".to_string(),
        )
    };
    set(&mut conds, mc::SCHEDULABLE, schedulable, reason, msg);

    let active = ctx.active_placements(&name);
    // The heartbeat time and the count of active placements are refreshed only every
    // [`STATUS_REFRESH`] while the member stays Ready (ADR 0036): each changes with every renewal
    // or placement, and a write for each was most of the hub's writes at 1,000 members. Any other
    // change writes at once, with both fresh; and the heartbeat time is exact once the member is
    // not Ready, so a later leader can tell that this very renewal already expired.
    let now_values = (renewed.clone(), active);
    let (last_heartbeat_time, active) =
        if status_refresh_due(&current, ready, renewed.as_ref(), timeout.as_duration()) {
            now_values.clone()
        } else {
            (
                current.last_heartbeat_time.clone(),
                current.active_placements,
            )
        };
    let mut desired = HubStatus {
        namespace: member_namespace(&name),
        credentials_secret: credentials,
        last_heartbeat_time,
        heartbeat_timeout: timeout,
        offer_signing: match ctx.stores.signing(&member) {
            crate::hub::offers::Signing::Signed(d) => Some(d),
            _ => None,
        },
        active_placements: active,
        observed_generation: generation,
        conditions: conds,
        outages,
    };
    let waiting_for_token = pool.is_some() && desired.credentials_secret.is_none();
    let unchanged = current.namespace.as_deref() == Some(desired.namespace.as_str())
        && current.credentials_secret == desired.credentials_secret
        && current.last_heartbeat_time == desired.last_heartbeat_time
        && current.heartbeat_timeout == Some(desired.heartbeat_timeout)
        && current.offer_signing == desired.offer_signing
        && current.active_placements == desired.active_placements
        && current.observed_generation == desired.observed_generation
        && current.outages == desired.outages
        && current
            .conditions
            .iter()
            .filter(|c| c.type_ != mc::VERIFIED)
            .eq(desired.conditions.iter());
    let inventory_time = current
        .inventory
        .as_ref()
        .and_then(|i| i.update_time.clone());
    let new_inventory = {
        let mut seen = ctx.inventory_seen.lock().await;
        seen.insert(name.clone(), inventory_time.clone()) != Some(inventory_time)
    };
    if new_inventory || !unchanged {
        // Capacity or schedulability changed: let the queue be reconsidered now.
        ctx.schedule.notify_one();
    }
    if !unchanged {
        (desired.last_heartbeat_time, desired.active_placements) = now_values;
        let body = serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1",
            "kind": "MemberCluster",
            "metadata": {"name": name},
            "status": desired,
        });
        Api::<MemberCluster>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(Error::kube(format!(
                "writing status of MemberCluster {name}"
            )))?;
        if ready != was_ready {
            let (warning, reason, note) = if ready {
                (false, "Ready", format!("{name} is heartbeating"))
            } else {
                (
                    true,
                    "NotReady",
                    format!("{name}: no heartbeat for more than {timeout}; its attempts fail over"),
                )
            };
            ctx.event(member.as_ref(), warning, reason, "Heartbeat", note);
        }
    }
    // Come back when the heartbeat would expire, to notice it on time.
    let next = match (&seen, ready) {
        (Some(s), true) => {
            let left = timeout.as_duration().saturating_sub(s.seen_at.elapsed());
            left.clamp(Duration::from_millis(200), Duration::from_secs(30))
                + Duration::from_millis(100)
        }
        _ if waiting_for_token => Duration::from_secs(1),
        _ => Duration::from_secs(15),
    };
    // A leaving member is looked at again soon: its last attempt ending changes no member.
    let next = if draining.is_some() {
        next.min(Duration::from_secs(2))
    } else {
        next
    };
    Ok(Requeue::requeue(next))
}

async fn cleanup(member: Arc<MemberCluster>, ctx: &Context) -> Result<Requeue> {
    let name = member.name_any();
    let c = &ctx.client;
    let dp = DeleteParams::background();
    let ignore_missing = |r: std::result::Result<(), kube::Error>, what: String| match r {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(what)(e)),
    };
    ignore_missing(
        Api::<Namespace>::all(c.clone())
            .delete(&member_namespace(&name), &dp)
            .await
            .map(|_| ()),
        format!("deleting namespace {}", member_namespace(&name)),
    )?;
    ignore_missing(
        Api::<ClusterRoleBinding>::all(c.clone())
            .delete(&member_cluster_role(&name), &dp)
            .await
            .map(|_| ()),
        "deleting the member ClusterRoleBinding".into(),
    )?;
    ignore_missing(
        Api::<ClusterRole>::all(c.clone())
            .delete(&member_cluster_role(&name), &dp)
            .await
            .map(|_| ()),
        "deleting the member ClusterRole".into(),
    )?;
    ctx.registered.lock().await.remove(&name);
    ctx.schedule.notify_one();
    ctx.event(
        member.as_ref(),
        false,
        "Left",
        "Delete",
        format!("{name} left the pool; its credentials are revoked"),
    );
    Ok(Requeue::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    fn lease(renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn a_ready_members_heartbeat_time_is_refreshed_every_few_minutes_and_exactly_when_not() {
        let t = Duration::from_secs(40);
        let written = MemberClusterStatus {
            last_heartbeat_time: Some(at(1000)),
            ..Default::default()
        };
        // Ready: renewals within the refresh period leave the written time alone.
        assert!(!status_refresh_due(&written, true, Some(&at(1010)), t));
        assert!(!status_refresh_due(&written, true, Some(&at(1299)), t));
        assert!(status_refresh_due(&written, true, Some(&at(1300)), t));
        // A heartbeat timeout of an hour refreshes every quarter of it instead.
        assert!(!status_refresh_due(&written, true, Some(&at(1800)), t * 90));
        assert!(status_refresh_due(&written, true, Some(&at(1900)), t * 90));
        // Not Ready: always the exact renewal.
        assert!(status_refresh_due(&written, false, Some(&at(1010)), t));
        // Nothing written yet.
        let new = MemberClusterStatus::default();
        assert!(status_refresh_due(&new, true, Some(&at(1010)), t));
    }

    #[test]
    fn a_member_is_ready_until_its_lease_stops_changing_for_the_timeout() {
        let t = Duration::from_secs(40);
        let t0 = Instant::now();
        let (ready, renewed, seen) = heartbeat(Some(&lease(100)), t, None, false, t0);
        assert!(ready);
        assert_eq!(renewed, Some(at(100)));
        // Unchanged for 39 s on the hub's clock: still ready; for 40 s: not.
        let (ready, _, seen2) = heartbeat(
            Some(&lease(100)),
            t,
            seen.as_ref(),
            false,
            t0 + Duration::from_secs(39),
        );
        assert!(ready);
        let (ready, _, _) = heartbeat(Some(&lease(100)), t, seen2.as_ref(), false, t0 + t);
        assert!(!ready);
        // A renewal resets the hub's clock.
        let (ready, _, _) = heartbeat(Some(&lease(101)), t, seen2.as_ref(), false, t0 + t);
        assert!(ready);
    }

    #[test]
    fn a_member_clock_far_behind_or_ahead_does_not_change_readiness() {
        let t = Duration::from_secs(40);
        let t0 = Instant::now();
        // renewTime an hour in the past or future by the hub's calendar: what counts is that it changes.
        for renewed in [-3600, 3600] {
            let (ready, _, seen) = heartbeat(Some(&lease(renewed)), t, None, false, t0);
            assert!(ready);
            let (ready, _, _) = heartbeat(
                Some(&lease(renewed + 5)),
                t,
                seen.as_ref(),
                false,
                t0 + Duration::from_secs(35),
            );
            assert!(ready);
        }
    }

    #[test]
    fn a_member_the_previous_leader_saw_expire_stays_not_ready_after_a_leader_change() {
        let t = Duration::from_secs(40);
        let t0 = Instant::now();
        // First sight by a new leader, status says this very renewal expired: not ready.
        let (ready, _, seen) = heartbeat(Some(&lease(100)), t, None, true, t0);
        assert!(!ready);
        let (ready, _, _) = heartbeat(
            Some(&lease(100)),
            t,
            seen.as_ref(),
            false,
            t0 + Duration::from_secs(1),
        );
        assert!(!ready);
        // It renews: ready again.
        let (ready, _, _) = heartbeat(
            Some(&lease(101)),
            t,
            seen.as_ref(),
            false,
            t0 + Duration::from_secs(2),
        );
        assert!(ready);
    }

    #[test]
    fn a_leaving_member_counts_attempts_not_ended_or_not_settled_on_it_only() {
        use gpufed_crds::testing::{attempt as record, job as builder};
        use gpufed_crds::{AttemptPhase, AttemptRecord, ComputeJobStatus, Settlement};
        let attempt = |cluster: &str, phase: AttemptPhase, state: Option<SettlementState>| {
            let mut a = record(1, cluster, phase);
            a.settlement = state.map(|state| {
                Box::new(Settlement {
                    state,
                    ..Default::default()
                })
            });
            a
        };
        let job = |attempts: Vec<AttemptRecord>| {
            let mut j = builder("j").build();
            j.status = Some(ComputeJobStatus {
                attempts,
                ..Default::default()
            });
            j
        };
        let jobs = vec![
            job(vec![
                attempt("alpha", AttemptPhase::Lost, Some(SettlementState::Settled)),
                attempt("beta", AttemptPhase::Running, Some(SettlementState::Locked)),
            ]),
            job(vec![attempt("alpha", AttemptPhase::Running, None)]),
            job(vec![attempt(
                "alpha",
                AttemptPhase::Succeeded,
                Some(SettlementState::Settling),
            )]),
            job(vec![attempt("alpha", AttemptPhase::Cancelled, None)]),
            builder("no-status").build(),
        ];
        let mut challenge = job(vec![attempt("alpha", AttemptPhase::Running, None)]);
        challenge.metadata.namespace = Some(gpufed_crds::naming::HUB_JOBS_NAMESPACE.into());
        let jobs = [jobs, vec![challenge]].concat();
        assert_eq!(attempts_on(&jobs, "alpha"), 2);
        assert_eq!(attempts_on(&jobs, "beta"), 1);
        assert_eq!(attempts_on(&jobs, "gamma"), 0);
    }

    #[test]
    fn a_member_never_heard_from_is_not_ready() {
        assert_eq!(
            heartbeat(None, Duration::from_secs(40), None, false, Instant::now()),
            (false, None, None)
        );
        let empty = Lease {
            spec: Some(LeaseSpec::default()),
            ..Default::default()
        };
        assert!(
            !heartbeat(
                Some(&empty),
                Duration::from_secs(40),
                None,
                false,
                Instant::now()
            )
            .0
        );
    }
}
