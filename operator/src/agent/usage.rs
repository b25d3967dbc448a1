//! GPU-seconds of a placement from its pods' statuses, as a pure function: what the provider is
//! paid for.
//!
//! A pod holds its GPUs from the moment its first container starts until its last container
//! finishes (or now, while one still runs); pods that never started a container used nothing.
//! Seconds are counted per pod, not per container, so a sidecar never doubles the bill, and
//! multiplied by the GPUs each replica holds.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
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

/// GPU-seconds of `pods`, each holding `gpus_per_replica` GPUs, up to `now` for running pods.
pub fn gpu_seconds(pods: &[&Pod], gpus_per_replica: u32, now: &Time) -> u64 {
    pods.iter()
        .filter_map(|p| pod_span(p))
        .map(|span| {
            let end = span.end.as_ref().unwrap_or(now);
            seconds(&span.start, end).saturating_mul(u64::from(gpus_per_replica))
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
        assert_eq!(gpu_seconds(&[&a, &b], 4, &at(1000)), 4 * (60 + 20));
    }

    #[test]
    fn running_pods_count_up_to_now() {
        let a = pod("a", Some(100), None);
        assert_eq!(gpu_seconds(&[&a], 2, &at(130)), 60);
        assert_eq!(gpu_seconds(&[&a], 2, &at(131)), 62);
    }

    #[test]
    fn pods_that_never_started_used_nothing() {
        let pending = pod("p", None, None);
        assert_eq!(gpu_seconds(&[&pending], 8, &at(1000)), 0);
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
            gpu_seconds(&[&p], 1, &at(1000)),
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
        assert_eq!(gpu_seconds(&[&p], 1, &at(200)), 100);
    }

    #[test]
    fn clock_skew_never_makes_usage_negative() {
        let a = pod("a", Some(200), None);
        assert_eq!(gpu_seconds(&[&a], 8, &at(100)), 0);
    }

    #[test]
    fn the_first_start_is_the_earliest_pod_start() {
        let a = pod("a", Some(120), None);
        let b = pod("b", Some(100), Some((110, 0)));
        assert_eq!(first_start(&[&a, &b]), Some(at(100)));
    }
}
