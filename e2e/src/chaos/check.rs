//! The checker: pure functions from a [`History`] to a [`Report`] of the invariants of issue 15
//! (docs/reliability.md explains each and its tolerance).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::{ChainEvent, Event, History, JobRef, Millis};

/// How far two attempts of one job may seem to overlap on member-side times without it counting.
///
/// ADR 0012/0021 promise no overlap at all: a dead or fenced agent's pods are gone (lease `T/3` plus
/// a 3 s grace) before the hub gives the attempt away (no earlier than `¾ T`). What the recorder
/// sees is coarser than the truth in one direction only: the apiserver writes `startTime` truncated
/// to the whole second, so a later attempt's start can read up to 1 s early. Ends are upper bounds
/// (the container's `finishedAt`, or the pod's `deletionTimestamp`, which already includes the
/// grace period). One second is therefore the resolution of the evidence, not slack in the promise.
pub const OVERLAP_TOLERANCE_MS: Millis = 1_000;

/// How long before a decision a member's NotReady or cordon must have been in force to count:
/// Placement `creationTimestamp` and condition transition times are whole seconds.
pub const DECISION_TOLERANCE_MS: Millis = 1_000;

/// One invariant's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Invariant name.
    pub invariant: &'static str,
    /// How many cases it was checked on.
    pub checked: usize,
    /// One line per violation.
    pub violations: Vec<String>,
}

/// The checker's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The run's seed (to replay it).
    pub seed: u64,
    /// The run's profile.
    pub profile: String,
    /// One row per invariant, in a fixed order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.violations.is_empty())
    }

    /// The row of `invariant`.
    pub fn row(&self, invariant: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.invariant == invariant)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos profile {} seed {}", self.profile, self.seed)?;
        writeln!(f, "| invariant | checked | violations |")?;
        writeln!(f, "|---|---:|---:|")?;
        for r in &self.rows {
            writeln!(
                f,
                "| {} | {} | {} |",
                r.invariant,
                r.checked,
                r.violations.len()
            )?;
        }
        for r in &self.rows {
            for v in &r.violations {
                writeln!(f, "VIOLATION {}: {v}", r.invariant)?;
            }
        }
        if !self.ok() {
            writeln!(
                f,
                "replay with GPUFED_CHAOS_SEED={} (or --seed {})",
                self.seed, self.seed
            )?;
        }
        Ok(())
    }
}

/// Invariant names, in table order.
pub const ONE_ATTEMPT_AT_A_TIME: &str = "at most one attempt of a job running at any instant";
/// Every accepted job ends accounted for.
pub const JOBS_ACCOUNTED: &str = "every accepted job terminal or Pending with a reason";
/// Settlement exactly once.
pub const SETTLED_ONCE: &str = "every ended, locked attempt settled exactly once";
/// No payment beyond a lock.
pub const PAID_WITHIN_LOCK: &str = "nobody paid beyond a lock";
/// Escrow conservation.
pub const ESCROW_CONSERVED: &str = "escrow conservation";
/// No placement on a member that could not take it.
pub const PLACED_ON_READY: &str = "no placement on a NotReady or cordoned member";

/// Checks every invariant on `h`.
pub fn check(h: &History) -> Report {
    Report {
        seed: h.seed,
        profile: h.profile.clone(),
        rows: vec![
            one_attempt_at_a_time(h),
            jobs_accounted(h),
            settled_once(h),
            paid_within_lock(h),
            escrow_conserved(h),
            placed_on_ready(h),
        ],
    }
}

fn one_attempt_at_a_time(h: &History) -> Row {
    // job uid -> attempt -> (member, first start, last end)
    let mut runs: BTreeMap<&str, BTreeMap<u32, (&str, Millis, Millis)>> = BTreeMap::new();
    for e in &h.events {
        if let Event::AttemptRun {
            member,
            job,
            attempt,
            start,
            end,
            ..
        } = e
        {
            let end = end.unwrap_or(h.ended_at);
            let slot = runs
                .entry(job.uid.as_str())
                .or_default()
                .entry(*attempt)
                .or_insert((member.as_str(), *start, end));
            slot.1 = slot.1.min(*start);
            slot.2 = slot.2.max(end);
        }
    }
    let mut checked = 0;
    let mut violations = Vec::new();
    for (uid, attempts) in &runs {
        checked += 1;
        let list: Vec<_> = attempts.iter().collect();
        for (i, (a, (ma, sa, ea))) in list.iter().enumerate() {
            for (b, (mb, sb, eb)) in &list[i + 1..] {
                let overlap = (*ea).min(*eb) - (*sa).max(*sb);
                if overlap > OVERLAP_TOLERANCE_MS {
                    violations.push(format!(
                        "job uid {uid}: attempt {a} on {ma} [{sa}..{ea}] and attempt {b} on {mb} \
                         [{sb}..{eb}] overlap {overlap} ms (tolerance {OVERLAP_TOLERANCE_MS} ms)"
                    ));
                }
            }
        }
    }
    Row {
        invariant: ONE_ATTEMPT_AT_A_TIME,
        checked,
        violations,
    }
}

fn jobs_accounted(h: &History) -> Row {
    let deleted: BTreeSet<&JobRef> = h.deleted.iter().collect();
    let at_end: BTreeMap<&JobRef, _> = h.jobs.iter().map(|j| (&j.job, j)).collect();
    let mut checked = 0;
    let mut violations = Vec::new();
    for e in &h.events {
        let Event::JobAccepted { job, .. } = e else {
            continue;
        };
        if deleted.contains(job) {
            continue;
        }
        checked += 1;
        match at_end.get(job) {
            None => violations.push(format!("{} ({}) vanished from the hub", job.key, job.uid)),
            Some(j) => match j.phase.as_str() {
                "Succeeded" | "Failed" => {}
                "Pending" if j.reason.as_deref().is_some_and(|r| !r.is_empty()) => {}
                other => violations.push(format!(
                    "{} ended the run {other} (reason {:?})",
                    job.key, j.reason
                )),
            },
        }
    }
    Row {
        invariant: JOBS_ACCOUNTED,
        checked,
        violations,
    }
}

/// Locks, settlements and expiries by lock id.
#[derive(Default)]
struct Ledger<'a> {
    locked: BTreeMap<&'a str, Vec<u128>>,
    settled: BTreeMap<&'a str, Vec<(u128, u128, u128)>>,
    expired: BTreeMap<&'a str, Vec<u128>>,
}

fn ledger(h: &History) -> Ledger<'_> {
    let mut l = Ledger::default();
    for e in &h.events {
        match e {
            Event::Chain(ChainEvent::Locked { job_id, amount, .. }) => {
                l.locked.entry(job_id).or_default().push(*amount)
            }
            Event::Chain(ChainEvent::Settled {
                job_id,
                paid,
                fee,
                refund,
                ..
            }) => l
                .settled
                .entry(job_id)
                .or_default()
                .push((*paid, *fee, *refund)),
            Event::Chain(ChainEvent::Expired { job_id, amount, .. }) => {
                l.expired.entry(job_id).or_default().push(*amount)
            }
            _ => {}
        }
    }
    l
}

fn settled_once(h: &History) -> Row {
    let l = ledger(h);
    let mut checked = 0;
    let mut violations = Vec::new();
    let mut ids: BTreeSet<&str> = l.settled.keys().copied().collect();
    ids.extend(l.expired.keys().copied());
    // Never twice, whatever the hub says.
    for id in &ids {
        let n = l.settled.get(id).map_or(0, Vec::len) + l.expired.get(id).map_or(0, Vec::len);
        if n > 1 {
            violations.push(format!("lock {id} settled or expired {n} times"));
        }
    }
    // Every attempt that ended with a lock: exactly once.
    for j in &h.jobs {
        for a in &j.attempts {
            let ended = matches!(
                a.phase.as_str(),
                "Succeeded" | "Failed" | "Lost" | "Cancelled"
            );
            let Some(id) = a.job_id.as_deref() else {
                continue;
            };
            if !ended || !l.locked.contains_key(id) {
                continue;
            }
            checked += 1;
            let n = l.settled.get(id).map_or(0, Vec::len) + l.expired.get(id).map_or(0, Vec::len);
            if n == 0 {
                violations.push(format!(
                    "{} attempt {} ({}, {}) ended but lock {id} was never settled",
                    j.job.key, a.attempt, a.member, a.phase
                ));
            }
        }
    }
    Row {
        invariant: SETTLED_ONCE,
        checked,
        violations,
    }
}

fn paid_within_lock(h: &History) -> Row {
    let l = ledger(h);
    let mut checked = 0;
    let mut violations = Vec::new();
    for (id, locks) in &l.locked {
        if locks.len() > 1 {
            violations.push(format!("lock {id} locked {} times", locks.len()));
        }
    }
    for (id, settlements) in &l.settled {
        for (paid, fee, refund) in settlements {
            checked += 1;
            let Some(&amount) = l.locked.get(id).and_then(|v| v.first()) else {
                violations.push(format!("lock {id} paid {paid} without a Locked event"));
                continue;
            };
            if *paid > amount {
                violations.push(format!("lock {id} paid {paid} beyond its lock of {amount}"));
            }
            if fee > paid {
                violations.push(format!("lock {id} fee {fee} beyond its payment {paid}"));
            }
            if paid.checked_add(*refund) != Some(amount) {
                violations.push(format!(
                    "lock {id}: paid {paid} + refund {refund} != locked {amount}"
                ));
            }
        }
    }
    for (id, expiries) in &l.expired {
        for amount in expiries {
            checked += 1;
            match l.locked.get(id).and_then(|v| v.first()) {
                Some(locked) if locked == amount => {}
                other => violations.push(format!(
                    "lock {id} expired returning {amount}, locked {other:?}"
                )),
            }
        }
    }
    Row {
        invariant: PAID_WITHIN_LOCK,
        checked,
        violations,
    }
}

fn escrow_conserved(h: &History) -> Row {
    let Some(r) = &h.escrow else {
        return Row {
            invariant: ESCROW_CONSERVED,
            checked: 0,
            violations: Vec::new(),
        };
    };
    let (mut deposits, mut withdrawn, mut paid, mut fees, mut refunded) = (0u128, 0, 0, 0, 0);
    for e in &h.events {
        match e {
            Event::Chain(ChainEvent::Deposited { amount, .. }) => deposits += amount,
            Event::Chain(ChainEvent::Withdrawn { amount, .. }) => withdrawn += amount,
            Event::Chain(ChainEvent::Settled {
                paid: p,
                fee,
                refund,
                ..
            }) => {
                paid += p - fee.min(p);
                fees += fee;
                refunded += refund;
            }
            Event::Chain(ChainEvent::Expired { amount, .. }) => refunded += amount,
            _ => {}
        }
    }
    let mut violations = Vec::new();
    // Refunds go back into the free deposit, so they are part of `free`, not added again.
    let held = r.free + r.locked + paid + fees;
    if held + withdrawn != deposits {
        violations.push(format!(
            "free {} + locked {} + paid to providers {paid} + fees {fees} + withdrawn {withdrawn} \
             = {} != deposits {deposits} (refunded {refunded} is inside free)",
            r.free,
            r.locked,
            held + withdrawn
        ));
    }
    if r.escrow_balance != r.free + r.locked {
        violations.push(format!(
            "escrow token balance {} != free {} + locked {}",
            r.escrow_balance, r.free, r.locked
        ));
    }
    for l in &r.unlogged {
        violations.push(format!(
            "lock {} is on the contract (state {}, amount {}) and on a hub attempt, but the chain's logs have no Locked event for it",
            l.job_id, l.state, l.amount
        ));
    }
    Row {
        invariant: ESCROW_CONSERVED,
        checked: 1,
        violations,
    }
}

fn placed_on_ready(h: &History) -> Row {
    let mut states: BTreeMap<&str, Vec<(Millis, bool)>> = BTreeMap::new();
    for e in &h.events {
        if let Event::MemberState {
            at,
            member,
            ready,
            cordoned,
        } = e
        {
            states
                .entry(member)
                .or_default()
                .push((*at, *ready && !*cordoned));
        }
    }
    for v in states.values_mut() {
        v.sort();
    }
    let mut checked = 0;
    let mut violations = Vec::new();
    for e in &h.events {
        let Event::Decision {
            at,
            job,
            attempt,
            member,
        } = e
        else {
            continue;
        };
        checked += 1;
        let from = at - DECISION_TOLERANCE_MS;
        let list = states.get(member.as_str()).map_or(&[][..], Vec::as_slice);
        // The state in force at `from`, and every change until `at`.
        let before = list.iter().rev().find(|(t, _)| *t <= from);
        let during = list.iter().filter(|(t, _)| *t > from && t <= at);
        let fit = before.iter().copied().chain(during).any(|(_, ok)| *ok);
        if !fit {
            violations.push(format!(
                "{} attempt {attempt} placed on {member} at {at}, which was NotReady or cordoned \
                 (states {list:?})",
                job.key
            ));
        }
    }
    Row {
        invariant: PLACED_ON_READY,
        checked,
        violations,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::chaos::history::{AttemptEnd, EscrowReadout, JobEnd, UnloggedLock};

    fn job(n: &str) -> JobRef {
        JobRef {
            key: format!("team-a/{n}"),
            uid: format!("uid-{n}"),
        }
    }

    fn run(member: &str, n: &str, attempt: u32, start: Millis, end: Option<Millis>) -> Event {
        Event::AttemptRun {
            member: member.into(),
            job: job(n),
            attempt,
            pod: format!("{n}-{attempt}-0"),
            start,
            end,
        }
    }

    fn chain(e: ChainEvent) -> Event {
        Event::Chain(e)
    }

    fn state(at: Millis, member: &str, ready: bool, cordoned: bool) -> Event {
        Event::MemberState {
            at,
            member: member.into(),
            ready,
            cordoned,
        }
    }

    fn decision(at: Millis, n: &str, attempt: u32, member: &str) -> Event {
        Event::Decision {
            at,
            job: job(n),
            attempt,
            member: member.into(),
        }
    }

    /// A run with one job retried after a failover (no overlap, within tolerance at the seam),
    /// one impossible job pending with a reason, one deleted job, and a chain that balances.
    fn clean() -> History {
        let events = vec![
            state(0, "alpha", true, false),
            state(0, "beta", true, false),
            Event::JobAccepted {
                at: 1_000,
                job: job("a"),
            },
            Event::JobAccepted {
                at: 1_000,
                job: job("impossible"),
            },
            Event::JobAccepted {
                at: 1_000,
                job: job("gone"),
            },
            decision(2_000, "a", 1, "alpha"),
            run("alpha", "a", 1, 3_000, Some(20_000)),
            state(15_000, "alpha", false, false),
            decision(21_000, "a", 2, "beta"),
            // Starts within a second of attempt 1's end: the timestamps' resolution.
            run("beta", "a", 2, 19_500, Some(40_000)),
            chain(ChainEvent::Deposited {
                block: 1,
                payer: "0xp".into(),
                amount: 1_000,
            }),
            chain(ChainEvent::Locked {
                block: 2,
                job_id: "0x1".into(),
                amount: 100,
            }),
            chain(ChainEvent::Settled {
                block: 3,
                job_id: "0x1".into(),
                paid: 40,
                fee: 4,
                refund: 60,
            }),
            chain(ChainEvent::Locked {
                block: 4,
                job_id: "0x2".into(),
                amount: 100,
            }),
            chain(ChainEvent::Settled {
                block: 5,
                job_id: "0x2".into(),
                paid: 100,
                fee: 10,
                refund: 0,
            }),
            chain(ChainEvent::Withdrawn {
                block: 6,
                payer: "0xp".into(),
                amount: 10,
            }),
        ];
        History {
            seed: 7,
            profile: "test".into(),
            ended_at: 50_000,
            events,
            jobs: vec![
                JobEnd {
                    job: job("a"),
                    phase: "Succeeded".into(),
                    reason: None,
                    attempts: vec![
                        AttemptEnd {
                            attempt: 1,
                            member: "alpha".into(),
                            phase: "Lost".into(),
                            job_id: Some("0x1".into()),
                        },
                        AttemptEnd {
                            attempt: 2,
                            member: "beta".into(),
                            phase: "Succeeded".into(),
                            job_id: Some("0x2".into()),
                        },
                    ],
                },
                JobEnd {
                    job: job("impossible"),
                    phase: "Pending".into(),
                    reason: Some("no member has 64 GPUs of one model".into()),
                    attempts: vec![],
                },
            ],
            deleted: vec![job("gone")],
            // 1000 deposited, 10 withdrawn, 140 paid (14 of it fees): 850 free, nothing locked.
            escrow: Some(EscrowReadout {
                free: 850,
                locked: 0,
                escrow_balance: 850,
                unlogged: vec![],
            }),
        }
    }

    fn violations(h: &History, invariant: &str) -> Vec<String> {
        check(h).row(invariant).unwrap().violations.clone()
    }

    #[test]
    fn a_clean_history_passes_and_counts_what_it_checked() {
        let h = clean();
        let r = check(&h);
        assert!(r.ok(), "{r}");
        let counts: Vec<usize> = r.rows.iter().map(|r| r.checked).collect();
        assert_eq!(counts, vec![1, 2, 2, 2, 1, 2]);
        assert!(r.to_string().contains("| escrow conservation | 1 | 0 |"));
        assert!(!r.to_string().contains("replay"));
    }

    #[test]
    fn the_history_survives_json() {
        let h = clean();
        let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn overlapping_attempts_are_caught_past_the_tolerance() {
        let mut h = clean();
        // Attempt 2 starts 1.5 s before attempt 1 ends.
        h.events.push(run("beta", "a", 2, 18_500, Some(19_000)));
        let v = violations(&h, ONE_ATTEMPT_AT_A_TIME);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("overlap 1500 ms"), "{v:?}");
        let r = check(&h);
        assert!(!r.ok());
        assert!(r.to_string().contains("GPUFED_CHAOS_SEED=7"));
    }

    #[test]
    fn an_attempt_still_running_at_the_end_overlaps_a_later_one() {
        let mut h = clean();
        // Attempt 1 never stopped: it runs to the end of the history.
        h.events.push(run("alpha", "a", 1, 3_000, None));
        assert_eq!(violations(&h, ONE_ATTEMPT_AT_A_TIME).len(), 1);
    }

    #[test]
    fn a_job_left_running_or_vanished_or_pending_without_reason_is_caught() {
        for (phase, reason) in [("Running", None), ("Placed", None), ("Pending", Some(""))] {
            let mut h = clean();
            h.jobs[1].phase = phase.into();
            h.jobs[1].reason = reason.map(String::from);
            assert_eq!(violations(&h, JOBS_ACCOUNTED).len(), 1, "{phase}");
        }
        let mut h = clean();
        h.jobs.remove(1);
        let v = violations(&h, JOBS_ACCOUNTED);
        assert!(v[0].contains("vanished"), "{v:?}");
        // A deleted job that was not deleted on purpose.
        let mut h = clean();
        h.deleted.clear();
        assert_eq!(violations(&h, JOBS_ACCOUNTED).len(), 1);
    }

    #[test]
    fn an_ended_attempt_never_settled_or_settled_twice_is_caught() {
        let mut h = clean();
        h.events.retain(
            |e| !matches!(e, Event::Chain(ChainEvent::Settled { job_id, .. }) if job_id == "0x2"),
        );
        let v = violations(&h, SETTLED_ONCE);
        assert!(v[0].contains("never settled"), "{v:?}");

        let mut h = clean();
        h.events.push(chain(ChainEvent::Expired {
            block: 9,
            job_id: "0x1".into(),
            amount: 100,
        }));
        let v = violations(&h, SETTLED_ONCE);
        assert!(v[0].contains("2 times"), "{v:?}");
    }

    #[test]
    fn a_payment_beyond_its_lock_or_without_one_is_caught() {
        let mut h = clean();
        h.events.push(chain(ChainEvent::Locked {
            block: 7,
            job_id: "0x3".into(),
            amount: 10,
        }));
        h.events.push(chain(ChainEvent::Settled {
            block: 8,
            job_id: "0x3".into(),
            paid: 11,
            fee: 1,
            refund: 0,
        }));
        let v = violations(&h, PAID_WITHIN_LOCK);
        assert!(v.iter().any(|v| v.contains("beyond its lock")), "{v:?}");

        let mut h = clean();
        h.events.push(chain(ChainEvent::Settled {
            block: 8,
            job_id: "0x9".into(),
            paid: 1,
            fee: 0,
            refund: 0,
        }));
        let v = violations(&h, PAID_WITHIN_LOCK);
        assert!(v[0].contains("without a Locked"), "{v:?}");
    }

    #[test]
    fn money_that_appears_or_disappears_is_caught() {
        let mut h = clean();
        h.escrow.as_mut().unwrap().free = 851;
        h.escrow.as_mut().unwrap().escrow_balance = 851;
        let v = violations(&h, ESCROW_CONSERVED);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("!= deposits 1000"), "{v:?}");

        let mut h = clean();
        h.escrow.as_mut().unwrap().escrow_balance = 800;
        let v = violations(&h, ESCROW_CONSERVED);
        assert!(v[0].contains("token balance"), "{v:?}");

        // A lock the logs never announced is money the event ledger cannot follow.
        let mut h = clean();
        h.escrow.as_mut().unwrap().unlogged.push(UnloggedLock {
            job_id: "0x99".into(),
            state: 2,
            amount: 7,
        });
        let v = violations(&h, ESCROW_CONSERVED);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("lock 0x99 is on the contract (state 2"),
            "{v:?}"
        );
    }

    #[test]
    fn a_placement_on_a_not_ready_or_cordoned_member_is_caught() {
        let mut h = clean();
        // Alpha NotReady since 15 s; a decision for it at 30 s.
        h.events.push(decision(30_000, "b", 1, "alpha"));
        assert_eq!(violations(&h, PLACED_ON_READY).len(), 1);

        // Within a second of the transition: the timestamps cannot tell.
        let mut h = clean();
        h.events.push(decision(15_800, "b", 1, "alpha"));
        assert!(violations(&h, PLACED_ON_READY).is_empty());

        let mut h = clean();
        h.events.push(state(10_000, "beta", true, true));
        assert_eq!(violations(&h, PLACED_ON_READY).len(), 1);

        // A member never seen at all.
        let mut h = clean();
        h.events.push(decision(5_000, "b", 1, "gamma"));
        assert_eq!(violations(&h, PLACED_ON_READY).len(), 1);
    }
}
