//! Publishes the provider's own prices (ADR 0024): the agent applies the `Offer` named `offer` in
//! its member namespace on the hub from `--offer MODEL=PRICE` (the member chart's `offer.prices`),
//! with its own hub credential. Without `--offer` it publishes nothing and the admin's
//! `MemberCluster.spec.prices` apply. It applies again every [`REPUBLISH_EVERY`], so an Offer that
//! was deleted or edited by hand comes back as the owner's values say.

use std::time::Duration;

use gpufed_crds::naming::member_namespace;
use gpufed_crds::{ModelPrice, OFFER_NAME, Offer};
use kube::api::{Api, Patch, PatchParams};

use crate::agent::api::{API_TIMEOUT, FIELD_MANAGER, timed};
use crate::error::{Error, Result};

/// How often the Offer is applied again while the agent runs.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(60);

/// Parses one `--offer` value, `MODEL=PRICE` (e.g. `H100=2.40`).
pub fn parse_offer(text: &str) -> std::result::Result<ModelPrice, String> {
    let (model, price) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected MODEL=PRICE, e.g. H100=2.40"))?;
    let valid_model = !model.is_empty()
        && model.len() <= 64
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && model.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_model {
        return Err(format!(
            "{text:?}: {model:?} is not a GPU model name such as H100"
        ));
    }
    let price = price
        .parse()
        .map_err(|e| format!("{text:?}: price per GPU-hour: {e}"))?;
    Ok(ModelPrice {
        model: model.to_string(),
        price_per_gpu_hour: price,
    })
}

/// The server-side apply body of member `cluster`'s Offer of `prices`.
pub fn apply_body(cluster: &str, prices: &[ModelPrice]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "gpufed.io/v1alpha1",
        "kind": "Offer",
        "metadata": {"name": OFFER_NAME, "namespace": member_namespace(cluster)},
        "spec": {"prices": prices},
    })
}

/// Applies the Offer once.
pub async fn publish(hub: &kube::Client, cluster: &str, prices: &[ModelPrice]) -> Result<()> {
    let api: Api<Offer> = Api::namespaced(hub.clone(), &member_namespace(cluster));
    timed(
        "applying the Offer",
        API_TIMEOUT,
        api.patch(
            OFFER_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(apply_body(cluster, prices)),
        ),
    )
    .await
    .map(|_| ())
}

/// Applies the Offer now and every [`REPUBLISH_EVERY`]; nothing without `prices`.
pub async fn run(hub: kube::Client, cluster: String, prices: Vec<ModelPrice>) {
    if prices.is_empty() {
        return;
    }
    loop {
        match publish(&hub, &cluster, &prices).await {
            Ok(()) => tracing::debug!(models = prices.len(), "offer published"),
            Err(Error::Kube { source, .. }) if is_invalid(&source) => {
                // The hub's schema refused it: retrying the same values cannot help.
                tracing::error!(error = %source, "the hub refused the offer; fix offer.prices");
            }
            Err(e) => tracing::warn!(error = %e, "publishing the offer; retrying"),
        }
        tokio::time::sleep(REPUBLISH_EVERY).await;
    }
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_values_parse_as_model_and_exact_price() {
        let p = parse_offer("H100=2.40").unwrap();
        assert_eq!(
            (p.model.as_str(), p.price_per_gpu_hour.to_string().as_str()),
            ("H100", "2.40")
        );
        for bad in [
            "H100",
            "=2.40",
            "H100=",
            "H100=-1",
            "H 100=2.40",
            "H100=2,40",
        ] {
            assert!(parse_offer(bad).is_err(), "{bad}");
        }
        assert!(parse_offer("H100").unwrap_err().contains("MODEL=PRICE"));
    }

    #[test]
    fn the_offer_is_named_offer_in_the_members_own_namespace() {
        let body = apply_body("alpha", &[parse_offer("L4=0.35").unwrap()]);
        assert_eq!(body["metadata"]["namespace"], "gpufed-member-alpha");
        assert_eq!(body["metadata"]["name"], "offer");
        assert_eq!(
            body["spec"]["prices"],
            serde_json::json!([{"model": "L4", "pricePerGpuHour": "0.35"}])
        );
    }
}
