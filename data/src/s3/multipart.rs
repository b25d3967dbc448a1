//! Multipart uploads, for files larger than one part (ADR 0029, "As built"): S3 takes at most
//! 5 GiB in one PUT, and up to 5 TiB in at most 10,000 parts of 5 MiB to 5 GiB each.
//!
//! Each part is read from the file into memory, hashed (MD5 for the part, sha256 for the whole
//! file), and sent with `Content-MD5`, which the service checks before it stores the part; its
//! `ETag` must then be that MD5 (unless the bucket encrypts with KMS or customer keys, where S3's
//! part ETags are not MD5s). The digest in the manifest is the sha256 of the bytes sent, and the
//! file must still have the size it had at the start. Any failure aborts the upload, so no parts
//! are left behind in the bucket (the abort's own failure is reported with the upload's id).

use std::path::Path;

use base64::Engine;
use md5::Md5;
use rusty_s3::S3Action;
use rusty_s3::actions::{CompleteMultipartUpload, CompleteMultipartUploadResponse};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{Error, Store};
use crate::manifest::Object;

/// Smallest part S3 takes (all but the last part).
pub const MIN_PART: u64 = 5 << 20;
/// Largest part S3 takes.
pub const MAX_PART: u64 = super::MAX_SINGLE_PUT;
/// Most parts of one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest object S3 holds.
pub const MAX_OBJECT: u64 = 5 << 40;
/// Default part size: files up to this size go in one PUT. 64 MiB parts reach 625 GiB in
/// 10,000 parts; larger files get larger parts.
pub const DEFAULT_PART: u64 = 64 << 20;

/// The part size for a file of `size` bytes: `configured`, grown to the next MiB when the file
/// would otherwise need more than 10,000 parts.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    configured.max(needed).min(MAX_PART)
}

/// Checks a configured part size against S3's limits.
pub fn check_part_size(part: u64) -> Result<u64, Error> {
    if (MIN_PART..=MAX_PART).contains(&part) {
        Ok(part)
    } else {
        Err(Error::Usage(format!(
            "part size {part} bytes is outside S3's limits: give 5 MiB to 5 GiB (--part-size-mib 5 to 5120)"
        )))
    }
}

/// Is this part ETag expected to be the part's MD5? Not when the bucket encrypts with KMS or a
/// customer key (S3 documents those ETags as opaque).
fn etag_is_md5(resp: &reqwest::Response) -> bool {
    let h = resp.headers();
    let kms = h
        .get("x-amz-server-side-encryption")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("aws:kms"));
    !kms && !h.contains_key("x-amz-server-side-encryption-customer-algorithm")
}

impl Store {
    /// Uploads the file at `path` (`size` bytes when it was opened) to `key` in parts of
    /// `part_size`, aborting the upload on any failure.
    pub(super) async fn upload_multipart(
        &self,
        path: &Path,
        key: &str,
        size: u64,
        part_size: u64,
    ) -> Result<Object, Error> {
        let url = self
            .bucket
            .create_multipart_upload(self.credentials.as_ref(), key)
            .sign(self.ttl);
        let resp = self.send("POST", key, self.client.post(url)).await?;
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        let created =
            rusty_s3::actions::CreateMultipartUpload::parse_response(&body).map_err(|e| {
                Error::Multipart {
                    bucket: self.bucket.name().to_string(),
                    key: key.to_string(),
                    reason: format!("unreadable CreateMultipartUpload answer: {e}"),
                }
            })?;
        let upload_id = created.upload_id().to_string();
        let result = match self
            .upload_parts(path, key, &upload_id, size, part_size)
            .await
        {
            Ok((etags, sha256)) => self
                .complete(key, &upload_id, &etags)
                .await
                .map(|()| sha256),
            Err(e) => Err(e),
        };
        match result {
            Ok(sha256) => Ok(Object {
                key: key.to_string(),
                size,
                sha256,
            }),
            Err(e) => Err(self.abort(key, &upload_id, e).await),
        }
    }

    async fn upload_parts(
        &self,
        path: &Path,
        key: &str,
        upload_id: &str,
        size: u64,
        part_size: u64,
    ) -> Result<(Vec<String>, String), Error> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(Error::io("open", path))?;
        let mut whole = Sha256::new();
        let mut etags = Vec::new();
        let mut sent: u64 = 0;
        let mut number: u16 = 0;
        while sent < size {
            number += 1;
            let want = part_size.min(size - sent);
            let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            (&mut file)
                .take(want)
                .read_to_end(&mut buf)
                .await
                .map_err(Error::io("read", path))?;
            if buf.len() as u64 != want {
                return Err(changed(path, size, sent + buf.len() as u64));
            }
            whole.update(&buf);
            let md5 = <Md5 as md5::Digest>::digest(&buf);
            let url = self
                .bucket
                .upload_part(self.credentials.as_ref(), key, number, upload_id)
                .sign(self.ttl);
            let put = self
                .client
                .put(url)
                .header(
                    "content-md5",
                    base64::engine::general_purpose::STANDARD.encode(md5),
                )
                .header(reqwest::header::CONTENT_LENGTH, want)
                .body(buf);
            let resp = self.send("PUT", key, put).await?;
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_default();
            let expected = hex::encode(md5);
            if etag.is_empty() || (etag_is_md5(&resp) && etag.trim_matches('"') != expected) {
                return Err(Error::Multipart {
                    bucket: self.bucket.name().to_string(),
                    key: key.to_string(),
                    reason: format!(
                        "part {number}: ETag {etag:?} is not the part's MD5 {expected}"
                    ),
                });
            }
            etags.push(etag);
            sent += want;
        }
        // The file must end where it ended when the upload began.
        let mut probe = [0u8; 1];
        if file
            .read(&mut probe)
            .await
            .map_err(Error::io("read", path))?
            != 0
        {
            return Err(changed(path, size, size + 1));
        }
        Ok((etags, hex::encode(whole.finalize())))
    }

    async fn complete(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), Error> {
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            self.credentials.as_ref(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(self.ttl);
        let body = action.body();
        let resp = self
            .send("POST", key, self.client.post(url).body(body))
            .await?;
        // S3 may answer 200 and still fail: the error is then in the body.
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        if CompleteMultipartUploadResponse::parse(&text).is_ok() {
            return Ok(());
        }
        Err(Error::Multipart {
            bucket: self.bucket.name().to_string(),
            key: key.to_string(),
            reason: format!(
                "CompleteMultipartUpload failed{}",
                super::s3_error_code(&text)
            ),
        })
    }

    /// Aborts the upload after `cause`; returns `cause`, with the abort's failure when it failed.
    async fn abort(&self, key: &str, upload_id: &str, cause: Error) -> Error {
        let url = self
            .bucket
            .abort_multipart_upload(self.credentials.as_ref(), key, upload_id)
            .sign(self.ttl);
        match self.send("DELETE", key, self.client.delete(url)).await {
            Ok(_) => cause,
            Err(abort) => Error::AbortFailed {
                cause: Box::new(cause),
                upload_id: upload_id.to_string(),
                abort: Box::new(abort),
            },
        }
    }
}

fn changed(path: &Path, expected: u64, got: u64) -> Error {
    Error::Changed {
        path: path.to_path_buf(),
        expected,
        got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_past_the_configured_size_only_when_10000_would_not_do() {
        assert_eq!(part_size_for(1 << 30, DEFAULT_PART), DEFAULT_PART);
        // 1 TiB in 64 MiB parts is 16,384 parts: grown to 105 MiB (ceil(1 TiB / 10,000) in MiB).
        let part = part_size_for(1 << 40, DEFAULT_PART);
        assert_eq!(part, 105 << 20);
        assert!((1u64 << 40).div_ceil(part) <= MAX_PARTS);
        // The largest object fits in 10,000 parts within the part limit.
        let part = part_size_for(MAX_OBJECT, MIN_PART);
        assert!(MAX_OBJECT.div_ceil(part) <= MAX_PARTS && part <= MAX_PART);
    }

    #[test]
    fn a_part_size_outside_s3s_limits_is_refused() {
        assert!(check_part_size(MIN_PART).is_ok());
        assert!(check_part_size(MAX_PART).is_ok());
        for bad in [MIN_PART - 1, MAX_PART + 1, 0] {
            let e = check_part_size(bad).unwrap_err().to_string();
            assert!(e.contains("give 5 MiB to 5 GiB"), "{e}");
        }
    }
}
