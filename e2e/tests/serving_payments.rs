//! A serving job paid while it runs (docs/adr/0030-serving-jobs.md), against a real anvil and a
//! real apiserver with the hub as a process and the test standing in for the member's agent: at
//! the end of every `settlementPeriod` the hub pays the GPU-seconds used so far out of the
//! attempt's lock (`JobEscrow.settlePeriod`), each period exactly once — also across a hub
//! killed and replaced while the job runs — and the final settlement pays only the rest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alloy::primitives::{U256, keccak256};
use gpufed_crds::{ComputeJob, PlacementPhase, PlacementStatus, SettlementState, TokenAmount};
use gpufed_e2e::chain::accounts;
use gpufed_e2e::hubctl::{placements, report_placement, start_hub, wait_job};
use gpufed_e2e::market::{self, STEP as T, settled, settlement};
use gpufed_e2e::{run_test, wait_until};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

const HARD_DEADLINE: Duration = Duration::from_secs(360);
/// The settlement period of the job.
const PERIOD_SECS: u64 = 10;
/// Periods the job runs before it ends.
const PERIODS: u32 = 3;

fn word(hex: &str) -> U256 {
    U256::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}

/// Submits team-a's serving job `chat`: 2 H100 at most `max_price` per GPU-hour, `max_duration`
/// a window, paid every [`PERIOD_SECS`].
async fn serve(c: &kube::Client, max_price: &str, max_duration: &str) {
    market::submit_with(
        c,
        "team-a",
        "chat",
        "H100",
        2,
        max_price,
        json!({"maxDuration": max_duration,
               "serving": {"port": 8080, "settlementPeriod": format!("{PERIOD_SECS}s")}}),
    )
    .await
    .unwrap();
}

/// Every escrow event `signature` of lock `job_id` on the chain, as JSON logs.
async fn escrow_logs(m: &market::Market, signature: &str, job_id: &str) -> Vec<Value> {
    let logs = m
        .chain
        .rpc(
            "eth_getLogs",
            json!([{"address": m.contracts.escrow.to_string(), "fromBlock": "0x0",
                    "toBlock": "latest", "topics": [keccak256(signature).to_string(), job_id]}]),
        )
        .await
        .unwrap();
    logs.as_array().unwrap().clone()
}

/// Every `PeriodSettled` event of lock `job_id` on the chain: (period, paid, fee) in base units.
async fn period_events(m: &market::Market, job_id: &str) -> Vec<(u32, U256, U256)> {
    escrow_logs(
        m,
        "PeriodSettled(bytes32,uint32,uint256,uint256,uint256)",
        job_id,
    )
    .await
    .iter()
    .map(|l: &Value| {
        let period = word(l["topics"][2].as_str().unwrap()).to::<u32>();
        let data = l["data"].as_str().unwrap().trim_start_matches("0x");
        (period, word(&data[..64]), word(&data[64..128]))
    })
    .collect()
}

fn periods_paid(j: &ComputeJob) -> u32 {
    settlement(j, 1).map(|s| s.periods_paid).unwrap_or(0)
}

#[test]
fn a_serving_job_is_paid_each_period_exactly_once_while_it_runs_and_the_rest_at_the_end() {
    run_test(HARD_DEADLINE, || async {
        let mut m = market::started("serve-pay", 1000, json!({})).await.unwrap();
        let c = m.hub.client();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        serve(&c, "3.60", "1h").await;
        let j = wait_job(&c, "team-a", "chat", T, "locked", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();
        let job_id = settlement(&j, 1).unwrap().job_id;
        let p = wait_until(T, "the placement", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();

        // The member runs it: 2 GPUs from now on, reported every second like a busy agent.
        let started = Instant::now();
        let start = Time(k8s_openapi::jiff::Timestamp::now());
        let used = || 2 * started.elapsed().as_secs();
        let running = |gpu_seconds: u64| PlacementStatus {
            phase: Some(PlacementPhase::Running),
            active_replicas: 1,
            start_time: Some(start.clone()),
            gpu_seconds,
            ..Default::default()
        };
        let mut hub_replaced = false;
        loop {
            report_placement(&c, &p, running(used())).await.unwrap();
            let j = wait_job(&c, "team-a", "chat", T, "the job", |_| true)
                .await
                .unwrap();
            let paid = periods_paid(&j);
            // Once period 1 is recorded, the hub is killed and another takes over mid-run.
            if paid >= 1 && !hub_replaced {
                m.hub.process_mut("hub-0").unwrap().kill();
                start_hub(&m.tools, &mut m.hub, "hub-1", &[]).unwrap();
                hub_replaced = true;
            }
            if paid >= PERIODS {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(PERIOD_SECS * u64::from(PERIODS) + 60),
                "periods paid too slowly: {:?}",
                settlement(&j, 1)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        // Each period once, in order, on the chain; what each paid never outruns the usage of the
        // periods so far, at 3.60 per GPU-hour.
        let price: TokenAmount = "3.60".parse().unwrap();
        let events = period_events(&m, &job_id).await;
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        for (period, _, _) in &events {
            *seen.entry(*period).or_default() += 1;
        }
        assert!(
            seen.values().all(|n| *n == 1),
            "a period paid twice: {events:?}"
        );
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (1..=events.len() as u32).collect::<Vec<_>>()
        );
        let mut so_far = U256::ZERO;
        for (period, paid, _) in &events {
            so_far += paid;
            let cap = price
                .cost_of_gpu_seconds(2 * PERIOD_SECS * u64::from(*period))
                .unwrap();
            assert!(
                so_far <= U256::from(cap.atto()),
                "after period {period}: {so_far}"
            );
            assert!(*paid > U256::ZERO, "period {period} paid nothing");
        }

        // The attempt ends: the final settlement pays only the rest of its GPU-seconds.
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let total = used();
        report_placement(
            &c,
            &p,
            PlacementStatus {
                phase: Some(PlacementPhase::Succeeded),
                finish_time: Some(now),
                ..running(total)
            },
        )
        .await
        .unwrap();
        let j = wait_job(&c, "team-a", "chat", T, "settled", settled)
            .await
            .unwrap();
        let s = settlement(&j, 1).unwrap();
        let recorded = j.status.as_ref().unwrap().attempts[0].gpu_seconds;
        let due = price.cost_of_gpu_seconds(recorded).unwrap();
        assert_eq!(s.paid, Some(due), "periods plus the final part: {s:?}");
        assert_eq!(j.status.as_ref().unwrap().cost, Some(due));
        let events = period_events(&m, &job_id).await;
        assert_eq!(s.periods_paid as usize, events.len());
        let by_periods: U256 = events.iter().map(|(_, p, _)| *p).sum();
        let fees: U256 = events.iter().map(|(_, _, f)| *f).sum();
        let last = U256::from(due.atto()) - by_periods;
        let last_fee = last * U256::from(500) / U256::from(10_000);
        let provider_after = m.balance(accounts::ALPHA.1).await.unwrap();
        assert_eq!(
            provider_after - provider_before,
            U256::from(due.atto()) - fees - last_fee,
            "the provider got its share of every period and of the rest, once"
        );
        // Refunded: the lock less everything paid.
        assert_eq!(s.refunded.unwrap().checked_add(due), s.locked, "{s:?}");
    });
}

/// Every `LockExtended` event of lock `job_id`: (added, deadline) in base units and Unix seconds.
async fn renewals(m: &market::Market, job_id: &str) -> Vec<(U256, u64)> {
    escrow_logs(
        m,
        "LockExtended(bytes32,address,uint256,uint256,uint64)",
        job_id,
    )
    .await
    .iter()
    .map(|l: &Value| {
        let data = l["data"].as_str().unwrap().trim_start_matches("0x");
        (word(&data[..64]), word(&data[128..192]).to::<u64>())
    })
    .collect()
}

/// The window of the renewal test, its `maxDuration`.
const WINDOW_SECS: u64 = 30;

#[test]
fn a_serving_job_runs_past_max_duration_on_renewed_windows_until_its_payer_runs_out() {
    run_test(HARD_DEADLINE, || async {
        // A window (2 GPUs × 30 s at the job's cap of 18000/GPU-hour) locks 300 of the payer's
        // 1000: the first lock and two renewals fit, the third renewal does not.
        let mut m = market::started("serve-renew", 1000, json!({}))
            .await
            .unwrap();
        let c = m.hub.client();
        let provider_before = m.balance(accounts::ALPHA.1).await.unwrap();
        serve(&c, "18000", &format!("{WINDOW_SECS}s")).await;
        let j = wait_job(&c, "team-a", "chat", T, "locked", |j| {
            settlement(j, 1).is_some_and(|s| s.state == SettlementState::Locked)
        })
        .await
        .unwrap();
        let window: TokenAmount = "300".parse().unwrap();
        assert_eq!(settlement(&j, 1).unwrap().locked, Some(window));
        let job_id = settlement(&j, 1).unwrap().job_id;
        let deposit_before = m.deposit(accounts::PAYER_A.1).await.unwrap();
        let p = wait_until(T, "the placement", || async {
            placements(&c, "alpha").await.ok()?.into_iter().next()
        })
        .await
        .unwrap();
        let funded = || async {
            placements(&c, "alpha").await.unwrap()[0]
                .spec
                .funded_seconds
                .unwrap_or(WINDOW_SECS)
        };

        // The member runs it, reporting every second, for as long as it is funded: renewed one
        // margin (one 10 s period) before each funded end, so at 20 s and 50 s; refused at 80 s.
        let started = Instant::now();
        let start = Time(k8s_openapi::jiff::Timestamp::now());
        let used = || 2 * started.elapsed().as_secs();
        let running = |gpu_seconds: u64| PlacementStatus {
            phase: Some(PlacementPhase::Running),
            active_replicas: 1,
            start_time: Some(start.clone()),
            gpu_seconds,
            ..Default::default()
        };
        let mut seen = vec![WINDOW_SECS];
        let mut hub_replaced = false;
        loop {
            let f = funded().await;
            if seen.last() != Some(&f) {
                seen.push(f);
            }
            // After the first renewal the hub is killed and the job's record of it erased, as if
            // the hub had died between mining it and writing the status: the next hub must read
            // the renewal back from the chain, not renew the same window again.
            if f == 2 * WINDOW_SECS && !hub_replaced {
                m.hub.process_mut("hub-0").unwrap().kill();
                let jobs: kube::Api<ComputeJob> = kube::Api::namespaced(c.clone(), "team-a");
                let mut j = jobs.get("chat").await.unwrap();
                let s = j.status.as_mut().unwrap().attempts[0]
                    .settlement
                    .as_mut()
                    .unwrap();
                assert_eq!(
                    (s.windows_funded, s.locked),
                    (2, Some("600".parse().unwrap()))
                );
                s.windows_funded = 0;
                s.locked = Some(window);
                s.lock_deadline = None;
                jobs.replace_status("chat", &Default::default(), &j)
                    .await
                    .unwrap();
                start_hub(&m.tools, &mut m.hub, "hub-1", &[]).unwrap();
                hub_replaced = true;
            }
            // What the member's Job controller does at the funded end (the agent keeps the
            // local Job's activeDeadlineSeconds at it).
            if started.elapsed().as_secs() >= f {
                break;
            }
            report_placement(&c, &p, running(used())).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(4 * WINDOW_SECS + 30),
                "funded without end: {seen:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(
            seen,
            vec![30, 60, 90],
            "the funded run time, renewal by renewal"
        );
        let j = wait_job(&c, "team-a", "chat", T, "the refused renewal", |j| {
            settlement(j, 1)
                .and_then(|s| s.message)
                .is_some_and(|m| m.starts_with("RenewalRefused"))
        })
        .await
        .unwrap();
        let s = settlement(&j, 1).unwrap();
        assert_eq!(s.windows_funded, 3, "{s:?}");
        assert_eq!(s.locked, Some("900".parse().unwrap()), "{s:?}");
        let message = s.message.unwrap();
        assert!(
            message.contains("InsufficientDeposit") || message.contains("deposit"),
            "{message}"
        );
        let notes = gpufed_e2e::hubctl::job_events(&c, "team-a", "chat", "RenewalRefused")
            .await
            .unwrap();
        assert_eq!(notes.len(), 1, "one Event for the refusal: {notes:?}");
        // Two renewals on the chain, each one window, each moving the deadline one window on.
        let ext = renewals(&m, &job_id).await;
        let base = U256::from(window.atto());
        assert_eq!(
            ext.len(),
            2,
            "each window renewed once, across the hubs: {ext:?}"
        );
        assert!(ext.iter().all(|(added, _)| *added == base), "{ext:?}");
        assert_eq!(ext[1].1 - ext[0].1, WINDOW_SECS, "{ext:?}");
        // The payer's free deposit gave exactly the two renewed windows.
        let deposit_after_renewals = m.deposit(accounts::PAYER_A.1).await.unwrap();
        assert_eq!(
            deposit_before - deposit_after_renewals,
            base * U256::from(2)
        );

        // The member's Job controller stops it at its funded end: the last period and the rest
        // of its GPU-seconds are paid once, everything else goes back to the payer's deposit.
        let total = used();
        let price: TokenAmount = "3.60".parse().unwrap();
        report_placement(
            &c,
            &p,
            PlacementStatus {
                phase: Some(PlacementPhase::Failed),
                reason: Some("DeadlineExceeded".into()),
                message: Some("Job was active longer than specified deadline".into()),
                finish_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..running(total)
            },
        )
        .await
        .unwrap();
        let j = wait_job(&c, "team-a", "chat", T, "settled", settled)
            .await
            .unwrap();
        let st = j.status.as_ref().unwrap();
        assert_eq!(st.phase, gpufed_crds::JobPhase::Failed, "{st:?}");
        let s = settlement(&j, 1).unwrap();
        let due = price
            .cost_of_gpu_seconds(st.attempts[0].gpu_seconds)
            .unwrap();
        assert_eq!(s.paid, Some(due), "{s:?}");
        assert_eq!(s.refunded.unwrap().checked_add(due), s.locked, "{s:?}");
        let periods = period_events(&m, &job_id).await;
        assert_eq!(s.periods_paid as usize, periods.len());
        assert!(periods.len() >= 7, "a period every 10 s of 90: {periods:?}");
        let fees: U256 = periods.iter().map(|(_, _, f)| *f).sum();
        let by_periods: U256 = periods.iter().map(|(_, p, _)| *p).sum();
        let last_fee = (U256::from(due.atto()) - by_periods) * U256::from(500) / U256::from(10_000);
        assert_eq!(
            m.balance(accounts::ALPHA.1).await.unwrap() - provider_before,
            U256::from(due.atto()) - fees - last_fee,
            "the provider got its share of every period and of the rest, once"
        );
        // Before the renewals it held the deposit less the first window.
        assert_eq!(
            m.deposit(accounts::PAYER_A.1).await.unwrap(),
            deposit_before + base - U256::from(due.atto()),
            "the payer's deposit got back all three windows less what was paid"
        );
    });
}
