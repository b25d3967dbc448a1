//! Object keys to local paths and local paths to keys, with no way out of the target directory.

use std::path::{Path, PathBuf};

/// Why a key cannot become a local path.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PathError {
    /// The key has an empty, `.` or `..` segment, or is empty.
    #[error("object key {0:?} cannot be a file path: empty, `.` or `..` segments are refused")]
    Unsafe(String),
    /// A local file name is not UTF-8, so it cannot be a key.
    #[error("file {0:?} has a name that is not UTF-8 and cannot be an object key")]
    NotUtf8(PathBuf),
}

/// A prefix as a directory: `datasets/v1` means `datasets/v1/` (as `aws s3 cp --recursive`
/// reads it), so it does not also take `datasets/v1-old/...`. Empty stays empty (the bucket).
pub fn directory_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// The path, relative to the destination directory, an object under `prefix` (a directory
/// prefix, see [`directory_prefix`]) is written to. `None` for keys that only mark a directory
/// (ending in `/`).
pub fn relative_for_prefix(prefix: &str, key: &str) -> Result<Option<PathBuf>, PathError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Err(PathError::Unsafe(key.to_string()));
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Ok(None);
    }
    safe_relative(rest, key).map(Some)
}

/// The file name one object (`--key`) is written to: the key's last segment.
pub fn file_name_for_key(key: &str) -> Result<PathBuf, PathError> {
    let last = key.rsplit('/').next().unwrap_or(key);
    safe_relative(last, key)
}

fn safe_relative(rel: &str, key: &str) -> Result<PathBuf, PathError> {
    let mut out = PathBuf::new();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0') {
            return Err(PathError::Unsafe(key.to_string()));
        }
        out.push(seg);
    }
    if out.as_os_str().is_empty() {
        return Err(PathError::Unsafe(key.to_string()));
    }
    Ok(out)
}

/// The key a file at `rel` (relative to the pushed directory) is uploaded to under `prefix`.
pub fn key_for(prefix: &str, rel: &Path) -> Result<String, PathError> {
    let mut segs = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => segs.push(s),
            None => return Err(PathError::NotUtf8(rel.to_path_buf())),
        }
    }
    let joined = segs.join("/");
    if prefix.is_empty() || prefix.ends_with('/') {
        Ok(format!("{prefix}{joined}"))
    } else {
        Ok(format!("{prefix}/{joined}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_a_prefix_become_relative_paths() {
        assert_eq!(
            relative_for_prefix("datasets/v1/", "datasets/v1/train/00.bin"),
            Ok(Some(PathBuf::from("train/00.bin")))
        );
        assert_eq!(directory_prefix("datasets/v1"), "datasets/v1/");
        assert_eq!(directory_prefix("datasets/v1/"), "datasets/v1/");
        assert_eq!(directory_prefix(""), "");
        assert_eq!(
            relative_for_prefix("", "a/b.bin"),
            Ok(Some(PathBuf::from("a/b.bin")))
        );
        // A listing that answers a key outside the prefix is not trusted.
        assert!(relative_for_prefix("datasets/v1/", "other/x").is_err());
        assert_eq!(
            relative_for_prefix("datasets/v1/", "datasets/v1/dir/"),
            Ok(None)
        );
        assert_eq!(
            relative_for_prefix("datasets/v1/", "datasets/v1/"),
            Ok(None)
        );
    }

    #[test]
    fn a_key_that_would_leave_the_directory_is_refused() {
        for key in ["p/../../etc/passwd", "p/./x", "p//x", "p/a/..", "p/x\0y"] {
            assert_eq!(
                relative_for_prefix("p/", key),
                Err(PathError::Unsafe(key.to_string())),
                "{key}"
            );
        }
        assert!(file_name_for_key("a/..").is_err());
        assert!(file_name_for_key("a/").is_err());
        assert_eq!(
            file_name_for_key("weights/model.safetensors"),
            Ok(PathBuf::from("model.safetensors"))
        );
    }

    #[test]
    fn files_become_keys_under_the_prefix() {
        assert_eq!(
            key_for("runs/42/", Path::new("ckpt/step-10.pt")),
            Ok("runs/42/ckpt/step-10.pt".into())
        );
        assert_eq!(
            key_for("runs/42", Path::new("a.bin")),
            Ok("runs/42/a.bin".into())
        );
        assert_eq!(key_for("", Path::new("a.bin")), Ok("a.bin".into()));
    }
}
