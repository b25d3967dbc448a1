//! GPU-seconds of a placement from its pods' statuses, as a pure function: what the provider is
//! paid for.
//!
//! A pod holds its GPUs from the moment its first container starts until its last container
//! finishes (or now, while one still runs); pods that never started a container used nothing.
//! Seconds are counted per pod, not per container, so a sidecar never doubles the bill, and
//! multiplied by the GPUs each replica holds.

use super::cached::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// When one pod held its GPUs: the first container start and, once every started container has
/// terminated, the last finish.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSpan {
    /// First container start.
    pub start: Time,
    /// Last container finish; `None` while a container runs.
    pub end: Option<Time>,
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    pod.status
        .as_ref()
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
}

/// The span of a pod, or `None` if none of its containers has started.
pub fn pod_span(pod: &Pod) -> Option<PodSpan> {
    let mut start: Option<Time> = None;
    let mut end: Option<Time> = None;
    let mut running = false;
    for cs in statuses(pod) {
        let Some(state) = cs.state.as_ref() else {
            continue;
        };
        let (started, finished) = if let Some(r) = &state.running {
            running = true;
            (r.started_at.clone(), None)
        } else if let Some(t) = &state.terminated {
            (t.started_at.clone(), t.finished_at.clone())
        } else {
            (None, None)
        };
        if let Some(s) = started {
            start = Some(match start {
                Some(prev) if prev.0 <= s.0 => prev,
                _ => s,
            });
        }
        if let Some(f) = finished {
            end = Some(match end {
                Some(prev) if prev.0 >= f.0 => prev,
                _ => f,
            });
        }
    }
    let start = start?;
    Some(PodSpan {
        end: if running { None } else { end },
        start,
    })
}

/// Whole seconds from `a` to `b` (0 if `b` is not after `a`).
fn seconds(a: &Time, b: &Time) -> u64 {
    u64::try_from(b.0.duration_since(a.0).as_secs()).unwrap_or(0)
}

/// The replica (completion index) a pod of an Indexed Job runs, if it says.
pub fn pod_replica(pod: &Pod) -> Option<u32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::report::COMPLETION_INDEX))
        .or_else(|| {
            pod.metadata
                .labels
                .as_ref()?
                .get(super::report::COMPLETION_INDEX)
        })
        .and_then(|i| i.parse().ok())
}

/// The replica a pod runs; 0 when it does not say.
pub fn replica_index(pod: &Pod) -> u32 {
    pod_replica(pod).unwrap_or(0)
}

/// When every one of `replicas` replicas had started a pod: the latest of their first starts, or
/// `None` while one has not started. A gang is billed only from then on. Pods that do not name
/// their replica count as replicas of their own.
pub fn gang_start(pods: &[&Pod], replicas: u32) -> Option<Time> {
    let mut first: std::collections::BTreeMap<String, Time> = std::collections::BTreeMap::new();
    for p in pods {
        let Some(span) = pod_span(p) else {
            continue;
        };
        let key = match pod_replica(p) {
            Some(i) if i >= replicas => continue,
            Some(i) => format!("replica {i}"),
            None => format!("pod {}", p.metadata.name.as_deref().unwrap_or_default()),
        };
        first
            .entry(key)
            .and_modify(|t| {
                if span.start.0 < t.0 {
                    *t = span.start.clone();
                }
            })
            .or_insert(span.start);
    }
    let mut starts: Vec<Time> = first.into_values().collect();
    starts.sort_by_key(|t| t.0);
    starts.into_iter().nth(replicas.max(1) as usize - 1)
}

/// GPU-seconds of the `pods` of a placement of `replicas` replicas, each holding
/// `gpus_per_replica` GPUs, up to `now` for running pods. Counted from the moment every replica
/// had started ([`gang_start`]): a gang that starts only in part is billed nothing for it.
pub fn gpu_seconds(pods: &[&Pod], replicas: u32, gpus_per_replica: u32, now: &Time) -> u64 {
    let Some(from) = gang_start(pods, replicas.max(1)) else {
        return 0;
    };
    pods.iter()
        .filter_map(|p| pod_span(p))
        .map(|span| {
            let start = if span.start.0 < from.0 {
                &from
            } else {
                &span.start
            };
            let end = span.end.as_ref().unwrap_or(now);
            seconds(start, end).saturating_mul(u64::from(gpus_per_replica))
        })
        .fold(0u64, u64::saturating_add)
}

/// The earliest start among `pods`.
pub fn first_start(pods: &[&Pod]) -> Option<Time> {
    pods.iter()
        .filter_map(|p| pod_span(p))
        .map(|s| s.start)
        .min_by_key(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{at, pod};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning};

    #[test]
    fn finished_pods_count_from_start_to_finish_times_their_gpus() {
        let a = pod("a", Some(100), Some((160, 0)));
        let b = pod("b", Some(110), Some((130, 1)));
        assert_eq!(gpu_seconds(&[&a, &b], 1, 4, &at(1000)), 4 * (60 + 20));
    }

    fn replica(mut p: Pod, i: u32) -> Pod {
        p.metadata.annotations = Some(
            [(
                super::super::report::COMPLETION_INDEX.to_string(),
                i.to_string(),
            )]
            .into_iter()
            .collect(),
        );
        p
    }

    #[test]
    fn a_gang_is_billed_only_from_when_every_replica_had_started() {
        // Replica 0 started at 100, replica 1 only at 160: both count from 160.
        let a = replica(pod("a", Some(100), None), 0);
        let b = replica(pod("b", Some(160), None), 1);
        assert_eq!(gang_start(&[&a, &b], 2), Some(at(160)));
        assert_eq!(gpu_seconds(&[&a, &b], 2, 4, &at(200)), 4 * (40 + 40));
        // Replica 1 never started (say, unschedulable): nothing is billed for the half that ran.
        let stuck = replica(pod("c", None, None), 1);
        assert_eq!(gang_start(&[&a, &stuck], 2), None);
        assert_eq!(gpu_seconds(&[&a, &stuck], 2, 4, &at(10_000)), 0);
        // A replica that restarted counts from its first start.
        let retried = replica(pod("b2", Some(170), None), 1);
        let failed = replica(pod("b1", Some(120), Some((150, 1))), 1);
        assert_eq!(gang_start(&[&a, &failed, &retried], 2), Some(at(120)));
    }

    #[test]
    fn running_pods_count_up_to_now() {
        let a = pod("a", Some(100), None);
        assert_eq!(gpu_seconds(&[&a], 1, 2, &at(130)), 60);
        assert_eq!(gpu_seconds(&[&a], 1, 2, &at(131)), 62);
    }

    #[test]
    fn pods_that_never_started_used_nothing() {
        let pending = pod("p", None, None);
        assert_eq!(gpu_seconds(&[&pending], 1, 8, &at(1000)), 0);
        assert_eq!(first_start(&[&pending]), None);
    }

    #[test]
    fn a_pod_runs_from_its_first_container_start_to_its_last_container_finish() {
        let mut p = pod("a", Some(100), Some((150, 0)));
        let mut sidecar = p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .clone();
        sidecar.name = "sidecar".into();
        let t = sidecar.state.as_mut().unwrap().terminated.as_mut().unwrap();
        t.started_at = Some(at(90));
        t.finished_at = Some(at(170));
        p.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()
            .push(sidecar);
        assert_eq!(
            pod_span(&p),
            Some(PodSpan {
                start: at(90),
                end: Some(at(170))
            })
        );
        assert_eq!(
            gpu_seconds(&[&p], 1, 1, &at(1000)),
            80,
            "one pod, counted once"
        );
    }

    #[test]
    fn a_pod_with_one_container_still_running_is_still_running() {
        let mut p = pod("a", Some(100), Some((150, 0)));
        p.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()
            .push(ContainerStatus {
                name: "sidecar".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(at(101)),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        assert_eq!(pod_span(&p).unwrap().end, None);
        assert_eq!(gpu_seconds(&[&p], 1, 1, &at(200)), 100);
    }

    #[test]
    fn clock_skew_never_makes_usage_negative() {
        let a = pod("a", Some(200), None);
        assert_eq!(gpu_seconds(&[&a], 1, 8, &at(100)), 0);
    }

    #[test]
    fn the_first_start_is_the_earliest_pod_start() {
        let a = pod("a", Some(120), None);
        let b = pod("b", Some(100), Some((110, 0)));
        assert_eq!(first_start(&[&a, &b]), Some(at(100)));
    }
}
