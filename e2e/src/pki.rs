//! Certificates for a test cluster, made with rcgen: a serving CA and the apiserver's serving
//! certificate (127.0.0.1, localhost), a client CA whose certificates are users (CN = user name,
//! O = groups; `system:masters` is admin), and the service-account signing key. Also writes
//! kubeconfig files, the form every client (ours, kubectl, helm) understands.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use crate::Error;

/// The key material of one cluster, written under `dir`.
pub struct Pki {
    dir: PathBuf,
    serving_ca: CertifiedIssuer<'static, KeyPair>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::cert)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(Error::cert)?;
    CertifiedIssuer::self_signed(params, key).map_err(Error::cert)
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

impl Pki {
    /// Makes the CAs, the serving certificate and the service-account key, and writes them to `dir`:
    /// `serving-ca.crt`, `apiserver.crt/.key`, `client-ca.crt`, `apiserver-kubelet-client.crt/.key`, `sa.key`, `sa.pub`.
    pub fn create(dir: &Path) -> Result<Pki, Error> {
        let serving_ca = ca("gpufed-e2e-serving-ca")?;
        let client_ca = ca("gpufed-e2e-client-ca")?;

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(Error::cert)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(Error::cert)?;
        let cert = params.signed_by(&key, &serving_ca).map_err(Error::cert)?;

        write(&dir.join("serving-ca.crt"), &serving_ca.pem())?;
        write(&dir.join("apiserver.crt"), &cert.pem())?;
        write(&dir.join("apiserver.key"), &key.serialize_pem())?;
        write(&dir.join("client-ca.crt"), &client_ca.pem())?;

        let pki = Pki {
            dir: dir.to_path_buf(),
            serving_ca,
            client_ca,
        };
        // The apiserver's identity towards kubelets (logs, exec), checked against the client CA.
        let (cert, key) = pki.client_cert("kube-apiserver-kubelet-client", &["system:masters"])?;
        write(&dir.join("apiserver-kubelet-client.crt"), &cert)?;
        write(&dir.join("apiserver-kubelet-client.key"), &key)?;

        let sa = KeyPair::generate().map_err(Error::cert)?;
        write(&dir.join("sa.key"), &sa.serialize_pem())?;
        write(&dir.join("sa.pub"), &sa.public_key_pem())?;
        Ok(pki)
    }

    /// Path of a file written by [`Pki::create`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The serving CA certificate (PEM), for kubeconfigs.
    pub fn serving_ca_pem(&self) -> String {
        self.serving_ca.pem()
    }

    /// A client certificate and key (PEM) for `user` in `groups`.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String), Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::cert)?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(Error::cert)?;
        let cert = params
            .signed_by(&key, &self.client_ca)
            .map_err(Error::cert)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes a kubeconfig for `user` in `groups` to `path`, pointing at `server`.
    pub fn write_user_kubeconfig(
        &self,
        path: &Path,
        cluster: &str,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), Error> {
        let (cert, key) = self.client_cert(user, groups)?;
        let config = kubeconfig(
            cluster,
            server,
            &self.serving_ca_pem(),
            json!({"client-certificate-data": b64(&cert), "client-key-data": b64(&key)}),
        );
        write_yaml(path, &config)
    }
}

/// A kubeconfig document with one cluster, one user and one context.
pub fn kubeconfig(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: serde_json::Value,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": cluster, "user": user}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    })
}

/// Writes `value` as YAML to `path`.
pub fn write_yaml(path: &Path, value: &serde_json::Value) -> Result<(), Error> {
    let text = serde_norway::to_string(value)
        .map_err(|e| Error::Other(format!("serialising YAML: {e}")))?;
    write(path, &text)
}

/// Standard base64 of a string.
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A self-signed certificate for `127.0.0.1` and `localhost` and its key, written under `dir` as
/// `<name>.crt` and `<name>.key` (e.g. for the hub's registration endpoint).
pub fn self_signed_localhost(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| Error::Other(format!("a self-signed certificate: {e}")))?;
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, ck.cert.pem())
        .map_err(|e| Error::Other(format!("{}: {e}", cert.display())))?;
    std::fs::write(&key, ck.signing_key.serialize_pem())
        .map_err(|e| Error::Other(format!("{}: {e}", key.display())))?;
    Ok((cert, key))
}
