// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title JobEscrow
/// @notice Holds payers' ERC-20 deposits, locks part of a deposit for one GPU job, and pays the provider
///         (minus a protocol fee to the treasury) when the hub settles the job.
/// @dev Money flow of one job:
///      1. payer `deposit`s tokens -> free deposit.
///      2. hub (`SETTLER_ROLE`) `lock`s `amount` of the payer's free deposit for `jobId`, fee rate snapshotted.
///      3a. hub `settle`s with `paid <= amount`: provider gets `paid - fee`, treasury gets `fee`,
///          `amount - paid` goes back to the payer's free deposit; or
///      3b. after `deadline` anyone may `expire` the lock: the whole `amount` goes back to the free deposit.
///      4. payer `withdraw`s free deposit at any time.
///      Invariant: token.balanceOf(this) == sum(free deposits) + sum(amount of Locked locks)
///      (for tokens without transfer fees/rebasing; deposits are credited with what actually arrived).
///      Every function that moves tokens is `nonReentrant`. Payouts follow checks-effects-interactions;
///      deposits credit after the pull because they must measure what actually arrived.
contract JobEscrow is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------------------------------------
    // Types and constants
    // ---------------------------------------------------------------------------------------------

    /// @notice Role of the hub: may lock deposits and settle jobs.
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

    // ---------------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------------

    /// @notice The ERC-20 this escrow holds. Any standard ERC-20 works.
    IERC20 public immutable token;

    /// @notice Receiver of protocol fees.
    address public treasury;

    /// @notice Protocol fee in basis points applied to locks created from now on (snapshotted per lock).
    uint16 public feeBps;

    mapping(address payer => uint256) private _deposits;
    mapping(bytes32 jobId => Lock) private _locks;

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
    /// @notice A lock amount above `type(uint96).max`.
    error AmountTooLarge(uint256 amount, uint256 max);
    /// @notice `jobId` is not in state Locked (`state` is its current state: 0 None, 2 Settled, 3 Expired).
    error LockNotActive(bytes32 jobId, uint8 state);
    /// @notice Settlement `paid` exceeds the `locked` amount of `jobId`.
    error PaidExceedsLocked(bytes32 jobId, uint256 paid, uint256 locked);
    /// @notice `jobId` cannot be expired before its `deadline` has passed.
    error LockNotExpired(bytes32 jobId, uint64 deadline);
    /// @notice `settleBatch` arrays of different lengths.
    error LengthMismatch(uint256 jobIds, uint256 paid);

    // ---------------------------------------------------------------------------------------------
    // Construction and administration
    // ---------------------------------------------------------------------------------------------

    /// @notice Creates the escrow. The settler (hub) is added afterwards with `grantRole(SETTLER_ROLE, hub)`.
    /// @param token_ ERC-20 held by this escrow.
    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (manages roles, fee and treasury).
    /// @param treasury_ Receiver of protocol fees.
    /// @param feeBps_ Initial fee in basis points, at most `MAX_FEE_BPS`.
    constructor(IERC20 token_, address admin, address treasury_, uint16 feeBps_) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_, MAX_FEE_BPS);
        token = token_;
        treasury = treasury_;
        feeBps = feeBps_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
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

    /// @notice Free (unlocked) deposit of `payer`: what `payer` can withdraw or the hub can lock.
    /// @param payer Account to query.
    /// @return Free deposit in token base units.
    function deposits(address payer) external view returns (uint256) {
        return _deposits[payer];
    }

    // ---------------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------------

    /// @notice Moves `amount` from `payer`'s free deposit into a lock for `jobId`, payable to `provider`.
    /// @dev Only `SETTLER_ROLE`. The current `feeBps` is snapshotted into the lock. Reverts with
    ///      `ZeroJobId`, `JobAlreadyExists` (ids are never reused, even after settlement/expiry),
    ///      `ZeroAddress` (payer or provider), `ZeroAmount`, `AmountTooLarge`, `DeadlineInPast`
    ///      (`deadline <= block.timestamp`) or `InsufficientDeposit`.
    /// @param jobId Unique job id chosen by the hub.
    /// @param payer Account whose free deposit funds the job.
    /// @param provider Account paid on settlement.
    /// @param amount Maximum the job may cost, in token base units.
    /// @param deadline Unix time after which anyone may `expire` the lock if it is still unsettled.
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
        uint256 available = _deposits[payer];
        if (available < amount) revert InsufficientDeposit(payer, available, amount);

        unchecked {
            _deposits[payer] = available - amount;
        }
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
    /// @dev Only `SETTLER_ROLE`. Allowed while the lock is Locked, also after its deadline as long as nobody
    ///      expired it. Reverts with `LockNotActive` (unknown, settled or expired) or `PaidExceedsLocked`.
    ///      `feeBps` is the one snapshotted at lock time.
    /// @param jobId Job to settle.
    /// @param paid What the job cost, at most the locked amount. 0 refunds everything.
    function settle(bytes32 jobId, uint256 paid) external onlyRole(SETTLER_ROLE) nonReentrant {
        (address provider, uint256 toProvider, uint256 fee) = _settle(jobId, paid);
        if (toProvider != 0) token.safeTransfer(provider, toProvider);
        if (fee != 0) token.safeTransfer(treasury, fee);
    }

    /// @notice Settles many jobs at once, with the same per-job rules and events as `settle`.
    /// @dev Only `SETTLER_ROLE`. All or nothing: if any item is invalid (not Locked, duplicated in the batch,
    ///      `paid` above its lock) the whole call reverts with that item's error, which names its jobId.
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
            (address provider, uint256 toProvider, uint256 fee) = _settle(jobIds[i], paid[i]);
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

    /// @notice Returns the whole lock of `jobId` to the payer's free deposit once its deadline has passed.
    /// @dev Anyone may call it (the payer, the hub, a keeper). Requires `block.timestamp > deadline` and
    ///      state Locked; reverts with `LockNotExpired` or `LockNotActive`.
    /// @param jobId Job whose lock expired.
    function expire(bytes32 jobId) external nonReentrant {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        uint64 deadline = l.deadline;
        if (block.timestamp <= deadline) revert LockNotExpired(jobId, deadline);

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
    /// @return amount Locked amount (kept after settlement/expiry; the paid part is in the `Settled` event).
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

    /// @dev Checks and effects of settling one job; the caller does the token transfers afterwards.
    function _settle(bytes32 jobId, uint256 paid)
        private
        returns (address provider, uint256 toProvider, uint256 fee)
    {
        Lock storage l = _locks[jobId];
        uint8 state = l.state;
        if (state != STATE_LOCKED) revert LockNotActive(jobId, state);
        uint256 amount = l.amount;
        if (paid > amount) revert PaidExceedsLocked(jobId, paid, amount);

        l.state = STATE_SETTLED;
        address payer = l.payer;
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
