//! `kubectl gpufed authorise`: a payer lets the hub's settlement account lock up to an amount of
//! its deposit in a pool's JobEscrow until a time. The escrow refuses any lock the payer did not
//! authorise this way, so neither the escrow's admin nor a stolen settler key can spend a deposit
//! beyond it (docs/contracts.md, "Payer-authorised spending").
//!
//! The pool names the chain and the escrow (`spec.chain`) and the hub's account
//! (`status.settlementAccount`); the payer's key signs an EIP-712 `SpendingPermit`, which is sent
//! from the payer's account with `permitSpending`, or printed (`--sign-only`) for anyone to submit.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::ProviderBuilder;
use alloy::signers::Signer as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolStruct as _;

use crate::cli::AuthoriseArgs;
use crate::connect::Hub;
use crate::error::{Error, Result};
use crate::fetch;

alloy::sol! {
    #[sol(rpc)]
    interface IPermitEscrow {
        function nonces(address owner) external view returns (uint256);
        function token() external view returns (address);
        function permitSpending(address payer, address settler, uint256 amount, uint64 validUntil,
                                uint256 deadline, bytes signature) external;
        function spendingAllowance(address payer, address settler) external view
            returns (uint256 remaining, uint64 validUntil);
    }

    #[sol(rpc)]
    interface IDecimals {
        function decimals() external view returns (uint8);
    }

    /// JobEscrow's EIP-712 spending authorisation.
    struct SpendingPermit {
        address payer;
        address settler;
        uint256 amount;
        uint64 validUntil;
        uint256 nonce;
        uint256 deadline;
    }
}

/// How long a signed permit may wait before it is submitted.
const PERMIT_LIFETIME_SECS: u64 = 3600;

fn chain_err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Chain(format!("{what}: {e}"))
}

/// `amount` (18-decimal [`gpufed_crds::TokenAmount`]) in base units of a token with `decimals`,
/// rounded down.
pub fn base_units(amount: gpufed_crds::TokenAmount, decimals: u8) -> Result<U256> {
    let atto = U256::from(amount.atto());
    let d = i32::from(decimals) - gpufed_crds::units::TOKEN_DECIMALS as i32;
    let scale = U256::from(10u8).pow(U256::from(d.unsigned_abs()));
    if d >= 0 {
        atto.checked_mul(scale)
            .ok_or_else(|| Error::Chain("--amount is too large for the token".into()))
    } else {
        Ok(atto / scale)
    }
}

/// Runs `authorise` and returns what to print.
pub async fn run(hub: &Hub, args: &AuthoriseArgs) -> Result<String> {
    let pool = fetch::pool(hub, &args.pool)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "gpupool".into(),
            name: args.pool.clone(),
            namespace: None,
        })?;
    let chain = pool.spec.chain.as_ref().ok_or_else(|| {
        Error::Chain(format!(
            "gpupool {:?} has no spec.chain: its jobs are not paid through an escrow",
            args.pool
        ))
    })?;
    let settler = pool
        .status
        .as_ref()
        .and_then(|s| s.settlement_account.clone())
        .ok_or_else(|| {
            Error::Chain(format!(
                "gpupool {:?} shows no status.settlementAccount yet: the hub has not connected \
                 its chain (see its ChainReady condition)",
                args.pool
            ))
        })?;
    let settler = Address::from_str(&settler)
        .map_err(|e| chain_err("status.settlementAccount")(e.to_string()))?;
    let key = std::fs::read_to_string(&args.key_file).map_err(|e| {
        Error::Chain(format!(
            "cannot read --key-file {}: {e}",
            args.key_file.display()
        ))
    })?;
    let mut signer = PrivateKeySigner::from_str(key.trim()).map_err(|_| {
        Error::Chain(format!(
            "--key-file {} does not hold a hex private key",
            args.key_file.display()
        ))
    })?;
    signer.set_chain_id(Some(chain.chain_id));
    let payer = signer.address();
    let url = chain
        .rpc_url
        .parse()
        .map_err(|e| Error::Chain(format!("spec.chain.rpcUrl {:?}: {e}", chain.rpc_url)))?;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(url);
    let escrow_addr = Address::from(chain.escrow.to_bytes());
    let escrow = IPermitEscrow::new(escrow_addr, &provider);
    let token = IDecimals::new(Address::from(chain.token.to_bytes()), &provider);
    let decimals = token
        .decimals()
        .call()
        .await
        .map_err(|e| chain_err("reading the token's decimals")(e.to_string()))?;
    let amount = base_units(args.amount, decimals)?;
    let nonce = escrow
        .nonces(payer)
        .call()
        .await
        .map_err(|e| chain_err("reading the payer's permit nonce")(e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let valid_until = now + args.valid_for.as_secs_ceil();
    let deadline = now + PERMIT_LIFETIME_SECS;
    let permit = SpendingPermit {
        payer,
        settler,
        amount,
        validUntil: valid_until,
        nonce,
        deadline: U256::from(deadline),
    };
    let domain = alloy::sol_types::eip712_domain! {
        name: "GpuFed JobEscrow",
        version: "1",
        chain_id: chain.chain_id,
        verifying_contract: escrow_addr,
    };
    let hash = permit.eip712_signing_hash(&domain);
    let signature = signer
        .sign_hash(&hash)
        .await
        .map_err(|e| chain_err("signing the permit")(e.to_string()))?;
    let sig_hex = format!("0x{}", alloy::hex::encode(signature.as_bytes()));
    if args.sign_only {
        return Ok(format!(
            "payer:      {payer}\nsettler:    {settler}\namount:     {amount} (base units; {} tokens)\n\
             validUntil: {valid_until}\ndeadline:   {deadline}\nsignature:  {sig_hex}\n\
             submit (any account): cast send {escrow_addr} \
             'permitSpending(address,address,uint256,uint64,uint256,bytes)' \
             {payer} {settler} {amount} {valid_until} {deadline} {sig_hex} --rpc-url {}\n",
            args.amount, chain.rpc_url
        ));
    }
    let sig_bytes = Bytes::from(signature.as_bytes().to_vec());
    let pending = escrow
        .permitSpending(
            payer,
            settler,
            amount,
            valid_until,
            U256::from(deadline),
            sig_bytes,
        )
        .send()
        .await
        .map_err(|e| chain_err("sending permitSpending")(e.to_string()))?;
    let receipt = pending
        .get_receipt()
        .await
        .map_err(|e| chain_err("waiting for permitSpending")(e.to_string()))?;
    if !receipt.status() {
        return Err(Error::Chain(format!(
            "permitSpending {} reverted",
            receipt.transaction_hash
        )));
    }
    let now_allowed = escrow
        .spendingAllowance(payer, settler)
        .call()
        .await
        .map_err(|e| chain_err("reading the authorisation back")(e.to_string()))?;
    Ok(format!(
        "authorised {settler} (pool {}) to lock up to {} of {payer}'s deposit until unix time {} \
         ({} base units left; tx {})\n",
        args.pool,
        args.amount,
        now_allowed.validUntil,
        now_allowed.remaining,
        receipt.transaction_hash
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_sent_in_the_tokens_base_units() {
        let a: gpufed_crds::TokenAmount = "12.5".parse().unwrap();
        assert_eq!(base_units(a, 18).unwrap(), U256::from(a.atto()));
        assert_eq!(base_units(a, 6).unwrap(), U256::from(12_500_000u64));
        assert_eq!(
            base_units(a, 20).unwrap(),
            U256::from(a.atto()) * U256::from(100u8)
        );
    }
}
