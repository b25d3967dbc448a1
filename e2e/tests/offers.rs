//! A provider publishes its own prices (ADR 0024) through the member agent, with the agent's own
//! hub credential: a member joined with real apiservers (hub and kwok member) and a real agent
//! started with `--offer H100=1.10` (the member chart's `offer.prices`) publishes the Offer
//! `offer` in its member namespace, and the hub prices it by that Offer rather than the admin's
//! `spec.prices` of 2.40, which stays as the admin wrote it.
//!
//! Needs `cargo build --bins` first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_crds::naming::member_namespace;
use gpufed_crds::{GpuPool, MemberCluster, Offer};
use gpufed_e2e::joining::{MemberPlan, Pool, member_ready};
use gpufed_e2e::{NodeSpec, Tools, run_test, wait_until};
use kube::api::Api;

const HARD_DEADLINE: Duration = Duration::from_secs(300);
const T: Duration = Duration::from_secs(120);

#[test]
fn the_agent_publishes_the_owners_offer_and_the_hub_prices_the_member_by_it() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let pool = Pool::join(
            &tools,
            "30s",
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "2.40",
            )
            .offer("H100", "1.10")],
        )
        .await
        .unwrap();
        let admin = pool.hub.client();
        let members: Api<MemberCluster> = Api::all(admin.clone());
        wait_until(T, "alpha Ready", || async {
            members.get("alpha").await.ok().filter(member_ready)
        })
        .await
        .unwrap();

        // The agent wrote the Offer, as its own field manager, in its own namespace.
        let offers: Api<Offer> = Api::namespaced(admin.clone(), &member_namespace("alpha"));
        let offer = wait_until(T, "alpha's Offer", || async {
            offers.get_opt("offer").await.ok()?
        })
        .await
        .unwrap();
        let prices: Vec<(String, String)> = offer
            .spec
            .prices
            .iter()
            .map(|p| (p.model.clone(), p.price_per_gpu_hour.to_string()))
            .collect();
        assert_eq!(prices, [("H100".to_string(), "1.10".to_string())]);
        let managers: Vec<String> = offer
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(managers, ["gpufed-agent"]);

        // The hub prices alpha by its Offer, not by the admin's 2.40.
        let pools: Api<GpuPool> = Api::all(admin.clone());
        let min_price = || async {
            let p = pools.get("default").await.ok()?;
            let cap = p.status?.capacity.into_iter().find(|m| m.model == "H100")?;
            Some(cap.min_price?.to_string())
        };
        wait_until(T, "the pool prices H100 at alpha's offer", || async {
            (min_price().await? == "1.10").then_some(())
        })
        .await
        .unwrap();
        assert_eq!(
            members.get("alpha").await.unwrap().spec.prices[0]
                .price_per_gpu_hour
                .to_string(),
            "2.40",
            "the admin's price is untouched"
        );
    });
}
