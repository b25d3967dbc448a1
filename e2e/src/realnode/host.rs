//! What a real node leaves on the host outside its namespaces (its bridge, its kubelet's cgroup
//! tree, its directory), how it is made, and how it is removed — also for harness processes that
//! were killed outright ([`sweep`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BRIDGE_PREFIX, CGROUP_PREFIX, SUBNET_BASE};
use crate::Error;

/// What the host keeps of a node after its processes are gone, and removes it.
#[derive(Clone, Debug)]
pub(super) struct HostLeftovers {
    pub(super) bridge: String,
    pub(super) cgroup_root: String,
    /// The node's directory, removed too (unless `GPUFED_E2E_KEEP` asks to keep logs).
    pub(super) dir: Option<PathBuf>,
}

impl HostLeftovers {
    /// Deletes the bridge and the cgroup tree. Waits (up to 10 s) for the namespace's processes
    /// to be gone first: a cgroup with tasks cannot be removed.
    pub(super) fn remove(&self) {
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
pub(super) fn create_cgroups(root: &str) -> Result<(), Error> {
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
pub(super) fn create_bridge(bridge: &str) -> Result<(String, String), Error> {
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
    // A fixed (locally administered) MAC: a bridge without one takes the lowest of its ports', so
    // it changed whenever a pod's veth came or went, and pods that had cached the gateway's old
    // MAC could not reach the host (the node's services, e.g. a test's S3 server) for seconds.
    let pid = std::process::id().to_be_bytes();
    let mac = format!(
        "02:67:{:02x}:{:02x}:{:02x}:{third:02x}",
        pid[1], pid[2], pid[3]
    );
    for args in [
        vec!["link", "add", bridge, "address", &mac, "type", "bridge"],
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
