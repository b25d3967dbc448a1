//! The endpoint of a serving job in its status (docs/adr/0030-serving-jobs.md): what the current
//! attempt's member reports on its Placement, with the cluster and attempt it belongs to; not
//! ready and without a URL while no attempt runs (placing, failing over, ended).

use gpufed_crds::{ComputeJobStatus, Endpoint, PlacementStatus};

/// The endpoint to show in `status` (already advanced by the lifecycle), given the current
/// attempt's Placement status as the lifecycle saw it (`None`: no Placement; `Some(None)`: no
/// status yet).
pub fn endpoint(
    status: &ComputeJobStatus,
    placement: Option<&Option<PlacementStatus>>,
) -> Endpoint {
    let current = status
        .attempts
        .iter()
        .find(|a| a.attempt == status.attempt && status.attempt > 0 && !a.phase.is_finished());
    let Some(rec) = current else {
        return Endpoint::default();
    };
    let reported = placement
        .and_then(Option::as_ref)
        .and_then(|p| p.endpoint.as_deref().cloned())
        .unwrap_or_default();
    Endpoint {
        cluster: Some(rec.cluster.clone()),
        attempt: Some(rec.attempt),
        ..reported
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use gpufed_crds::AttemptPhase;
    use gpufed_crds::testing::attempt;

    fn status(attempts: Vec<gpufed_crds::AttemptRecord>, current: u32) -> ComputeJobStatus {
        ComputeJobStatus {
            attempt: current,
            attempts,
            ..Default::default()
        }
    }

    fn reported(url: &str) -> Option<PlacementStatus> {
        Some(PlacementStatus {
            endpoint: Some(Box::new(Endpoint {
                url: Some(url.into()),
                urls: vec![url.into()],
                ready_replicas: 1,
                ready: true,
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    #[test]
    fn a_running_attempt_shows_its_members_url_with_cluster_and_attempt() {
        let st = status(vec![attempt(1, "alpha", AttemptPhase::Running)], 1);
        let e = endpoint(&st, Some(&reported("http://10.0.0.1:8080")));
        assert_eq!(e.url.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(
            (e.cluster.as_deref(), e.attempt, e.ready),
            (Some("alpha"), Some(1), true)
        );
    }

    #[test]
    fn a_lost_attempt_leaves_no_url_and_the_next_one_shows_its_own() {
        let lost = status(vec![attempt(1, "alpha", AttemptPhase::Lost)], 1);
        // The old Placement may still be in the cache with its URL: it is not shown.
        let e = endpoint(&lost, Some(&reported("http://10.0.0.1:8080")));
        assert_eq!(e, Endpoint::default());
        let next = status(
            vec![
                attempt(1, "alpha", AttemptPhase::Lost),
                attempt(2, "beta", AttemptPhase::Accepted),
            ],
            2,
        );
        let e = endpoint(&next, Some(&Some(PlacementStatus::default())));
        assert_eq!(
            (e.cluster.as_deref(), e.url, e.ready),
            (Some("beta"), None, false)
        );
        let e = endpoint(&next, Some(&reported("http://10.1.0.5:8080")));
        assert_eq!(e.url.as_deref(), Some("http://10.1.0.5:8080"));
    }
}
