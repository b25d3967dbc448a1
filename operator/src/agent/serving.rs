//! Serving placements (`Placement.spec.serving`, docs/adr/0030-serving-jobs.md), as pure functions:
//! what a serving Job's first container gets (its port and an HTTP readiness probe), the network
//! that exposes it (a Service selecting the replicas and a NetworkPolicy letting clients in, both
//! owned by the Job), and the endpoint the agent reports: the URL of every ready replica on the
//! member's pod network (the member chart's `PodNetwork` exposure: clients reach pod IPs).
//!
//! A serving Job is the batch Job of [`super::job_builder::build`] with `restartPolicy: OnFailure`
//! and [`BACKOFF_LIMIT`]: the kubelet restarts a crashed server in its pod, and the member lease,
//! the lease gate and the fencer treat it like any other Job.

use std::collections::BTreeMap;

use super::cached::Job;
use gpufed_crds::{Endpoint, ServingSpec};
use k8s_openapi::api::core::v1::{
    ContainerPort, HTTPGetAction, Probe, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::cached::Pod;
use super::job_builder;
use super::usage::replica_index;
use crate::cli::ServingExposure;

/// Annotation on a serving Job with its port (the Job is cached without its pod template).
pub const ANNOTATION_SERVING_PORT: &str = "gpufed.io/serving-port";
/// Name of the serving port on the first container and on the Service.
pub const PORT_NAME: &str = "http";
/// Container restarts (and replaced pods) a serving attempt survives before it fails as
/// `BackoffLimitExceeded`: a server that crashed this often is broken, not unlucky.
pub const BACKOFF_LIMIT: i32 = 100;
/// Seconds between two readiness probes.
pub const PROBE_PERIOD_SECONDS: i32 = 2;

/// The port and readiness probe of a serving Job's first container.
pub fn container_port_and_probe(serving: &ServingSpec) -> (Vec<ContainerPort>, Probe) {
    let port = i32::try_from(serving.port).unwrap_or(i32::MAX);
    let ports = vec![ContainerPort {
        name: Some(PORT_NAME.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    let probe = Probe {
        http_get: Some(HTTPGetAction {
            path: Some(serving.readiness_path.clone()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(PROBE_PERIOD_SECONDS),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Default::default()
    };
    (ports, probe)
}

/// Name of the Service (and NetworkPolicy) of serving Job `job_name`.
pub fn service_name(job_name: &str) -> String {
    format!("{job_name}-serve")
}

/// The serving port of a (cached) local Job, from its annotation.
pub fn port_of(job: &impl kube::Resource) -> Option<u16> {
    job.meta()
        .annotations
        .as_ref()?
        .get(ANNOTATION_SERVING_PORT)?
        .parse()
        .ok()
}

/// The network of a serving Job: a Service `<job>-serve` selecting its replicas on the serving
/// port (what a member's own Ingress or gateway routes to; `type: LoadBalancer` of
/// `load_balancer_class` with that exposure), and a NetworkPolicy admitting any
/// client to that port of those pods (the jobs namespace denies all other ingress). Both owned by
/// `job`, so they go with it. `None` for a Job that does not serve, or one not created yet.
pub fn network(
    job: &Job,
    exposure: ServingExposure,
    load_balancer_class: Option<&str>,
) -> Option<(Service, NetworkPolicy)> {
    let port = i32::from(port_of(job)?);
    let job_name = job.metadata.name.clone()?;
    let labels = job.metadata.labels.as_ref()?;
    let selector = job_builder::replica_selector(job)?;
    let metadata = ObjectMeta {
        name: Some(service_name(&job_name)),
        namespace: job.metadata.namespace.clone(),
        labels: Some(labels.clone()),
        owner_references: Some(vec![job_builder::controlled_by(job)?]),
        ..Default::default()
    };
    let service = Service {
        metadata: metadata.clone(),
        spec: Some(ServiceSpec {
            // With a load balancer the member's controller gives it an address (ADR 0030).
            type_: (exposure == ServingExposure::LoadBalancer).then(|| "LoadBalancer".into()),
            load_balancer_class: load_balancer_class
                .filter(|_| exposure == ServingExposure::LoadBalancer)
                .map(str::to_string),
            selector: Some(selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let policy = NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                // No `from`: clients anywhere; only the serving port.
                from: None,
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    };
    Some((service, policy))
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The `activeDeadlineSeconds` a running serving Job needs (ADR 0030 section 7): the run time its
/// attempt is funded for (`Placement.spec.fundedSeconds`, else `maxDuration`), which the hub counts
/// from the attempt's start as reported (its first pod's start), moved onto the Job's own start
/// (`status.startTime`, from which the member's Job controller counts). Both times are the
/// member's. `None` until both starts are known; never below `maxDuration`.
pub fn deadline(
    spec: &gpufed_crds::PlacementSpec,
    job_start: Option<&Time>,
    attempt_start: Option<&Time>,
) -> Option<i64> {
    spec.serving.as_ref()?;
    let (job_start, attempt_start) = (job_start?, attempt_start?);
    let funded = spec
        .funded_seconds
        .unwrap_or(0)
        .max(spec.max_duration.as_secs_ceil());
    let late = attempt_start
        .0
        .as_second()
        .saturating_sub(job_start.0.as_second())
        .max(0);
    i64::try_from(funded).ok().map(|f| f.saturating_add(late))
}

/// The endpoint of a serving placement with `replicas` replicas, from its pods: the URL
/// `http://<pod IP>:<port>` of every ready replica, by replica index (one URL per replica), and
/// whether all are ready.
pub fn endpoint(serving: &ServingSpec, replicas: u32, pods: &[&Pod]) -> Endpoint {
    let mut by_replica: BTreeMap<u32, String> = BTreeMap::new();
    for pod in pods.iter().filter(|p| ready(p)) {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
            continue;
        };
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        by_replica
            .entry(replica_index(pod))
            .or_insert_with(|| format!("http://{host}:{}", serving.port));
    }
    let urls: Vec<String> = by_replica
        .into_values()
        .take(gpufed_crds::serving::MAX_URLS)
        .collect();
    let ready_replicas = u32::try_from(urls.len()).unwrap_or(u32::MAX);
    Endpoint {
        cluster: None,
        attempt: None,
        url: urls.first().cloned(),
        ready: ready_replicas >= replicas,
        ready_replicas,
        urls,
    }
}

/// The address the member's load balancer gave serving Service `service`, if any: its first
/// ingress's IP or host name.
pub fn load_balancer_host(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress
        .ip
        .clone()
        .or_else(|| ingress.hostname.clone())
        .filter(|h| !h.is_empty())
}

/// The endpoint of a serving placement exposed by a load balancer at `host` (none assigned yet:
/// no URL): one URL for all replicas, ready once the address exists and every replica is ready.
pub fn load_balancer_endpoint(
    serving: &ServingSpec,
    replicas: u32,
    pods: &[&Pod],
    host: Option<&str>,
) -> Endpoint {
    let by_pods = endpoint(serving, replicas, pods);
    let url = host.map(|h| {
        let h = if h.contains(':') {
            format!("[{h}]")
        } else {
            h.to_string()
        };
        format!("http://{h}:{}", serving.port)
    });
    Endpoint {
        ready: by_pods.ready && url.is_some(),
        ready_replicas: by_pods.ready_replicas,
        urls: url.iter().cloned().collect(),
        url,
        ..Endpoint::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use gpufed_crds::naming::{LABEL_ATTEMPT, LABEL_JOB_UID};

    fn serving() -> ServingSpec {
        ServingSpec {
            port: 8080,
            readiness_path: "/healthz".into(),
            settlement_period: gpufed_crds::KubeDuration::from_secs(3600),
        }
    }

    fn pod(index: u32, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{index}"),
                         "annotations": {super::super::report::COMPLETION_INDEX: index.to_string()}},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_endpoint_lists_ready_replicas_by_index_and_is_ready_only_when_all_are() {
        let (p1, p0, p2) = (
            pod(1, Some("10.244.0.9"), true),
            pod(0, Some("10.244.0.7"), true),
            pod(2, Some("10.244.0.8"), false),
        );
        let e = endpoint(&serving(), 3, &[&p1, &p0, &p2]);
        assert_eq!(e.url.as_deref(), Some("http://10.244.0.7:8080"));
        assert_eq!(
            e.urls,
            vec!["http://10.244.0.7:8080", "http://10.244.0.9:8080"]
        );
        assert_eq!((e.ready_replicas, e.ready), (2, false));
        let p2 = pod(2, Some("10.244.0.8"), true);
        assert!(endpoint(&serving(), 3, &[&p1, &p0, &p2]).ready);
    }

    #[test]
    fn a_replica_without_an_address_or_not_ready_gives_no_url() {
        let e = endpoint(&serving(), 1, &[&pod(0, None, true)]);
        assert_eq!((e.url, e.ready_replicas, e.ready), (None, 0, false));
        let e = endpoint(&serving(), 1, &[&pod(0, Some("10.0.0.1"), false)]);
        assert_eq!((e.url, e.ready), (None, false));
        let e = endpoint(&serving(), 1, &[&pod(0, Some("fd00::1"), true)]);
        assert_eq!(e.url.as_deref(), Some("http://[fd00::1]:8080"));
    }

    fn serving_job(replicas: u32) -> k8s_openapi::api::batch::v1::Job {
        let mut p = crate::agent::fixtures::placement("llm", 1)
            .replicas(replicas)
            .build();
        p.spec.serving = Some(serving());
        let mut job = super::super::job_builder::build(
            &p,
            "gpufed-jobs",
            crate::cli::PullPolicy::IfNotPresent,
        );
        job.metadata.uid = Some("local-job-uid".into());
        job
    }

    #[test]
    fn a_serving_job_is_restarted_on_failure_and_its_first_container_serves_and_is_probed() {
        let job = serving_job(2);
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(BACKOFF_LIMIT));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let first = &pod.containers[0];
        assert_eq!(first.ports.as_ref().unwrap()[0].container_port, 8080);
        assert!(first.readiness_probe.is_some());
        assert_eq!(port_of(&job), Some(8080));
        // A batch job is unchanged: never restarted on the member, no port, no network.
        let batch = super::super::job_builder::build(
            &crate::agent::fixtures::placement("b", 1).build(),
            "gpufed-jobs",
            crate::cli::PullPolicy::IfNotPresent,
        );
        let spec = batch.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert!(pod.containers[0].ports.is_none() && pod.containers[0].readiness_probe.is_none());
        assert_eq!(
            network(&Job::from(&batch), ServingExposure::PodNetwork, None),
            None
        );
    }

    #[test]
    fn a_serving_jobs_network_selects_its_replicas_on_the_port_and_lets_any_client_in() {
        let job = Job::from(&serving_job(2));
        let name = job.metadata.name.clone().unwrap();
        let (service, policy) = network(&job, ServingExposure::PodNetwork, None).unwrap();
        assert_eq!(service.metadata.name, Some(format!("{name}-serve")));
        let owner = &service.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.name.as_str(), owner.uid.as_str()),
            (name.as_str(), "local-job-uid")
        );
        let s = service.spec.unwrap();
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        let selector = s.selector.unwrap();
        assert_eq!(
            selector.get(LABEL_JOB_UID).map(String::as_str),
            Some(crate::agent::fixtures::uid("llm").as_str())
        );
        assert_eq!(selector.get(LABEL_ATTEMPT).map(String::as_str), Some("1"));
        let rule = &policy.spec.unwrap().ingress.unwrap()[0];
        assert!(rule.from.is_none(), "clients come from anywhere");
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
    }

    #[test]
    fn with_a_load_balancer_the_service_asks_for_one_and_its_address_is_the_url() {
        let job = Job::from(&serving_job(1));
        let (service, _) = network(&job, ServingExposure::LoadBalancer, Some("metallb")).unwrap();
        let spec = service.spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.load_balancer_class.as_deref(), Some("metallb"));
        let (plain, _) = network(&job, ServingExposure::PodNetwork, Some("metallb")).unwrap();
        assert_eq!(plain.spec.unwrap().type_, None);

        assert_eq!(load_balancer_host(&service), None);
        let mut assigned = service.clone();
        assigned.status = Some(
            serde_json::from_value(serde_json::json!(
                {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
            ))
            .unwrap(),
        );
        let host = load_balancer_host(&assigned);
        assert_eq!(host.as_deref(), Some("203.0.113.7"));
        let ready = pod(0, Some("10.244.0.7"), true);
        let e = load_balancer_endpoint(&serving(), 1, &[&ready], host.as_deref());
        assert_eq!(e.url.as_deref(), Some("http://203.0.113.7:8080"));
        assert_eq!((e.urls.len(), e.ready_replicas, e.ready), (1, 1, true));
        // No address yet, or a replica not ready: not ready.
        let e = load_balancer_endpoint(&serving(), 1, &[&ready], None);
        assert_eq!((e.url, e.ready), (None, false));
        let waiting = pod(0, Some("10.244.0.7"), false);
        let e = load_balancer_endpoint(&serving(), 1, &[&waiting], Some("lb.example.com"));
        assert_eq!(e.url.as_deref(), Some("http://lb.example.com:8080"));
        assert!(!e.ready);
    }

    #[test]
    fn the_probe_gets_the_readiness_path_on_the_serving_port() {
        let (ports, probe) = container_port_and_probe(&serving());
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(ports[0].name.as_deref(), Some(PORT_NAME));
        let get = probe.http_get.unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.port, IntOrString::Int(8080));
    }
}
