//! Reaching the hub the way kubectl does: the kubeconfig from `--kubeconfig`, else `$KUBECONFIG`,
//! else `~/.kube/config` (else, inside a pod, the in-cluster config), with `--context`, and the
//! namespace from `-n`, else the context's, else `default`.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::GlobalFlags;
use crate::error::{Error, Result};

/// A client for the hub and what the messages need to know about it.
#[derive(Clone)]
pub struct Hub {
    /// The client.
    pub client: Client,
    /// The apiserver URL, for error messages.
    pub server: String,
    /// The namespace of namespaced calls.
    pub namespace: String,
}

/// Loads the configuration the flags select and builds a client (no call is made yet).
pub async fn connect(flags: &GlobalFlags) -> Result<Hub> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        ..Default::default()
    };
    let kube_err = |e: kube::config::KubeconfigError| Error::Kubeconfig(e.to_string());
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(kube_err)?
        }
        None => match Kubeconfig::read() {
            Ok(kc) => Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(kube_err)?,
            // Like kubectl in a pod: no kubeconfig and no context asked for means in-cluster.
            Err(e) if flags.context.is_none() => {
                Config::incluster().map_err(|_| Error::Kubeconfig(e.to_string()))?
            }
            Err(e) => return Err(kube_err(e)),
        },
    };
    build(config, flags)
}

fn build(mut config: Config, flags: &GlobalFlags) -> Result<Hub> {
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    config.reset_reader_on_write = true;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let namespace = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| Error::Kubeconfig(format!("cannot build a client for {server}: {e}")))?;
    Ok(Hub {
        client,
        server,
        namespace,
    })
}
