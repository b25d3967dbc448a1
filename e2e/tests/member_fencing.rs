//! Fencing, against real apiservers: an agent cut off from the hub (a network partition: a proxy
//! between agent and hub stops forwarding while the hub keeps running) stops its running local
//! Jobs while the hub still counts the member as Ready — that is, before the pool's heartbeat
//! timeout lets the hub give the work to someone else — keeps finished ones, and once it reaches
//! the hub again reports the stopped Placement `Failed`/`Fenced` instead of running it again.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::{local_job_name, member_namespace, placement_name};
use gpufed_crds::{MemberCluster, Placement, PlacementPhase};
use gpufed_e2e::joining::{
    JOBS_NAMESPACE, MemberPlan, Pool, member_ready, placement_phase, scrape,
};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Longest this test may take, start-up of the clusters included: past it the test fails, its
/// components are killed and their logs printed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(300);

const WAIT: Duration = Duration::from_secs(60);

fn placement(job: &str, seconds: u32) -> Placement {
    let uid = format!("uid-{job}");
    serde_json::from_value(json!({
        "apiVersion": "gpufed.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": placement_name(&uid, 1), "namespace": member_namespace("alpha")},
        "spec": {
            "job": {"uid": uid}, "attempt": 1, "cluster": "alpha",
            "replicas": 1, "gpusPerReplica": 2, "totalGpus": 2, "model": "H100",
            "pricePerGpuHour": "2.40", "maxDuration": "1h",
            "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                "env": [{"name": "GPUFED_SIM_DURATION", "value": format!("{seconds}s")}]}]}
        }
    }))
    .unwrap()
}

async fn wait_phase(api: &Api<Placement>, name: &str, want: PlacementPhase) -> Placement {
    wait_until(WAIT, &format!("Placement {name} {want:?}"), || {
        let api = api.clone();
        let name = name.to_string();
        async move {
            api.get(&name)
                .await
                .ok()
                .filter(|p| placement_phase(p).0 == Some(want))
        }
    })
    .await
    .unwrap()
}

#[test]
fn an_agent_cut_off_from_the_hub_stops_its_jobs_before_the_hub_gives_up_on_it() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        // Pool heartbeat timeout 18 s: the agent fences after 12 s without a heartbeat.
        let pool = Pool::join(
            &tools,
            "18s",
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "2.40",
            )
            .via_proxy()],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        let joined = pool.joined("alpha").unwrap();
        let proxy = joined.proxy.as_ref().unwrap();
        let members: Api<MemberCluster> = Api::all(hub.clone());
        wait_until(
            Duration::from_secs(120),
            "alpha Ready with an inventory",
            || {
                let members = members.clone();
                async move {
                    let m = members.get("alpha").await.ok()?;
                    (member_ready(&m) && m.status?.total_gpus == 8).then_some(())
                }
            },
        )
        .await
        .unwrap();
        // The agent has learnt the pool's timeout from the hub.
        wait_until(WAIT, "the agent's fence timeout to be 12 s", || async {
            (scrape(joined.agent_metrics, "gpufed_agent_fence_timeout_seconds").await? == 12.0)
                .then_some(())
        })
        .await
        .unwrap();

        let placements: Api<Placement> = Api::namespaced(hub.clone(), &member_namespace("alpha"));
        let alpha = pool.member("alpha").unwrap().client();
        let jobs: Api<Job> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let (long, short) = (placement("long", 600), placement("short", 1));
        let (long_name, short_name) = (
            long.metadata.name.clone().unwrap(),
            short.metadata.name.clone().unwrap(),
        );
        placements
            .create(&PostParams::default(), &short)
            .await
            .unwrap();
        placements
            .create(&PostParams::default(), &long)
            .await
            .unwrap();
        wait_phase(&placements, &short_name, PlacementPhase::Succeeded).await;
        let running = wait_phase(&placements, &long_name, PlacementPhase::Running).await;
        let long_job = local_job_name("uid-long", 1);
        assert!(jobs.get_opt(&long_job).await.unwrap().is_some());

        // Partition: the agent cannot reach the hub; the hub and the member cluster keep running.
        proxy.cut();
        wait_until(WAIT, "the running local Job to be stopped", || {
            let jobs = jobs.clone();
            let long_job = long_job.clone();
            async move { jobs.get_opt(&long_job).await.ok()?.is_none().then_some(()) }
        })
        .await
        .unwrap();
        // The hub still counts alpha as Ready: the pool's heartbeat timeout has not run out, so the hub
        // has not yet lost the attempt and given it to another member — the member stopped first.
        let seen_by_hub = members.get("alpha").await.unwrap();
        assert!(
            member_ready(&seen_by_hub),
            "{:?}",
            seen_by_hub.status.map(|s| s.conditions)
        );
        // The finished Job is kept (it holds no GPUs), and the owner sees why the other one went.
        assert!(
            jobs.get_opt(&local_job_name("uid-short", 1))
                .await
                .unwrap()
                .is_some()
        );
        let events: Api<Event> = Api::namespaced(alpha.clone(), JOBS_NAMESPACE);
        let fenced_events = events.list(&ListParams::default()).await.unwrap().items;
        assert!(
            fenced_events
                .iter()
                .any(|e| e.reason.as_deref() == Some("Fenced")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(long_job.as_str())),
            "{fenced_events:?}"
        );
        assert_eq!(
            scrape(joined.agent_metrics, "gpufed_agent_fenced_total").await,
            Some(1.0)
        );

        // The partition heals: the stopped Placement is reported Fenced (the hub retries it elsewhere)
        // with the usage reported before, and is not run again here.
        proxy.restore();
        let fenced = wait_phase(&placements, &long_name, PlacementPhase::Failed).await;
        let st = fenced.status.unwrap();
        assert_eq!(st.reason.as_deref(), Some("Fenced"));
        assert!(st.gpu_seconds >= running.status.unwrap().gpu_seconds);
        assert!(st.finish_time.is_some());
        wait_until(WAIT, "alpha Ready again", || {
            let members = members.clone();
            async move { members.get("alpha").await.ok().filter(member_ready) }
        })
        .await
        .unwrap();
        assert!(
            jobs.get_opt(&long_job).await.unwrap().is_none(),
            "a fenced placement is never re-run"
        );
        let short_after = placements.get(&short_name).await.unwrap();
        assert_eq!(
            placement_phase(&short_after).0,
            Some(PlacementPhase::Succeeded)
        );
    });
}
