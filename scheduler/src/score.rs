//! Ranking of the (cluster, model) pairs that fit a job, per the pool's [`Strategy`].
//!
//! Each candidate gets a [`ScoreKey`]; the smallest key wins. Keys end with the cluster's
//! position in the name-sorted index and the model id (ids follow model names), so every tie is
//! broken by cluster name and then model name, never by input order.

use crate::input::Strategy;

/// Sort key of a candidate: smaller is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ScoreKey(u128, u128, usize, u32);

impl ScoreKey {
    /// The key of placing `need` GPUs on a cluster (position `cluster`) whose model `model` costs
    /// `price` and has `free` free GPUs (`free >= need`).
    pub(crate) fn new(
        strategy: Strategy,
        price: u128,
        free: u64,
        need: u64,
        cluster: usize,
        model: u32,
    ) -> ScoreKey {
        let after = u128::from(free.saturating_sub(need));
        let free = u128::from(free);
        let most = u128::from(u64::MAX);
        match strategy {
            Strategy::CheapestFit | Strategy::Auction => {
                ScoreKey(price, most - free, cluster, model)
            }
            Strategy::BinPack => ScoreKey(after, price, cluster, model),
            Strategy::Spread => ScoreKey(most - after, price, cluster, model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(strategy: Strategy, candidates: &[(u128, u64, usize)]) -> usize {
        candidates
            .iter()
            .map(|&(price, free, pos)| (ScoreKey::new(strategy, price, free, 4, pos, 0), pos))
            .min()
            .map(|(_, pos)| pos)
            .unwrap()
    }

    #[test]
    fn cheapest_fit_prefers_price_then_more_free_gpus_then_name() {
        let s = Strategy::CheapestFit;
        assert_eq!(best(s, &[(300, 64, 0), (200, 4, 1)]), 1);
        assert_eq!(best(s, &[(200, 8, 0), (200, 16, 1)]), 1);
        assert_eq!(best(s, &[(200, 8, 1), (200, 8, 0)]), 0);
    }

    #[test]
    fn bin_pack_prefers_fewest_gpus_left_then_price_then_name() {
        let s = Strategy::BinPack;
        assert_eq!(best(s, &[(100, 64, 0), (900, 4, 1)]), 1);
        assert_eq!(best(s, &[(300, 8, 0), (200, 8, 1)]), 1);
        assert_eq!(best(s, &[(200, 8, 1), (200, 8, 0)]), 0);
    }

    #[test]
    fn spread_prefers_most_gpus_left_then_price_then_name() {
        let s = Strategy::Spread;
        assert_eq!(best(s, &[(100, 8, 0), (900, 64, 1)]), 1);
        assert_eq!(best(s, &[(300, 8, 0), (200, 8, 1)]), 1);
        assert_eq!(best(s, &[(200, 8, 1), (200, 8, 0)]), 0);
    }

    #[test]
    fn ties_on_one_cluster_go_to_the_model_with_the_smaller_id() {
        let a = ScoreKey::new(Strategy::CheapestFit, 5, 8, 4, 0, 1);
        let b = ScoreKey::new(Strategy::CheapestFit, 5, 8, 4, 0, 0);
        assert!(b < a);
    }
}
