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
        // The spec is the agent's; the status (the hub's verdict) the hub's alone.
        let managers: Vec<(String, Option<String>)> = offer
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| Some((m.manager?, m.subresource)))
            .collect();
        assert!(
            managers
                .iter()
                .all(
                    |(who, sub)| (who.as_str(), sub.as_deref()) == ("gpufed-agent", None)
                        || (who.as_str(), sub.as_deref()) == ("gpufed-hub", Some("status"))
                ),
            "{managers:?}"
        );
        assert!(managers.contains(&("gpufed-agent".to_string(), None)));

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

/// In a pool that pays on a chain (real anvil, contracts deployed), the agent started with the
/// wallet's key file (the chart's `offer.signingKeySecret`) signs its Offer in the domain the hub
/// publishes, and the hub accepts it and prices the member by it.
#[test]
fn the_agent_signs_its_offer_with_the_wallet_key_and_the_hub_accepts_it() {
    use gpufed_e2e::chain::{Chain, accounts};
    use gpufed_e2e::demo::{join_paying_pool, pool_spec};

    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (chain, contracts) = Chain::start_deployed(&tools, dir.path(), 250, 10_000, 500, 200)
            .await
            .unwrap();
        let pool = join_paying_pool(
            &tools,
            pool_spec(&chain, &contracts, "30s"),
            &[MemberPlan::new(
                "alpha",
                vec![NodeSpec::new("alpha-h100-0", "H100-SXM-80GB", 8, "eu-west")],
                "H100",
                "2.40",
            )
            .wallet(accounts::ALPHA.1)
            .offer("H100", "1.10")
            .offer_signing_key(accounts::ALPHA.0)],
        )
        .await
        .unwrap();
        let admin = pool.hub.client();
        let offers: Api<Offer> = Api::namespaced(admin.clone(), &member_namespace("alpha"));
        let offer = wait_until(T, "alpha's signed Offer accepted", || async {
            let o = offers.get_opt("offer").await.ok()??;
            let accepted = o
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "True");
            (accepted && o.spec.signature.is_some()).then_some(o)
        })
        .await
        .unwrap();
        let accepted = offer.status.unwrap().accepted.unwrap();
        assert_eq!(
            accepted.signer.as_ref().map(|s| s.as_str().to_string()),
            Some(accounts::ALPHA.1.to_lowercase())
        );
        assert_eq!(accepted.nonce, offer.spec.nonce);
        assert_eq!(accepted.signature, offer.spec.signature);
        // Valid for the chart's default of a day.
        let ttl = offer.spec.expires.unwrap().0.as_second()
            - k8s_openapi::jiff::Timestamp::now().as_second();
        assert!((23 * 3600..=24 * 3600).contains(&ttl), "{ttl}");
        let pools: Api<GpuPool> = Api::all(admin.clone());
        wait_until(
            T,
            "the pool prices H100 at alpha's signed offer",
            || async {
                let p = pools.get("default").await.ok()?;
                let cap = p.status?.capacity.into_iter().find(|m| m.model == "H100")?;
                (cap.min_price?.to_string() == "1.10").then_some(())
            },
        )
        .await
        .unwrap();
        drop(chain);
    });
}
