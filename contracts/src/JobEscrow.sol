// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {
    AccessControlDefaultAdminRules
} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title JobEscrow
/// @notice Holds payers' ERC-20 deposits, locks part of a deposit for one GPU job, and pays the provider
///         (minus a protocol fee to the treasury) when the hub settles the job or the provider claims with a
///         usage receipt signed by the hub.
/// @dev Money flow of one job:
///      1. payer `deposit`s tokens -> free deposit, and authorises a settler (the hub's key) to lock up to
///         an amount of it until a time: `approveSpending`, or `permitSpending` with an EIP-712 signature.
///      2. that settler (`SETTLER_ROLE`) `lock`s `amount` of the payer's free deposit for `jobId` (at most
///         `maxLockDuration` ahead), which uses up `amount` of its authorisation; fee rate snapshotted.
///      3a. a settler `settle`s (or `settleBatch`es), or anyone `claim`s with the hub's signed
///          `UsageReceipt`, with `paid <= amount`: provider gets `paid - fee`, treasury gets `fee`,
///          `amount - paid` goes back to the payer's free deposit; or
///      3b. after `deadline + claimWindow` anyone may `expire` the lock: the whole `amount` goes back to the
///          free deposit.
///      4. payer `withdraw`s free deposit at any time.
///      Invariant: token.balanceOf(this) == sum(free deposits) + sum(amount of Locked locks)
///      (for tokens without transfer fees/rebasing; deposits are credited with what actually arrived).
///      Neither the admin nor a settler key can lock a payer's deposit beyond what that payer authorised that
///      very key for. Every function that moves tokens is `nonReentrant`. Payouts follow
///      checks-effects-interactions; deposits credit after the pull because they must measure what actually
///      arrived.
contract JobEscrow is AccessControlDefaultAdminRules, EIP712, Nonces, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------------
    // Types and constants
    // ---------------------------------------------------------------------------------------------

    /// @notice Role of the hub's key: may lock deposits (each payer's only within what that payer authorised
    ///         this very account for), settle locks, and sign usage receipts that providers `claim` with.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");

    /// @notice Highest protocol fee the admin can set: 10 %.
    uint16 public constant MAX_FEE_BPS = 1_000;

    /// @notice Lock states as returned by `getLock`.
    uint8 public constant STATE_NONE = 0;
    /// @notice See `STATE_NONE`.
    uint8 public constant STATE_LOCKED = 1;
    /// @notice See `STATE_NONE`.
    uint8 public constant STATE_SETTLED = 2;
    /// @notice See `STATE_NONE`.
    uint8 public constant STATE_EXPIRED = 3;

    /// @notice Longest `maxLockDuration` and `claimWindow` the constructor accepts.
    uint64 public constant MAX_DURATION_LIMIT = 365 days;

    /// @notice EIP-712 type hash of a payer's spending authorisation (see `permitSpending`).
    bytes32 public constant SPENDING_PERMIT_TYPEHASH = keccak256(
        "SpendingPermit(address payer,address settler,uint256 amount,uint64 validUntil,uint256 nonce,uint256 deadline)"
    );

    /// @notice EIP-712 type hash of a settler's usage receipt for one job (see `claim`).
    bytes32 public constant USAGE_RECEIPT_TYPEHASH = keccak256("UsageReceipt(bytes32 jobId,uint256 paid)");

    uint256 private constant BPS_DENOMINATOR = 10_000;

    /// @dev Two storage slots per job. Slot 0: payer (20 B) | deadline (8 B) | state (1 B) | feeBps (2 B).
    ///      Slot 1: provider (20 B) | amount (12 B). Settling reads both slots and rewrites slot 0 only.
    ///      `amount` is a uint96 (max ~7.9e28 base units, i.e. ~79 billion tokens at 18 decimals);
    ///      larger locks revert with `AmountTooLarge`.
    struct Lock {
        address payer;
        uint64 deadline;
        uint8 state;
        uint16 feeBps;
        address provider;
        uint96 amount;
    }

    /// @dev What a payer lets one settler lock: up to `remaining` in total, until `validUntil` (inclusive).
    ///      `everAuthorised` is set by the first non-zero authorisation and never cleared: it is what makes that
    ///      settler's usage receipts valid for the payer's locks (`claim`), so that revoking or running out of
    ///      an authorisation does not void receipts for work already done. One storage slot.
    struct Allowance {
        uint128 remaining;
        uint64 validUntil;
        bool everAuthorised;
    }

    // ---------------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------------

    /// @notice The ERC-20 this escrow holds. Any standard ERC-20 works.
    IERC20 public immutable token;

    /// @notice Receiver of protocol fees.
    address public treasury;

    /// @notice Protocol fee in basis points applied to locks created from now on (snapshotted per lock).
    uint16 public feeBps;

    /// @notice Seconds after a lock's deadline during which only a settlement or a claim can close it;
    ///         `expire` works from `deadline + claimWindow + 1` on. Gives the provider time to claim.
    uint64 public immutable claimWindow;

    /// @notice Longest time from `lock` to the lock's deadline, in seconds: `lock` reverts with
    ///         `DeadlineTooFar` for a deadline after `block.timestamp + maxLockDuration`.
    uint64 public immutable maxLockDuration;

    /// @notice Periods of a lock already paid by `settlePeriod` (0 for none; see there).
    mapping(bytes32 jobId => uint32) public periodsSettled;

    mapping(address payer => uint256) private _deposits;
    mapping(bytes32 jobId => Lock) private _locks;
    mapping(address payer => mapping(address settler => Allowance)) private _allowances;

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// @notice `amount` was credited to `payer`'s free deposit, pulled from `from`.
    event Deposited(address indexed payer, address indexed from, uint256 amount);
    /// @notice `payer` withdrew `amount` of free deposit.
    event Withdrawn(address indexed payer, uint256 amount);
    /// @notice `amount` of `payer`'s free deposit was locked for `jobId`, payable to `provider`.
    event Locked(
        bytes32 indexed jobId,
        address indexed payer,
        address indexed provider,
        uint256 amount,
        uint64 deadline,
        uint16 feeBps
    );
    /// @notice `jobId` was settled: `provider` got `paid - fee`, the treasury `fee`, the payer's free
    ///         deposit was credited `refund` (= locked amount - paid).
    event Settled(
        bytes32 indexed jobId,
        address indexed payer,
        address indexed provider,
        uint256 paid,
        uint256 fee,
        uint256 refund
    );
    /// @notice `jobId` passed its deadline unsettled; `amount` went back to `payer`'s free deposit.
    event Expired(bytes32 indexed jobId, address indexed payer, uint256 amount);

    /// @notice Period `period` of a still-running job was paid: `paid` out of its lock (provider share
    ///         plus `fee`); the lock keeps `remaining` for later periods and its settlement.
    event PeriodSettled(bytes32 indexed jobId, uint32 indexed period, uint256 paid, uint256 fee, uint256 remaining);
    /// @notice `extendLock` moved `added` more of `payer`'s free deposit into the lock of `jobId`, which now holds
    ///         `amount` and can be expired only after `deadline` (+ `claimWindow`).
    event LockExtended(bytes32 indexed jobId, address indexed payer, uint256 added, uint256 amount, uint64 deadline);
    /// @notice `payer` let `settler` lock up to `amount` of its deposit in total until `validUntil` (replacing
    ///         any earlier authorisation of that settler; 0 revokes). Emitted by `approveSpending` and
    ///         `permitSpending`.
    event SpendingApproved(address indexed payer, address indexed settler, uint256 amount, uint64 validUntil);
    /// @notice The fee for future locks changed.
    event FeeBpsUpdated(uint16 oldFeeBps, uint16 newFeeBps);
    /// @notice The fee receiver changed.
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);

    // ---------------------------------------------------------------------------------------------
    // Errors
    // ---------------------------------------------------------------------------------------------

    /// @notice An address argument was the zero address.
    error ZeroAddress();
    /// @notice An amount argument (or the amount actually received) was zero.
    error ZeroAmount();
    /// @notice jobId 0 is reserved (it is what an uninitialised id looks like).
    error ZeroJobId();
    /// @notice Fee above `MAX_FEE_BPS`.
    error FeeTooHigh(uint16 feeBps, uint16 maxFeeBps);
    /// @notice `payer`'s free deposit is `available`, less than the `required` amount.
    error InsufficientDeposit(address payer, uint256 available, uint256 required);
    /// @notice `jobId` was locked before (whatever its state now); job ids are never reused.
    error JobAlreadyExists(bytes32 jobId);
    /// @notice A lock's deadline must be strictly after the current block timestamp.
    error DeadlineInPast(uint64 deadline, uint256 currentTime);
    /// @notice An amount above `max` (`type(uint96).max` for a lock, `type(uint128).max` for an authorisation).
    error AmountTooLarge(uint256 amount, uint256 max);
    /// @notice A lock's deadline after `max` = `block.timestamp + maxLockDuration`.
    error DeadlineTooFar(uint64 deadline, uint256 max);
    /// @notice `payer`'s authorisation of `settler` ended at `validUntil` (non-zero).
    error SpendingAuthorisationExpired(address payer, address settler, uint64 validUntil);
    /// @notice `payer` authorised `settler` to lock `remaining` more, less than the `required` amount
    ///         (`remaining` 0 also when `payer` never authorised `settler`).
    error SpendingNotAuthorised(address payer, address settler, uint256 remaining, uint256 required);
    /// @notice A `permitSpending` submitted after its `deadline`.
    error PermitExpired(uint256 deadline);
    /// @notice A signature (permit or usage receipt) that does not check out, or a receipt signer that does not
    ///         hold `SETTLER_ROLE` or was never authorised by the lock's payer.
    error InvalidSignature();
    /// @notice Constructor `maxLockDuration` of 0 or above `MAX_DURATION_LIMIT`.
    error MaxLockDurationOutOfRange(uint64 maxLockDuration, uint64 limit);
    /// @notice Constructor `claimWindow` above `MAX_DURATION_LIMIT`.
    error ClaimWindowTooLong(uint64 claimWindow, uint64 limit);
    /// @notice `jobId` is not in state Locked (`state` is its current state: 0 None, 2 Settled, 3 Expired).
    error LockNotActive(bytes32 jobId, uint8 state);
    /// @notice Settlement `paid` exceeds the `locked` amount of `jobId`.
    error PaidExceedsLocked(bytes32 jobId, uint256 paid, uint256 locked);
    /// @notice `jobId` cannot be expired before `expiresAfter` (= its deadline + `claimWindow`) has passed.
    error LockNotExpired(bytes32 jobId, uint64 expiresAfter);
    /// @notice `settleBatch` arrays of different lengths.
    error LengthMismatch(uint256 jobIds, uint256 paid);
    /// @notice `settlePeriod` for a period other than the next unpaid one of the lock.
    error PeriodNotNext(bytes32 jobId, uint32 period, uint32 expected);
    /// @notice `extendLock` with a deadline before the lock's current `deadline` (a lock is never shortened).
    error DeadlineNotLater(bytes32 jobId, uint64 deadline, uint64 current);
    /// @notice `settler` may not settle `jobId`: the lock's `payer` never authorised it (see `approveSpending`).
    error SettlerNotAuthorised(bytes32 jobId, address payer, address settler);

    // ---------------------------------------------------------------------------------------------
    // Construction and administration
    // ---------------------------------------------------------------------------------------------

    /// @notice Creates the escrow. The settler (hub) is added afterwards with `grantRole(SETTLER_ROLE, hub)`;
    ///         payers then authorise it with `approveSpending`/`permitSpending`.
    /// @dev A zero `admin` reverts with OpenZeppelin's `AccessControlInvalidDefaultAdmin(address(0))`.
    /// @param token_ ERC-20 held by this escrow.
    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (manages roles, fee and treasury). It can only be handed over
    ///        in two steps, the second at least `adminDelay` after the first (`AccessControlDefaultAdminRules`).
    /// @param treasury_ Receiver of protocol fees.
    /// @param feeBps_ Initial fee in basis points, at most `MAX_FEE_BPS`.
    /// @param adminDelay Initial delay in seconds of an admin transfer (changeable by the admin, with a delay).
    /// @param claimWindow_ Seconds after a lock's deadline before it can be expired, at most `MAX_DURATION_LIMIT`.
    /// @param maxLockDuration_ Longest lock lifetime in seconds, 1 to `MAX_DURATION_LIMIT`.
    constructor(
        IERC20 token_,
        address admin,
        address treasury_,
        uint16 feeBps_,
        uint48 adminDelay,
        uint64 claimWindow_,
        uint64 maxLockDuration_
    ) AccessControlDefaultAdminRules(adminDelay, admin) EIP712("GpuFed JobEscrow", "1") {
        if (address(token_) == address(0) || treasury_ == address(0)) revert ZeroAddress();
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_, MAX_FEE_BPS);
        if (maxLockDuration_ == 0 || maxLockDuration_ > MAX_DURATION_LIMIT) {
            revert MaxLockDurationOutOfRange(maxLockDuration_, MAX_DURATION_LIMIT);
        }
        if (claimWindow_ > MAX_DURATION_LIMIT) revert ClaimWindowTooLong(claimWindow_, MAX_DURATION_LIMIT);
        token = token_;
        treasury = treasury_;
        feeBps = feeBps_;
        claimWindow = claimWindow_;
        maxLockDuration = maxLockDuration_;
        emit TreasuryUpdated(address(0), treasury_);
        emit FeeBpsUpdated(0, feeBps_);
    }

    /// @notice Sets the fee for locks created from now on; existing locks keep the fee they were locked with.
    /// @dev Only `DEFAULT_ADMIN_ROLE`. Reverts with `FeeTooHigh` above `MAX_FEE_BPS`.
    /// @param newFeeBps New fee in basis points.
    function setFeeBps(uint16 newFeeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newFeeBps > MAX_FEE_BPS) revert FeeTooHigh(newFeeBps, MAX_FEE_BPS);
        emit FeeBpsUpdated(feeBps, newFeeBps);
        feeBps = newFeeBps;
    }

    /// @notice Sets the receiver of protocol fees (applies to all future settlements).
    /// @dev Only `DEFAULT_ADMIN_ROLE`. Reverts with `ZeroAddress` for the zero address.
    /// @param newTreasury New fee receiver.
    function setTreasury(address newTreasury) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newTreasury == address(0)) revert ZeroAddress();
        emit TreasuryUpdated(treasury, newTreasury);
        treasury = newTreasury;
    }

    // ---------------------------------------------------------------------------------------------
    // Payers
    // ---------------------------------------------------------------------------------------------

    /// @notice Pulls `amount` tokens from the caller (needs an ERC-20 allowance) into the caller's free deposit.
    /// @dev Credits what actually arrived (balance difference), so fee-on-transfer tokens cannot break the
    ///      accounting. Reverts with `ZeroAmount` if nothing arrives.
    /// @param amount Amount in token base units.
    function deposit(uint256 amount) external nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @notice Pulls `amount` tokens from the caller into `payer`'s free deposit (e.g. a faucet or a sponsor).
    /// @dev Reverts with `ZeroAddress` for `payer == 0` and `ZeroAmount` if nothing arrives.
    /// @param payer Account whose free deposit is credited.
    /// @param amount Amount in token base units.
    function depositFor(address payer, uint256 amount) external nonReentrant {
        if (payer == address(0)) revert ZeroAddress();
        _deposit(payer, amount);
    }

    /// @notice Sends `amount` of the caller's free (unlocked) deposit back to the caller.
    /// @dev Reverts with `ZeroAmount` or `InsufficientDeposit`.
    /// @param amount Amount in token base units.
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 available = _deposits[msg.sender];
        if (available < amount) revert InsufficientDeposit(msg.sender, available, amount);
        unchecked {
            _deposits[msg.sender] = available - amount;
        }
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Free (unlocked) deposit of `payer`: what `payer` can withdraw or an authorised settler can lock.
    /// @param payer Account to query.
    /// @return Free deposit in token base units.
    function deposits(address payer) external view returns (uint256) {
        return _deposits[payer];
    }

    // ---------------------------------------------------------------------------------------------
    // Spending authorisations
    // ---------------------------------------------------------------------------------------------

    /// @notice Lets `settler` lock up to `amount` of the caller's free deposit in total, until `validUntil`
    ///         (inclusive, Unix time). Replaces the caller's earlier authorisation of `settler`; `amount` 0
    ///         revokes it.
    /// @dev Every `lock` by `settler` uses up its amount; settlement refunds and expiries do not give it
    ///      back (the allowance caps the total that settler may ever lock from the payer until replaced).
    ///      Reverts with `ZeroAddress` for settler 0 and `AmountTooLarge` above `type(uint128).max`.
    ///      Emits `SpendingApproved`.
    /// @param settler The settler account (the hub's key) being authorised.
    /// @param amount Total it may lock from now on, in token base units.
    /// @param validUntil Last Unix time at which it may lock.
    function approveSpending(address settler, uint256 amount, uint64 validUntil) external {
        _approveSpending(msg.sender, settler, amount, validUntil);
    }

    /// @notice Same as `approveSpending` called by `payer`, authorised by `payer`'s EIP-712 signature of
    ///         `SpendingPermit(address payer,address settler,uint256 amount,uint64 validUntil,uint256 nonce,
    ///         uint256 deadline)` in the domain `EIP712Domain("GpuFed JobEscrow", "1", chainId, this)`.
    ///         Anyone may submit it (e.g. the hub, paying the gas).
    /// @dev `nonce` is `nonces(payer)` and is consumed, so a permit works once and permits apply in order.
    ///      The signature is checked with OpenZeppelin's `SignatureChecker`: an ECDSA signature of an EOA
    ///      payer, or ERC-1271 `isValidSignature` of a contract payer (smart wallet). Reverts with
    ///      `PermitExpired` when `block.timestamp > deadline`, `InvalidSignature` when the signature does not
    ///      match (wrong signer, fields or nonce), and like `approveSpending` otherwise.
    /// @param payer Account whose deposit the permit concerns (the signer).
    /// @param settler The settler account being authorised.
    /// @param amount Total it may lock from now on, in token base units (0 revokes).
    /// @param validUntil Last Unix time at which it may lock.
    /// @param deadline Last Unix time at which the permit can be submitted.
    /// @param signature `payer`'s signature (65-byte r,s,v for an EOA; whatever its ERC-1271 check accepts).
    function permitSpending(
        address payer,
        address settler,
        uint256 amount,
        uint64 validUntil,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert PermitExpired(deadline);
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    SPENDING_PERMIT_TYPEHASH, payer, settler, amount, validUntil, _useNonce(payer), deadline
                )
            )
        );
        if (!SignatureChecker.isValidSignatureNowCalldata(payer, digest, signature)) {
            revert InvalidSignature();
        }
        _approveSpending(payer, settler, amount, validUntil);
    }

    /// @notice What `settler` may still lock from `payer`'s deposit, and until when.
    /// @param payer Account whose deposit it concerns.
    /// @param settler Settler account.
    /// @return remaining Amount it may still lock, in token base units.
    /// @return validUntil Last Unix time at which it may lock (0: never authorised, or revoked with 0).
    function spendingAllowance(address payer, address settler)
        external
        view
        returns (uint256 remaining, uint64 validUntil)
    {
        Allowance storage a = _allowances[payer][settler];
        return (a.remaining, a.validUntil);
    }

    /// @notice Whether `payer` has ever given `settler` a non-zero authorisation. If so, `settler`'s usage
    ///         receipts can settle `payer`'s locks through `claim` (while it holds `SETTLER_ROLE`), even after
    ///         the authorisation expired, was used up or was revoked.
    /// @param payer Account whose deposit it concerns.
    /// @param settler Settler account.
    /// @return True once `payer` authorised `settler` for a non-zero amount.
    function everAuthorised(address payer, address settler) external view returns (bool) {
        return _allowances[payer][settler].everAuthorised;
    }

    /// @notice The EIP-712 domain separator of this escrow (`name` "GpuFed JobEscrow", `version` "1", this
    ///         chain's id, this contract's address), for signing `SpendingPermit`s and `UsageReceipt`s.
    /// @return The domain separator.
    // forge-lint: disable-next-line(mixed-case-function)
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ---------------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------------

    /// @notice Moves `amount` from `payer`'s free deposit into a lock for `jobId`, payable to `provider`, using
    ///         up `amount` of what `payer` authorised the caller to lock.
    /// @dev Only `SETTLER_ROLE`, and only within the payer's authorisation of the caller (`approveSpending`,
    ///      `permitSpending`). The current `feeBps` is snapshotted into the lock. Reverts, in this order, with
    ///      `ZeroJobId`, `JobAlreadyExists` (ids are never reused, even after settlement/expiry),
    ///      `ZeroAddress` (payer or provider), `ZeroAmount`, `AmountTooLarge`, `DeadlineInPast`
    ///      (`deadline <= block.timestamp`), `DeadlineTooFar` (`deadline > block.timestamp +
    ///      maxLockDuration`), `SpendingAuthorisationExpired` (`block.timestamp > validUntil`),
    ///      `SpendingNotAuthorised` (remaining authorisation below `amount`; also, with `remaining` 0, when the
    ///      payer never authorised the caller, i.e. `validUntil` is 0) or `InsufficientDeposit`.
    /// @param jobId Unique job id chosen by the hub.
    /// @param payer Account whose free deposit funds the job.
    /// @param provider Account paid on settlement.
    /// @param amount Maximum the job may cost, in token base units.
    /// @param deadline Unix time after which the lock can be expired once `claimWindow` has passed too.
    function lock(bytes32 jobId, address payer, address provider, uint256 amount, uint64 deadline)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        if (jobId == bytes32(0)) revert ZeroJobId();
        Lock storage l = _locks[jobId];
        if (l.state != STATE_NONE) revert JobAlreadyExists(jobId);
        if (payer == address(0) || provider == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint96).max) revert AmountTooLarge(amount, type(uint96).max);
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline, block.timestamp);
        uint256 maxDeadline = block.timestamp + maxLockDuration;
        if (deadline > maxDeadline) revert DeadlineTooFar(deadline, maxDeadline);
        _spend(payer, amount);
        uint16 bps = feeBps;
        l.payer = payer;
        l.deadline = deadline;
        l.state = STATE_LOCKED;
        l.feeBps = bps;
        l.provider = provider;
        // casting to 'uint96' is safe because amount <= type(uint96).max was checked above
        // forge-lint: disable-next-line(unsafe-typecast)
        l.amount = uint96(amount);
        emit Locked(jobId, payer, provider, amount, deadline, bps);
    }

    /// @notice Settles `jobId`: pays `paid - fee` to the provider and `fee = paid * feeBps / 10000` to the
    ///         treasury, and credits `amount - paid` back to the payer's free deposit.
    /// @dev Only `SETTLER_ROLE`, and only a settler the lock's payer has ever authorised (`everAuthorised`;
    ///      the authorisation may since have expired or been used up), so a settler the admin creates cannot
    ///      pay out locks it has no authorisation for. Allowed while the lock is Locked: before its deadline,
    ///      during the claim window, and after it as long as nobody expired it. Reverts with `LockNotActive`
    ///      (unknown, settled or expired), `SettlerNotAuthorised` or `PaidExceedsLocked`. `feeBps` is the one
    ///      snapshotted at lock time. Pays only the lock's provider, the treasury and the payer's deposit.
    /// @param jobId Job to settle.
    /// @param paid What the job cost, at most the locked amount. 0 refunds everything.
    function settle(bytes32 jobId, uint256 paid) external onlyRole(SETTLER_ROLE) nonReentrant {
        (address provider, uint256 toProvider, uint256 fee) = _settle(jobId, paid, msg.sender);
        if (toProvider != 0) token.safeTransfer(provider, toProvider);
        if (fee != 0) token.safeTransfer(treasury, fee);
    }

    /// @notice Pays period `period` of a job that is still running (a serving job, paid while it runs)
    ///         out of its lock: `paid - fee` to the provider, `fee` to the treasury; the lock stays Locked
    ///         with `paid` less, for later periods and the final `settle` (which refunds what is left) or
    ///         `expire`. Periods are paid in order, each exactly once: `period` must be
    ///         `periodsSettled[jobId] + 1`, so a settler that sends a period twice (a restart, a resend)
    ///         gets `PeriodNotNext` the second time and nothing moves.
    /// @dev Only `SETTLER_ROLE`, for locks whose payer authorised the caller (as `settle`). Reverts with
    ///      `LockNotActive`, `SettlerNotAuthorised`, `PeriodNotNext` or `PaidExceedsLocked` (above what is
    ///      left). `paid` may be 0 (a period without usage still counts as paid).
    /// @param jobId Job whose lock pays.
    /// @param period The period paid, from 1.
    /// @param paid What the period cost, at most what is left of the lock.
    function settlePeriod(bytes32 jobId, uint32 period, uint256 paid)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        if (!_allowances[l.payer][msg.sender].everAuthorised) {
            revert SettlerNotAuthorised(jobId, l.payer, msg.sender);
        }
        uint32 expected = periodsSettled[jobId] + 1;
        if (period != expected) revert PeriodNotNext(jobId, period, expected);
        uint256 amount = l.amount;
        if (paid > amount) revert PaidExceedsLocked(jobId, paid, amount);
        uint256 fee;
        uint256 remaining;
        unchecked {
            // paid <= amount < 2^96 and feeBps <= MAX_FEE_BPS: no overflow, fee <= paid.
            fee = paid * l.feeBps / BPS_DENOMINATOR;
            remaining = amount - paid;
        }
        // casting to 'uint96' is safe because remaining <= amount, which is a uint96
        // forge-lint: disable-next-line(unsafe-typecast)
        l.amount = uint96(remaining);
        periodsSettled[jobId] = period;
        emit PeriodSettled(jobId, period, paid, fee, remaining);
        if (paid - fee != 0) token.safeTransfer(l.provider, paid - fee);
        if (fee != 0) token.safeTransfer(treasury, fee);
    }

    /// @notice Renews the coverage of a running (serving) job for its next window: moves `added` more from the
    ///         payer's free deposit into the Locked lock of `jobId` and moves its deadline to `deadline`. The
    ///         lock keeps its id, provider, fee, paid periods (`periodsSettled`) and what earlier periods paid;
    ///         `settlePeriod`, `settle`, `claim` and `expire` then work on the larger amount. Uses up `added` of
    ///         what the payer authorised the caller to lock, exactly like `lock`, so a payer's authorisation
    ///         bounds everything a hub can ever lock for it, renewals included.
    /// @dev Only `SETTLER_ROLE`. Reverts, in this order, with `LockNotActive` (unknown, settled or expired),
    ///      `ZeroAmount`, `AmountTooLarge` (the lock would exceed `type(uint96).max`), `DeadlineInPast`
    ///      (`deadline <= block.timestamp`), `DeadlineNotLater` (before the current deadline),
    ///      `DeadlineTooFar` (after `block.timestamp + maxLockDuration`), `SpendingAuthorisationExpired`,
    ///      `SpendingNotAuthorised` (also for a settler the payer never authorised) or `InsufficientDeposit`.
    /// @param jobId Job whose lock grows.
    /// @param added What the next window may cost, in token base units.
    /// @param deadline The lock's new deadline (the end of the next window), not before the current one.
    function extendLock(bytes32 jobId, uint256 added, uint64 deadline)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        if (added == 0) revert ZeroAmount();
        uint256 amount = uint256(l.amount) + added;
        if (amount > type(uint96).max) revert AmountTooLarge(amount, type(uint96).max);
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline, block.timestamp);
        if (deadline < l.deadline) revert DeadlineNotLater(jobId, deadline, l.deadline);
        uint256 maxDeadline = block.timestamp + maxLockDuration;
        if (deadline > maxDeadline) revert DeadlineTooFar(deadline, maxDeadline);
        address payer = l.payer;
        _spend(payer, added);
        l.deadline = deadline;
        // casting to 'uint96' is safe because amount <= type(uint96).max was checked above
        // forge-lint: disable-next-line(unsafe-typecast)
        l.amount = uint96(amount);
        emit LockExtended(jobId, payer, added, amount, deadline);
    }

    /// @notice Settles many jobs at once, with the same per-job rules and events as `settle`.
    /// @dev Only `SETTLER_ROLE`, for locks whose payers authorised the caller (as `settle`). All or nothing:
    ///      if any item is invalid (not Locked, duplicated in the batch, `paid` above its lock, a payer that
    ///      never authorised the caller) the whole call reverts with that item's error, which names its jobId.
    ///      Token transfers are aggregated: one transfer per distinct provider with a non-zero payout plus
    ///      one transfer of the summed fees to the treasury. Fees are computed (and rounded down) per job,
    ///      so a batch pays exactly what the same `settle` calls would. An empty batch does nothing.
    ///      Reverts with `LengthMismatch` if the arrays differ in length.
    /// @param jobIds Jobs to settle.
    /// @param paid `paid[i]` is the cost of `jobIds[i]`.
    function settleBatch(bytes32[] calldata jobIds, uint256[] calldata paid)
        external
        onlyRole(SETTLER_ROLE)
        nonReentrant
    {
        uint256 n = jobIds.length;
        if (n != paid.length) revert LengthMismatch(n, paid.length);

        // Distinct providers seen so far and what each is owed (at most n entries).
        address[] memory providers = new address[](n);
        uint256[] memory owed = new uint256[](n);
        uint256 distinct;
        uint256 last; // index of the most recently matched provider (batches are often grouped)
        uint256 totalFee;

        for (uint256 i; i < n; ++i) {
            (address provider, uint256 toProvider, uint256 fee) = _settle(jobIds[i], paid[i], msg.sender);
            totalFee += fee;
            uint256 k = last;
            if (distinct == 0 || providers[k] != provider) {
                for (k = 0; k < distinct; ++k) {
                    if (providers[k] == provider) break;
                }
                if (k == distinct) {
                    providers[k] = provider;
                    ++distinct;
                }
                last = k;
            }
            owed[k] += toProvider;
        }

        for (uint256 k; k < distinct; ++k) {
            uint256 amount = owed[k];
            if (amount != 0) token.safeTransfer(providers[k], amount);
        }
        if (totalFee != 0) token.safeTransfer(treasury, totalFee);
    }

    /// @notice Settles `jobId` with a usage receipt signed by a settler: exactly what `settle(jobId, paid)` by
    ///         that settler would do (same checks, `Settled` event and transfers). Lets the provider (or
    ///         anyone) get paid for finished work without waiting for the hub, in particular during the
    ///         `claimWindow` after the deadline, when the payer cannot expire the lock yet.
    /// @dev The receipt is the EIP-712 struct `UsageReceipt(bytes32 jobId,uint256 paid)` in this escrow's
    ///      domain (see `DOMAIN_SEPARATOR`), signed by `signer`; checked with OpenZeppelin's `SignatureChecker`
    ///      (ECDSA for an EOA, ERC-1271 for a contract). Valid only while `signer` holds `SETTLER_ROLE` and if
    ///      the lock's payer ever authorised `signer` (`everAuthorised`; the authorisation may since have
    ///      expired or been used up). A lock settles once, whichever of `settle`, `settleBatch` and `claim`
    ///      comes first. Reverts with `LockNotActive` (unknown, settled or expired), `InvalidSignature` or
    ///      `PaidExceedsLocked`.
    /// @param jobId Job to settle.
    /// @param paid What the job cost according to the receipt, at most the locked amount.
    /// @param signer The settler account that signed the receipt.
    /// @param signature `signer`'s signature of the receipt.
    function claim(bytes32 jobId, uint256 paid, address signer, bytes calldata signature)
        external
        nonReentrant
    {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(USAGE_RECEIPT_TYPEHASH, jobId, paid)));
        if (
            !hasRole(SETTLER_ROLE, signer) || !_allowances[l.payer][signer].everAuthorised
                || !SignatureChecker.isValidSignatureNowCalldata(signer, digest, signature)
        ) revert InvalidSignature();

        (address provider, uint256 toProvider, uint256 fee) = _settle(jobId, paid, address(0));
        if (toProvider != 0) token.safeTransfer(provider, toProvider);
        if (fee != 0) token.safeTransfer(treasury, fee);
    }

    /// @notice Returns the whole lock of `jobId` to the payer's free deposit once its deadline and the claim
    ///         window after it have passed.
    /// @dev Anyone may call it (the payer, the hub, a keeper). Requires state Locked and
    ///      `block.timestamp > deadline + claimWindow`; reverts with `LockNotActive` or `LockNotExpired`
    ///      (which carries `deadline + claimWindow`).
    /// @param jobId Job whose lock expired.
    function expire(bytes32 jobId) external nonReentrant {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        // deadline <= lock time + maxLockDuration and both durations are <= MAX_DURATION_LIMIT, so this fits
        // a uint64 for the next ~580 billion years.
        uint64 expiresAfter = l.deadline + claimWindow;
        if (block.timestamp <= expiresAfter) revert LockNotExpired(jobId, expiresAfter);

        l.state = STATE_EXPIRED;
        address payer = l.payer;
        uint256 amount = l.amount;
        _deposits[payer] += amount;
        emit Expired(jobId, payer, amount);
    }

    /// @notice The lock of `jobId`. The hub checks `state` before settling so that a restarted hub never
    ///         pays a job twice.
    /// @param jobId Job to query.
    /// @return payer Account that funded the lock (zero if none).
    /// @return provider Account paid on settlement.
    /// @return amount Locked amount, less what `settlePeriod` paid out of it (kept after settlement/expiry;
    ///         the paid part is in the `Settled` event).
    /// @return deadline Unix time after which the lock can be expired.
    /// @return state 0 None, 1 Locked, 2 Settled, 3 Expired.
    function getLock(bytes32 jobId)
        external
        view
        returns (address payer, address provider, uint128 amount, uint64 deadline, uint8 state)
    {
        Lock storage l = _locks[jobId];
        return (l.payer, l.provider, l.amount, l.deadline, l.state);
    }

    /// @notice The fee (basis points) snapshotted into the lock of `jobId` when it was created.
    /// @param jobId Job to query.
    /// @return Fee in basis points (0 for an unknown job).
    function lockFeeBps(bytes32 jobId) external view returns (uint16) {
        return _locks[jobId].feeBps;
    }

    // ---------------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------------

    function _deposit(address payer, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        _deposits[payer] += received;
        emit Deposited(payer, msg.sender, received);
    }

    /// @dev Sets `payer`'s authorisation of `settler` (checks and effects of approveSpending/permitSpending).
    function _approveSpending(address payer, address settler, uint256 amount, uint64 validUntil) private {
        if (settler == address(0)) revert ZeroAddress();
        if (amount > type(uint128).max) revert AmountTooLarge(amount, type(uint128).max);
        mapping(address settler => Allowance) storage ofPayer = _allowances[payer];
        bool sticky = amount != 0 || ofPayer[settler].everAuthorised;
        // casting to 'uint128' is safe because amount <= type(uint128).max was checked above
        // forge-lint: disable-next-line(unsafe-typecast)
        ofPayer[settler] = Allowance(uint128(amount), validUntil, sticky);
        emit SpendingApproved(payer, settler, amount, validUntil);
    }

    /// @dev Takes `amount` from `payer`'s deposit on the caller's spending authorisation (checks and
    ///      effects shared by lock and extendLock): the authorisation must be current and cover it, and
    ///      the deposit must hold it.
    function _spend(address payer, uint256 amount) private {
        Allowance storage a = _allowances[payer][msg.sender];
        uint64 validUntil = a.validUntil;
        if (block.timestamp > validUntil) {
            // validUntil 0: the payer never authorised the caller (or did so with validUntil 0)
            if (validUntil == 0) revert SpendingNotAuthorised(payer, msg.sender, 0, amount);
            revert SpendingAuthorisationExpired(payer, msg.sender, validUntil);
        }
        uint256 remaining = a.remaining;
        if (remaining < amount) revert SpendingNotAuthorised(payer, msg.sender, remaining, amount);
        uint256 available = _deposits[payer];
        if (available < amount) revert InsufficientDeposit(payer, available, amount);

        unchecked {
            // amount <= remaining < 2^128 and amount <= available: no underflow.
            // casting to 'uint128' is safe because the difference is at most remaining, a uint128
            // forge-lint: disable-next-line(unsafe-typecast)
            a.remaining = uint128(remaining - amount);
            _deposits[payer] = available - amount;
        }
    }

    /// @dev Checks and effects of settling one job; the caller does the token transfers afterwards.
    ///      `settler` is the settling account, checked against the payer's authorisations; `claim` passes 0
    ///      after checking its receipt's signer the same way.
    function _settle(bytes32 jobId, uint256 paid, address settler)
        private
        returns (address provider, uint256 toProvider, uint256 fee)
    {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        address payer = l.payer;
        if (settler != address(0) && !_allowances[payer][settler].everAuthorised) {
            revert SettlerNotAuthorised(jobId, payer, settler);
        }
        uint256 amount = l.amount;
        if (paid > amount) revert PaidExceedsLocked(jobId, paid, amount);

        l.state = STATE_SETTLED;
        provider = l.provider;
        uint256 refund;
        unchecked {
            // paid <= amount < 2^96 and feeBps <= MAX_FEE_BPS: no overflow, fee <= paid.
            refund = amount - paid;
            fee = paid * l.feeBps / BPS_DENOMINATOR;
            toProvider = paid - fee;
        }
        if (refund != 0) _deposits[payer] += refund;
        emit Settled(jobId, payer, provider, paid, fee, refund);
    }
}
