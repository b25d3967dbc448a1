//! Usage checked against telemetry (issue 13 item 2; docs/adr/0033-usage-checked-against-telemetry.md):
//! which of the GPU-seconds a member claims for an attempt its own gpu-probe's readings support.
//! The rule, documented in docs/contracts.md ("Usage checked against telemetry"):
//!
//! * The attempt ran from `start` to `end` holding `gpus` GPUs. It can never be paid for more than
//!   `gpus × (end − start)` GPU-seconds, whatever is claimed.
//! * Each source (a node the attempt ran on, or one GPU) is described by readings. A reading
//!   describes its source from its time until the source's next reading, for at most
//!   [`UsageRule::max_sample_age_secs`]; it is busy when its utilisation is at or above
//!   [`UsageRule::idle_below_percent`]. Consecutive readings of one source make **spans**
//!   ([`Span`]): busy or idle stretches; an idle span no longer than [`UsageRule::idle_grace_secs`]
//!   between busy ones is recorded as busy (it would be paid either way), so a job that pauses
//!   often keeps few spans. Members report spans ([`push`] folds one reading in), the hub checks
//!   them ([`check_spans`]).
//! * At any second the attempt is
//!   * **busy** if at least one source is in a busy span (a job may use one GPU of eight; it
//!     still holds eight);
//!   * **idle** if every source is in an idle span;
//!   * **unobserved** otherwise (no busy source, and some source in no span).
//! * An idle stretch up to [`UsageRule::idle_grace_secs`] long is supported (start-up, loading
//!   data, checkpointing); of a longer stretch only the grace is. Unobserved seconds are supported
//!   or not as [`UsageRule::pay_unobserved`] says: a provider can stop its own probe, so a pool
//!   that checks usage should not pay for silence.
//! * Supported GPU-seconds = `min(claimed, gpus × supported seconds)`; the rest of the claim is
//!   unsupported: the hub flags it and settlement pays only the supported part.
//!
//! Pure functions of their inputs, so the hub, a tenant and a provider computing them from the
//! same report reach the same figure.

use std::collections::{BTreeMap, BTreeSet};

/// The parameters of the rule (per pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRule {
    /// A reading below this utilisation (percent) is idle.
    pub idle_below_percent: u32,
    /// The longest all-idle stretch that is still paid in full (seconds).
    pub idle_grace_secs: u64,
    /// How long a reading describes its source when no newer reading follows (seconds); a few
    /// probe intervals.
    pub max_sample_age_secs: u64,
    /// Whether seconds with no current reading for some source (and none busy) are paid.
    pub pay_unobserved: bool,
}

impl Default for UsageRule {
    /// 5 % idle threshold, 10 minutes of idle grace, readings valid 60 s (gpu-probe samples every
    /// 10 s), silence not paid.
    fn default() -> Self {
        UsageRule::from(&gpufed_crds::UsageCheck::default())
    }
}

impl From<&gpufed_crds::UsageCheck> for UsageRule {
    fn from(c: &gpufed_crds::UsageCheck) -> Self {
        UsageRule {
            idle_below_percent: c.idle_below_percent,
            idle_grace_secs: c.idle_grace.as_secs_ceil(),
            max_sample_age_secs: c.max_sample_age.as_secs_ceil(),
            pay_unobserved: c.pay_unobserved,
        }
    }
}

impl From<&gpufed_crds::UsageRecording> for UsageRule {
    /// The member's side of the rule: how it records (it never decides what is paid).
    fn from(r: &gpufed_crds::UsageRecording) -> Self {
        UsageRule {
            idle_below_percent: r.idle_below_percent,
            idle_grace_secs: r.idle_grace_seconds,
            max_sample_age_secs: r.max_sample_age_seconds.max(1),
            pay_unobserved: false,
        }
    }
}

/// One utilisation reading of one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuSample {
    /// GPU UUID.
    pub gpu: String,
    /// Unix seconds.
    pub at: u64,
    /// Utilisation of the compute engines, percent.
    pub utilization_percent: u32,
}

/// A stretch `[from, to)` (Unix seconds) in which a source's readings were all busy or all idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Inclusive.
    pub from: u64,
    /// Exclusive.
    pub to: u64,
    /// Busy or idle.
    pub busy: bool,
}

impl From<&gpufed_crds::TelemetrySpan> for Span {
    /// A span as a member reports it (Unix seconds; negative ones read as 0).
    fn from(s: &gpufed_crds::TelemetrySpan) -> Self {
        Span {
            from: u64::try_from(s.from).unwrap_or(0),
            to: u64::try_from(s.to).unwrap_or(0),
            busy: s.busy,
        }
    }
}

impl From<&Span> for gpufed_crds::TelemetrySpan {
    /// A span as the member reports it.
    fn from(s: &Span) -> Self {
        gpufed_crds::TelemetrySpan {
            from: i64::try_from(s.from).unwrap_or(i64::MAX),
            to: i64::try_from(s.to).unwrap_or(i64::MAX),
            busy: s.busy,
        }
    }
}

/// Unix seconds of `t` (0 before the epoch), the time base of spans.
pub fn unix(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> u64 {
    u64::try_from(t.0.as_second()).unwrap_or(0)
}

/// Most spans [`push`] keeps per source ([`gpufed_crds::usage::MAX_SPANS_PER_NODE`]).
pub const MAX_SPANS: usize = gpufed_crds::usage::MAX_SPANS_PER_NODE;

/// Folds the reading `(at, utilization_percent)` of one source into its `spans`, whose newest
/// reading was at `last` (`None`: no reading yet). A reading not newer than `last` is ignored.
/// Returns whether the spans changed. When a new span would exceed [`MAX_SPANS`], the reading is
/// not recorded: it still ends the previous reading's span, and the time from it on reads as
/// unobserved.
pub fn push(
    rule: &UsageRule,
    spans: &mut Vec<Span>,
    last: &mut Option<u64>,
    at: u64,
    utilization_percent: u32,
) -> bool {
    if last.is_some_and(|l| at <= l) {
        return false;
    }
    let busy = utilization_percent >= rule.idle_below_percent;
    let to = at.saturating_add(rule.max_sample_age_secs.max(1));
    // The previous reading describes its source only until this one.
    let mut cut = false;
    if let Some(prev) = spans.last_mut()
        && prev.to > at
    {
        prev.to = at.max(prev.from);
        cut = true;
    }
    if let Some(prev) = spans.last_mut()
        && prev.to == at
        && prev.busy == busy
    {
        prev.to = to;
        *last = Some(at);
        return true;
    }
    if busy
        && let [.., before, idle] = spans.as_mut_slice()
        && !idle.busy
        && before.busy
        && before.to == idle.from
        && idle.to == at
        && idle.to - idle.from <= rule.idle_grace_secs
    {
        // A short pause between busy spans: paid either way, recorded as busy.
        before.to = to;
        spans.pop();
        *last = Some(at);
        return true;
    }
    if spans.len() >= MAX_SPANS {
        return cut;
    }
    spans.push(Span { from: at, to, busy });
    *last = Some(at);
    true
}

/// The spans of one source's readings `(at, utilization_percent)`, in any order; of two
/// readings at the same second the busier counts.
pub fn spans(rule: &UsageRule, readings: &[(u64, u32)]) -> Vec<Span> {
    let mut by_second: BTreeMap<u64, u32> = BTreeMap::new();
    for &(at, u) in readings {
        let e = by_second.entry(at).or_insert(u);
        *e = (*e).max(u);
    }
    let mut out = Vec::new();
    let mut last = None;
    for (at, u) in by_second {
        push(rule, &mut out, &mut last, at, u);
    }
    out
}

/// What a member claims for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptUsage {
    /// Unix seconds the pods started holding the GPUs.
    pub start: u64,
    /// Unix seconds they stopped (or the report's time, for a running attempt).
    pub end: u64,
    /// GPUs the attempt held.
    pub gpus: u64,
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
    /// Wall-clock seconds every source sat idle beyond the grace.
    pub idle_secs: u64,
    /// Wall-clock seconds without a current reading for some source and none busy.
    pub unobserved_secs: u64,
}

impl UsageVerdict {
    /// Whether part of the claim is not supported.
    pub fn flagged(&self) -> bool {
        self.unsupported > 0
    }

    /// As recorded on the attempt.
    pub fn record(&self) -> gpufed_crds::UsageCheckRecord {
        gpufed_crds::UsageCheckRecord {
            claimed_gpu_seconds: self.claimed,
            supported_gpu_seconds: self.supported,
            unsupported_gpu_seconds: self.unsupported,
            idle_seconds: self.idle_secs,
            unobserved_seconds: self.unobserved_secs,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Busy,
    Idle,
    Unobserved,
}

/// Applies `rule` to `usage` with the readings of each GPU the attempt held (`held`, by UUID) in
/// `samples` (samples of other GPUs are ignored; order does not matter).
pub fn check(
    rule: &UsageRule,
    usage: &AttemptUsage,
    held: &[&str],
    samples: &[GpuSample],
) -> UsageVerdict {
    let held: BTreeSet<&str> = held.iter().copied().collect();
    let sources: Vec<Vec<Span>> = held
        .iter()
        .map(|g| {
            let readings: Vec<(u64, u32)> = samples
                .iter()
                .filter(|s| s.gpu == *g)
                .map(|s| (s.at, s.utilization_percent))
                .collect();
            spans(rule, &readings)
        })
        .collect();
    check_spans(rule, usage, &sources)
}

/// Applies `rule` to `usage` with the spans of each source (a node the attempt ran on, or one of
/// its GPUs). No source supports nothing.
pub fn check_spans(rule: &UsageRule, usage: &AttemptUsage, sources: &[Vec<Span>]) -> UsageVerdict {
    let claimed = usage.claimed_gpu_seconds;
    let (start, end) = (usage.start, usage.end.max(usage.start));
    if sources.is_empty() || usage.gpus == 0 || end == start {
        return UsageVerdict {
            claimed,
            unsupported: claimed,
            unobserved_secs: end - start,
            ..Default::default()
        };
    }
    // In time order and without overlaps (a member's report is not trusted to be): a span
    // starting inside an earlier one is cut to start where that one ends.
    let sources: Vec<Vec<Span>> = sources
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.sort_unstable_by_key(|s| (s.from, s.to));
            let mut out: Vec<Span> = Vec::with_capacity(v.len());
            for mut s in v {
                if let Some(prev) = out.last() {
                    s.from = s.from.max(prev.to);
                }
                if s.from < s.to {
                    out.push(s);
                }
            }
            out
        })
        .collect();
    // Segment boundaries: the attempt's ends and every span's ends inside it.
    let mut cuts: BTreeSet<u64> = BTreeSet::from([start, end]);
    for s in sources.iter().flatten() {
        for t in [s.from, s.to] {
            if t > start && t < end {
                cuts.insert(t);
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
    let mut cursor = vec![0usize; sources.len()];
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        let len = hi - lo;
        let mut any_busy = false;
        let mut all_seen = true;
        for (source, c) in sources.iter().zip(cursor.iter_mut()) {
            // Sorted and disjoint: skip the spans that ended by `lo`.
            while *c < source.len() && source[*c].to <= lo {
                *c += 1;
            }
            match source.get(*c).filter(|s| s.from <= lo) {
                Some(s) if s.busy => any_busy = true,
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
    let supported = claimed.min(usage.gpus.saturating_mul(supported_secs));
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

    fn usage(
        start: u64,
        end: u64,
        gpus: &[&'static str],
        claimed: u64,
    ) -> (AttemptUsage, Vec<&'static str>) {
        (
            AttemptUsage {
                start,
                end,
                gpus: gpus.len() as u64,
                claimed_gpu_seconds: claimed,
            },
            gpus.to_vec(),
        )
    }

    fn chk(rule: &UsageRule, u: &(AttemptUsage, Vec<&str>), samples: &[GpuSample]) -> UsageVerdict {
        check(rule, &u.0, &u.1, samples)
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
        let v = chk(&rule(), &usage(1000, 2000, &["a", "b"], 2000), &s);
        assert_eq!((v.supported, v.unsupported), (2000, 0), "{v:?}");
        let v = chk(&rule(), &usage(1000, 2000, &["a", "b"], 2600), &s);
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
        let v = chk(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!(v.idle_secs, 400, "{v:?}");
        assert_eq!((v.supported, v.unsupported), (600, 400));
    }

    #[test]
    fn a_short_idle_stretch_is_paid() {
        let s = [every10("a", 1000, 1050, 0), every10("a", 1050, 2000, 50)].concat();
        let v = chk(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!((v.supported, v.idle_secs), (1000, 0));
    }

    #[test]
    fn silence_is_paid_only_when_the_pool_says_so() {
        // Samples stop at 1500: valid until 1520, unobserved for the last 480 s.
        let s = every10("a", 1000, 1500, 50);
        let v = chk(&rule(), &usage(1000, 2000, &["a"], 1000), &s);
        assert_eq!((v.supported, v.unobserved_secs), (520, 480));
        let pay = UsageRule {
            pay_unobserved: true,
            ..rule()
        };
        assert_eq!(
            chk(&pay, &usage(1000, 2000, &["a"], 1000), &s).supported,
            1000
        );
        // Samples of a GPU the attempt did not hold prove nothing.
        let other = every10("z", 1000, 2000, 99);
        assert_eq!(
            chk(&rule(), &usage(1000, 2000, &["a"], 1000), &other).supported,
            0
        );
    }

    #[test]
    fn no_gpus_or_no_time_supports_nothing() {
        let s = every10("a", 0, 100, 99);
        assert_eq!(chk(&rule(), &usage(0, 100, &[], 50), &s).supported, 0);
        assert_eq!(chk(&rule(), &usage(50, 50, &["a"], 50), &s).unsupported, 50);
        assert_eq!(chk(&rule(), &usage(60, 50, &["a"], 50), &s).unsupported, 50);
    }

    fn span(from: u64, to: u64, busy: bool) -> Span {
        Span { from, to, busy }
    }

    #[test]
    fn readings_make_spans_cut_at_the_next_reading_or_their_age() {
        let r = rule(); // idle below 5 %, grace 100 s, readings valid 30 s
        // Busy readings 10 s apart make one span; a gap longer than 30 s starts a new one.
        let s = spans(&r, &[(0, 50), (10, 60), (20, 70), (100, 80)]);
        assert_eq!(s, vec![span(0, 50, true), span(100, 130, true)]);
        // A long idle stretch stays idle; a short one between busy spans is recorded as busy.
        let long: Vec<(u64, u32)> = (0..40)
            .map(|i| (i * 10, if (10..30).contains(&i) { 0 } else { 90 }))
            .collect();
        assert_eq!(
            spans(&r, &long),
            vec![
                span(0, 100, true),
                span(100, 300, false),
                span(300, 420, true)
            ]
        );
        let short: Vec<(u64, u32)> = (0..20)
            .map(|i| (i * 10, if (5..8).contains(&i) { 0 } else { 90 }))
            .collect();
        assert_eq!(spans(&r, &short), vec![span(0, 220, true)]);
        // Of two readings in one second the busier counts; order does not matter.
        assert_eq!(
            spans(&r, &[(10, 0), (0, 0), (10, 9)]),
            vec![span(0, 10, false), span(10, 40, true)]
        );
    }

    #[test]
    fn push_ignores_old_readings_and_stops_at_the_span_limit() {
        let r = UsageRule {
            idle_grace_secs: 0,
            ..rule()
        };
        let (mut s, mut last) = (Vec::new(), None);
        assert!(push(&r, &mut s, &mut last, 100, 50));
        assert!(!push(&r, &mut s, &mut last, 100, 0), "same second again");
        assert!(!push(&r, &mut s, &mut last, 90, 0), "older");
        assert_eq!(s, vec![span(100, 130, true)]);
        // Alternating busy and idle with no grace: one span per reading, up to the limit.
        let (mut s, mut last) = (Vec::new(), None);
        for i in 0..(MAX_SPANS as u64 + 10) {
            push(
                &r,
                &mut s,
                &mut last,
                i * 10,
                if i % 2 == 0 { 90 } else { 0 },
            );
        }
        assert_eq!(s.len(), MAX_SPANS);
        assert_eq!(
            last,
            Some((MAX_SPANS as u64 - 1) * 10),
            "readings beyond the limit are not recorded"
        );
        // The first reading beyond the limit still ended the last span: unobserved from there.
        assert_eq!(s.last().map(|l| l.to), Some(MAX_SPANS as u64 * 10));
    }

    #[test]
    fn node_spans_decide_as_gpu_samples_do_and_a_report_is_sorted_and_cut_to_disjoint_spans() {
        let r = rule();
        let u = AttemptUsage {
            start: 1000,
            end: 2000,
            gpus: 8,
            claimed_gpu_seconds: 8000,
        };
        // One node busy 1000..1300, idle 1300..1800 (400 s beyond the grace), busy after.
        let node = vec![
            span(1000, 1300, true),
            span(1300, 1800, false),
            span(1800, 2000, true),
        ];
        let v = check_spans(&r, &u, std::slice::from_ref(&node));
        assert_eq!((v.supported, v.idle_secs), (8 * 600, 400), "{v:?}");
        // Reversed, and with an overlapping busy span inside the idle one: sorted, and the
        // overlap cut away, so the verdict is the same.
        let mut hostile = node.clone();
        hostile.reverse();
        hostile.push(span(1250, 1400, true));
        let w = check_spans(&r, &u, &[hostile]);
        assert_eq!(
            w.supported,
            8 * 700,
            "the busy span counts only past 1300's start: {w:?}"
        );
        // A second node busy throughout makes every second busy.
        let v = check_spans(&r, &u, &[node, vec![span(900, 2100, true)]]);
        assert_eq!((v.supported, v.unsupported), (8000, 0));
        // No telemetry at all: nothing supported, every second unobserved.
        let v = check_spans(&r, &u, &[]);
        assert_eq!((v.supported, v.unobserved_secs), (0, 1000));
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
            let v = chk(&rule, &usage(start, start + len, gpus, claimed), &samples);
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
            let v1 = chk(&rule, &u, &samples);
            samples.reverse();
            prop_assert_eq!(chk(&rule, &u, &samples), v1);
        }

        /// More utilisation, more samples, or paying silence never lowers what is supported.
        #[test]
        fn more_evidence_of_work_never_lowers_the_supported_part(
            rule in arb_rule(), samples in arb_samples(), extra in arb_samples(),
            claimed in 0u64..2000,
        ) {
            let u = usage(100, 500, &["a", "b"], claimed);
            let base = chk(&rule, &u, &samples).supported;
            let busier: Vec<GpuSample> = samples.iter().cloned()
                .map(|mut s| { s.utilization_percent = 100; s }).collect();
            prop_assert!(chk(&rule, &u, &busier).supported >= base);
            let pay = UsageRule { pay_unobserved: true, ..rule };
            prop_assert!(chk(&pay, &u, &samples).supported >= base);
            let busy_extra: Vec<GpuSample> = samples.iter().cloned()
                .chain(extra.into_iter().map(|mut s| { s.utilization_percent = 100; s }))
                .collect();
            prop_assert!(chk(&rule, &u, &busy_extra).supported >= base);
        }

        /// Folding readings one at a time in time order gives the spans of all of them.
        #[test]
        fn push_one_at_a_time_equals_spans_of_all(rule in arb_rule(), samples in arb_samples()) {
            let mut readings: Vec<(u64, u32)> = samples.iter().map(|s| (s.at, s.utilization_percent)).collect();
            let all = spans(&rule, &readings);
            readings.sort_by_key(|(at, u)| (*at, std::cmp::Reverse(*u)));
            let (mut one, mut last) = (Vec::new(), None);
            for (at, u) in readings {
                push(&rule, &mut one, &mut last, at, u);
            }
            prop_assert_eq!(one, all);
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
            let v = chk(&rule, &usage(0, 500, gpus, claimed), &s);
            prop_assert_eq!(v.supported, claimed.min(n as u64 * 500));
        }
    }
}
