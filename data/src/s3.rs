//! Talking to the S3-compatible service: presigned URLs from `rusty-s3`, requests through
//! `reqwest`, content hashed while it streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::manifest::{Manifest, Object};
use crate::paths;

mod error;
pub mod multipart;
mod presigned;

pub use error::Error;

/// A single PUT carries at most 5 GiB (S3's limit); larger files go in a multipart upload.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

/// Where the objects are and how to sign for them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Fail without credentials in the environment.
    pub require_credentials: bool,
    /// Lifetime of each presigned URL.
    pub url_ttl: Duration,
    /// Files larger than this are uploaded in parts of this size (5 MiB to 5 GiB, see
    /// [`multipart::DEFAULT_PART`]).
    pub part_size: u64,
}

/// What a fetched object must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Size in bytes.
    pub size: Option<u64>,
    /// sha256, hex.
    pub sha256: Option<String>,
    /// A GET URL presigned elsewhere (by the hub, ADR 0029) to use instead of signing one: the
    /// helper then needs no credentials.
    pub presigned: Option<url::Url>,
}

/// One bucket on one service.
pub struct Store {
    bucket: Bucket,
    credentials: Option<Credentials>,
    endpoint: String,
    client: reqwest::Client,
    ttl: Duration,
    part_size: u64,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The `<Code>` and `<Message>` of an S3 error body, as `: Code (Message)`.
pub fn s3_error_code(body: &str) -> String {
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&close)? + start;
        Some(body[start..end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) if !m.is_empty() => format!(": {c} ({m})"),
        (Some(c), _) => format!(": {c}"),
        _ => String::new(),
    }
}

impl Store {
    /// Checks the URL and credentials; makes no request.
    pub fn new(cfg: &Config) -> Result<Store, Error> {
        let bad = |reason: String| Error::BadUrl {
            endpoint: cfg.endpoint.clone(),
            bucket: cfg.bucket.clone(),
            reason,
        };
        let url = url::Url::parse(&cfg.endpoint).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?}; use https:// (or http://)",
                url.scheme()
            )));
        }
        let plain_http = url.scheme() == "http";
        let part_size = multipart::check_part_size(cfg.part_size)?;
        let bucket = Bucket::new(url, UrlStyle::Path, cfg.bucket.clone(), cfg.region.clone())
            .map_err(|e| bad(e.to_string()))?;
        let credentials = Credentials::from_env();
        if cfg.require_credentials && credentials.is_none() {
            return Err(Error::MissingCredentials);
        }
        // reqwest is built without a bundled crypto provider (see the workspace Cargo.toml): ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if plain_http {
            // No TLS, so no roots: an image without a CA bundle still reaches an http:// endpoint
            // (the system's roots are otherwise loaded, and required, at start).
            builder = builder.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        let client = builder.build().map_err(|e| Error::Client(chain(&e)))?;
        Ok(Store {
            bucket,
            credentials,
            endpoint: cfg.endpoint.clone(),
            client,
            ttl: cfg.url_ttl,
            part_size,
        })
    }

    /// A transport error, without its URL: a presigned URL grants access until it expires, so it
    /// must not end up in a termination message or the job's status.
    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint.clone(),
            reason: chain(&e.without_url()),
        }
    }

    /// Sends `req` (`op` on `key`): a transport error is [`Self::unreachable`], a status other
    /// than success is [`Error::Status`] with the S3 error code.
    async fn send(
        &self,
        op: &'static str,
        key: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.check(op, key, resp).await
    }

    async fn check(
        &self,
        op: &'static str,
        key: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, Error> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Status {
            op,
            bucket: self.bucket.name().to_string(),
            key: key.to_string(),
            status,
            code: s3_error_code(&body),
        })
    }

    /// Downloads one object into `dest/<last segment of key>`, checking `expect`.
    pub async fn fetch_object(
        &self,
        key: &str,
        dest: &Path,
        expect: &Expect,
    ) -> Result<Manifest, Error> {
        let rel = paths::file_name_for_key(key)?;
        let obj = self.download(key, &dest.join(rel), expect).await?;
        Ok(Manifest {
            bucket: self.bucket.name().to_string(),
            objects: vec![obj],
            omitted: 0,
        })
    }

    /// Downloads every object under `prefix` into `dest`, by key relative to the prefix.
    pub async fn fetch_prefix(&self, prefix: &str, dest: &Path) -> Result<Manifest, Error> {
        let prefix = paths::directory_prefix(prefix);
        let prefix = prefix.as_str();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, self.credentials.as_ref());
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(self.ttl);
            let resp = self.send("LIST", prefix, self.client.get(url)).await?;
            let body = resp.text().await.map_err(|e| self.unreachable(e))?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| Error::BadListing {
                bucket: self.bucket.name().to_string(),
                prefix: prefix.to_string(),
                reason: e.to_string(),
            })?;
            for c in page.contents {
                if let Some(rel) = paths::relative_for_prefix(prefix, &c.key)? {
                    keys.push((c.key, rel, c.size));
                }
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        let mut objects = Vec::with_capacity(keys.len());
        for (key, rel, size) in keys {
            let expect = Expect {
                size,
                sha256: None,
                presigned: None,
            };
            objects.push(self.download(&key, &dest.join(rel), &expect).await?);
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Manifest {
            bucket: self.bucket.name().to_string(),
            objects,
            omitted: 0,
        })
    }

    async fn download(&self, key: &str, path: &Path, expect: &Expect) -> Result<Object, Error> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(Error::io("create directory", dir))?;
        }
        let url = match &expect.presigned {
            Some(url) => url.clone(),
            None => self
                .bucket
                .get_object(self.credentials.as_ref(), key)
                .sign(self.ttl),
        };
        let resp = self.send("GET", key, self.client.get(url)).await?;
        // Written beside the target and renamed only once checked: a failed fetch leaves no file
        // the workload could mistake for the input.
        let partial = path.with_extension("gpufed-partial");
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(Error::io("create", &partial))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(Error::io("write", &partial))?;
        }
        file.flush().await.map_err(Error::io("write", &partial))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        let mismatch = |what, expected: String, got: String| Error::Mismatch {
            bucket: self.bucket.name().to_string(),
            key: key.to_string(),
            what,
            expected,
            got,
        };
        let check = match (expect.size, &expect.sha256) {
            (Some(want), _) if want != size => {
                Err(mismatch("size", want.to_string(), size.to_string()))
            }
            (_, Some(want)) if !want.eq_ignore_ascii_case(&sha256) => {
                Err(mismatch("sha256", want.to_lowercase(), sha256.clone()))
            }
            _ => Ok(()),
        };
        if let Err(e) = check {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, path)
            .await
            .map_err(Error::io("rename", path))?;
        Ok(Object {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// Uploads every regular file under `src` to `prefix`, sorted by key.
    pub async fn push_dir(&self, src: &Path, prefix: &str) -> Result<Manifest, Error> {
        let files = regular_files(src)?;
        let mut objects = Vec::with_capacity(files.len());
        for rel in files {
            let key = paths::key_for(prefix, &rel)?;
            objects.push(self.upload(&src.join(&rel), &key).await?);
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Manifest {
            bucket: self.bucket.name().to_string(),
            objects,
            omitted: 0,
        })
    }

    async fn upload(&self, path: &Path, key: &str) -> Result<Object, Error> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(Error::io("stat", path))?
            .len();
        if size > multipart::MAX_OBJECT {
            return Err(Error::TooLarge {
                path: path.to_path_buf(),
                size,
                limit: "an S3 object holds (5 TiB)",
                fix: "split it into smaller files",
            });
        }
        if size > self.part_size {
            let part = multipart::part_size_for(size, self.part_size);
            return self.upload_multipart(path, key, size, part).await;
        }
        let url = self
            .bucket
            .put_object(self.credentials.as_ref(), key)
            .sign(self.ttl);
        self.put_single(path, key, url).await
    }

    /// Uploads the file at `path` to `key` in one PUT to `url`.
    async fn put_single(&self, path: &Path, key: &str, url: url::Url) -> Result<Object, Error> {
        // Hashed first (the manifest reports what was read), then streamed from the file.
        let (size, sha256) = hash_file(path).await?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(Error::io("open", path))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let put = self
            .client
            .put(url)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        self.send("PUT", key, put).await?;
        Ok(Object {
            key: key.to_string(),
            size,
            sha256,
        })
    }
}

async fn hash_file(path: &Path) -> Result<(u64, String), Error> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(Error::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Regular files under `root`, relative to it, sorted; symbolic links and other kinds are skipped.
pub fn regular_files(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(Error::io("read directory", &dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("read directory", &dir))?;
            let kind = entry
                .file_type()
                .map_err(Error::io("stat", &entry.path()))?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_error_code_and_message_are_taken_from_the_body() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
        assert_eq!(
            s3_error_code(body),
            ": NoSuchKey (The specified key does not exist.)"
        );
        assert_eq!(
            s3_error_code("<Error><Code>AccessDenied</Code></Error>"),
            ": AccessDenied"
        );
        assert_eq!(s3_error_code("not xml"), "");
    }

    #[test]
    fn a_bad_endpoint_is_refused_before_any_request() {
        let cfg = |endpoint: &str| Config {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: "data".into(),
            require_credentials: false,
            url_ttl: Duration::from_secs(60),
            part_size: multipart::DEFAULT_PART,
        };
        for e in ["s3://data/x", "not a url", "ftp://host/"] {
            match Store::new(&cfg(e)) {
                Err(Error::BadUrl { endpoint, .. }) => assert_eq!(endpoint, e),
                Err(other) => panic!("{e}: {other}"),
                Ok(_) => panic!("{e}: accepted"),
            }
        }
        assert!(Store::new(&cfg("http://127.0.0.1:9000")).is_ok());
    }

    #[test]
    fn regular_files_are_listed_recursively_without_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ckpt/inner")).unwrap();
        std::fs::write(d.path().join("b.txt"), b"b").unwrap();
        std::fs::write(d.path().join("ckpt/inner/a.bin"), b"a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        assert_eq!(
            regular_files(d.path()).unwrap(),
            vec![PathBuf::from("b.txt"), PathBuf::from("ckpt/inner/a.bin")]
        );
    }
}
