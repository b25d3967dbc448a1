//! The hub's view of a pool's chain, with alloy: typed bindings of the JobEscrow and ProviderBond
//! functions the hub uses (`sol!` interfaces matching `docs/contracts.md`, "ABI used by the hub"),
//! and a client that signs with the hub's settlement key (read from a Secret, never logged).
//!
//! Sending is built so that no failure can stall later payments ([`Lane`]):
//! * every transaction is simulated (`eth_call`) first; a revert is decoded into a [`Refusal`]
//!   and nothing is sent, so no nonce is used;
//! * transactions of one account on one chain go through one lane, shared by every pool that
//!   uses the same key, one at a time; the nonce is read from the chain for each transaction,
//!   never cached, so a send error cannot leave a gap;
//! * a transaction not mined within `spec.chain.txTimeout` is remembered, and the next one takes
//!   its nonce with fees raised enough to replace it;
//! * amounts are converted with the token's own `decimals()`; event look-ups scan bounded block
//!   ranges (`spec.chain.logBlockRange`).
//!
//! An error from a send means "outcome unknown": callers read the contract's state again.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::fillers::ChainIdFiller;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::signers::Signer as _;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolEvent, SolStruct};
use gpufed_crds::{ChainSpec, EvmAddress, TokenAmount};
use tokio::sync::{Mutex, OnceCell};

use crate::error::{Error, Result};

alloy::sol! {
    /// The JobEscrow functions, events and errors the hub uses.
    #[sol(rpc)]
    #[derive(Debug)]
    interface IJobEscrow {
        function deposits(address payer) external view returns (uint256);
        function feeBps() external view returns (uint16);
        function claimWindow() external view returns (uint64);
        function maxLockDuration() external view returns (uint64);
        function spendingAllowance(address payer, address settler) external view
            returns (uint256 remaining, uint64 validUntil);
        function lock(bytes32 jobId, address payer, address provider, uint256 amount, uint64 deadline) external;
        function settle(bytes32 jobId, uint256 paid) external;
        function settleBatch(bytes32[] jobIds, uint256[] paid) external;
        function getLock(bytes32 jobId) external view
            returns (address payer, address provider, uint128 amount, uint64 deadline, uint8 state);
        function lockFeeBps(bytes32 jobId) external view returns (uint16);
        function settlePeriod(bytes32 jobId, uint32 period, uint256 paid) external;
        function periodsSettled(bytes32 jobId) external view returns (uint32);
        function extendLock(bytes32 jobId, uint256 added, uint64 deadline) external;

        event Locked(bytes32 indexed jobId, address indexed payer, address indexed provider,
                     uint256 amount, uint64 deadline, uint16 feeBps);
        event Settled(bytes32 indexed jobId, address indexed payer, address indexed provider,
                      uint256 paid, uint256 fee, uint256 refund);
        event Expired(bytes32 indexed jobId, address indexed payer, uint256 amount);
        event PeriodSettled(bytes32 indexed jobId, uint32 indexed period, uint256 paid,
                            uint256 fee, uint256 remaining);
        event LockExtended(bytes32 indexed jobId, address indexed payer, uint256 added,
                           uint256 amount, uint64 deadline);

        error ZeroAddress();
        error ZeroAmount();
        error ZeroJobId();
        error InsufficientDeposit(address payer, uint256 available, uint256 required);
        error JobAlreadyExists(bytes32 jobId);
        error DeadlineInPast(uint64 deadline, uint256 currentTime);
        error DeadlineTooFar(uint64 deadline, uint256 max);
        error AmountTooLarge(uint256 amount, uint256 max);
        error SpendingNotAuthorised(address payer, address settler, uint256 remaining, uint256 required);
        error SpendingAuthorisationExpired(address payer, address settler, uint64 validUntil);
        error LockNotActive(bytes32 jobId, uint8 state);
        error PaidExceedsLocked(bytes32 jobId, uint256 paid, uint256 locked);
        error LengthMismatch(uint256 jobIds, uint256 paid);
        error SettlerNotAuthorised(bytes32 jobId, address payer, address settler);
        error PeriodNotNext(bytes32 jobId, uint32 period, uint32 expected);
        error DeadlineNotLater(bytes32 jobId, uint64 deadline, uint64 current);
        error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);
    }

    /// The ProviderBond functions, events and errors the hub uses (slashing: ADR 0023).
    #[sol(rpc)]
    #[derive(Debug)]
    interface IProviderBond {
        function bondOf(address provider) external view
            returns (uint256 bonded, uint256 unbonding, uint64 unbondingReleaseAt, uint256 slashedTotal);
        function frozenOf(address provider) external view returns (uint256);
        function appealWindow() external view returns (uint64);
        function proposeSlash(address provider, bytes32 evidenceHash, uint256 amount,
            address[] tenants, uint256[] shares) external;
        function executeSlash(bytes32 evidenceHash) external;
        function cancelSlash(bytes32 evidenceHash) external;
        function getSlash(bytes32 evidenceHash) external view returns (address provider, uint256 amount,
            uint64 executableAt, uint8 state, bytes32 appealAnswer, address[] tenants, uint256[] shares);
        event Slashed(address indexed provider, uint256 amount, bytes32 indexed evidenceHash);

        error ZeroAddress();
        error ZeroAmount();
        error SlashExceedsBond(uint256 available, uint256 requested);
        error ZeroEvidence();
        error EvidenceAlreadyUsed(bytes32 evidenceHash);
        error LengthMismatch(uint256 tenants, uint256 shares);
        error TooManyTenants(uint256 count, uint256 max);
        error SharesExceedAmount(uint256 shares, uint256 amount);
        error TenantIsProvider(address provider);
        error SlashNotInState(bytes32 evidenceHash, uint8 state);
        error TooEarly(uint64 at);
        error AppealLapsed(uint64 lapsedAt);
        error AccessControlUnauthorizedAccount(address account, bytes32 neededRole);
    }

    /// The one ERC-20 metadata function the hub reads.
    #[sol(rpc)]
    interface IERC20Decimals {
        function decimals() external view returns (uint8);
    }

    /// What the hub signs when an attempt ends, so its provider can claim payment itself
    /// (`JobEscrow.claim`) if the hub is late or gone. EIP-712, domain "GpuFed JobEscrow" v1.
    struct UsageReceipt {
        bytes32 jobId;
        uint256 paid;
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
    /// The lock's id.
    pub id: B256,
    /// State.
    pub state: LockState,
    /// Who funds it.
    pub payer: Address,
    /// Who is paid.
    pub provider: Address,
    /// Amount locked, in the token's base units.
    pub base_amount: U256,
    /// Amount locked.
    pub amount: TokenAmount,
    /// After this (plus the escrow's claim window) the payer may expire it.
    pub deadline: u64,
}

/// What a `LockExtended` event recorded: one renewal of a serving attempt's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Amount the renewal added to the lock.
    pub added: TokenAmount,
    /// The lock's deadline after it.
    pub deadline: u64,
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
    /// Block it was mined in.
    pub block: u64,
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

/// A slash the hub proposes (`ProviderBond.proposeSlash`, ADR 0023).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashProposal {
    /// Provider to slash.
    pub provider: EvmAddress,
    /// sha256 of the evidence record; one slash per hash, ever.
    pub evidence_hash: B256,
    /// Amount to slash (frozen at once).
    pub amount: TokenAmount,
    /// Harmed tenants (payer accounts) and what each receives; the rest goes to the treasury.
    pub tenants: Vec<(EvmAddress, TokenAmount)>,
}

/// Where a slash stands (`ProviderBond.SLASH_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlashState {
    /// Frozen; executable from `executable_at` unless appealed.
    Proposed,
    /// The provider appealed; waiting for the referee.
    Appealed,
    /// The referee upheld the slash; executable now.
    Upheld,
    /// Paid out.
    Executed,
    /// Withdrawn by the arbiter, dismissed on appeal, or lapsed; the tokens went back.
    Cancelled,
}

/// A slash as the chain has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashRecord {
    /// Slashed provider.
    pub provider: Address,
    /// Amount frozen or slashed.
    pub amount: TokenAmount,
    /// Earliest execution without appeal (unix seconds).
    pub executable_at: u64,
    /// State.
    pub state: SlashState,
    /// The answer hash the provider appealed with, if it appealed.
    pub appeal_answer: Option<B256>,
    /// Tenants and their shares.
    pub tenants: Vec<(Address, TokenAmount)>,
}

/// What a payer authorised the hub's account to lock (`JobEscrow.spendingAllowance`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Still lockable.
    pub remaining: TokenAmount,
    /// Unix seconds after which nothing can be locked under it (0: never authorised).
    pub valid_until: u64,
}

/// Why the contract refused a transaction, decoded from the simulation's revert. Nothing was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The payer's free deposit is too small.
    InsufficientDeposit {
        /// Deposited and free.
        available: TokenAmount,
        /// Needed.
        required: TokenAmount,
    },
    /// The payer has not authorised the hub's account for this much.
    NotAuthorised {
        /// What the authorisation still allows.
        remaining: TokenAmount,
        /// Needed.
        required: TokenAmount,
    },
    /// The payer's authorisation of the hub's account ran out.
    AuthorisationExpired {
        /// Unix seconds it was valid until.
        valid_until: u64,
    },
    /// Anything else the contract said, by error name and arguments.
    Other(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InsufficientDeposit {
                available,
                required,
            } => write!(
                f,
                "the payer's free deposit is {available}, the lock needs {required}: deposit more"
            ),
            Refusal::NotAuthorised {
                remaining,
                required,
            } => write!(
                f,
                "the payer authorised the hub's account for {remaining} more, the lock needs \
                 {required}: authorise more (kubectl gpufed authorise)"
            ),
            Refusal::AuthorisationExpired { valid_until } => write!(
                f,
                "the payer's authorisation of the hub's account ended at unix time \
                 {valid_until}: authorise again (kubectl gpufed authorise)"
            ),
            Refusal::Other(s) => write!(f, "the contract refused: {s}"),
        }
    }
}

/// A mined transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mined {
    /// Transaction hash.
    pub tx: String,
    /// Block number.
    pub block: u64,
}

/// Timeout of one read call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The token's decimals and conversions between [`TokenAmount`] (18 decimals) and base units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units {
    /// `decimals()` of the token.
    pub decimals: u8,
}

impl Units {
    fn scale(self) -> (bool, U256) {
        let d = i32::from(self.decimals) - gpufed_crds::units::TOKEN_DECIMALS as i32;
        (d >= 0, U256::from(10u8).pow(U256::from(d.unsigned_abs())))
    }

    /// Base units of `a`, rounded down (what is paid is never more than owed).
    pub fn to_base_floor(self, a: TokenAmount) -> U256 {
        let (up, s) = self.scale();
        let v = U256::from(a.atto());
        if up { v.saturating_mul(s) } else { v / s }
    }

    /// Base units of `a`, rounded up (a lock always covers the cap).
    pub fn to_base_ceil(self, a: TokenAmount) -> U256 {
        let (up, s) = self.scale();
        let v = U256::from(a.atto());
        if up {
            v.saturating_mul(s)
        } else {
            v.div_ceil(s)
        }
    }

    /// The amount of `v` base units, rounded down.
    pub fn from_base(self, v: U256) -> TokenAmount {
        let (up, s) = self.scale();
        let atto = if up { v / s } else { v.saturating_mul(s) };
        TokenAmount::from_atto(u128::try_from(atto).unwrap_or(u128::MAX))
    }
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

/// Refuses a pool whose key Secret is outside the hub's own namespace, the only one where the hub
/// chart lets it read Secrets (ADR 0017), with a message that names the field and the fix instead
/// of the apiserver's bare Forbidden.
pub fn check_key_secret_namespace(spec: &ChainSpec, hub_namespace: &str) -> Result<()> {
    let r = &spec.hub_key_secret_ref;
    if r.namespace == hub_namespace {
        return Ok(());
    }
    Err(Error::Config(format!(
        "spec.chain.hubKeySecretRef.namespace is {:?}, but the hub reads chain key Secrets only in its own namespace {hub_namespace:?}: move Secret {:?} there and set spec.chain.hubKeySecretRef.namespace to {hub_namespace:?}",
        r.namespace, r.name
    )))
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    fut: impl std::future::IntoFuture<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Chain(format!("{what}: {e}"))),
        Err(_) => Err(Error::Chain(format!(
            "{what}: no answer from the RPC within {limit:?}"
        ))),
    }
}

async fn read<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::IntoFuture<Output = std::result::Result<T, E>>,
) -> Result<T> {
    timed(what, CALL_TIMEOUT, fut).await
}

/// A transaction this account sent that was not mined in time; the next transaction replaces it.
#[derive(Clone, Debug)]
struct Unmined {
    nonce: u64,
    max_fee: u128,
    priority_fee: u128,
    hash: B256,
}

/// The transactions of one account on one chain: sent one at a time, whatever pool they are for.
#[derive(Debug, Default)]
struct Lane {
    unmined: Option<Unmined>,
}

type LaneKey = (Address, u64);

/// Every lane of this process, by (account, chain id): pools that share a key share its nonces.
static LANES: LazyLock<std::sync::Mutex<HashMap<LaneKey, Arc<Mutex<Lane>>>>> =
    LazyLock::new(Default::default);

fn lane(account: Address, chain_id: u64) -> Arc<Mutex<Lane>> {
    let mut lanes = LANES.lock().unwrap_or_else(|p| p.into_inner());
    lanes.entry((account, chain_id)).or_default().clone()
}

/// Fees high enough to replace a pending transaction: nodes want at least 10 % more of both.
fn replacement_fees(estimated: (u128, u128), pending: (u128, u128)) -> (u128, u128) {
    let bump = |old: u128| old.saturating_add(old / 8).saturating_add(1);
    let priority = estimated.1.max(bump(pending.1));
    let max_fee = estimated.0.max(bump(pending.0)).max(priority);
    (max_fee, priority)
}

/// Blocks `[from, to]` cut into ranges of at most `step` blocks, newest first.
fn ranges_newest_first(from: u64, to: u64, step: u64) -> Vec<(u64, u64)> {
    let step = step.max(1);
    let mut out = vec![];
    let mut hi = to;
    loop {
        if hi < from {
            break;
        }
        let lo = hi.saturating_sub(step - 1).max(from);
        out.push((lo, hi));
        if lo == from || lo == 0 {
            break;
        }
        hi = lo - 1;
    }
    out
}

/// A signing client for one pool's chain.
pub struct ChainClient {
    provider: DynProvider,
    signer: PrivateKeySigner,
    chain_id: u64,
    escrow: Address,
    token: Address,
    bond: Option<Address>,
    lane: Arc<Mutex<Lane>>,
    units: OnceCell<Units>,
    max_lock: OnceCell<u64>,
    tx_timeout: Duration,
    log_range: u64,
    /// How many blocks (counting the one that includes it) a settlement needs before it counts.
    pub confirmations: u64,
    /// The settlement account (public address only).
    pub hub_account: Address,
    /// Checked right before each transaction is handed to the node: a replica that may have lost
    /// the leader Lease sends nothing.
    fence: crate::fenced::WriteFence,
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
    pub fn new(
        spec: &ChainSpec,
        key_hex: &str,
        fence: crate::fenced::WriteFence,
    ) -> Result<Arc<ChainClient>> {
        let mut signer = PrivateKeySigner::from_str(key_hex.trim()).map_err(|_| {
            Error::Config("the hub key Secret does not hold a valid hex private key".into())
        })?;
        signer.set_chain_id(Some(spec.chain_id));
        let hub_account = signer.address();
        let url = spec
            .rpc_url
            .parse()
            .map_err(|e| Error::Config(format!("spec.chain.rpcUrl {:?}: {e}", spec.rpc_url)))?;
        // No nonce or gas fillers: `send` sets nonce, gas and fees itself (see the module docs).
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .filler(ChainIdFiller::new(Some(spec.chain_id)))
            .wallet(EthereumWallet::from(signer.clone()))
            .connect_http(url)
            .erased();
        Ok(Arc::new(ChainClient {
            provider,
            signer,
            chain_id: spec.chain_id,
            escrow: address(&spec.escrow),
            token: address(&spec.token),
            bond: spec.bond.as_ref().map(address),
            lane: lane(hub_account, spec.chain_id),
            units: OnceCell::new(),
            max_lock: OnceCell::new(),
            tx_timeout: spec.tx_timeout.as_duration(),
            log_range: u64::from(spec.log_block_range),
            confirmations: u64::from(spec.confirmations),
            hub_account,
            fence,
        }))
    }

    /// The token's decimals, read once.
    pub async fn units(&self) -> Result<Units> {
        self.units
            .get_or_try_init(|| async {
                let t = IERC20Decimals::new(self.token, &self.provider);
                let decimals = read("reading the token's decimals", t.decimals().call()).await?;
                if decimals > 36 {
                    return Err(Error::Chain(format!(
                        "the token reports {decimals} decimals; gpufed supports at most 36"
                    )));
                }
                Ok(Units { decimals })
            })
            .await
            .copied()
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64> {
        read("reading the block number", self.provider.get_block_number()).await
    }

    /// The payer's free deposit in the escrow.
    pub async fn deposit_of(&self, payer: &EvmAddress) -> Result<TokenAmount> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let v = read("reading a deposit", escrow.deposits(address(payer)).call()).await?;
        Ok(units.from_base(v))
    }

    /// What `payer` authorised the hub's account to lock.
    pub async fn allowance_of(&self, payer: &EvmAddress) -> Result<Allowance> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let a = read(
            "reading a spending authorisation",
            escrow
                .spendingAllowance(address(payer), self.hub_account)
                .call(),
        )
        .await?;
        Ok(Allowance {
            remaining: units.from_base(a.remaining),
            valid_until: a.validUntil,
        })
    }

    /// The escrow's longest lock (seconds from now to deadline), read once.
    pub async fn max_lock_duration(&self) -> Result<u64> {
        self.max_lock
            .get_or_try_init(|| async {
                let escrow = IJobEscrow::new(self.escrow, &self.provider);
                read("reading maxLockDuration", escrow.maxLockDuration().call()).await
            })
            .await
            .copied()
    }

    /// The lock under `id`.
    pub async fn get_lock(&self, id: B256) -> Result<LockInfo> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let l = read("reading a lock", escrow.getLock(id).call()).await?;
        let state = match l.state {
            0 => LockState::None,
            1 => LockState::Locked,
            2 => LockState::Settled,
            3 => LockState::Expired,
            other => return Err(Error::Chain(format!("unknown lock state {other}"))),
        };
        Ok(LockInfo {
            id,
            state,
            payer: l.payer,
            provider: l.provider,
            base_amount: U256::from(l.amount),
            amount: units.from_base(U256::from(l.amount)),
            deadline: l.deadline,
        })
    }

    /// Whether `lock` is the one this hub makes for `payer`, `provider` and `amount`: the same
    /// parties and exactly the amount (in base units) a lock of `amount` would have.
    pub async fn lock_matches(
        &self,
        lock: &LockInfo,
        payer: &EvmAddress,
        provider: &EvmAddress,
        amount: TokenAmount,
    ) -> Result<bool> {
        let units = self.units().await?;
        let made = units.to_base_ceil(amount);
        let parties = lock.payer == address(payer) && lock.provider == address(provider);
        if !parties || lock.base_amount > made {
            return Ok(false);
        }
        // A serving attempt's lock holds less once periods were paid out of it (ADR 0030).
        Ok(lock.base_amount == made || self.periods_settled(lock.id).await? > 0)
    }

    /// Locks `amount` of `payer`'s deposit for `provider` under `id` until `deadline` (unix
    /// seconds). `Ok(Err(_))`: the contract refused and nothing was sent. `Err(_)`: the outcome is
    /// unknown (read the lock again).
    pub async fn lock(
        &self,
        id: B256,
        payer: &EvmAddress,
        provider: &EvmAddress,
        amount: TokenAmount,
        deadline: u64,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let call = escrow
            .lock(
                id,
                address(payer),
                address(provider),
                units.to_base_ceil(amount),
                deadline,
            )
            .from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a lock", tx, call.call()).await
    }

    /// Periods of lock `id` already paid by `settlePeriod` (serving jobs, ADR 0030).
    pub async fn periods_settled(&self, id: B256) -> Result<u32> {
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        read(
            "reading a lock's paid periods",
            escrow.periodsSettled(id).call(),
        )
        .await
    }

    /// Pays period `period` of the still-running attempt locked under `id` (amount rounded down to
    /// base units). `Ok(Err(_))`: the contract refused (e.g. the period was paid already) and
    /// nothing was sent. `Err(_)`: the outcome is unknown (read `periods_settled` again).
    pub async fn settle_period(
        &self,
        id: B256,
        period: u32,
        paid: TokenAmount,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let call = escrow
            .settlePeriod(id, period, units.to_base_floor(paid))
            .from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a period's settlement", tx, call.call()).await
    }

    /// Renews the lock `id` of a running serving attempt for its next window: `added` more from
    /// the payer's deposit (rounded up to base units, like a lock) and the lock's deadline moved to
    /// `deadline` (ADR 0030, renewed windows). `Ok(Err(_))`: the contract refused (typically the
    /// payer's deposit or authorisation cannot fund the window) and nothing was sent. `Err(_)`:
    /// the outcome is unknown (read the lock again: its deadline says whether it was renewed).
    pub async fn extend_lock(
        &self,
        id: B256,
        added: TokenAmount,
        deadline: u64,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let call = escrow
            .extendLock(id, units.to_base_ceil(added), deadline)
            .from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a lock's renewal", tx, call.call()).await
    }

    /// Settles several locks in one transaction (amounts rounded down to base units).
    pub async fn settle_batch(
        &self,
        items: &[(B256, TokenAmount)],
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let units = self.units().await?;
        let escrow = IJobEscrow::new(self.escrow, &self.provider);
        let ids: Vec<B256> = items.iter().map(|(id, _)| *id).collect();
        let paid: Vec<U256> = items.iter().map(|(_, p)| units.to_base_floor(*p)).collect();
        let call = escrow.settleBatch(ids, paid).from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a settlement", tx, call.call()).await
    }

    /// The hub's signature of a usage receipt for `id` paying `paid`: the provider can submit it
    /// to `JobEscrow.claim(id, paid, hub, signature)` itself. Returns (base units, 0x-hex signature).
    pub async fn sign_receipt(&self, id: B256, paid: TokenAmount) -> Result<(U256, String)> {
        let units = self.units().await?;
        let base = units.to_base_floor(paid);
        let receipt = UsageReceipt {
            jobId: id,
            paid: base,
        };
        let domain = alloy::sol_types::eip712_domain! {
            name: "GpuFed JobEscrow",
            version: "1",
            chain_id: self.chain_id,
            verifying_contract: self.escrow,
        };
        let hash = receipt.eip712_signing_hash(&domain);
        let sig = self
            .signer
            .sign_hash(&hash)
            .await
            .map_err(|e| Error::Chain(format!("signing a usage receipt: {e}")))?;
        Ok((base, format!("0x{}", alloy::hex::encode(sig.as_bytes()))))
    }

    /// Simulates, then sends `tx` on this account's lane and waits for it to be mined.
    async fn send<T>(
        &self,
        what: &str,
        mut tx: TransactionRequest,
        simulate: impl std::future::IntoFuture<Output = std::result::Result<T, alloy::contract::Error>>,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let mut lane = self.lane.lock().await;
        // 1. Simulate: a revert is the contract's answer, and costs no nonce.
        match tokio::time::timeout(CALL_TIMEOUT, simulate.into_future()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if let Some(r) = self.refusal(&e).await? {
                    return Ok(Err(r));
                }
                return Err(Error::Chain(format!("simulating {what}: {e}")));
            }
            Err(_) => {
                return Err(Error::Chain(format!(
                    "simulating {what}: no answer from the RPC within {CALL_TIMEOUT:?}"
                )));
            }
        }
        // 2. Nonce from the chain; take over a transaction of ours that was never mined.
        let (mined_nonce, pending_nonce) = self.nonces().await?;
        let fees = read("estimating fees", self.provider.estimate_eip1559_fees()).await?;
        let estimated = (fees.max_fee_per_gas, fees.max_priority_fee_per_gas);
        let (max_fee, priority) = match &lane.unmined {
            Some(u) if u.nonce >= mined_nonce => {
                tracing::warn!(nonce = mined_nonce, replaces = %u.hash, "replacing a transaction that was not mined in time");
                replacement_fees(estimated, (u.max_fee, u.priority_fee))
            }
            // Something of this account's is pending that this process did not send (a hub that
            // restarted with a transaction stuck): outbid it generously.
            _ if pending_nonce > mined_nonce => {
                tracing::warn!(
                    nonce = mined_nonce,
                    "replacing a pending transaction sent before this hub started"
                );
                replacement_fees(
                    estimated,
                    (estimated.0.saturating_mul(2), estimated.1.saturating_mul(2)),
                )
            }
            _ => estimated,
        };
        // Gas against the mined state (the pending one may hold the transaction this replaces),
        // with no fees set, so that the node does not cap it by the account's balance.
        tx.set_nonce(mined_nonce);
        tx.set_chain_id(self.chain_id);
        let gas = read(
            &format!("estimating the gas of {what}"),
            self.provider
                .estimate_gas(tx.clone())
                .block(alloy::eips::BlockId::latest()),
        )
        .await?;
        // Headroom: state can change between estimate and inclusion.
        let gas_limit = gas.saturating_add(gas / 5);
        tx.set_gas_limit(gas_limit);
        tx.set_max_fee_per_gas(max_fee);
        tx.set_max_priority_fee_per_gas(priority);
        let need = U256::from(gas_limit).saturating_mul(U256::from(max_fee));
        let balance = read(
            "reading the hub account's balance",
            self.provider.get_balance(self.hub_account).latest(),
        )
        .await?;
        if balance < need {
            return Err(Error::Chain(format!(
                "the hub's account {} has {balance} wei, too few funds for the gas of {what} \
                 (up to {need} wei): send it ether for gas; the transaction is retried",
                self.hub_account
            )));
        }
        // 3. Send. An error here means the node did not take it: nothing to remember.
        self.fence
            .permits("chain", &what)
            .map_err(|e| Error::Chain(e.to_string()))?;
        let pending = read(
            &format!("sending {what}"),
            self.provider.send_transaction(tx),
        )
        .await?;
        let hash = *pending.tx_hash();
        // 4. Wait. Not mined in time: remember it, so the next send replaces it.
        let receipt = match timed(
            &format!("waiting for {what} ({hash}) to be mined"),
            self.tx_timeout,
            pending.get_receipt(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                lane.unmined = Some(Unmined {
                    nonce: mined_nonce,
                    max_fee,
                    priority_fee: priority,
                    hash,
                });
                return Err(e);
            }
        };
        lane.unmined = None;
        if !receipt.status() {
            return Err(Error::Chain(format!(
                "{what} {} reverted in block {}",
                receipt.transaction_hash,
                receipt.block_number.unwrap_or(0)
            )));
        }
        Ok(Ok(Mined {
            tx: receipt.transaction_hash.to_string(),
            block: receipt.block_number.unwrap_or(0),
        }))
    }

    /// The hub account's (mined, pending) transaction counts.
    async fn nonces(&self) -> Result<(u64, u64)> {
        let count = |tag| {
            let call = self.provider.get_transaction_count(self.hub_account);
            let call = if tag { call.pending() } else { call.latest() };
            read("reading the hub account's nonce", call)
        };
        Ok((count(false).await?, count(true).await?))
    }

    /// Makes sure no transaction of this account is waiting unmined: one that was not mined in
    /// time is replaced by a transfer of nothing to itself (same nonce, higher fees), so a lock
    /// the hub gave up on cannot land later. `Ok(true)`: nothing is pending any more.
    pub async fn cancel_unmined(&self) -> Result<bool> {
        let mut lane = self.lane.lock().await;
        let (mined_nonce, pending_nonce) = self.nonces().await?;
        if pending_nonce <= mined_nonce {
            lane.unmined = None;
            return Ok(true);
        }
        let fees = read("estimating fees", self.provider.estimate_eip1559_fees()).await?;
        let estimated = (fees.max_fee_per_gas, fees.max_priority_fee_per_gas);
        let pending = match &lane.unmined {
            Some(u) if u.nonce == mined_nonce => (u.max_fee, u.priority_fee),
            _ => (estimated.0.saturating_mul(2), estimated.1.saturating_mul(2)),
        };
        let (max_fee, priority) = replacement_fees(estimated, pending);
        let tx = TransactionRequest::default()
            .with_from(self.hub_account)
            .with_to(self.hub_account)
            .with_value(U256::ZERO)
            .with_nonce(mined_nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(21_000)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(priority);
        tracing::warn!(
            nonce = mined_nonce,
            "cancelling a transaction that was not mined in time"
        );
        self.fence
            .permits("chain", &"a cancellation")
            .map_err(|e| Error::Chain(e.to_string()))?;
        let sent = read("sending a cancellation", self.provider.send_transaction(tx)).await?;
        let hash = *sent.tx_hash();
        match timed(
            &format!("waiting for the cancellation {hash} to be mined"),
            self.tx_timeout,
            sent.get_receipt(),
        )
        .await
        {
            Ok(_) => {
                lane.unmined = None;
                Ok(true)
            }
            Err(e) => {
                lane.unmined = Some(Unmined {
                    nonce: mined_nonce,
                    max_fee,
                    priority_fee: priority,
                    hash,
                });
                tracing::warn!(error = %e, "the cancellation was not mined in time");
                Ok(false)
            }
        }
    }

    /// The contract's reason for a reverted simulation, or `None` when `e` is not a revert.
    async fn refusal(&self, e: &alloy::contract::Error) -> Result<Option<Refusal>> {
        use IJobEscrow::IJobEscrowErrors as E;
        let Some(data) = e.as_revert_data() else {
            return Ok(None);
        };
        let units = self.units().await?;
        let decoded = <E as alloy::sol_types::SolInterface>::abi_decode(&data);
        Ok(Some(match decoded {
            Ok(E::InsufficientDeposit(x)) => Refusal::InsufficientDeposit {
                available: units.from_base(x.available),
                required: units.from_base(x.required),
            },
            Ok(E::SpendingNotAuthorised(x)) => Refusal::NotAuthorised {
                remaining: units.from_base(x.remaining),
                required: units.from_base(x.required),
            },
            Ok(E::SpendingAuthorisationExpired(x)) => Refusal::AuthorisationExpired {
                valid_until: x.validUntil,
            },
            Ok(other) => Refusal::Other(format!("{other:?}")),
            Err(_) => {
                use IProviderBond::IProviderBondErrors as B;
                match <B as alloy::sol_types::SolInterface>::abi_decode(&data) {
                    Ok(b) => Refusal::Other(format!("{b:?}")),
                    Err(_) => Refusal::Other(format!("revert data {data}")),
                }
            }
        }))
    }

    /// Logs of the escrow or bond matching `filter`, newest range first, scanning back from the
    /// head in ranges of `spec.chain.logBlockRange` blocks down to `from` (at most `max_ranges`
    /// ranges when `from` is unknown). Stops at the first range with a match when `first_only`.
    async fn logs(&self, filter: Filter, from: Option<u64>, first_only: bool) -> Result<Vec<Log>> {
        /// How far back a look-up without a starting block goes, in ranges.
        const MAX_RANGES: u64 = 200;
        let head = self.block_number().await?;
        let floor =
            from.unwrap_or_else(|| head.saturating_sub(self.log_range.saturating_mul(MAX_RANGES)));
        let mut out = vec![];
        for (lo, hi) in ranges_newest_first(floor, head, self.log_range) {
            let f = filter.clone().from_block(lo).to_block(hi);
            let mut logs = read("reading events", self.provider.get_logs(&f)).await?;
            if !logs.is_empty() && first_only {
                return Ok(logs);
            }
            logs.append(&mut out);
            out = logs;
        }
        Ok(out)
    }

    /// The `Settled` event of `id`, if the lock was settled; `from` is the lock's block if known.
    pub async fn settled_event(&self, id: B256, from: Option<u64>) -> Result<Option<SettledInfo>> {
        let units = self.units().await?;
        let filter = Filter::new()
            .address(self.escrow)
            .event_signature(IJobEscrow::Settled::SIGNATURE_HASH)
            .topic1(id);
        let logs = self.logs(filter, from, true).await?;
        let Some(log) = logs.last() else {
            return Ok(None);
        };
        let ev = IJobEscrow::Settled::decode_log_data(log.data())
            .map_err(|e| Error::Chain(format!("decoding a Settled event: {e}")))?;
        Ok(Some(SettledInfo {
            paid: units.from_base(ev.paid),
            fee: units.from_base(ev.fee),
            refund: units.from_base(ev.refund),
            tx: log
                .transaction_hash
                .map(|h| h.to_string())
                .unwrap_or_default(),
            block: log.block_number.unwrap_or(0),
        }))
    }

    /// Every renewal of lock `id` (`LockExtended` events, oldest first; ADR 0030 section 7): what
    /// each added and the deadline it set. `from` is the lock's block if known.
    pub async fn lock_extensions(&self, id: B256, from: Option<u64>) -> Result<Vec<Extension>> {
        let units = self.units().await?;
        let filter = Filter::new()
            .address(self.escrow)
            .event_signature(IJobEscrow::LockExtended::SIGNATURE_HASH)
            .topic1(id);
        self.logs(filter, from, false)
            .await?
            .iter()
            .map(|log| {
                let ev = IJobEscrow::LockExtended::decode_log_data(log.data())
                    .map_err(|e| Error::Chain(format!("decoding a LockExtended event: {e}")))?;
                Ok(Extension {
                    added: units.from_base(ev.added),
                    deadline: ev.deadline,
                })
            })
            .collect()
    }

    /// The transaction that locked `id` and its block, if any.
    pub async fn lock_tx(&self, id: B256) -> Result<Option<Mined>> {
        let filter = Filter::new()
            .address(self.escrow)
            .event_signature(IJobEscrow::Locked::SIGNATURE_HASH)
            .topic1(id);
        let logs = self.logs(filter, None, true).await?;
        Ok(logs.last().map(|l| Mined {
            tx: l
                .transaction_hash
                .map(|h| h.to_string())
                .unwrap_or_default(),
            block: l.block_number.unwrap_or(0),
        }))
    }

    /// The bond of `provider`, if the pool names a bond contract.
    pub async fn bond_of(&self, provider: &EvmAddress) -> Result<Option<BondInfo>> {
        let Some(bond) = self.bond else {
            return Ok(None);
        };
        let units = self.units().await?;
        let c = IProviderBond::new(bond, &self.provider);
        let b = read("reading a bond", c.bondOf(address(provider)).call()).await?;
        Ok(Some(BondInfo {
            bonded: units.from_base(b.bonded),
            unbonding: units.from_base(b.unbonding),
            unbonding_release_at: b.unbondingReleaseAt,
            slashed_total: units.from_base(b.slashedTotal),
        }))
    }

    fn bond_address(&self) -> Result<Address> {
        self.bond.ok_or_else(|| {
            Error::Config(
                "the pool names no bond contract (spec.chain.bond): nothing to slash".into(),
            )
        })
    }

    /// The bond contract's appeal window in seconds, if the pool names a bond contract.
    pub async fn appeal_window(&self) -> Result<Option<u64>> {
        let Some(bond) = self.bond else {
            return Ok(None);
        };
        let c = IProviderBond::new(bond, &self.provider);
        Ok(Some(
            read("reading the appeal window", c.appealWindow().call()).await?,
        ))
    }

    /// Proposes a slash (amounts rounded down to base units: never more than asked, and the
    /// tenants' shares never more than the amount). The amount is frozen at once and can be
    /// executed after the bond's appeal window. `Ok(Err(_))`: the contract refused (bad input,
    /// evidence hash already used, more than the bond) and nothing was sent.
    pub async fn propose_slash(
        &self,
        p: &SlashProposal,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let bond = self.bond_address()?;
        let units = self.units().await?;
        let c = IProviderBond::new(bond, &self.provider);
        let tenants: Vec<Address> = p.tenants.iter().map(|(t, _)| address(t)).collect();
        let shares: Vec<U256> = p
            .tenants
            .iter()
            .map(|(_, s)| units.to_base_floor(*s))
            .collect();
        let call = c
            .proposeSlash(
                address(&p.provider),
                p.evidence_hash,
                units.to_base_floor(p.amount),
                tenants,
                shares,
            )
            .from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a slash proposal", tx, call.call()).await
    }

    /// Executes the slash on `evidence` (once its appeal window passed, or its appeal was upheld).
    pub async fn execute_slash(
        &self,
        evidence: B256,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let c = IProviderBond::new(self.bond_address()?, &self.provider);
        let call = c.executeSlash(evidence).from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a slash execution", tx, call.call()).await
    }

    /// Withdraws the hub's own slash proposal on `evidence` (its tokens go back to the bond).
    pub async fn cancel_slash(
        &self,
        evidence: B256,
    ) -> Result<std::result::Result<Mined, Refusal>> {
        let c = IProviderBond::new(self.bond_address()?, &self.provider);
        let call = c.cancelSlash(evidence).from(self.hub_account);
        let tx = call.clone().into_transaction_request();
        self.send("a slash cancellation", tx, call.call()).await
    }

    /// The slash on `evidence`, if one was ever proposed.
    pub async fn slash_record(&self, evidence: B256) -> Result<Option<SlashRecord>> {
        let c = IProviderBond::new(self.bond_address()?, &self.provider);
        let units = self.units().await?;
        let s = read("reading a slash", c.getSlash(evidence).call()).await?;
        let state = match s.state {
            0 => return Ok(None),
            1 => SlashState::Proposed,
            2 => SlashState::Appealed,
            3 => SlashState::Upheld,
            4 => SlashState::Executed,
            5 => SlashState::Cancelled,
            other => return Err(Error::Chain(format!("unknown slash state {other}"))),
        };
        if s.tenants.len() != s.shares.len() {
            return Err(Error::Chain(format!(
                "slash {evidence}: {} tenants but {} shares",
                s.tenants.len(),
                s.shares.len()
            )));
        }
        Ok(Some(SlashRecord {
            provider: s.provider,
            amount: units.from_base(s.amount),
            executable_at: s.executableAt,
            state,
            appeal_answer: (s.appealAnswer != B256::ZERO).then_some(s.appealAnswer),
            tenants: s
                .tenants
                .iter()
                .zip(s.shares.iter())
                .map(|(t, v)| (*t, units.from_base(*v)))
                .collect(),
        }))
    }

    /// Tokens of `provider` frozen under pending slashes, if the pool names a bond contract.
    pub async fn frozen_of(&self, provider: &EvmAddress) -> Result<Option<TokenAmount>> {
        let Some(bond) = self.bond else {
            return Ok(None);
        };
        let units = self.units().await?;
        let c = IProviderBond::new(bond, &self.provider);
        let v = read("reading frozen bond", c.frozenOf(address(provider)).call()).await?;
        Ok(Some(units.from_base(v)))
    }

    /// Slash events of `provider` (the newest [`MAX_RANGES`]·`logBlockRange` blocks).
    pub async fn slashes_of(&self, provider: &EvmAddress) -> Result<Vec<SlashEvent>> {
        let Some(bond) = self.bond else {
            return Ok(vec![]);
        };
        let units = self.units().await?;
        let topic = B256::left_padding_from(address(provider).as_slice());
        let filter = Filter::new()
            .address(bond)
            .event_signature(IProviderBond::Slashed::SIGNATURE_HASH)
            .topic1(topic);
        let logs = self.logs(filter, None, false).await?;
        logs.iter()
            .map(|log| {
                let ev = IProviderBond::Slashed::decode_log_data(log.data())
                    .map_err(|e| Error::Chain(format!("decoding a Slashed event: {e}")))?;
                Ok(SlashEvent {
                    amount: units.from_base(ev.amount),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_secret_outside_the_hub_namespace_is_refused_naming_the_field_and_the_fix() {
        let mut spec: ChainSpec = serde_json::from_value(serde_json::json!({
            "rpcUrl": "http://127.0.0.1:8545", "chainId": 31337,
            "token": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "escrow": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "hubKeySecretRef": {"namespace": "gpufed-system", "name": "k", "key": "privateKey"}
        }))
        .unwrap();
        assert!(check_key_secret_namespace(&spec, "gpufed-system").is_ok());
        spec.hub_key_secret_ref.namespace = "team-a".into();
        let msg = check_key_secret_namespace(&spec, "gpufed-system")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("spec.chain.hubKeySecretRef.namespace is \"team-a\"")
                && msg.contains("set spec.chain.hubKeySecretRef.namespace to \"gpufed-system\""),
            "{msg}"
        );
    }

    #[test]
    fn amounts_convert_with_the_tokens_own_decimals() {
        let a: TokenAmount = "1.2345675".parse().unwrap();
        let six = Units { decimals: 6 };
        assert_eq!(six.to_base_floor(a), U256::from(1_234_567u64));
        assert_eq!(
            six.to_base_ceil(a),
            U256::from(1_234_568u64),
            "a lock covers the cap"
        );
        assert_eq!(
            six.from_base(U256::from(1_234_567u64)).to_string(),
            "1.234567"
        );
        let eighteen = Units { decimals: 18 };
        assert_eq!(eighteen.to_base_floor(a), U256::from(a.atto()));
        assert_eq!(eighteen.to_base_ceil(a), U256::from(a.atto()));
        assert_eq!(eighteen.from_base(U256::from(a.atto())), a);
        let twenty = Units { decimals: 20 };
        assert_eq!(
            twenty.to_base_floor(a),
            U256::from(a.atto()) * U256::from(100u8)
        );
        assert_eq!(
            twenty.from_base(U256::from(a.atto()) * U256::from(100u8) + U256::from(99u8)),
            a
        );
        let zero = Units { decimals: 0 };
        assert_eq!(zero.to_base_floor(a), U256::from(1u8));
        assert_eq!(zero.to_base_ceil(a), U256::from(2u8));
    }

    #[test]
    fn a_replacement_outbids_the_pending_transaction_by_more_than_ten_percent() {
        let (max_fee, priority) = replacement_fees((100, 10), (1000, 100));
        assert!(max_fee * 10 > 1000 * 11 && priority * 10 > 100 * 11);
        assert!(max_fee >= priority);
        // A market that moved up is followed.
        assert_eq!(replacement_fees((5000, 500), (1000, 100)), (5000, 500));
    }

    #[test]
    fn log_ranges_cover_every_block_once_newest_first_and_never_exceed_the_step() {
        let r = ranges_newest_first(10, 34, 10);
        assert_eq!(r, vec![(25, 34), (15, 24), (10, 14)]);
        assert_eq!(ranges_newest_first(0, 0, 10), vec![(0, 0)]);
        assert_eq!(ranges_newest_first(5, 4, 10), vec![]);
        assert_eq!(ranges_newest_first(0, 9, 10), vec![(0, 9)]);
        assert_eq!(ranges_newest_first(0, 10, 10), vec![(1, 10), (0, 0)]);
    }
}
