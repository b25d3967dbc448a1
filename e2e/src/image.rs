//! OCI images built without Docker, for the containerd of a real-node member.
//!
//! Nothing can be pulled here, so every image a test runs is written by [`Image`]: files from
//! this machine (Debian's static busybox, the project's own binaries with the shared libraries
//! they load) packed as one uncompressed layer into an OCI image layout tarball (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), which `ctr images import` loads into a containerd. The
//! Dockerfiles in `deploy/images/` stay the production recipe; this is how tests get the same
//! binaries into images.
//!
//! Images are named as CRI looks them up (`docker.io/gpufed/<name>:e2e`); pods use them with
//! `imagePullPolicy: Never` or the default `IfNotPresent`, so nothing is ever fetched.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Error;

/// Tag of every image the harness builds.
pub const TAG: &str = "e2e";
/// The workload image: static busybox with its applets, `/tmp` and a `nobody` user.
pub const BUSYBOX: &str = "docker.io/gpufed/busybox:e2e";
/// The CRI sandbox ("pause") image: busybox sleeping for ever.
pub const PAUSE: &str = "docker.io/gpufed/pause:e2e";
/// The member's data helper image (`gpufed-data` at `/usr/local/bin`, ADR 0029), which the
/// harness's agents are given as `--data-image`; a test that runs jobs with inputs or outputs on
/// a real node imports it ([`Image::data`]).
pub const DATA: &str = "docker.io/gpufed/data:e2e";

/// One entry of the image's single layer.
#[derive(Clone, Debug)]
enum Entry {
    File { src: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// An image to write: a layer made of files, and the run configuration.
#[derive(Clone, Debug)]
pub struct Image {
    name: String,
    entries: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    user: Option<String>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Io { what, source: e }
}

impl Image {
    /// An empty image named `name` (a full reference, e.g. `docker.io/gpufed/busybox:e2e`).
    pub fn new(name: &str) -> Image {
        let mut image = Image {
            name: name.to_string(),
            entries: BTreeMap::new(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            user: None,
        };
        image = image.dir("tmp", 0o1777);
        image
    }

    /// The workload image: busybox (`busybox`) with a link for each applet in `/bin`, `/tmp`, and
    /// `/etc/passwd` and `/etc/group` that name root and nobody.
    pub fn busybox(name: &str, busybox: &Path) -> Result<Image, Error> {
        let out = std::process::Command::new(busybox)
            .arg("--list")
            .output()
            .map_err(io(format!("running {} --list", busybox.display())))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "{} --list failed: {}",
                busybox.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut image = Image::new(name)
            .file(busybox, "bin/busybox", 0o755)
            .bytes(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                0o644,
            )
            .bytes("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644);
        for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if applet != "busybox" {
                image = image.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        Ok(image.cmd(&["/bin/sh"]))
    }

    /// The data helper image [`DATA`]: the workspace's `gpufed-data` binary (`helper`) where the
    /// agent runs it, as the member chart's `jobs.dataImage` would hold it, with this machine's
    /// CA bundle where the production image (distroless) has its own (the helper needs roots for
    /// `https://` endpoints only).
    pub fn data(helper: &Path) -> Result<Image, Error> {
        const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
        if !Path::new(CA_BUNDLE).is_file() {
            return Err(Error::Other(format!(
                "{CA_BUNDLE} is missing: install the ca-certificates package"
            )));
        }
        Ok(Image::new(DATA)
            .binary(helper, "usr/local/bin/gpufed-data")?
            .file(
                Path::new(CA_BUNDLE),
                CA_BUNDLE.trim_start_matches('/'),
                0o644,
            )
            .entrypoint(&["/usr/local/bin/gpufed-data"]))
    }

    /// A binary of ours (or any ELF program) at `dest`, with every shared library `ldd` says it
    /// loads at the same path, so it runs in an image that has nothing else. A static binary
    /// brings nothing but itself.
    pub fn binary(mut self, src: &Path, dest: &str) -> Result<Image, Error> {
        for lib in shared_libraries(src)? {
            let inside = lib.to_string_lossy().trim_start_matches('/').to_string();
            // Follow the link so the layer holds the library itself under the name it is loaded by.
            let real =
                std::fs::canonicalize(&lib).map_err(io(format!("resolving {}", lib.display())))?;
            self = self.file(&real, &inside, 0o755);
        }
        Ok(self.file(src, dest, 0o755))
    }

    /// Adds the file `src` at `dest` (a path inside the image, without the leading `/`).
    pub fn file(mut self, src: &Path, dest: &str, mode: u32) -> Image {
        self.add_parents(dest);
        self.entries.insert(
            dest.to_string(),
            Entry::File {
                src: src.to_path_buf(),
                mode,
            },
        );
        self
    }

    /// Adds a file with `data` at `dest`.
    pub fn bytes(mut self, dest: &str, data: &[u8], mode: u32) -> Image {
        self.add_parents(dest);
        self.entries.insert(
            dest.to_string(),
            Entry::Bytes {
                data: data.to_vec(),
                mode,
            },
        );
        self
    }

    /// Adds a directory.
    pub fn dir(mut self, dest: &str, mode: u32) -> Image {
        self.add_parents(dest);
        self.entries.insert(dest.to_string(), Entry::Dir { mode });
        self
    }

    /// Adds a symbolic link at `dest` pointing to `target`.
    pub fn symlink(mut self, dest: &str, target: &str) -> Image {
        self.add_parents(dest);
        self.entries.insert(
            dest.to_string(),
            Entry::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint(mut self, args: &[&str]) -> Image {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the default command.
    pub fn cmd(mut self, args: &[&str]) -> Image {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds an environment variable (`KEY=VALUE`) to the image's config, as a provider that
    /// builds its own image would.
    pub fn env(mut self, var: &str) -> Image {
        self.env.push(var.to_string());
        self
    }

    /// Sets the user the image runs as (e.g. `65534:65534`).
    pub fn user(mut self, user: &str) -> Image {
        self.user = Some(user.to_string());
        self
    }

    /// The image's reference.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn add_parents(&mut self, dest: &str) {
        let mut path = Path::new(dest).parent();
        while let Some(p) = path.filter(|p| !p.as_os_str().is_empty()) {
            let key = p.to_string_lossy().to_string();
            self.entries
                .entry(key)
                .or_insert(Entry::Dir { mode: 0o755 });
            path = p.parent();
        }
    }

    /// The layer as an uncompressed tar (entries in path order, owned by root, time 0, so the
    /// same inputs always give the same digest).
    fn layer(&self) -> Result<Vec<u8>, Error> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            let what = || format!("adding {path} to the layer of {}", self.name);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(io(what()))?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, path, target)
                        .map_err(io(what()))?;
                }
                Entry::File { src, mode } => {
                    let data =
                        std::fs::read(src).map_err(io(format!("reading {}", src.display())))?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())
                        .map_err(io(what()))?;
                }
                Entry::Bytes { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, path, data.as_slice())
                        .map_err(io(what()))?;
                }
            }
        }
        tar.into_inner()
            .map_err(io(format!("finishing the layer of {}", self.name)))
    }

    /// Writes the image as an OCI image layout tarball to `out` and returns the manifest digest.
    pub fn write_oci(&self, out: &Path) -> Result<String, Error> {
        let layer = self.layer()?;
        let layer_digest = digest(&layer);
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": self.env},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "gpufed-e2e image builder"}],
        });
        if !self.entrypoint.is_empty() {
            config["config"]["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            config["config"]["Cmd"] = json!(self.cmd);
        }
        if let Some(u) = &self.user {
            config["config"]["User"] = json!(u);
        }
        let config = to_vec(&config)?;
        let manifest = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer.len()}],
        }))?;
        let manifest_digest = digest(&manifest);
        let tag = self.name.rsplit_once(':').map(|(_, t)| t).unwrap_or(TAG);
        let index = to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }))?;

        let file = std::fs::File::create(out).map_err(io(format!("creating {}", out.display())))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let mut put = |path: String, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, &path, data)
                .map_err(io(format!("writing {path} into {}", out.display())))
        };
        put("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        put("index.json".into(), &index)?;
        for blob in [&layer, &config, &manifest] {
            let hex = digest(blob).trim_start_matches("sha256:").to_string();
            put(format!("blobs/sha256/{hex}"), blob)?;
        }
        let mut w = tar
            .into_inner()
            .map_err(io(format!("finishing {}", out.display())))?;
        w.flush()
            .map_err(io(format!("writing {}", out.display())))?;
        Ok(manifest_digest)
    }
}

fn to_vec(v: &serde_json::Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Other(format!("encoding image JSON: {e}")))
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The shared libraries (and the dynamic loader) `program` loads, as `ldd` lists them; empty for
/// a static binary.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(io(format!("running ldd {}", program.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits 1 for a static binary ("not a dynamic executable").
        return Ok(vec![]);
    }
    let mut libs = vec![];
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            return Err(Error::Other(format!(
                "{}: a library it needs is missing: {}",
                program.display(),
                line.trim()
            )));
        }
    }
    Ok(libs)
}

/// Imports the OCI tarball `tar` into the containerd at `socket` (namespace `k8s.io`, where the
/// CRI looks), with `ctr`.
pub fn import(ctr: &Path, socket: &Path, tar: &Path) -> Result<(), Error> {
    let out = std::process::Command::new(ctr)
        .arg(format!("--address={}", socket.display()))
        .args([
            "--namespace=k8s.io",
            "images",
            "import",
            "--no-unpack=false",
        ])
        .arg(tar)
        .output()
        .map_err(io(format!("running {} images import", ctr.display())))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "ctr images import {} failed: {}{}",
            tar.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().to_string();
            let mut data = vec![];
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            out.insert(path, data);
        }
        out
    }

    #[test]
    fn an_oci_layout_names_every_blob_by_its_digest_and_links_config_to_layer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        let image = Image::new("docker.io/gpufed/test:e2e")
            .bytes("etc/hello", b"hi\n", 0o644)
            .symlink("bin/sh", "busybox")
            .cmd(&["/bin/sh"]);
        let manifest_digest = image.write_oci(&out).unwrap();
        let files = entries(&std::fs::read(&out).unwrap());
        assert!(files.contains_key("oci-layout"));
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest(data), format!("sha256:{hex}"), "{path}");
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], manifest_digest);
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "docker.io/gpufed/test:e2e"
        );
        let manifest: serde_json::Value = serde_json::from_slice(
            &files[&format!(
                "blobs/sha256/{}",
                manifest_digest.trim_start_matches("sha256:")
            )],
        )
        .unwrap();
        let config_hex = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let config: serde_json::Value =
            serde_json::from_slice(&files[&format!("blobs/sha256/{config_hex}")]).unwrap();
        // An uncompressed layer's diff id is its digest.
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
        let layer_hex = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let layer = entries(&files[&format!("blobs/sha256/{layer_hex}")]);
        assert_eq!(layer["etc/hello"], b"hi\n");
        assert!(layer.contains_key("tmp/") && layer.contains_key("bin/"));
    }

    #[test]
    fn the_same_inputs_give_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let image = Image::new("docker.io/gpufed/test:e2e").bytes("a", b"1", 0o644);
        let a = image.write_oci(&dir.path().join("a.tar")).unwrap();
        let b = image.write_oci(&dir.path().join("b.tar")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_dynamic_binary_brings_its_libraries_and_loader() {
        // /bin/sh of the build machine is dynamic on Debian (dash); its loader must come along.
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        if libs.is_empty() {
            return; // a static /bin/sh brings nothing, which is also right
        }
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }
}
