//! One-line explanations for `ComputeJob.status.explanation` and Events: why a job waits
//! (`0/3 clusters fit: alpha: no H100 (has L4); beta: 4 free GPUs, needs 8`) or why it went where it
//! went (`placed on beta: cheapest of 2 fitting clusters (A100 at 1.20/GPU-hour)`).
//!
//! A pool may have thousands of clusters, and status fields and Events must stay short, so a
//! waiting job's line is bounded by [`MAX_EXPLANATION_LEN`]: when listing every cluster would be
//! longer, clusters are counted per reason kind (`412 clusters: no H100; 80 clusters: not ready`),
//! largest group first, and what still does not fit ends in `…and N more clusters`.
//!
//! [`explain`] reads any [`ReasonList`]: a [`NoFit`] or a plain list of `(cluster, Reason)` pairs
//! give the same text for the same reasons. It builds only the reasons it prints: the listing
//! stops as soon as it is over the limit, and the counted form reads kinds and one reason per kind.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::decision::Assignment;
use crate::input::Strategy;
use crate::money::format_tokens;
use crate::nofit::NoFit;
use crate::reason::{Reason, ReasonKind};

/// Longest explanation in bytes (so also in characters).
pub const MAX_EXPLANATION_LEN: usize = 1024;

/// Longest text of one aggregated group, so that one long model list cannot crowd out the rest.
const MAX_GROUP_LEN: usize = 160;

/// One reason per cluster, sorted by cluster name: what [`explain`] reads. A [`NoFit`] is one, and
/// so is a plain list of `(cluster, Reason)` pairs (a slice, an array or a `Vec`).
pub trait ReasonList {
    /// Number of clusters.
    fn clusters(&self) -> usize;
    /// The `i`th cluster's name and reason.
    fn at(&self, i: usize) -> Option<(&str, Cow<'_, Reason>)>;
    /// Calls `f` with each cluster's reason kind, in order.
    fn each_kind(&self, f: &mut dyn FnMut(ReasonKind));
}

impl ReasonList for [(String, Reason)] {
    fn clusters(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> Option<(&str, Cow<'_, Reason>)> {
        self.get(i).map(|(c, r)| (c.as_str(), Cow::Borrowed(r)))
    }
    fn each_kind(&self, f: &mut dyn FnMut(ReasonKind)) {
        self.iter().for_each(|(_, r)| f(r.kind()));
    }
}

impl<const N: usize> ReasonList for [(String, Reason); N] {
    fn clusters(&self) -> usize {
        N
    }
    fn at(&self, i: usize) -> Option<(&str, Cow<'_, Reason>)> {
        self.as_slice().at(i)
    }
    fn each_kind(&self, f: &mut dyn FnMut(ReasonKind)) {
        self.as_slice().each_kind(f);
    }
}

impl ReasonList for Vec<(String, Reason)> {
    fn clusters(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> Option<(&str, Cow<'_, Reason>)> {
        self.as_slice().at(i)
    }
    fn each_kind(&self, f: &mut dyn FnMut(ReasonKind)) {
        self.as_slice().each_kind(f);
    }
}

impl ReasonList for NoFit {
    fn clusters(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> Option<(&str, Cow<'_, Reason>)> {
        self.get(i).map(|(c, r)| (c, Cow::Owned(r)))
    }
    fn each_kind(&self, f: &mut dyn FnMut(ReasonKind)) {
        self.each_kind_at(|_, _, kind| f(kind));
    }
}

/// Explains why a job fits nowhere, from the reasons of [`crate::Decision::NoFit`].
pub fn explain<L: ReasonList + ?Sized>(reasons: &L) -> String {
    explain_within(reasons, MAX_EXPLANATION_LEN)
}

/// [`explain`] with a limit of `max` bytes.
fn explain_within<L: ReasonList + ?Sized>(reasons: &L, max: usize) -> String {
    let total = reasons.clusters();
    let head = format!("0/{total} clusters fit");
    if total == 0 {
        return format!("{head}: the pool has no member clusters");
    }
    // Every cluster in turn, until the line is over the limit: then the counted form.
    let mut full = format!("{head}: ");
    for i in 0..total {
        let Some((cluster, reason)) = reasons.at(i) else {
            break;
        };
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(full, "{sep}{cluster}: {reason}");
        if full.len() > max {
            break;
        }
    }
    if full.len() <= max {
        return full;
    }
    // Per kind: how many clusters, and the first one's position (its reason gives the summary).
    let mut counts = [(0usize, 0usize); ReasonKind::ALL.len()];
    let mut at = 0;
    reasons.each_kind(&mut |kind| {
        if let Some((count, first)) = counts.get_mut(kind as usize) {
            if *count == 0 {
                *first = at;
            }
            *count += 1;
        }
        at += 1;
    });
    let mut groups: Vec<(ReasonKind, usize, usize)> = ReasonKind::ALL
        .into_iter()
        .zip(counts)
        .filter(|(_, (count, _))| *count > 0)
        .map(|(kind, (count, first))| (kind, count, first))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let mut out = format!("{head}: ");
    let mut shown = 0;
    for (i, &(_, count, first)) in groups.iter().enumerate() {
        let summary = reasons
            .at(first)
            .map(|(_, r)| r.summary())
            .unwrap_or_default();
        let part = truncate(
            &format!("{count} {}: {summary}", clusters(count)),
            MAX_GROUP_LEN.min(max),
        );
        let sep = if i == 0 { "" } else { "; " };
        let rest = total - shown - count;
        let room = if rest == 0 { 0 } else { 2 + more(rest).len() };
        if out.len() + sep.len() + part.len() + room > max {
            break;
        }
        out.push_str(sep);
        out.push_str(&part);
        shown += count;
    }
    if shown < total {
        if shown > 0 {
            out.push_str("; ");
        }
        out.push_str(&more(total - shown));
    }
    truncate(&out, max)
}

/// Explains a placement: which strategy picked the cluster among how many that fit
/// (`candidates_count`, usually [`Assignment::fitting_clusters`]), and at what price.
pub fn explain_placement(a: &Assignment, candidates_count: usize, strategy: Strategy) -> String {
    let price = format!("({} at {}/GPU-hour)", a.model, format_tokens(a.price));
    let left = format!(
        "{} {} {} left free",
        a.free_after,
        a.model,
        if a.free_after == 1 { "GPU" } else { "GPUs" }
    );
    if candidates_count <= 1 {
        return format!("placed on {}: the only fitting cluster {price}", a.cluster);
    }
    let of = format!("of {candidates_count} fitting clusters");
    match strategy {
        Strategy::CheapestFit => format!("placed on {}: cheapest {of} {price}", a.cluster),
        Strategy::BinPack => format!("placed on {}: fullest {of}, {left} {price}", a.cluster),
        Strategy::Spread => format!("placed on {}: emptiest {of}, {left} {price}", a.cluster),
        Strategy::Auction => format!(
            "placed on {}: lowest ask {of} ({} asked {}, pays {}/GPU-hour, the next-lowest ask)",
            a.cluster,
            a.model,
            format_tokens(a.ask),
            format_tokens(a.price)
        ),
    }
}

fn clusters(n: usize) -> &'static str {
    if n == 1 { "cluster" } else { "clusters" }
}

fn more(n: usize) -> String {
    format!("…and {n} more {}", clusters(n))
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let ellipsis = "…";
    let mut end = max.saturating_sub(ellipsis.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::ONE_TOKEN;

    fn capacity(free: u64) -> Reason {
        Reason::Capacity {
            model: "H100".into(),
            free,
            need: 8,
        }
    }

    fn no_h100() -> Reason {
        Reason::NoModel {
            wanted: vec!["H100".into()].into(),
            has: vec!["L4".into()].into(),
        }
    }

    #[test]
    fn a_few_clusters_are_listed_one_by_one_in_the_given_order() {
        let reasons = vec![
            ("alpha".to_string(), no_h100()),
            ("beta".to_string(), capacity(4)),
            (
                "gamma".to_string(),
                Reason::Price {
                    model: "H100".into(),
                    price: 310 * ONE_TOKEN / 100,
                    max: 250 * ONE_TOKEN / 100,
                },
            ),
        ];
        assert_eq!(
            explain(&reasons),
            "0/3 clusters fit: alpha: no H100 (has L4); beta: 4 free GPUs, needs 8; gamma: price 3.10 > max 2.50"
        );
    }

    #[test]
    fn an_empty_pool_says_so() {
        assert_eq!(
            explain(&[]),
            "0/0 clusters fit: the pool has no member clusters"
        );
    }

    #[test]
    fn many_clusters_are_counted_per_reason_kind_largest_group_first() {
        let mut reasons = Vec::new();
        for i in 0..412 {
            reasons.push((format!("m{i:04}"), no_h100()));
        }
        for i in 0..80 {
            reasons.push((format!("n{i:04}"), Reason::NotReady));
        }
        for i in 0..8 {
            reasons.push((format!("c{i:04}"), capacity(i)));
        }
        reasons.push(("x".to_string(), Reason::Cordoned));
        let text = explain(&reasons);
        assert_eq!(
            text,
            "0/501 clusters fit: 412 clusters: no H100; 80 clusters: not ready; 8 clusters: fewer than 8 free GPUs; 1 cluster: cordoned"
        );
    }

    #[test]
    fn equal_groups_are_ordered_like_the_filters() {
        let mut reasons = Vec::new();
        for i in 0..60 {
            reasons.push((format!("a-cluster-with-a-long-name-{i}"), capacity(1)));
            reasons.push((format!("b-cluster-with-a-long-name-{i}"), Reason::NotReady));
        }
        assert_eq!(
            explain(&reasons),
            "0/120 clusters fit: 60 clusters: not ready; 60 clusters: fewer than 8 free GPUs"
        );
    }

    #[test]
    fn the_explanation_never_exceeds_the_limit_and_says_how_many_are_left_out() {
        let wanted: Vec<String> = (0..16)
            .map(|i| format!("MODEL-{i:02}-{}", "X".repeat(50)))
            .collect();
        let mut reasons = vec![(
            "long".to_string(),
            Reason::NoModel {
                wanted: wanted.into(),
                has: Vec::new().into(),
            },
        )];
        for i in 0..200u32 {
            let region = format!("region-{i}");
            reasons.push((format!("r{i}"), Reason::Region { region }));
            reasons.push((format!("p{i}"), Reason::NoPrice { model: "L4".into() }));
        }
        let kinds = [
            Reason::NotReady,
            Reason::NoInventory,
            Reason::Cordoned,
            Reason::Excluded,
            Reason::FailedBefore,
        ];
        for (i, reason) in kinds.into_iter().enumerate() {
            for j in 0..=i {
                reasons.push((format!("k{i}-{j}"), reason.clone()));
            }
        }
        let text = explain(&reasons);
        assert!(text.len() <= MAX_EXPLANATION_LEN, "{} bytes", text.len());
        assert!(text.starts_with("0/416 clusters fit: 200 clusters: region not accepted; 200 clusters: no price for the model;"), "{text}");
        // The 16-model list is cut to one bounded group, so everything still fits.
        assert!(text.contains("1 cluster: no MODEL-00-"), "{text}");
        assert!(!text.contains("more clusters"), "{text}");

        let many: Vec<(String, Reason)> = (0..5000)
            .map(|i| {
                let reason = match i % 4 {
                    0 => Reason::NotReady,
                    1 => capacity(1),
                    2 => no_h100(),
                    _ => Reason::Excluded,
                };
                (format!("cluster-{i}"), reason)
            })
            .collect();
        let text = explain(&many);
        assert!(text.len() <= MAX_EXPLANATION_LEN);
        assert!(
            text.starts_with("0/5000 clusters fit: 1250 clusters: not ready;"),
            "{text}"
        );
    }

    #[test]
    fn groups_that_do_not_fit_are_counted_in_and_n_more() {
        let mut reasons = Vec::new();
        for i in 0..30 {
            reasons.push((format!("a{i}"), Reason::NotReady));
        }
        for i in 0..20 {
            reasons.push((format!("b{i}"), Reason::Cordoned));
        }
        for i in 0..7 {
            reasons.push((format!("c{i}"), Reason::Excluded));
        }
        reasons.push(("d".into(), Reason::FailedBefore));
        // With the full limit every group is shown; a tight limit drops the smallest groups and
        // counts their clusters.
        assert_eq!(
            explain(&reasons),
            "0/58 clusters fit: 30 clusters: not ready; 20 clusters: cordoned; 7 clusters: excluded by the job; 1 cluster: an earlier attempt failed there"
        );
        let text = explain_within(&reasons, 90);
        assert_eq!(
            text,
            "0/58 clusters fit: 30 clusters: not ready; 20 clusters: cordoned; …and 8 more clusters"
        );
        assert!(text.len() <= 90);
        let text = explain_within(&reasons, 70);
        assert_eq!(
            text,
            "0/58 clusters fit: 30 clusters: not ready; …and 28 more clusters"
        );
        assert_eq!(
            explain_within(&reasons, 60),
            "0/58 clusters fit: …and 58 more clusters"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 5), "ab…");
        assert_eq!(truncate("ééééé", 6), "é…");
        assert!(truncate("ééééé", 6).len() <= 6);
    }

    fn assignment(free_after: u64) -> Assignment {
        Assignment {
            cluster: "beta".into(),
            model: "A100".into(),
            price: 120 * ONE_TOKEN / 100,
            ask: 120 * ONE_TOKEN / 100,
            nodes: vec![("n1".into(), 1)],
            free_after,
            fitting_clusters: 2,
        }
    }

    #[test]
    fn an_auction_placement_names_the_ask_and_the_clearing_price() {
        let a = Assignment {
            price: 150 * ONE_TOKEN / 100,
            ..assignment(6)
        };
        assert_eq!(
            explain_placement(&a, 2, Strategy::Auction),
            "placed on beta: lowest ask of 2 fitting clusters (A100 asked 1.20, pays 1.50/GPU-hour, the next-lowest ask)"
        );
    }

    #[test]
    fn placements_are_explained_by_strategy_and_price() {
        let a = assignment(6);
        assert_eq!(
            explain_placement(&a, 2, Strategy::CheapestFit),
            "placed on beta: cheapest of 2 fitting clusters (A100 at 1.20/GPU-hour)"
        );
        assert_eq!(
            explain_placement(&a, 3, Strategy::BinPack),
            "placed on beta: fullest of 3 fitting clusters, 6 A100 GPUs left free (A100 at 1.20/GPU-hour)"
        );
        assert_eq!(
            explain_placement(&assignment(1), 3, Strategy::Spread),
            "placed on beta: emptiest of 3 fitting clusters, 1 A100 GPU left free (A100 at 1.20/GPU-hour)"
        );
        assert_eq!(
            explain_placement(&a, 1, Strategy::Spread),
            "placed on beta: the only fitting cluster (A100 at 1.20/GPU-hour)"
        );
    }
}
