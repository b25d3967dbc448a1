//! Why a fetch or push failed, in words that name what to fix: these messages end in the job's
//! status.

use std::path::{Path, PathBuf};

use crate::paths;

/// Why a fetch or push failed. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Wrong arguments.
    #[error("{0}")]
    Usage(String),
    /// The endpoint is not an http(s) URL with a host, or the bucket cannot be addressed.
    #[error("bad storage URL {endpoint:?} (bucket {bucket:?}): {reason}")]
    BadUrl {
        /// Endpoint as given.
        endpoint: String,
        /// Bucket as given.
        bucket: String,
        /// What is wrong.
        reason: String,
    },
    /// Credentials were required but not given.
    #[error(
        "storage credentials missing: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set; the credentials Secret must have both keys"
    )]
    MissingCredentials,
    /// The service could not be reached.
    #[error("storage endpoint {endpoint} unreachable: {reason}")]
    Unreachable {
        /// Endpoint as given.
        endpoint: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// The service answered with an error.
    #[error("{op} s3://{bucket}/{key}: HTTP {status}{code}")]
    Status {
        /// What was attempted (GET, PUT, LIST).
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Key or prefix.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code and message from the body, when there is one (e.g. `: AccessDenied`).
        code: String,
    },
    /// The content is not what the job said it would be.
    #[error("s3://{bucket}/{key}: {what} mismatch: expected {expected}, got {got}")]
    Mismatch {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// Expected value.
        expected: String,
        /// Actual value.
        got: String,
    },
    /// A key or file name that cannot be mapped safely.
    #[error(transparent)]
    Path(#[from] paths::PathError),
    /// A listing the service returned that cannot be parsed.
    #[error("LIST s3://{bucket}/{prefix}: unreadable answer: {reason}")]
    BadListing {
        /// Bucket.
        bucket: String,
        /// Prefix.
        prefix: String,
        /// Parser error.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file too large to upload.
    #[error("{path}: {size} bytes is more than {limit}; {fix}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit it exceeds, in words.
        limit: &'static str,
        /// What to do about it.
        fix: &'static str,
    },
    /// A presigned output's directory holds a file whose key the hub signed no URL for.
    #[error(
        "{path}: not among the output's files, so there is no presigned URL for s3://{bucket}/{key}; add it to outputs[].files, or write it outside the output's path"
    )]
    NotDeclared {
        /// The file.
        path: PathBuf,
        /// Bucket.
        bucket: String,
        /// The key it would have.
        key: String,
    },
    /// A presigned output's file was not written.
    #[error(
        "s3://{bucket}/{key}: listed in outputs[].files but the workload wrote no such file under the output's path"
    )]
    NotWritten {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A multipart upload went wrong in a way the service did not report as an HTTP error.
    #[error("multipart upload to s3://{bucket}/{key}: {reason}")]
    Multipart {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// The file changed size while it was being uploaded.
    #[error(
        "{path} changed while it was uploaded: {expected} bytes at the start, {got} read; upload only files the workload has finished writing"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// Size when the upload began.
        expected: u64,
        /// Bytes read.
        got: u64,
    },
    /// A multipart upload failed and could not be aborted either: its parts stay in the bucket
    /// until a lifecycle rule removes them.
    #[error(
        "{cause}; aborting multipart upload {upload_id} failed too ({abort}), so its parts stay in the bucket until removed (AbortMultipartUpload, or a lifecycle rule AbortIncompleteMultipartUpload)"
    )]
    AbortFailed {
        /// Why the upload failed.
        cause: Box<Error>,
        /// The upload left behind.
        upload_id: String,
        /// Why the abort failed.
        abort: Box<Error>,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

impl Error {
    /// For `map_err`: an I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }
}
