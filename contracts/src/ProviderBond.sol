// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title ProviderBond
/// @notice GPU providers stake a bond that an arbiter can slash (to the treasury) on proven misbehaviour.
///         Leaving takes two steps, `requestUnbond` then `withdraw` after `unbondingDelay`, and tokens that
///         are unbonding stay slashable until they are withdrawn.
/// @dev Invariant: token.balanceOf(this) == sum over providers of (bonded + unbonding)
///      (for tokens without transfer fees/rebasing; stakes are credited with what actually arrived).
contract ProviderBond is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Role that may slash providers.
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");

    /// @notice Longest unbonding delay the contract accepts (a longer one would trap bonds for good).
    uint64 public constant MAX_UNBONDING_DELAY = 365 days;

    struct Bond {
        uint256 bonded;
        uint256 unbonding;
        uint64 unbondingReleaseAt;
        uint256 slashedTotal;
    }

    /// @notice The ERC-20 staked here. Any standard ERC-20 works.
    IERC20 public immutable token;

    /// @notice Seconds between the latest `requestUnbond` and the earliest `withdraw`. Fixed at deployment so
    ///         the admin cannot trap bonds by raising it.
    uint64 public immutable unbondingDelay;

    /// @notice Receiver of slashed tokens.
    address public treasury;

    mapping(address provider => Bond) private _bonds;

    /// @notice `provider` staked `amount`; its bonded balance is now `bonded`.
    event Staked(address indexed provider, uint256 amount, uint256 bonded);
    /// @notice `provider` moved `amount` from bonded to unbonding; `unbonding` in total is withdrawable
    ///         from `releaseAt`.
    event UnbondRequested(address indexed provider, uint256 amount, uint256 unbonding, uint64 releaseAt);
    /// @notice `provider` withdrew `amount` of released unbonding tokens.
    event Withdrawn(address indexed provider, uint256 amount);
    /// @notice `amount` of `provider`'s bond (bonded first, then unbonding) went to the treasury.
    event Slashed(address indexed provider, uint256 amount, bytes32 indexed evidenceHash);
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
    /// @notice `slash` of more than the provider's bonded + unbonding tokens.
    error SlashExceedsBond(uint256 available, uint256 requested);
    /// @notice Constructor `unbondingDelay` above `MAX_UNBONDING_DELAY`.
    error UnbondingDelayTooLong(uint64 delay, uint64 maxDelay);

    /// @notice Creates the bond contract. Arbiters are added afterwards with `grantRole(ARBITER_ROLE, a)`.
    /// @param token_ ERC-20 to stake.
    /// @param admin Receives `DEFAULT_ADMIN_ROLE` (manages roles and the treasury).
    /// @param treasury_ Receiver of slashed tokens.
    /// @param unbondingDelay_ Seconds from `requestUnbond` to `withdraw`, at most `MAX_UNBONDING_DELAY`
    ///        (0 allowed, e.g. for demos).
    constructor(IERC20 token_, address admin, address treasury_, uint64 unbondingDelay_) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) {
            revert ZeroAddress();
        }
        if (unbondingDelay_ > MAX_UNBONDING_DELAY) {
            revert UnbondingDelayTooLong(unbondingDelay_, MAX_UNBONDING_DELAY);
        }
        token = token_;
        treasury = treasury_;
        unbondingDelay = unbondingDelay_;
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

    /// @notice Slashes `amount` of `provider`'s bond, bonded tokens first and then unbonding ones, and sends
    ///         it to the treasury.
    /// @dev Only `ARBITER_ROLE`. Reverts with `ZeroAmount` or `SlashExceedsBond` (nothing is slashed then).
    /// @param provider Provider to slash.
    /// @param amount Amount in token base units.
    /// @param evidenceHash Hash of the off-chain evidence, recorded in the `Slashed` event.
    function slash(address provider, uint256 amount, bytes32 evidenceHash)
        external
        onlyRole(ARBITER_ROLE)
        nonReentrant
    {
        if (amount == 0) revert ZeroAmount();
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
        b.slashedTotal += amount;
        emit Slashed(provider, amount, evidenceHash);
        token.safeTransfer(treasury, amount);
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
