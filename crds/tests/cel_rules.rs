//! The CEL rules in the CRDs, evaluated locally with kube's CEL interpreter: creation rules and
//! transition (immutability) rules. The same manifests are sent to a real apiserver by the e2e
//! suite, which also checks the OpenAPI bounds and patterns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gpufed_crds::testing::{job, member};
use gpufed_crds::{ComputeJob, GpuPool, GpuPoolSpec, MemberCluster, Placement};
use kube::core::cel::{validate_cel, validate_cel_update};

fn errors_of(result: Result<(), impl std::fmt::Debug>) -> String {
    match result {
        Ok(()) => String::new(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn a_plain_job_passes_every_rule() {
    assert_eq!(errors_of(validate_cel(&job("ok").build())), "");
}

#[test]
fn more_than_512_gpus_in_one_job_is_rejected() {
    let j = job("huge").replicas(64).gpus(16).build();
    assert!(errors_of(validate_cel(&j)).contains("at most 512 GPUs"));
    let edge = job("edge").replicas(32).gpus(16).build();
    assert_eq!(errors_of(validate_cel(&edge)), "");
}

#[test]
fn max_duration_must_be_between_a_second_and_a_week() {
    for (d, ok) in [
        ("0s", false),
        ("500ms", false),
        ("1s", true),
        ("168h", true),
        ("169h", false),
    ] {
        let j = job("d").max_duration(d).build();
        let errs = errors_of(validate_cel(&j));
        assert_eq!(errs.is_empty(), ok, "{d}: {errs}");
        if !ok {
            assert!(
                errs.contains("spec.maxDuration must be between 1s and 168h"),
                "{errs}"
            );
        }
    }
}

fn changed(old: &ComputeJob, f: impl FnOnce(&mut ComputeJob)) -> String {
    let mut new = old.clone();
    f(&mut new);
    errors_of(validate_cel_update(&new, old))
}

#[test]
fn placement_relevant_fields_are_immutable() {
    let old = job("j").max_price("2.00").regions(&["eu-west"]).build();
    type Edit = Box<dyn FnOnce(&mut ComputeJob)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("spec.replicas", Box::new(|j| j.spec.replicas = 2)),
        (
            "spec.gpusPerReplica",
            Box::new(|j| j.spec.gpus_per_replica = 4),
        ),
        (
            "spec.gpu",
            Box::new(|j| j.spec.gpu.models = vec!["L4".into()]),
        ),
        (
            "spec.maxPricePerGpuHour",
            Box::new(|j| j.spec.max_price_per_gpu_hour = "9".parse().ok()),
        ),
        (
            "spec.maxPricePerGpuHour",
            Box::new(|j| j.spec.max_price_per_gpu_hour = None),
        ),
        (
            "spec.maxDuration",
            Box::new(|j| j.spec.max_duration = "2h".parse().unwrap()),
        ),
        (
            "spec.regions",
            Box::new(|j| j.spec.regions = Some(vec!["us-east".into()])),
        ),
        ("spec.regions", Box::new(|j| j.spec.regions = None)),
        ("spec.pool", Box::new(|j| j.spec.pool = "other".into())),
        (
            "spec.template",
            Box::new(|j| j.spec.template.containers[0].image = "evil:latest".into()),
        ),
        ("spec.retry", Box::new(|j| j.spec.retry.max_attempts = 9)),
    ];
    for (field, f) in cases {
        let errs = changed(&old, f);
        assert!(
            errs.contains(&format!("{field} is immutable")),
            "{field}: {errs}"
        );
    }
}

#[test]
fn priority_may_change_after_creation() {
    let old = job("j").build();
    assert_eq!(changed(&old, |j| j.spec.priority = 500), "");
}

#[test]
fn member_names_must_fit_the_member_namespace() {
    let ok = member(&"a".repeat(49), "H100", "1").build();
    assert_eq!(errors_of(validate_cel(&ok)), "");
    let long = member(&"a".repeat(50), "H100", "1").build();
    assert!(errors_of(validate_cel(&long)).contains("at most 49 characters"));
    let upper = member("Alpha", "H100", "1").build();
    assert!(errors_of(validate_cel(&upper)).contains("DNS label"));
}

#[test]
fn a_member_cannot_move_pools() {
    let old: MemberCluster = member("alpha", "H100", "1").build();
    let mut new = old.clone();
    new.spec.pool = "other".into();
    assert!(errors_of(validate_cel_update(&new, &old)).contains("spec.pool is immutable"));
    let mut cordon = old.clone();
    cordon.spec.cordoned = true;
    assert_eq!(errors_of(validate_cel_update(&cordon, &old)), "");
}

#[test]
fn heartbeat_timeout_is_bounded() {
    for (d, ok) in [("14s", false), ("15s", true), ("1h", true), ("2h", false)] {
        let pool = GpuPool::new(
            "p",
            GpuPoolSpec {
                strategy: Default::default(),
                heartbeat_timeout: d.parse().unwrap(),
                start_timeout: "10m".parse().unwrap(),
                min_bond: None,
                chain: None,
                payers: vec![],
                priority_classes: vec![],
                quotas: vec![],
                fair_sharing: None,
                preemption: Default::default(),
                preemption_grace_period: None,
                reclaim_within_cohort: Default::default(),
                verification: None,
                admission: Default::default(),
                reputation_window: None,
                reputation_floor: None,
                usage_check: None,
            },
        );
        assert_eq!(errors_of(validate_cel(&pool)).is_empty(), ok, "{d}");
    }
}

#[test]
fn usage_check_durations_are_bounded_and_named_in_the_error() {
    for (grace, age, ok) in [
        ("0s", "10s", true),
        ("24h", "10m", true),
        ("25h", "60s", false),
        ("10m", "9s", false),
        ("10m", "11m", false),
    ] {
        let pool = GpuPool::new(
            "p",
            GpuPoolSpec {
                usage_check: Some(gpufed_crds::UsageCheck {
                    idle_grace: grace.parse().unwrap(),
                    max_sample_age: age.parse().unwrap(),
                    ..Default::default()
                }),
                ..gpufed_crds::testing::pool_spec()
            },
        );
        let errors = errors_of(validate_cel(&pool));
        assert_eq!(errors.is_empty(), ok, "{grace} {age}: {errors}");
        if !ok {
            assert!(errors.contains("spec.usageCheck."), "{errors}");
        }
    }
}

#[test]
fn placement_spec_never_changes() {
    let p: Placement = serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": "p", "namespace": "gpufed-member-alpha"},
        "spec": {
            "job": {"uid": "u"},
            "attempt": 1, "cluster": "alpha", "replicas": 1, "gpusPerReplica": 1, "totalGpus": 1,
            "model": "H100", "pricePerGpuHour": "2.40", "maxDuration": "1h",
            "template": {"containers": [{"name": "main", "image": "busybox"}]}
        }
    }))
    .unwrap();
    let mut moved = p.clone();
    moved.spec.attempt = 2;
    assert!(errors_of(validate_cel_update(&moved, &p)).contains("Placement.spec is immutable"));
    assert_eq!(errors_of(validate_cel_update(&p.clone(), &p)), "");
}

fn pool_with_quotas(quotas: serde_json::Value) -> GpuPool {
    let spec: GpuPoolSpec =
        serde_json::from_value(serde_json::json!({ "quotas": quotas })).unwrap();
    GpuPool::new("p", spec)
}

#[test]
fn quotas_with_groups_and_a_cohort_pass() {
    let pool = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "cohort": "research", "groups": [
            {"name": "h100", "models": ["H100", "H200"], "gpus": 8, "borrowingLimit": 4},
            {"name": "rest", "gpus": 16}]},
        {"namespace": "team-b", "groups": [{"name": "rest", "gpus": 4}]},
    ]));
    assert_eq!(errors_of(validate_cel(&pool)), "");
}

#[test]
fn a_borrowing_limit_without_a_cohort_is_refused_naming_the_fix() {
    let pool = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "groups": [{"name": "all", "gpus": 8, "borrowingLimit": 4}]},
    ]));
    let errors = errors_of(validate_cel(&pool));
    assert!(
        errors.contains("borrowingLimit needs spec.quotas[].cohort"),
        "{errors}"
    );
}

#[test]
fn quota_groups_must_not_count_a_model_twice_or_have_two_catch_alls() {
    let twice = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "groups": [
            {"name": "a", "models": ["H100"], "gpus": 8},
            {"name": "b", "models": ["L4", "H100"], "gpus": 8}]},
    ]));
    let errors = errors_of(validate_cel(&twice));
    assert!(
        errors.contains("a model may be counted by one group only"),
        "{errors}"
    );
    let two_catch_alls = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "groups": [{"name": "a", "gpus": 8}, {"name": "b", "gpus": 8}]},
    ]));
    let errors = errors_of(validate_cel(&two_catch_alls));
    assert!(
        errors.contains("at most one group may leave models empty"),
        "{errors}"
    );
}

#[test]
fn preemption_grace_period_is_bounded() {
    for (d, ok) in [("0s", true), ("30s", true), ("1h", true), ("61m", false)] {
        let pool = GpuPool::new(
            "p",
            GpuPoolSpec {
                preemption: gpufed_crds::Preemption::LowerPriority,
                preemption_grace_period: Some(d.parse().unwrap()),
                ..gpufed_crds::testing::pool_spec()
            },
        );
        let errors = errors_of(validate_cel(&pool));
        assert_eq!(errors.is_empty(), ok, "{d}: {errors}");
        if !ok {
            assert!(
                errors.contains("spec.preemptionGracePeriod must be between 0s and 1h"),
                "{errors}"
            );
        }
    }
}

#[test]
fn the_reputation_window_is_bounded() {
    for (d, ok) in [
        ("1h", true),
        ("168h", true),
        ("2160h", true),
        ("59m", false),
        ("2161h", false),
    ] {
        let pool = GpuPool::new(
            "p",
            GpuPoolSpec {
                reputation_window: Some(d.parse().unwrap()),
                ..gpufed_crds::testing::pool_spec()
            },
        );
        let errors = errors_of(validate_cel(&pool));
        assert_eq!(errors.is_empty(), ok, "{d}: {errors}");
        if !ok {
            assert!(
                errors.contains("spec.reputationWindow must be between 1h and 2160h"),
                "{errors}"
            );
        }
    }
}

#[test]
fn verification_needs_a_matrix_size_of_whole_row_groups_and_sane_times() {
    let pool = |v: serde_json::Value| -> GpuPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
            "metadata": {"name": "p"},
            "spec": {"verification": v}
        }))
        .unwrap()
    };
    let ok = pool(serde_json::json!({"image": "probe:1", "matrixSize": 1024, "every": "1h"}));
    assert_eq!(errors_of(validate_cel(&ok)), "");
    let v = ok.spec.verification.as_ref().unwrap();
    assert_eq!(v.deadline.as_duration().as_secs(), 300, "default deadline");
    assert!(!v.required);
    let bad = pool(serde_json::json!({"image": "probe:1", "matrixSize": 1020}));
    assert!(errors_of(validate_cel(&bad)).contains("multiple of 8"));
    let bad = pool(serde_json::json!({"image": "probe:1", "deadline": "5s"}));
    assert!(errors_of(validate_cel(&bad)).contains("between 10s and 1h"));
    let bad = pool(serde_json::json!({"image": "probe:1", "every": "30s"}));
    assert!(errors_of(validate_cel(&bad)).contains("at least 1m"));
    assert_eq!(
        v.placement_deadline.as_duration().as_secs(),
        1800,
        "default placement deadline"
    );
    for d in ["30s", "25h"] {
        let bad = pool(serde_json::json!({"image": "probe:1", "placementDeadline": d}));
        assert!(
            errors_of(validate_cel(&bad))
                .contains("spec.verification.placementDeadline must be between 1m and 24h"),
            "{d}"
        );
    }
}

#[test]
fn gpu_hours_and_spend_per_period_pass_in_a_pool_with_a_chain() {
    let quotas = serde_json::json!([
        {"namespace": "team-a", "cohort": "research", "groups": [
            {"name": "h100", "models": ["H100"], "gpus": 8, "period": "Week", "gpuHours": 500,
             "spend": "1000"},
            {"name": "rest", "gpus": 16, "period": "Day", "gpuHours": 24}]},
    ]);
    let spec: GpuPoolSpec = serde_json::from_value(serde_json::json!({
        "chain": {
            "rpcUrl": "http://127.0.0.1:8545",
            "chainId": 31337,
            "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "escrow": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
            "hubKeySecretRef": {"namespace": "gpufed-system", "name": "k", "key": "privateKey"}
        },
        "quotas": quotas,
    }))
    .unwrap();
    assert_eq!(errors_of(validate_cel(&GpuPool::new("p", spec))), "");
}

#[test]
fn gpu_hours_or_spend_without_a_period_and_a_period_alone_are_refused_naming_the_fix() {
    for group in [
        serde_json::json!({"name": "a", "gpus": 8, "gpuHours": 100}),
        serde_json::json!({"name": "a", "gpus": 8, "spend": "10"}),
    ] {
        let pool =
            pool_with_quotas(serde_json::json!([{"namespace": "team-a", "groups": [group]}]));
        let errors = errors_of(validate_cel(&pool));
        assert!(
            errors.contains("gpuHours and spend count per period; set period (Day, Week or Month)"),
            "{errors}"
        );
    }
    let alone = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "groups": [{"name": "a", "gpus": 8, "period": "Month"}]},
    ]));
    let errors = errors_of(validate_cel(&alone));
    assert!(
        errors.contains("period limits nothing alone; set gpuHours or spend"),
        "{errors}"
    );
}

#[test]
fn spend_in_a_pool_without_a_chain_is_refused_naming_the_fix() {
    let pool = pool_with_quotas(serde_json::json!([
        {"namespace": "team-a", "groups": [
            {"name": "a", "gpus": 8, "period": "Month", "spend": "100"}]},
    ]));
    let errors = errors_of(validate_cel(&pool));
    assert!(errors.contains("spend needs spec.chain"), "{errors}");
}

#[test]
fn a_serving_job_needs_an_unprivileged_port_and_an_absolute_readiness_path() {
    for (port, path, ok, want) in [
        (8080, "/", true, ""),
        (1024, "/healthz?full=1", true, ""),
        (65535, "/v1/models", true, ""),
        (
            80,
            "/",
            false,
            "spec.serving.port must be between 1024 and 65535",
        ),
        (
            1023,
            "/",
            false,
            "spec.serving.port must be between 1024 and 65535",
        ),
        (
            65536,
            "/",
            false,
            "spec.serving.port must be between 1024 and 65535",
        ),
        (
            8080,
            "healthz",
            false,
            "spec.serving.readinessPath must be an absolute HTTP path",
        ),
        (
            8080,
            "/health z",
            false,
            "spec.serving.readinessPath must be an absolute HTTP path",
        ),
        (
            8080,
            "/health\n",
            false,
            "spec.serving.readinessPath must be an absolute HTTP path",
        ),
    ] {
        let j = job("s").serving(port, path).build();
        let errs = errors_of(validate_cel(&j));
        assert_eq!(errs.is_empty(), ok, "{port} {path:?}: {errs}");
        assert!(errs.contains(want), "{port} {path:?}: {errs}");
    }
}

#[test]
fn a_serving_jobs_settlement_period_is_between_10_seconds_and_a_day() {
    for (d, ok) in [
        ("9s", false),
        ("10s", true),
        ("1h", true),
        ("24h", true),
        ("25h", false),
    ] {
        let mut j = job("s").serving(8080, "/").build();
        if let Some(s) = j.spec.serving.as_mut() {
            s.settlement_period = d.parse().unwrap();
        }
        let errs = errors_of(validate_cel(&j));
        assert_eq!(errs.is_empty(), ok, "{d}: {errs}");
        if !ok {
            assert!(
                errs.contains("spec.serving.settlementPeriod must be between 10s and 24h"),
                "{errs}"
            );
        }
    }
}

#[test]
fn serving_cannot_be_added_removed_or_changed_after_creation() {
    let batch = job("b").build();
    let serving = job("s").serving(8080, "/").build();
    let msg = "spec.serving is immutable after creation";
    assert!(
        changed(&batch, |j| j.spec.serving = serving.spec.serving.clone()).contains(msg),
        "adding serving to a batch job"
    );
    assert!(
        changed(&serving, |j| j.spec.serving = None).contains(msg),
        "removing it"
    );
    assert!(
        changed(&serving, |j| {
            if let Some(s) = j.spec.serving.as_mut() {
                s.port = 9090;
            }
        })
        .contains(msg),
        "changing its port"
    );
    assert_eq!(changed(&serving, |j| j.spec.priority = 5), "");
}

/// A job whose template's `inputs` and `outputs` are `inputs` and `outputs` (JSON).
fn job_with_data(inputs: serde_json::Value, outputs: serde_json::Value) -> ComputeJob {
    let mut j = job("data").build();
    j.spec.template.inputs = serde_json::from_value(inputs).unwrap();
    j.spec.template.outputs = serde_json::from_value(outputs).unwrap();
    j
}

fn good_input() -> serde_json::Value {
    serde_json::json!({"name": "dataset", "endpoint": "https://s3.eu-west-1.amazonaws.com",
        "bucket": "team-a-data", "key": "alpaca/train.jsonl", "size": 4,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "mountPath": "/data", "credentialsSecret": "s3"})
}

fn good_output() -> serde_json::Value {
    serde_json::json!({"name": "checkpoint", "path": "/output",
        "endpoint": "http://10.0.0.1:7070", "bucket": "team-a-runs", "prefix": "runs/42/",
        "credentialsSecret": "s3"})
}

/// `base` with `field` set to `value` (`null` removes it).
fn with(mut base: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    if value.is_null() {
        base.as_object_mut().unwrap().remove(field);
    } else {
        base[field] = value;
    }
    base
}

#[test]
fn inputs_and_outputs_that_name_real_storage_pass() {
    let prefix = serde_json::json!({"name": "weights", "endpoint": "https://s3.example.com:9000/",
        "region": "eu-west-1", "bucket": "models.team-a", "prefix": "llama/8b",
        "mountPath": "/weights"});
    let j = job_with_data(
        serde_json::json!([with(good_input(), "presign", true.into()), prefix]),
        serde_json::json!([
            good_output(),
            with(
                with(
                    with(good_output(), "name", "final".into()),
                    "path",
                    "/final".into()
                ),
                "files",
                serde_json::json!(["model.safetensors", "ckpt/opt.pt"])
            ),
        ]),
    );
    let mut presigned = j.clone();
    presigned.spec.template.outputs[1].presign = true;
    assert_eq!(errors_of(validate_cel(&presigned)), "");
}

#[test]
fn a_presigned_output_needs_its_files_named_and_its_keys_given() {
    let presigned = with(good_output(), "presign", true.into());
    let cases = [
        // A directory: the hub cannot sign URLs for files it does not know.
        (presigned.clone(), "outputs[].presign needs files"),
        (
            with(presigned.clone(), "files", serde_json::json!([])),
            "outputs[].presign needs files",
        ),
        (
            with(
                with(presigned.clone(), "files", serde_json::json!(["m.bin"])),
                "credentialsSecret",
                serde_json::Value::Null,
            ),
            "outputs[].presign needs files",
        ),
        (
            with(good_output(), "files", serde_json::json!(["m.bin"])),
            "outputs[].files lists the files of a presigned output",
        ),
        (
            with(presigned.clone(), "files", serde_json::json!(["../etc/x"])),
            "outputs[].files must be file names relative to path",
        ),
        (
            with(presigned.clone(), "files", serde_json::json!(["/abs"])),
            "outputs[].files must be file names relative to path",
        ),
        (
            with(presigned.clone(), "files", serde_json::json!(["a//b"])),
            "outputs[].files must be file names relative to path",
        ),
        (
            with(presigned, "files", serde_json::json!(["a", "a"])),
            "outputs[].files must not list a file twice",
        ),
    ];
    for (output, expected) in cases {
        let j = job_with_data(serde_json::json!([]), serde_json::json!([output.clone()]));
        let errs = errors_of(validate_cel(&j));
        assert!(errs.contains(expected), "{output}: {errs}");
    }
}

#[test]
fn hostile_or_mistaken_inputs_are_refused_naming_the_field_and_the_fix() {
    use serde_json::Value::Null;
    let cases = [
        (
            with(good_input(), "endpoint", "s3://team-a-data".into()),
            "inputs[].endpoint must be the http(s) URL",
        ),
        (
            with(good_input(), "endpoint", "https://".into()),
            "inputs[].endpoint must be the http(s) URL",
        ),
        (
            with(good_input(), "bucket", "Team_A".into()),
            "inputs[].bucket must be an S3 bucket name",
        ),
        (
            with(good_input(), "key", Null),
            "set exactly one of key (one object) and prefix",
        ),
        (
            with(good_input(), "prefix", "datasets/".into()),
            "set exactly one of key (one object) and prefix",
        ),
        (
            with(good_input(), "key", "../../etc/passwd".into()),
            "inputs[].key must be an object key without",
        ),
        (
            with(good_input(), "key", "datasets/".into()),
            "inputs[].key must be an object key without",
        ),
        (
            with(good_input(), "sha256", "ABC".into()),
            "inputs[].sha256 must be 64 lowercase hex digits",
        ),
        (
            with(good_input(), "mountPath", "/tmp/data".into()),
            "inputs[].mountPath must be an absolute directory",
        ),
        (
            with(good_input(), "mountPath", "/data/../proc".into()),
            "inputs[].mountPath must be an absolute directory",
        ),
        (
            with(
                with(with(good_input(), "key", Null), "prefix", "d/".into()),
                "size",
                4.into(),
            ),
            "inputs[].size and inputs[].sha256 check one object",
        ),
        (
            with(with(good_input(), "key", Null), "prefix", "a/../b".into()),
            "inputs[].prefix must not start with /",
        ),
        (
            with(
                with(with(good_input(), "key", Null), "prefix", "d/".into()),
                "presign",
                true.into(),
            )
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.remove("size");
                o.remove("sha256");
                serde_json::Value::Object(o)
            })
            .unwrap(),
            "inputs[].presign needs key (a URL names one object) and credentialsSecret",
        ),
        (
            with(
                with(good_input(), "credentialsSecret", Null),
                "presign",
                true.into(),
            ),
            "inputs[].presign needs key (a URL names one object) and credentialsSecret",
        ),
    ];
    for (input, expected) in cases {
        let j = job_with_data(serde_json::json!([input.clone()]), serde_json::json!([]));
        let errs = errors_of(validate_cel(&j));
        assert!(errs.contains(expected), "{input}: {errs}");
    }
    // Two inputs in one directory.
    let twice = job_with_data(
        serde_json::json!([good_input(), with(good_input(), "name", "other".into())]),
        serde_json::json!([]),
    );
    assert!(
        errors_of(validate_cel(&twice)).contains("inputs[].mountPath must be unique"),
        "{}",
        errors_of(validate_cel(&twice))
    );
}

#[test]
fn hostile_or_mistaken_outputs_are_refused_naming_the_field_and_the_fix() {
    let cases = [
        (
            with(good_output(), "endpoint", "ftp://example.com".into()),
            "outputs[].endpoint must be the http(s) URL",
        ),
        (
            with(good_output(), "bucket", "ab".into()),
            "outputs[].bucket must be an S3 bucket name",
        ),
        (
            with(good_output(), "prefix", "/abs/".into()),
            "outputs[].prefix must not start with /",
        ),
        (
            with(good_output(), "prefix", "runs/../other/".into()),
            "outputs[].prefix must not start with /",
        ),
        (
            with(good_output(), "path", "/dev/shm".into()),
            "outputs[].path must be an absolute directory",
        ),
    ];
    for (output, expected) in cases {
        let j = job_with_data(serde_json::json!([]), serde_json::json!([output.clone()]));
        let errs = errors_of(validate_cel(&j));
        assert!(errs.contains(expected), "{output}: {errs}");
    }
    let twice = job_with_data(
        serde_json::json!([]),
        serde_json::json!([good_output(), with(good_output(), "name", "logs".into())]),
    );
    assert!(errors_of(validate_cel(&twice)).contains("outputs[].path must be unique"));
}

fn open_pool(spec: serde_json::Value) -> GpuPool {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
        "metadata": {"name": "p"},
        "spec": spec
    }))
    .unwrap()
}

fn open_spec() -> serde_json::Value {
    serde_json::json!({
        "admission": "Open",
        "minBond": "100",
        "chain": {
            "rpcUrl": "http://127.0.0.1:8545", "chainId": 31337,
            "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "escrow": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
            "bond": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0",
            "hubKeySecretRef": {"namespace": "gpufed-system", "name": "hub-key", "key": "key"}
        },
        "verification": {"required": true, "image": "probe:1", "backend": "Cpu"}
    })
}

#[test]
fn an_open_pool_with_bond_contract_min_bond_and_required_verification_passes() {
    let pool = open_pool(open_spec());
    assert_eq!(pool.spec.admission, gpufed_crds::Admission::Open);
    assert_eq!(errors_of(validate_cel(&pool)), "");
    let approved = open_pool(serde_json::json!({}));
    assert_eq!(
        approved.spec.admission,
        gpufed_crds::Admission::Approved,
        "default"
    );
    assert_eq!(errors_of(validate_cel(&approved)), "");
}

#[test]
fn an_open_pool_that_cannot_check_stake_or_gpus_is_refused_naming_the_field() {
    type Change = fn(&mut serde_json::Value);
    let cases: [(&str, Change); 5] = [
        ("spec.admission Open needs spec.chain.bond", |s| {
            s["chain"].as_object_mut().unwrap().remove("bond");
        }),
        ("spec.admission Open needs spec.chain.bond", |s| {
            s.as_object_mut().unwrap().remove("chain");
        }),
        ("spec.admission Open needs spec.minBond", |s| {
            s.as_object_mut().unwrap().remove("minBond");
        }),
        (
            "spec.admission Open needs spec.verification.required: true",
            |s| {
                s["verification"]["required"] = false.into();
            },
        ),
        (
            "spec.admission Open needs spec.verification.required: true",
            |s| {
                s.as_object_mut().unwrap().remove("verification");
            },
        ),
    ];
    for (want, change) in cases {
        let mut spec = open_spec();
        change(&mut spec);
        let errors = errors_of(validate_cel(&open_pool(spec.clone())));
        assert!(errors.contains(want), "{spec}: {errors}");
        // The same holes are fine for a pool the admin fills.
        spec["admission"] = "Approved".into();
        assert_eq!(errors_of(validate_cel(&open_pool(spec))), "");
    }
}

#[test]
fn automatic_slashing_needs_a_bond_contract_and_a_positive_amount() {
    let pool = |slash: serde_json::Value, bond: Option<&str>| -> GpuPool {
        let mut chain = serde_json::json!({
            "rpcUrl": "http://anvil:8545", "chainId": 31337,
            "token": "0x0000000000000000000000000000000000000001",
            "escrow": "0x0000000000000000000000000000000000000002",
            "hubKeySecretRef": {"namespace": "gpufed-system", "name": "hub-key", "key": "key"},
        });
        if let Some(b) = bond {
            chain["bond"] = serde_json::json!(b);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "GpuPool",
            "metadata": {"name": "p"},
            "spec": {"chain": chain, "verification": {"image": "probe:1", "slash": slash}}
        }))
        .unwrap()
    };
    let bond = Some("0x0000000000000000000000000000000000000003");
    assert_eq!(
        errors_of(validate_cel(&pool(
            serde_json::json!({"amount": "2.5"}),
            bond
        ))),
        ""
    );
    let no_bond = errors_of(validate_cel(&pool(
        serde_json::json!({"amount": "2.5"}),
        None,
    )));
    assert!(
        no_bond.contains("needs spec.chain with spec.chain.bond"),
        "{no_bond}"
    );
    let mut no_chain = pool(serde_json::json!({"amount": "1"}), bond);
    no_chain.spec.chain = None;
    assert!(errors_of(validate_cel(&no_chain)).contains("spec.chain.bond"));
    for zero in ["0", "0.0", "0.000"] {
        let e = errors_of(validate_cel(&pool(
            serde_json::json!({"amount": zero}),
            bond,
        )));
        assert!(
            e.contains("slash.amount must be more than 0"),
            "{zero}: {e}"
        );
    }
    assert_eq!(
        errors_of(validate_cel(&pool(
            serde_json::json!({"amount": "0.001"}),
            bond
        ))),
        ""
    );
    // Without slash, a pool verifies with or without a chain, as before.
    let mut plain = pool(serde_json::json!({"amount": "1"}), None);
    plain.spec.verification.as_mut().unwrap().slash = None;
    assert_eq!(errors_of(validate_cel(&plain)), "");
}

#[test]
fn reclaim_within_cohort_needs_a_cohort_naming_the_fix() {
    let pool = |spec: serde_json::Value| GpuPool::new("p", serde_json::from_value(spec).unwrap());
    let cohort = serde_json::json!([
        {"namespace": "team-a", "cohort": "research", "groups": [{"name": "all", "gpus": 2}]},
        {"namespace": "team-b", "cohort": "research", "groups": [{"name": "all", "gpus": 2}]},
    ]);
    for policy in ["LowerPriority", "Any"] {
        let ok = pool(serde_json::json!({"quotas": cohort, "reclaimWithinCohort": policy}));
        assert_eq!(errors_of(validate_cel(&ok)), "", "{policy}");
        let errors = errors_of(validate_cel(&pool(
            serde_json::json!({"reclaimWithinCohort": policy}),
        )));
        assert!(
            errors.contains("spec.reclaimWithinCohort needs spec.quotas with a cohort"),
            "{policy}: {errors}"
        );
    }
    let never = pool(serde_json::json!({"reclaimWithinCohort": "Never"}));
    assert_eq!(errors_of(validate_cel(&never)), "");
}

#[test]
fn a_signed_offer_needs_the_signed_nonce_and_expiry() {
    let offer = |spec: serde_json::Value| -> gpufed_crds::Offer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1", "kind": "Offer",
            "metadata": {"name": "offer", "namespace": "gpufed-member-alpha"},
            "spec": spec
        }))
        .unwrap()
    };
    let prices = serde_json::json!([{"model": "H100", "pricePerGpuHour": "2.40"}]);
    let sig = format!("0x{}", "ab".repeat(65));
    assert_eq!(
        errors_of(validate_cel(&offer(serde_json::json!({"prices": prices})))),
        ""
    );
    let signed = serde_json::json!({"prices": prices, "nonce": 7,
        "expires": "2030-01-01T00:00:00Z", "signature": sig});
    assert_eq!(errors_of(validate_cel(&offer(signed))), "");
    let backwards = serde_json::json!({"prices": [{"model": "H100", "pricePerGpuHour": "2.40",
        "minDuration": "2h", "maxDuration": "1h"}]});
    assert!(
        errors_of(validate_cel(&offer(backwards)))
            .contains("prices[].minDuration must not be above prices[].maxDuration")
    );
    let bounded = serde_json::json!({"prices": [{"model": "H100", "pricePerGpuHour": "2.40",
        "minDuration": "10m", "maxDuration": "24h", "gpus": 8}]});
    assert_eq!(errors_of(validate_cel(&offer(bounded))), "");
    let bare = serde_json::json!({"prices": prices, "signature": sig});
    assert!(
        errors_of(validate_cel(&offer(bare)))
            .contains("spec.signature needs spec.nonce and spec.expires")
    );
}
