//! `kubectl gpufed market`: the clearing-price index of each pool, per GPU model (ADR 0024) —
//! what the latest jobs paid per GPU-hour, beside the asks on offer now (the pool's capacity
//! roll-up), so a provider sees where its price stands and a tenant what a limit buys.

use gpufed_crds::{GpuPool, Strategy, TokenAmount};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::format::{NONE, age, or_none};
use crate::table::Table;

/// Placements shown in the `-o wide` history column, newest last.
const WIDE_HISTORY: usize = 8;

/// One pool and GPU model of the market; also the `-o json|yaml` output (a list of them).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MarketRow {
    /// The pool.
    pub pool: String,
    /// The pool's strategy (`Auction` clears at the next-lowest ask).
    pub strategy: String,
    /// GPU model.
    pub model: String,
    /// Lowest ask per GPU-hour among Ready members now.
    pub lowest_ask: Option<TokenAmount>,
    /// Highest ask per GPU-hour among Ready members now.
    pub highest_ask: Option<TokenAmount>,
    /// Free GPUs of the model now.
    pub free_gpus: u32,
    /// Price per GPU-hour of the latest placement.
    pub last: Option<TokenAmount>,
    /// GPU-weighted mean price over the placements kept.
    pub mean: Option<TokenAmount>,
    /// Placements kept in the index.
    pub placements: usize,
    /// When the latest placement was made.
    pub last_time: Option<Timestamp>,
    /// Prices of the placements kept, oldest first.
    pub history: Vec<TokenAmount>,
}

/// The market of `pools`, restricted to `pool` when given: one row per pool and model that has
/// either capacity or clearing prices, sorted by pool then model.
pub fn summarize(pools: &[GpuPool], pool: Option<&str>) -> Vec<MarketRow> {
    let mut rows: Vec<MarketRow> = vec![];
    for p in pools
        .iter()
        .filter(|p| pool.is_none_or(|w| w == p.name_any()))
    {
        let name = p.name_any();
        let strategy = strategy_name(p.spec.strategy).to_string();
        let status = p.status.clone().unwrap_or_default();
        let mut models: Vec<&str> = status
            .capacity
            .iter()
            .map(|c| c.model.as_str())
            .chain(status.clearing_prices.iter().map(|c| c.model.as_str()))
            .collect();
        models.sort_unstable();
        models.dedup();
        for model in models {
            let cap = status.capacity.iter().find(|c| c.model == model);
            let clearing = status.clearing_prices.iter().find(|c| c.model == model);
            let history: Vec<TokenAmount> = clearing
                .map(|c| c.history.iter().map(|h| h.price_per_gpu_hour).collect())
                .unwrap_or_default();
            rows.push(MarketRow {
                pool: name.clone(),
                strategy: strategy.clone(),
                model: model.to_string(),
                lowest_ask: cap.and_then(|c| c.min_price),
                highest_ask: cap.and_then(|c| c.max_price),
                free_gpus: cap.map_or(0, |c| c.free_gpus),
                last: clearing.map(|c| c.last),
                mean: clearing.map(|c| c.mean),
                placements: history.len(),
                last_time: clearing.and_then(|c| c.history.last()).map(|h| h.time.0),
                history,
            });
        }
    }
    rows
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::CheapestFit => "CheapestFit",
        Strategy::BinPack => "BinPack",
        Strategy::Spread => "Spread",
        Strategy::Auction => "Auction",
    }
}

/// The market as a table; `wide` adds the latest prices, oldest first.
pub fn render(rows: &[MarketRow], wide: bool, now: Timestamp) -> String {
    if rows.is_empty() {
        return "No GPU pools with capacity or placements found.\n".into();
    }
    let mut headers = vec![
        "pool",
        "strategy",
        "model",
        "lowest-ask",
        "highest-ask",
        "free",
        "last",
        "mean",
        "placements",
        "last-placed",
    ];
    if wide {
        headers.push("history");
    }
    let mut table = Table::new(&headers);
    for r in rows {
        let mut row = vec![
            r.pool.clone(),
            r.strategy.clone(),
            r.model.clone(),
            or_none(r.lowest_ask),
            or_none(r.highest_ask),
            r.free_gpus.to_string(),
            or_none(r.last),
            or_none(r.mean),
            r.placements.to_string(),
            r.last_time
                .map_or_else(|| NONE.to_string(), |t| age(t, now)),
        ];
        if wide {
            let skip = r.history.len().saturating_sub(WIDE_HISTORY);
            let shown: Vec<String> = r.history[skip..].iter().map(|p| p.to_string()).collect();
            row.push(if shown.is_empty() {
                NONE.to_string()
            } else {
                shown.join(" ")
            });
        }
        table.push(row);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ago, now, pool};
    use gpufed_crds::{ClearingPoint, ModelClearing};

    fn point(price: &str, secs: i64) -> ClearingPoint {
        ClearingPoint {
            time: ago(secs),
            price_per_gpu_hour: price.parse().unwrap(),
            gpus: 4,
            cluster: "alpha".into(),
            job: "team-a/train".into(),
            attempt: 1,
        }
    }

    fn auction_pool() -> GpuPool {
        let mut p = pool("default", &[("H100", 2, 16, 8, "2.00", "2.60", "2.30")]);
        p.spec.strategy = Strategy::Auction;
        if let Some(s) = p.status.as_mut() {
            s.clearing_prices = vec![
                ModelClearing {
                    model: "H100".into(),
                    last: "2.60".parse().unwrap(),
                    mean: "2.50".parse().unwrap(),
                    history: vec![point("2.40", 600), point("2.60", 120)],
                },
                ModelClearing {
                    model: "L4".into(),
                    last: "0.40".parse().unwrap(),
                    mean: "0.40".parse().unwrap(),
                    history: vec![point("0.40", 3600)],
                },
            ];
        }
        p
    }

    #[test]
    fn each_model_shows_the_asks_on_offer_beside_what_the_latest_jobs_paid() {
        let rows = summarize(&[auction_pool(), pool("other", &[])], Some("default"));
        assert_eq!(
            render(&rows, false, now()),
            "POOL     STRATEGY  MODEL  LOWEST-ASK  HIGHEST-ASK  FREE  LAST  MEAN  PLACEMENTS  LAST-PLACED\n\
             default  Auction   H100   2.00        2.60         8     2.60  2.50  2           2m\n\
             default  Auction   L4     <none>      <none>       0     0.40  0.40  1           60m\n"
        );
        let wide = render(&rows, true, now());
        assert!(
            wide.lines().nth(1).unwrap().ends_with("2.40 2.60"),
            "{wide}"
        );
    }

    #[test]
    fn a_pool_without_placements_shows_its_asks_and_no_prices_yet() {
        let rows = summarize(
            &[pool(
                "default",
                &[("A100", 1, 8, 8, "1.20", "1.20", "1.20")],
            )],
            None,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].last, None);
        assert!(
            render(&rows, true, now())
                .lines()
                .nth(1)
                .unwrap()
                .ends_with("<none>")
        );
        assert_eq!(
            render(&[], false, now()),
            "No GPU pools with capacity or placements found.\n"
        );
    }
}
