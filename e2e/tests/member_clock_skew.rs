//! An agent whose host clock is off, against real apiservers and kwok: the wall clock of alpha's
//! agent and gpu-probe is shifted with libfaketime (`MemberPlan::skewable_clock`) while alpha's
//! control plane keeps the host's time. The agent measures time on its apiserver's clock
//! (`agent/clock.rs`), so:
//! * a clock that jumps 2 minutes ahead under a running job neither makes the member's lease look
//!   run out (which would stop every Job on the member) nor bills 2 minutes no GPU served;
//! * an agent started with its clock 2 minutes ahead, or behind, measures the offset and runs and
//!   bills a job as an agent with a true clock would;
//! * a gpu-probe whose clock is 2 minutes behind (its readings' stamps older than
//!   `--telemetry-max-age`) still has its GPUs offered: the agent ages readings from their arrival;
//! * the hub, which judges heartbeats on its own clock, keeps the member Ready throughout.
//!
//! Needs `cargo build -p gpufed-operator -p kubectl-gpufed -p gpu-probe --bins` first and
//! libfaketime (`e2e/tools/install-node.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, MemberCluster};
use gpufed_e2e::hubctl::wait_job;
use gpufed_e2e::joining::{MemberPlan, Pool, member_ready, scrape, wait_ready_with_free};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(420);
const LONG: Duration = Duration::from_secs(90);
/// How long each job holds its GPU.
const RUNS: u64 = 20;

async fn submit(hub: &Client, name: &str) {
    gpufed_e2e::joining::pool::apply(
        hub,
        "computejobs",
        &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"gpusPerReplica": 1, "gpu": {"models": ["H100"]},
                         "maxPricePerGpuHour": "5.00", "maxDuration": "10m",
                         "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                             "env": [{"name": "GPUFED_SIM_DURATION",
                                      "value": format!("{RUNS}s")}]}]}}}),
    )
    .await
    .unwrap();
}

/// Waits for `name` to succeed in one attempt on alpha, billed for the time it ran (kwok's
/// container times, whole seconds), with no `UsageCapped` warning: an agent that read a skewed
/// clock reports more than the hub allows, and the hub says so in that Event.
async fn succeeds_billed_as_it_ran(hub: &Client, name: &str) {
    let job: ComputeJob = wait_job(hub, "team-a", name, LONG, &format!("{name} to end"), |j| {
        j.status.as_ref().is_some_and(|s| s.phase.is_finished())
    })
    .await
    .unwrap();
    let st = job.status.unwrap();
    assert_eq!(st.phase, JobPhase::Succeeded, "{name}: {st:?}");
    let [a] = &st.attempts[..] else {
        panic!("{name}: one attempt expected: {:?}", st.attempts)
    };
    assert_eq!(
        (a.cluster.as_str(), a.phase),
        ("alpha", AttemptPhase::Succeeded)
    );
    assert!(
        (RUNS - 1..=RUNS + 2).contains(&a.gpu_seconds),
        "{name} ran {RUNS} s on one GPU and was billed {} GPU-seconds",
        a.gpu_seconds
    );
    let events: Api<Event> = Api::namespaced(hub.clone(), "team-a");
    let capped: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("UsageCapped")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .filter_map(|e| e.note)
        .collect();
    assert!(capped.is_empty(), "{name}: {capped:?}");
}

/// The agent's measured offset, once it reads about `expected` seconds.
/// Waits until `member`'s agent reports, in an inventory taken after `since` (the member's
/// clock, which is the host's), all its GPUs free and its telemetry fresh.
async fn offers_fresh_gpus_since(hub: &Client, member: &str, since: k8s_openapi::jiff::Timestamp) {
    let members: Api<MemberCluster> = Api::all(hub.clone());
    let last = std::sync::Mutex::new(String::new());
    let found = wait_until(LONG, "an inventory with fresh telemetry", || async {
        let m = members.get(member).await.ok()?;
        let s = m.status?;
        let inventory = s.inventory?;
        let taken = inventory.update_time?.0;
        *last.lock().unwrap() = format!("free {} at {taken}: {:?}", s.free_gpus, inventory.nodes);
        (taken > since && s.free_gpus == 8 && inventory.nodes.iter().all(|n| !n.telemetry_stale))
            .then_some(())
    })
    .await;
    assert!(
        found.is_ok(),
        "{member} offers no fresh GPUs after {since}; last inventory: {}",
        last.lock().unwrap()
    );
}

async fn offset_near(agent: std::net::SocketAddr, expected: f64) {
    wait_until(
        LONG,
        &format!("the agent to measure an offset of {expected} s"),
        || async move {
            let got = scrape(agent, "gpufed_agent_clock_offset_seconds").await?;
            ((got - expected).abs() <= 2.0).then_some(())
        },
    )
    .await
    .unwrap();
}

#[test]
fn an_agent_whose_clock_is_off_keeps_its_lease_and_bills_only_the_time_served() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let mut pool = Pool::join(
            &tools,
            "15s",
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "1.00",
            )
            .skewable_clock()],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        pool.hub.create_namespace("team-a").await.unwrap();
        wait_ready_with_free(&hub, "alpha", 8, LONG).await.unwrap();
        let metrics = pool.joined("alpha").unwrap().agent_metrics;
        offset_near(metrics, 0.0).await;

        // The member stays Ready on the hub the whole time (sampled every second).
        let not_ready = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let watch = {
            let members: Api<MemberCluster> = Api::all(hub.clone());
            let not_ready = not_ready.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(m) = members.get("alpha").await
                        && !member_ready(&m)
                    {
                        let conditions = format!("{:?}", m.status.map(|s| s.conditions));
                        not_ready.lock().unwrap().push(conditions);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };

        // 1. The host clock jumps two minutes ahead while a job runs.
        submit(&hub, "jump").await;
        wait_job(&hub, "team-a", "jump", LONG, "jump to run", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Running)
        })
        .await
        .unwrap();
        pool.joined("alpha").unwrap().skew_clock(120).unwrap();
        succeeds_billed_as_it_ran(&hub, "jump").await;
        assert_eq!(
            scrape(metrics, "gpufed_agent_member_lease_lapsed_total").await,
            Some(0.0),
            "the lease never looked run out"
        );

        // 2. An agent that starts with its clock two minutes ahead measures the offset.
        pool.restart("alpha", "gpufed-agent").unwrap();
        offset_near(metrics, -120.0).await;
        submit(&hub, "ahead").await;
        succeeds_billed_as_it_ran(&hub, "ahead").await;

        // 3. And a host two minutes behind, the agent's and gpu-probe's clocks alike. gpu-probe
        // stamps its readings with its host's clock, so each reading's stamp says it is two
        // minutes old, beyond --telemetry-max-age; the agent ages a reading from when it saw it
        // arrive, so the GPUs stay offered (the member would offer none otherwise).
        pool.joined("alpha").unwrap().skew_clock(-120).unwrap();
        let restarted = k8s_openapi::jiff::Timestamp::now();
        pool.restart("alpha", "gpufed-agent").unwrap();
        offset_near(metrics, 120.0).await;
        offers_fresh_gpus_since(&hub, "alpha", restarted).await;
        submit(&hub, "behind").await;
        succeeds_billed_as_it_ran(&hub, "behind").await;
        assert_eq!(
            scrape(metrics, "gpufed_agent_member_lease_lapsed_total").await,
            Some(0.0)
        );

        watch.abort();
        let not_ready = not_ready.lock().unwrap().clone();
        assert!(
            not_ready.is_empty(),
            "alpha was not Ready on the hub: {not_ready:?}"
        );
    });
}
