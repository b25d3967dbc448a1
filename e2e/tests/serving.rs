//! Serving jobs on real pods (docs/adr/0030-serving-jobs.md): a ComputeJob with `spec.serving`
//! runs a real HTTP server (busybox `httpd`) in a real container on a member whose node is real;
//! the server answers through the URL the job's status reports, a crash is restarted in place,
//! and when the member is lost (its agent killed outright) the job moves to the other member and
//! answers again at the new URL its status reports.
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::image::BUSYBOX;
use gpufed_e2e::joining::{JOBS_NAMESPACE, MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const LONG: Duration = Duration::from_secs(120);
const TEAM: &str = "team-a";

/// The server: crashes once on its first start (the mark survives in the pod's `/tmp`, so the
/// kubelet's restart finds it), then serves a page naming its pod on 8080; `/healthz` is a file
/// too, so the readiness probe passes once httpd listens.
const SERVER: &str = "if [ ! -e /tmp/crashed-once ]; then touch /tmp/crashed-once; echo crashing once; exit 1; fi; \
     mkdir -p /tmp/www && echo \"hello from $(hostname)\" > /tmp/www/index.html && echo ok > /tmp/www/healthz && \
     exec httpd -f -vv -p 8080 -h /tmp/www";

/// `GET /` of `url` (`http://host:port`), HTTP/1.0: the status line and body, or why not.
fn get(url: &str) -> Result<String, String> {
    let addr = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let sock = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    Ok(out)
}

/// The job once its endpoint on `cluster` is ready with a URL.
async fn serving_on(hub: &Client, name: &str, cluster: &str) -> ComputeJob {
    wait_job(
        hub,
        TEAM,
        name,
        LONG,
        &format!("{name} ready on {cluster}"),
        |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Running
                    && s.endpoint.as_ref().is_some_and(|e| {
                        e.ready && e.url.is_some() && e.cluster.as_deref() == Some(cluster)
                    })
            })
        },
    )
    .await
    .unwrap()
}

fn url_of(job: &ComputeJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.endpoint.as_ref())
        .and_then(|e| e.url.clone())
        .unwrap()
}

async fn pods_of(member: &Client, uid: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(member.clone(), JOBS_NAMESPACE)
        .list(&ListParams::default().labels(&format!("gpufed.io/job-uid={uid}")))
        .await
        .unwrap()
        .items
}

#[test]
fn a_serving_job_answers_at_its_reported_url_and_again_at_a_new_one_after_its_member_is_lost() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::two_real_l4_members(&tools, TEAM, LONG).await.unwrap();
        let hub = pool.hub.client();
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "llm", "namespace": TEAM},
                    "spec": {"gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                             "maxPricePerGpuHour": "1.00", "maxDuration": "30m",
                             "serving": {"port": 8080, "readinessPath": "/healthz"},
                             "template": {"containers": [{"name": "server", "image": BUSYBOX,
                                 "command": ["sh", "-c", SERVER]}]}}}),
        )
        .await
        .unwrap();

        // On alpha (cheaper): the first start crashed, the kubelet restarted it in its pod, and
        // the server answers at the URL the job's status gives.
        let job = serving_on(&hub, "llm", "alpha").await;
        let uid = job.uid().unwrap();
        let url_1 = url_of(&job);
        let alpha = pool.member("alpha").unwrap().client();
        let pods = pods_of(&alpha, &uid).await;
        assert_eq!(pods.len(), 1, "one pod, restarted in place");
        let restarts = pods[0]
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .restart_count;
        assert!(
            restarts >= 1,
            "the crashed server was restarted: {restarts}"
        );
        let pod_ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert_eq!(url_1, format!("http://{pod_ip}:8080"));
        let answer = wait_until(LONG, "the server to answer at its URL", || {
            let url = url_1.clone();
            async move { get(&url).ok() }
        })
        .await
        .unwrap();
        // An Indexed Job's pod is named host `<local job>-<replica>`.
        let local_job = gpufed_crds::naming::local_job_name(&uid, 1);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains(&format!("hello from {local_job}-0\n")),
            "{answer}"
        );
        // The member exposes it with a Service of its own (what its ingress routes to).
        let services: Api<Service> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let service = wait_until(LONG, "the serving Service", || {
            let services = services.clone();
            let name = format!("{local_job}-serve");
            async move { services.get_opt(&name).await.ok().flatten() }
        })
        .await
        .unwrap();
        assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 8080);

        // It runs as long as it is funded (ADR 0030 section 7): maxDuration (30 min) from its
        // pod's start, then, once the hub (the test stands in for it: this pool has no chain)
        // raises the Placement's fundedSeconds, that long. The member's Job controller counts from
        // the Job's own start, a little earlier, so the deadline is moved on by the difference.
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let deadline = |at_least: i64| {
            let jobs = jobs.clone();
            let name = local_job.clone();
            wait_until(LONG, "the local Job's deadline", move || {
                let (jobs, name) = (jobs.clone(), name.clone());
                async move {
                    let d = jobs.get(&name).await.ok()?.spec?.active_deadline_seconds?;
                    (d >= at_least).then_some(d)
                }
            })
        };
        let first = deadline(1800).await.unwrap();
        assert!(first < 1800 + 60, "{first}");
        let placement = gpufed_e2e::hubctl::placements(&hub, "alpha")
            .await
            .unwrap()
            .remove(0);
        Api::<gpufed_crds::Placement>::namespaced(hub.clone(), &placement.namespace().unwrap())
            .patch(
                &placement.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"fundedSeconds": 3600}})),
            )
            .await
            .unwrap();
        let renewed = deadline(3600).await.unwrap();
        assert_eq!(renewed - first, 1800, "moved by the funded time added");

        // Alpha is lost: its agent killed outright, so its lease lapses and the hub, once the
        // heartbeat has expired, runs attempt 2 on beta, which answers at a new URL.
        pool.members
            .iter_mut()
            .find(|m| m.name() == "alpha")
            .unwrap()
            .process_mut("gpufed-agent")
            .unwrap()
            .signal(libc::SIGKILL);
        let job = serving_on(&hub, "llm", "beta").await;
        let st = job.status.as_ref().unwrap();
        assert_eq!(st.attempt, 2);
        assert_eq!(
            st.attempts[0].phase,
            AttemptPhase::Lost,
            "{:?}",
            st.attempts[0]
        );
        assert_eq!(st.endpoint.as_ref().unwrap().attempt, Some(2));
        let url_2 = url_of(&job);
        assert_ne!(url_2, url_1, "a new member, a new URL");
        let beta = pool.member("beta").unwrap().client();
        let pod_2 = pods_of(&beta, &uid).await.remove(0);
        let ip_2 = pod_2.status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert_eq!(url_2, format!("http://{ip_2}:8080"));
        let answer = wait_until(LONG, "the server to answer at its new URL", || {
            let url = url_2.clone();
            async move { get(&url).ok() }
        })
        .await
        .unwrap();
        let local_job_2 = gpufed_crds::naming::local_job_name(&uid, 2);
        assert!(
            answer.contains(&format!("hello from {local_job_2}-0\n")),
            "{answer}"
        );
        // Attempt 1's server stopped with alpha's lease: its old URL no longer answers.
        wait_until(LONG, "the old URL to stop answering", || {
            let url = url_1.clone();
            async move { get(&url).is_err().then_some(()) }
        })
        .await
        .unwrap();
    });
}

/// A member whose chart publishes serving endpoints through its load balancer: the job's Service
/// asks for one of the chart's class, and once the load balancer gives it an address (the test
/// stands in for the member's load-balancer controller, which this harness has none of) that
/// address is the job's URL.
#[test]
fn behind_a_members_load_balancer_the_url_is_the_address_it_assigns() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[MemberPlan::new(
                "lb",
                vec![NodeSpec::new("lb-node", "L4-24GB", 2, "eu-west")],
                "L4",
                "0.50",
            )
            .serving_load_balancer("e2e.gpufed.io/lb")],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace(TEAM).await.unwrap();
        wait_ready_with_free(&hub, "lb", 2, LONG).await.unwrap();
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "llm", "namespace": TEAM},
                    "spec": {"gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                             "maxPricePerGpuHour": "1.00", "maxDuration": "30m",
                             "serving": {"port": 8080},
                             "template": {"containers": [{"name": "server", "image": "busybox"}]}}}),
        )
        .await
        .unwrap();
        let job = wait_job(&hub, TEAM, "llm", LONG, "llm running", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Running)
        })
        .await
        .unwrap();
        let member = pool.member("lb").unwrap().client();
        let services: Api<Service> = Api::namespaced(member, JOBS_NAMESPACE);
        let name = format!(
            "{}-serve",
            gpufed_crds::naming::local_job_name(&job.uid().unwrap(), 1)
        );
        let service = wait_until(LONG, "the serving Service", || {
            let services = services.clone();
            let name = name.clone();
            async move { services.get_opt(&name).await.ok().flatten() }
        })
        .await
        .unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(
            spec.load_balancer_class.as_deref(),
            Some("e2e.gpufed.io/lb")
        );
        // No address yet: no URL.
        let job = wait_job(&hub, TEAM, "llm", LONG, "an endpoint without URL", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.endpoint.as_ref())
                .is_some_and(|e| e.cluster.as_deref() == Some("lb"))
        })
        .await
        .unwrap();
        let endpoint = job.status.unwrap().endpoint.unwrap();
        assert_eq!((endpoint.url, endpoint.ready), (None, false));
        // The member's load balancer assigns an address.
        services
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
                ),
            )
            .await
            .unwrap();
        let job = wait_job(&hub, TEAM, "llm", LONG, "the load balancer's URL", |j| {
            j.status
                .as_ref()
                .and_then(|s| s.endpoint.as_ref())
                .is_some_and(|e| e.url.is_some())
        })
        .await
        .unwrap();
        let endpoint = job.status.unwrap().endpoint.unwrap();
        assert_eq!(endpoint.url.as_deref(), Some("http://203.0.113.7:8080"));
        assert_eq!(endpoint.urls, vec!["http://203.0.113.7:8080"]);
    });
}
