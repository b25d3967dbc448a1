//! `kubectl gpufed logs JOB [-f] [--replica N] [-c CONTAINER]`: a job's container log, read
//! through the hub (docs/adr/0028-job-logs.md).
//!
//! The plugin never reaches a member. It creates a `JobLog` in the job's namespace (owned by the
//! job, so it goes with it), asks for one chunk at a time by setting `spec.poll` (and `spec.after`
//! to the last chunk's cursor), prints each chunk as it arrives in `status`, and deletes the
//! JobLog when done. `-f` keeps asking while the container runs. Every call is the tenant's own,
//! under its RBAC on the hub: without rights on the job's namespace nothing can be read.

use std::io::Write as _;
use std::time::{Duration, Instant};

use gpufed_crds::joblog::reasons;
use gpufed_crds::{ComputeJob, JobLog, JobLogSpec, JobLogStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::cli::LogsArgs;
use crate::connect::Hub;
use crate::error::{Call, Error, Result, classify};
use crate::fetch;

const JOBLOGS: &str = "joblogs.gpufed.io";
/// How often the JobLog's status is read while an answer is awaited.
const READ_EVERY: Duration = Duration::from_millis(300);
/// Pause between two chunks while following a running container that had nothing new.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Why `job`'s log cannot be asked for at all, checked before anything is created: a replica out
/// of range, or no attempt yet. (The hub checks the same, for JobLogs made by other means.)
pub fn precheck(job: &ComputeJob, replica: u32) -> Result<()> {
    let name = job.name_any();
    let replicas = job.spec.replicas;
    if replica >= replicas {
        return Err(Error::Logs(format!(
            "replica {replica} is out of range: job {name:?} has {replicas} replica{} (0 to {})",
            if replicas == 1 { "" } else { "s" },
            replicas.saturating_sub(1)
        )));
    }
    let st = job.status.clone().unwrap_or_default();
    if st.placement.is_none() && st.attempts.is_empty() {
        return Err(Error::Logs(format!(
            "job {name:?} has no attempt yet (phase {:?}): no replica has run, so there is no log; see `kubectl gpufed explain {name}`",
            st.phase
        )));
    }
    Ok(())
}

/// The JobLog that asks for `args`' log of `job`, owned by the job.
pub fn request(job: &ComputeJob, args: &LogsArgs) -> JobLog {
    let name = job.name_any();
    let mut log = JobLog::new(
        "",
        JobLogSpec {
            job: name.clone(),
            replica: args.replica,
            container: args.container.clone(),
            after: None,
            poll: 1,
        },
    );
    log.metadata.name = None;
    let prefix: String = name.chars().take(40).collect();
    log.metadata.generate_name = Some(format!("{prefix}-logs-"));
    log.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "gpufed.io/v1alpha1".into(),
        kind: "ComputeJob".into(),
        name,
        uid: job.uid().unwrap_or_default(),
        ..Default::default()
    }]);
    log
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask again at once (the chunk was cut at its size limit).
    Now,
    /// Ask again after a pause (following a running container).
    Later,
    /// Done.
    Stop,
}

/// The lines to print from `status` and what comes next, or the error that ends the command.
/// While following, a container that has not started yet is waited for.
pub fn next(status: &JobLogStatus, follow: bool) -> Result<(String, Next)> {
    let lines = status.lines.clone().unwrap_or_default();
    if let Some(reason) = &status.reason {
        let message = status.message.clone().unwrap_or_else(|| reason.clone());
        if reason == reasons::NOT_AVAILABLE && follow && status.running {
            return Ok((lines, Next::Later));
        }
        return Err(Error::Logs(message));
    }
    let next = if status.more {
        Next::Now
    } else if follow && status.running {
        Next::Later
    } else {
        Next::Stop
    };
    Ok((lines, next))
}

async fn answer(api: &Api<JobLog>, name: &str, poll: u64, timeout: Duration) -> Result<JobLog> {
    let started = Instant::now();
    loop {
        if let Some(log) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::Logs(format!("cannot read joblog {name:?} on the hub: {e}")))?
            && log
                .status
                .as_ref()
                .is_some_and(|s| s.observed_poll == Some(poll))
        {
            return Ok(log);
        }
        if started.elapsed() >= timeout {
            return Err(Error::Logs(format!(
                "no answer within {}s: the hub did not relay the request (is gpufed-hub running?)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(READ_EVERY).await;
    }
}

async fn stream(api: &Api<JobLog>, name: &str, args: &LogsArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout.as_secs_ceil());
    let mut poll = 1;
    let mut out = std::io::stdout();
    loop {
        let log = answer(api, name, poll, timeout).await?;
        let status = log.status.unwrap_or_default();
        let (lines, next) = next(&status, args.follow)?;
        // A closed pipe (`| head`) ends the command quietly.
        if out
            .write_all(lines.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
        match next {
            Next::Stop => return Ok(()),
            Next::Later => tokio::time::sleep(FOLLOW_EVERY).await,
            Next::Now => {}
        }
        poll += 1;
        let patch = serde_json::json!({"spec": {"poll": poll, "after": status.cursor}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Logs(format!("cannot ask joblog {name:?} for more: {e}")))?;
    }
}

/// `logs`: prints the log as it arrives and returns nothing more to print.
pub async fn run(hub: &Hub, args: &LogsArgs) -> Result<String> {
    let ns = hub.namespace.clone();
    let job = fetch::job(hub, &ns, &args.job).await?;
    precheck(&job, args.replica)?;
    let api: Api<JobLog> = Api::namespaced(hub.client.clone(), &ns);
    let made = api
        .create(&PostParams::default(), &request(&job, args))
        .await
        .map_err(|e| {
            let call = Call {
                verb: "create",
                ..Call::list(JOBLOGS, "joblog", Some(&ns))
            };
            classify(e, &call, &hub.server)
        })?;
    let name = made.name_any();
    let result = tokio::select! {
        r = stream(&api, &name, args) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Best effort: a JobLog left behind goes with its job.
    let _ = api.delete(&name, &DeleteParams::default()).await;
    result.map(|()| String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::testing::job;
    use gpufed_crds::{ComputeJobStatus, PlacementRef};

    fn args(replica: u32) -> LogsArgs {
        LogsArgs {
            job: "train".into(),
            follow: false,
            replica,
            container: None,
            timeout: gpufed_crds::KubeDuration::from_secs(30),
        }
    }

    fn placed() -> ComputeJob {
        let mut j = job("train").replicas(2).build();
        j.status = Some(ComputeJobStatus {
            placement: Some(Box::new(PlacementRef {
                cluster: "alpha".into(),
                namespace: "gpufed-member-alpha".into(),
                name: "p".into(),
                model: "L4".into(),
                price_per_gpu_hour: "1".parse().unwrap(),
            })),
            ..Default::default()
        });
        j
    }

    #[test]
    fn a_replica_out_of_range_and_a_job_without_attempt_are_refused_before_asking() {
        assert!(precheck(&placed(), 1).is_ok());
        assert_eq!(
            precheck(&placed(), 2).unwrap_err().to_string(),
            "replica 2 is out of range: job \"train\" has 2 replicas (0 to 1)"
        );
        let pending = job("train").build();
        let err = precheck(&pending, 0).unwrap_err().to_string();
        assert!(
            err.starts_with("job \"train\" has no attempt yet (phase Pending)"),
            "{err}"
        );
    }

    #[test]
    fn the_request_is_owned_by_the_job_and_named_after_it() {
        let log = request(&placed(), &args(1));
        assert_eq!(log.metadata.generate_name.as_deref(), Some("train-logs-"));
        let owner = &log.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ComputeJob", "train", "uid-train")
        );
        assert_eq!((log.spec.replica, log.spec.poll), (1, 1));
    }

    #[test]
    fn chunks_continue_while_cut_or_followed_and_errors_end_the_command() {
        let st = |more: bool, running: bool| JobLogStatus {
            lines: Some("a\n".into()),
            more,
            running,
            ..Default::default()
        };
        assert_eq!(next(&st(true, false), false).unwrap().1, Next::Now);
        assert_eq!(next(&st(false, true), false).unwrap().1, Next::Stop);
        assert_eq!(next(&st(false, true), true).unwrap().1, Next::Later);
        assert_eq!(next(&st(false, false), true).unwrap().1, Next::Stop);
        let err = JobLogStatus {
            reason: Some(reasons::MEMBER_NOT_RESPONDING.into()),
            message: Some("member \"alpha\" did not answer within 15s".into()),
            ..Default::default()
        };
        assert_eq!(
            next(&err, true).unwrap_err().to_string(),
            "member \"alpha\" did not answer within 15s"
        );
        // Following a container that has not started yet waits for it.
        let waiting = JobLogStatus {
            reason: Some(reasons::NOT_AVAILABLE.into()),
            running: true,
            ..Default::default()
        };
        assert_eq!(next(&waiting, true).unwrap().1, Next::Later);
        assert!(next(&waiting, false).is_err());
    }
}
