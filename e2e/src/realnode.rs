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

/// What the host keeps of a node after its processes are gone, and removes it.
#[derive(Clone, Debug)]
struct HostLeftovers {
    bridge: String,
    cgroup_root: String,
    /// The node's directory, removed too (unless `GPUFED_E2E_KEEP` asks to keep logs).
    dir: Option<PathBuf>,
}

impl HostLeftovers {
    /// Deletes the bridge and the cgroup tree. Waits (up to 10 s) for the namespace's processes
    /// to be gone first: a cgroup with tasks cannot be removed.
    fn remove(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut busy = cgroup_tasks(&self.cgroup_root);
            if let Some(dir) = &self.dir {
                busy.extend(processes_naming(dir));
            }
            if busy.is_empty() || std::time::Instant::now() > deadline {
                for pid in busy {
                    kill(pid);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        remove_cgroups(&self.cgroup_root);
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(dir) = &self.dir
            && std::env::var_os("GPUFED_E2E_KEEP").is_none()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Processes (not zombies) whose command line names `dir`: the node's kubelet, containerd and
/// shims, which the kernel ends a moment after the namespace's first process.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !cmdline.is_empty() && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // A process that is already gone is fine.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Controllers of the cgroup v1 hierarchies (each a directory under /sys/fs/cgroup).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// Every process in the cgroup tree `root` of any hierarchy.
fn cgroup_tasks(root: &str) -> Vec<u32> {
    let mut pids = vec![];
    // An empty root would be every cgroup of the machine.
    if !root.starts_with(CGROUP_PREFIX) {
        return pids;
    }
    for h in cgroup_hierarchies() {
        let mut dirs = vec![];
        walk(&h.join(root), &mut dirs);
        for d in dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the (empty) cgroup tree `root` from every hierarchy, deepest first.
fn remove_cgroups(root: &str) {
    if !root.starts_with(CGROUP_PREFIX) {
        return;
    }
    for h in cgroup_hierarchies() {
        let top = h.join(root);
        if !top.exists() {
            continue;
        }
        let mut dirs = vec![];
        walk(&top, &mut dirs);
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the bridges and cgroup trees of real nodes whose harness process is gone (killed
/// outright, so its cleanup never ran).
pub fn sweep() {
    let owner_of = |s: &str| u32::from_str_radix(s, 16).ok();
    if let Ok(d) = std::fs::read_dir("/sys/class/net") {
        for e in d.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(BRIDGE_PREFIX) else {
                continue;
            };
            if let Some(pid) = rest.split('x').next().and_then(owner_of)
                && !pid_alive(pid)
            {
                tracing::info!(bridge = %name, "removing the bridge of a harness that is gone");
                HostLeftovers {
                    bridge: name.clone(),
                    cgroup_root: String::new(),
                    dir: None,
                }
                .remove();
            }
        }
    }
    for h in cgroup_hierarchies() {
        let Ok(d) = std::fs::read_dir(&h) else {
            continue;
        };
        for e in d.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
                continue;
            };
            if let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok())
                && !pid_alive(pid)
            {
                for t in cgroup_tasks(&name) {
                    kill(t);
                }
                remove_cgroups(&name);
            }
        }
    }
}

/// Creates the kubelet's cgroup root in every hierarchy (the kubelet wants it to exist); a new
/// cpuset cgroup gets its parent's CPUs and memory nodes, without which no task may join it.
fn create_cgroups(root: &str) -> Result<(), Error> {
    for h in cgroup_hierarchies() {
        let dir = h.join(root);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating cgroup {}", dir.display()), e))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.join(file)) {
                std::fs::write(dir.join(file), v.trim())
                    .map_err(|e| Error::io(format!("writing {}", dir.join(file).display()), e))?;
            }
        }
    }
    Ok(())
}

/// Picks a free /24 for a node's pods and creates the node's bridge with the first address of it,
/// under a machine-wide lock so that harnesses running side by side never pick the same one.
fn create_bridge(bridge: &str) -> Result<(String, String), Error> {
    let lock_path = std::env::temp_dir().join("gpufed-e2e-subnets.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| Error::io(format!("creating {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| Error::io("running ip addr".into(), e))?;
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    let [a, b] = SUBNET_BASE;
    let start = std::process::id() % 250;
    let third = (0..250)
        .map(|i| (start + i) % 250 + 2)
        .find(|n| !used.contains(&format!(" {a}.{b}.{n}.")))
        .ok_or_else(|| Error::Other(format!("no free /24 left in {a}.{b}.0.0/16")))?;
    let address = format!("{a}.{b}.{third}.1");
    let subnet = format!("{a}.{b}.{third}.0/24");
    for args in [
        vec!["link", "add", bridge, "type", "bridge"],
        vec!["addr", "add", &format!("{address}/24"), "dev", bridge],
        vec!["link", "set", bridge, "up"],
    ] {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| Error::io("running ip".into(), e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "ip {}: {} (a real node needs root: it makes a bridge and runs containerd)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    drop(lock);
    Ok((address, subnet))
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

fn containerd_config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    // The CRI settings are those that ran pods on this machine class (shared/notes/real-pods.md):
    // with the defaults instead, every sandbox failed in runc ("can't get final child's PID").
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{d}/cni"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d}/containerd/runc"
"#,
        pause = image::PAUSE,
        cni_bin = CNI_BIN,
    )
}

fn cni_config(bridge: &str, subnet: &str, gateway: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            // No NAT: pods talk to each other and to the host on the bridge; nothing is written
            // into the host's iptables.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                "dataDir": ipam_dir.display().to_string(),
            },
        }],
    })
    .to_string()
}

fn kubelet_config(
    dir: &Path,
    socket: &Path,
    cgroup_root: &str,
    address: &str,
    port: u16,
    client_ca: &Path,
) -> String {
    let value = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // cgroup v1 hierarchies and no systemd here (shared/notes/real-pods.md).
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": false,
        // A cgroup root of its own, so kubelets side by side never share a pod cgroup tree.
        "cgroupRoot": format!("/{cgroup_root}"),
        "containerRuntimeEndpoint": format!("unix://{}", socket.display()),
        "failSwapOn": false,
        "enforceNodeAllocatable": [],
        "evictionHard": {},
        "localStorageCapacityIsolation": false,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "resolvConf": "",
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "makeIPTablesUtilChains": false,
        "podLogsDir": dir.join("pods").display().to_string(),
        "serializeImagePulls": false,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": client_ca.display().to_string()},
        },
        "authorization": {"mode": "Webhook"},
    });
    serde_norway::to_string(&value).unwrap_or_default()
}

fn init_script(
    dir: &Path,
    kubelet: &Path,
    kubeconfig: &Path,
    name: &str,
    address: &str,
    labels: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"#!/usr/bin/env bash
# First process of a real node's PID and mount namespace (see e2e/src/realnode.rs). When it ends,
# the kernel ends every process of the node.
set -euo pipefail
# However it ends, the harness sees it at once.
trap 'touch {d}/ended' EXIT
# Host paths that containerd, the CNI plugins and the kubelet write by default: private here.
mount -t tmpfs -o mode=755 gpufed-node-run /run
mount -t tmpfs -o mode=755 gpufed-node-log /var/log
mkdir -p /var/log/containers
mount -t tmpfs -o mode=755 gpufed-node-lib /var/lib
containerd --config {d}/containerd.toml >{d}/containerd.log 2>&1 &
for _ in $(seq 600); do [ -S {d}/containerd.sock ] && break; sleep 0.05; done
[ -S {d}/containerd.sock ] || {{ echo "containerd did not open its socket"; exit 1; }}
touch {d}/containerd.ready
echo "containerd ready; waiting for the images"
while [ ! -e {d}/start-kubelet ]; do sleep 0.05; done
{kubelet} --config={d}/kubelet.yaml --kubeconfig={kubeconfig} --root-dir={d}/kubelet \
  --cert-dir={d}/kubelet/pki --hostname-override={name} --node-ip={address} \
  --node-labels={labels} --v=1 >{d}/kubelet.log 2>&1 &
echo "kubelet started"
wait -n || true
echo "a node process exited; ending the node"
exit 1
"#,
        kubelet = kubelet.display(),
        kubeconfig = kubeconfig.display(),
    )
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
