//! Who a slash compensates, and with how much (ADR 0023): the tokens of a slash go to the tenants
//! whose attempts ran on the slashed member in the evidence's window, in proportion to what each
//! paid for them; rounding goes to the treasury (the contract sends it whatever the shares leave).
//! The result feeds [`SlashProposal::tenants`](crate::hub::chain::SlashProposal).

use std::collections::BTreeMap;

use alloy::primitives::U256;
use gpufed_crds::{EvmAddress, TokenAmount};

/// Most tenants one slash can name (`ProviderBond.MAX_TENANTS`).
pub const MAX_TENANTS: usize = 64;

/// Splits `amount` between the payers in `harmed` (payer, what it paid on the slashed member in
/// the window; a payer may appear several times, once per attempt) in proportion to what each paid,
/// rounded down to the atto-token. Payers who paid nothing get nothing and are not named. When more
/// than [`MAX_TENANTS`] payers were harmed, the [`MAX_TENANTS`] who paid most are compensated (ties
/// by address) and the others' part goes to the treasury. Sorted by address; the shares never add
/// up to more than `amount`.
pub fn tenant_shares(
    amount: TokenAmount,
    harmed: &[(EvmAddress, TokenAmount)],
) -> Vec<(EvmAddress, TokenAmount)> {
    let mut paid: BTreeMap<EvmAddress, U256> = BTreeMap::new();
    for (payer, p) in harmed {
        if p.atto() > 0 {
            *paid.entry(payer.clone()).or_default() += U256::from(p.atto());
        }
    }
    let mut payers: Vec<(EvmAddress, U256)> = paid.into_iter().collect();
    if payers.len() > MAX_TENANTS {
        payers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        payers.truncate(MAX_TENANTS);
        payers.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let total: U256 = payers.iter().map(|(_, p)| *p).sum();
    if total.is_zero() {
        return vec![];
    }
    let amount_atto = U256::from(amount.atto());
    payers
        .into_iter()
        .map(|(payer, p)| {
            // floor(amount × p / total) ≤ amount < 2^128.
            let share = amount_atto * p / total;
            let share = u128::try_from(share).unwrap_or(amount.atto());
            (payer, TokenAmount::from_atto(share))
        })
        .filter(|(_, s)| s.atto() > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn addr(i: u8) -> EvmAddress {
        EvmAddress::from_str(&format!("0x{:040x}", u32::from(i) + 1)).unwrap()
    }

    fn tok(s: &str) -> TokenAmount {
        s.parse().unwrap()
    }

    #[test]
    fn shares_follow_what_each_payer_paid_and_repeat_payers_are_summed() {
        let s = tenant_shares(
            tok("30"),
            &[
                (addr(1), tok("1")),
                (addr(2), tok("1")),
                (addr(1), tok("1")),
            ],
        );
        assert_eq!(s, vec![(addr(1), tok("20")), (addr(2), tok("10"))]);
    }

    #[test]
    fn nobody_paid_means_everything_to_the_treasury() {
        assert!(tenant_shares(tok("5"), &[]).is_empty());
        assert!(tenant_shares(tok("5"), &[(addr(1), TokenAmount::ZERO)]).is_empty());
    }

    #[test]
    fn rounding_stays_with_the_treasury() {
        let s = tenant_shares(
            TokenAmount::from_atto(10),
            &[
                (addr(1), tok("1")),
                (addr(2), tok("1")),
                (addr(3), tok("1")),
            ],
        );
        let sum: u128 = s.iter().map(|(_, a)| a.atto()).sum();
        assert_eq!(sum, 9);
    }

    #[test]
    fn at_most_64_payers_and_the_largest_ones() {
        let harmed: Vec<(EvmAddress, TokenAmount)> = (0..70)
            .map(|i| (addr(i), TokenAmount::from_atto(1000 + u128::from(i))))
            .collect();
        let s = tenant_shares(tok("100"), &harmed);
        assert_eq!(s.len(), MAX_TENANTS);
        assert!(!s.iter().any(|(a, _)| *a == addr(0) || *a == addr(5)));
        assert!(s.iter().any(|(a, _)| *a == addr(69)));
    }

    proptest! {
        #[test]
        fn shares_never_exceed_the_amount_and_lose_less_than_one_atto_per_payer(
            amount in 0u128..u128::MAX / 2,
            paid in prop::collection::vec((0u8..80, 0u128..u128::MAX / 128), 0..90),
        ) {
            let harmed: Vec<(EvmAddress, TokenAmount)> =
                paid.iter().map(|(i, p)| (addr(*i), TokenAmount::from_atto(*p))).collect();
            let s = tenant_shares(TokenAmount::from_atto(amount), &harmed);
            prop_assert!(s.len() <= MAX_TENANTS);
            let sum: u128 = s.iter().map(|(_, a)| a.atto()).sum();
            prop_assert!(sum <= amount);
            let payers: std::collections::BTreeSet<_> =
                harmed.iter().filter(|(_, p)| p.atto() > 0).map(|(a, _)| a.clone()).collect();
            if payers.len() <= MAX_TENANTS && !payers.is_empty() {
                prop_assert!(amount - sum < payers.len() as u128 + 1);
            }
            let mut sorted = s.clone();
            sorted.sort();
            sorted.dedup_by(|a, b| a.0 == b.0);
            prop_assert_eq!(sorted.len(), s.len(), "each payer once");
        }
    }
}
