//! `kubectl gpufed explain JOB`: in the style of `kubectl describe`, why a ComputeJob waits (the
//! hub's explanation, one cluster's reason per line) or where and why it was placed, then its
//! conditions, its attempt history and its recent Events.

use gpufed_crds::ComputeJob;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::format::{NONE, age, age_of, or_none, plural, text_or_none, timestamp};
use crate::table::Table;

/// Most Events shown (the newest).
pub const MAX_EVENTS: usize = 20;

/// Splits the hub's no-fit explanation (`0/3 clusters fit: alpha: …; beta: …`) into its head and
/// one line per cluster (or per group of clusters, for big pools). Any other explanation is
/// returned whole, with no lines.
pub fn split_explanation(explanation: &str) -> (String, Vec<String>) {
    if let Some((head, rest)) = explanation.split_once(": ")
        && head.ends_with(" clusters fit")
        && head.starts_with(|c: char| c.is_ascii_digit())
    {
        let lines = rest.split("; ").map(str::to_string).collect();
        return (format!("{head}:"), lines);
    }
    (explanation.to_string(), vec![])
}

/// What the job asks for, in one line.
fn request(job: &ComputeJob) -> String {
    let s = &job.spec;
    let total = s.replicas * s.gpus_per_replica;
    let mut out = format!(
        "{} ({} × {}) of {}",
        plural(total as usize, "GPU", "GPUs"),
        plural(s.replicas as usize, "replica", "replicas"),
        s.gpus_per_replica,
        s.gpu.models.join(" or ")
    );
    if s.gpu.min_memory_gib > 0 {
        out.push_str(&format!(", at least {} GiB each", s.gpu.min_memory_gib));
    }
    match s.max_price_per_gpu_hour {
        Some(p) => out.push_str(&format!(", at most {p}/GPU-hour")),
        None => out.push_str(", any price"),
    }
    if let Some(regions) = s.regions.as_ref().filter(|r| !r.is_empty()) {
        out.push_str(&format!(", in {}", regions.join(" or ")));
    }
    out.push_str(&format!(", up to {} per attempt", s.max_duration));
    out
}

/// When an Event last happened: its series, its last timestamp, or when it was first recorded.
pub fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn event_age(e: &Event, now: Timestamp) -> String {
    let Some(last) = event_time(e) else {
        return NONE.into();
    };
    let count = e
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(e.count)
        .unwrap_or(1);
    let first = e
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0));
    match first {
        Some(first) if count > 1 => {
            format!("{} (x{count} over {})", age(last, now), age(first, now))
        }
        _ => age(last, now),
    }
}

fn events_section(events: &Result<Vec<Event>, String>, now: Timestamp) -> String {
    let events = match events {
        Ok(e) if e.is_empty() => return "Events:  <none>\n".into(),
        Ok(e) => e,
        Err(why) => return format!("Events:  <unavailable: {why}>\n"),
    };
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| event_time(e));
    let older = sorted.len().saturating_sub(MAX_EVENTS);
    let mut t = Table::new(&["type", "reason", "age", "from", "message"]);
    for e in &sorted[older..] {
        let from = e
            .reporting_component
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()));
        t.push(vec![
            or_none(e.type_.clone()),
            or_none(e.reason.clone()),
            event_age(e, now),
            or_none(from),
            or_none(e.message.clone()),
        ]);
    }
    let mut out = String::from("Events:\n");
    if older > 0 {
        out.push_str(&format!("  ({older} older not shown)\n"));
    }
    out.push_str(&t.render_indented("  "));
    out
}

/// The explanation of `job` with `events` (or why they could not be read), as of `now`; `wide`
/// adds model, price, placement and message columns to the attempt history.
pub fn render(
    job: &ComputeJob,
    events: &Result<Vec<Event>, String>,
    wide: bool,
    now: Timestamp,
) -> String {
    let status = job.status.clone().unwrap_or_default();
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", job.name_any()),
        ("Namespace", job.namespace().unwrap_or_default()),
        ("Pool", job.spec.pool.clone()),
        ("Request", request(job)),
        ("Age", age_of(job.metadata.creation_timestamp.as_ref(), now)),
    ];
    let phase = match (&job.status, status.reason.as_deref()) {
        (None, _) => "<none> (the hub has not seen this job yet: is it running?)".to_string(),
        (Some(_), Some(reason)) => format!("{:?} ({reason})", status.phase),
        (Some(_), None) => format!("{:?}", status.phase),
    };
    fields.push(("Phase", phase));
    if let Some(p) = &status.placement {
        // Preempted attempts do not count against retry.maxAttempts (ADR 0025).
        let preempted = status
            .attempts
            .iter()
            .filter(|a| a.phase == gpufed_crds::AttemptPhase::Preempted)
            .count();
        let uncounted = if preempted > 0 {
            format!(" ({preempted} preempted, not counted)")
        } else {
            String::new()
        };
        fields.push((
            "Cluster",
            format!(
                "{} ({} at {}/GPU-hour), attempt {} of at most {}{uncounted}",
                p.cluster,
                p.model,
                p.price_per_gpu_hour,
                status.attempt,
                job.spec.retry.max_attempts
            ),
        ));
        fields.push(("Placement", format!("{}/{}", p.namespace, p.name)));
    }
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        fields.push(("Message", m.to_string()));
    }
    let (head, lines) = split_explanation(status.explanation.as_deref().unwrap_or(NONE));
    fields.push(("Explanation", head));
    let usage = status.usage.as_ref().map(|u| u.gpu_seconds).unwrap_or(0);
    fields.push(("Usage", format!("{usage} GPU-seconds")));
    fields.push(("Cost", or_none(status.cost)));
    // A result check (ADR 0034): its phase and why, then one line per run.
    let mut check_lines = vec![];
    if let Some(rc) = &status.result_check {
        let why = rc
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        fields.push(("Result check", format!("{:?}{why}", rc.phase)));
        for r in &rc.runs {
            let at = match (&r.cluster, r.attempt) {
                (Some(c), Some(a)) => format!("on {c} (attempt {a})"),
                _ => "running".to_string(),
            };
            let digest = r
                .digest
                .as_deref()
                .map(|d| format!(", result sha256 {}…", d.get(..12).unwrap_or(d)))
                .unwrap_or_default();
            check_lines.push(format!("{} {} {at}{digest}", r.role.as_str(), r.job));
        }
        if let (Some(cm), Some(sha)) = (&rc.evidence, &rc.evidence_sha256) {
            check_lines.push(format!(
                "evidence: ConfigMap gpufed-hub-jobs/{cm}, sha256 {sha}"
            ));
        }
    }

    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 3;
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{:<width$}{value}\n", format!("{key}:")));
        if *key == "Explanation" {
            for line in &lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if *key == "Result check" {
            for line in &check_lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }

    out.push('\n');
    if status.conditions.is_empty() {
        out.push_str("Conditions:  <none>\n");
    } else {
        let mut t = Table::new(&["type", "status", "reason", "age", "message"]);
        for c in &status.conditions {
            t.push(vec![
                c.type_.clone(),
                c.status.clone(),
                text_or_none(&c.reason),
                age(c.last_transition_time.0, now),
                text_or_none(&c.message),
            ]);
        }
        out.push_str("Conditions:\n");
        out.push_str(&t.render_indented("  "));
    }

    out.push('\n');
    if status.attempts.is_empty() {
        out.push_str("Attempts:  <none>\n");
    } else {
        let mut headers = vec![
            "attempt",
            "cluster",
            "phase",
            "reason",
            "start",
            "finish",
            "gpu-seconds",
        ];
        if wide {
            headers.extend(["model", "price", "placement", "message"]);
        }
        let mut t = Table::new(&headers);
        for a in &status.attempts {
            let mut row = vec![
                a.attempt.to_string(),
                a.cluster.clone(),
                format!("{:?}", a.phase),
                or_none(a.reason.clone()),
                timestamp(a.start_time.as_ref()),
                timestamp(a.finish_time.as_ref()),
                a.gpu_seconds.to_string(),
            ];
            if wide {
                row.extend([
                    a.model.clone(),
                    a.price_per_gpu_hour.to_string(),
                    a.placement.clone(),
                    or_none(a.message.clone()),
                ]);
            }
            t.push(row);
        }
        out.push_str("Attempts:\n");
        out.push_str(&t.render_indented("  "));
    }

    out.push('\n');
    out.push_str(&events_section(events, now));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NO_FIT, event, now, pending_job, running_job};

    #[test]
    fn a_no_fit_explanation_splits_into_one_line_per_cluster() {
        let (head, lines) = split_explanation(NO_FIT);
        assert_eq!(head, "0/3 clusters fit:");
        assert_eq!(
            lines,
            [
                "alpha: no A100 (has H100)",
                "beta: A100 has 40 GiB per GPU, needs 80 GiB",
                "gamma: no A100 (has RTX4090)"
            ]
        );
    }

    #[test]
    fn grouped_and_other_explanations_are_handled() {
        let (_, lines) =
            split_explanation("0/500 clusters fit: 412 clusters: no H100; …and 88 more clusters");
        assert_eq!(lines, ["412 clusters: no H100", "…and 88 more clusters"]);
        let placed = "placed on alpha: cheapest of 3 fitting clusters (H100 at 2.40/GPU-hour)";
        assert_eq!(split_explanation(placed), (placed.to_string(), vec![]));
        let (_, lines) = split_explanation("0/0 clusters fit: the pool has no member clusters");
        assert_eq!(lines, ["the pool has no member clusters"]);
        // A job waiting for quota: one line, whole (no cluster was looked at).
        let over = "over quota: namespace team-a holds 2 of its 2 GPUs of group gpus and needs 1 \
                    more; cohort research lends 0 now";
        assert_eq!(split_explanation(over), (over.to_string(), vec![]));
    }

    #[test]
    fn a_pending_job_lists_each_clusters_reason_and_its_warning_event() {
        let job = pending_job();
        let events = Ok(vec![event(&job, "Warning", "Pending", NO_FIT, 290, 60, 4)]);
        let out = render(&job, &events, false, now());
        let expected_head = "\
Name:         big-a100
Namespace:    team-a
Pool:         default
Request:      1 GPU (1 replica × 1) of A100, at least 80 GiB each, any price, up to 1h0m0s per attempt
Age:          5m
Phase:        Pending (NoFit)
Explanation:  0/3 clusters fit:
  alpha: no A100 (has H100)
  beta: A100 has 40 GiB per GPU, needs 80 GiB
  gamma: no A100 (has RTX4090)
Usage:        0 GPU-seconds
Cost:         <none>

Conditions:
  TYPE       STATUS  REASON    AGE    MESSAGE
  Admitted   True    Admitted  5m     pool default
  Scheduled  False   NoFit     4m50s  0/3 clusters fit: alpha:";
        assert!(out.starts_with(expected_head), "{out}");
        assert!(out.contains("\nAttempts:  <none>\n"), "{out}");
        assert!(
            out.contains(
                "\nEvents:\n  TYPE     REASON   AGE                  FROM        MESSAGE\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("  Warning  Pending  60s (x4 over 4m50s)  gpufed-hub  0/3 clusters fit"),
            "{out}"
        );
    }

    #[test]
    fn a_checked_job_shows_its_result_check_and_runs() {
        use gpufed_crds::{ResultCheckPhase, ResultCheckStatus, ResultRun, RunRole};
        let mut job = running_job();
        let run = |role, job: &str, cluster: Option<&str>, digest: Option<&str>| ResultRun {
            role,
            job: job.into(),
            uid: "u".into(),
            cluster: cluster.map(String::from),
            attempt: cluster.map(|_| 1),
            digest: digest.map(String::from),
        };
        job.status.as_mut().unwrap().result_check = Some(Box::new(ResultCheckStatus {
            phase: ResultCheckPhase::Refereeing,
            runs: vec![
                run(
                    RunRole::Original,
                    "train",
                    Some("beta"),
                    Some("0123456789abcdef"),
                ),
                run(
                    RunRole::Replica,
                    "train-replica",
                    Some("alpha"),
                    Some("fedcba9876543210"),
                ),
                run(RunRole::Referee, "train-referee", None, None),
            ],
            message: Some("the results differ".into()),
            ..Default::default()
        }));
        let out = render(&job, &Ok(vec![]), false, now());
        assert!(
            out.contains("Result check:  Refereeing: the results differ\n"),
            "{out}"
        );
        assert!(
            out.contains("  original train on beta (attempt 1), result sha256 0123456789ab…\n"),
            "{out}"
        );
        assert!(out.contains("  referee train-referee running\n"), "{out}");
    }

    #[test]
    fn a_placed_job_says_where_and_why_and_lists_its_attempts() {
        let job = running_job();
        let out = render(&job, &Ok(vec![]), false, now());
        assert!(out.contains("Phase:        Running\n"), "{out}");
        assert!(
            out.contains("Cluster:      beta (H100 at 3.00/GPU-hour), attempt 2 of at most 3\n"),
            "{out}"
        );
        assert!(
            out.contains("Placement:    gpufed-member-beta/team-a-train-1a2b3c4d-2\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "Explanation:  placed on beta: the only fitting cluster (H100 at 3.00/GPU-hour)\n"
            ),
            "{out}"
        );
        assert!(out.contains("Usage:        1600 GPU-seconds\n"), "{out}");
        assert!(
            out.contains(
                "\
Attempts:
  ATTEMPT  CLUSTER  PHASE    REASON            START                 FINISH                GPU-SECONDS
  1        alpha    Lost     HeartbeatExpired  2026-01-01T09:01:40Z  2026-01-01T09:10:00Z  400
  2        beta     Running  <none>            2026-01-01T09:11:40Z  <none>                1200
"
            ),
            "{out}"
        );
        assert!(out.ends_with("Events:  <none>\n"), "{out}");
    }

    #[test]
    fn wide_adds_model_price_and_placement_to_attempts() {
        let out = render(&running_job(), &Ok(vec![]), true, now());
        assert!(
            out.contains("GPU-SECONDS  MODEL  PRICE  PLACEMENT                MESSAGE\n"),
            "{out}"
        );
        assert!(
            out.contains("1200         H100   3.00   team-a-train-1a2b3c4d-2  <none>\n"),
            "{out}"
        );
    }

    #[test]
    fn a_preempted_attempt_is_listed_with_its_preemptor_and_not_counted() {
        let mut job = running_job();
        let st = job.status.as_mut().unwrap();
        st.attempts[0].phase = gpufed_crds::AttemptPhase::Preempted;
        st.attempts[0].reason = Some("Preempted".into());
        st.attempts[0].message = Some("preempted by team-a/urgent (priority 1000 > 0)".into());
        let out = render(&job, &Ok(vec![]), true, now());
        assert!(
            out.contains("attempt 2 of at most 3 (1 preempted, not counted)\n"),
            "{out}"
        );
        assert!(
            out.contains("  1        alpha    Preempted  Preempted "),
            "{out}"
        );
        assert!(
            out.contains("preempted by team-a/urgent (priority 1000 > 0)\n"),
            "{out}"
        );
    }

    #[test]
    fn only_the_newest_events_are_shown_oldest_first() {
        let job = pending_job();
        let events: Vec<_> = (0..25)
            .map(|i| {
                event(
                    &job,
                    "Normal",
                    &format!("R{i:02}"),
                    "m",
                    1000 - i,
                    1000 - i,
                    1,
                )
            })
            .collect();
        let out = render(&job, &Ok(events), false, now());
        assert!(out.contains("(5 older not shown)"), "{out}");
        assert!(!out.contains("R04"), "{out}");
        let r05 = out.find("R05").unwrap();
        assert!(r05 < out.find("R24").unwrap());
    }

    #[test]
    fn unreadable_events_do_not_hide_the_rest() {
        let out = render(
            &pending_job(),
            &Err("forbidden to list events".into()),
            false,
            now(),
        );
        assert!(
            out.ends_with("Events:  <unavailable: forbidden to list events>\n"),
            "{out}"
        );
        assert!(out.contains("Explanation:  0/3 clusters fit:"), "{out}");
    }

    #[test]
    fn a_job_the_hub_has_not_seen_says_so() {
        let job = gpufed_crds::testing::job("fresh").build();
        let out = render(&job, &Ok(vec![]), false, now());
        assert!(
            out.contains("Phase:        <none> (the hub has not seen this job yet"),
            "{out}"
        );
        assert!(out.contains("Conditions:  <none>"), "{out}");
    }
}
