//! The result a run reports: the objects it fetched or pushed, or why it failed, as one JSON line
//! that fits the container's termination message.

use std::path::Path;

use serde::Serialize;

/// The kubelet keeps at most 4096 bytes of a termination message.
pub const TERMINATION_LIMIT: usize = 4096;

/// One object fetched or pushed.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Object {
    /// Key in the bucket.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, 64 lowercase hex digits.
    pub sha256: String,
}

/// What a successful run did.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    /// Bucket of the objects.
    pub bucket: String,
    /// Objects, sorted by key.
    pub objects: Vec<Object>,
    /// Objects left out of this copy of the manifest to fit the termination message.
    #[serde(skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Manifest {
    /// The manifest as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| failure_line(&format!("manifest: {e}")))
    }

    /// The manifest as one JSON line of at most `limit` bytes: the first objects by key, and the
    /// number left out.
    pub fn fit(&self, limit: usize) -> String {
        let mut m = self.clone();
        loop {
            let s = m.to_json();
            if s.len() <= limit || m.objects.is_empty() {
                return s;
            }
            // Drop enough at once to converge fast on a long list, at least one.
            let over = s.len() - limit;
            let per = (s.len() / m.objects.len()).max(1);
            let drop = over.div_ceil(per).clamp(1, m.objects.len());
            m.objects.truncate(m.objects.len() - drop);
            m.omitted += drop;
        }
    }
}

/// A failure as one JSON line, cut to fit the termination message.
pub fn failure_line(reason: &str) -> String {
    let mut r: String = reason.to_string();
    loop {
        let s = serde_json::json!({ "error": r }).to_string();
        if s.len() <= TERMINATION_LIMIT || r.is_empty() {
            return s;
        }
        let mut cut = r.len().saturating_sub(s.len() - TERMINATION_LIMIT + 3);
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
        r.push_str("...");
    }
}

/// Writes `line` to the termination log; skipped when its directory does not exist (a run
/// outside a pod), reported on stderr when the write fails.
pub fn write_termination_log(path: &Path, line: &str) {
    if path.parent().is_some_and(|d| !d.is_dir()) {
        return;
    }
    if let Err(e) = std::fs::write(path, line) {
        eprintln!("gpufed-data: cannot write {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize) -> Manifest {
        Manifest {
            bucket: "b".into(),
            objects: (0..n)
                .map(|i| Object {
                    key: format!("runs/42/ckpt/shard-{i:05}.safetensors"),
                    size: 1 << 30,
                    sha256: "ab".repeat(32),
                })
                .collect(),
            omitted: 0,
        }
    }

    #[test]
    fn a_short_manifest_is_reported_whole() {
        let m = manifest(3);
        assert_eq!(m.fit(TERMINATION_LIMIT), m.to_json());
        assert!(!m.to_json().contains("omitted"));
    }

    #[test]
    fn a_long_manifest_is_cut_to_the_limit_and_says_how_many_are_left_out() {
        let m = manifest(500);
        let s = m.fit(TERMINATION_LIMIT);
        assert!(s.len() <= TERMINATION_LIMIT, "{}", s.len());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let kept = v["objects"].as_array().unwrap().len();
        assert!(kept > 10, "kept {kept}");
        assert_eq!(kept + v["omitted"].as_u64().unwrap() as usize, 500);
        assert_eq!(
            v["objects"][0]["key"],
            "runs/42/ckpt/shard-00000.safetensors"
        );
    }

    #[test]
    fn a_long_failure_is_cut_on_a_character_boundary() {
        let s = failure_line(&"é".repeat(5000));
        assert!(s.len() <= TERMINATION_LIMIT);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!(v["error"].as_str().unwrap().ends_with("..."));
    }
}
