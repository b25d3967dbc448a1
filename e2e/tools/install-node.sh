#!/usr/bin/env bash
# Installs what a harness member with a real node needs from Debian's packages, when missing:
#
#   runc, containerd (with its CRI plugin and `ctr`)   containerd, runc
#   the standard CNI plugins in /usr/lib/cni           containernetworking-plugins
#   a static busybox for shell workloads and pause     busybox-static
#   iproute2 and iptables (bridge teardown, CNI NAT)   iproute2, iptables
#   libfaketime (the chaos run's clock-skew fault)      libfaketime
#
# Idempotent: does nothing (and needs no network) when everything is there. Installing needs root
# (apt-get); without it the script fails with the command to run instead of skipping the real-node
# tests silently. kubelet itself is built from the pinned Kubernetes Go modules by build.sh.
set -euo pipefail

step() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# package → a file that proves it is installed.
declare -A proof=(
  [runc]=/usr/sbin/runc
  [containerd]=/usr/bin/containerd
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [busybox-static]=/bin/busybox
  [iproute2]=/sbin/ip
  [iptables]=/usr/sbin/iptables
  [libfaketime]=/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
)

missing=()
for pkg in "${!proof[@]}"; do
  f=${proof[$pkg]}
  # Debian merged /bin into /usr/bin: accept either spelling of the path.
  if [ ! -e "$f" ] && [ ! -e "/usr$f" ] && [ ! -e "${f/\/usr\/sbin//usr/bin}" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-node.sh: the real-node tests need ${missing[*]}, and installing them needs root." >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install-node.sh: ${missing[*]} missing and there is no apt-get here; install them with this system's package manager." >&2
  exit 1
fi

step "installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package starts nothing here (no systemd), but a distribution that does would run a second
# containerd on the default socket; the harness only ever uses its own.
for pkg in "${missing[@]}"; do
  f=${proof[$pkg]}
  if [ ! -e "$f" ] && [ ! -e "/usr$f" ] && [ ! -e "${f/\/usr\/sbin//usr/bin}" ]; then
    echo "install-node.sh: $pkg installed but $f is still missing" >&2
    exit 1
  fi
done
step "installed: runc $(runc --version | head -1 | awk '{print $3}'), containerd $(containerd --version | awk '{print $3}')"
