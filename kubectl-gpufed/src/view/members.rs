//! `kubectl gpufed members`: MemberClusters with their pool, region, health conditions
//! (Ready, Schedulable, Bonded), GPUs, how long ago they last heartbeated, and whether cordoned;
//! wide adds its reputation over the pool's window (uptime, challenges passed, tenant attempts
//! that succeeded), the latest challenge verdict on the member's GPUs (ADR 0027) and the
//! automatic slash it led to, if any (ADR 0023).

use gpufed_crds::conditions::member as mc;
use gpufed_crds::{MemberCluster, VerificationVerdict};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::format::{age_of, condition_status, or_none};
use crate::table::Table;
use crate::view::top::model_counts;

/// The members table; `wide` adds Joined, active placements, agent version, wallet, the latest
/// challenge verdict (`Passed`, `Failed/<reason>`, `<none>` before the first) and the slash a
/// failed verdict led to (`Proposed/50`, `Executed/50`, `NotSlashed`, `<none>`).
/// HEARTBEAT is the age of the member's last Lease renewal from `heartbeats` (by cluster), or of
/// the hub's coarser `status.lastHeartbeatTime` where that is newer or no Lease was readable.
pub fn render(
    members: &[MemberCluster],
    heartbeats: &BTreeMap<String, Time>,
    wide: bool,
    now: Timestamp,
) -> String {
    if members.is_empty() {
        return "No resources found\n".into();
    }
    let mut headers = vec![
        "name",
        "pool",
        "region",
        "ready",
        "schedulable",
        "bonded",
        "models",
        "gpus",
        "free",
        "heartbeat",
        "cordoned",
        "age",
    ];
    if wide {
        headers.extend([
            "joined",
            "active",
            "agent",
            "wallet",
            "uptime",
            "challenges",
            "success",
            "verified",
            "slash",
        ]);
    }
    let mut sorted: Vec<&MemberCluster> = members.iter().collect();
    sorted.sort_by_key(|m| m.name_any());
    let mut table = Table::new(&headers);
    for m in sorted {
        let status = m.status.clone().unwrap_or_default();
        let conds = &status.conditions;
        let mut row = vec![
            m.name_any(),
            m.spec.pool.clone(),
            m.spec.region.clone(),
            condition_status(conds, mc::READY),
            condition_status(conds, mc::SCHEDULABLE),
            condition_status(conds, mc::BONDED),
            or_none(model_counts(m).or(status.model_summary.clone())),
            status.total_gpus.to_string(),
            status.free_gpus.to_string(),
            age_of(
                heartbeats
                    .get(&m.name_any())
                    .into_iter()
                    .chain(status.last_heartbeat_time.as_ref())
                    .max_by_key(|t| t.0),
                now,
            ),
            m.spec.cordoned.to_string(),
            age_of(m.metadata.creation_timestamp.as_ref(), now),
        ];
        if wide {
            row.extend([
                condition_status(conds, mc::JOINED),
                status.active_placements.to_string(),
                or_none(status.agent_version.clone()),
                or_none(m.spec.wallet.clone()),
                uptime(status.reputation.as_ref()),
                challenges(status.reputation.as_ref()),
                success(status.reputation.as_ref()),
                verified(m, status.verification.as_ref()),
                slash(status.slash.as_ref()),
            ]);
        }
        table.push(row);
    }
    table.render()
}

/// The Uptime cell: the share of the pool's reputation window the member was Ready (`99%`).
fn uptime(r: Option<&gpufed_crds::MemberReputation>) -> String {
    or_none(r.map(|r| format!("{}%", r.uptime_percent)))
}

/// The Challenges cell: verdicts passed of those judged in the window (`3/4`).
fn challenges(r: Option<&gpufed_crds::MemberReputation>) -> String {
    or_none(r.map(|r| {
        format!(
            "{}/{}",
            r.challenges_passed,
            r.challenges_passed + r.challenges_failed
        )
    }))
}

/// The Success cell: tenant attempts that succeeded of those that succeeded or ended through the
/// member's fault in the window (`95%`); failures of the workload's own do not count.
fn success(r: Option<&gpufed_crds::MemberReputation>) -> String {
    or_none(
        r.and_then(|r| r.attempt_success_percent())
            .map(|p| format!("{p}%")),
    )
}

/// The Verified cell: the latest verdict, and `Probation` for a member that joined by stake
/// (ADR 0031) and has not passed a challenge yet (until it does, it gets only challenges and the
/// jobs that set `spec.allowUnverified`).
fn verified(m: &MemberCluster, v: Option<&gpufed_crds::MemberVerification>) -> String {
    let verdict = v.map(|v| match v.verdict {
        VerificationVerdict::Passed => "Passed".to_string(),
        VerificationVerdict::Failed => format!("Failed/{}", v.reason),
    });
    let open = m
        .labels()
        .get(gpufed_crds::join::LABEL_ADMISSION)
        .map(String::as_str)
        == Some(gpufed_crds::join::ADMISSION_OPEN);
    match verdict {
        Some(p) if p == "Passed" => p,
        Some(f) if open => format!("Probation ({f})"),
        None if open => "Probation".to_string(),
        other => or_none(other),
    }
}

/// The Slash cell: where the hub's automatic slash of this member stands, with the tokens frozen
/// or paid (`Proposed/50`), or only the phase when it names no amount (`NotSlashed`).
fn slash(s: Option<&gpufed_crds::MemberSlash>) -> String {
    or_none(s.map(|s| {
        let phase = format!("{:?}", s.phase);
        match &s.amount {
            Some(amount) => format!("{phase}/{amount}"),
            None => phase,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cond, node, now, ready_member};
    use gpufed_crds::testing::member;

    fn members() -> Vec<MemberCluster> {
        let alpha = ready_member(
            member("alpha", "H100", "2.40").build(),
            vec![node("a-0", "H100", 8, 8), node("a-1", "H100", 8, 0)],
        );
        let mut gone = ready_member(
            member("gamma", "L4", "0.50")
                .region("ap-south")
                .cordoned()
                .build(),
            vec![node("g-0", "L4", 4, 4)],
        );
        if let Some(s) = gone.status.as_mut() {
            s.last_heartbeat_time = Some(crate::fixtures::ago(600));
            s.conditions[1] = cond(
                "Ready",
                false,
                "HeartbeatExpired",
                "no heartbeat for more than 40s",
                560,
            );
            s.conditions[3] = cond("Schedulable", false, "NotReady", "not ready", 560);
        }
        let new = member("beta", "A100", "1.20").build();
        vec![gone, new, alpha]
    }

    #[test]
    fn members_show_health_capacity_heartbeat_and_cordon() {
        assert_eq!(
            render(&members(), &BTreeMap::new(), false, now()),
            "\
NAME   POOL     REGION    READY   SCHEDULABLE  BONDED  MODELS   GPUS  FREE  HEARTBEAT  CORDONED  AGE
alpha  default  eu-west   True    True         True    H100x16  16    8     3s         false     24h
beta   default  eu-west   <none>  <none>       <none>  <none>   0     0     <none>     false     <none>
gamma  default  ap-south  False   False        True    L4x4     4     4     10m        true      24h
"
        );
    }

    #[test]
    fn the_heartbeat_is_the_newer_of_the_lease_renewal_and_the_hubs_coarse_record() {
        // alpha's status says 3s ago; its Lease was renewed 1s ago. gamma's status (10m) is
        // newer than a Lease reading of an hour ago.
        let leases = BTreeMap::from([
            ("alpha".to_string(), crate::fixtures::ago(1)),
            ("gamma".to_string(), crate::fixtures::ago(3600)),
        ]);
        let out = render(&members(), &leases, false, now());
        let heartbeat = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(9))
                .map(str::to_string)
        };
        assert_eq!(heartbeat("alpha").as_deref(), Some("1s"));
        assert_eq!(heartbeat("gamma").as_deref(), Some("10m"));
        assert_eq!(heartbeat("beta").as_deref(), Some("<none>"));
    }

    #[test]
    fn wide_adds_joined_active_placements_agent_and_wallet() {
        let out = render(&members(), &BTreeMap::new(), true, now());
        let first = out.lines().next().unwrap();
        assert!(
            first.ends_with(
                "AGE     JOINED  ACTIVE  AGENT   WALLET  UPTIME  CHALLENGES  SUCCESS  VERIFIED  SLASH"
            ),
            "{first}"
        );
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .ends_with(
                    "24h     True    1       0.1.0   <none>  <none>  <none>      <none>   <none>    <none>"
                ),
            "{out}"
        );
    }

    #[test]
    fn wide_shows_the_latest_challenge_verdict_with_its_reason() {
        let mut ms = members();
        let verdict = |v, reason: &str| gpufed_crds::MemberVerification {
            verdict: v,
            reason: reason.into(),
            message: "m".into(),
            time: crate::fixtures::ago(60),
            challenge: "j-1".into(),
            evidence_sha256: "ab".into(),
            evidence: "evidence-j-1".into(),
            inventory: "f".into(),
            gpus: 4,
            model: "L4".into(),
            answer_seconds: Some(2),
            last_passed_time: None,
        };
        ms[0].status.as_mut().unwrap().verification =
            Some(verdict(VerificationVerdict::Failed, "WrongResult"));
        ms[2].status.as_mut().unwrap().verification =
            Some(verdict(VerificationVerdict::Passed, "Verified"));
        let out = render(&ms, &BTreeMap::new(), true, now());
        let line = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert_eq!(verified_cell(&line("alpha")), "Passed", "{out}");
        assert_eq!(verified_cell(&line("gamma")), "Failed/WrongResult", "{out}");
        assert_eq!(verified_cell(&line("beta")), "<none>", "{out}");
    }

    #[test]
    fn wide_shows_where_an_automatic_slash_stands_with_its_tokens() {
        let mut ms = members();
        let slash = |phase, amount: Option<&str>| gpufed_crds::MemberSlash {
            phase,
            challenge: "j-1".into(),
            reason: "WrongResult".into(),
            evidence_sha256: "ab".into(),
            amount: amount.map(|a| a.parse().unwrap()),
            tenants: vec![],
            executable_at: None,
            propose_tx: None,
            execute_tx: None,
            message: "m".into(),
            time: crate::fixtures::ago(60),
        };
        ms[0].status.as_mut().unwrap().slash =
            Some(slash(gpufed_crds::SlashPhase::Proposed, Some("50")));
        ms[2].status.as_mut().unwrap().slash =
            Some(slash(gpufed_crds::SlashPhase::NotSlashed, None));
        let out = render(&ms, &BTreeMap::new(), true, now());
        let line = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(line("gamma").ends_with("Proposed/50.00"), "{out}");
        assert!(line("alpha").ends_with("NotSlashed"), "{out}");
        assert!(line("beta").ends_with("<none>"), "{out}");
    }

    #[test]
    fn wide_shows_uptime_challenges_passed_and_attempt_success_over_the_window() {
        let mut ms = members();
        ms[2].status.as_mut().unwrap().reputation = Some(gpufed_crds::MemberReputation {
            window: gpufed_crds::KubeDuration::from_secs(7 * 24 * 3600),
            updated: crate::fixtures::ago(5),
            challenges_passed: 3,
            challenges_failed: 1,
            attempts_succeeded: 19,
            attempts_failed_by_member: 1,
            attempts_failed_otherwise: 7,
            uptime_percent: 98,
        });
        let out = render(&ms, &BTreeMap::new(), true, now());
        let alpha = out.lines().find(|l| l.starts_with("alpha")).unwrap();
        let cells: Vec<&str> = alpha.split_whitespace().rev().take(5).collect();
        assert_eq!(cells, ["<none>", "<none>", "95%", "3/4", "98%"], "{out}");
    }

    /// The VERIFIED cell of a wide row (the one before SLASH).
    fn verified_cell(line: &str) -> String {
        line.split_whitespace().rev().nth(1).unwrap().to_string()
    }

    #[test]
    fn no_members_says_so() {
        assert_eq!(
            render(&[], &BTreeMap::new(), false, now()),
            "No resources found\n"
        );
    }

    #[test]
    fn a_member_that_joined_by_stake_shows_probation_until_it_passes() {
        let mut m = member("delta", "H100", "2.00").build();
        m.metadata.labels = Some(
            [(
                gpufed_crds::join::LABEL_ADMISSION.to_string(),
                gpufed_crds::join::ADMISSION_OPEN.to_string(),
            )]
            .into(),
        );
        assert_eq!(verified(&m, None), "Probation");
        let out = render(std::slice::from_ref(&m), &BTreeMap::new(), true, now());
        assert_eq!(
            verified_cell(out.lines().nth(1).unwrap()),
            "Probation",
            "{out}"
        );
        let admin_made = member("alpha", "H100", "2.40").build();
        assert_eq!(verified(&admin_made, None), "<none>");
    }
}
