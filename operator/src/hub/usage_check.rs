//! Usage checked against telemetry (issue 13 item 2): which of the GPU-seconds a member claims for
//! an attempt its own gpu-probe's utilisation samples support. The rule, documented in
//! docs/contracts.md ("Usage checked against telemetry"):
//!
//! * The attempt ran from `start` to `end` on `held` GPUs (by UUID). It can never be paid for more
//!   than `held × (end − start)` GPU-seconds, whatever is claimed.
//! * Each utilisation sample of a held GPU describes that GPU from its time until the GPU's next
//!   sample, for at most [`UsageRule::max_sample_age_secs`]. At any second, the held GPUs are
//!   * **busy** if at least one held GPU's sample is at or above [`UsageRule::idle_below_percent`]
//!     (a job may use one GPU of eight; it still holds eight);
//!   * **idle** if every held GPU has a sample and all of them are below the threshold;
//!   * **unobserved** otherwise (no busy GPU, and some GPU without a current sample).
//! * An idle stretch up to [`UsageRule::idle_grace_secs`] long is supported (start-up, loading
//!   data, checkpointing); of a longer stretch only the grace is. Unobserved seconds are supported
//!   or not as [`UsageRule::pay_unobserved`] says: a provider can stop its own probe, so a pool
//!   that checks usage should not pay for silence.
//! * Supported GPU-seconds = `min(claimed, held × supported seconds)`; the rest of the claim is
//!   unsupported: the hub flags it and settlement pays only the supported part.
//!
//! A pure function of its inputs, so the hub, a tenant and a provider computing it from the same
//! report reach the same figure.

use std::collections::BTreeSet;

/// The parameters of the rule (per pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRule {
    /// A GPU below this utilisation (percent) is idle.
    pub idle_below_percent: u32,
    /// The longest all-idle stretch that is still paid in full (seconds).
    pub idle_grace_secs: u64,
    /// How long a sample describes its GPU when no newer sample follows (seconds); a few probe
    /// intervals.
    pub max_sample_age_secs: u64,
    /// Whether seconds with no current sample for some GPU (and none busy) are paid.
    pub pay_unobserved: bool,
}

impl Default for UsageRule {
    /// 5 % idle threshold, 10 minutes of idle grace, samples valid 60 s (gpu-probe samples every
    /// 10 s), silence not paid.
    fn default() -> Self {
        UsageRule {
            idle_below_percent: 5,
            idle_grace_secs: 600,
            max_sample_age_secs: 60,
            pay_unobserved: false,
        }
    }
}

/// One utilisation sample of one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuSample {
    /// GPU UUID.
    pub gpu: String,
    /// Unix seconds.
    pub at: u64,
    /// Utilisation of the compute engines, percent.
    pub utilization_percent: u32,
}

/// What a member reports for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptUsage {
    /// Unix seconds the pods started holding the GPUs.
    pub start: u64,
    /// Unix seconds they stopped (or now, for a running attempt).
    pub end: u64,
    /// UUIDs of the GPUs the attempt's pods held.
    pub held: Vec<String>,
    /// GPU-seconds claimed.
    pub claimed_gpu_seconds: u64,
}

/// The rule's verdict on one attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageVerdict {
    /// GPU-seconds claimed.
    pub claimed: u64,
    /// GPU-seconds telemetry supports (paid).
    pub supported: u64,
    /// `claimed − supported` (flagged, not paid).
    pub unsupported: u64,
    /// Wall-clock seconds every held GPU sat idle beyond the grace.
    pub idle_secs: u64,
    /// Wall-clock seconds without a current sample for some GPU and none busy.
    pub unobserved_secs: u64,
}

impl UsageVerdict {
    /// Whether part of the claim is not supported.
    pub fn flagged(&self) -> bool {
        self.unsupported > 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Busy,
    Idle,
    Unobserved,
}

/// Applies `rule` to `usage` with the samples of any GPUs (samples of GPUs the attempt did not
/// hold, and samples outside the attempt's reach, are ignored; order does not matter).
pub fn check(rule: &UsageRule, usage: &AttemptUsage, samples: &[GpuSample]) -> UsageVerdict {
    let claimed = usage.claimed_gpu_seconds;
    let held: BTreeSet<&str> = usage.held.iter().map(String::as_str).collect();
    let (start, end) = (usage.start, usage.end.max(usage.start));
    if held.is_empty() || end == start {
        return UsageVerdict {
            claimed,
            unsupported: claimed,
            ..Default::default()
        };
    }
    let age = rule.max_sample_age_secs;
    // Per GPU, its samples in time order (the later of two at the same second wins: highest).
    let per_gpu: Vec<Vec<(u64, u32)>> = held
        .iter()
        .map(|g| {
            let mut v: Vec<(u64, u32)> = samples
                .iter()
                .filter(|s| s.gpu == *g && s.at < end && s.at.saturating_add(age) > start)
                .map(|s| (s.at, s.utilization_percent))
                .collect();
            v.sort_unstable();
            v
        })
        .collect();
    // Segment boundaries: the attempt's ends, every sample and every sample's expiry inside it.
    let mut cuts: BTreeSet<u64> = BTreeSet::from([start, end]);
    for v in &per_gpu {
        for &(at, _) in v {
            for t in [at, at.saturating_add(age)] {
                if t > start && t < end {
                    cuts.insert(t);
                }
            }
        }
    }
    let cuts: Vec<u64> = cuts.into_iter().collect();
    let mut supported_secs = 0u64;
    let mut idle_secs = 0u64;
    let mut unobserved_secs = 0u64;
    let mut idle_run = 0u64;
    let close_run = |run: &mut u64, supported: &mut u64, idle: &mut u64| {
        *supported += (*run).min(rule.idle_grace_secs);
        *idle += run.saturating_sub(rule.idle_grace_secs);
        *run = 0;
    };
    let mut cursor = vec![0usize; per_gpu.len()];
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        let len = hi - lo;
        let mut any_busy = false;
        let mut all_seen = true;
        for (g, v) in per_gpu.iter().enumerate() {
            // Latest sample at or before `lo`.
            while cursor[g] + 1 < v.len() && v[cursor[g] + 1].0 <= lo {
                cursor[g] += 1;
            }
            let current = v
                .get(cursor[g])
                .filter(|(at, _)| *at <= lo && at.saturating_add(age) > lo);
            match current {
                Some((_, u)) if *u >= rule.idle_below_percent => any_busy = true,
                Some(_) => {}
                None => all_seen = false,
            }
        }
        let seen = if any_busy {
            Seen::Busy
        } else if all_seen {
            Seen::Idle
        } else {
            Seen::Unobserved
        };
        if seen == Seen::Idle {
            idle_run += len;
            continue;
        }
        close_run(&mut idle_run, &mut supported_secs, &mut idle_secs);
        match seen {
            Seen::Busy => supported_secs += len,
            Seen::Unobserved => {
                unobserved_secs += len;
                if rule.pay_unobserved {
                    supported_secs += len;
                }
            }
            Seen::Idle => {}
        }
    }
    close_run(&mut idle_run, &mut supported_secs, &mut idle_secs);
    let n = u64::try_from(held.len()).unwrap_or(u64::MAX);
    let supported = claimed.min(n.saturating_mul(supported_secs));
    UsageVerdict {
        claimed,
        supported,
        unsupported: claimed - supported,
        idle_secs,
        unobserved_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule() -> UsageRule {
        UsageRule {
            idle_below_percent: 5,
            idle_grace_secs: 100,
            max_sample_age_secs: 30,
            pay_unobserved: false,
        }
    }

    fn usage(start: u64, end: u64, gpus: &[&str], claimed: u64) -> AttemptUsage {
        AttemptUsage {
            start,
            end,
            held: gpus.iter().map(|g| g.to_string()).collect(),
            claimed_gpu_seconds: claimed,
        }
    }

    /// Samples of `gpu` every 10 s over `[from, to)` at `util`.
    fn every10(gpu: &str, from: u64, to: u64, util: u32) -> Vec<GpuSample> {
        (from..to)
            .step_by(10)
            .map(|at| GpuSample {
                gpu: gpu.into(),
                at,
                utilization_percent: util,
            })
            .collect()
    }

    #[test]
    fn a_busy_attempt_is_supported_in_full_and_a_claim_beyond_held_times_duration_is_not() {
        let s = [every10("a", 1000, 2000, 90), every10("b", 1000, 2000, 0)].concat();
        let v = check(&rule(), &usage(1000, 2000, &["a", "b"], 2000), &s);
        assert_eq!((v.supported, v.unsupported), (2000, 0), "{v:?}");
        let v = check(&rule(), &usage(1000, 2000, &["a", "b"], 2600), &s);
        assert_eq!((v.supported, v.unsupported), (2000, 600));
        assert!(v.flagged());
    }

    #[test]
    fn every_held_gpu_idle_beyond_the_grace_is_not_paid() {
        // Busy 1000..1300, all idle 1300..1800 (500 s: 100 s grace, 400 s flagged), busy to 2000.
        let s = [
            every10("a", 1000, 1300, 80),
            every10("a", 1300, 1800, 1),
            every10("a", 1800, 2000, 80),
        ]
        .concat();
        let v = check(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!(v.idle_secs, 400, "{v:?}");
        assert_eq!((v.supported, v.unsupported), (600, 400));
    }

    #[test]
    fn a_short_idle_stretch_is_paid() {
        let s = [every10("a", 1000, 1050, 0), every10("a", 1050, 2000, 50)].concat();
        let v = check(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!((v.supported, v.idle_secs), (1000, 0));
    }

    #[test]
    fn silence_is_paid_only_when_the_pool_says_so() {
        // Samples stop at 1500: valid until 1520, unobserved for the last 480 s.
        let s = every10("a", 1000, 1500, 50);
        let v = check(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!((v.supported, v.unobserved_secs), (520, 480));
        let pay = UsageRule {
            pay_unobserved: true,
            ..rule()
        };
        assert_eq!(
            check(&pay, &usage(1000, 2000, &["a"], 1000), &s).supported,
            1000
        );
        // Samples of a GPU the attempt did not hold prove nothing.
        let other = every10("z", 1000, 2000, 99);
        assert_eq!(
            check(&rule(), &usage(1000, 2000, &["a"], 1000), &other).supported,
            0
        );
    }

    #[test]
    fn no_gpus_or_no_time_supports_nothing() {
        let s = every10("a", 0, 100, 99);
        assert_eq!(check(&rule(), &usage(0, 100, &[], 50), &s).supported, 0);
        assert_eq!(
            check(&rule(), &usage(50, 50, &["a"], 50), &s).unsupported,
            50
        );
        assert_eq!(
            check(&rule(), &usage(60, 50, &["a"], 50), &s).unsupported,
            50
        );
    }

    fn arb_samples() -> impl Strategy<Value = Vec<GpuSample>> {
        prop::collection::vec(
            (0usize..3, 0u64..600, 0u32..=100).prop_map(|(g, at, u)| GpuSample {
                gpu: ["a", "b", "c"][g].into(),
                at,
                utilization_percent: u,
            }),
            0..60,
        )
    }

    fn arb_rule() -> impl Strategy<Value = UsageRule> {
        (0u32..=100, 0u64..200, 1u64..120, any::<bool>()).prop_map(|(t, g, a, p)| UsageRule {
            idle_below_percent: t,
            idle_grace_secs: g,
            max_sample_age_secs: a,
            pay_unobserved: p,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Supported + unsupported = claimed; supported ≤ held × duration; never more than claimed.
        #[test]
        fn the_claim_splits_exactly_and_never_beyond_held_times_duration(
            rule in arb_rule(), samples in arb_samples(),
            start in 0u64..300, len in 0u64..400, n in 1usize..=3, claimed in 0u64..2000,
        ) {
            let gpus = &["a", "b", "c"][..n];
            let v = check(&rule, &usage(start, start + len, gpus, claimed), &samples);
            prop_assert_eq!(v.supported + v.unsupported, claimed);
            prop_assert!(v.supported <= claimed);
            prop_assert!(v.supported <= n as u64 * len);
            prop_assert!(v.idle_secs + v.unobserved_secs <= len);
        }

        /// Sample order does not matter.
        #[test]
        fn sample_order_does_not_matter(
            rule in arb_rule(), mut samples in arb_samples(), claimed in 0u64..2000,
        ) {
            let u = usage(100, 500, &["a", "b"], claimed);
            let v1 = check(&rule, &u, &samples);
            samples.reverse();
            prop_assert_eq!(check(&rule, &u, &samples), v1);
        }

        /// More utilisation, more samples, or paying silence never lowers what is supported.
        #[test]
        fn more_evidence_of_work_never_lowers_the_supported_part(
            rule in arb_rule(), samples in arb_samples(), extra in arb_samples(),
            claimed in 0u64..2000,
        ) {
            let u = usage(100, 500, &["a", "b"], claimed);
            let base = check(&rule, &u, &samples).supported;
            let busier: Vec<GpuSample> = samples.iter().cloned()
                .map(|mut s| { s.utilization_percent = 100; s }).collect();
            prop_assert!(check(&rule, &u, &busier).supported >= base);
            let pay = UsageRule { pay_unobserved: true, ..rule };
            prop_assert!(check(&pay, &u, &samples).supported >= base);
            let busy_extra: Vec<GpuSample> = samples.iter().cloned()
                .chain(extra.into_iter().map(|mut s| { s.utilization_percent = 100; s }))
                .collect();
            prop_assert!(check(&rule, &u, &busy_extra).supported >= base);
        }

        /// Dense busy telemetry on one held GPU supports the whole claim up to held × duration.
        #[test]
        fn dense_busy_telemetry_supports_everything(
            rule in arb_rule(), n in 1usize..=3, claimed in 0u64..2000,
        ) {
            let rule = UsageRule { max_sample_age_secs: rule.max_sample_age_secs.max(10), ..rule };
            let gpus = &["a", "b", "c"][..n];
            let s: Vec<GpuSample> = (0..500).step_by(10)
                .map(|at| GpuSample { gpu: "a".into(), at, utilization_percent: 100 }).collect();
            let v = check(&rule, &usage(0, 500, gpus, claimed), &s);
            prop_assert_eq!(v.supported, claimed.min(n as u64 * 500));
        }
    }
}
