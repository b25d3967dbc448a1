use super::*;
use crate::agent::fixtures::{gpu_node, placement};
use crate::cli::PullPolicy;
use gpufed_crds::naming::local_job_name;

/// The Job the member builds for `p` with the default pull policy.
fn job_of(p: &Placement) -> Job {
    build(p, "gpufed-jobs", PullPolicy::IfNotPresent)
}

/// A placement whose replicas run two containers (`main` and `second`).
fn two_containers() -> Placement {
    let mut p = placement("t", 1).build();
    let mut second = p.spec.template.containers[0].clone();
    second.name = "second".into();
    p.spec.template.containers.push(second);
    p
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn pod_labels(job: &Job) -> &BTreeMap<String, String> {
    let template = job.spec.as_ref().unwrap().template.metadata.as_ref();
    template.unwrap().labels.as_ref().unwrap()
}

#[test]
fn the_job_runs_all_replicas_together_once_as_an_indexed_job() {
    let p = placement("train", 2).replicas(4).gpus(8).build();
    let job = job_of(&p);
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.completions, Some(4));
    assert_eq!(spec.parallelism, Some(4));
    assert_eq!(
        spec.backoff_limit,
        Some(0),
        "the hub retries, not the member"
    );
    assert_eq!(pod_spec(&job).restart_policy.as_deref(), Some("Never"));
}

#[test]
fn the_name_is_the_deterministic_local_job_name_in_the_jobs_namespace() {
    let p = placement("train", 3).build();
    let job = job_of(&p);
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(local_job_name("uid-train", 3).as_str())
    );
    assert_eq!(job.metadata.namespace.as_deref(), Some("gpufed-jobs"));
    assert_eq!(job_of(&p), job, "same placement, same Job");
}

#[test]
fn the_deadline_is_the_placements_max_duration() {
    let job = job_of(&placement("t", 1).max_duration("1h30m").build());
    assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(5400));
}

#[test]
fn the_first_container_gets_the_gpus_and_cpu_memory_requests_equal_limits() {
    let mut p = placement("t", 1).gpus(4).build();
    p.spec.template.containers[0].resources = Some(gpufed_crds::ContainerResources {
        cpu: Some("8".into()),
        memory: Some("64Gi".into()),
    });
    let mut sidecar = p.spec.template.containers[0].clone();
    sidecar.name = "logger".into();
    sidecar.resources = None;
    p.spec.template.containers.push(sidecar);
    let job = job_of(&p);
    let cs = &pod_spec(&job).containers;
    let r = cs[0].resources.as_ref().unwrap();
    assert_eq!(r.requests, r.limits);
    let limits = r.limits.as_ref().unwrap();
    assert_eq!(limits[GPU_RESOURCE], Quantity("4".into()));
    assert_eq!(limits["cpu"], Quantity("8".into()));
    assert_eq!(limits["memory"], Quantity("64Gi".into()));
    let r1 = cs[1].resources.as_ref().unwrap();
    assert!(r1.limits.is_none() && r1.requests.is_none(), "{r1:?}");
}

#[test]
fn pods_select_nodes_of_the_placed_model() {
    let job = job_of(&placement("t", 1).model("L4").build());
    assert_eq!(
        pod_spec(&job).node_selector.as_ref().unwrap()[LABEL_GPU_MODEL],
        "L4"
    );
}

#[test]
fn pods_get_no_token_no_service_links_and_no_host_namespaces() {
    let job = job_of(&placement("t", 1).build());
    let ps = pod_spec(&job);
    assert_eq!(ps.automount_service_account_token, Some(false));
    assert_eq!(ps.enable_service_links, Some(false));
    assert_eq!(ps.host_network, Some(false));
    assert_eq!(ps.host_pid, Some(false));
    assert_eq!(ps.host_ipc, Some(false));
    // No volume of the node's: the only one is the pod's own scratch space.
    let volumes = ps.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    assert!(volumes[0].empty_dir.is_some() && volumes[0].host_path.is_none());
    assert!(ps.service_account_name.is_none());
}

#[test]
fn every_container_passes_the_restricted_pod_security_standard() {
    let p = two_containers();
    let job = job_of(&p);
    let ps = pod_spec(&job);
    let pod_sc = ps.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_ne!(pod_sc.run_as_user, Some(0));
    assert_eq!(
        pod_sc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    for c in &ps.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(caps.add.is_none());
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    }
}

#[test]
fn the_root_filesystem_is_read_only_and_every_container_gets_the_scratch_tmp() {
    let p = two_containers();
    let job = job_of(&p);
    let ps = pod_spec(&job);
    let volumes = ps.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, SCRATCH_VOLUME);
    assert!(
        volumes[0].empty_dir.is_some(),
        "scratch is the pod's own, never the host's"
    );
    for c in &ps.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
            (SCRATCH_VOLUME, "/tmp")
        );
        assert_ne!(mounts[0].read_only, Some(true));
    }
}

#[test]
fn shm_size_gives_every_container_a_memory_backed_dev_shm_and_scratch_size_limits_tmp() {
    let mut p = two_containers();
    p.spec.template.shm_size = Some("8Gi".into());
    p.spec.template.scratch_size = Some("100Gi".into());
    let job = job_of(&p);
    let ps = pod_spec(&job);
    let volumes = ps.volumes.as_ref().unwrap();
    let shm = volumes.iter().find(|v| v.name == SHM_VOLUME).unwrap();
    let shm = shm.empty_dir.as_ref().unwrap();
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    assert_eq!(shm.size_limit.as_ref().unwrap().0, "8Gi");
    let scratch = volumes.iter().find(|v| v.name == SCRATCH_VOLUME).unwrap();
    let scratch = scratch.empty_dir.as_ref().unwrap();
    assert_eq!(
        (
            scratch.medium.as_deref(),
            scratch.size_limit.as_ref().unwrap().0.as_str()
        ),
        (None, "100Gi")
    );
    for c in &ps.containers {
        let paths: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(paths, ["/tmp", "/dev/shm"], "{}", c.name);
    }
    // Without them: the runtime's /dev/shm, and /tmp without a limit.
    let plain = job_of(&placement("t", 1).build());
    let ps = pod_spec(&plain);
    assert_eq!(ps.volumes.as_ref().unwrap().len(), 1);
    assert!(
        ps.volumes.as_ref().unwrap()[0]
            .empty_dir
            .as_ref()
            .unwrap()
            .size_limit
            .is_none()
    );
}

#[test]
fn containers_take_the_members_image_pull_policy() {
    for pull in [
        PullPolicy::Never,
        PullPolicy::IfNotPresent,
        PullPolicy::Always,
    ] {
        let job = build(&placement("t", 1).build(), "gpufed-jobs", pull);
        for c in &pod_spec(&job).containers {
            assert_eq!(c.image_pull_policy.as_deref(), Some(pull.as_str()));
        }
    }
}

#[test]
fn the_template_is_copied_as_plain_values() {
    let job = job_of(&placement("t", 1).build());
    let c = &pod_spec(&job).containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/train:1"));
    assert_eq!(c.command.as_deref().unwrap(), ["python", "train.py"]);
    let env = c.env.as_ref().unwrap();
    assert_eq!(env[0].name, "EPOCHS");
    assert_eq!(env[0].value.as_deref(), Some("3"));
    assert!(env[0].value_from.is_none());
}

#[test]
fn job_and_pods_are_labelled_back_to_the_hub_job() {
    let p = placement("train", 2).build();
    let job = job_of(&p);
    let l = job.metadata.labels.as_ref().unwrap();
    assert_eq!(l[LABEL_MANAGED_BY], MANAGED_BY);
    assert_eq!(l[LABEL_JOB_UID], "uid-train");
    assert_eq!(l[LABEL_ATTEMPT], "2");
    assert_eq!(l[LABEL_CLUSTER], "alpha");
    assert_eq!(l[LABEL_PLACEMENT], p.metadata.name.clone().unwrap());
    assert_eq!(pod_labels(&job), l);
}

#[test]
fn the_local_job_names_the_hub_job_by_uid_only() {
    let p = placement("train", 1).build();
    let job = job_of(&p);
    let keys: Vec<String> = job.metadata.labels.clone().unwrap().into_keys().collect();
    assert_eq!(
        keys,
        [
            LABEL_MANAGED_BY,
            LABEL_ATTEMPT,
            LABEL_CLUSTER,
            LABEL_JOB_UID,
            LABEL_PLACEMENT
        ]
    );
    let annotations = job.metadata.annotations.unwrap();
    assert!(
        annotations.keys().all(|k| !k.contains("job-name")),
        "{annotations:?}"
    );
    assert!(
        !serde_json::to_string(&annotations)
            .unwrap()
            .contains("team-a")
    );
}

#[test]
fn a_placement_this_member_can_run_is_valid() {
    let nodes = [gpu_node("h1", "H100", 8, 8)];
    assert_eq!(
        validate(&placement("t", 1).gpus(8).build(), "alpha", &nodes),
        Ok(())
    );
}

#[test]
fn a_placement_for_another_cluster_is_rejected() {
    let nodes = [gpu_node("h1", "H100", 8, 8)];
    let r = validate(&placement("t", 1).cluster("beta").build(), "alpha", &nodes).unwrap_err();
    assert_eq!(r.reason, "WrongCluster");
    assert!(r.message.contains("\"beta\""), "{}", r.message);
}

#[test]
fn a_model_this_member_lacks_is_rejected_naming_what_it_has() {
    let nodes = [gpu_node("l1", "L4", 4, 4)];
    let r = validate(&placement("t", 1).build(), "alpha", &nodes).unwrap_err();
    assert_eq!(r.reason, "ModelUnavailable");
    assert_eq!(r.message, "no H100 nodes here (has L4)");
}

#[test]
fn gpus_with_too_little_memory_are_rejected() {
    let mut p = placement("t", 1).build();
    p.spec.min_gpu_memory_mib = 100 * 1024;
    let r = validate(&p, "alpha", &[gpu_node("h1", "H100", 8, 8)]).unwrap_err();
    assert_eq!(r.reason, "InsufficientGpuMemory");
}

#[test]
fn a_replica_wider_than_any_node_is_rejected() {
    let r = validate(
        &placement("t", 1).gpus(16).build(),
        "alpha",
        &[gpu_node("h1", "H100", 8, 8)],
    )
    .unwrap_err();
    assert_eq!(r.reason, "NodeTooSmall");
}

#[test]
fn busy_gpus_are_no_reason_to_reject() {
    // Free GPUs change by the second; the pods wait in the member's queue instead.
    let nodes = [gpu_node("h1", "H100", 8, 0)];
    assert_eq!(
        validate(&placement("t", 1).build(), "alpha", &nodes),
        Ok(())
    );
}

#[test]
fn unusable_templates_are_rejected() {
    let nodes = [gpu_node("h1", "H100", 8, 8)];
    type Edit = Box<dyn Fn(&mut Placement)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "no containers",
            Box::new(|p| p.spec.template.containers.clear()),
        ),
        (
            "duplicate names",
            Box::new(|p| {
                let c = p.spec.template.containers[0].clone();
                p.spec.template.containers.push(c);
            }),
        ),
        (
            "bad name",
            Box::new(|p| p.spec.template.containers[0].name = "Main_1".into()),
        ),
        (
            "blank image",
            Box::new(|p| p.spec.template.containers[0].image = " ".into()),
        ),
        ("wrong total", Box::new(|p| p.spec.total_gpus = 99)),
        (
            "zero duration",
            Box::new(|p| p.spec.max_duration = gpufed_crds::KubeDuration::from_secs(0)),
        ),
    ];
    for (what, edit) in cases {
        let mut p = placement("t", 1).build();
        edit(&mut p);
        let r = validate(&p, "alpha", &nodes).unwrap_err();
        assert_eq!(r.reason, "InvalidTemplate", "{what}");
    }
}

#[test]
fn pods_stay_off_nodes_with_too_little_gpu_memory() {
    let mut p = placement("train", 1).build();
    p.spec.min_gpu_memory_mib = 76_185;
    let job = job_of(&p);
    let pod = job.spec.unwrap().template.spec.unwrap();
    let term = &pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms[0];
    let req = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(req.key, "gpufed.io/gpu-memory-mib");
    assert_eq!(req.operator, "Gt");
    assert_eq!(req.values.as_deref(), Some(&["76184".to_string()][..]));
    // No memory requirement, no affinity.
    let pod = job_of(&placement("train", 1).build())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert!(pod.affinity.is_none());
}

#[test]
fn stopped_pods_get_a_short_grace_period_so_fencing_finishes_before_failover() {
    let pod = job_of(&placement("train", 1).build())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(TERMINATION_GRACE_SECONDS)
    );
    // Fence at 2/3 of the smallest pool timeout (15 s) plus the grace period stays below it.
    const { assert!(10 + TERMINATION_GRACE_SECONDS < 15) };
}

fn env_of(job: &Job) -> Vec<Vec<(String, String)>> {
    pod_spec(job)
        .containers
        .iter()
        .map(|c| {
            c.env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .collect()
}

/// A gang Job as the apiserver returns it: with a UID.
fn created(mut job: Job) -> Job {
    job.metadata.uid = Some("local-job-uid".into());
    job
}

#[test]
fn a_single_replica_gets_no_subdomain_and_no_gang_environment() {
    let job = job_of(&placement("one", 1).build());
    assert_eq!(pod_spec(&job).subdomain, None);
    assert!(
        env_of(&job)
            .iter()
            .flatten()
            .all(|(k, _)| ![ENV_REPLICAS, ENV_SUBDOMAIN, ENV_COORDINATOR].contains(&k.as_str())),
        "{:?}",
        env_of(&job)
    );
    assert_eq!(gang_network(&CachedJob::from(&created(job))), None);
}

#[test]
fn gang_replicas_get_a_subdomain_and_are_told_the_size_and_the_coordinator() {
    let p = placement("train", 2).replicas(4).build();
    let job = job_of(&p);
    let name = local_job_name("uid-train", 2);
    assert_eq!(pod_spec(&job).subdomain.as_deref(), Some(name.as_str()));
    for env in env_of(&job) {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get(ENV_REPLICAS).as_deref(), Some("4"));
        assert_eq!(get(ENV_SUBDOMAIN), Some(name.clone()));
        assert_eq!(get(ENV_COORDINATOR), Some(format!("{name}-0.{name}")));
    }
}

#[test]
fn a_gangs_network_is_a_headless_service_and_a_policy_for_its_own_pods_owned_by_the_job() {
    let p = placement("train", 2).replicas(3).build();
    let job = created(job_of(&p));
    let (service, policy) = gang_network(&CachedJob::from(&job)).unwrap();
    let name = local_job_name("uid-train", 2);
    let own_pods = BTreeMap::from([
        (LABEL_JOB_UID.to_string(), "uid-train".to_string()),
        (LABEL_ATTEMPT.to_string(), "2".to_string()),
    ]);
    for meta in [&service.metadata, &policy.metadata] {
        assert_eq!(meta.name.as_deref(), Some(name.as_str()));
        assert_eq!(meta.namespace.as_deref(), Some("gpufed-jobs"));
        assert_eq!(
            meta.labels
                .as_ref()
                .unwrap()
                .get(LABEL_MANAGED_BY)
                .map(String::as_str),
            Some(MANAGED_BY),
            "the agent watches gang Services by this label"
        );
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Job", name.as_str(), "local-job-uid")
        );
    }
    let s = service.spec.unwrap();
    assert_eq!(s.cluster_ip.as_deref(), Some("None"));
    assert_eq!(s.selector.as_ref(), Some(&own_pods));
    assert_eq!(s.publish_not_ready_addresses, Some(true));
    // The pods carry the labels the Service and the policy select on.
    let labels = pod_labels(&job);
    assert!(own_pods.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let np = policy.spec.unwrap();
    let selects = np.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selects, own_pods);
    assert_eq!(np.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = np.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    let from = rules[0].from.as_ref().unwrap();
    assert_eq!(from.len(), 1, "only the gang's own pods: {from:?}");
    assert_eq!(
        from[0].pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&own_pods)
    );
    assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
}

#[test]
fn no_gang_network_for_a_job_not_yet_created() {
    let job = job_of(&placement("train", 1).replicas(2).build());
    assert_eq!(
        gang_network(&CachedJob::from(&job)),
        None,
        "the owner reference needs the Job's UID"
    );
}

#[test]
fn secret_references_point_at_the_local_secrets_owned_by_the_job() {
    let mut p = placement("train", 1).build();
    p.spec.template = serde_json::from_value(serde_json::json!({
        "containers": [{"name": "main", "image": "x",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
            "envFrom": [{"secretRef": {"name": "aws"}, "prefix": "S3_"}]}],
        "secretFiles": [{"name": "gcs", "secretName": "gcs", "mountPath": "/var/run/gcs",
            "items": [{"key": "key.json", "path": "key.json"}], "defaultMode": 256}],
        "imagePullSecrets": [{"name": "registry"}]
    }))
    .unwrap();
    let mut job = job_of(&p);
    job.metadata.uid = Some("job-uid".into());
    let spec = pod_spec(&job).clone();
    let c = &spec.containers[0];
    let env_ref = c.env.as_ref().unwrap()[0]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .clone()
        .unwrap();
    let env_from = c.env_from.as_ref().unwrap()[0].clone();
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/var/run/gcs")
        .unwrap()
        .clone();
    assert_eq!(mount.read_only, Some(true));
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap()
        .secret
        .clone()
        .unwrap();
    assert_eq!(volume.default_mode, Some(256));
    let opened = ["aws", "gcs", "hf", "registry"]
        .into_iter()
        .map(|n| (n.to_string(), crate::sealing::SecretPayload::default()))
        .collect();
    let secrets = local_secrets(&job, &p.spec.template, &opened);
    let name_of = |hub: &str| {
        secrets
            .iter()
            .find(|s| s.metadata.annotations.as_ref().unwrap()[ANNOTATION_HUB_SECRET] == hub)
            .unwrap()
            .metadata
            .name
            .clone()
            .unwrap()
    };
    assert_eq!(env_ref.name, name_of("hf"));
    assert_eq!(env_from.secret_ref.unwrap().name, name_of("aws"));
    assert_eq!(env_from.prefix.as_deref(), Some("S3_"));
    assert_eq!(volume.secret_name, Some(name_of("gcs")));
    assert_eq!(
        spec.image_pull_secrets.unwrap()[0].name,
        name_of("registry")
    );
    for s in &secrets {
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", "job-uid")
        );
        assert_eq!(s.immutable, Some(true));
    }
}

#[test]
fn secret_files_over_reserved_paths_are_refused_by_the_agent_too() {
    for path in ["/tmp/x", "/", "/var/../etc", "/dev/shm/k", "relative"] {
        let mut p = placement("train", 1).build();
        p.spec.template.secret_files = vec![gpufed_crds::workload::SecretFiles {
            name: "k".into(),
            secret_name: "k".into(),
            mount_path: path.into(),
            items: vec![],
            default_mode: None,
        }];
        let err = validate_template(&p).unwrap_err();
        assert_eq!(err.reason, "InvalidTemplate", "{path}");
    }
}

#[test]
fn every_pod_is_created_behind_the_member_lease_gate() {
    let pod = job_of(&placement("train", 1).replicas(2).build())
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let gates: Vec<String> = pod
        .scheduling_gates
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(gates, [LEASE_GATE]);
}
