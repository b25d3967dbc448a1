//! The files a real node runs from: containerd's configuration, the CNI network, the kubelet's
//! configuration and the script that is the first process of the node's namespaces.

use std::path::Path;

use super::CNI_BIN;
use crate::image;

pub(super) fn containerd_config(dir: &Path, socket: &Path) -> String {
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

pub(super) fn cni_config(bridge: &str, subnet: &str, gateway: &str, ipam_dir: &Path) -> String {
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

pub(super) fn kubelet_config(
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

pub(super) fn init_script(
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
