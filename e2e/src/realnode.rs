//! A real node for a harness cluster: containerd, runc and a kubelet built from the pinned
//! Kubernetes modules, so pods really run (kwok nodes only pretend).
//!
//! Everything of one node lives under the cluster's directory (containerd root, state and socket,
//! CNI configuration and IPAM state, kubelet root, certificates and pod logs) and runs inside a
//! PID and mount namespace of its own (`unshare --pid --mount`), started as one process group:
//!
//! * killing that group — on drop, on a test's hard deadline, or when the test process dies
//!   (`PR_SET_PDEATHSIG`) — kills the namespace's first process, and the kernel then kills every
//!   process in it: kubelet, containerd, the runc shims and every container;
//! * every mount made for the node (container root filesystems, `/dev/shm` of sandboxes, pod
//!   network namespaces, the private `/run`, `/var/log` and `/var/lib` it gets so that nothing lands
//!   in the host's) exists only in that mount namespace and goes with it, and the pods' veths go
//!   with their network namespaces.
//!
//! What is left on the host is removed by [`RealNode`]'s cleanup, which also runs when the harness
//! kills a stuck test's components: the node's bridge (an interface of its own, unique name, in a
//! private /24 of 10.244.0.0/16) and the kubelet's cgroup tree (its own cgroup root). A harness
//! process killed outright leaves those two; the next real node started on the machine removes
//! what belonged to processes that are gone ([`sweep`]).
//!
//! The node registers with its cluster's apiserver as `system:masters` (a harness cluster uses
//! RBAC only, no Node authorizer), serves on its bridge address (the apiserver reaches it there for
//! `kubectl logs`, authenticating with the cluster's client CA), and advertises `nvidia.com/gpu` as
//! an extended resource with the GPU labels a kwok node of the same [`NodeSpec`] gets, so the
//! scheduler and the agent treat it exactly like one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gpufed_crds::naming::{GPU_RESOURCE, LABEL_REGION};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::image::{self, Image};
use crate::nodes::{LABEL_SIM_PROFILE, NodeSpec};
use crate::process::{Process, free_port};
use crate::{Error, Tools, wait_until};

/// Where the CNI plugins of Debian's containernetworking-plugins live.
const CNI_BIN: &str = "/usr/lib/cni";
/// Prefix of every bridge a real node creates (then the owner's pid and a counter, in hex).
const BRIDGE_PREFIX: &str = "gfn";
/// Prefix of the kubelet cgroup roots (then `<pid>-<n>`).
const CGROUP_PREFIX: &str = "gpufed-e2e-";
/// The pod networks are /24s of 10.244.0.0/16.
const SUBNET_BASE: [u8; 2] = [10, 244];

mod config;
mod host;

use config::{cni_config, containerd_config, init_script, kubelet_config};
pub use host::sweep;
use host::{HostLeftovers, create_bridge, create_cgroups};

static NODES_STARTED: AtomicU32 = AtomicU32::new(0);

/// A running real node.
pub struct RealNode {
    name: String,
    dir: PathBuf,
    socket: PathBuf,
    address: String,
    subnet: String,
    leftovers: HostLeftovers,
    process: Process,
}

/// What the harness cluster gives a real node.
pub struct NodeContext<'a> {
    /// The cluster's directory (the node's goes under it).
    pub cluster_dir: &'a Path,
    /// Kubeconfig the kubelet registers with.
    pub kubeconfig: &'a Path,
    /// The cluster's client CA (the apiserver's client certificate for `kubectl logs` is from it).
    pub client_ca: &'a Path,
    /// An admin client of the cluster.
    pub client: Client,
}

impl RealNode {
    /// Starts containerd and a kubelet for `spec`, imports the harness images, and waits until the
    /// node is Ready with its GPUs advertised.
    pub async fn start(
        tools: &Tools,
        ctx: NodeContext<'_>,
        spec: &NodeSpec,
    ) -> Result<RealNode, Error> {
        sweep();
        let n = NODES_STARTED.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let bridge = format!("{BRIDGE_PREFIX}{pid:x}x{n:x}");
        let cgroup_root = format!("{CGROUP_PREFIX}{pid}-{n}");
        let dir = ctx.cluster_dir.join("node");
        for sub in [
            "containerd",
            "cni",
            "ipam",
            "kubelet",
            "pods",
            "images",
            "opt",
        ] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating {}", dir.join(sub).display()), e))?;
        }
        let (address, subnet) = create_bridge(&bridge)?;
        let leftovers = HostLeftovers {
            bridge: bridge.clone(),
            cgroup_root: cgroup_root.clone(),
            dir: Some(dir.clone()),
        };
        if let Err(e) = create_cgroups(&cgroup_root) {
            leftovers.remove();
            return Err(e);
        }
        let socket = dir.join("containerd.sock");
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(format!("writing {}", p.display()), e))
        };
        write("containerd.toml", containerd_config(&dir, &socket))?;
        write(
            "cni/10-gpufed.conflist",
            cni_config(&bridge, &subnet, &address, &dir.join("ipam")),
        )?;
        let kubelet_port = free_port()?;
        write(
            "kubelet.yaml",
            kubelet_config(
                &dir,
                &socket,
                &cgroup_root,
                &address,
                kubelet_port,
                ctx.client_ca,
            ),
        )?;
        let labels = node_labels(spec);
        let node_labels = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        write(
            "node.sh",
            init_script(
                &dir,
                &tools.bin("kubelet")?,
                ctx.kubeconfig,
                &spec.name,
                &address,
                &node_labels,
            ),
        )?;

        let spawned = Process::spawn(
            "node",
            Path::new("unshare"),
            &[
                "--pid".into(),
                "--fork".into(),
                "--kill-child".into(),
                "--mount".into(),
                "--propagation=private".into(),
                "--mount-proc".into(),
                "--".into(),
                "bash".into(),
                dir.join("node.sh").display().to_string(),
            ],
            &[],
            &dir.join("node.log"),
        );
        let mut process = match spawned {
            Ok(p) => p,
            Err(e) => {
                leftovers.remove();
                return Err(e);
            }
        };
        let cleanup = leftovers.clone();
        process.on_kill(Arc::new(move || cleanup.remove()));
        let mut node = RealNode {
            name: spec.name.clone(),
            dir: dir.clone(),
            socket,
            address,
            subnet,
            leftovers,
            process,
        };
        node.wait_containerd().await?;
        node.import(&Image::busybox(image::BUSYBOX, &busybox()?)?)?;
        node.import(
            &Image::busybox(image::PAUSE, &busybox()?)?
                .entrypoint(&["/bin/busybox", "sleep", "2147483647"])
                .cmd(&[]),
        )?;
        // The kubelet starts once the images are in: its first sandbox needs the pause image.
        std::fs::write(dir.join("start-kubelet"), "")
            .map_err(|e| Error::io("signalling the node script".into(), e))?;
        node.wait_registered(&ctx.client, spec.gpus).await?;
        Ok(node)
    }

    /// Waits until `ready` returns something, or the node script has ended (then fails at once
    /// with the logs).
    async fn wait_for<T, F, Fut>(
        &mut self,
        timeout: Duration,
        what: &str,
        ready: F,
    ) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let ended = self.dir.join("ended");
        let result = wait_until(timeout, what, || {
            let ended = ended.clone();
            let check = ready();
            async move {
                if ended.exists() {
                    return Some(None);
                }
                check.await.map(Some)
            }
        })
        .await;
        match result {
            Ok(Some(v)) => Ok(v),
            Ok(None) | Err(_) => {
                // Give the script a moment to exit, so the error says how it ended.
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.fail_if_exited()?;
                Err(Error::Other(format!(
                    "real node {}: {}\n{}",
                    self.name,
                    result
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| format!("ended while waiting for {what}")),
                    self.log_tails(30)
                )))
            }
        }
    }

    async fn wait_containerd(&mut self) -> Result<(), Error> {
        let ready = self.dir.join("containerd.ready");
        self.wait_for(Duration::from_secs(30), "containerd's socket", || {
            let ready = ready.clone();
            async move { ready.exists().then_some(()) }
        })
        .await
    }

    fn fail_if_exited(&mut self) -> Result<(), Error> {
        if let Some(status) = self.process.exited() {
            return Err(Error::Other(format!(
                "real node {} exited with {status}:\n{}",
                self.name,
                self.log_tails(30)
            )));
        }
        Ok(())
    }

    async fn wait_registered(&mut self, client: &Client, gpus: u32) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let name = self.name.clone();
        self.wait_for(Duration::from_secs(60), "the kubelet's Node", || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move { nodes.get_opt(&name).await.ok().flatten() }
        })
        .await?;
        // An extended resource, advertised the documented way (node status capacity); the kubelet
        // keeps it and derives allocatable from it.
        let patch = serde_json::json!({"status": {"capacity": {GPU_RESOURCE: gpus.to_string()}}});
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube("advertising the real node's GPUs"))?;
        self.wait_for(
            Duration::from_secs(60),
            "the real node Ready with its GPUs",
            || {
                let nodes = nodes.clone();
                let name = name.clone();
                async move {
                    let node = nodes.get(&name).await.ok()?;
                    let status = node.status?;
                    let ready = status
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let gpus_there = status
                        .allocatable?
                        .get(GPU_RESOURCE)
                        .is_some_and(|q| q.0 == gpus.to_string());
                    (ready && gpus_there).then_some(())
                }
            },
        )
        .await
    }

    /// Writes `image` as an OCI tarball and imports it into this node's containerd.
    pub fn import(&self, image: &Image) -> Result<(), Error> {
        let file = self
            .dir
            .join("images")
            .join(format!("{}.tar", image.name().replace(['/', ':'], "_")));
        image.write_oci(&file)?;
        image::import(&ctr()?, &self.socket, &file)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address (its bridge), where the apiserver reaches the kubelet.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The node's pod network (a /24).
    pub fn pod_subnet(&self) -> &str {
        &self.subnet
    }

    /// The node's bridge (an interface of the host).
    pub fn bridge(&self) -> &str {
        &self.leftovers.bridge
    }

    /// The kubelet's cgroup root (a directory in each cgroup hierarchy).
    pub fn cgroup_root(&self) -> &str {
        &self.leftovers.cgroup_root
    }

    /// The node's directory (containerd, kubelet, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> &Path {
        &self.socket
    }

    /// The last `lines` lines of the node script's, containerd's and the kubelet's logs.
    pub fn log_tails(&self, lines: usize) -> String {
        ["node.log", "containerd.log", "kubelet.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {} {f} ---\n{}",
                    self.name,
                    crate::process::tail(&self.dir.join(f), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the node's processes still run (`Some(status)` once the namespace has ended).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    /// Kills every process of the node and removes what it left on the host. Idempotent.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// The node's process (for the cluster's list of components).
    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

fn busybox() -> Result<PathBuf, Error> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::Other(
                "busybox not found: run e2e/tools/install-node.sh (make tools does)".into(),
            )
        })
}

fn ctr() -> Result<PathBuf, Error> {
    ["/usr/bin/ctr", "/usr/local/bin/ctr"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::Other("ctr not found: run e2e/tools/install-node.sh (make tools does)".into())
        })
}

/// The labels a real node registers with: those a kwok node of the same spec gets (simulator
/// profile, region, extras), and `gpufed.io/e2e-node=real`.
pub fn node_labels(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_SIM_PROFILE.into(), spec.profile.clone());
    labels.insert(LABEL_REGION.into(), spec.region.clone());
    labels.insert("gpufed.io/e2e-node".into(), "real".into());
    labels
}
