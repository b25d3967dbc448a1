//! The API against real apiservers: CRDs install and publish our descriptions, hostile manifests
//! are rejected with messages that name the field, every example is accepted, and a GPU Job runs
//! to completion on a kwok GPU node (scheduler, kwok and the Job controller all real).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_e2e::{Cluster, ClusterSpec, Federation, NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// The most a test here may take, start-up included: past it the test fails and its
/// components are killed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

fn gvk(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gpufed.io", "v1alpha1", kind),
        &plural,
    )
}

fn message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    }
}

/// Creates `manifest` with strict field validation, as `kubectl create`/`apply` do for a new
/// object. Returns the apiserver's error message, if any.
async fn create(cluster: &Cluster, manifest: &Value) -> Result<(), String> {
    let ar = gvk(manifest["kind"].as_str().unwrap());
    let url = DynamicObject::url_path(&ar, manifest["metadata"]["namespace"].as_str());
    let req = http::Request::post(format!("{url}?fieldValidation=Strict"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(manifest).unwrap())
        .unwrap();
    cluster
        .client()
        .request::<DynamicObject>(req)
        .await
        .map(|_| ())
        .map_err(message)
}

/// Applies `manifest` with server-side apply and strict field validation, as `kubectl apply
/// --server-side` does. Returns the apiserver's error message, if any.
async fn apply(cluster: &Cluster, manifest: &Value) -> Result<(), String> {
    let kind = manifest["kind"].as_str().unwrap();
    let ar = gvk(kind);
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(cluster.client(), ns, &ar),
        None => Api::all_with(cluster.client(), &ar),
    };
    let pp = PatchParams::apply("e2e").validation_strict();
    api.patch(name, &pp, &Patch::Apply(manifest))
        .await
        .map(|_| ())
        .map_err(message)
}

fn good_job(name: &str) -> Value {
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {
            "gpusPerReplica": 1,
            "gpu": {"models": ["H100"]},
            "maxPricePerGpuHour": "2.50",
            "template": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
        }
    })
}

fn good_member(name: &str) -> Value {
    json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "MemberCluster",
        "metadata": {"name": name},
        "spec": {"pool": "default", "region": "eu-west", "prices": [{"model": "H100", "pricePerGpuHour": "2.40"}]}
    })
}

fn good_pool(name: &str) -> Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool", "metadata": {"name": name}, "spec": {}})
}

/// Sets `value` at the JSON pointer-like `path` (dot-separated) of `doc`.
fn with(mut doc: Value, path: &str, value: Value) -> Value {
    let mut cur = &mut doc;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*p],
        };
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        cur.as_object_mut().unwrap().remove(last);
    } else {
        cur[last] = value;
    }
    doc
}

/// How many hostile manifests [`hostile_creates`] holds; README.md quotes it.
const HOSTILE_MANIFESTS: usize = 68;

/// Hostile or malformed manifests and a fragment of the message the apiserver must answer with.
fn hostile_creates() -> Vec<(&'static str, Value, &'static str)> {
    let job = || good_job("hostile");
    let member = || good_member("hostile");
    let files = |mount: &str, path: &str| {
        json!([{"name": "creds", "secretName": "gcs", "mountPath": mount,
                "items": [{"key": "key.json", "path": path}]}])
    };
    let input = |field: &str, value: Value| {
        let mut i = json!({"name": "dataset", "endpoint": "https://s3.example.com",
            "bucket": "team-a-data", "key": "train.jsonl", "mountPath": "/data"});
        i[field] = value;
        json!([i])
    };
    let output = |field: &str, value: Value| {
        let mut o = json!({"name": "ckpt", "path": "/out", "endpoint": "https://s3.example.com",
            "bucket": "team-a-runs", "prefix": "runs/1/"});
        o[field] = value;
        json!([o])
    };
    vec![
        (
            "a serving job on a privileged port",
            with(job(), "spec.serving", json!({"port": 80})),
            "spec.serving.port must be between 1024 and 65535",
        ),
        (
            "a serving job with a relative readiness path",
            with(
                job(),
                "spec.serving",
                json!({"port": 8080, "readinessPath": "healthz"}),
            ),
            "spec.serving.readinessPath must be an absolute HTTP path",
        ),
        (
            "a serving job whose result is to be checked",
            with(
                with(job(), "spec.serving", json!({"port": 8080})),
                "spec.resultCheck",
                json!({}),
            ),
            "spec.resultCheck compares the results of batch jobs",
        ),
        (
            "a serving job paid every 5 seconds",
            with(
                job(),
                "spec.serving",
                json!({"port": 8080, "settlementPeriod": "5s"}),
            ),
            "spec.serving.settlementPeriod must be between 10s and 24h",
        ),
        (
            "an input at an s3:// URL",
            with(
                job(),
                "spec.template.inputs",
                input("endpoint", json!("s3://team-a-data")),
            ),
            "inputs[].endpoint must be the http(s) URL of the S3-compatible service",
        ),
        (
            "an input with both a key and a prefix",
            with(job(), "spec.template.inputs", input("prefix", json!("d/"))),
            "inputs[]: set exactly one of key (one object) and prefix",
        ),
        (
            "an input key climbing out of its directory",
            with(
                job(),
                "spec.template.inputs",
                input("key", json!("../../etc/passwd")),
            ),
            "inputs[].key must be an object key without",
        ),
        (
            "an input digest that is no sha256",
            with(
                job(),
                "spec.template.inputs",
                input("sha256", json!("SHA256:abc")),
            ),
            "inputs[].sha256 must be 64 lowercase hex digits",
        ),
        (
            "an input mounted over /proc",
            with(
                job(),
                "spec.template.inputs",
                input("mountPath", json!("/proc/self")),
            ),
            "inputs[].mountPath must be an absolute directory",
        ),
        (
            "an output bucket that is no bucket name",
            with(
                job(),
                "spec.template.outputs",
                output("bucket", json!("Team_A")),
            ),
            "outputs[].bucket must be an S3 bucket name",
        ),
        (
            "an output prefix with ..",
            with(
                job(),
                "spec.template.outputs",
                output("prefix", json!("runs/../other/")),
            ),
            "outputs[].prefix must not start with / nor contain . or .. segments",
        ),
        (
            "a presigned output that is a whole directory",
            with(
                job(),
                "spec.template.outputs",
                output("presign", json!(true)),
            ),
            "outputs[].presign needs files",
        ),
        (
            "an env var with both a value and a secretKeyRef",
            with(
                job(),
                "spec.template.containers.0.env",
                json!([{"name": "TOKEN", "value": "x",
                        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]),
            ),
            "env[].value and env[].valueFrom exclude each other",
        ),
        (
            "secret files over the scratch space",
            with(
                job(),
                "spec.template.secretFiles",
                files("/tmp/creds", "key.json"),
            ),
            "secretFiles[].mountPath must be an absolute directory",
        ),
        (
            "secret files climbing out of their directory",
            with(
                job(),
                "spec.template.secretFiles",
                files("/var/run/../../etc", "key.json"),
            ),
            "secretFiles[].mountPath must be an absolute directory",
        ),
        (
            "a secret file path with ..",
            with(
                job(),
                "spec.template.secretFiles",
                files("/var/run/creds", "../key.json"),
            ),
            "secretFiles[].items[].path must be a relative path",
        ),
        (
            "an image pull secret that is no Secret name",
            with(
                job(),
                "spec.template.imagePullSecrets",
                json!([{"name": "Not_A_Name"}]),
            ),
            "spec.template.imagePullSecrets[0].name",
        ),
        (
            "an empty /dev/shm",
            with(job(), "spec.template.shmSize", json!("0")),
            "spec.template.shmSize: Invalid value: \"string\": shmSize must be between 1Mi and 1Ti",
        ),
        (
            "100 PiB of scratch space",
            with(job(), "spec.template.scratchSize", json!("100Pi")),
            "scratchSize must be between 1Mi and 64Ti",
        ),
        (
            "zero GPUs",
            with(job(), "spec.gpusPerReplica", json!(0)),
            "spec.gpusPerReplica in body should be greater than or equal to 1",
        ),
        (
            "negative GPUs",
            with(job(), "spec.gpusPerReplica", json!(-4)),
            "spec.gpusPerReplica in body should be greater than or equal to 1",
        ),
        (
            "17 GPUs per replica",
            with(job(), "spec.gpusPerReplica", json!(17)),
            "spec.gpusPerReplica in body should be less than or equal to 16",
        ),
        (
            "a million replicas",
            with(job(), "spec.replicas", json!(1_000_000)),
            "spec.replicas in body should be less than or equal to 64",
        ),
        (
            "640 GPUs in one job",
            with(
                with(job(), "spec.replicas", json!(40)),
                "spec.gpusPerReplica",
                json!(16),
            ),
            "spec.replicas × spec.gpusPerReplica must be at most 512 GPUs",
        ),
        (
            "price abc",
            with(job(), "spec.maxPricePerGpuHour", json!("abc")),
            "spec.maxPricePerGpuHour in body should match",
        ),
        (
            "negative price",
            with(job(), "spec.maxPricePerGpuHour", json!("-1.00")),
            "spec.maxPricePerGpuHour in body should match",
        ),
        (
            "price as a float",
            with(job(), "spec.maxPricePerGpuHour", json!(2.5)),
            "spec.maxPricePerGpuHour in body must be of type string",
        ),
        (
            "price with exponent",
            with(job(), "spec.maxPricePerGpuHour", json!("1e3")),
            "spec.maxPricePerGpuHour in body should match",
        ),
        (
            "unknown field",
            with(job(), "spec.gpuCount", json!(8)),
            "unknown field \"spec.gpuCount\"",
        ),
        (
            "empty model list",
            with(job(), "spec.gpu.models", json!([])),
            "spec.gpu.models in body should have at least 1 items",
        ),
        (
            "empty model name",
            with(job(), "spec.gpu.models", json!([""])),
            "spec.gpu.models[0] in body should be at least 1 chars long",
        ),
        (
            "model with spaces",
            with(job(), "spec.gpu.models", json!(["H 100"])),
            "spec.gpu.models[0] in body should match",
        ),
        (
            "duration in days",
            with(job(), "spec.maxDuration", json!("1d")),
            "spec.maxDuration in body should match",
        ),
        (
            "zero duration",
            with(job(), "spec.maxDuration", json!("0s")),
            "spec.maxDuration must be between 1s and 168h",
        ),
        (
            "200 hour duration",
            with(job(), "spec.maxDuration", json!("200h")),
            "spec.maxDuration must be between 1s and 168h",
        ),
        (
            "no template",
            with(job(), "spec.template", Value::Null),
            "spec.template: Required value",
        ),
        (
            "no containers",
            with(job(), "spec.template.containers", json!([])),
            "spec.template.containers in body should have at least 1 items",
        ),
        (
            "image with a space",
            with(
                job(),
                "spec.template.containers.0.image",
                json!("busybox latest"),
            ),
            "spec.template.containers[0].image in body should match",
        ),
        (
            "bad env name",
            with(
                job(),
                "spec.template.containers.0.env",
                json!([{"name": "1BAD", "value": "x"}]),
            ),
            "spec.template.containers[0].env[0].name in body should match",
        ),
        (
            "region with spaces",
            with(job(), "spec.regions", json!(["EU West"])),
            "spec.regions[0] in body should match",
        ),
        (
            "priority out of range",
            with(job(), "spec.priority", json!(5000)),
            "spec.priority in body should be less than or equal to 1000",
        ),
        (
            "huge GPU memory",
            with(job(), "spec.gpu.minMemoryGiB", json!(4096)),
            "spec.gpu.minMemoryGiB in body should be less than or equal to 1024",
        ),
        (
            "zero attempts",
            with(job(), "spec.retry", json!({"maxAttempts": 0})),
            "spec.retry.maxAttempts in body should be greater than or equal to 1",
        ),
        (
            "hostPath volume smuggled in",
            with(
                job(),
                "spec.template.volumes",
                json!([{"hostPath": {"path": "/"}}]),
            ),
            "unknown field \"spec.template.volumes\"",
        ),
        (
            "privileged container",
            with(
                job(),
                "spec.template.containers.0.securityContext",
                json!({"privileged": true}),
            ),
            "unknown field \"spec.template.containers[0].securityContext\"",
        ),
        (
            "short wallet",
            with(member(), "spec.wallet", json!("0x1234")),
            "spec.wallet in body should match",
        ),
        (
            "wallet without 0x",
            with(
                member(),
                "spec.wallet",
                json!("f39Fd6e51aad88F6F4ce6aB8827279cffFb922660"),
            ),
            "spec.wallet in body should match",
        ),
        (
            "member name too long",
            with(member(), "metadata.name", json!("a".repeat(60))),
            "metadata.name must be a DNS label of at most 49 characters",
        ),
        (
            "no prices",
            with(member(), "spec.prices", json!([])),
            "spec.prices in body should have at least 1 items",
        ),
        (
            "the same model priced twice",
            with(
                member(),
                "spec.prices",
                json!([{"model": "H100", "pricePerGpuHour": "1"}, {"model": "H100", "pricePerGpuHour": "2"}]),
            ),
            "Duplicate value: map[string]interface {}{\"model\":\"H100\"}",
        ),
        (
            "heartbeat of 1s",
            with(good_pool("hostile"), "spec.heartbeatTimeout", json!("1s")),
            "spec.heartbeatTimeout must be between 15s and 1h",
        ),
        (
            "preemption grace of 2h",
            with(
                good_pool("hostile"),
                "spec.preemptionGracePeriod",
                json!("2h"),
            ),
            "spec.preemptionGracePeriod must be between 0s and 1h",
        ),
        (
            "a reputation window of 30 minutes",
            with(good_pool("hostile"), "spec.reputationWindow", json!("30m")),
            "spec.reputationWindow must be between 1h and 2160h (90 days)",
        ),
        (
            "a reputation floor of more than 100% uptime",
            with(
                good_pool("hostile"),
                "spec.reputationFloor",
                json!({"minUptimePercent": 101}),
            ),
            "spec.reputationFloor.minUptimePercent: Invalid value: 101",
        ),
        (
            "a usage check whose idle grace is longer than a day",
            with(
                good_pool("hostile"),
                "spec.usageCheck",
                json!({"idleGrace": "25h"}),
            ),
            "spec.usageCheck.idleGrace must be between 0s and 24h",
        ),
        (
            "a usage check where every GPU is idle below 0 %",
            with(
                good_pool("hostile"),
                "spec.usageCheck",
                json!({"idleBelowPercent": 0}),
            ),
            "spec.usageCheck.idleBelowPercent: Invalid value: 0",
        ),
        (
            "a usage check whose readings are valid for an hour",
            with(
                good_pool("hostile"),
                "spec.usageCheck",
                json!({"maxSampleAge": "1h"}),
            ),
            "spec.usageCheck.maxSampleAge must be between 10s and 10m",
        ),
        (
            "preemption always",
            with(good_pool("hostile"), "spec.preemption", json!("Always")),
            "spec.preemption: Unsupported value: \"Always\"",
        ),
        (
            "a pool that punishes lost disputes in a way it does not know",
            with(
                good_pool("hostile"),
                "spec.verification",
                json!({"image": "probe:1", "lostDisputes": "Slash"}),
            ),
            "spec.verification.lostDisputes: Unsupported value: \"Slash\"",
        ),
        (
            "an open pool without a bond contract to read stakes from",
            with(good_pool("hostile"), "spec.admission", json!("Open")),
            "spec.admission Open needs spec.chain.bond",
        ),
        (
            "an open pool whose strangers skip verification",
            with(good_pool("hostile"), "spec.admission", json!("Open")),
            "spec.admission Open needs spec.verification.required: true",
        ),
        (
            "reclaiming lent quota without a cohort to lend it in",
            with(
                good_pool("hostile"),
                "spec.reclaimWithinCohort",
                json!("Any"),
            ),
            "spec.reclaimWithinCohort needs spec.quotas with a cohort",
        ),
        (
            "a class that preempts sometimes",
            with(
                good_pool("hostile"),
                "spec.priorityClasses",
                json!([{"name": "urgent", "value": 10, "preemptionPolicy": "Sometimes"}]),
            ),
            "spec.priorityClasses[0].preemptionPolicy: Unsupported value: \"Sometimes\"",
        ),
        (
            "rpc over ftp",
            with(
                good_pool("hostile"),
                "spec.chain",
                json!({"rpcUrl": "ftp://chain", "chainId": 1, "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "escrow": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "hubKeySecretRef": {"namespace": "x", "name": "y", "key": "z"}}),
            ),
            "spec.chain.rpcUrl in body should match",
        ),
        (
            "a signed offer without the nonce and expiry that were signed",
            with(
                good_offer(),
                "spec.signature",
                json!(format!("0x{}", "ab".repeat(65))),
            ),
            "spec.signature needs spec.nonce and spec.expires",
        ),
        (
            "an offer for jobs of at least 2h and at most 1h",
            with(
                good_offer(),
                "spec.prices",
                json!([{"model": "H100", "pricePerGpuHour": "2.40", "minDuration": "2h", "maxDuration": "1h"}]),
            ),
            "prices[].minDuration must not be above prices[].maxDuration",
        ),
        (
            "an offer of no GPUs",
            with(
                good_offer(),
                "spec.prices",
                json!([{"model": "H100", "pricePerGpuHour": "2.40", "gpus": 0}]),
            ),
            "spec.prices[0].gpus: Invalid value: 0",
        ),
        (
            "an offer signature that is not 65 bytes of hex",
            with(
                with(
                    with(good_offer(), "spec.nonce", json!(1)),
                    "spec.expires",
                    json!("2030-01-01T00:00:00Z"),
                ),
                "spec.signature",
                json!("0xdeadbeef"),
            ),
            "spec.signature in body should match",
        ),
    ]
}

/// A member's Offer (in `default`: the rules do not look at the namespace).
fn good_offer() -> Value {
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "Offer",
           "metadata": {"name": "offer", "namespace": "default"},
           "spec": {"prices": [{"model": "H100", "pricePerGpuHour": "2.40"}]}})
}

async fn api_cluster(name: &str) -> Cluster {
    let tools = Tools::locate().unwrap();
    let c = Cluster::start(&tools, &ClusterSpec::api_only(name))
        .await
        .unwrap();
    c.install_crds(&gpufed_crds::crds_for(gpufed_crds::Side::Hub))
        .await
        .unwrap();
    c.install_crds(&gpufed_crds::crds_for(gpufed_crds::Side::Member))
        .await
        .unwrap();
    c.create_namespace("team-a").await.unwrap();
    c.create_namespace("team-b").await.unwrap();
    c
}

#[test]
fn crds_install_and_the_apiserver_publishes_our_descriptions() {
    run_test(HARD_DEADLINE, || async {
        let c = api_cluster("openapi").await;
        // The apiserver publishes a CRD's OpenAPI shortly after it is Established.
        let client = c.client();
        let doc: Value = wait_until(Duration::from_secs(30), "OpenAPI v3 of gpufed.io", || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/openapi/v3/apis/gpufed.io/v1alpha1")
                    .body(Vec::new())
                    .ok()?;
                let doc: Value =
                    serde_json::from_str(&client.request_text(req).await.ok()?).ok()?;
                let published = doc["components"]["schemas"].as_object()?.len() >= 6;
                published.then_some(doc)
            }
        })
        .await
        .unwrap();
        let schemas = &doc["components"]["schemas"];
        let job = &schemas["io.gpufed.v1alpha1.ComputeJob"];
        let spec = &job["properties"]["spec"]["properties"];
        // What `kubectl explain computejob.spec.gpusPerReplica` prints comes from here.
        assert!(
            spec["gpusPerReplica"]["description"]
                .as_str()
                .unwrap()
                .contains("GPUs per replica"),
            "{spec}"
        );
        assert!(
            spec["maxPricePerGpuHour"]["description"]
                .as_str()
                .unwrap()
                .contains("per GPU-hour")
        );
        for kind in [
            "GpuPool",
            "MemberCluster",
            "ComputeJob",
            "Placement",
            "ProviderBond",
            "GpuNode",
        ] {
            let s = &schemas[format!("io.gpufed.v1alpha1.{kind}")];
            assert!(
                s["description"].as_str().is_some_and(|d| d.len() > 20),
                "{kind} has no description"
            );
        }
    });
}

#[test]
fn hostile_manifests_are_rejected_with_a_message_naming_the_field() {
    run_test(HARD_DEADLINE, || async {
        let c = api_cluster("hostile").await;
        let cases = hostile_creates();
        // The README quotes this count.
        assert_eq!(cases.len(), HOSTILE_MANIFESTS);
        let readme =
            std::fs::read_to_string(Tools::locate().unwrap().root().join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("{HOSTILE_MANIFESTS} hostile manifests rejected")),
            "README.md must quote the number of hostile manifests tested"
        );
        let mut wrong = vec![];
        for (what, manifest, want) in &cases {
            match create(&c, manifest).await {
                Ok(()) => wrong.push(format!("{what}: accepted")),
                Err(msg) if !msg.contains(want) => {
                    wrong.push(format!("{what}: got {msg:?}, want {want:?}"))
                }
                Err(_) => {}
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} cases wrong:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    });
}

#[test]
fn immutable_fields_cannot_change_after_creation() {
    run_test(HARD_DEADLINE, || async {
        let c = api_cluster("immutable").await;
        apply(&c, &good_job("frozen")).await.unwrap();
        let changes = [
            ("spec.replicas", json!(2), "spec.replicas is immutable"),
            (
                "spec.gpusPerReplica",
                json!(4),
                "spec.gpusPerReplica is immutable",
            ),
            (
                "spec.gpu",
                json!({"models": ["L4"]}),
                "spec.gpu is immutable",
            ),
            (
                "spec.maxPricePerGpuHour",
                json!("99"),
                "spec.maxPricePerGpuHour is immutable",
            ),
            (
                "spec.template",
                json!({"containers": [{"name": "main", "image": "evil:latest"}]}),
                "spec.template is immutable",
            ),
            (
                "spec.resultCheck",
                json!({"includeOutputs": false}),
                "spec.resultCheck is immutable",
            ),
        ];
        for (path, value, want) in changes {
            let err = apply(&c, &with(good_job("frozen"), path, value))
                .await
                .unwrap_err();
            assert!(err.contains(want), "{path}: {err}");
        }
        // Dropping an optional placement field is a change too.
        let err = apply(
            &c,
            &with(good_job("frozen"), "spec.maxPricePerGpuHour", Value::Null),
        )
        .await
        .unwrap_err();
        assert!(err.contains("maxPricePerGpuHour"), "{err}");
        // Priority may change.
        apply(&c, &with(good_job("frozen"), "spec.priority", json!(10)))
            .await
            .unwrap();

        // A member cannot move pools.
        apply(&c, &good_member("alpha")).await.unwrap();
        let err = apply(&c, &with(good_member("alpha"), "spec.pool", json!("other")))
            .await
            .unwrap_err();
        assert!(err.contains("spec.pool is immutable"), "{err}");

        // A Placement never changes.
        c.create_namespace("gpufed-member-alpha").await.unwrap();
        let placement = json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
            "metadata": {"name": "p1", "namespace": "gpufed-member-alpha"},
            "spec": {"job": {"uid": "u"}, "attempt": 1, "cluster": "alpha",
                     "replicas": 1, "gpusPerReplica": 1, "totalGpus": 1, "model": "H100", "pricePerGpuHour": "2.40",
                     "maxDuration": "1h", "template": {"containers": [{"name": "main", "image": "busybox"}]}}
        });
        apply(&c, &placement).await.unwrap();
        let err = apply(&c, &with(placement.clone(), "spec.attempt", json!(2)))
            .await
            .unwrap_err();
        assert!(err.contains("Placement.spec is immutable"), "{err}");
        // ... but for its funded time (ADR 0030 section 7): the hub may add it and raise it as it
        // renews the escrow lock; nobody may lower or remove it.
        let funded = |s: u64| with(placement.clone(), "spec.fundedSeconds", json!(s));
        apply(&c, &funded(600)).await.unwrap();
        apply(&c, &funded(1200)).await.unwrap();
        apply(&c, &funded(1200)).await.unwrap();
        let err = apply(&c, &funded(600)).await.unwrap_err();
        assert!(err.contains("spec.fundedSeconds only grows"), "{err}");
        let err = apply(&c, &placement).await.unwrap_err();
        assert!(err.contains("Placement.spec is immutable"), "{err}");
        let err = apply(&c, &with(funded(1800), "spec.attempt", json!(2)))
            .await
            .unwrap_err();
        assert!(err.contains("Placement.spec is immutable"), "{err}");
    });
}

#[test]
fn every_example_manifest_is_accepted() {
    run_test(HARD_DEADLINE, || async {
        let c = api_cluster("examples").await;
        let dir = Tools::locate().unwrap().root().join("deploy/examples");
        let mut count = 0;
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        {
            let text = std::fs::read_to_string(path).unwrap();
            for doc in serde_norway::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(doc).unwrap();
                if value.is_null() {
                    continue;
                }
                apply(&c, &value)
                    .await
                    .unwrap_or_else(|e| panic!("{} rejected: {e}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 8, "only {count} example objects");
    });
}

#[test]
fn a_gpu_job_lands_on_a_kwok_gpu_node_and_completes() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let spec = ClusterSpec::new("jobs")
            .node(NodeSpec::new("gpu-0", "L4-24GB", 4, "eu-west"))
            .node(NodeSpec::new("cpu-0", "none", 0, "eu-west"));
        let c = Cluster::start(&tools, &spec).await.unwrap();
        c.create_namespace("work").await.unwrap();
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "gpu-smoke", "namespace": "work"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "main", "image": "busybox",
                        "env": [{"name": "GPUFED_SIM_DURATION", "value": "2s"}],
                        "resources": {"limits": {"nvidia.com/gpu": "2"}}
                    }]
                }}
            }
        }))
        .unwrap();
        let jobs: Api<Job> = Api::namespaced(c.client(), "work");
        jobs.create(&PostParams::default(), &job).await.unwrap();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.client(), "work");
        let node = wait_until(Duration::from_secs(60), "the Job's pod to be bound", || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&Default::default()).await.ok()?;
                list.items.first()?.spec.as_ref()?.node_name.clone()
            }
        })
        .await
        .unwrap();
        assert_eq!(node, "gpu-0", "the GPU pod must land on the GPU node");
        wait_until(Duration::from_secs(90), "the Job to complete", || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get("gpu-smoke").await.ok()?;
                let done = j
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True");
                done.then_some(())
            }
        })
        .await
        .unwrap();
        // The simulated run keeps its start time: the container ran GPUFED_SIM_DURATION (2s).
        let pod = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .remove(0);
        let state = pod
            .status
            .unwrap()
            .container_statuses
            .unwrap()
            .remove(0)
            .state
            .unwrap();
        let t = state.terminated.unwrap();
        let ran = t
            .finished_at
            .unwrap()
            .0
            .duration_since(t.started_at.unwrap().0);
        assert!(
            ran.as_secs() >= 1,
            "the terminated state must keep when it started: ran {ran:?}"
        );
    });
}

#[test]
fn a_hub_and_two_members_start_side_by_side() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let fed = Federation::start(
            &tools,
            ClusterSpec::api_only("hub").with_controller_manager(),
            vec![
                ClusterSpec::new("alpha").node(NodeSpec::new("a-0", "H100-SXM-80GB", 8, "eu-west")),
                ClusterSpec::new("beta").node(NodeSpec::new("b-0", "A100-SXM-40GB", 8, "us-east")),
            ],
        )
        .await
        .unwrap();
        eprintln!(
            "federation of 3 clusters started in {:.1}s",
            fed.started_in.as_secs_f64()
        );
        for c in std::iter::once(&fed.hub).chain(&fed.members) {
            let v = c.client().apiserver_version().await.unwrap();
            assert_eq!(
                format!("{}.{}", v.major, v.minor),
                "1.33",
                "{}: /version must be true",
                c.name()
            );
            assert!(v.git_version.starts_with("v1.33."), "{}", v.git_version);
        }
        // Each cluster is its own world: a namespace made on one is not on another.
        fed.hub.create_namespace("only-on-hub").await.unwrap();
        let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(fed.members[0].client());
        assert!(ns.get_opt("only-on-hub").await.unwrap().is_none());
    });
}
