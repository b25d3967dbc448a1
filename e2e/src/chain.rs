//! A local chain for tests and the demo: a real `anvil` on 127.0.0.1 with the gpufed contracts
//! deployed from forge's build artifacts (`contracts/out`), a funded payer per team, staked
//! providers, and the hub's settlement role granted — using alloy, like the hub itself.
//!
//! Accounts are anvil's well-known development keys (never use them anywhere else).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;

use crate::chaos::history::{ChainEvent, EscrowReadout, UnloggedLock};
use crate::process::{Process, free_port};
use crate::{Error, Tools, wait_until};

alloy::sol! {
    #[sol(rpc)]
    interface ITestToken {
        function mint(address to, uint256 amount) external;
        function approve(address spender, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
    }
    #[sol(rpc)]
    interface ITestEscrow {
        function SETTLER_ROLE() external view returns (bytes32);
        function grantRole(bytes32 role, address account) external;
        function deposit(uint256 amount) external;
        function withdraw(uint256 amount) external;
        function deposits(address payer) external view returns (uint256);
        function getLock(bytes32 jobId) external view
            returns (address payer, address provider, uint128 amount, uint64 deadline, uint8 state);
        function feeBps() external view returns (uint16);
        function lock(bytes32 jobId, address payer, address provider, uint256 amount, uint64 deadline) external;
        function approveSpending(address settler, uint256 amount, uint64 validUntil) external;
        function spendingAllowance(address payer, address settler) external view
            returns (uint256 remaining, uint64 validUntil);
        function claim(bytes32 jobId, uint256 paid, address signer, bytes signature) external;
        event Deposited(address indexed payer, address indexed from, uint256 amount);
        event Withdrawn(address indexed payer, uint256 amount);
        event Locked(bytes32 indexed jobId, address indexed payer, address indexed provider,
            uint256 amount, uint64 deadline, uint16 feeBps);
        event Settled(bytes32 indexed jobId, address indexed payer, address indexed provider,
            uint256 paid, uint256 fee, uint256 refund);
        event Expired(bytes32 indexed jobId, address indexed payer, uint256 amount);
    }
    #[sol(rpc)]
    interface ITestBond {
        function ARBITER_ROLE() external view returns (bytes32);
        function grantRole(bytes32 role, address account) external;
        function stake(uint256 amount) external;
        function requestUnbond(uint256 amount) external;
        function REFEREE_ROLE() external view returns (bytes32);
        function appeal(bytes32 evidenceHash, bytes32 answerHash) external;
        function bondOf(address provider) external view
            returns (uint256 bonded, uint256 unbonding, uint64 unbondingReleaseAt, uint256 slashedTotal);
    }
}

/// anvil's development accounts `(private key, address)`, by role.
pub mod accounts {
    /// Deployer, contract admin, arbiter.
    pub const ADMIN: (&str, &str) = (
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    );
    /// Payer of namespace team-a.
    pub const PAYER_A: (&str, &str) = (
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    );
    /// Payer of namespace team-b.
    pub const PAYER_B: (&str, &str) = (
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    );
    /// Provider of member alpha.
    pub const ALPHA: (&str, &str) = (
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    );
    /// Provider of member beta.
    pub const BETA: (&str, &str) = (
        "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
        "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    );
    /// Provider of member gamma.
    pub const GAMMA: (&str, &str) = (
        "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
        "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    );
    /// The hub's settlement account.
    pub const HUB: (&str, &str) = (
        "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
        "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    );
    /// The pool's treasury (receives fees and slashes).
    pub const TREASURY: (&str, &str) = (
        "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
        "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    );
}

/// One whole token in base units (18 decimals).
pub fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

/// JobEscrow's delay before a new admin takes over (`AccessControlDefaultAdminRules`).
pub const ADMIN_DELAY_SECS: u64 = 3600;
/// JobEscrow's claim window: after a lock's deadline, this long only settle and claim work.
pub const CLAIM_WINDOW_SECS: u64 = 600;
/// ProviderBond's unbonding delay.
pub const UNBONDING_DELAY_SECS: u64 = 60;
/// ProviderBond's appeal window (shorter than the unbonding delay, ADR 0023).
pub const APPEAL_WINDOW_SECS: u64 = 30;
/// JobEscrow's longest lock.
pub const MAX_LOCK_SECS: u64 = 30 * 24 * 3600;

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Deployed contract addresses.
#[derive(Clone, Debug)]
pub struct Contracts {
    /// GpuFedToken.
    pub token: Address,
    /// JobEscrow.
    pub escrow: Address,
    /// ProviderBond.
    pub bond: Address,
}

/// A running anvil.
pub struct Chain {
    /// The anvil process (stop it to simulate an RPC outage).
    pub process: Option<Process>,
    /// JSON-RPC URL.
    pub url: String,
    port: u16,
    log: std::path::PathBuf,
    anvil: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn address(s: &str) -> Result<Address, Error> {
    Address::from_str(s).map_err(|e| Error::Other(format!("address {s}: {e}")))
}

impl Chain {
    /// Starts anvil (chain id 31337, instant mining) with its state saved under `dir`, so a
    /// restart keeps every deployed contract and balance.
    pub async fn start(tools: &Tools, dir: &Path) -> Result<Chain, Error> {
        let port = free_port()?;
        let mut chain = Chain {
            process: None,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log: dir.join("anvil.log"),
            anvil: tools.bin("anvil")?,
            state: dir.join("anvil-state.json"),
        };
        chain.resume().await?;
        Ok(chain)
    }

    /// Starts (again) the anvil process on the same port and state file.
    pub async fn resume(&mut self) -> Result<(), Error> {
        let args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
            "--chain-id".into(),
            "31337".into(),
            "--state".into(),
            self.state.display().to_string(),
            "--state-interval".into(),
            "1".into(),
        ];
        self.process = Some(Process::spawn("anvil", &self.anvil, &args, &[], &self.log)?);
        let provider = ProviderBuilder::new()
            .connect_http(self.url.parse().map_err(|e| Error::Other(format!("{e}")))?);
        wait_until(Duration::from_secs(30), "anvil to answer", || async {
            provider.get_block_number().await.ok()
        })
        .await?;
        Ok(())
    }

    /// Stops anvil (SIGTERM, so it writes its state file first).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// A provider signing as `key`.
    pub fn signer(&self, key: &str) -> Result<DynProvider, Error> {
        let signer =
            PrivateKeySigner::from_str(key).map_err(|e| Error::Other(format!("key: {e}")))?;
        let url = self.url.parse().map_err(|e| Error::Other(format!("{e}")))?;
        Ok(ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(url)
            .erased())
    }

    async fn deploy(&self, tools: &Tools, name: &str, args: Vec<u8>) -> Result<Address, Error> {
        let artifact = tools
            .root()
            .join(format!("contracts/out/{name}.sol/{name}.json"));
        let text = std::fs::read_to_string(&artifact).map_err(|e| {
            Error::Other(format!(
                "{}: {e} (build the contracts first: `make contracts`)",
                artifact.display()
            ))
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Other(e.to_string()))?;
        let code = json["bytecode"]["object"].as_str().unwrap_or_default();
        let mut bytes =
            alloy::hex::decode(code).map_err(|e| Error::Other(format!("{name} bytecode: {e}")))?;
        bytes.extend(args);
        let admin = self.signer(accounts::ADMIN.0)?;
        let tx = TransactionRequest::default().with_deploy_code(Bytes::from(bytes));
        let receipt = admin
            .send_transaction(tx)
            .await
            .map_err(|e| Error::Other(format!("deploying {name}: {e}")))?
            .get_receipt()
            .await
            .map_err(|e| Error::Other(format!("deploying {name}: {e}")))?;
        receipt
            .contract_address
            .ok_or_else(|| Error::Other(format!("deploying {name}: no contract address")))
    }

    /// [`start`](Self::start)s anvil in `dir` and [`deploy_all`](Self::deploy_all)s the
    /// contracts on it.
    pub async fn start_deployed(
        tools: &Tools,
        dir: &Path,
        fee_bps: u16,
        funds: u64,
        deposit: u64,
        stake: u64,
    ) -> Result<(Chain, Contracts), Error> {
        let chain = Chain::start(tools, dir).await?;
        let contracts = chain
            .deploy_all(tools, fee_bps, funds, deposit, stake)
            .await?;
        Ok((chain, contracts))
    }

    /// Deploys GpuFedToken, JobEscrow (fee `fee_bps`) and ProviderBond (unbonding delay 60 s,
    /// appeal window 30 s), grants the hub the settler role and the admin the arbiter and referee
    /// roles, mints `funds` tokens to each payer and provider, deposits
    /// each payer's `deposit` and stakes each provider's `stake`.
    pub async fn deploy_all(
        &self,
        tools: &Tools,
        fee_bps: u16,
        funds: u64,
        deposit: u64,
        stake: u64,
    ) -> Result<Contracts, Error> {
        self.deploy_all_with_token(tools, "GpuFedToken", 18, fee_bps, funds, deposit, stake)
            .await
    }

    /// [`deploy_all`](Self::deploy_all) with another token contract of `decimals` decimals
    /// (built by forge, with GpuFedToken's constructor and `mint`), e.g. `SixDecimalsToken`.
    #[allow(clippy::too_many_arguments)]
    pub async fn deploy_all_with_token(
        &self,
        tools: &Tools,
        token_contract: &str,
        decimals: u8,
        fee_bps: u16,
        funds: u64,
        deposit: u64,
        stake: u64,
    ) -> Result<Contracts, Error> {
        let tokens = |n: u64| U256::from(n) * U256::from(10u64).pow(U256::from(decimals));
        let admin_addr = address(accounts::ADMIN.1)?;
        let treasury = address(accounts::TREASURY.1)?;
        let token = self
            .deploy(tools, token_contract, (admin_addr,).abi_encode_params())
            .await?;
        let escrow = self
            .deploy(
                tools,
                "JobEscrow",
                (
                    token,
                    admin_addr,
                    treasury,
                    fee_bps,
                    alloy::primitives::Uint::<48, 1>::from(ADMIN_DELAY_SECS),
                    CLAIM_WINDOW_SECS,
                    MAX_LOCK_SECS,
                )
                    .abi_encode_params(),
            )
            .await?;
        let bond = self
            .deploy(
                tools,
                "ProviderBond",
                (
                    token,
                    admin_addr,
                    treasury,
                    UNBONDING_DELAY_SECS,
                    APPEAL_WINDOW_SECS,
                )
                    .abi_encode_params(),
            )
            .await?;
        let c = Contracts {
            token,
            escrow,
            bond,
        };
        let admin = self.signer(accounts::ADMIN.0)?;
        let esc = ITestEscrow::new(escrow, &admin);
        let role = esc
            .SETTLER_ROLE()
            .call()
            .await
            .map_err(|e| Error::Other(format!("SETTLER_ROLE: {e}")))?;
        self.confirm(
            esc.grantRole(role, address(accounts::HUB.1)?).send().await,
            "granting the settler role",
        )
        .await?;
        let bnd = ITestBond::new(bond, &admin);
        let arbiter = bnd
            .ARBITER_ROLE()
            .call()
            .await
            .map_err(|e| Error::Other(format!("ARBITER_ROLE: {e}")))?;
        self.confirm(
            bnd.grantRole(arbiter, admin_addr).send().await,
            "granting the arbiter role",
        )
        .await?;
        let referee = bnd
            .REFEREE_ROLE()
            .call()
            .await
            .map_err(|e| Error::Other(format!("REFEREE_ROLE: {e}")))?;
        self.confirm(
            bnd.grantRole(referee, admin_addr).send().await,
            "granting the referee role",
        )
        .await?;
        let tok = ITestToken::new(token, &admin);
        for (_, who) in [
            accounts::PAYER_A,
            accounts::PAYER_B,
            accounts::ALPHA,
            accounts::BETA,
            accounts::GAMMA,
        ] {
            self.confirm(
                tok.mint(address(who)?, tokens(funds)).send().await,
                "minting",
            )
            .await?;
        }
        let a_year = unix_now() + 365 * 24 * 3600;
        for (key, _) in [accounts::PAYER_A, accounts::PAYER_B] {
            if deposit > 0 {
                self.deposit(&c, key, tokens(deposit)).await?;
            }
            // Each payer authorises the hub's account to lock up to everything it owns.
            self.authorise(&c, key, accounts::HUB.1, tokens(funds), a_year)
                .await?;
        }
        for (key, _) in [accounts::ALPHA, accounts::BETA, accounts::GAMMA] {
            if stake > 0 {
                self.stake(&c, key, tokens(stake)).await?;
            }
        }
        Ok(c)
    }

    async fn confirm(
        &self,
        sent: Result<
            alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
            alloy::contract::Error,
        >,
        what: &str,
    ) -> Result<(), Error> {
        let pending = sent.map_err(|e| Error::Other(format!("{what}: {e}")))?;
        let receipt = pending
            .get_receipt()
            .await
            .map_err(|e| Error::Other(format!("{what}: {e}")))?;
        if receipt.status() {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "{what}: transaction {} reverted",
                receipt.transaction_hash
            )))
        }
    }

    /// `key` approves the escrow and deposits `amount`.
    pub async fn deposit(&self, c: &Contracts, key: &str, amount: U256) -> Result<(), Error> {
        let p = self.signer(key)?;
        let tok = ITestToken::new(c.token, &p);
        self.confirm(
            tok.approve(c.escrow, amount).send().await,
            "approving the escrow",
        )
        .await?;
        let esc = ITestEscrow::new(c.escrow, &p);
        self.confirm(esc.deposit(amount).send().await, "depositing")
            .await
    }

    /// The admin mints `amount` base units of the token to `who`.
    pub async fn mint(&self, c: &Contracts, who: &str, amount: U256) -> Result<(), Error> {
        let admin = self.signer(accounts::ADMIN.0)?;
        let tok = ITestToken::new(c.token, &admin);
        self.confirm(tok.mint(address(who)?, amount).send().await, "minting")
            .await
    }

    /// `key` (a payer) authorises `settler` to lock up to `amount` of its deposit until `valid_until`.
    pub async fn authorise(
        &self,
        c: &Contracts,
        key: &str,
        settler: &str,
        amount: U256,
        valid_until: u64,
    ) -> Result<(), Error> {
        let p = self.signer(key)?;
        let esc = ITestEscrow::new(c.escrow, &p);
        self.confirm(
            esc.approveSpending(address(settler)?, amount, valid_until)
                .send()
                .await,
            "authorising spending",
        )
        .await
    }

    /// What `payer` authorised `settler` to lock: (remaining, valid until).
    pub async fn allowance(
        &self,
        c: &Contracts,
        payer: &str,
        settler: &str,
    ) -> Result<(U256, u64), Error> {
        let p = self.signer(accounts::ADMIN.0)?;
        let a = ITestEscrow::new(c.escrow, &p)
            .spendingAllowance(address(payer)?, address(settler)?)
            .call()
            .await
            .map_err(|e| Error::Other(format!("spendingAllowance: {e}")))?;
        Ok((a.remaining, a.validUntil))
    }

    /// `key` locks `amount` of `payer`'s deposit for `provider` under `job_id` for an hour (as a
    /// settler would).
    pub async fn lock_as(
        &self,
        c: &Contracts,
        key: &str,
        job_id: &str,
        payer: &str,
        provider: &str,
        amount: U256,
    ) -> Result<(), Error> {
        let deadline = unix_now() + 3600;
        let p = self.signer(key)?;
        let id = alloy::primitives::B256::from_str(job_id)
            .map_err(|e| Error::Other(format!("{job_id}: {e}")))?;
        let esc = ITestEscrow::new(c.escrow, &p);
        self.confirm(
            esc.lock(id, address(payer)?, address(provider)?, amount, deadline)
                .send()
                .await,
            "locking",
        )
        .await
    }

    /// `key` submits the hub-signed usage receipt of `job_id` (`JobEscrow.claim`).
    pub async fn claim(
        &self,
        c: &Contracts,
        key: &str,
        job_id: &str,
        paid: U256,
        signer: &str,
        signature: &str,
    ) -> Result<(), Error> {
        let p = self.signer(key)?;
        let id = alloy::primitives::B256::from_str(job_id)
            .map_err(|e| Error::Other(format!("{job_id}: {e}")))?;
        let sig =
            alloy::hex::decode(signature).map_err(|e| Error::Other(format!("signature: {e}")))?;
        let esc = ITestEscrow::new(c.escrow, &p);
        self.confirm(
            esc.claim(id, paid, address(signer)?, Bytes::from(sig))
                .send()
                .await,
            "claiming",
        )
        .await
    }

    /// A raw JSON-RPC call (anvil's `evm_*`/`anvil_*` controls).
    pub async fn rpc(
        &self,
        method: &'static str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let p = ProviderBuilder::new()
            .connect_http(self.url.parse().map_err(|e| Error::Other(format!("{e}")))?);
        p.raw_request::<_, serde_json::Value>(method.into(), params)
            .await
            .map_err(|e| Error::Other(format!("{method}: {e}")))
    }

    /// Turns anvil's mining of every transaction on arrival on or off.
    pub async fn set_automine(&self, on: bool) -> Result<(), Error> {
        self.rpc("evm_setAutomine", serde_json::json!([on]))
            .await
            .map(|_| ())
    }

    /// Mines `n` blocks.
    pub async fn mine(&self, n: u64) -> Result<(), Error> {
        self.rpc("anvil_mine", serde_json::json!([format!("0x{n:x}")]))
            .await
            .map(|_| ())
    }

    /// Sets `who`'s ether balance (gas money) to `wei`.
    pub async fn set_balance(&self, who: &str, wei: U256) -> Result<(), Error> {
        self.rpc(
            "anvil_setBalance",
            serde_json::json!([who, format!("0x{wei:x}")]),
        )
        .await
        .map(|_| ())
    }

    /// Transactions of `who`: (mined, pending) nonces.
    pub async fn nonces(&self, who: &str) -> Result<(u64, u64), Error> {
        let p = ProviderBuilder::new()
            .connect_http(self.url.parse().map_err(|e| Error::Other(format!("{e}")))?);
        let a = address(who)?;
        let mined = p
            .get_transaction_count(a)
            .latest()
            .await
            .map_err(|e| Error::Other(format!("nonce: {e}")))?;
        let pending = p
            .get_transaction_count(a)
            .pending()
            .await
            .map_err(|e| Error::Other(format!("nonce: {e}")))?;
        Ok((mined, pending))
    }

    /// `key` withdraws `amount` of its free deposit.
    pub async fn withdraw(&self, c: &Contracts, key: &str, amount: U256) -> Result<(), Error> {
        let p = self.signer(key)?;
        let esc = ITestEscrow::new(c.escrow, &p);
        self.confirm(esc.withdraw(amount).send().await, "withdrawing")
            .await
    }

    /// `key` approves the bond contract and stakes `amount`.
    pub async fn stake(&self, c: &Contracts, key: &str, amount: U256) -> Result<(), Error> {
        let p = self.signer(key)?;
        let tok = ITestToken::new(c.token, &p);
        self.confirm(
            tok.approve(c.bond, amount).send().await,
            "approving the bond",
        )
        .await?;
        let b = ITestBond::new(c.bond, &p);
        self.confirm(b.stake(amount).send().await, "staking").await
    }

    /// `key` asks to unbond `amount`.
    pub async fn request_unbond(
        &self,
        c: &Contracts,
        key: &str,
        amount: U256,
    ) -> Result<(), Error> {
        let p = self.signer(key)?;
        let b = ITestBond::new(c.bond, &p);
        self.confirm(b.requestUnbond(amount).send().await, "requesting unbond")
            .await
    }

    /// The provider with key `key` appeals the slash on `evidence` with `answer`.
    pub async fn appeal(
        &self,
        c: &Contracts,
        key: &str,
        evidence: [u8; 32],
        answer: [u8; 32],
    ) -> Result<(), Error> {
        let p = self.signer(key)?;
        let b = ITestBond::new(c.bond, &p);
        self.confirm(
            b.appeal(evidence.into(), answer.into()).send().await,
            "appealing",
        )
        .await
    }

    /// The bond's admin grants `ARBITER_ROLE` (proposing and cancelling slashes) to `who`.
    pub async fn grant_arbiter(&self, c: &Contracts, who: &str) -> Result<(), Error> {
        let admin = self.signer(accounts::ADMIN.0)?;
        let b = ITestBond::new(c.bond, &admin);
        let arbiter = b
            .ARBITER_ROLE()
            .call()
            .await
            .map_err(|e| Error::Other(format!("ARBITER_ROLE: {e}")))?;
        self.confirm(
            b.grantRole(arbiter, address(who)?).send().await,
            "granting the arbiter role",
        )
        .await
    }

    /// Moves anvil's clock `secs` forward and mines a block at the new time.
    pub async fn advance_time(&self, secs: u64) -> Result<(), Error> {
        self.rpc("evm_increaseTime", serde_json::json!([secs]))
            .await?;
        self.mine(1).await
    }

    /// Token balance of `who`.
    pub async fn balance_of(&self, c: &Contracts, who: &str) -> Result<U256, Error> {
        let p = self.signer(accounts::ADMIN.0)?;
        ITestToken::new(c.token, &p)
            .balanceOf(address(who)?)
            .call()
            .await
            .map_err(|e| Error::Other(format!("balanceOf: {e}")))
    }

    /// Free escrow deposit of `who`.
    pub async fn deposit_of(&self, c: &Contracts, who: &str) -> Result<U256, Error> {
        let p = self.signer(accounts::ADMIN.0)?;
        ITestEscrow::new(c.escrow, &p)
            .deposits(address(who)?)
            .call()
            .await
            .map_err(|e| Error::Other(format!("deposits: {e}")))
    }

    /// State of the lock under `job_id` (0 none, 1 locked, 2 settled, 3 expired) and its amount.
    pub async fn lock_state(&self, c: &Contracts, job_id: &str) -> Result<(u8, u128), Error> {
        let p = self.signer(accounts::ADMIN.0)?;
        let id = alloy::primitives::B256::from_str(job_id)
            .map_err(|e| Error::Other(format!("{job_id}: {e}")))?;
        let l = ITestEscrow::new(c.escrow, &p)
            .getLock(id)
            .call()
            .await
            .map_err(|e| Error::Other(format!("getLock: {e}")))?;
        Ok((l.state, l.amount))
    }

    /// Every JobEscrow money event since block 0, in chain order (for the chaos recorder).
    pub async fn escrow_events(&self, c: &Contracts) -> Result<Vec<ChainEvent>, Error> {
        use alloy::sol_types::SolEvent;
        let p = self.signer(accounts::ADMIN.0)?;
        let filter = alloy::rpc::types::Filter::new()
            .address(c.escrow)
            .from_block(0);
        let logs = p
            .get_logs(&filter)
            .await
            .map_err(|e| Error::Other(format!("reading escrow events: {e}")))?;
        let amount = |v: U256| u128::try_from(v).map_err(|e| Error::Other(format!("{v}: {e}")));
        let decode = |e: alloy::sol_types::Error| Error::Other(format!("decoding an event: {e}"));
        let mut out = vec![];
        for log in logs {
            let block = log.block_number.unwrap_or(0);
            let Some(topic) = log.topic0() else { continue };
            let ev = match *topic {
                ITestEscrow::Deposited::SIGNATURE_HASH => {
                    let e = ITestEscrow::Deposited::decode_log_data(log.data()).map_err(decode)?;
                    ChainEvent::Deposited {
                        block,
                        payer: e.payer.to_string(),
                        amount: amount(e.amount)?,
                    }
                }
                ITestEscrow::Withdrawn::SIGNATURE_HASH => {
                    let e = ITestEscrow::Withdrawn::decode_log_data(log.data()).map_err(decode)?;
                    ChainEvent::Withdrawn {
                        block,
                        payer: e.payer.to_string(),
                        amount: amount(e.amount)?,
                    }
                }
                ITestEscrow::Locked::SIGNATURE_HASH => {
                    let e = ITestEscrow::Locked::decode_log_data(log.data()).map_err(decode)?;
                    ChainEvent::Locked {
                        block,
                        job_id: e.jobId.to_string(),
                        amount: amount(e.amount)?,
                    }
                }
                ITestEscrow::Settled::SIGNATURE_HASH => {
                    let e = ITestEscrow::Settled::decode_log_data(log.data()).map_err(decode)?;
                    ChainEvent::Settled {
                        block,
                        job_id: e.jobId.to_string(),
                        paid: amount(e.paid)?,
                        fee: amount(e.fee)?,
                        refund: amount(e.refund)?,
                    }
                }
                ITestEscrow::Expired::SIGNATURE_HASH => {
                    let e = ITestEscrow::Expired::decode_log_data(log.data()).map_err(decode)?;
                    ChainEvent::Expired {
                        block,
                        job_id: e.jobId.to_string(),
                        amount: amount(e.amount)?,
                    }
                }
                _ => continue,
            };
            out.push(ev);
        }
        Ok(out)
    }

    /// The escrow's balances read from the contract: the free deposits of `payers`, the amounts of
    /// `locks` (ids of `Locked` events) still open (state 1), and the escrow's token balance. The
    /// ids in `hub_locks` (what the hub recorded on attempts) that are not in `locks` are read too:
    /// one the contract knows is an [`UnloggedLock`], and counted in `locked` while open.
    pub async fn escrow_readout(
        &self,
        c: &Contracts,
        payers: &[String],
        locks: &[String],
        hub_locks: &[String],
    ) -> Result<EscrowReadout, Error> {
        let mut r = EscrowReadout::default();
        for payer in payers {
            r.free += u128::try_from(self.deposit_of(c, payer).await?)
                .map_err(|e| Error::Other(format!("deposit of {payer}: {e}")))?;
        }
        for id in locks {
            let (state, amount) = self.lock_state(c, id).await?;
            if state == 1 {
                r.locked += amount;
            }
        }
        let logged: std::collections::BTreeSet<String> =
            locks.iter().map(|l| l.to_lowercase()).collect();
        let unlogged: std::collections::BTreeSet<String> = hub_locks
            .iter()
            .map(|l| l.to_lowercase())
            .filter(|l| !logged.contains(l))
            .collect();
        for id in unlogged {
            let (state, amount) = self.lock_state(c, &id).await?;
            if state == 0 {
                continue;
            }
            if state == 1 {
                r.locked += amount;
            }
            r.unlogged.push(UnloggedLock {
                job_id: id,
                state,
                amount,
            });
        }
        r.escrow_balance = u128::try_from(self.balance_of(c, &c.escrow.to_string()).await?)
            .map_err(|e| Error::Other(format!("escrow balance: {e}")))?;
        Ok(r)
    }
}
