//! A real S3-compatible object store for the tests of job data (`docs/adr/0029-job-data-on-s3.md`):
//! versitygw, the Versity S3 gateway, over a directory (its POSIX backend), built from its Go
//! module by `e2e/tools/build.sh`. A bucket is a top-level directory; objects are files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Process, free_port};
use crate::{Error, Tools, wait_until};

/// The access key of the store's one account.
pub const ACCESS_KEY: &str = "gpufed-tenant";
/// Its secret key.
pub const SECRET_KEY: &str = "gpufed-tenant-secret-0123456789";

/// A running versitygw (on 127.0.0.1 unless started with [`S3Server::start_on`]).
#[derive(Debug)]
pub struct S3Server {
    process: Process,
    /// `http://HOST:PORT`.
    pub endpoint: String,
    port: u16,
    root: PathBuf,
}

impl S3Server {
    /// Starts versitygw with its data under `dir/s3` and one bucket per name in `buckets`, and
    /// waits until it answers.
    pub async fn start(tools: &Tools, dir: &Path, buckets: &[&str]) -> Result<S3Server, Error> {
        S3Server::start_on(tools, dir, buckets, "127.0.0.1").await
    }

    /// Like [`S3Server::start`], listening on `host`: a real node's bridge address
    /// ([`crate::realnode::RealNode::address`]), so that pods reach it.
    pub async fn start_on(
        tools: &Tools,
        dir: &Path,
        buckets: &[&str],
        host: &str,
    ) -> Result<S3Server, Error> {
        let root = dir.join("s3");
        for b in buckets {
            std::fs::create_dir_all(root.join(b))
                .map_err(|e| Error::Other(format!("bucket directory {b}: {e}")))?;
        }
        let port = free_port()?;
        let listen = format!("{host}:{port}");
        let args: Vec<String> = vec![
            "--port".into(),
            listen.clone(),
            "posix".into(),
            root.display().to_string(),
        ];
        let env = vec![
            ("ROOT_ACCESS_KEY".to_string(), ACCESS_KEY.to_string()),
            ("ROOT_SECRET_KEY".to_string(), SECRET_KEY.to_string()),
        ];
        let process = Process::spawn(
            "versitygw",
            &tools.bin("versitygw")?,
            &args,
            &env,
            &dir.join("versitygw.log"),
        )?;
        wait_until(Duration::from_secs(30), "versitygw to listen", || {
            let listen = listen.clone();
            async move { tokio::net::TcpStream::connect(listen).await.ok() }
        })
        .await?;
        Ok(S3Server {
            process,
            endpoint: format!("http://{host}:{port}"),
            port,
            root,
        })
    }

    /// The file behind `bucket/key`, to put an object in place or read one back directly.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
