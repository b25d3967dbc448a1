//! The apiserver's own count of the requests it served (`apiserver_request_total` on its
//! `/metrics`), read before and after a phase of the benchmark, so the writes a phase cost are
//! counted by the apiserver rather than by whoever made them.

use std::collections::BTreeMap;

use kube::Client;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The verbs `apiserver_request_total` labels writes with. Server-side apply is its own verb
/// (`APPLY`), other patches are `PATCH`; reads are `GET`, `LIST` and `WATCH`.
pub const MUTATING_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// One kind of request: what it touched and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    /// API group (empty for the core group).
    pub group: String,
    /// Resource, plural (`computejobs`).
    pub resource: String,
    /// Subresource (`status`), or empty.
    pub subresource: String,
    /// The verb as the apiserver counts it (`POST`, `APPLY`, …).
    pub verb: String,
}

impl RequestKey {
    /// `resource` or `resource/subresource`, with the group after it when there is one.
    pub fn resource_label(&self) -> String {
        let mut s = self.resource.clone();
        if !self.subresource.is_empty() {
            s.push('/');
            s.push_str(&self.subresource);
        }
        if !self.group.is_empty() {
            s.push_str(&format!(" ({})", self.group));
        }
        s
    }
}

/// How many requests of one kind a phase made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// The kind of request.
    #[serde(flatten)]
    pub key: RequestKey,
    /// Requests served, whatever the answer.
    pub total: u64,
    /// Of those, answered with something other than 2xx (409 conflicts, 404s, …).
    pub failed: u64,
}

/// A reading of `apiserver_request_total`: the count of each kind of request and answer code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters(BTreeMap<(RequestKey, String), u64>);

impl Counters {
    /// Reads the apiserver's `/metrics` (the admin client may).
    pub async fn scrape(client: &Client) -> Result<Counters, Error> {
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| Error::Other(format!("building the /metrics request: {e}")))?;
        let text = client
            .request_text(req)
            .await
            .map_err(Error::kube("reading the apiserver's /metrics"))?;
        Ok(Counters::parse(&text))
    }

    /// The `apiserver_request_total` series of a Prometheus text exposition.
    pub fn parse(text: &str) -> Counters {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = split_labels(rest) else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let key = RequestKey {
                group: get("group"),
                resource: get("resource"),
                subresource: get("subresource"),
                verb: get("verb"),
            };
            // Counters are integers; the exposition writes them as floats.
            *out.entry((key, get("code"))).or_insert(0) += value.max(0.0).round() as u64;
        }
        Counters(out)
    }

    /// Writes served since `before`, one entry per kind of request (answer codes summed, failures
    /// counted apart), in a stable order.
    pub fn writes_since(&self, before: &Counters) -> Vec<RequestCount> {
        let mut by_key: BTreeMap<RequestKey, RequestCount> = BTreeMap::new();
        for ((key, code), after) in &self.0 {
            if !MUTATING_VERBS.contains(&key.verb.as_str()) {
                continue;
            }
            let was = before
                .0
                .get(&(key.clone(), code.clone()))
                .copied()
                .unwrap_or(0);
            let n = after.saturating_sub(was);
            if n == 0 {
                continue;
            }
            let entry = by_key.entry(key.clone()).or_insert_with(|| RequestCount {
                key: key.clone(),
                ..Default::default()
            });
            entry.total += n;
            if !code.starts_with('2') {
                entry.failed += n;
            }
        }
        by_key.into_values().collect()
    }

    /// Every write served so far that is not a Lease renewal (for telling when the hub has gone
    /// quiet while fake agents keep heartbeating).
    pub fn writes_other_than_leases(&self) -> u64 {
        self.0
            .iter()
            .filter(|((k, _), _)| {
                MUTATING_VERBS.contains(&k.verb.as_str()) && k.resource != "leases"
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// `counts` minus `minus`, kind by kind (what is left once the harness's own writes are taken
/// out); kinds left with nothing disappear.
pub fn subtract(counts: &[RequestCount], minus: &[RequestCount]) -> Vec<RequestCount> {
    counts
        .iter()
        .map(|c| {
            let m = minus.iter().find(|m| m.key == c.key);
            RequestCount {
                key: c.key.clone(),
                total: c.total.saturating_sub(m.map_or(0, |m| m.total)),
                failed: c.failed.saturating_sub(m.map_or(0, |m| m.failed)),
            }
        })
        .filter(|c| c.total > 0)
        .collect()
}

/// Splits `a="x",b="y"} 12` into the labels and the value text, honouring `\"` and `\\` escapes.
pub fn split_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // Label name, up to '='.
        let mut name = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '=' => break,
                '}' if name.is_empty() => return Some((labels, &s[i + 1..])),
                ',' | ' ' => {}
                c => name.push(c),
            }
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        match chars.peek() {
            Some((_, ',')) => {
                chars.next();
            }
            Some((i, '}')) => {
                let i = *i;
                return Some((labels, &s[i + 1..]));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="gpufed.io",resource="computejobs",scope="resource",subresource="",verb="POST",version="v1alpha1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="gpufed.io",resource="computejobs",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 4
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 7
apiserver_request_latencies_summary{verb="POST"} 3
"#;

    const AFTER: &str = r#"apiserver_request_total{code="201",component="apiserver",dry_run="",group="gpufed.io",resource="computejobs",scope="resource",subresource="",verb="POST",version="v1alpha1"} 310
apiserver_request_total{code="200",component="apiserver",dry_run="",group="gpufed.io",resource="computejobs",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 604
apiserver_request_total{code="409",component="apiserver",dry_run="",group="gpufed.io",resource="computejobs",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 12
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 70
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PATCH",version="v1"} 2e+01
"#;

    fn key(group: &str, resource: &str, sub: &str, verb: &str) -> RequestKey {
        RequestKey {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn writes_since_count_mutating_verbs_per_resource_with_failures_apart() {
        let w = Counters::parse(AFTER).writes_since(&Counters::parse(BEFORE));
        assert_eq!(
            w,
            vec![
                RequestCount {
                    key: key("coordination.k8s.io", "leases", "", "PATCH"),
                    total: 20,
                    failed: 0
                },
                RequestCount {
                    key: key("gpufed.io", "computejobs", "", "POST"),
                    total: 300,
                    failed: 0
                },
                RequestCount {
                    key: key("gpufed.io", "computejobs", "status", "APPLY"),
                    total: 612,
                    failed: 12
                },
            ]
        );
        assert_eq!(
            Counters::parse(AFTER).writes_other_than_leases(),
            310 + 604 + 12
        );
    }

    #[test]
    fn the_harness_writes_are_taken_out_kind_by_kind() {
        let w = Counters::parse(AFTER).writes_since(&Counters::parse(BEFORE));
        let harness = [
            RequestCount {
                key: key("gpufed.io", "computejobs", "", "POST"),
                total: 300,
                failed: 0,
            },
            RequestCount {
                key: key("coordination.k8s.io", "leases", "", "PATCH"),
                total: 18,
                failed: 0,
            },
        ];
        let left = subtract(&w, &harness);
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(left[0].total, 2);
        assert_eq!(
            left[1].key.resource_label(),
            "computejobs/status (gpufed.io)"
        );
    }

    #[test]
    fn escaped_quotes_and_commas_in_label_values_are_read_whole() {
        let (labels, rest) = split_labels(r#"a="x\"y,z",b=""} 5"#).unwrap();
        assert_eq!(labels["a"], "x\"y,z");
        assert_eq!(labels["b"], "");
        assert_eq!(rest.trim(), "5");
    }
}
