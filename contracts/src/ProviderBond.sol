// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title ProviderBond
/// @notice GPU providers stake a bond that an arbiter (the hub) can slash on evidence of misbehaviour.
///         A slash is proposed with an evidence hash, freezes the amount at once, and is executed only after
///         an appeal window; slashed tokens go to the harmed tenants named in the proposal, the rest to the
///         treasury. During the window the provider can appeal with the hash of its answer; a referee
///         (`REFEREE_ROLE`) upholds or dismisses the appeal, and an appeal nobody resolves within a second
///         window lapses in the provider's favour. Each evidence hash can be used for one slash, ever.
///         Leaving takes two steps, `requestUnbond` then `withdraw` after `unbondingDelay`, which is longer
///         than the appeal window; tokens that are unbonding stay slashable until they are withdrawn.
///         See docs/adr/0023-slashing-with-evidence.md.
/// @dev Invariant: token.balanceOf(this) == sum over providers of (bonded + unbonding + frozen)
///      (for tokens without transfer fees/rebasing; stakes are credited with what actually arrived).
contract ProviderBond is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Role that may propose and cancel slashes.
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");
    /// @notice Role that decides appeals.
    bytes32 public constant REFEREE_ROLE = keccak256("REFEREE_ROLE");

    /// @notice Longest unbonding delay the contract accepts (a longer one would trap bonds for good).
    uint64 public constant MAX_UNBONDING_DELAY = 365 days;
    /// @notice Most tenants one slash can compensate (bounds the gas of `executeSlash`).
    uint256 public constant MAX_TENANTS = 64;

    /// @notice Slash states.
    uint8 public constant SLASH_NONE = 0;
    uint8 public constant SLASH_PROPOSED = 1;
    uint8 public constant SLASH_APPEALED = 2;
    uint8 public constant SLASH_UPHELD = 3;
    uint8 public constant SLASH_EXECUTED = 4;
    uint8 public constant SLASH_CANCELLED = 5;

    struct Bond {
        uint256 bonded;
        uint256 unbonding;
        uint64 unbondingReleaseAt;
        uint256 slashedTotal;
        uint256 frozen;
    }

    struct Slash {
        address provider;
        uint64 executableAt;
        uint8 state;
        uint256 amount;
        bytes32 appealAnswer;
        address[] tenants;
        uint256[] shares;
    }

    /// @notice The ERC-20 staked here. Any standard ERC-20 works.
    IERC20 public immutable token;

    /// @notice Seconds between the latest `requestUnbond` and the earliest `withdraw`. Fixed at deployment so
    ///         the admin cannot trap bonds by raising it.
    uint64 public immutable unbondingDelay;

    /// @notice Seconds between `proposeSlash` and the earliest `executeSlash`; the provider may appeal within
    ///         it. Also how long a referee has to decide an appeal after the window ends. Always shorter
    ///         than `unbondingDelay`; fixed at deployment.
    uint64 public immutable appealWindow;

    /// @notice Receiver of slashed tokens not owed to tenants.
    address public treasury;

    mapping(address provider => Bond) private _bonds;
    mapping(bytes32 evidenceHash => Slash) private _slashes;

    /// @notice `provider` staked `amount`; its bonded balance is now `bonded`.
    event Staked(address indexed provider, uint256 amount, uint256 bonded);
    /// @notice `provider` moved `amount` from bonded to unbonding; `unbonding` in total is withdrawable
    ///         from `releaseAt`.
    event UnbondRequested(address indexed provider, uint256 amount, uint256 unbonding, uint64 releaseAt);
    /// @notice `provider` withdrew `amount` of released unbonding tokens.
    event Withdrawn(address indexed provider, uint256 amount);
    /// @notice The arbiter proposed slashing `amount` of `provider` on `evidenceHash`; it is frozen now and
    ///         executable from `executableAt` unless appealed; `compensated` of it goes to tenants.
    event SlashProposed(
        bytes32 indexed evidenceHash,
        address indexed provider,
        uint256 amount,
        uint256 compensated,
        uint64 executableAt
    );
    /// @notice `provider` appealed the slash on `evidenceHash` with the hash of its answer.
    event SlashAppealed(bytes32 indexed evidenceHash, address indexed provider, bytes32 answerHash);
    /// @notice The referee decided the appeal: `upheld` (the slash stands) or dismissed (cancelled).
    event AppealResolved(bytes32 indexed evidenceHash, address indexed referee, bool upheld);
    /// @notice The slash on `evidenceHash` was cancelled and its frozen tokens returned to `provider`'s bond.
    event SlashCancelled(bytes32 indexed evidenceHash, address indexed provider, uint256 amount);
    /// @notice `amount` of `provider`'s bond was slashed on `evidenceHash`: `compensated` went to tenants,
    ///         the rest to the treasury.
    event Slashed(address indexed provider, uint256 amount, bytes32 indexed evidenceHash);
    /// @notice `tenant` received `amount` from the slash on `evidenceHash`.
    event Compensated(bytes32 indexed evidenceHash, address indexed tenant, uint256 amount);
    /// @notice The receiver of slashed tokens changed.
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);

    /// @notice An address argument was the zero address.
    error ZeroAddress();
    /// @notice An amount argument (or the amount actually received) was zero.
    error ZeroAmount();
    /// @notice `requestUnbond` of more than is bonded.
    error InsufficientBond(uint256 bonded, uint256 requested);
    /// @notice `withdraw` with nothing unbonding.
    error NothingToWithdraw();
    /// @notice `withdraw` before the release time.
    error UnbondingNotReleased(uint64 releaseAt);
    /// @notice `proposeSlash` of more than the provider's bonded + unbonding tokens.
    error SlashExceedsBond(uint256 available, uint256 requested);
    /// @notice Constructor `unbondingDelay` above `MAX_UNBONDING_DELAY`.
    error UnbondingDelayTooLong(uint64 delay, uint64 maxDelay);
    /// @notice Constructor `appealWindow` zero, or not shorter than `unbondingDelay`.
    error AppealWindowInvalid(uint64 appealWindow, uint64 unbondingDelay);
    /// @notice `proposeSlash` with a zero evidence hash.
    error ZeroEvidence();
    /// @notice `proposeSlash` with an evidence hash that was used before (by any slash, in any state).
    error EvidenceAlreadyUsed(bytes32 evidenceHash);
    /// @notice `proposeSlash` with `tenants` and `shares` of different lengths.
    error LengthMismatch(uint256 tenants, uint256 shares);
    /// @notice `proposeSlash` naming more than `MAX_TENANTS` tenants.
    error TooManyTenants(uint256 count, uint256 max);
    /// @notice `proposeSlash` whose tenant shares add up to more than the amount.
    error SharesExceedAmount(uint256 shares, uint256 amount);
    /// @notice `proposeSlash` naming the slashed provider as a harmed tenant.
    error TenantIsProvider(address provider);
    /// @notice No slash under this evidence hash, or it is in a state that does not allow the call.
    error SlashNotInState(bytes32 evidenceHash, uint8 state);
    /// @notice `executeSlash` or `lapseAppeal` before its time; `appeal` after the window.
    error TooEarly(uint64 at);
    /// @notice `appeal` after the appeal window closed.
    error AppealWindowClosed(uint64 closedAt);
    /// @notice `appeal` by someone other than the slashed provider.
    error NotSlashedProvider(address caller, address provider);
    /// @notice `appeal` with a zero answer hash.
    error ZeroAnswer();
    /// @notice `resolveAppeal` once the appeal lapsed (from `executableAt + appealWindow`).
    error AppealLapsed(uint64 lapsedAt);

    /// @notice Creates the bond contract. Arbiters and referees are added afterwards with `grantRole`.
    /// @param token_ ERC-20 to stake.
    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (manages roles and the treasury).
    /// @param treasury_ Receiver of slashed tokens not owed to tenants.
    /// @param unbondingDelay_ Seconds from `requestUnbond` to `withdraw`, at most `MAX_UNBONDING_DELAY`.
    /// @param appealWindow_ Seconds from `proposeSlash` to `executeSlash`; at least 1 and less than
    ///        `unbondingDelay_`.
    constructor(
        IERC20 token_,
        address admin,
        address treasury_,
        uint64 unbondingDelay_,
        uint64 appealWindow_
    ) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) {
            revert UnbondingDelayTooLong(unbondingDelay_, MAX_UNBONDING_DELAY);
        }
        if (appealWindow_ == 0 || appealWindow_ >= unbondingDelay_) {
            revert AppealWindowInvalid(appealWindow_, unbondingDelay_);
        }
        token = token_;
        treasury = treasury_;
        unbondingDelay = unbondingDelay_;
        appealWindow = appealWindow_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TreasuryUpdated(address(0), treasury_);
    }

    /// @notice Sets the receiver of slashed tokens.
    /// @dev Only `DEFAULT_ADMIN_ROLE`. Reverts with `ZeroAddress` for the zero address.
    /// @param newTreasury New receiver.
    function setTreasury(address newTreasury) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newTreasury == address(0)) revert ZeroAddress();
        emit TreasuryUpdated(treasury, newTreasury);
        treasury = newTreasury;
    }

    /// @notice Pulls `amount` tokens from the caller (needs an ERC-20 allowance) into the caller's bond.
    /// @dev Credits what actually arrived. Reverts with `ZeroAmount`.
    /// @param amount Amount in token base units.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        Bond storage b = _bonds[msg.sender];
        uint256 bonded = b.bonded + received;
        b.bonded = bonded;
        emit Staked(msg.sender, received, bonded);
    }

    /// @notice Starts unbonding `amount` of the caller's bonded tokens.
    /// @dev The amount is added to anything already unbonding and the release time of the whole unbonding
    ///      balance is reset to `block.timestamp + unbondingDelay` (one queue per provider, so a provider
    ///      cannot shorten the delay by splitting requests). Reverts with `ZeroAmount` or `InsufficientBond`.
    /// @param amount Amount in token base units.
    function requestUnbond(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Bond storage b = _bonds[msg.sender];
        uint256 bonded = b.bonded;
        if (bonded < amount) revert InsufficientBond(bonded, amount);
        uint256 unbonding = b.unbonding + amount;
        uint64 releaseAt = uint64(block.timestamp) + unbondingDelay;
        unchecked {
            b.bonded = bonded - amount;
        }
        b.unbonding = unbonding;
        b.unbondingReleaseAt = releaseAt;
        emit UnbondRequested(msg.sender, amount, unbonding, releaseAt);
    }

    /// @notice Sends the caller's whole unbonding balance to the caller once its release time has come.
    /// @dev Allowed when `block.timestamp >= unbondingReleaseAt`. Reverts with `NothingToWithdraw` or
    ///      `UnbondingNotReleased`.
    function withdraw() external nonReentrant {
        Bond storage b = _bonds[msg.sender];
        uint256 amount = b.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        uint64 releaseAt = b.unbondingReleaseAt;
        if (block.timestamp < releaseAt) revert UnbondingNotReleased(releaseAt);
        b.unbonding = 0;
        b.unbondingReleaseAt = 0;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Proposes slashing `amount` of `provider`'s bond on `evidenceHash`, compensating `tenants[i]`
    ///         with `shares[i]` and the treasury with the rest. The amount is frozen at once (bonded tokens
    ///         first, then unbonding ones) so the provider cannot withdraw it while the slash is pending; it
    ///         can be executed from `block.timestamp + appealWindow`.
    /// @dev Only `ARBITER_ROLE`. Reverts with `ZeroEvidence`, `EvidenceAlreadyUsed`, `ZeroAmount`,
    ///      `ZeroAddress` (provider or a tenant), `LengthMismatch`, `TooManyTenants`, `TenantIsProvider`,
    ///      `SharesExceedAmount` or `SlashExceedsBond`; nothing changes then.
    /// @param provider Provider to slash.
    /// @param evidenceHash sha256 of the off-chain evidence record; usable once, ever.
    /// @param amount Amount in token base units.
    /// @param tenants Harmed tenants (payer addresses) to compensate.
    /// @param shares Token amount each tenant receives; their sum is at most `amount`.
    function proposeSlash(
        address provider,
        bytes32 evidenceHash,
        uint256 amount,
        address[] calldata tenants,
        uint256[] calldata shares
    ) external onlyRole(ARBITER_ROLE) nonReentrant {
        if (evidenceHash == bytes32(0)) revert ZeroEvidence();
        if (_slashes[evidenceHash].state != SLASH_NONE) revert EvidenceAlreadyUsed(evidenceHash);
        if (amount == 0) revert ZeroAmount();
        if (provider == address(0)) revert ZeroAddress();
        if (tenants.length != shares.length) revert LengthMismatch(tenants.length, shares.length);
        if (tenants.length > MAX_TENANTS) revert TooManyTenants(tenants.length, MAX_TENANTS);
        uint256 compensated;
        for (uint256 i; i < tenants.length; ++i) {
            if (tenants[i] == address(0)) revert ZeroAddress();
            if (tenants[i] == provider) revert TenantIsProvider(provider);
            compensated += shares[i];
        }
        if (compensated > amount) revert SharesExceedAmount(compensated, amount);

        Bond storage b = _bonds[provider];
        uint256 bonded = b.bonded;
        uint256 unbonding = b.unbonding;
        uint256 available = bonded + unbonding;
        if (available < amount) revert SlashExceedsBond(available, amount);
        if (amount <= bonded) {
            unchecked {
                b.bonded = bonded - amount;
            }
        } else {
            b.bonded = 0;
            unchecked {
                uint256 rest = unbonding - (amount - bonded);
                b.unbonding = rest;
                if (rest == 0) b.unbondingReleaseAt = 0;
            }
        }
        b.frozen += amount;

        uint64 executableAt = uint64(block.timestamp) + appealWindow;
        Slash storage s = _slashes[evidenceHash];
        s.provider = provider;
        s.executableAt = executableAt;
        s.state = SLASH_PROPOSED;
        s.amount = amount;
        s.tenants = tenants;
        s.shares = shares;
        emit SlashProposed(evidenceHash, provider, amount, compensated, executableAt);
    }

    /// @notice The slashed provider appeals the slash on `evidenceHash` before it becomes executable,
    ///         committing to `answerHash` (the hash of its answer to the same challenge, whose full text it
    ///         publishes off chain). The slash then waits for a referee.
    /// @dev Only the slashed provider, only while `SLASH_PROPOSED` and `block.timestamp < executableAt`.
    ///      Reverts with `SlashNotInState`, `NotSlashedProvider`, `AppealWindowClosed` or `ZeroAnswer`.
    function appeal(bytes32 evidenceHash, bytes32 answerHash) external {
        Slash storage s = _slashes[evidenceHash];
        if (s.state != SLASH_PROPOSED) revert SlashNotInState(evidenceHash, s.state);
        if (msg.sender != s.provider) revert NotSlashedProvider(msg.sender, s.provider);
        if (block.timestamp >= s.executableAt) revert AppealWindowClosed(s.executableAt);
        if (answerHash == bytes32(0)) revert ZeroAnswer();
        s.state = SLASH_APPEALED;
        s.appealAnswer = answerHash;
        emit SlashAppealed(evidenceHash, msg.sender, answerHash);
    }

    /// @notice The referee decides an appeal: `upheld` lets the slash be executed at once, otherwise the
    ///         slash is cancelled and its tokens go back to the provider's bond.
    /// @dev Only `REFEREE_ROLE`, only while `SLASH_APPEALED` and before `executableAt + appealWindow` (from
    ///      then on the appeal has lapsed in the provider's favour, whoever calls `lapseAppeal`). Reverts with
    ///      `SlashNotInState` or `AppealLapsed`.
    function resolveAppeal(bytes32 evidenceHash, bool upheld) external onlyRole(REFEREE_ROLE) nonReentrant {
        Slash storage s = _slashes[evidenceHash];
        if (s.state != SLASH_APPEALED) revert SlashNotInState(evidenceHash, s.state);
        uint64 lapsesAt = s.executableAt + appealWindow;
        if (block.timestamp >= lapsesAt) revert AppealLapsed(lapsesAt);
        emit AppealResolved(evidenceHash, msg.sender, upheld);
        if (upheld) {
            s.state = SLASH_UPHELD;
        } else {
            _cancel(evidenceHash, s);
        }
    }

    /// @notice Cancels an appeal no referee decided by `executableAt + appealWindow`: the doubt goes to the
    ///         provider. Anyone may call it.
    /// @dev Only while `SLASH_APPEALED`. Reverts with `SlashNotInState` or `TooEarly`.
    function lapseAppeal(bytes32 evidenceHash) external nonReentrant {
        Slash storage s = _slashes[evidenceHash];
        if (s.state != SLASH_APPEALED) revert SlashNotInState(evidenceHash, s.state);
        uint64 lapsesAt = s.executableAt + appealWindow;
        if (block.timestamp < lapsesAt) revert TooEarly(lapsesAt);
        _cancel(evidenceHash, s);
    }

    /// @notice The arbiter withdraws its own proposal (e.g. after checking an appeal's answer itself).
    /// @dev Only `ARBITER_ROLE`, only while `SLASH_PROPOSED` or `SLASH_APPEALED`. Reverts with `SlashNotInState`.
    function cancelSlash(bytes32 evidenceHash) external onlyRole(ARBITER_ROLE) nonReentrant {
        Slash storage s = _slashes[evidenceHash];
        if (s.state != SLASH_PROPOSED && s.state != SLASH_APPEALED) {
            revert SlashNotInState(evidenceHash, s.state);
        }
        _cancel(evidenceHash, s);
    }

    /// @notice Executes the slash on `evidenceHash`: pays each named tenant its share and the treasury the
    ///         rest. Anyone may call it once the appeal window has passed without appeal, or once a referee
    ///         upheld the appeal.
    /// @dev Reverts with `SlashNotInState` (none, appealed, executed, cancelled) or `TooEarly`.
    function executeSlash(bytes32 evidenceHash) external nonReentrant {
        Slash storage s = _slashes[evidenceHash];
        uint8 state = s.state;
        if (state == SLASH_PROPOSED) {
            if (block.timestamp < s.executableAt) revert TooEarly(s.executableAt);
        } else if (state != SLASH_UPHELD) {
            revert SlashNotInState(evidenceHash, state);
        }
        s.state = SLASH_EXECUTED;
        address provider = s.provider;
        uint256 amount = s.amount;
        Bond storage b = _bonds[provider];
        b.frozen -= amount;
        b.slashedTotal += amount;
        emit Slashed(provider, amount, evidenceHash);
        uint256 rest = amount;
        uint256 n = s.tenants.length;
        for (uint256 i; i < n; ++i) {
            uint256 share = s.shares[i];
            if (share == 0) continue;
            rest -= share;
            emit Compensated(evidenceHash, s.tenants[i], share);
            token.safeTransfer(s.tenants[i], share);
        }
        if (rest != 0) token.safeTransfer(treasury, rest);
    }

    function _cancel(bytes32 evidenceHash, Slash storage s) private {
        s.state = SLASH_CANCELLED;
        address provider = s.provider;
        uint256 amount = s.amount;
        Bond storage b = _bonds[provider];
        b.frozen -= amount;
        b.bonded += amount;
        emit SlashCancelled(evidenceHash, provider, amount);
    }

    /// @notice The slash proposed on `evidenceHash`.
    /// @return provider Slashed provider (zero if none).
    /// @return amount Amount frozen / slashed.
    /// @return executableAt Earliest execution time without appeal.
    /// @return state One of the `SLASH_*` constants.
    /// @return appealAnswer Answer hash the provider appealed with (zero if none).
    /// @return tenants Tenants compensated.
    /// @return shares Their shares.
    function getSlash(bytes32 evidenceHash)
        external
        view
        returns (
            address provider,
            uint256 amount,
            uint64 executableAt,
            uint8 state,
            bytes32 appealAnswer,
            address[] memory tenants,
            uint256[] memory shares
        )
    {
        Slash storage s = _slashes[evidenceHash];
        return (s.provider, s.amount, s.executableAt, s.state, s.appealAnswer, s.tenants, s.shares);
    }

    /// @notice Tokens of `provider` frozen under pending slashes (neither withdrawable nor slashable again).
    function frozenOf(address provider) external view returns (uint256) {
        return _bonds[provider].frozen;
    }

    /// @notice Bond of `provider`.
    /// @param provider Provider to query.
    /// @return bonded Tokens at stake and slashable.
    /// @return unbonding Tokens waiting for release (still slashable).
    /// @return unbondingReleaseAt Unix time from which `unbonding` can be withdrawn (0 if nothing unbonds).
    /// @return slashedTotal All tokens ever slashed from this provider.
    function bondOf(address provider)
        external
        view
        returns (uint256 bonded, uint256 unbonding, uint64 unbondingReleaseAt, uint256 slashedTotal)
    {
        Bond storage b = _bonds[provider];
        return (b.bonded, b.unbonding, b.unbondingReleaseAt, b.slashedTotal);
    }
}
