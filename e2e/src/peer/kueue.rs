//! Kueue MultiKueue on harness clusters, set up the way Kueue's own docs set up a manager and its
//! workers, but with every component a process of the harness:
//!
//! * Kueue's CRDs (from the module `e2e/tools/build.sh` built, copied to `kueue-crds/` beside the
//!   binary) on every cluster, with the conversion-webhook stanza Kueue's kustomize patches add, so
//!   that Kueue's own certificate manager finds what it manages (no conversion is ever called:
//!   everything here uses the storage version, `v1beta2`);
//! * `kueue` (the controller manager) as a process of each cluster with a configuration file:
//!   leader election off, the `batch/job` integration, the shipped manifest's client QPS and
//!   concurrency, the visibility server off, and — on the manager — MultiKueue's
//!   `workerLostTimeout` as asked. [`KueueSetup::Matched`] instead runs `kueue-worker-rate` (Kueue
//!   with `e2e/tools/kueue/multikueue-worker-rate.patch`) with every client at gpufed's rate: its
//!   own client through `clientConnection`, MultiKueue's worker clients through the patch, which
//!   Kueue has no setting for. No webhook configuration is installed, so the apiserver never
//!   calls Kueue; jobs are submitted with what Kueue's Job webhook would have defaulted
//!   (`suspend: true`, `managedBy: kueue.x-k8s.io/multikueue`);
//! * on the manager: a ResourceFlavor, a ClusterQueue with an `nvidia.com/gpu` quota (the
//!   workers' total) and the MultiKueue AdmissionCheck, a LocalQueue, a MultiKueueConfig listing
//!   the workers and one MultiKueueCluster per worker whose kubeconfig Secret holds a client
//!   certificate of that worker (group `system:masters`), pointing at a [`TcpProxy`] in front of
//!   the worker's apiserver so the run can cut the manager off from one worker;
//! * on each worker: the same ResourceFlavor, a ClusterQueue with the worker's own GPUs as quota,
//!   and the LocalQueue of the same name, as MultiKueue requires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

pub use super::kueue_setup::{KueueSetup, SHIPPED_CLIENT_RATE, WORKER_RATE_BINARY};
use super::observe::{JobKey, Recorder};
use super::{PeerConfig, SystemRun, phases};
use crate::joining::TcpProxy;
use crate::joining::pool::apply;
use crate::process::free_port;
use crate::{Cluster, ClusterSpec, Error, NodeSpec, Tools, wait_until};

/// Kueue's namespace (its configuration's default).
pub const KUEUE_NAMESPACE: &str = "kueue-system";
/// Namespace of the benchmark's jobs, on the manager and on every worker.
pub const JOBS_NAMESPACE: &str = "bench";
/// Name of the LocalQueue, ClusterQueue and ResourceFlavor on every cluster.
pub const QUEUE: &str = "bench";
/// The AdmissionCheck controller name of MultiKueue.
pub const MULTIKUEUE_CONTROLLER: &str = "kueue.x-k8s.io/multikueue";
/// `workerLostTimeout` when the configuration leaves it out: 15 minutes
/// (`DefaultMultiKueueWorkerLostTimeout`, `apis/config/v1beta2/defaults.go` of Kueue v0.17.0).
pub const DEFAULT_WORKER_LOST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// CRDs whose conversion webhook Kueue's certificate manager injects a CA bundle into
/// (`pkg/util/cert/cert.go`); it gives up on start-up if any of them has no webhook stanza.
const CONVERTED: [&str; 5] = [
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
];

/// A MultiKueue manager and its workers.
pub struct KueueFederation {
    /// The manager cluster (Kueue with MultiKueue).
    pub manager: Cluster,
    /// The worker clusters (Kueue, kube-scheduler, Job controller, kwok GPU nodes).
    pub workers: Vec<Cluster>,
    /// Per worker, the proxy the manager reaches it through.
    pub proxies: Vec<TcpProxy>,
}

/// Where `e2e/tools/build.sh` put Kueue's CRDs: `kueue-crds/` beside the real `kueue` binary.
pub fn crd_dir(tools: &Tools) -> Result<PathBuf, Error> {
    let bin = tools.bin("kueue")?;
    let real = std::fs::canonicalize(&bin)
        .map_err(|e| Error::Other(format!("resolving {}: {e}", bin.display())))?;
    let dir = real
        .parent()
        .map(|p| p.join("kueue-crds"))
        .ok_or_else(|| Error::Other(format!("{} has no parent", real.display())))?;
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::Other(format!(
            "{} not found: run `make tools-peers` (e2e/tools/build.sh --with-peers)",
            dir.display()
        )))
    }
}

/// Kueue's CRDs from `dir`, with the conversion stanza of Kueue's kustomize patches
/// (`config/components/crd/patches/webhook_in_*.yaml`) on the CRDs that have one upstream.
pub fn load_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Other(format!("reading {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut crds = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| Error::Other(format!("reading {}: {e}", f.display())))?;
        let mut doc: Value = serde_norway::from_str(&text)
            .map_err(|e| Error::Other(format!("parsing {}: {e}", f.display())))?;
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if CONVERTED.contains(&name.as_str()) {
            doc["spec"]["conversion"] = json!({
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"service": {"namespace": KUEUE_NAMESPACE, "name": "kueue-webhook-service", "path": "/convert"}},
                    "conversionReviewVersions": ["v1"],
                },
            });
        }
        crds.push(
            serde_json::from_value(doc)
                .map_err(|e| Error::Other(format!("{}: {e}", f.display())))?,
        );
    }
    if crds.is_empty() {
        return Err(Error::Other(format!("no CRDs in {}", dir.display())));
    }
    Ok(crds)
}

/// The Kueue configuration file for one cluster.
fn config(
    health_port: u16,
    webhook_port: u16,
    cert_dir: &Path,
    lost: Option<Duration>,
    setup: KueueSetup,
) -> Value {
    let (qps, burst) = setup.client_rate();
    let mut cfg = json!({
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": format!("127.0.0.1:{health_port}")},
        // "0" switches the metrics server off (controller-runtime).
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": cert_dir.display().to_string()},
        "leaderElection": {"leaderElect": false},
        // As in Kueue's shipped manifest (config/components/manager/controller_manager_config.yaml);
        // the client rate too, unless the setup matches it to gpufed's.
        "controller": {"groupKindConcurrency": {
            "Job.batch": 5, "Pod": 5, "Workload.kueue.x-k8s.io": 5, "LocalQueue.kueue.x-k8s.io": 1,
            "Cohort.kueue.x-k8s.io": 1, "ClusterQueue.kueue.x-k8s.io": 1, "ResourceFlavor.kueue.x-k8s.io": 1}},
        "clientConnection": {"qps": qps, "burst": burst},
        "integrations": {"frameworks": ["batch/job"]},
        // The visibility server would bind the same fixed port (8082) for each of the four
        // instances; nothing here reads it.
        "featureGates": {"VisibilityOnDemand": false},
    });
    if let Some(t) = lost {
        cfg["multiKueue"] = json!({"workerLostTimeout": format!("{}s", t.as_secs())});
    }
    cfg
}

/// Installs the CRDs, writes the serving certificate and configuration, and starts `kueue` on
/// `cluster`.
async fn start_kueue(
    tools: &Tools,
    cluster: &mut Cluster,
    crds: &[CustomResourceDefinition],
    lost: Option<Duration>,
    setup: KueueSetup,
) -> Result<(), Error> {
    cluster.install_crds(crds).await?;
    cluster.create_namespace(KUEUE_NAMESPACE).await?;
    cluster.create_namespace(JOBS_NAMESPACE).await?;
    // Kueue's certificate manager fills this Secret (in a cluster its Deployment's manifest creates
    // it empty) and expects the kubelet to mount it as the webhook's certificate directory; out of
    // cluster, the directory gets a self-signed certificate of its own.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "kueue-webhook-server-cert", "namespace": KUEUE_NAMESPACE}
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    match Api::<k8s_openapi::api::core::v1::Secret>::namespaced(cluster.client(), KUEUE_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::kube("creating Kueue's certificate Secret")(e)),
    }
    let dir = cluster.dir()?.join("kueue");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs)
        .map_err(|e| Error::Other(format!("creating {}: {e}", certs.display())))?;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(Error::Cert)?;
    for (file, text) in [
        ("tls.crt", cert.cert.pem()),
        ("tls.key", cert.signing_key.serialize_pem()),
    ] {
        std::fs::write(certs.join(file), text)
            .map_err(|e| Error::Other(format!("writing {file}: {e}")))?;
    }
    let cfg_path = dir.join("config.yaml");
    let cfg = config(free_port()?, free_port()?, &certs, lost, setup);
    crate::pki::write_yaml(&cfg_path, &cfg)?;
    let mut env = setup.env();
    env.push((
        "KUBECONFIG".to_string(),
        cluster.kubeconfig().display().to_string(),
    ));
    cluster.spawn(
        "kueue",
        &tools.bin(setup.binary())?,
        &[
            format!("--config={}", cfg_path.display()),
            "--zap-log-level=2".into(),
        ],
        &env,
    )?;
    Ok(())
}

fn kueue_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta2", kind),
        plural,
    )
}

/// The ResourceFlavor, ClusterQueue (`gpus` of `nvidia.com/gpu`, optionally gated by the
/// MultiKueue check) and LocalQueue of one cluster.
async fn queues(cluster: &Cluster, gpus: u32, multikueue: bool) -> Result<(), Error> {
    let c = cluster.client();
    apply(
        &c,
        "resourceflavors",
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": QUEUE}}),
    )
    .await?;
    let mut cq = json!({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": QUEUE},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{"coveredResources": ["nvidia.com/gpu"],
                "flavors": [{"name": QUEUE, "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus.to_string()}]}]}],
        }
    });
    if multikueue {
        cq["spec"]["admissionChecksStrategy"] =
            json!({"admissionChecks": [{"name": "multikueue"}]});
    }
    apply(&c, "clusterqueues", &cq).await?;
    apply(
        &c,
        "localqueues",
        &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": QUEUE, "namespace": JOBS_NAMESPACE}, "spec": {"clusterQueue": QUEUE}}),
    )
    .await
}

/// Whether `obj` has the condition `type_` with status True.
fn condition_true(obj: &DynamicObject, type_: &str) -> bool {
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
}

/// Waits until the `kind` object `name` on `cluster` has condition `type_` True; on time-out, says
/// what its status was.
async fn wait_condition(
    cluster: &Cluster,
    (kind, plural): (&str, &str),
    name: &str,
    type_: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::all_with(cluster.client(), &kueue_resource(kind, plural));
    let what = format!("{kind} {name} {type_} on {}", cluster.name());
    let r = wait_until(Duration::from_secs(90), &what, || {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()
                .filter(|o| condition_true(o, type_))
                .map(|_| ())
        }
    })
    .await;
    if r.is_err() {
        let status = api
            .get(name)
            .await
            .map(|o| o.data["status"].to_string())
            .unwrap_or_else(|e| e.to_string());
        return Err(Error::Other(format!(
            "{what}: not reached in 90 s; status {status}"
        )));
    }
    Ok(())
}

/// Rewrites the `server` of a kubeconfig to `addr` (same CA and client certificate).
fn via(path: &Path, addr: std::net::SocketAddr) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Other(format!("reading {}: {e}", path.display())))?;
    let mut doc: Value = serde_norway::from_str(&text).map_err(|e| Error::Other(e.to_string()))?;
    for c in doc["clusters"].as_array_mut().into_iter().flatten() {
        c["cluster"]["server"] = json!(format!("https://{addr}"));
    }
    serde_norway::to_string(&doc).map_err(|e| Error::Other(e.to_string()))
}

impl KueueFederation {
    /// Starts a manager and `workers` workers of `nodes_per_worker` 8-GPU kwok nodes each, Kueue on
    /// all of them, and MultiKueue between them; returns once every MultiKueueCluster is Active and
    /// every ClusterQueue Active.
    pub async fn start(
        tools: &Tools,
        workers: usize,
        nodes_per_worker: usize,
        worker_lost_timeout: Option<Duration>,
        setup: KueueSetup,
    ) -> Result<KueueFederation, Error> {
        let crds = load_crds(&crd_dir(tools)?)?;
        let manager_spec = ClusterSpec::api_only("kueue-manager").with_controller_manager();
        let worker_specs: Vec<ClusterSpec> = (0..workers)
            .map(|w| {
                let name = format!("kueue-w{w}");
                (0..nodes_per_worker).fold(ClusterSpec::new(&name), |s, n| {
                    s.node(NodeSpec::new(
                        &format!("{name}-n{n}"),
                        "H100-SXM-80GB",
                        8,
                        "eu-west",
                    ))
                })
            })
            .collect();
        let (mut manager, mut worker_clusters) = futures::try_join!(
            Cluster::start(tools, &manager_spec),
            try_join_all(worker_specs.iter().map(|s| Cluster::start(tools, s)))
        )?;
        start_kueue(tools, &mut manager, &crds, worker_lost_timeout, setup).await?;
        for w in &mut worker_clusters {
            start_kueue(tools, w, &crds, None, setup).await?;
        }
        let per_worker = u32::try_from(nodes_per_worker * 8).unwrap_or(u32::MAX);
        for w in &worker_clusters {
            queues(w, per_worker, false).await?;
        }

        let m = manager.client();
        let mut proxies = vec![];
        let mut names = vec![];
        for w in &worker_clusters {
            let target = w
                .server()
                .trim_start_matches("https://")
                .parse()
                .map_err(|e| Error::Other(format!("{} address: {e}", w.name())))?;
            let proxy = TcpProxy::start(target).await?;
            let kubeconfig = via(
                &w.user_kubeconfig("kueue-multikueue", &["system:masters"])?,
                proxy.addr(),
            )?;
            let secret = format!("{}-kubeconfig", w.name());
            apply(
                &m,
                "secrets",
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": secret, "namespace": KUEUE_NAMESPACE},
                        "stringData": {"kubeconfig": kubeconfig}}),
            )
            .await?;
            apply(
                &m,
                "multikueueclusters",
                &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "MultiKueueCluster",
                        "metadata": {"name": w.name()},
                        "spec": {"clusterSource": {"kubeConfig": {"locationType": "Secret", "location": secret}}}}),
            )
            .await?;
            names.push(w.name().to_string());
            proxies.push(proxy);
        }
        apply(
            &m,
            "multikueueconfigs",
            &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "MultiKueueConfig",
                    "metadata": {"name": QUEUE}, "spec": {"clusters": names}}),
        )
        .await?;
        apply(
            &m,
            "admissionchecks",
            &json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "AdmissionCheck",
                    "metadata": {"name": "multikueue"},
                    "spec": {"controllerName": MULTIKUEUE_CONTROLLER,
                             "parameters": {"apiGroup": "kueue.x-k8s.io", "kind": "MultiKueueConfig", "name": QUEUE}}}),
        )
        .await?;
        let total = per_worker.saturating_mul(u32::try_from(workers).unwrap_or(u32::MAX));
        queues(&manager, total, true).await?;

        for n in &names {
            wait_condition(
                &manager,
                ("MultiKueueCluster", "multikueueclusters"),
                n,
                "Active",
            )
            .await?;
        }
        wait_condition(
            &manager,
            ("AdmissionCheck", "admissionchecks"),
            "multikueue",
            "Active",
        )
        .await?;
        wait_condition(&manager, ("ClusterQueue", "clusterqueues"), QUEUE, "Active").await?;
        for w in &worker_clusters {
            wait_condition(w, ("ClusterQueue", "clusterqueues"), QUEUE, "Active").await?;
        }
        manager.check_alive()?;
        for w in &mut worker_clusters {
            w.check_alive()?;
        }
        Ok(KueueFederation {
            manager,
            workers: worker_clusters,
            proxies,
        })
    }

    /// The worker named `name` and its proxy.
    pub fn worker(&self, name: &str) -> Option<(&Cluster, &TcpProxy)> {
        self.workers
            .iter()
            .zip(&self.proxies)
            .find(|(w, _)| w.name() == name)
    }
}

/// A batch/v1 Job for the LocalQueue, as Kueue's Job webhook would have defaulted it for a
/// MultiKueue ClusterQueue: suspended and managed by MultiKueue. One pod of one GPU that kwok runs
/// for `sim_duration`.
pub fn job(name: &str, sim_duration: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": JOBS_NAMESPACE, "labels": {"kueue.x-k8s.io/queue-name": QUEUE}},
        "spec": {
            "suspend": true, "managedBy": MULTIKUEUE_CONTROLLER,
            "parallelism": 1, "completions": 1, "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox:1.36",
                    "env": [{"name": "GPUFED_SIM_DURATION", "value": sim_duration}],
                    "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}],
            }},
        },
    })
}

/// Runs both phases on a fresh MultiKueue set-up of `setup`.
pub async fn run(tools: &Tools, cfg: &PeerConfig, setup: KueueSetup) -> SystemRun {
    let origin = std::time::Instant::now();
    let fed = match super::set_up("Kueue", || {
        KueueFederation::start(
            tools,
            cfg.workers,
            cfg.nodes_per_worker(),
            cfg.worker_lost_timeout,
            setup,
        )
    })
    .await
    {
        Ok(f) => f,
        Err(e) => return SystemRun::failed_setup(origin.elapsed().as_secs_f64(), &e),
    };
    let setup_secs = origin.elapsed().as_secs_f64();
    let workers: Vec<&crate::Cluster> = fed.workers.iter().collect();
    let rec = Recorder::start(origin, &workers, JOBS_NAMESPACE, JobKey::JobName, true);
    let ar = ApiResource::erase::<k8s_openapi::api::batch::v1::Job>(&());
    let manager = fed.manager.client();

    let names: Vec<String> = (0..cfg.jobs).map(|i| format!("peer-{i:05}")).collect();
    let docs = names.iter().map(|n| (n.clone(), job(n, "3s"))).collect();
    let dispatch = async {
        let (created, ingest) = phases::submit(&manager, &ar, docs, cfg.concurrency, &rec).await?;
        let snap = phases::wait_running(&rec, &names, super::DISPATCH_TIMEOUT).await?;
        Ok::<_, Error>(phases::dispatch_figures(&snap, &names, &created, ingest))
    }
    .await;

    let lost_names: Vec<String> = (0..cfg.lost_jobs).map(|i| format!("lost-{i:05}")).collect();
    let docs = lost_names
        .iter()
        .map(|n| (n.clone(), job(n, "30m")))
        .collect();
    let lost = async {
        phases::submit(&manager, &ar, docs, cfg.concurrency, &rec).await?;
        phases::wait_running(&rec, &lost_names, super::DISPATCH_TIMEOUT).await?;
        let setup = phases::LostSetup {
            names: &lost_names,
            workers: &workers,
            namespace: JOBS_NAMESPACE,
            key: JobKey::JobName,
            cut: |victim: &str| {
                let (_, proxy) = fed
                    .worker(victim)
                    .ok_or_else(|| Error::Other(format!("no worker {victim}")))?;
                proxy.cut();
                Ok(())
            },
            hold: cfg.hold,
            timeout: super::lost_timeout(cfg.effective_worker_lost_timeout()),
        };
        phases::lost_worker(&rec, setup).await
    }
    .await;
    let watch_errors = rec.snapshot().watch_errors;
    SystemRun {
        setup_secs,
        dispatch_error: dispatch.as_ref().err().map(ToString::to_string),
        dispatch: dispatch.ok(),
        lost_error: lost.as_ref().err().map(ToString::to_string),
        lost: lost.ok(),
        open: None,
        open_error: None,
        watch_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_lost_timeout_is_set_only_when_asked() {
        let dir = Path::new("/tmp/c");
        let with = config(
            1,
            2,
            dir,
            Some(Duration::from_secs(20)),
            KueueSetup::Shipped,
        );
        assert_eq!(with["multiKueue"]["workerLostTimeout"], "20s");
        let without = config(1, 2, dir, None, KueueSetup::Shipped);
        assert!(without.get("multiKueue").is_none());
        assert_eq!(without["leaderElection"]["leaderElect"], false);
        assert_eq!(without["integrations"]["frameworks"], json!(["batch/job"]));
    }

    #[test]
    fn the_client_rate_of_the_setup_is_kueues_client_connection() {
        let dir = Path::new("/tmp/c");
        let shipped = config(1, 2, dir, None, KueueSetup::Shipped);
        assert_eq!(
            shipped["clientConnection"],
            json!({"qps": SHIPPED_CLIENT_RATE.0, "burst": SHIPPED_CLIENT_RATE.1})
        );
        let matched = KueueSetup::Matched {
            qps: 500.0,
            burst: 1000,
        };
        let cfg = config(1, 2, dir, None, matched);
        assert_eq!(
            cfg["clientConnection"],
            json!({"qps": 500.0, "burst": 1000})
        );
    }

    #[test]
    fn jobs_carry_what_kueues_webhook_would_have_defaulted() {
        let j = job("peer-00001", "3s");
        assert_eq!(j["spec"]["suspend"], true);
        assert_eq!(j["spec"]["managedBy"], MULTIKUEUE_CONTROLLER);
        assert_eq!(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"], QUEUE);
    }
}
