//! Tenant Secrets sealed to one member for one attempt (docs/adr/0020-sealed-secrets.md), against
//! real apiservers with the charts' RBAC and a kwok member: a job that refers to a Secret waits,
//! with a message naming it, until the tenant shares its namespace's Secrets with the hub and
//! creates the Secret; then the Placement holds only a sealed blob (never the value), the member
//! gets a local Secret owned by the local Job with the value, wired into the pod, gone with the
//! Job; a blob replayed into another Placement is refused; and the member's hub credential still
//! cannot read the tenant's Secrets.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::member_namespace;
use gpufed_crds::{ComputeJob, JobPhase, MemberCluster, Placement};
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, SYSTEM_NAMESPACE, is_forbidden};
use gpufed_e2e::{NodeSpec, Tools, client_from_kubeconfig, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(90);

fn job_manifest() -> serde_json::Value {
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": "finetune", "namespace": "team-a"},
        "spec": {
            "replicas": 1, "gpusPerReplica": 1, "gpu": {"models": ["H100"]},
            "maxPricePerGpuHour": "3.00", "maxDuration": "10m",
            "template": {
                "containers": [{"name": "main", "image": "busybox:1.36",
                    "env": [
                        {"name": "GPUFED_SIM_DURATION", "value": "60s"},
                        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
                    ],
                    "envFrom": [{"secretRef": {"name": "aws"}, "prefix": "S3_"}]}],
                "secretFiles": [{"name": "gcs", "secretName": "gcs", "mountPath": "/var/run/secrets/gcs",
                    "items": [{"key": "key.json", "path": "key.json"}], "defaultMode": 292}],
                "imagePullSecrets": [{"name": "registry"}]
            }
        }
    })
}

async fn job_waits_with(jobs: &Api<ComputeJob>, reason: &str, fragment: &str) -> ComputeJob {
    wait_until(LONG, &format!("the job to wait with {reason}"), || {
        let jobs = jobs.clone();
        let (reason, fragment) = (reason.to_string(), fragment.to_string());
        async move {
            let j = jobs.get("finetune").await.ok()?;
            let s = j.status.as_ref()?;
            (s.phase == JobPhase::Pending
                && s.reason.as_deref() == Some(reason.as_str())
                && s.explanation
                    .as_deref()
                    .is_some_and(|e| e.contains(&fragment)))
            .then_some(j)
        }
    })
    .await
    .unwrap()
}

#[test]
fn secrets_reach_the_member_sealed_for_one_attempt_and_go_with_its_job() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "2.40",
            )],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        let members: Api<MemberCluster> = Api::all(hub.clone());
        // The agent publishes its public key.
        let key = wait_until(LONG, "alpha's sealing key", || {
            let members = members.clone();
            async move { members.get("alpha").await.ok()?.status?.sealing_key }
        })
        .await
        .unwrap();
        assert_eq!(key.len(), 44, "{key}");

        pool.hub.create_namespace("team-a").await.unwrap();
        let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), "team-a");
        let placements: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        gpufed_e2e::joining::pool::apply(&hub, "computejobs", &job_manifest())
            .await
            .unwrap();

        // 1. The hub may not read team-a's Secrets (the chart grants it none there).
        job_waits_with(
            &jobs,
            "SecretsNotShared",
            "create rolebinding gpufed-hub-secrets",
        )
        .await;
        // 2. Shared, but the Secret is missing: the message names it; nothing is placed.
        gpufed_e2e::joining::pool::apply(
            &hub,
            "rolebindings",
            &json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "gpufed-hub-secrets", "namespace": "team-a"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "gpufed-hub-tenant-secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "gpufed-hub", "namespace": SYSTEM_NAMESPACE}]
            }),
        )
        .await
        .unwrap();
        let waiting = job_waits_with(&jobs, "SecretNotFound", "Secret team-a/hf").await;
        assert!(waiting.status.unwrap().placement.is_none());
        assert!(
            placements
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );

        // 3. A Secret without the key the job names.
        let value = format!("hf_{}", std::process::id());
        let secret = |name: &str, ty: &str, data: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
                   "metadata": {"name": name, "namespace": "team-a"}, "stringData": data})
        };
        let apply_secret = |doc: serde_json::Value| {
            let hub = hub.clone();
            async move {
                gpufed_e2e::joining::pool::apply(&hub, "secrets", &doc)
                    .await
                    .unwrap()
            }
        };
        apply_secret(secret("hf", "Opaque", json!({"tok": "wrong key"}))).await;
        job_waits_with(
            &jobs,
            "SecretKeyNotFound",
            "key \"token\" of Secret team-a/hf",
        )
        .await;
        apply_secret(secret(
            "hf",
            "Opaque",
            json!({"token": value, "unused": "never sent"}),
        ))
        .await;
        apply_secret(secret("aws", "Opaque", json!({"ACCESS_KEY": "ak-1"}))).await;
        apply_secret(secret("gcs", "Opaque", json!({"key.json": "{\"k\":1}"}))).await;
        apply_secret(secret(
            "registry",
            "kubernetes.io/dockerconfigjson",
            json!({".dockerconfigjson": "{\"auths\":{}}"}),
        ))
        .await;

        // 4. Placed: the Placement holds a sealed blob and no plaintext.
        let p = wait_until(LONG, "the Placement", || {
            let placements = placements.clone();
            async move {
                placements
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .next()
            }
        })
        .await
        .unwrap();
        let raw = serde_json::to_string(&p).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
        assert!(p.spec.sealed_secrets.is_some());
        for leak in [value.as_str(), b64.as_str(), "ak-1", "never sent"] {
            assert!(!raw.contains(leak), "the Placement holds {leak:?}: {raw}");
        }

        // 5. The member: a local Secret owned by the local Job, with the value, wired in.
        let alpha = pool.member("alpha").unwrap().client();
        let local_jobs: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let local_secrets: Api<Secret> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let local = wait_until(LONG, "the local Job", || {
            let local_jobs = local_jobs.clone();
            async move {
                local_jobs
                    .list(&ListParams::default().labels("app.kubernetes.io/managed-by"))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|j| j.metadata.name.as_deref() != Some("gpufed-member-lease"))
            }
        })
        .await
        .unwrap();
        let job_name = local.metadata.name.clone().unwrap();
        let job_uid = local.metadata.uid.clone().unwrap();
        let mine = wait_until(LONG, "the local Secrets", || {
            let local_secrets = local_secrets.clone();
            let job_uid = job_uid.clone();
            async move {
                let mine: Vec<Secret> = local_secrets
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .filter(|s| {
                        s.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| o.kind == "Job" && o.uid == job_uid)
                    })
                    .collect();
                (mine.len() == 4).then_some(mine)
            }
        })
        .await
        .unwrap();
        let by_hub_name = |n: &str| {
            mine.iter()
                .find(|s| s.metadata.annotations.as_ref().unwrap()["gpufed.io/hub-secret"] == n)
                .unwrap()
                .clone()
        };
        let hf = by_hub_name("hf");
        let data = hf.data.clone().unwrap();
        assert_eq!(data["token"].0, value.as_bytes());
        assert!(!data.contains_key("unused"), "only the keys the job uses");
        assert_eq!(
            by_hub_name("registry").type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let pod = wait_until(LONG, "the pod", || {
            let pods = pods.clone();
            let job_name = job_name.clone();
            async move {
                pods.list(
                    &ListParams::default()
                        .labels(&format!("batch.kubernetes.io/job-name={job_name}")),
                )
                .await
                .ok()?
                .items
                .into_iter()
                .next()
            }
        })
        .await
        .unwrap();
        let spec = pod.spec.unwrap();
        let c = &spec.containers[0];
        let env = c.env.as_ref().unwrap();
        let token = env.iter().find(|e| e.name == "HF_TOKEN").unwrap();
        let r = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            (hf.metadata.name.as_deref().unwrap(), "token")
        );
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .secret_ref
                .as_ref()
                .unwrap()
                .name,
            by_hub_name("aws").metadata.name.unwrap()
        );
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == "/var/run/secrets/gcs")
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(
            spec.image_pull_secrets.unwrap()[0].name,
            by_hub_name("registry").metadata.name.unwrap()
        );

        // 6. The member's hub credential cannot read the tenant's Secrets.
        let a = client_from_kubeconfig(&pool.joined("alpha").unwrap().hub_kubeconfig)
            .await
            .unwrap();
        let tenant_secrets: Api<Secret> = Api::namespaced(a, "team-a");
        assert!(is_forbidden(&tenant_secrets.get("hf").await));
        assert!(is_forbidden(
            &tenant_secrets.list(&ListParams::default()).await
        ));

        // 7. The blob replayed into another Placement (another job, as an admin of the hub could
        // copy it): the agent refuses it, and creates no Job for it.
        let mut replay = p.clone();
        replay.metadata = kube::api::ObjectMeta {
            name: Some("replayed".into()),
            namespace: p.metadata.namespace.clone(),
            ..Default::default()
        };
        replay.spec.job.uid = "0d9c2a55-0000-4000-8000-000000000000".into();
        replay.status = None;
        placements
            .create(&kube::api::PostParams::default(), &replay)
            .await
            .unwrap();
        let refused = wait_until(LONG, "the replayed Placement to be rejected", || {
            let placements = placements.clone();
            async move {
                let s = placements.get("replayed").await.ok()?.status?;
                (s.phase == Some(gpufed_crds::PlacementPhase::Rejected)).then_some(s)
            }
        })
        .await
        .unwrap();
        assert_eq!(
            refused.reason.as_deref(),
            Some("SealedSecretsInvalid"),
            "{refused:?}"
        );
        assert!(
            refused
                .message
                .as_deref()
                .unwrap()
                .contains("refusing a replayed blob"),
            "{refused:?}"
        );
        assert!(refused.local_job.is_none());

        // 8. The job ends (deleted by its tenant): the local Job goes, and its Secrets with it.
        jobs.delete("finetune", &DeleteParams::default())
            .await
            .unwrap();
        wait_until(LONG, "the local Secrets to be gone", || {
            let local_secrets = local_secrets.clone();
            let names: Vec<String> = mine
                .iter()
                .map(|s| s.metadata.name.clone().unwrap())
                .collect();
            async move {
                for n in names {
                    if local_secrets.get_opt(&n).await.ok()?.is_some() {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await
        .unwrap();
    });
}
