//! The hub's view of a pool's chain, with alloy: typed bindings of the JobEscrow and ProviderBond
//! functions the hub uses (`sol!` interfaces matching `docs/contracts.md`, "ABI used by the hub"),
//! and a client that signs with the hub's settlement key (read from a Secret, never logged).
//!
//! Every call has a timeout; transactions from one hub go through one signer whose nonces alloy
//! caches, and are sent one at a time per chain so concurrent reconciles never race on a nonce.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use gpufed_crds::{ChainSpec, EvmAddress, TokenAmount};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

alloy::sol! {
    /// The JobEscrow functions, events and errors the hub uses.
    #[sol(rpc)]
    interface IJobEscrow {
        function deposits(address payer) external view returns (uint256);
        function feeBps() external view returns (uint16);
        function lock(bytes32 jobId, address payer, address provider, uint256 amount, uint64 deadline) external;
        function settle(bytes32 jobId, uint256 paid) external;
        function settleBatch(bytes32[] jobIds, uint256[] paid) external;
        function getLock(bytes32 jobId) external view
            returns (address payer, address provider, uint128 amount, uint64 deadline, uint8 state);
        function lockFeeBps(bytes32 jobId) external view returns (uint16);

        event Locked(bytes32 indexed jobId, address indexed payer, address indexed provider,
                     uint256 amount, uint64 deadline, uint16 feeBps);
        event Settled(bytes32 indexed jobId, address indexed payer, address indexed provider,
                      uint256 paid, uint256 fee, uint256 refund);
        event Expired(bytes32 indexed jobId, address indexed payer, uint256 amount);

        error InsufficientDeposit(address payer, uint256 available, uint256 required);
        error JobAlreadyExists(bytes32 jobId);
        error LockNotActive(bytes32 jobId, uint8 state);
        error PaidExceedsLocked(bytes32 jobId, uint256 paid, uint256 locked);
    }

    /// The ProviderBond functions and events the hub uses.
    #[sol(rpc)]
    interface IProviderBond {
        function bondOf(address provider) external view
            returns (uint256 bonded, uint256 unbonding, uint64 unbondingReleaseAt, uint256 slashedTotal);
        event Slashed(address indexed provider, uint256 amount, bytes32 indexed evidenceHash);
    }
}

/// Lock states of JobEscrow (`STATE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No lock under this id.
    None,
    /// Funds locked.
    Locked,
    /// Settled (paid and refunded).
    Settled,
    /// Expired by the payer.
    Expired,
}

/// A lock as the chain has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// State.
    pub state: LockState,
    /// Amount locked.
    pub amount: TokenAmount,
}

/// What a `Settled` event recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettledInfo {
    /// Paid for usage (provider share plus fee).
    pub paid: TokenAmount,
    /// Pool fee.
    pub fee: TokenAmount,
    /// Refunded to the payer's deposit.
    pub refund: TokenAmount,
    /// Transaction hash.
    pub tx: String,
}

/// A provider's bond as the chain has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BondInfo {
    /// Staked and not unbonding.
    pub bonded: TokenAmount,
    /// Waiting out the unbonding delay.
    pub unbonding: TokenAmount,
    /// When unbonding tokens can be withdrawn (unix seconds, 0 if none).
    pub unbonding_release_at: u64,
    /// Slashed in total.
    pub slashed_total: TokenAmount,
}

/// One slash event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashEvent {
    /// Tokens slashed.
    pub amount: TokenAmount,
    /// Evidence hash (0x-hex).
    pub evidence_hash: String,
    /// Transaction hash.
    pub tx: String,
    /// Block number.
    pub block: u64,
}

/// Why a lock was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockRefused {
    /// The payer's free deposit is too small.
    InsufficientDeposit {
        /// Deposited and free.
        available: TokenAmount,
        /// Needed.
        required: TokenAmount,
    },
}

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn u256(a: TokenAmount) -> U256 {
    U256::from(a.atto())
}

fn amount(v: U256) -> TokenAmount {
    TokenAmount::from_atto(u128::try_from(v).unwrap_or(u128::MAX))
}

fn address(a: &EvmAddress) -> Address {
    Address::from(a.to_bytes())
}

/// A 0x-hex 32-byte id as bytes.
pub fn job_id(hex: &str) -> Result<B256> {
    B256::from_str(hex).map_err(|e| Error::Invalid {
        what: "chain job id".into(),
        detail: format!("{hex}: {e}"),
    })
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::IntoFuture<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut.into_future()).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Chain(format!("{what}: {e}"))),
        Err(_) => Err(Error::Chain(format!(
            "{what}: no answer from the RPC within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// A signing client for one pool's chain.
pub struct ChainClient {
    provider: DynProvider,
    escrow: Address,
    bond: Option<Address>,
    /// Serialises transactions of this hub on this chain.
    send_lock: Mutex<()>,
    /// The settlement account (public address only).
    pub hub_account: Address,
}

impl std::fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClient")
            .field("escrow", &self.escrow)
            .field("hub_account", &self.hub_account)
            .finish_non_exhaustive()
    }
}

impl ChainClient {
    /// Connects to `spec.rpcUrl` signing with `key_hex` (a 0x-prefixed or bare hex private key).
    pub fn new(spec: &ChainSpec, key_hex: &str) -> Result<Arc<ChainClient>> {
        let mut signer = PrivateKeySigner::from_str(key_hex.trim()).map_err(|_| {
            Error::Config("the hub key Secret does not hold a valid hex private key".into())
        })?;
        alloy::signers::Signer::set_chain_id(&mut signer, Some(spec.chain_id));
        let hub_account = signer.address();
        let url = spec
            .rpc_url
            .parse()
            .map_err(|e| Error::Config(format!("spec.chain.rpcUrl {:?}: {e}", spec.rpc_url)))?;
        let provider = ProviderBuilder::new()
            .with_cached_nonce_management()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url)
            .erased();
        Ok(Arc::new(ChainClient {
            provider,
            escrow: address(&spec.escrow),
            bond: spec.bond.as_ref().map(address),
            send_lock: Mutex::new(()),
            hub_account,
        }))
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64> {
        timed("reading the block number", self.provider.get_block_number()).await
    }

    /// The payer's free deposit in the escrow.
    pub async fn deposit_of(&self, payer: &EvmAddress) -> Result<TokenAmount> {
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let v = timed("reading a deposit", escrow.deposits(address(payer)).call()).await?;
        Ok(amount(v))
    }

    /// The lock under `id`.
    pub async fn get_lock(&self, id: B256) -> Result<LockInfo> {
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let l = timed("reading a lock", escrow.getLock(id).call()).await?;
        let state = match l.state {
            0 => LockState::None,
            1 => LockState::Locked,
            2 => LockState::Settled,
            3 => LockState::Expired,
            other => return Err(Error::Chain(format!("unknown lock state {other}"))),
        };
        Ok(LockInfo {
            state,
            amount: TokenAmount::from_atto(l.amount),
        })
    }

    /// Locks `amount` of `payer`'s deposit for `provider` under `id` until `deadline` (unix seconds).
    /// Returns the transaction hash, or why the escrow refused.
    pub async fn lock(
        &self,
        id: B256,
        payer: &EvmAddress,
        provider: &EvmAddress,
        amount_: TokenAmount,
        deadline: u64,
    ) -> Result<std::result::Result<String, LockRefused>> {
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let _guard = self.send_lock.lock().await;
        let call = escrow.lock(
            id,
            address(payer),
            address(provider),
            u256(amount_),
            deadline,
        );
        let pending = match timed("sending a lock", call.send()).await {
            Ok(p) => p,
            Err(e) => {
                // Insufficient deposit shows up as a revert when the transaction is estimated.
                let deposit = self.deposit_of(payer).await?;
                if deposit < amount_ {
                    return Ok(Err(LockRefused::InsufficientDeposit {
                        available: deposit,
                        required: amount_,
                    }));
                }
                return Err(e);
            }
        };
        let receipt = timed("waiting for the lock receipt", pending.get_receipt()).await?;
        if !receipt.status() {
            return Err(Error::Chain(format!(
                "lock transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(Ok(receipt.transaction_hash.to_string()))
    }

    /// Settles several locks in one transaction. Returns the transaction hash.
    pub async fn settle_batch(&self, items: &[(B256, TokenAmount)]) -> Result<String> {
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let ids: Vec<B256> = items.iter().map(|(id, _)| *id).collect();
        let paid: Vec<U256> = items.iter().map(|(_, p)| u256(*p)).collect();
        let _guard = self.send_lock.lock().await;
        let pending = timed("sending a settlement", escrow.settleBatch(ids, paid).send()).await?;
        let receipt = timed("waiting for the settlement receipt", pending.get_receipt()).await?;
        if !receipt.status() {
            return Err(Error::Chain(format!(
                "settlement {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(receipt.transaction_hash.to_string())
    }

    /// The `Settled` event of `id`, if the lock was settled.
    pub async fn settled_event(&self, id: B256) -> Result<Option<SettledInfo>> {
        let filter = Filter::new()
            .address(self.escrow)
            .event_signature(IJobEscrow::Settled::SIGNATURE_HASH)
            .topic1(id)
            .from_block(0);
        let logs = timed("reading settlement events", self.provider.get_logs(&filter)).await?;
        let Some(log) = logs.last() else {
            return Ok(None);
        };
        let ev = IJobEscrow::Settled::decode_log_data(log.data())
            .map_err(|e| Error::Chain(format!("decoding a Settled event: {e}")))?;
        Ok(Some(SettledInfo {
            paid: amount(ev.paid),
            fee: amount(ev.fee),
            refund: amount(ev.refund),
            tx: log
                .transaction_hash
                .map(|h| h.to_string())
                .unwrap_or_default(),
        }))
    }

    /// The transaction that locked `id`, if any.
    pub async fn lock_tx(&self, id: B256) -> Result<Option<String>> {
        let filter = Filter::new()
            .address(self.escrow)
            .event_signature(IJobEscrow::Locked::SIGNATURE_HASH)
            .topic1(id)
            .from_block(0);
        let logs = timed("reading lock events", self.provider.get_logs(&filter)).await?;
        Ok(logs
            .last()
            .and_then(|l| l.transaction_hash)
            .map(|h| h.to_string()))
    }

    /// The bond of `provider`, if the pool names a bond contract.
    pub async fn bond_of(&self, provider: &EvmAddress) -> Result<Option<BondInfo>> {
        let Some(bond) = self.bond else {
            return Ok(None);
        };
        let c = IProviderBond::new(bond, &self.provider);
        let b = timed("reading a bond", c.bondOf(address(provider)).call()).await?;
        Ok(Some(BondInfo {
            bonded: amount(b.bonded),
            unbonding: amount(b.unbonding),
            unbonding_release_at: b.unbondingReleaseAt,
            slashed_total: amount(b.slashedTotal),
        }))
    }

    /// Slash events of `provider`.
    pub async fn slashes_of(&self, provider: &EvmAddress) -> Result<Vec<SlashEvent>> {
        let Some(bond) = self.bond else {
            return Ok(vec![]);
        };
        let topic = B256::left_padding_from(address(provider).as_slice());
        let filter = Filter::new()
            .address(bond)
            .event_signature(IProviderBond::Slashed::SIGNATURE_HASH)
            .topic1(topic)
            .from_block(0);
        let logs = timed("reading slash events", self.provider.get_logs(&filter)).await?;
        logs.iter()
            .map(|log| {
                let ev = IProviderBond::Slashed::decode_log_data(log.data())
                    .map_err(|e| Error::Chain(format!("decoding a Slashed event: {e}")))?;
                Ok(SlashEvent {
                    amount: amount(ev.amount),
                    evidence_hash: ev.evidenceHash.to_string(),
                    tx: log
                        .transaction_hash
                        .map(|h| h.to_string())
                        .unwrap_or_default(),
                    block: log.block_number.unwrap_or(0),
                })
            })
            .collect()
    }
}
