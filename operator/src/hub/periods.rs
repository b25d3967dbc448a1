//! Serving jobs paid while they run (docs/adr/0030-serving-jobs.md): at the end of each
//! `spec.serving.settlementPeriod` of a running attempt, the hub pays what its GPU-seconds cost so
//! far out of the attempt's lock with `JobEscrow.settlePeriod(jobId, k, paid)`. The escrow takes
//! period `k` only once and only after `k − 1` (`periodsSettled`), so the chain, not the hub's
//! status, says which periods are paid: a hub restarted after sending a period reads it back and
//! goes on with the next one. What is left of the lock is settled when the attempt ends, for the
//! rest of its usage ([`super::settlement`] subtracts what the periods paid).
//!
//! Period `k` pays up to `min(GPU-seconds reported, GPUs × k × period)` in total: a member that
//! reports late is paid the difference in a later period or in the final settlement, never twice.
//!
//! A serving attempt is funded one `maxDuration` window at a time (ADR 0030 section 7): one margin
//! before the funded time ends ([`renewal`], [`renew_margin`]) the hub locks the next window into
//! the same lock (`JobEscrow.extendLock`, deadline [`renewed_deadline`]), records `windowsFunded`
//! and the total `locked`, and the job controller raises `Placement.spec.fundedSeconds`, which the
//! member's agent turns into the local Job's deadline. A refused renewal leaves the funded time
//! where it is: the member stops the attempt at its end.

use std::time::Duration;

use gpufed_crds::{
    AttemptPhase, ComputeJob, ComputeJobStatus, Settlement, SettlementState, TokenAmount,
};

use crate::error::Result;
use crate::hub::chain::{ChainClient, Extension, LockInfo, LockState, job_id};
use crate::hub::settlement::{CLOCK_MARGIN_SECS, Step, amount_due, lock_amount};

/// Start of the settlement message when the paid periods could not be read.
const READ_FAILED: &str = "reading the periods paid so far";
/// When to try again after the paid periods could not be read.
const RETRY_READ: Duration = Duration::from_secs(30);

/// The next period to pay and its amount, if one has ended: `running_secs` since the attempt's
/// pods started, periods of `period_secs`, `paid_periods` already paid, the attempt's `gpus`,
/// reported `gpu_seconds` and `price`, the lock as made (`locked`) and what is left of it
/// (`remaining`).
#[allow(clippy::too_many_arguments)]
pub fn next_period(
    period_secs: u64,
    running_secs: u64,
    paid_periods: u32,
    gpus: u64,
    gpu_seconds: u64,
    price: TokenAmount,
    locked: TokenAmount,
    remaining: TokenAmount,
) -> Option<(u32, TokenAmount)> {
    if period_secs == 0 {
        return None;
    }
    let next = paid_periods.checked_add(1)?;
    if u64::from(next) > running_secs / period_secs {
        return None;
    }
    let through = gpus
        .saturating_mul(u64::from(next))
        .saturating_mul(period_secs)
        .min(gpu_seconds);
    let owed_so_far = amount_due(price, through, Some(locked));
    let paid_so_far = locked.saturating_sub(remaining);
    Some((next, owed_so_far.saturating_sub(paid_so_far).min(remaining)))
}

/// Seconds until the period after `paid_periods` ends, `running_secs` into the attempt.
pub fn until_next(period_secs: u64, running_secs: u64, paid_periods: u32) -> Option<Duration> {
    let end = u64::from(paid_periods.checked_add(1)?).checked_mul(period_secs)?;
    Some(Duration::from_secs(end.saturating_sub(running_secs)))
}

/// The least time before a funded window ends at which the hub renews a serving attempt's lock.
pub const RENEW_MARGIN_MIN: Duration = Duration::from_secs(10);

/// What the hub does about the funding of a running serving attempt (ADR 0030, renewed windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Window `window` (from 2) must be locked now: the funded time ends within the margin.
    Due {
        /// The window to fund next (the attempt has `window − 1` funded).
        window: u32,
        /// Running seconds the attempt may reach once it is funded (its new hard stop).
        funded_secs: u64,
    },
    /// Nothing to do until this much later.
    In(Duration),
}

/// The margin before a funded window ends at which its successor is locked: one settlement
/// period, at least [`RENEW_MARGIN_MIN`], at most half a window, so that the money locked ahead of
/// what has run never exceeds one and a half windows.
pub fn renew_margin(window_secs: u64, period_secs: u64) -> u64 {
    period_secs
        .max(RENEW_MARGIN_MIN.as_secs())
        .min(window_secs / 2)
}

/// Whether the next window of a serving attempt `running_secs` into its run, with `windows`
/// windows of `window_secs` (its `maxDuration`) funded so far, must be locked now, given the
/// `margin_secs` of [`renew_margin`]. `None` for a zero window or an overflowing count.
pub fn renewal(
    window_secs: u64,
    margin_secs: u64,
    running_secs: u64,
    windows: u32,
) -> Option<Renewal> {
    if window_secs == 0 {
        return None;
    }
    let funded_end = u64::from(windows).checked_mul(window_secs)?;
    let due_at = funded_end.saturating_sub(margin_secs);
    if running_secs < due_at {
        return Some(Renewal::In(Duration::from_secs(due_at - running_secs)));
    }
    let window = windows.checked_add(1)?;
    Some(Renewal::Due {
        window,
        funded_secs: u64::from(window).checked_mul(window_secs)?,
    })
}

/// The lock deadline for window `window` of a lock first made with `first_deadline` for windows of
/// `window_secs`: the first deadline moved on by one window per renewal, but never past what the
/// escrow accepts now (`now_secs + max_lock_secs`).
pub fn renewed_deadline(
    first_deadline: u64,
    window_secs: u64,
    window: u32,
    now_secs: u64,
    max_lock_secs: u64,
) -> u64 {
    let later = u64::from(window.saturating_sub(1)).saturating_mul(window_secs);
    first_deadline
        .saturating_add(later)
        .min(now_secs.saturating_add(max_lock_secs))
}

/// Start of the settlement message of a renewal whose outcome is unknown (a timeout): the
/// transaction may still be mined, so it is cancelled before another is sent.
const RENEWAL_UNKNOWN: &str = "renewing the lock";
/// Reason (Event, settlement message) of a renewal the escrow refused: the attempt stops at the
/// end of what is funded unless the payer's deposit and authorisation cover the next window.
pub const RENEWAL_REFUSED: &str = "RenewalRefused";
/// When to try a refused renewal again (the payer may top up before the funded time ends).
const RETRY_RENEWAL: Duration = Duration::from_secs(30);

/// What the serving attempt's settlement record says about its funding after
/// [`reconcile_windows`]: the windows funded and the total locked, from the chain's renewals.
pub fn windows_from(first: TokenAmount, extensions: &[Extension]) -> Option<(u32, TokenAmount)> {
    let windows = u32::try_from(extensions.len()).ok()?.checked_add(1)?;
    let locked = extensions
        .iter()
        .try_fold(first, |acc, e| acc.checked_add(e.added))?;
    Some((windows, locked))
}

/// Brings a serving attempt's record of its lock (`locked`, `windowsFunded`, `lockDeadline`) in
/// line with the chain when the lock's deadline is not the one recorded: a renewal was mined that
/// the record missed (the hub stopped or its status write failed after sending it). The renewals
/// are read back from the `LockExtended` events, so the total locked — from which what periods
/// paid is derived — is exact whatever the hub did. `first` is the first window's lock.
pub async fn reconcile_windows(
    chain: &ChainClient,
    s: &mut Settlement,
    lock: &LockInfo,
    first: TokenAmount,
    step: &mut Step,
) -> Result<()> {
    if lock.state == LockState::None || s.lock_deadline == Some(lock.deadline) {
        return Ok(());
    }
    let extensions = chain.lock_extensions(lock.id, s.lock_block).await?;
    let Some((windows, locked)) = windows_from(first, &extensions) else {
        return Ok(());
    };
    s.windows_funded = if windows > 1 { windows } else { 0 };
    s.locked = Some(locked);
    s.lock_deadline = Some(lock.deadline);
    step.changed = true;
    Ok(())
}

/// Lowers `step.recheck_in` to `d`.
fn recheck(step: &mut Step, d: Duration) {
    step.recheck_in = Some(step.recheck_in.map_or(d, |r| r.min(d)));
}

/// Pays the next ended period of the current attempt of serving `job` (status `st`) if there is
/// one, and renews its lock for the next `maxDuration` window when that is due ([`renewal`]);
/// records on the attempt's settlement how many periods and windows the chain says are paid and
/// funded. One period and one renewal per call; `step.again_soon` when more is already due.
pub async fn advance(
    chain: &ChainClient,
    job: &ComputeJob,
    st: &mut ComputeJobStatus,
    now_secs: u64,
    step: &mut Step,
) -> Result<()> {
    let Some(serving) = &job.spec.serving else {
        return Ok(());
    };
    let Some(first) = lock_amount(job) else {
        return Ok(());
    };
    let period_secs = serving.settlement_period.as_secs_ceil();
    let window_secs = job.spec.max_duration.as_secs_ceil();
    let gpus = u64::from(job.spec.replicas * job.spec.gpus_per_replica);
    let current = st.attempt;
    let Some(a) = st
        .attempts
        .iter_mut()
        .find(|a| a.attempt == current && a.phase == AttemptPhase::Running)
    else {
        return Ok(());
    };
    let Some(start) = a.start_time.as_ref() else {
        return Ok(());
    };
    let running_secs = now_secs.saturating_sub(u64::try_from(start.0.as_second()).unwrap_or(0));
    let (attempt, gpu_seconds, price) = (a.attempt, a.gpu_seconds, a.price_per_gpu_hour);
    let Some(s) = a.settlement.as_mut() else {
        return Ok(());
    };
    if s.state != SettlementState::Locked || s.locked.is_none() {
        return Ok(());
    }
    let id = job_id(&s.job_id)?;
    let lock = chain.get_lock(id).await?;
    if lock.state != LockState::Locked {
        return Ok(());
    }
    reconcile_windows(chain, s, &lock, first, step).await?;
    let Some(locked) = s.locked else {
        return Ok(());
    };
    renew(
        chain,
        s,
        &lock,
        first,
        (window_secs, renew_margin(window_secs, period_secs)),
        (attempt, running_secs, now_secs),
        step,
    )
    .await?;
    // An escrow without `settlePeriod` (deployed before ADR 0030), or a failed read: the attempt is
    // still settled once when it ends; nothing else of the job's money waits on this.
    let paid_periods = match chain.periods_settled(id).await {
        Ok(n) => n,
        Err(e) => {
            let message = format!("{READ_FAILED}: {e}");
            if s.message.as_ref() != Some(&message) {
                s.message = Some(message);
                step.changed = true;
            }
            recheck(step, RETRY_READ);
            return Ok(());
        }
    };
    if s.message
        .as_deref()
        .is_some_and(|m| m.starts_with(READ_FAILED))
    {
        s.message = None;
        step.changed = true;
    }
    let paid_so_far = locked.saturating_sub(lock.amount);
    if s.periods_paid != paid_periods {
        s.periods_paid = paid_periods;
        s.paid = (paid_periods > 0).then_some(paid_so_far);
        step.changed = true;
    }
    let Some((period, pay)) = next_period(
        period_secs,
        running_secs,
        paid_periods,
        gpus,
        gpu_seconds,
        price,
        locked,
        lock.amount,
    ) else {
        if let Some(d) = until_next(period_secs, running_secs, paid_periods) {
            recheck(step, d);
        }
        return Ok(());
    };
    step.again_soon = true;
    match chain.settle_period(id, period, pay).await {
        Ok(Ok(mined)) => {
            s.periods_paid = period;
            s.paid = paid_so_far.checked_add(pay);
            // A refused renewal stays shown (and reported once) until a renewal succeeds.
            if !s
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(RENEWAL_REFUSED))
            {
                s.message = None;
            }
            step.changed = true;
            step.events.push((
                false,
                "PaidPeriod",
                format!(
                    "attempt {attempt}: period {period} paid {pay} (GPU-seconds so far {gpu_seconds}; tx {})",
                    mined.tx
                ),
            ));
        }
        Ok(Err(refused)) => {
            // Typically the period was paid meanwhile (a resend): the next pass reads it back.
            s.message = Some(format!("paying period {period}: {refused}"));
            step.changed = true;
        }
        Err(e) => {
            s.message = Some(format!("paying period {period}: {e}"));
            step.changed = true;
        }
    }
    Ok(())
}

/// Locks the next window of a running serving attempt when [`renewal`] says it is due
/// (`JobEscrow.extendLock`: one more `first` from the payer's deposit, the deadline one window
/// later), and records it; `window` is (`maxDuration` in seconds, renewal margin) and `at`
/// (attempt, seconds it has run, now). A refusal leaves the funded time where it is — the member
/// stops the attempt at its end — and is reported once as `RenewalRefused`, then tried again
/// every 30 s in case the payer tops up. A renewal whose outcome is unknown is read back from the
/// lock's deadline ([`reconcile_windows`]) after any transaction still pending was cancelled.
async fn renew(
    chain: &ChainClient,
    s: &mut Settlement,
    lock: &LockInfo,
    first: TokenAmount,
    (window_secs, margin_secs): (u64, u64),
    (attempt, running_secs, now_secs): (u32, u64, u64),
    step: &mut Step,
) -> Result<()> {
    let windows = s.windows_funded.max(1);
    let (window, funded_secs) = match renewal(window_secs, margin_secs, running_secs, windows) {
        None => return Ok(()),
        Some(Renewal::In(d)) => {
            recheck(step, d);
            return Ok(());
        }
        Some(Renewal::Due {
            window,
            funded_secs,
        }) => (window, funded_secs),
    };
    let unknown = s
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with(RENEWAL_UNKNOWN));
    // The earlier renewal may have been mined meanwhile: then the next pass reads it back.
    if unknown
        && (!chain.cancel_unmined().await?
            || chain.get_lock(lock.id).await?.deadline != lock.deadline)
    {
        step.again_soon = true;
        return Ok(());
    }
    let max_lock = chain.max_lock_duration().await?;
    let deadline = renewed_deadline(
        lock.deadline,
        window_secs,
        2,
        now_secs,
        max_lock.saturating_sub(CLOCK_MARGIN_SECS),
    );
    if deadline <= lock.deadline {
        // The escrow's limit on lock durations holds the deadline where it is: try again later.
        recheck(step, RETRY_RENEWAL);
        return Ok(());
    }
    let Some(total) = s.locked.and_then(|l| l.checked_add(first)) else {
        // A total the record cannot hold is never locked.
        return Ok(());
    };
    match chain.extend_lock(lock.id, first, deadline).await {
        Ok(Ok(mined)) => {
            s.windows_funded = window;
            s.locked = Some(total);
            s.lock_deadline = Some(deadline);
            s.message = None;
            step.changed = true;
            step.events.push((
                false,
                "RenewedLock",
                format!(
                    "attempt {attempt}: window {window} locked ({first} more, {} in all); it may run \
                     {funded_secs} s (tx {})",
                    total,
                    mined.tx
                ),
            ));
        }
        Ok(Err(refused)) => {
            let message = format!(
                "{RENEWAL_REFUSED}: window {window} ({first}) could not be locked: {refused}; the \
                 attempt stops when its {} funded seconds have run unless the payer's deposit and \
                 authorisation cover it",
                u64::from(windows).saturating_mul(window_secs)
            );
            if s.message.as_ref() != Some(&message) {
                step.events.push((
                    true,
                    RENEWAL_REFUSED,
                    format!("attempt {attempt}: {message}"),
                ));
                s.message = Some(message);
                step.changed = true;
            }
            recheck(step, RETRY_RENEWAL);
        }
        Err(e) => {
            s.message = Some(format!("{RENEWAL_UNKNOWN} for window {window}: {e}"));
            step.changed = true;
            step.again_soon = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn t(s: &str) -> TokenAmount {
        s.parse().unwrap()
    }

    #[test]
    fn nothing_is_paid_before_the_first_period_ends() {
        assert_eq!(
            next_period(60, 59, 0, 2, 118, t("3.6"), t("7.2"), t("7.2")),
            None
        );
        assert_eq!(until_next(60, 59, 0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn each_period_pays_its_gpu_seconds_at_the_price_once() {
        // 2 GPUs at 3.60/GPU-hour, periods of 60 s: 120 GPU-seconds a period cost 0.12.
        let (locked, price) = (t("7.2"), t("3.6"));
        assert_eq!(
            next_period(60, 61, 0, 2, 122, price, locked, locked),
            Some((1, t("0.12")))
        );
        // Period 1 paid: 7.08 left; period 2 pays only its own share.
        assert_eq!(
            next_period(60, 125, 1, 2, 250, price, locked, t("7.08")),
            Some((2, t("0.12")))
        );
        // Period 2 paid too: nothing more is due until period 3 ends.
        assert_eq!(
            next_period(60, 125, 2, 2, 250, price, locked, t("6.96")),
            None
        );
    }

    #[test]
    fn a_late_report_is_paid_in_a_later_period_never_twice() {
        let (locked, price) = (t("7.2"), t("3.6"));
        // Only 60 GPU-seconds reported when period 1 ended: 0.06.
        assert_eq!(
            next_period(60, 61, 0, 2, 60, price, locked, locked),
            Some((1, t("0.06")))
        );
        // Caught up by period 2: the missing 0.06 and period 2's 0.12.
        assert_eq!(
            next_period(60, 121, 1, 2, 242, price, locked, t("7.14")),
            Some((2, t("0.18")))
        );
    }

    #[test]
    fn a_period_never_pays_more_than_is_left_of_the_lock() {
        assert_eq!(
            next_period(60, 61, 0, 2, 120, t("3.6"), t("0.10"), t("0.05")),
            Some((1, t("0.05")))
        );
        assert_eq!(
            next_period(0, 61, 0, 2, 120, t("3.6"), t("1"), t("1")),
            None
        );
    }

    #[test]
    fn the_next_window_is_locked_one_margin_before_the_funded_time_ends() {
        // Windows of 60 s (maxDuration), settlement periods of 10 s: renew 10 s before the end.
        let margin = renew_margin(60, 10);
        assert_eq!(margin, 10);
        assert_eq!(
            renewal(60, margin, 49, 1),
            Some(Renewal::In(Duration::from_secs(1)))
        );
        assert_eq!(
            renewal(60, margin, 50, 1),
            Some(Renewal::Due {
                window: 2,
                funded_secs: 120
            })
        );
        // Once window 2 is funded nothing is due until 110 s.
        assert_eq!(
            renewal(60, margin, 50, 2),
            Some(Renewal::In(Duration::from_secs(60)))
        );
        assert_eq!(
            renewal(60, margin, 115, 2),
            Some(Renewal::Due {
                window: 3,
                funded_secs: 180
            })
        );
        assert_eq!(renewal(0, margin, 115, 2), None);
    }

    #[test]
    fn the_margin_keeps_at_most_half_a_window_locked_ahead() {
        // A settlement period longer than half the window: renew at half the window.
        assert_eq!(renew_margin(60, 3600), 30);
        // A very short period: at least RENEW_MARGIN_MIN, so the renewal has time to be mined.
        assert_eq!(renew_margin(3600, 1), RENEW_MARGIN_MIN.as_secs());
        // Never more than one and a half windows locked beyond what ran: due at 1.5 windows
        // funded-ahead at most.
        for running in 0..600 {
            let mut windows = 1;
            while let Some(Renewal::Due { window, .. }) =
                renewal(60, renew_margin(60, 3600), running, windows)
            {
                windows = window;
            }
            assert!(
                u64::from(windows) * 60 <= running + 90,
                "{running} s: {windows} windows"
            );
            assert!(
                u64::from(windows) * 60 > running,
                "{running} s runs unfunded"
            );
        }
    }

    #[test]
    fn a_renewed_deadline_moves_one_window_and_stays_within_the_escrow_limit() {
        assert_eq!(renewed_deadline(1_000, 60, 2, 1_050, 3_600), 1_060);
        assert_eq!(renewed_deadline(1_000, 60, 3, 1_110, 3_600), 1_120);
        assert_eq!(renewed_deadline(1_000, 3_600, 2, 1_000, 3_600), 4_600);
    }

    #[test]
    fn the_windows_funded_and_the_total_locked_are_read_back_from_the_renewals() {
        let ext = |added: &str, deadline| Extension {
            added: t(added),
            deadline,
        };
        assert_eq!(windows_from(t("0.06"), &[]), Some((1, t("0.06"))));
        assert_eq!(
            windows_from(t("0.06"), &[ext("0.06", 200), ext("0.06", 260)]),
            Some((3, t("0.18")))
        );
    }
}
