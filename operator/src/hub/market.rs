//! Prices of a pool's market (ADR 0024): which prices a member asks (its own Offer, else the
//! admin's `spec.prices`), and the clearing-price index: per GPU model, the prices its latest placements
//! were made at, what each job pays per GPU-hour and has frozen in its attempt record. Under
//! `Auction` that is the clearing price of each job's auction; under the other strategies it is
//! the chosen cluster's price.
//!
//! The index is read from the jobs' attempt records and merged into the pool's previous index, so
//! it survives the deletion of the jobs it came from and a restart of the hub; each model keeps
//! its latest [`CLEARING_HISTORY`] placements.

use std::collections::BTreeMap;
use std::sync::Arc;

use gpufed_crds::{
    CLEARING_HISTORY, ClearingPoint, MemberCluster, ModelClearing, Offer, SignedOffer, TokenAmount,
};

use crate::hub::at_rest::JobRef;
use crate::hub::offers::{Signing, usable};

/// `member` as the scheduler and the roll-up price it: with the prices of the offer the hub
/// accepted last from its own `offer` (`status.accepted`), while that is usable under `signing`
/// at `now_secs` (`offers::usable`), in place of the admin-written `spec.prices`.
pub fn priced_by_offer(
    member: &Arc<MemberCluster>,
    offer: Option<&Offer>,
    signing: &Signing,
    now_secs: i64,
) -> Arc<MemberCluster> {
    match accepted_offer(offer, signing, now_secs) {
        Some(a) if a.prices != member.spec.prices => {
            let mut m = MemberCluster::clone(member);
            m.spec.prices = a.prices.clone();
            Arc::new(m)
        }
        _ => Arc::clone(member),
    }
}

/// The offer `offer`'s member is priced by now, if any.
pub fn accepted_offer<'a>(
    offer: Option<&'a Offer>,
    signing: &Signing,
    now_secs: i64,
) -> Option<&'a SignedOffer> {
    offer?
        .status
        .as_ref()?
        .accepted
        .as_ref()
        .filter(|a| usable(a, signing, now_secs))
}

/// The index of pool `pool` from its `previous` index and the attempts of `jobs` (any pool's;
/// only `pool`'s are read). An attempt already in the index is not added twice.
pub fn clearing_index<'a>(
    previous: &[ModelClearing],
    jobs: impl IntoIterator<Item = JobRef<'a>>,
    pool: &str,
) -> Vec<ModelClearing> {
    let mut points: BTreeMap<String, Vec<ClearingPoint>> = previous
        .iter()
        .map(|m| (m.model.clone(), m.history.clone()))
        .collect();
    for job in jobs.into_iter().filter(|j| j.pool() == pool) {
        let key = format!("{}/{}", job.namespace(), job.name());
        for a in job.attempts() {
            let Some(time) = a.placed_time.clone() else {
                continue;
            };
            let history = points.entry(a.model.clone()).or_default();
            if history
                .iter()
                .any(|p| p.job == key && p.attempt == a.attempt)
            {
                continue;
            }
            history.push(ClearingPoint {
                time,
                price_per_gpu_hour: a.price_per_gpu_hour,
                gpus: u32::try_from(job.gpus()).unwrap_or(u32::MAX),
                cluster: a.cluster.clone(),
                job: key.clone(),
                attempt: a.attempt,
            });
        }
    }
    points
        .into_iter()
        .filter_map(|(model, mut history)| {
            history
                .sort_by(|a, b| (a.time.0, &a.job, a.attempt).cmp(&(b.time.0, &b.job, b.attempt)));
            let drop = history.len().saturating_sub(CLEARING_HISTORY);
            history.drain(..drop);
            let last = history.last()?.price_per_gpu_hour;
            let (weighted, gpus) = history.iter().fold((0u128, 0u128), |(w, g), p| {
                let n = u128::from(p.gpus.max(1));
                (
                    w.saturating_add(p.price_per_gpu_hour.atto().saturating_mul(n)),
                    g + n,
                )
            });
            Some(ModelClearing {
                model,
                last,
                mean: TokenAmount::from_atto(weighted / gpus.max(1)),
                history,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::at_rest::cached;
    use gpufed_crds::ComputeJob;
    use gpufed_crds::testing::job;
    use gpufed_crds::{AttemptPhase, AttemptRecord, ComputeJobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    /// A job of pool `pool` with one placed attempt per `(model, price, placed at)`.
    fn placed(name: &str, pool: &str, attempts: &[(&str, &str, i64)]) -> Arc<ComputeJob> {
        let mut j = job(name).gpus(2).build();
        j.spec.pool = pool.into();
        let template: AttemptRecord = serde_json::from_value(serde_json::json!({
            "attempt": 1, "cluster": "alpha", "placement": "p", "model": "H100",
            "pricePerGpuHour": "1.00", "phase": "Placed"
        }))
        .unwrap();
        let attempts = attempts
            .iter()
            .enumerate()
            .map(|(i, (model, price, t))| AttemptRecord {
                attempt: i as u32 + 1,
                model: (*model).into(),
                price_per_gpu_hour: price.parse().unwrap(),
                phase: AttemptPhase::Placed,
                placed_time: Some(at(*t)),
                ..template.clone()
            })
            .collect();
        j.status = Some(ComputeJobStatus {
            attempts,
            ..Default::default()
        });
        Arc::new(j)
    }

    fn prices(m: &ModelClearing) -> Vec<String> {
        m.history
            .iter()
            .map(|p| p.price_per_gpu_hour.to_string())
            .collect()
    }

    #[test]
    fn a_member_is_priced_by_its_accepted_offer_while_it_is_usable() {
        let m = Arc::new(gpufed_crds::testing::member("alpha", "H100", "2.40").build());
        let open = Signing::Unsigned;
        assert!(Arc::ptr_eq(&priced_by_offer(&m, None, &open, 0), &m));
        let prices: Vec<gpufed_crds::ModelPrice> = serde_json::from_value(serde_json::json!([
            {"model": "H100", "pricePerGpuHour": "9.99"}
        ]))
        .unwrap();
        let mut offer = Offer::new(
            "offer",
            gpufed_crds::OfferSpec {
                prices: prices.clone(),
                nonce: None,
                expires: None,
                signature: None,
            },
        );
        // Written but not (yet) accepted by the hub: the admin's prices.
        assert!(Arc::ptr_eq(
            &priced_by_offer(&m, Some(&offer), &open, 0),
            &m
        ));
        offer.status = Some(gpufed_crds::OfferStatus {
            conditions: vec![],
            accepted: Some(SignedOffer {
                prices: prices.clone(),
                nonce: Some(3),
                expires: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(100).unwrap(),
                )),
                digest: None,
                signature: None,
                signer: Some(
                    "0x00000000000000000000000000000000000000aa"
                        .parse()
                        .unwrap(),
                ),
                generation: Some(1),
            }),
        });
        let priced = priced_by_offer(&m, Some(&offer), &open, 99);
        assert_eq!(priced.spec.prices, prices);
        assert_eq!(priced.spec.region, m.spec.region);
        // Expired: the admin's prices again.
        assert!(Arc::ptr_eq(
            &priced_by_offer(&m, Some(&offer), &open, 100),
            &m
        ));
        // Signed by a wallet that is no longer the member's: not used.
        let other = Signing::Signed(gpufed_crds::testing::offer_signing(
            "0x00000000000000000000000000000000000000cc",
        ));
        assert!(Arc::ptr_eq(
            &priced_by_offer(&m, Some(&offer), &other, 99),
            &m
        ));
        assert!(Arc::ptr_eq(
            &priced_by_offer(&m, Some(&offer), &Signing::NoWallet, 99),
            &m
        ));
    }

    #[test]
    fn placements_are_indexed_per_model_oldest_first_with_a_gpu_weighted_mean() {
        let jobs = [
            placed("b", "default", &[("H100", "3.00", 20)]),
            placed("a", "default", &[("H100", "2.00", 10), ("L4", "0.50", 30)]),
            placed("other", "elsewhere", &[("H100", "9.00", 40)]),
        ];
        let index = clearing_index(&[], cached(&jobs), "default");
        let models: Vec<&str> = index.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(models, ["H100", "L4"]);
        assert_eq!(prices(&index[0]), ["2.00", "3.00"]);
        assert_eq!(index[0].last.to_string(), "3.00");
        assert_eq!(index[0].mean.to_string(), "2.50");
        assert_eq!(index[0].history[0].job, "team-a/a");
        assert_eq!(index[0].history[0].gpus, 2);
    }

    #[test]
    fn the_index_outlives_its_jobs_counts_each_attempt_once_and_keeps_the_latest() {
        let first = clearing_index(
            &[],
            cached(&[placed("a", "default", &[("H100", "2.00", 0)])]),
            "default",
        );
        // The job is gone; a new one arrives; the old point stays, the same attempt is not re-added.
        let again = clearing_index(
            &first,
            cached(&[placed("a", "default", &[("H100", "2.00", 0)])]),
            "default",
        );
        assert_eq!(again, first);
        let many: Vec<Arc<ComputeJob>> = (0..30)
            .map(|i| placed(&format!("j{i}"), "default", &[("H100", "4.00", 100 + i)]))
            .collect();
        let index = clearing_index(&first, cached(&many), "default");
        assert_eq!(index[0].history.len(), CLEARING_HISTORY);
        assert_eq!(index[0].history[0].job, "team-a/j10");
        assert_eq!(index[0].mean.to_string(), "4.00");
    }
}
