//! Member reputation (issue 13 item 4): how each member has done over its pool's
//! `spec.reputationWindow` (default 7 days), in `MemberCluster.status.reputation`:
//!
//! * challenge verdicts passed and failed, read from the evidence records the challenge loop keeps
//!   (ConfigMaps `evidence-*` in the hub's jobs namespace, ADR 0027), by their `judged` time;
//! * tenant attempts that ended on the member: succeeded, failed by the member's fault (lost with
//!   it, fenced, their lease or local Job gone, a gang it could not schedule, Secrets it could not
//!   open) and failed otherwise (the workload's own exit, its data, a start timeout: not held
//!   against the member), from the jobs still on the hub;
//! * uptime: the share of the window it was Ready, from the outages the member controller records
//!   in `status.outages` as it declares the member not Ready and Ready again ([`sample`]).
//!
//! The window starts when the member joined if that is later. What to write is decided by pure
//! functions here; [`run`] reads the caches and the clock and writes through the hub's fenced
//! client under its own field manager [`MANAGER`], only when a figure changed (so a quiet member
//! costs no write).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gpufed_crds::naming::{HUB_JOBS_NAMESPACE, LABEL_VERIFIES};
use gpufed_crds::placement::reasons;
use gpufed_crds::{
    AttemptPhase, AttemptRecord, GpuPool, KubeDuration, MemberCluster, MemberReputation, Outage,
    VerificationVerdict,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::hub::at_rest::JobRef;
use crate::hub::context::{Context, now};

/// How often the figures are computed (uptime moves with the window).
pub const TICK: Duration = Duration::from_secs(10);
/// How often the attempts and verdicts are counted again (every this many ticks).
const RECOUNT_TICKS: u32 = 3;
/// The window when the pool sets none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(168 * 3600);
/// Outages kept per member (the newest).
pub const MAX_OUTAGES: usize = 50;
/// Field manager of `MemberCluster.status.reputation`.
pub const MANAGER: &str = "gpufed-hub-reputation";

/// Reasons of a failed attempt that are the member's fault.
const MEMBER_FAULTS: &[&str] = &[
    reasons::FENCED,
    reasons::LOCAL_JOB_MISSING,
    reasons::LEASE_EXPIRED,
    reasons::GANG_UNSCHEDULABLE,
    reasons::SEALED_SECRETS_INVALID,
];

/// How an ended attempt counts for its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It ended through the member's fault.
    ByMember,
    /// It failed for its own reasons.
    Otherwise,
}

/// How `a` counts for its member, `None` when it does not (still running, cancelled by its
/// owner, preempted by the pool).
pub fn outcome(a: &AttemptRecord) -> Option<Outcome> {
    match a.phase {
        AttemptPhase::Succeeded => Some(Outcome::Succeeded),
        AttemptPhase::Lost => Some(Outcome::ByMember),
        AttemptPhase::Failed
            if a.reason
                .as_deref()
                .is_some_and(|r| MEMBER_FAULTS.contains(&r)) =>
        {
            Some(Outcome::ByMember)
        }
        AttemptPhase::Failed => Some(Outcome::Otherwise),
        _ => None,
    }
}

/// Attempts per outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Succeeded.
    pub succeeded: u32,
    /// Ended by the member's fault.
    pub by_member: u32,
    /// Failed otherwise.
    pub otherwise: u32,
}

/// Tenant attempts per member that ended inside its window (at or after `starts[member]`, Unix
/// seconds; members not in `starts` are not counted). The hub's own jobs (challenges) are counted
/// as verdicts instead.
pub fn tally<'a>(
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    starts: &HashMap<String, i64>,
) -> HashMap<String, Attempts> {
    let mut out: HashMap<String, Attempts> = HashMap::new();
    for job in jobs.into_iter().filter(|j| !j.is_hub_job()) {
        for a in job.attempts() {
            let ended = a.finish_time.as_ref().map(|t| t.0.as_second());
            let (Some(o), Some(ended)) = (outcome(a), ended) else {
                continue;
            };
            if starts.get(&a.cluster).is_none_or(|start| ended < *start) {
                continue;
            }
            let n = out.entry(a.cluster.clone()).or_default();
            let slot = match o {
                Outcome::Succeeded => &mut n.succeeded,
                Outcome::ByMember => &mut n.by_member,
                Outcome::Otherwise => &mut n.otherwise,
            };
            *slot = slot.saturating_add(1);
        }
    }
    out
}

/// The part of an evidence record the count reads.
#[derive(Deserialize)]
struct Judged {
    verdict: VerificationVerdict,
    judged: String,
}

/// A challenge verdict: the member, when it was judged (Unix seconds) and whether it passed, from
/// an evidence ConfigMap; `None` for one that is not an evidence record.
pub fn verdict_of(cm: &ConfigMap) -> Option<(String, i64, bool)> {
    let member = cm.labels().get(LABEL_VERIFIES)?.clone();
    let record = cm.data.as_ref()?.get("evidence.json")?;
    let judged: Judged = serde_json::from_str(record).ok()?;
    let at: k8s_openapi::jiff::Timestamp = judged.judged.parse().ok()?;
    Some((
        member,
        at.as_second(),
        judged.verdict == VerificationVerdict::Passed,
    ))
}

/// Verdicts per member judged inside its window (at or after `starts[member]`): (passed, failed).
pub fn verdicts(
    records: &[(String, i64, bool)],
    starts: &HashMap<String, i64>,
) -> HashMap<String, (u32, u32)> {
    let mut out: HashMap<String, (u32, u32)> = HashMap::new();
    let inside =
        |(member, at, _): &&(String, i64, bool)| starts.get(member).is_some_and(|s| at >= s);
    for (member, _, passed) in records.iter().filter(inside) {
        let n = out.entry(member.clone()).or_default();
        if *passed {
            n.0 = n.0.saturating_add(1);
        } else {
            n.1 = n.1.saturating_add(1);
        }
    }
    out
}

/// A member's outages once the member controller has found it `ready` or not at `now`: an open
/// outage is closed when it is Ready again, a new one opened when it is not; outages that ended
/// before `since` are dropped, and only the newest [`MAX_OUTAGES`] kept.
pub fn sample(prev: &[Outage], ready: bool, now: &Time, since: i64) -> Vec<Outage> {
    let mut out: Vec<Outage> = prev
        .iter()
        .filter(|o| o.end.as_ref().is_none_or(|e| e.0.as_second() >= since))
        .cloned()
        .collect();
    match (out.last_mut(), ready) {
        (Some(open), true) if open.end.is_none() => open.end = Some(now.clone()),
        (Some(open), false) if open.end.is_none() => {}
        (_, false) => out.push(Outage {
            start: now.clone(),
            end: None,
        }),
        (_, true) => {}
    }
    let extra = out.len().saturating_sub(MAX_OUTAGES);
    out.drain(..extra);
    out
}

/// Percent (rounded down) of `[since, now]` not covered by `outages` (Unix seconds); 100 for an
/// empty span.
pub fn uptime_percent(outages: &[Outage], since: i64, now: i64) -> u32 {
    let span = now.saturating_sub(since);
    if span <= 0 {
        return 100;
    }
    let down: i64 = outages
        .iter()
        .map(|o| {
            let start = o.start.0.as_second().max(since);
            let end = o.end.as_ref().map_or(now, |e| e.0.as_second()).min(now);
            end.saturating_sub(start).max(0)
        })
        .sum();
    let up = span.saturating_sub(down.min(span));
    u32::try_from(up.saturating_mul(100) / span).unwrap_or(100)
}

/// The window of `pool`.
pub fn window(pool: Option<&GpuPool>) -> Duration {
    pool.and_then(|p| p.spec.reputation_window.as_ref())
        .map(|w| w.as_duration())
        .unwrap_or(DEFAULT_WINDOW)
}

/// Where the window of `member` starts at `now`: `window` back, or when it joined if later.
pub fn window_start(member: &MemberCluster, window: Duration, now: i64) -> i64 {
    let back = now.saturating_sub(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
    member
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(back, |t| t.0.as_second().max(back))
}

/// Why `member` is below `pool`'s reputation floor (the first figure that is, e.g. `uptime 80% <
/// 95%`), `None` when it is not, the pool has no floor, or its reputation is not computed yet. The
/// attempt and challenge shares count only with at least `minSamples` of them in the window.
pub fn below_floor(pool: &GpuPool, member: &MemberCluster) -> Option<String> {
    let floor = pool.spec.reputation_floor.as_ref()?;
    let r = member.status.as_ref()?.reputation.as_ref()?;
    if let Some(min) = floor.min_uptime_percent
        && r.uptime_percent < min
    {
        return Some(format!(
            "uptime {}% < {min}% over {}",
            r.uptime_percent, r.window
        ));
    }
    let attempts = r.attempts_succeeded + r.attempts_failed_by_member;
    if let (Some(min), Some(got)) = (
        floor.min_attempt_success_percent,
        r.attempt_success_percent(),
    ) && attempts >= floor.min_samples
        && got < min
    {
        return Some(format!(
            "attempts succeeded {got}% < {min}% ({} of {attempts} over {})",
            r.attempts_succeeded, r.window
        ));
    }
    let verdicts = r.challenges_passed + r.challenges_failed;
    if let (Some(min), Some(got)) = (floor.min_challenge_pass_percent, r.challenge_pass_percent())
        && verdicts >= floor.min_samples
        && got < min
    {
        return Some(format!(
            "challenges passed {got}% < {min}% ({} of {verdicts} over {})",
            r.challenges_passed, r.window
        ));
    }
    None
}

/// Whether two reputations differ in anything but when they were computed.
pub fn differs(a: Option<&MemberReputation>, b: &MemberReputation) -> bool {
    a.is_none_or(|a| {
        let mut a = a.clone();
        a.updated = b.updated.clone();
        a != *b
    })
}

/// Counts kept between recounts.
#[derive(Default)]
struct Counts {
    attempts: HashMap<String, Attempts>,
    verdicts: HashMap<String, (u32, u32)>,
}

/// Runs the loop until the task is dropped.
pub async fn run(ctx: Arc<Context>) {
    let mut counts = Counts::default();
    let mut tick: u32 = 0;
    loop {
        tokio::time::sleep(TICK).await;
        if tick.is_multiple_of(RECOUNT_TICKS) {
            match recount(&ctx).await {
                Ok(c) => counts = c,
                Err(e) => {
                    tracing::warn!(error = %e, "could not count the members' reputation; retrying")
                }
            }
        }
        tick = tick.wrapping_add(1);
        pass(&ctx, &counts).await;
    }
}

/// Counts the attempts (from the jobs cache, one scan) and the verdicts (from the evidence
/// records, one list) of every member over its pool's window.
async fn recount(ctx: &Context) -> Result<Counts> {
    let now = now().0.as_second();
    let starts: HashMap<String, i64> = ctx
        .stores
        .members
        .state()
        .iter()
        .map(|m| {
            let pool = ctx.stores.pool(&m.spec.pool);
            (m.name_any(), window_start(m, window(pool.as_deref()), now))
        })
        .collect();
    let evidence = Api::<ConfigMap>::namespaced(ctx.client.clone(), HUB_JOBS_NAMESPACE)
        .list(&ListParams::default().labels(LABEL_VERIFIES))
        .await
        .map_err(Error::kube("listing the challenges' evidence records"))?;
    let records: Vec<_> = evidence.items.iter().filter_map(verdict_of).collect();
    Ok(Counts {
        attempts: tally(ctx.stores.every_job().iter(), &starts),
        verdicts: verdicts(&records, &starts),
    })
}

/// Writes every member's reputation where a figure changed; a failed write is logged and tried
/// again at the next tick.
async fn pass(ctx: &Context, counts: &Counts) {
    let at = now();
    let now_secs = at.0.as_second();
    for member in ctx.stores.members.state() {
        let name = member.name_any();
        let pool = ctx.stores.pool(&member.spec.pool);
        let window = window(pool.as_deref());
        let start = window_start(&member, window, now_secs);
        let status = member.status.as_ref();
        let before = status.and_then(|s| s.reputation.as_ref());
        let outages = status.map(|s| s.outages.as_slice()).unwrap_or_default();
        let (passed, failed) = counts.verdicts.get(&name).copied().unwrap_or_default();
        let attempts = counts.attempts.get(&name).copied().unwrap_or_default();
        let next = MemberReputation {
            window: KubeDuration::from_secs(window.as_secs()),
            updated: at.clone(),
            challenges_passed: passed,
            challenges_failed: failed,
            attempts_succeeded: attempts.succeeded,
            attempts_failed_by_member: attempts.by_member,
            attempts_failed_otherwise: attempts.otherwise,
            uptime_percent: uptime_percent(outages, start, now_secs),
        };
        if !differs(before, &next) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "gpufed.io/v1alpha1",
            "kind": "MemberCluster",
            "metadata": {"name": name},
            "status": {"reputation": next},
        });
        if let Err(e) = Api::<MemberCluster>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            tracing::warn!(member = %name, error = %e, "could not write the member's reputation; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::hub::at_rest::cached;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn outage(start: i64, end: Option<i64>) -> Outage {
        Outage {
            start: at(start),
            end: end.map(at),
        }
    }

    fn attempt(
        cluster: &str,
        phase: AttemptPhase,
        reason: Option<&str>,
        end: i64,
    ) -> AttemptRecord {
        let mut a = gpufed_crds::testing::attempt(1, cluster, phase);
        a.reason = reason.map(Into::into);
        a.finish_time = Some(at(end));
        a
    }

    #[test]
    fn only_the_members_own_failures_count_against_it() {
        let o = |phase, reason| outcome(&attempt("a", phase, reason, 0));
        assert_eq!(o(AttemptPhase::Succeeded, None), Some(Outcome::Succeeded));
        assert_eq!(o(AttemptPhase::Lost, None), Some(Outcome::ByMember));
        for r in MEMBER_FAULTS {
            assert_eq!(o(AttemptPhase::Failed, Some(r)), Some(Outcome::ByMember));
        }
        assert_eq!(
            o(AttemptPhase::Failed, Some("BackoffLimitExceeded")),
            Some(Outcome::Otherwise)
        );
        assert_eq!(
            o(AttemptPhase::Failed, Some("StartTimeout")),
            Some(Outcome::Otherwise)
        );
        assert_eq!(o(AttemptPhase::Preempted, None), None);
        assert_eq!(o(AttemptPhase::Cancelled, None), None);
        assert_eq!(o(AttemptPhase::Running, None), None);
    }

    #[test]
    fn attempts_are_counted_per_member_inside_the_window_and_challenges_not_at_all() {
        let job = |ns: &str, attempts: Vec<AttemptRecord>| {
            let mut j = gpufed_crds::testing::job("j").build();
            j.metadata.namespace = Some(ns.into());
            j.status = Some(gpufed_crds::ComputeJobStatus {
                attempts,
                ..Default::default()
            });
            Arc::new(j)
        };
        let jobs = vec![
            job(
                "team-a",
                vec![
                    attempt("alpha", AttemptPhase::Lost, None, 100),
                    attempt("beta", AttemptPhase::Succeeded, None, 200),
                ],
            ),
            job(
                "team-a",
                vec![
                    attempt("alpha", AttemptPhase::Failed, Some("Error"), 50),
                    attempt("alpha", AttemptPhase::Succeeded, None, 300),
                ],
            ),
            job(
                HUB_JOBS_NAMESPACE,
                vec![attempt("alpha", AttemptPhase::Failed, Some("Fenced"), 300)],
            ),
        ];
        let starts = |s: i64| HashMap::from([("alpha".to_string(), s), ("beta".to_string(), s)]);
        let t = tally(cached(&jobs), &starts(60));
        assert_eq!(
            t["alpha"],
            Attempts {
                succeeded: 1,
                by_member: 1,
                otherwise: 0
            }
        );
        assert_eq!(t["beta"].succeeded, 1);
        assert_eq!(tally(cached(&jobs), &starts(0))["alpha"].otherwise, 1);
        // A member not (or no longer) known is not counted.
        assert!(tally(cached(&jobs), &HashMap::new()).is_empty());
    }

    #[test]
    fn outages_open_when_not_ready_close_when_ready_and_leave_the_window() {
        let o = sample(&[], true, &at(100), 0);
        assert!(o.is_empty());
        let o = sample(&o, false, &at(110), 0);
        assert_eq!(o, vec![outage(110, None)]);
        // Still down: the same outage.
        let o = sample(&o, false, &at(120), 0);
        assert_eq!(o, vec![outage(110, None)]);
        let o = sample(&o, true, &at(150), 0);
        assert_eq!(o, vec![outage(110, Some(150))]);
        let o = sample(&o, false, &at(200), 0);
        assert_eq!(o, vec![outage(110, Some(150)), outage(200, None)]);
        // The first ended before the window: dropped; an open one stays.
        assert_eq!(sample(&o, false, &at(400), 160), vec![outage(200, None)]);
        // At most MAX_OUTAGES, the newest.
        let many: Vec<_> = (0..60).map(|i| outage(i * 10, Some(i * 10 + 5))).collect();
        let kept = sample(&many, true, &at(1000), 0);
        assert_eq!(kept.len(), MAX_OUTAGES);
        assert_eq!(kept[0], outage(100, Some(105)));
    }

    #[test]
    fn uptime_is_the_share_of_the_window_outside_outages() {
        assert_eq!(uptime_percent(&[], 0, 1000), 100);
        assert_eq!(uptime_percent(&[outage(100, Some(200))], 0, 1000), 90);
        // An open outage runs to now; one that started before the window counts from its start.
        assert_eq!(uptime_percent(&[outage(900, None)], 0, 1000), 90);
        assert_eq!(uptime_percent(&[outage(0, Some(600))], 500, 1000), 80);
        assert_eq!(uptime_percent(&[outage(0, None)], 0, 1000), 0);
        assert_eq!(uptime_percent(&[], 1000, 1000), 100);
    }

    #[test]
    fn verdicts_are_read_from_evidence_records_and_counted_in_the_window() {
        let cm = |member: &str, verdict: &str, judged: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                labels: Some(std::collections::BTreeMap::from([(
                    LABEL_VERIFIES.into(),
                    member.into(),
                )])),
                ..Default::default()
            },
            data: Some(std::collections::BTreeMap::from([(
                "evidence.json".into(),
                format!(
                    r#"{{"version":1,"verdict":"{verdict}","judged":"{judged}","reason":"x"}}"#
                ),
            )])),
            ..Default::default()
        };
        let records: Vec<_> = [
            cm("alpha", "Passed", "1970-01-01T00:01:40Z"),
            cm("alpha", "Failed", "1970-01-01T00:03:20Z"),
            cm("alpha", "Passed", "1970-01-01T00:00:10Z"),
            ConfigMap::default(),
        ]
        .iter()
        .filter_map(verdict_of)
        .collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], ("alpha".into(), 100, true));
        let starts = HashMap::from([("alpha".to_string(), 50)]);
        assert_eq!(verdicts(&records, &starts)["alpha"], (1, 1));
        assert!(verdicts(&records, &HashMap::new()).is_empty());
    }

    #[test]
    fn only_a_changed_figure_is_a_change() {
        let r = MemberReputation {
            window: KubeDuration::from_secs(3600),
            updated: at(1),
            challenges_passed: 1,
            challenges_failed: 0,
            attempts_succeeded: 2,
            attempts_failed_by_member: 0,
            attempts_failed_otherwise: 0,
            uptime_percent: 100,
        };
        let mut later = r.clone();
        later.updated = at(2);
        assert!(!differs(Some(&r), &later));
        later.uptime_percent = 99;
        assert!(differs(Some(&r), &later));
        assert!(differs(None, &later));
        assert_eq!(r.challenge_pass_percent(), Some(100));
        assert_eq!(r.attempt_success_percent(), Some(100));
    }

    #[test]
    fn a_member_below_any_figure_of_the_floor_is_named_with_it_once_there_are_enough_samples() {
        let mut pool = GpuPool::new("p", gpufed_crds::testing::pool_spec());
        let mut m = gpufed_crds::testing::member("alpha", "H100", "2.00").build();
        let rep = |uptime, succeeded, by_member, passed, failed| MemberReputation {
            window: KubeDuration::from_secs(3600),
            updated: at(1),
            challenges_passed: passed,
            challenges_failed: failed,
            attempts_succeeded: succeeded,
            attempts_failed_by_member: by_member,
            attempts_failed_otherwise: 9,
            uptime_percent: uptime,
        };
        m.status = Some(gpufed_crds::MemberClusterStatus {
            reputation: Some(rep(80, 1, 3, 0, 1)),
            ..Default::default()
        });
        // No floor: never below.
        assert_eq!(below_floor(&pool, &m), None);
        pool.spec.reputation_floor = Some(gpufed_crds::ReputationFloor {
            min_uptime_percent: Some(95),
            min_attempt_success_percent: Some(90),
            min_challenge_pass_percent: Some(100),
            min_samples: 4,
        });
        assert_eq!(
            below_floor(&pool, &m).as_deref(),
            Some("uptime 80% < 95% over 1h0m0s")
        );
        // Enough uptime: 4 attempts are enough samples, 1 of 4 succeeded.
        m.status.as_mut().unwrap().reputation = Some(rep(99, 1, 3, 0, 1));
        assert_eq!(
            below_floor(&pool, &m).as_deref(),
            Some("attempts succeeded 25% < 90% (1 of 4 over 1h0m0s)")
        );
        // Three attempts are too few to judge; one verdict too.
        m.status.as_mut().unwrap().reputation = Some(rep(99, 1, 2, 0, 1));
        assert_eq!(below_floor(&pool, &m), None);
        m.status.as_mut().unwrap().reputation = Some(rep(99, 9, 0, 3, 1));
        assert_eq!(
            below_floor(&pool, &m).as_deref(),
            Some("challenges passed 75% < 100% (3 of 4 over 1h0m0s)")
        );
        m.status.as_mut().unwrap().reputation = Some(rep(100, 9, 0, 4, 0));
        assert_eq!(below_floor(&pool, &m), None);
        // No reputation yet: not judged.
        m.status.as_mut().unwrap().reputation = None;
        assert_eq!(below_floor(&pool, &m), None);
        // The hub's own jobs (challenges) see no floor.
        m.status.as_mut().unwrap().reputation = Some(rep(0, 0, 9, 0, 9));
        assert!(below_floor(&pool, &m).is_some());
        assert_eq!(
            below_floor(&crate::hub::challenges::hub_pool(&pool), &m),
            None
        );
    }
}
