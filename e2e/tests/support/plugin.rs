//! The kubectl plugin run as a user runs it, for the e2e tests that drive it (`plugin.rs`,
//! `job_logs.rs`): `kubectl gpufed --kubeconfig … args`, its exit code and output.

use std::path::{Path, PathBuf};

use gpufed_e2e::Tools;

/// The plugin binary with a kubeconfig.
pub struct Plugin {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Plugin {
    pub fn new(tools: &Tools, kubeconfig: &Path) -> Plugin {
        let bin = tools.workspace_bin("kubectl-gpufed").unwrap();
        Plugin {
            bin,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// Runs `kubectl gpufed --kubeconfig … args`: exit code, stdout, stderr.
    pub async fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        );
        if std::env::var_os("GPUFED_E2E_SHOW").is_some() {
            println!("$ kubectl gpufed {}\n{stdout}{stderr}", args.join(" "));
        }
        (out.status.code(), stdout, stderr)
    }

    /// Runs `args`, which must succeed; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args).await;
        assert_eq!(code, Some(0), "{args:?} failed:\n{stdout}{stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        stdout
    }

    /// Runs `args`, which must fail with one line on stderr; returns that line.
    pub async fn fails(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args).await;
        assert_eq!(code, Some(1), "{args:?} should fail:\n{stdout}{stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        stderr.trim_end().to_string()
    }
}
