//! One real Kubernetes cluster on 127.0.0.1: etcd, kube-apiserver (RBAC, client certificates),
//! kube-controller-manager, kube-scheduler and kwok (fake nodes and pods), each a process of ours
//! on free ports, with an admin kubeconfig. Dropping the [`Cluster`] stops everything and removes
//! its directory; if the thread is panicking (a failed test), the components' logs are printed first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;
use crate::nodes::NodeSpec;
use crate::pki::Pki;
use crate::process::{Process, free_port};
use crate::realnode::{NodeContext, RealNode};
use crate::tools::Tools;
use crate::wait::wait_until;

/// What to start for a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Name, used for the kubeconfig context and in logs.
    pub name: String,
    /// kwok fake nodes to create once the cluster is up.
    pub nodes: Vec<NodeSpec>,
    /// Start kube-controller-manager (Job, namespace, garbage-collector, service-account controllers…).
    pub controller_manager: bool,
    /// Start kube-scheduler (binds pods to nodes).
    pub scheduler: bool,
    /// Start kwok (runs fake nodes and their pods).
    pub kwok: bool,
    /// A real node (containerd, runc, kubelet) to start once the cluster is up; see
    /// [`RealNode`](crate::realnode::RealNode).
    pub real_node: Option<NodeSpec>,
    /// Run the apiserver with API Priority and Fairness and its default in-flight limits, as
    /// production apiservers do (test clusters otherwise run without either, for speed).
    pub api_priority_and_fairness: bool,
    /// Record every write request (who, what, when it was received) in an audit log, for tests
    /// that must show that some client wrote nothing ([`Cluster::audited_writes`]).
    pub audit_writes: bool,
}

impl ClusterSpec {
    /// A full cluster (all components) named `name` with no nodes.
    pub fn new(name: &str) -> Self {
        ClusterSpec {
            name: name.to_string(),
            nodes: vec![],
            controller_manager: true,
            scheduler: true,
            kwok: true,
            real_node: None,
            api_priority_and_fairness: false,
            audit_writes: false,
        }
    }

    /// Only etcd and the apiserver (enough for API and RBAC tests, and for a hub).
    pub fn api_only(name: &str) -> Self {
        ClusterSpec {
            name: name.to_string(),
            nodes: vec![],
            controller_manager: false,
            scheduler: false,
            kwok: false,
            real_node: None,
            api_priority_and_fairness: false,
            audit_writes: false,
        }
    }

    /// Adds a fake node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds a real node (pods really run there); kwok still runs the fake nodes beside it.
    pub fn real_node(mut self, node: NodeSpec) -> Self {
        self.real_node = Some(node);
        self
    }

    /// Turns API Priority and Fairness on (see [`ClusterSpec::api_priority_and_fairness`]).
    pub fn with_api_priority_and_fairness(mut self) -> Self {
        self.api_priority_and_fairness = true;
        self
    }

    /// Turns the write audit on (see [`ClusterSpec::audit_writes`]).
    pub fn with_write_audit(mut self) -> Self {
        self.audit_writes = true;
        self
    }

    /// Also starts kube-controller-manager (e.g. for namespace deletion on a hub).
    pub fn with_controller_manager(mut self) -> Self {
        self.controller_manager = true;
        self
    }
}

/// A running cluster.
pub struct Cluster {
    name: String,
    dir: Option<tempfile::TempDir>,
    server: String,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    client: Client,
    processes: Vec<Process>,
    real_node: Option<RealNode>,
    started_in: Duration,
}

impl Cluster {
    /// Starts every component of `spec`, waits until the apiserver is ready and (if kwok runs) the
    /// nodes are Ready, and returns the cluster.
    pub async fn start(tools: &Tools, spec: &ClusterSpec) -> Result<Cluster, Error> {
        let t0 = Instant::now();
        let prefix = format!("gpufed-e2e-{}-", spec.name);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        let dir = match crate::process::work_dir() {
            Some(base) => {
                std::fs::create_dir_all(base)
                    .map_err(|e| Error::io(format!("creating {}", base.display()), e))?;
                builder.tempdir_in(base)
            }
            None => builder.tempdir(),
        }
        .map_err(|e| Error::io("creating the cluster directory".into(), e))?;
        let root = dir.path().to_path_buf();
        let pki = Pki::create(&root)?;
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let mut processes = vec![];

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        processes.push(Process::spawn(
            "etcd",
            &tools.bin("etcd")?,
            &args(&[
                "--name=default",
                &format!("--data-dir={}", root.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ]),
            &[],
            &root.join("etcd.log"),
        )?);
        // etcd goes last; once it is killed the directory goes too — also when the harness kills a
        // stuck test's components, whose Cluster is never dropped.
        let cluster_dir = root.clone();
        processes[0].on_kill(std::sync::Arc::new(move || {
            if std::env::var_os("GPUFED_E2E_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&cluster_dir);
            }
        }));

        processes.push(Process::spawn(
            "kube-apiserver",
            &tools.bin("kube-apiserver")?,
            &args(&[
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--cert-dir={}", root.display()),
                &format!("--tls-cert-file={}", pki.path("apiserver.crt").display()),
                &format!(
                    "--tls-private-key-file={}",
                    pki.path("apiserver.key").display()
                ),
                &format!("--client-ca-file={}", pki.path("client-ca.crt").display()),
                &format!(
                    "--service-account-key-file={}",
                    pki.path("sa.pub").display()
                ),
                &format!(
                    "--service-account-signing-key-file={}",
                    pki.path("sa.key").display()
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                // How it reaches a real node's kubelet (logs, exec): by its address, with a client
                // certificate the kubelet checks against the client CA.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                &format!(
                    "--kubelet-client-certificate={}",
                    pki.path("apiserver-kubelet-client.crt").display()
                ),
                &format!(
                    "--kubelet-client-key={}",
                    pki.path("apiserver-kubelet-client.key").display()
                ),
                "--v=1",
            ])
            .into_iter()
            .chain(if spec.api_priority_and_fairness {
                vec![]
            } else {
                args(&[
                    "--enable-priority-and-fairness=false",
                    "--max-requests-inflight=0",
                    "--max-mutating-requests-inflight=0",
                ])
            })
            .chain(if spec.audit_writes {
                audit_args(&root)?
            } else {
                vec![]
            })
            .collect::<Vec<_>>(),
            &[],
            &root.join("kube-apiserver.log"),
        )?);

        let admin_kubeconfig = root.join("admin.kubeconfig");
        pki.write_user_kubeconfig(
            &admin_kubeconfig,
            &spec.name,
            &server,
            "gpufed-e2e-admin",
            &["system:masters"],
        )?;
        let client = client_from_kubeconfig(&admin_kubeconfig).await?;

        let mut cluster = Cluster {
            name: spec.name.clone(),
            dir: Some(dir),
            server,
            pki,
            admin_kubeconfig,
            client,
            processes,
            real_node: None,
            started_in: Duration::ZERO,
        };
        cluster.wait_ready().await?;

        if spec.controller_manager {
            let port = free_port()?.to_string();
            let kcfg = cluster.admin_kubeconfig.display().to_string();
            cluster.spawn(
                "kube-controller-manager",
                &tools.bin("kube-controller-manager")?,
                &args(&[
                    &format!("--kubeconfig={kcfg}"),
                    &format!("--authentication-kubeconfig={kcfg}"),
                    &format!("--authorization-kubeconfig={kcfg}"),
                    "--bind-address=127.0.0.1",
                    &format!("--secure-port={port}"),
                    "--leader-elect=false",
                    "--use-service-account-credentials=false",
                    &format!("--service-account-private-key-file={}", cluster.pki.path("sa.key").display()),
                    &format!("--root-ca-file={}", cluster.pki.path("serving-ca.crt").display()),
                    // What the product and its tests rely on (node-lifecycle lifts the not-ready taint of new
                    // nodes); cloud, volume and certificate
                    // controllers are left out (no cloud, no volumes, client certs from the harness).
                    "--controllers=job-controller,node-lifecycle-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,pod-garbage-collector-controller,deployment-controller,replicaset-controller,daemonset-controller,ttl-after-finished-controller,clusterrole-aggregation-controller",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--concurrent-job-syncs=10",
                    "--v=1",
                ]),
                &[],
            )?;
        }
        if spec.scheduler {
            let port = free_port()?.to_string();
            let kcfg = cluster.admin_kubeconfig.display().to_string();
            cluster.spawn(
                "kube-scheduler",
                &tools.bin("kube-scheduler")?,
                &args(&[
                    &format!("--kubeconfig={kcfg}"),
                    &format!("--authentication-kubeconfig={kcfg}"),
                    &format!("--authorization-kubeconfig={kcfg}"),
                    "--bind-address=127.0.0.1",
                    &format!("--secure-port={port}"),
                    "--leader-elect=false",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--v=1",
                ]),
                &[],
            )?;
        }
        if spec.kwok {
            let port = free_port()?;
            let kcfg = cluster.admin_kubeconfig.display().to_string();
            cluster.spawn(
                "kwok",
                &tools.bin("kwok")?,
                &args(&[
                    &format!("--kubeconfig={kcfg}"),
                    &format!("--config={}", tools.kwok_stages().display()),
                    // Only the fake nodes: a real node's kubelet runs its own pods.
                    "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                    "--cidr=10.0.0.1/16",
                    "--node-ip=10.0.0.1",
                    "--node-lease-duration-seconds=40",
                    &format!("--server-address=127.0.0.1:{port}"),
                ]),
                &[],
            )?;
        }
        if !spec.nodes.is_empty() {
            cluster.create_nodes(&spec.nodes).await?;
            if spec.kwok {
                cluster.wait_nodes_ready(spec.nodes.len()).await?;
            }
        }
        if let Some(node) = &spec.real_node {
            let kubeconfig = root.join("kubelet.kubeconfig");
            cluster.pki.write_user_kubeconfig(
                &kubeconfig,
                &spec.name,
                &cluster.server,
                &format!("system:node:{}", node.name),
                &["system:nodes", "system:masters"],
            )?;
            let started = RealNode::start(
                tools,
                NodeContext {
                    cluster_dir: &root,
                    kubeconfig: &kubeconfig,
                    client_ca: &cluster.pki.path("client-ca.crt"),
                    client: cluster.client(),
                },
                node,
            )
            .await?;
            cluster.real_node = Some(started);
        }
        cluster.check_alive()?;
        cluster.started_in = t0.elapsed();
        tracing::info!(cluster = %cluster.name, secs = cluster.started_in.as_secs_f64(), "cluster started");
        Ok(cluster)
    }

    /// Starts another process that lives and dies with this cluster (logs in the cluster directory).
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(), Error> {
        let log = self.dir()?.join(format!("{name}.log"));
        let p = Process::spawn(name, program, args, env, &log)?;
        self.processes.push(p);
        Ok(())
    }

    /// The process named `name`, if running under this cluster.
    pub fn process_mut(&mut self, name: &str) -> Option<&mut Process> {
        self.processes.iter_mut().find(|p| p.name() == name)
    }

    /// Restarts the process named `name` with the command it was started with (after a kill).
    pub fn respawn(&mut self, name: &str) -> Result<(), Error> {
        let cluster = self.name.clone();
        self.process_mut(name)
            .ok_or_else(|| Error::Other(format!("no process {name} in {cluster}")))?
            .respawn()
    }

    /// Starts `name`, a second instance of the process `from`, with the arguments that start with
    /// one of `replace`'s prefixes replaced (e.g. a standby hub: another `--identity=`, another
    /// `--metrics-addr=`).
    pub fn spawn_like(
        &mut self,
        from: &str,
        name: &str,
        replace: &[(&str, String)],
    ) -> Result<(), Error> {
        let (program, args) = self
            .processes
            .iter()
            .find(|p| p.name() == from)
            .map(|p| {
                let (program, args) = p.command();
                (program.to_path_buf(), args.to_vec())
            })
            .ok_or_else(|| Error::Other(format!("no process {from} in {}", self.name)))?;
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                replace
                    .iter()
                    .find(|(prefix, _)| a.starts_with(prefix))
                    .map_or(a.clone(), |(prefix, v)| format!("{prefix}{v}"))
            })
            .collect();
        let env = self
            .processes
            .iter()
            .find(|p| p.name() == from)
            .map(|p| p.env().to_vec())
            .unwrap_or_default();
        self.spawn(name, &program, &args, &env)
    }

    /// Stops and forgets the process named `name` (SIGTERM, then SIGKILL after `grace`).
    pub fn stop_process(&mut self, name: &str, grace: Duration) {
        if let Some(i) = self.processes.iter().position(|p| p.name() == name) {
            let mut p = self.processes.remove(i);
            p.stop(grace);
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The apiserver URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The cluster's working directory (logs, certificates, kubeconfigs).
    pub fn dir(&self) -> Result<&Path, Error> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .ok_or_else(|| Error::Other("cluster directory already removed".into()))
    }

    /// The serving CA (PEM) clients must trust.
    pub fn ca_pem(&self) -> String {
        self.pki.serving_ca_pem()
    }

    /// How long [`Cluster::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Writes a kubeconfig for `user` in `groups` (client certificate) and returns its path.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let path = self.dir()?.join(format!("user-{user}.kubeconfig"));
        self.pki
            .write_user_kubeconfig(&path, &self.name, &self.server, user, groups)?;
        Ok(path)
    }

    /// Every write request the apiserver received, in order, from its audit log (the cluster must
    /// have been started [`with_write_audit`](ClusterSpec::with_write_audit)).
    pub fn audited_writes(&self) -> Result<Vec<AuditedWrite>, Error> {
        let path = self.dir()?.join(AUDIT_LOG);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Ok(text.lines().filter_map(AuditedWrite::parse).collect())
    }

    /// A client acting as `user` in `groups` (for RBAC tests).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let path = self.user_kubeconfig(user, groups)?;
        client_from_kubeconfig(&path).await
    }

    /// The cluster's real node, if it has one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.real_node.as_ref()
    }

    /// Fails with the log tail of the first component that has exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        if let Some(node) = self.real_node.as_mut()
            && let Some(status) = node.exited()
        {
            return Err(Error::Exited {
                what: format!(
                    "real node {} of cluster {} exited with {status}",
                    node.name(),
                    self.name
                ),
                log_tail: node.log_tails(30),
            });
        }
        for p in &mut self.processes {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    what: format!("{} of cluster {} exited with {status}", p.name(), self.name),
                    log_tail: p.log_tail(30),
                });
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.client.clone();
        let result = wait_until(Duration::from_secs(60), "kube-apiserver /readyz", || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                client
                    .request_text(req)
                    .await
                    .ok()
                    .filter(|t| t.trim() == "ok")
            }
        })
        .await;
        if result.is_err() {
            self.check_alive()?;
        }
        result.map(|_| ())
    }

    /// Creates kwok fake nodes (with status: GPU capacity and labels).
    pub async fn create_nodes(&self, nodes: &[NodeSpec]) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client());
        for spec in nodes {
            let node = spec.to_node();
            api.create(&PostParams::default(), &node)
                .await
                .map_err(Error::kube("creating node"))?;
            // Node status is dropped on create; set capacity through the status subresource.
            let status = serde_json::json!({"status": node.status});
            api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(Error::kube("setting node capacity"))?;
        }
        Ok(())
    }

    async fn wait_nodes_ready(&self, count: usize) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client());
        wait_until(Duration::from_secs(60), "kwok nodes Ready", || {
            let api = api.clone();
            async move {
                let nodes = api.list(&Default::default()).await.ok()?;
                let ready = nodes
                    .items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                (ready >= count).then_some(())
            }
        })
        .await
    }

    /// Installs CRDs (server-side apply) and waits until each is Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let pp = PatchParams::apply("gpufed-e2e").force();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &pp, &Patch::Apply(crd))
                .await
                .map_err(Error::kube("installing CRD"))?;
        }
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            wait_until(
                Duration::from_secs(30),
                &format!("CRD {name} Established"),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Creates a namespace (no error if it exists).
    pub async fn create_namespace(&self, name: &str) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .map_err(|e| Error::Other(e.to_string()))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(Error::kube("creating namespace")(e)),
        }
    }

    /// Prints the last lines of every component's log to stderr.
    pub fn dump_logs(&self, lines: usize) {
        if let Some(node) = &self.real_node {
            eprintln!(
                "===== {} / real node =====\n{}",
                self.name,
                node.log_tails(lines)
            );
        }
        for p in &self.processes {
            eprintln!(
                "===== {} / {} ({}) =====\n{}",
                self.name,
                p.name(),
                p.log_path().display(),
                p.log_tail(lines)
            );
        }
    }

    /// `(component, process id)` of every running component (the id is also its process group).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter_map(|p| Some((p.name().to_string(), p.pid()?)))
            .collect()
    }

    /// The process id of running component `component`.
    pub fn pid_of(&self, component: &str) -> Result<u32, Error> {
        self.pids()
            .into_iter()
            .find_map(|(name, pid)| (name == component).then_some(pid))
            .ok_or_else(|| Error::Other(format!("{} runs no {component}", self.name)))
    }

    /// Stops everything (kwok and controllers first, etcd last) and removes the directory; in
    /// detached mode leaves both for `gpufed-demo down`.
    pub fn shutdown(&mut self) {
        if crate::process::detached() {
            self.processes.clear();
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
            return;
        }
        if std::thread::panicking() {
            self.dump_logs(40);
        }
        if let Some(mut node) = self.real_node.take() {
            node.stop();
        }
        while let Some(mut p) = self.processes.pop() {
            p.kill();
        }
        // Dropping the TempDir removes the directory, unless the user asked to keep it.
        if let Some(dir) = self.dir.take()
            && std::env::var_os("GPUFED_E2E_KEEP").is_some()
        {
            let kept = dir.keep();
            eprintln!(
                "kept {} for {} (GPUFED_E2E_KEEP)",
                kept.display(),
                self.name
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Other(format!("reading {}: {e}", path.display())))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Other(format!("loading {}: {e}", path.display())))?;
    config.connect_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).map_err(Error::kube("building client"))
}

/// The audit log of a cluster started [`with_write_audit`](ClusterSpec::with_write_audit).
const AUDIT_LOG: &str = "audit.log";

/// Audit policy: metadata of every write, nothing else; one event per request, when the response
/// is complete (so it carries the response code).
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted", "Panic"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;

fn audit_args(root: &Path) -> Result<Vec<String>, Error> {
    let policy = root.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY)
        .map_err(|e| Error::io(format!("writing {}", policy.display()), e))?;
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", root.join(AUDIT_LOG).display()),
        "--audit-log-format=json".into(),
        // Written before the response is sent: a write the client saw answered is in the log.
        "--audit-log-mode=blocking".into(),
    ])
}

/// One write request as the apiserver's audit log has it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditedWrite {
    /// Who sent it.
    pub user: String,
    /// `create`, `update`, `patch`, `delete`…
    pub verb: String,
    /// The request path.
    pub uri: String,
    /// When the apiserver received it.
    pub received: k8s_openapi::jiff::Timestamp,
    /// The response code.
    pub code: Option<i64>,
}

impl AuditedWrite {
    fn parse(line: &str) -> Option<AuditedWrite> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(AuditedWrite {
            user: v["user"]["username"].as_str()?.to_string(),
            verb: v["verb"].as_str()?.to_string(),
            uri: v["requestURI"].as_str()?.to_string(),
            received: v["requestReceivedTimestamp"].as_str()?.parse().ok()?,
            code: v["responseStatus"]["code"].as_i64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_line_gives_who_wrote_what_and_when_it_was_received() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/apis/gpufed.io/v1alpha1/memberclusters/alpha/status?fieldManager=gpufed-hub\u0026force=true","verb":"patch","user":{"username":"hub-a","groups":["system:masters","system:authenticated"]},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-04T09:50:01.123456Z","stageTimestamp":"2026-12-04T09:50:01.125000Z"}"#;
        let w = AuditedWrite::parse(line).unwrap();
        assert_eq!((w.user.as_str(), w.verb.as_str()), ("hub-a", "patch"));
        assert!(
            w.uri
                .starts_with("/apis/gpufed.io/v1alpha1/memberclusters/alpha/status")
        );
        assert_eq!(w.code, Some(200));
        assert_eq!(
            w.received,
            "2026-12-04T09:50:01.123456Z"
                .parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
        );
        assert!(AuditedWrite::parse("not json").is_none());
    }
}
