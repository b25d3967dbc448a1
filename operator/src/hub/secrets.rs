//! The hub's side of sealed tenant Secrets (docs/adr/0020-sealed-secrets.md): before a job that
//! refers to Secrets is admitted, [`check`] reads them from the job's namespace and says what is
//! missing; when its Placement is created, [`seal_into`] reads them again and seals the keys the
//! template uses to the member's published key. The hub reads only the Secrets a template names,
//! only in the job's own namespace, and only where the tenant granted it `get` (a RoleBinding to
//! the chart's ClusterRole `gpufed-hub-tenant-secrets`); it never writes plaintext anywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use gpufed_crds::{Placement, WorkloadTemplate};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::context::Context;
use crate::error::{Error, Result};
use crate::sealing::{self, SealingKey, Unavailable};

/// Deadline of one Secret read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The chart's ClusterRole a tenant binds the hub to in its namespace.
pub const TENANT_SECRETS_ROLE: &str = "gpufed-hub-tenant-secrets";

/// Reads each Secret `template` names in `namespace` (`None`: it does not exist). A refusal
/// (403) is the tenant not having shared the namespace's Secrets with the hub: `Ok(Err(..))`.
async fn read(
    ctx: &Context,
    namespace: &str,
    template: &WorkloadTemplate,
) -> Result<std::result::Result<BTreeMap<String, Option<Secret>>, Unavailable>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = BTreeMap::new();
    for name in template.secret_names() {
        let what = format!("reading Secret {namespace}/{name}");
        let got = tokio::time::timeout(READ_TIMEOUT, api.get_opt(name))
            .await
            .map_err(|_| Error::Timeout {
                what: what.clone(),
                after: READ_TIMEOUT,
            })?;
        match got {
            Ok(s) => {
                out.insert(name.to_string(), s);
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Ok(Err(Unavailable {
                    reason: "SecretsNotShared",
                    message: format!(
                        "the hub may not read Secrets in namespace {namespace:?}, and the job refers to Secret {name:?}: \
                         let it with `kubectl -n {namespace} create rolebinding gpufed-hub-secrets --clusterrole={TENANT_SECRETS_ROLE} \
                         --serviceaccount=<hub namespace>:<hub ServiceAccount>` (docs/platform-teams.md, \"Secrets\")"
                    ),
                }));
            }
            Err(e) => return Err(Error::kube(what)(e)),
        }
    }
    Ok(Ok(out))
}

/// Why the Secrets `template` refers to in `namespace` cannot be delivered now (missing, a missing
/// key, a pull secret of the wrong type, not shared with the hub, too large for a Placement), or
/// `None` when they can.
pub async fn check(
    ctx: &Context,
    namespace: &str,
    template: &WorkloadTemplate,
) -> Result<Option<Unavailable>> {
    let secrets = match read(ctx, namespace, template).await? {
        Ok(s) => s,
        Err(why) => return Ok(Some(why)),
    };
    let selected = match sealing::select(template, namespace, &secrets) {
        Ok(s) => s,
        Err(why) => return Ok(Some(why)),
    };
    // The size does not depend on the key: seal once to a throwaway one to measure it.
    let probe = SealingKey::generate();
    let binding = sealing::Binding {
        job_uid: String::new(),
        placement: String::new(),
        attempt: 1,
        cluster: String::new(),
    };
    match sealing::seal(Some(&probe.public_base64()), &binding, selected) {
        Err(e @ sealing::SealingError::TooLarge { .. }) => Ok(Some(Unavailable {
            reason: "SecretsTooLarge",
            message: e.to_string(),
        })),
        _ => Ok(None),
    }
}

/// Fills `p.spec.sealedSecrets` when its template refers to Secrets: reads them from the job's
/// namespace `namespace` (the Placement does not carry it, ADR 0037) and seals the keys the template uses to the member's published key, bound to this
/// placement. Fails (the Placement is not created, the job controller retries) when a Secret is
/// missing or the member has no key.
pub async fn seal_into(ctx: &Context, namespace: &str, p: &mut Placement) -> Result<()> {
    if !p.spec.template.uses_secrets() {
        return Ok(());
    }
    let invalid = |detail: String| Error::Invalid {
        what: format!(
            "Secrets of placement {}",
            p.metadata.name.as_deref().unwrap_or_default()
        ),
        detail,
    };
    let secrets = read(ctx, namespace, &p.spec.template)
        .await?
        .map_err(|u| invalid(u.message))?;
    let mut selected =
        sealing::select(&p.spec.template, namespace, &secrets).map_err(|u| invalid(u.message))?;
    // Inputs and outputs the tenant lets the hub presign get URLs instead of the keys (ADR 0029).
    let ttl = crate::presign::ttl_for(p.spec.max_duration.as_duration());
    crate::presign::apply(&p.spec.template, p.spec.replicas, &mut selected, ttl)
        .map_err(|e| invalid(e.to_string()))?;
    let key = ctx
        .stores
        .member(&p.spec.cluster)
        .and_then(|m| m.status.as_ref().and_then(|s| s.sealing_key.clone()));
    let blob = sealing::seal(key.as_deref(), &sealing::binding_of(p), selected)
        .map_err(|e| invalid(e.to_string()))?;
    p.spec.sealed_secrets = Some(blob);
    Ok(())
}
