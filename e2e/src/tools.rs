//! Where the harness finds its binaries: the Kubernetes tools that `e2e/tools/build.sh` links into
//! `.tools/bin/`, and this workspace's own binaries in cargo's target directory.

use std::path::{Path, PathBuf};

use crate::Error;

/// Where Debian installs the thread-safe libfaketime.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Locations of the binaries the harness starts.
#[derive(Clone, Debug)]
pub struct Tools {
    root: PathBuf,
    tools_bin: PathBuf,
    target_dir: PathBuf,
}

impl Tools {
    /// Finds the repository root (from this crate's manifest directory) and `.tools/bin`.
    ///
    /// The directory cargo gives the running test or binary comes first: the one compiled in can
    /// name another checkout when two share a `CARGO_TARGET_DIR` (`.ci/run` in a fresh clone does),
    /// since cargo may reuse this library built from the other one.
    pub fn locate() -> Result<Tools, Error> {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::Other("e2e crate has no parent directory".into()))?;
        let tools_bin = std::env::var_os("GPUFED_TOOLS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".tools/bin"));
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(Tools {
            root,
            tools_bin,
            target_dir,
        })
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A tool from `.tools/bin` (kube-apiserver, etcd, kwok, helm, anvil, …).
    pub fn bin(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.tools_bin.join(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::Other(format!(
                "{} not found: run `make tools` (e2e/tools/build.sh builds the Kubernetes tools into .tools/bin; `make tools-peers` adds kueue)",
                path.display()
            )))
        }
    }

    /// libfaketime (Debian's `libfaketime`, installed by `e2e/tools/install-node.sh`): preloaded
    /// into a process, it shifts that process's wall clock by the offset in a file.
    pub fn libfaketime(&self) -> Result<PathBuf, Error> {
        let path = PathBuf::from(LIBFAKETIME);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::Other(format!(
                "{LIBFAKETIME} not found: run e2e/tools/install-node.sh as root (make tools does), or apt-get install libfaketime"
            )))
        }
    }

    /// A binary of this workspace (`gpufed-operator`, `gpu-probe`, `kubectl-gpufed`), built by cargo.
    pub fn workspace_bin(&self, name: &str) -> Result<PathBuf, Error> {
        let profile = std::env::var("GPUFED_E2E_PROFILE").unwrap_or_else(|_| "debug".to_string());
        let path = self.target_dir.join(profile).join(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::Other(format!(
                "{} not found: build it first with `cargo build --bins` (make test does)",
                path.display()
            )))
        }
    }

    /// The kwok stage configuration of test clusters.
    pub fn kwok_stages(&self) -> PathBuf {
        self.root.join("e2e/kwok/pod-stages.yaml")
    }
}
