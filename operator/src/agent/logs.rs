//! Log requests: the agent's side of `kubectl gpufed logs` (docs/adr/0028-job-logs.md).
//!
//! The hub passes a tenant's request on as an annotation `log.gpufed.io/<JobLog UID>` of the
//! attempt's Placement ([`LogRequest`]). For each request it has not answered yet (its poll is not
//! in `status.logs`), the agent reads the replica's container log from its own apiserver — lines
//! after the request's cursor, with the kubelet's timestamps, at most [`MAX_CHUNK_BYTES`] — and
//! writes the chunk into `Placement.status.logs` under its own field manager, so the placement
//! sync's status writes never touch it. Only the [`MAX_ANSWERS`] newest requests of a Placement
//! are answered: a Placement holds at most that many chunks.
//!
//! Reading is bounded three ways: one chunk per request, a size limit on the read
//! (`limitBytes`), and the API deadline. The agent reads only pods of the Placement's own local
//! Job, in the jobs namespace — the only place its member RBAC allows `pods/log`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::Placement;
use gpufed_crds::joblog::{
    LogChunk, LogRequest, MAX_ANSWERS, MAX_CHUNK_BYTES, REQUEST_ANNOTATION_PREFIX,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, LogParams, Patch, PatchParams};
use tokio::sync::Notify;

use super::api::{API_TIMEOUT, api_message, timed, timed_opt};
use super::cached::Pod;
use super::context::Context;
use super::usage::pod_replica;
use crate::error::{Error, Result};

/// Field manager of `Placement.status.logs`.
pub const LOGS_FIELD_MANAGER: &str = "gpufed-agent-logs";

/// Longest wait between two looks at the cached Placements when no watch event wakes the task.
const IDLE: Duration = Duration::from_secs(2);

/// The log requests on `p`, newest first, at most [`MAX_ANSWERS`]: `(JobLog UID, request)`.
/// Annotations that do not parse are skipped.
pub fn requests(p: &Placement) -> Vec<(String, LogRequest)> {
    let mut out: Vec<(String, LogRequest)> = p
        .annotations()
        .iter()
        .filter_map(|(k, v)| {
            let uid = k.strip_prefix(REQUEST_ANNOTATION_PREFIX)?;
            let req: LogRequest = serde_json::from_str(v).ok()?;
            Some((uid.to_string(), req))
        })
        .collect();
    out.sort_by(|a, b| b.1.at.cmp(&a.1.at).then_with(|| a.0.cmp(&b.0)));
    out.truncate(MAX_ANSWERS);
    out
}

/// The answers already on `p`'s status, by request UID.
fn answers(p: &Placement) -> BTreeMap<String, LogChunk> {
    p.status
        .iter()
        .flat_map(|s| s.logs.iter())
        .map(|c| (c.request.clone(), c.clone()))
        .collect()
}

/// The requests of `p` still waiting for an answer (no answer of their poll on its status).
pub fn unanswered(p: &Placement) -> Vec<(String, LogRequest)> {
    let done = answers(p);
    requests(p)
        .into_iter()
        .filter(|(uid, req)| done.get(uid).is_none_or(|c| c.poll != req.poll))
        .collect()
}

/// The pod of `replica` among `pods` (one local Job's): the newest one that is not being deleted,
/// else the newest.
pub fn replica_pod(pods: &[Arc<Pod>], replica: u32) -> Option<&Arc<Pod>> {
    let mut of_replica: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| pod_replica(p).unwrap_or(0) == replica)
        .collect();
    of_replica.sort_by_key(|p| {
        (
            p.metadata.deletion_timestamp.is_none(),
            p.metadata.creation_timestamp.clone().map(|t| t.0),
        )
    });
    of_replica.last().copied()
}

/// Whether `container` of `pod` may still write lines: the pod has not ended and the container
/// has not terminated.
pub fn still_running(pod: &Pod, container: &str) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return true;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    !status
        .container_statuses
        .iter()
        .flatten()
        .filter(|cs| cs.name == container)
        .any(|cs| cs.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

/// A chunk from a log read with timestamps (`<RFC 3339 time> <line>` per line): the lines written
/// after `after`, without their timestamps, up to [`MAX_CHUNK_BYTES`]; the cursor is the last
/// kept line's timestamp. `cut` says the read itself stopped at its byte limit, so its last line
/// may be partial: it is left for the next chunk (unless it is the only one). `more` is set when
/// lines were left.
pub fn chunk(raw: &str, after: Option<&str>, cut: bool) -> (String, Option<String>, bool) {
    let after = after.and_then(|a| a.parse::<Timestamp>().ok());
    let mut lines: Vec<&str> = raw.split_inclusive('\n').collect();
    let mut more = false;
    if cut && lines.len() > 1 && lines.last().is_some_and(|l| !l.ends_with('\n')) {
        lines.pop();
        more = true;
    }
    let mut out = String::new();
    let mut cursor = None;
    for line in lines {
        let (stamp, text) = line.split_once(' ').unwrap_or((line.trim_end(), "\n"));
        let Ok(at) = stamp.parse::<Timestamp>() else {
            continue;
        };
        if after.is_some_and(|a| at <= a) {
            continue;
        }
        if !out.is_empty() && out.len() + text.len() > MAX_CHUNK_BYTES {
            more = true;
            break;
        }
        let mut text = text.to_string();
        if text.len() > MAX_CHUNK_BYTES {
            let mut end = MAX_CHUNK_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        out.push_str(&text);
        cursor = Some(stamp.to_string());
    }
    (out, cursor, more)
}

/// The server-side apply body of `answers` as a Placement's `status.logs`.
pub fn logs_body(placement: &str, answers: &[LogChunk]) -> Result<serde_json::Value> {
    let logs = serde_json::to_value(answers).map_err(|source| Error::Serde {
        context: "placement log answers".into(),
        source,
    })?;
    Ok(serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Placement",
        "metadata": {"name": placement},
        "status": {"logs": logs},
    }))
}

/// Reads the chunk that answers `req` on placement `p`.
async fn answer(ctx: &Context, p: &Placement, uid: &str, req: &LogRequest) -> LogChunk {
    let mut out = LogChunk {
        request: uid.to_string(),
        poll: req.poll,
        ..Default::default()
    };
    let Some(job) = p.status.as_ref().and_then(|s| s.local_job.clone()) else {
        out.error = Some(format!(
            "attempt {} has not started on the member yet: its pods do not exist",
            p.spec.attempt
        ));
        out.running = true;
        return out;
    };
    let pods = ctx.job_pods();
    let Some(pod) = pods
        .get(&job)
        .and_then(|pods| replica_pod(pods, req.replica))
    else {
        out.error = Some(format!(
            "replica {} of attempt {} has no pod on the member (not created yet, or removed after the attempt ended)",
            req.replica, p.spec.attempt
        ));
        return out;
    };
    let container = req.container.clone().or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
    });
    let container = container.unwrap_or_default();
    out.running = still_running(pod, &container);
    let limit = 2 * MAX_CHUNK_BYTES;
    let params = LogParams {
        container: Some(container.clone()),
        timestamps: true,
        since_time: req
            .after
            .as_deref()
            .and_then(|a| a.parse::<Timestamp>().ok()),
        limit_bytes: Some(limit as i64),
        ..Default::default()
    };
    let api: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(ctx.local.clone(), &ctx.args.jobs_namespace);
    let name = pod.name_any();
    match timed(
        format!("reading the log of pod {name}"),
        API_TIMEOUT,
        api.logs(&name, &params),
    )
    .await
    {
        Ok(raw) => {
            let (lines, cursor, more) = chunk(&raw, req.after.as_deref(), raw.len() >= limit);
            out.lines = lines;
            out.cursor = cursor.or_else(|| req.after.clone());
            out.more = more;
        }
        Err(e) => {
            out.error = Some(super::report::cut(format!(
                "the member could not read the log of replica {} (pod {name}, container {container}): {}",
                req.replica,
                api_message(&e)
            )));
        }
    }
    out
}

/// Answers the unanswered requests of `p` and writes every live request's answer.
async fn serve(ctx: &Context, placements: &Api<Placement>, p: &Placement) -> Result<()> {
    let pending = unanswered(p);
    if pending.is_empty() {
        return Ok(());
    }
    let mut done = answers(p);
    for (uid, req) in &pending {
        let chunk = answer(ctx, p, uid, req).await;
        done.insert(uid.clone(), chunk);
    }
    // Only live requests keep an answer, newest first.
    let list: Vec<LogChunk> = requests(p)
        .into_iter()
        .filter_map(|(uid, _)| done.remove(&uid))
        .collect();
    let name = p.name_any();
    let body = logs_body(&name, &list)?;
    let written = timed_opt(
        format!("writing log answers on Placement {name}"),
        API_TIMEOUT,
        placements.patch_status(
            &name,
            &PatchParams::apply(LOGS_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        ),
    )
    .await?;
    tracing::debug!(placement = %name, answered = pending.len(), written = written.is_some(), "answered log requests");
    Ok(())
}

/// Answers log requests until the process ends; woken by changes of the Placements (`wake`).
pub async fn run(ctx: Arc<Context>, wake: Arc<Notify>) {
    let placements: Api<Placement> = Api::namespaced(
        ctx.hub.clone(),
        &gpufed_crds::naming::member_namespace(&ctx.args.cluster),
    );
    loop {
        for p in ctx.stores.placements.state() {
            if let Err(e) = serve(&ctx, &placements, &p).await {
                tracing::warn!(placement = %p.name_any(), error = %e, kind = e.kind(), "answering log requests failed; retrying");
            }
        }
        let _ = tokio::time::timeout(IDLE, wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufed_crds::PlacementStatus;

    fn placement(requests: &[(&str, u64, &str)], answered: &[(&str, u64)]) -> Placement {
        let mut p = Placement::new(
            "p-1",
            serde_json::from_value(serde_json::json!({
                "job": {"uid": "u"}, "attempt": 1,
                "cluster": "alpha", "replicas": 2, "gpusPerReplica": 1, "totalGpus": 2,
                "model": "L4", "pricePerGpuHour": "1", "maxDuration": "1h",
                "template": {"containers": [{"name": "main", "image": "busybox"}]}
            }))
            .unwrap(),
        );
        p.metadata.annotations = Some(
            requests
                .iter()
                .map(|(uid, poll, at)| {
                    let req = LogRequest {
                        poll: *poll,
                        at: at.to_string(),
                        ..Default::default()
                    };
                    (
                        format!("{REQUEST_ANNOTATION_PREFIX}{uid}"),
                        serde_json::to_string(&req).unwrap(),
                    )
                })
                .chain([("other".to_string(), "x".to_string())])
                .collect(),
        );
        p.status = Some(PlacementStatus {
            logs: answered
                .iter()
                .map(|(uid, poll)| LogChunk {
                    request: uid.to_string(),
                    poll: *poll,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn only_requests_whose_poll_has_no_answer_yet_are_answered() {
        let p = placement(
            &[
                ("a", 1, "2026-01-01T00:00:01Z"),
                ("b", 3, "2026-01-01T00:00:02Z"),
            ],
            &[("a", 1), ("b", 2)],
        );
        let todo: Vec<(String, u64)> = unanswered(&p)
            .into_iter()
            .map(|(u, r)| (u, r.poll))
            .collect();
        assert_eq!(todo, vec![("b".to_string(), 3)]);
    }

    #[test]
    fn at_most_four_requests_are_live_the_newest_ones() {
        let reqs: Vec<(String, u64, String)> = (0..6)
            .map(|i| (format!("r{i}"), 1, format!("2026-01-01T00:00:0{i}Z")))
            .collect();
        let reqs: Vec<(&str, u64, &str)> = reqs
            .iter()
            .map(|(u, p, a)| (u.as_str(), *p, a.as_str()))
            .collect();
        let p = placement(&reqs, &[]);
        let live: Vec<String> = requests(&p).into_iter().map(|(u, _)| u).collect();
        assert_eq!(live, ["r5", "r4", "r3", "r2"]);
    }

    #[test]
    fn a_chunk_keeps_lines_after_the_cursor_without_their_timestamps() {
        let raw = "2026-12-04T10:00:00.100000000Z one\n\
                   2026-12-04T10:00:00.2Z two\n\
                   2026-12-04T10:00:01.000000001Z three\n";
        let (lines, cursor, more) = chunk(raw, None, false);
        assert_eq!(lines, "one\ntwo\nthree\n");
        assert_eq!(cursor.as_deref(), Some("2026-12-04T10:00:01.000000001Z"));
        assert!(!more);
        // The cursor is compared as a time, not as text (the kubelet trims trailing zeros).
        let (lines, cursor, _) = chunk(raw, Some("2026-12-04T10:00:00.200000000Z"), false);
        assert_eq!(lines, "three\n");
        assert_eq!(cursor.as_deref(), Some("2026-12-04T10:00:01.000000001Z"));
        let (lines, cursor, more) = chunk(raw, Some("2026-12-04T10:00:01.000000001Z"), false);
        assert_eq!((lines.as_str(), cursor, more), ("", None, false));
    }

    #[test]
    fn a_read_cut_at_its_limit_leaves_its_partial_last_line_for_the_next_chunk() {
        let raw = "2026-12-04T10:00:00Z whole\n2026-12-04T10:00:01Z parti";
        let (lines, cursor, more) = chunk(raw, None, true);
        assert_eq!(lines, "whole\n");
        assert_eq!(cursor.as_deref(), Some("2026-12-04T10:00:00Z"));
        assert!(more);
        // Not cut: a last line without a newline is a line the container has not ended yet.
        let (lines, _, more) = chunk(raw, None, false);
        assert_eq!(lines, "whole\nparti");
        assert!(!more);
    }

    #[test]
    fn a_chunk_stops_at_its_size_limit_and_says_more_lines_wait() {
        let line = "x".repeat(1000);
        let raw: String = (0..40)
            .map(|i| format!("2026-12-04T10:00:{:02}Z {line}\n", i))
            .collect();
        let (lines, cursor, more) = chunk(&raw, None, false);
        assert!(lines.len() <= MAX_CHUNK_BYTES, "{}", lines.len());
        assert_eq!(lines.lines().count(), 32);
        assert_eq!(cursor.as_deref(), Some("2026-12-04T10:00:31Z"));
        assert!(more);
    }

    #[test]
    fn the_newest_live_pod_of_a_replica_is_the_one_read() {
        let pod = |name: &str, index: &str, created: i64, deleting: bool| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.metadata.annotations = Some(BTreeMap::from([(
                super::super::report::COMPLETION_INDEX.to_string(),
                index.to_string(),
            )]));
            p.metadata.creation_timestamp = Some(crate::agent::fixtures::at(created));
            if deleting {
                p.metadata.deletion_timestamp = Some(crate::agent::fixtures::at(created + 1));
            }
            Arc::new(p)
        };
        let pods = vec![
            pod("r0-old", "0", 10, false),
            pod("r0-new", "0", 20, false),
            pod("r0-going", "0", 30, true),
            pod("r1", "1", 5, false),
        ];
        assert_eq!(replica_pod(&pods, 0).unwrap().name_any(), "r0-new");
        assert_eq!(replica_pod(&pods, 1).unwrap().name_any(), "r1");
        assert!(replica_pod(&pods, 2).is_none());
    }

    #[test]
    fn a_container_runs_until_it_or_its_pod_has_ended() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "main", "state": {"running": {}}},
                {"name": "side", "state": {"terminated": {"exitCode": 0}}}
            ]}
        }))
        .unwrap();
        assert!(still_running(&pod, "main"));
        assert!(!still_running(&pod, "side"));
        let mut done = pod.clone();
        done.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(!still_running(&done, "main"));
        // Not started yet: lines may still come.
        assert!(still_running(&Pod::default(), "main"));
    }

    #[test]
    fn the_log_answers_are_applied_as_status_logs_only() {
        let body = logs_body(
            "p-1",
            &[LogChunk {
                request: "u".into(),
                poll: 2,
                lines: "hi\n".into(),
                ..Default::default()
            }],
        )
        .unwrap();
        assert_eq!(body["status"]["logs"][0]["lines"], "hi\n");
        assert_eq!(body["status"].as_object().unwrap().len(), 1);
        assert!(body.get("spec").is_none());
    }
}
