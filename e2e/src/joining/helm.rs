//! Runs the real `helm` (from `.tools/bin`) against a harness cluster, with its caches and
//! configuration in a directory of the test, so nothing of the user's helm setup is read or written.

use std::path::{Path, PathBuf};

use crate::{Cluster, Error, Tools};

/// `helm` bound to one cluster.
pub struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    /// `helm` for `cluster` (admin kubeconfig), keeping its state in the cluster's directory.
    pub fn new(tools: &Tools, cluster: &Cluster) -> Result<Helm, Error> {
        let home = cluster.dir()?.join("helm");
        std::fs::create_dir_all(&home)
            .map_err(|e| Error::Other(format!("creating {}: {e}", home.display())))?;
        Ok(Helm {
            bin: tools.bin("helm")?,
            kubeconfig: cluster.kubeconfig().to_path_buf(),
            home,
        })
    }

    /// Runs `helm <args> --kubeconfig …` and returns its stdout, or an error with its stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = tokio::process::Command::new(&self.bin)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::Other(format!("running helm: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(Error::Other(format!(
                "helm {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// `helm install <release> <chart> -n <namespace> --create-namespace --wait=false --set k=v…`.
    pub async fn install(
        &self,
        release: &str,
        chart: &Path,
        namespace: &str,
        values: &[(&str, &str)],
    ) -> Result<String, Error> {
        let chart = chart.display().to_string();
        let sets: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec![
            "install",
            release,
            chart.as_str(),
            "--namespace",
            namespace,
            "--create-namespace",
        ];
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        self.run(&args).await
    }
}
