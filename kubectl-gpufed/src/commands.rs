//! The commands: each fetches what it needs ([`crate::fetch`]), hands it to its pure view
//! ([`crate::view`]) or encodes the objects (`-o json|yaml`), and returns the text to print.

use std::io::Write as _;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;

use crate::cli::{
    ExplainArgs, GlobalFlags, JobsArgs, JoinArgs, MembersArgs, PaymentsArgs, TopArgs,
};
use crate::connect::Hub;
use crate::error::{Error, Result};
use crate::fetch;
use crate::output::{encode, is_structured, list, object};
use crate::view::{self, join::JoinOptions};

/// `top`.
pub async fn top(hub: &Hub, flags: &GlobalFlags, args: &TopArgs) -> Result<String> {
    let pools = fetch::pools(hub).await?;
    let members = fetch::members(hub).await?;
    let summary = view::top::summarize(&pools, &members, args.pool.as_deref());
    if is_structured(flags.output) {
        return encode(&summary, flags.output);
    }
    Ok(view::top::render(&summary, flags.output.is_wide()))
}

/// `market`.
pub async fn market(hub: &Hub, flags: &GlobalFlags, args: &TopArgs) -> Result<String> {
    let pools = fetch::pools(hub).await?;
    let rows = view::market::summarize(&pools, args.pool.as_deref());
    if is_structured(flags.output) {
        return encode(&rows, flags.output);
    }
    Ok(view::market::render(
        &rows,
        flags.output.is_wide(),
        Timestamp::now(),
    ))
}

/// `jobs`.
pub async fn jobs(hub: &Hub, flags: &GlobalFlags, args: &JobsArgs) -> Result<String> {
    let namespace = (!args.all_namespaces).then_some(hub.namespace.as_str());
    let jobs = match &args.name {
        Some(name) => {
            let job = fetch::job(hub, &hub.namespace, name).await?;
            if is_structured(flags.output) {
                return encode(&object(&job)?, flags.output);
            }
            vec![job]
        }
        None => fetch::jobs(hub, namespace, args.selector.as_deref()).await?,
    };
    if is_structured(flags.output) {
        return encode(&list(&jobs)?, flags.output);
    }
    Ok(view::jobs::render(
        &jobs,
        namespace,
        flags.output.is_wide(),
        Timestamp::now(),
    ))
}

/// `members`.
pub async fn members(hub: &Hub, flags: &GlobalFlags, args: &MembersArgs) -> Result<String> {
    let members = match &args.name {
        Some(name) => {
            let member = fetch::member(hub, name).await?;
            if is_structured(flags.output) {
                return encode(&object(&member)?, flags.output);
            }
            vec![member]
        }
        None => fetch::members(hub)
            .await?
            .into_iter()
            .filter(|m| args.pool.as_ref().is_none_or(|p| *p == m.spec.pool))
            .collect(),
    };
    if is_structured(flags.output) {
        return encode(&list(&members)?, flags.output);
    }
    let heartbeats = fetch::heartbeats(hub).await;
    Ok(view::members::render(
        &members,
        &heartbeats,
        flags.output.is_wide(),
        Timestamp::now(),
    ))
}

/// `explain JOB`.
pub async fn explain(hub: &Hub, flags: &GlobalFlags, args: &ExplainArgs) -> Result<String> {
    let job = fetch::job(hub, &hub.namespace, &args.job).await?;
    let events = fetch::job_events(hub, &job)
        .await
        .map_err(|e| e.to_string());
    if is_structured(flags.output) {
        let mut items = vec![object(&job)?];
        for e in events.iter().flatten() {
            items.push(object(e)?);
        }
        return encode(&list(&items)?, flags.output);
    }
    Ok(view::explain::render(
        &job,
        &events,
        flags.output.is_wide(),
        Timestamp::now(),
    ))
}

/// `join NAME`.
pub async fn join(hub: &Hub, flags: &GlobalFlags, args: &JoinArgs) -> Result<String> {
    let member = fetch::member(hub, &args.name).await?;
    view::join::check_joined(&member)?;
    let (namespace, name) = view::join::hub_secret(&member);
    let secret = fetch::secret(hub, &namespace, &name).await?;
    let kubeconfig = secret
        .data
        .as_ref()
        .and_then(|d| d.get(view::join::KUBECONFIG_KEY))
        .filter(|v| !v.0.is_empty())
        .ok_or_else(|| Error::EmptySecret {
            name: name.clone(),
            namespace: namespace.clone(),
            key: view::join::KUBECONFIG_KEY.into(),
        })?;
    if let Some(path) = &args.kubeconfig_out {
        write_private(path, &kubeconfig.0)?;
    }
    let mut hub_flags = vec![];
    if let Some(k) = &flags.kubeconfig {
        hub_flags.extend(["--kubeconfig".to_string(), k.display().to_string()]);
    }
    if let Some(c) = &flags.context {
        hub_flags.extend(["--context".to_string(), c.clone()]);
    }
    let opts = JoinOptions {
        member_namespace: args.member_namespace.clone(),
        secret_name: args.secret_name.clone(),
        chart: args.chart.clone(),
        kubeconfig_file: args
            .kubeconfig_out
            .as_ref()
            .map(|p| p.display().to_string()),
        hub_flags,
    };
    let plan = view::join::plan(&member, &opts);
    if is_structured(flags.output) {
        return encode(&plan, flags.output);
    }
    Ok(view::join::render(&plan))
}

/// `payments JOB`.
pub async fn payments(hub: &Hub, flags: &GlobalFlags, args: &PaymentsArgs) -> Result<String> {
    let job = fetch::job(hub, &hub.namespace, &args.job).await?;
    let pool = fetch::pool(hub, &job.spec.pool).await?;
    let summary = view::payments::summarize(&job, pool.as_ref());
    if is_structured(flags.output) {
        return encode(&summary, flags.output);
    }
    Ok(view::payments::render(&summary, flags.output.is_wide()))
}

/// Writes `data` to `path` readable by its owner only (it holds a token).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let mut file = options.open(path).map_err(err)?;
        // An existing file keeps its mode on open; tighten it before writing the token.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        file.write_all(data).map_err(err)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(err)?;
        file.write_all(data).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_file_is_private_to_its_owner_even_when_it_existed() {
        let dir = std::env::temp_dir().join(format!("kubectl-gpufed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("alpha.kubeconfig");
        std::fs::write(&path, "old, longer content").unwrap();
        write_private(&path, b"token").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_into_a_missing_directory_names_the_file() {
        let e = write_private(Path::new("/nonexistent-dir/x.kubeconfig"), b"t").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot write /nonexistent-dir/x.kubeconfig:"),
            "{e}"
        );
    }
}
