//! `gpufed-data`: data in and results out of a gpufed job on S3-compatible object storage
//! (`docs/adr/0029-job-data-on-s3.md`).
//!
//! * `fetch` runs before the workload (an init container): downloads one object (`--key`) or every
//!   object under a prefix (`--prefix`) into a directory, and checks the size and sha256 when given.
//! * `push` runs after it: uploads every regular file under a directory to a prefix and prints a
//!   manifest (keys, sizes, sha256) as JSON; files larger than one part (`--part-size-mib`) go
//!   in a multipart upload, aborted on any failure. In a job's pod it waits for the workload's processes
//!   to exit first (`--wait-for-workload`).
//!
//! Both write one line to the container's termination message (`--termination-log`): the manifest
//! on success, the reason on failure, so the agent can copy either into the job's status. A
//! failure always exits non-zero; nothing is reported as done that was not checked.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
//! set by the agent from the tenant's sealed Secret. Requests are signed as short-lived presigned
//! URLs (SigV4, `rusty-s3`), so the same code also serves URLs presigned elsewhere.

mod manifest;
mod paths;
mod s3;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Data in and results out of a gpufed job on S3-compatible object storage.
#[derive(Parser, Debug)]
#[command(name = "gpufed-data", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the one-line result (manifest or failure) goes; the kubelet copies this file into
    /// the container's termination message. Skipped when its directory does not exist.
    #[arg(long, global = true, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download an object or every object under a prefix; verify size and sha256 when given.
    Fetch(FetchArgs),
    /// Upload every regular file under a directory to a prefix; print the manifest.
    Push(PushArgs),
}

/// Where the objects are.
#[derive(Args, Debug, Clone)]
struct Location {
    /// Endpoint of the S3-compatible service, e.g. `https://s3.eu-west-1.amazonaws.com`.
    #[arg(long)]
    endpoint: String,
    /// Region the requests are signed for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Bucket name.
    #[arg(long)]
    bucket: String,
    /// Fail unless `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are set (the job named a
    /// credentials Secret); without it, requests are anonymous when they are unset.
    #[arg(long)]
    require_credentials: bool,
    /// Seconds the signed URLs stay valid; each is used at once.
    #[arg(long, default_value_t = 900)]
    url_ttl_secs: u64,
}

#[derive(Args, Debug)]
struct FetchArgs {
    #[command(flatten)]
    location: Location,
    /// One object's key; it is written to `<dest>/<last segment of the key>`.
    #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
    key: Option<String>,
    /// Every object under this prefix, taken as a directory (`data/v1` means `data/v1/`), written
    /// under `<dest>` by its key relative to the prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Expected size in bytes (with `--key`).
    #[arg(long, requires = "key")]
    size: Option<u64>,
    /// Expected sha256, 64 hex digits (with `--key`).
    #[arg(long, requires = "key")]
    sha256: Option<String>,
    /// Directory the objects are written into (created if missing).
    #[arg(long)]
    dest: PathBuf,
    /// Name of an environment variable holding a GET URL for `--key` presigned elsewhere (by the
    /// hub, from a sealed Secret): used instead of signing one, so no credentials are needed.
    #[arg(long, requires = "key")]
    url_env: Option<String>,
}

#[derive(Args, Debug)]
struct PushArgs {
    #[command(flatten)]
    location: Location,
    /// Prefix of the uploaded keys, e.g. `runs/42/` (a file `a/b.bin` becomes `runs/42/a/b.bin`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Directory whose regular files are uploaded (symbolic links are skipped).
    #[arg(long)]
    src: PathBuf,
    /// Wait for SIGTERM before uploading: the uploader runs as a native sidecar, which the kubelet
    /// stops once the workload's containers have exited (ADR 0029).
    #[arg(long, conflicts_with = "wait_for_workload")]
    wait_for_sigterm: bool,
    /// Wait until no other process of the pod is left before uploading: the uploader runs as a
    /// container beside the workload's, with the pod's process namespace shared, so the pod ends
    /// only once the upload has (ADR 0029).
    #[arg(long)]
    wait_for_workload: bool,
    /// Files larger than this many MiB are uploaded in parts of this size (a multipart upload,
    /// up to 5 TiB; the parts grow when a file would need more than 10,000). 5 to 5120.
    #[arg(long, default_value_t = s3::multipart::DEFAULT_PART >> 20)]
    part_size_mib: u64,
    /// Name of an environment variable holding PUT URLs presigned elsewhere (by the hub, from a
    /// sealed Secret), a JSON object from object key to URL: each file is uploaded in one PUT to
    /// its key's URL, so no credentials are needed, and the directory must hold exactly those
    /// files.
    #[arg(long)]
    urls_env: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gpufed-data: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&cli.command));
    match result {
        Ok(m) => {
            let full = m.to_json();
            println!("{full}");
            manifest::write_termination_log(
                &cli.termination_log,
                &m.fit(manifest::TERMINATION_LIMIT),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let line = manifest::failure_line(&e.to_string());
            eprintln!("gpufed-data: {e}");
            manifest::write_termination_log(&cli.termination_log, &line);
            ExitCode::FAILURE
        }
    }
}

async fn run(command: &Command) -> Result<manifest::Manifest, s3::Error> {
    match command {
        Command::Fetch(a) => {
            let store = s3::Store::new(&a.location.to_config())?;
            let presigned = match &a.url_env {
                None => None,
                Some(var) => Some(presigned_url(var, &a.location)?),
            };
            let expect = s3::Expect {
                size: a.size,
                sha256: a.sha256.clone(),
                presigned,
            };
            match (&a.key, &a.prefix) {
                (Some(key), _) => store.fetch_object(key, &a.dest, &expect).await,
                (None, Some(prefix)) => store.fetch_prefix(prefix, &a.dest).await,
                (None, None) => Err(s3::Error::Usage("give --key or --prefix".into())),
            }
        }
        Command::Push(a) => {
            // Checked before waiting, so a bad URL, missing credentials or URLs show at once.
            let mut config = a.location.to_config();
            config.part_size = a.part_size_mib.saturating_mul(1 << 20);
            let store = s3::Store::new(&config)?;
            let urls = match &a.urls_env {
                Some(var) => Some(presigned_urls(var, &a.location)?),
                None => None,
            };
            if a.wait_for_sigterm {
                wait_for_sigterm().await?;
            }
            if a.wait_for_workload {
                workload::wait_for_exit(
                    std::path::Path::new("/proc"),
                    std::time::Duration::from_secs(1),
                )
                .await?;
            }
            match &urls {
                Some(urls) => store.push_presigned(&a.src, &a.prefix, urls).await,
                None => store.push_dir(&a.src, &a.prefix).await,
            }
        }
    }
}

/// The presigned URL in the environment variable `var`; its text never goes into a message (it
/// grants access until it expires).
fn presigned_url(var: &str, location: &Location) -> Result<url::Url, s3::Error> {
    let raw = std::env::var(var).map_err(|_| {
        s3::Error::Usage(format!(
            "presigned URL missing: {var} is not set (the hub seals it into the job's credentials Secret)"
        ))
    })?;
    let url = url::Url::parse(raw.trim()).map_err(|e| s3::Error::BadUrl {
        endpoint: location.endpoint.clone(),
        bucket: location.bucket.clone(),
        reason: format!("the presigned URL in {var} does not parse: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(s3::Error::BadUrl {
            endpoint: location.endpoint.clone(),
            bucket: location.bucket.clone(),
            reason: format!("the presigned URL in {var} is not http(s)"),
        });
    }
    Ok(url)
}

/// The PUT URLs, by object key, in the environment variable `var` (a JSON object); like
/// [`presigned_url`], no URL's text goes into a message.
fn presigned_urls(
    var: &str,
    location: &Location,
) -> Result<std::collections::BTreeMap<String, url::Url>, s3::Error> {
    let raw = std::env::var(var).map_err(|_| {
        s3::Error::Usage(format!(
            "presigned URLs missing: {var} is not set (the hub seals them into the job's credentials Secret)"
        ))
    })?;
    let bad = |reason: String| s3::Error::BadUrl {
        endpoint: location.endpoint.clone(),
        bucket: location.bucket.clone(),
        reason,
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&raw)
        .map_err(|e| bad(format!("{var} is not a JSON object of key to URL: {e}")))?;
    map.into_iter()
        .map(|(key, raw)| {
            let url = url::Url::parse(raw.trim()).map_err(|e| {
                bad(format!(
                    "the presigned URL for {key:?} in {var} does not parse: {e}"
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad(format!(
                    "the presigned URL for {key:?} in {var} is not http(s)"
                )));
            }
            Ok((key, url))
        })
        .collect()
}

async fn wait_for_sigterm() -> Result<(), s3::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| s3::Error::Usage(format!("cannot wait for SIGTERM: {e}")))?;
    term.recv().await;
    eprintln!("gpufed-data: SIGTERM: uploading");
    Ok(())
}

impl Location {
    fn to_config(&self) -> s3::Config {
        s3::Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            require_credentials: self.require_credentials,
            url_ttl: std::time::Duration::from_secs(self.url_ttl_secs),
            part_size: s3::multipart::DEFAULT_PART,
        }
    }
}
