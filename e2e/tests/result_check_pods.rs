//! Result checks by replication on real pods (ADR 0034): three members of one pool, each a real
//! node (kubelet, containerd, runc) with its agent and gpu-probe, joined as cluster owners join.
//! The tenant's job writes its result to `/dev/termination-log` from `$RESULT`, which each
//! member's image sets: beta (the cheapest, so the job lands there) runs an image that reports a
//! wrong result, alpha and gamma the right one. The hub replicates the succeeded job on alpha
//! (beta excluded), finds the two results differ, runs a referee on gamma (both excluded), and
//! resolves the dispute against beta from what the three containers really wrote. The pool says
//! nothing about disputes (`lostDisputes: Record`, the default): beta gets a `LostDispute`
//! warning Event and keeps its verification status untouched.
//!
//! The dispute's slashing on a chain is `result_check.rs` (anvil, test-written member status).
//!
//! Needs root and `make tools`, and `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::HUB_JOBS_NAMESPACE;
use gpufed_crds::{ComputeJob, ResultCheckPhase};
use gpufed_e2e::image::{BUSYBOX, Image};
use gpufed_e2e::joining::{MemberPlan, Pool, wait_ready_with_free};
use gpufed_e2e::wait::wait_until;
use gpufed_e2e::{NodeSpec, Tools, run_test};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

const HARD_DEADLINE: Duration = Duration::from_secs(480);
const LONG: Duration = Duration::from_secs(240);
const NS: &str = "tenant";

fn busybox() -> std::path::PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's busybox-static (make tools installs it)")
}

#[test]
fn a_wrong_result_on_real_pods_is_found_by_a_referee_run() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let plan = |name: &str, price: &str| {
            MemberPlan::new(name, vec![], "L4", price).real_node(NodeSpec::new(
                &format!("{name}-node"),
                "L4-24GB",
                2,
                "eu-west",
            ))
        };
        let pool = Pool::join(
            &tools,
            "30s",
            &[
                plan("beta", "0.50"),
                plan("alpha", "0.80"),
                plan("gamma", "0.90"),
            ],
        )
        .await
        .unwrap();
        let hub = pool.hub.client();
        for m in ["beta", "alpha", "gamma"] {
            wait_ready_with_free(&hub, m, 2, LONG).await.unwrap();
        }
        // The workload image as each provider runs it: beta's reports another result.
        for (member, result) in [
            ("beta", "sha256:bad"),
            ("alpha", "sha256:good"),
            ("gamma", "sha256:good"),
        ] {
            let image = Image::busybox(BUSYBOX, &busybox())
                .unwrap()
                .env(&format!("RESULT={result}"));
            pool.member(member)
                .unwrap()
                .real_node()
                .unwrap()
                .import(&image)
                .unwrap();
        }
        pool.hub.create_namespace(NS).await.unwrap();
        gpufed_e2e::joining::pool::apply(
            &hub,
            "computejobs",
            &json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
                    "metadata": {"name": "train", "namespace": NS},
                    "spec": {"replicas": 1, "gpusPerReplica": 1, "gpu": {"models": ["L4"]},
                             "maxPricePerGpuHour": "1.00", "maxDuration": "5m",
                             "resultCheck": {},
                             "template": {"containers": [{"name": "main", "image": BUSYBOX,
                                 "command": ["sh", "-c",
                                     "printf '%s' \"$RESULT\" > /dev/termination-log"]}]}}}),
        )
        .await
        .unwrap();

        let jobs: Api<ComputeJob> = Api::namespaced(hub.clone(), NS);
        let st = wait_until(LONG, "the dispute over train resolved", || {
            let jobs = jobs.clone();
            async move {
                let st = jobs.get("train").await.ok()?.status?.result_check?;
                assert!(
                    st.phase == ResultCheckPhase::Resolved || !st.phase.is_final(),
                    "{st:?}"
                );
                (st.phase == ResultCheckPhase::Resolved).then_some(st)
            }
        })
        .await
        .unwrap();
        let clusters: Vec<Option<&str>> = st.runs.iter().map(|r| r.cluster.as_deref()).collect();
        assert_eq!(clusters, vec![Some("beta"), Some("alpha"), Some("gamma")]);
        assert_eq!(st.loser.as_deref(), Some("beta"));
        let train = jobs.get("train").await.unwrap();
        let st_train = train.status.clone().unwrap();
        let cond = gpufed_crds::conditions::find(&st_train.conditions, "ResultVerified").unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "ResultContradicted")
        );
        // What the containers really wrote is the evidence.
        let cm = Api::<ConfigMap>::namespaced(hub.clone(), HUB_JOBS_NAMESPACE)
            .get(st.evidence.as_deref().unwrap())
            .await
            .unwrap();
        let record: serde_json::Value =
            serde_json::from_str(&cm.data.unwrap()["evidence.json"]).unwrap();
        let message = |i: usize| record["runs"][i]["result"]["messages"][0]["message"].clone();
        assert_eq!(message(0), "sha256:bad");
        assert_eq!(message(1), "sha256:good");
        assert_eq!(message(2), "sha256:good");
        // Each run is a job of the tenant's, and succeeded on its member.
        for run in ["train-replica", "train-referee"] {
            let j = jobs.get(run).await.unwrap();
            assert_eq!(
                j.owner_references()[0].uid,
                train.metadata.uid.clone().unwrap()
            );
        }

        // The pool records lost disputes only: an Event on beta, its verification untouched.
        let events: Api<Event> = Api::all(hub.clone());
        let lost = wait_until(LONG, "a LostDispute Event on beta", || {
            let events = events.clone();
            async move {
                let lp =
                    ListParams::default().fields("involvedObject.name=beta,reason=LostDispute");
                events.list(&lp).await.ok()?.items.into_iter().next()
            }
        })
        .await
        .unwrap();
        assert_eq!(lost.type_.as_deref(), Some("Warning"));
        assert!(
            lost.message.unwrap_or_default().contains("tenant/train"),
            "names the job"
        );
        let beta = Api::<gpufed_crds::MemberCluster>::all(hub.clone())
            .get("beta")
            .await
            .unwrap();
        assert!(beta.status.unwrap().verification.is_none());
    });
}
