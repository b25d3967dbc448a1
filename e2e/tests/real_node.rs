//! The harness's real node (containerd, runc, a kubelet built from the pinned modules): a pod
//! really runs on it from an image the harness built, and the node leaves the machine as it found
//! it — when the cluster is dropped, and when a stuck test is stopped at its hard deadline.
//!
//! Needs root (the node makes a bridge and runs containerd) and `make tools` (kubelet, and runc,
//! containerd and the CNI plugins from e2e/tools/install-node.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpufed_crds::naming::GPU_RESOURCE;
use gpufed_e2e::image::{BUSYBOX, Image};
use gpufed_e2e::{Cluster, ClusterSpec, NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams, PostParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(240);
const LONG: Duration = Duration::from_secs(90);

/// What a real node leaves on the host while it runs, to check it is gone afterwards.
#[derive(Clone, Debug, Default)]
struct Footprint {
    bridge: String,
    cgroup_root: String,
    dir: PathBuf,
    /// Processes of the node: kubelet, containerd, shims, containers.
    pids: Vec<u32>,
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join(root))
        .filter(|p| p.exists())
        .collect()
}

/// Every process whose command line or cgroup names the node (its directory or cgroup root).
fn node_pids(fp: &Footprint) -> Vec<u32> {
    let dir = fp.dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            cmdline.contains(&dir) || cgroup.contains(&fp.cgroup_root)
        })
        .collect()
}

fn footprint(cluster: &Cluster) -> Footprint {
    let node = cluster.real_node().unwrap();
    let mut fp = Footprint {
        bridge: node.bridge().to_string(),
        cgroup_root: node.cgroup_root().to_string(),
        dir: node.dir().to_path_buf(),
        pids: vec![],
    };
    fp.pids = node_pids(&fp);
    fp
}

fn assert_gone(fp: &Footprint) {
    assert!(
        !Path::new("/sys/class/net").join(&fp.bridge).exists(),
        "bridge {} left behind",
        fp.bridge
    );
    assert!(
        cgroup_dirs(&fp.cgroup_root).is_empty(),
        "cgroups left behind: {:?}",
        cgroup_dirs(&fp.cgroup_root)
    );
    // A zombie has ended (its parent has not collected it yet); anything else still runs.
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| {
                !s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(false)
    };
    let alive: Vec<u32> = fp.pids.iter().copied().filter(running).collect();
    assert!(
        alive.is_empty(),
        "processes of the node still run: {alive:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = fp.dir.to_string_lossy().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&dir)),
        "mounts under {dir} left behind"
    );
}

async fn start_node_cluster(tools: &Tools, name: &str) -> Cluster {
    let spec = ClusterSpec::new(name).real_node(NodeSpec::new(
        &format!("{name}-node"),
        "L4-24GB",
        2,
        "eu-west",
    ));
    Cluster::start(tools, &spec).await.unwrap()
}

async fn run_sleeper(cluster: &Cluster) -> Pod {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "echo started; exec sleep 1000"],
                                 "resources": {"limits": {GPU_RESOURCE: "1"}}}],
                 "terminationGracePeriodSeconds": 1}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(LONG, "the pod Running on the real node", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("sleeper").await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        }
    })
    .await
    .unwrap()
}

#[test]
fn a_pod_runs_on_the_real_node_and_a_dropped_node_leaves_nothing_behind() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let cluster = start_node_cluster(&tools, "rn-drop").await;
        let node_name = cluster.real_node().unwrap().name().to_string();

        // The node is Ready with the GPUs and labels a kwok node of the same spec has.
        let node = Api::<Node>::all(cluster.client())
            .get(&node_name)
            .await
            .unwrap();
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels["gpufed.io/sim-profile"], "L4-24GB");
        assert_eq!(labels["topology.kubernetes.io/region"], "eu-west");
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()[GPU_RESOURCE].0, "2");
        let runtime = status.node_info.unwrap().container_runtime_version;
        assert!(runtime.starts_with("containerd://"), "{runtime}");

        // A pod really runs: its IP is on the node's bridge, and its log comes back through the
        // apiserver from the kubelet.
        let pod = run_sleeper(&cluster).await;
        let ip = pod.status.unwrap().pod_ip.unwrap();
        let subnet = cluster.real_node().unwrap().pod_subnet().to_string();
        let prefix = subnet.trim_end_matches("0/24");
        assert!(ip.starts_with(prefix), "{ip} not in {subnet}");
        let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
        let log = pods.logs("sleeper", &LogParams::default()).await.unwrap();
        assert_eq!(log.trim(), "started");

        // Our own binaries run from images the harness builds: gpu-probe and the operator, with the
        // libraries they load, as a non-root user on a read-only root filesystem.
        let node = cluster.real_node().unwrap();
        for (bin, tag) in [("gpu-probe", "probe"), ("gpufed-operator", "operator")] {
            let image = format!("docker.io/gpufed/{tag}:e2e");
            node.import(
                &Image::new(&image)
                    .binary(
                        &tools.workspace_bin(bin).unwrap(),
                        &format!("usr/local/bin/{bin}"),
                    )
                    .unwrap()
                    .entrypoint(&[&format!("/usr/local/bin/{bin}")])
                    .user("65534:65534"),
            )
            .unwrap();
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": tag},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                         "args": ["--version"],
                                         "securityContext": {"readOnlyRootFilesystem": true,
                                                             "runAsNonRoot": true}}]}
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
            wait_until(LONG, &format!("{tag} to run to completion"), || {
                let pods = pods.clone();
                async move {
                    let p = pods.get(tag).await.ok()?;
                    (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(())
                }
            })
            .await
            .unwrap();
            let log = pods.logs(tag, &LogParams::default()).await.unwrap();
            assert_eq!(log.trim(), format!("{bin} {}", env!("CARGO_PKG_VERSION")));
        }

        let fp = footprint(&cluster);
        assert!(
            fp.pids.len() >= 4,
            "kubelet, containerd, a shim, the pause and the sleep: {:?}",
            fp.pids
        );
        assert!(!cgroup_dirs(&fp.cgroup_root).is_empty());
        drop(cluster);
        assert_gone(&fp);
        assert!(!fp.dir.exists(), "the node's directory is removed");
    });
}

#[test]
fn a_stuck_tests_real_node_is_removed_at_its_hard_deadline() {
    let seen: Arc<Mutex<Option<Footprint>>> = Arc::default();
    let seen_in_test = seen.clone();
    let outcome = std::panic::catch_unwind(move || {
        // Long enough for the node (about 5 s here) and the pod to start, even on a busy machine.
        run_test(Duration::from_secs(45), move || async move {
            let tools = Tools::locate().unwrap();
            let cluster = start_node_cluster(&tools, "rn-stuck").await;
            run_sleeper(&cluster).await;
            *seen_in_test.lock().unwrap() = Some(footprint(&cluster));
            // Stuck for good, with the cluster alive: only the deadline ends this.
            std::future::pending::<()>().await;
            drop(cluster);
        })
    });
    assert!(outcome.is_err(), "the stuck test must fail at its deadline");
    let fp = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the node started before the deadline");
    assert_gone(&fp);
    let cluster_dir = fp.dir.parent().unwrap();
    assert!(
        !cluster_dir.exists(),
        "{} left behind",
        cluster_dir.display()
    );
}
