// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";
import {EscrowSigning} from "./Signing.sol";

/// @dev Common deployment for JobEscrow tests: GPF token, escrow with a 2.5 % fee, a 3-day admin delay, a
///      1-day claim window and 30-day maximum lock, a hub holding SETTLER_ROLE, two funded payers with token
///      allowances that have authorised the hub to lock up to `FUNDS` each for a year, two providers.
abstract contract EscrowFixture is EscrowSigning {
    uint16 internal constant FEE_BPS = 250;
    uint256 internal constant FUNDS = 1_000_000e18;
    uint48 internal constant ADMIN_DELAY = 3 days;
    uint64 internal constant CLAIM_WINDOW = 1 days;
    uint64 internal constant MAX_LOCK = 30 days;
    bytes32 internal constant JOB = keccak256("job-1");
    bytes32 internal constant JOB2 = keccak256("job-2");

    /// JobEscrow's `Settled`, for `vm.expectEmit`.
    event Settled(
        bytes32 indexed jobId,
        address indexed payer,
        address indexed provider,
        uint256 paid,
        uint256 fee,
        uint256 refund
    );

    GpuFedToken internal token;
    JobEscrow internal escrow;

    address internal admin = makeAddr("admin");
    address internal treasury = makeAddr("treasury");
    address internal hub = makeAddr("hub");
    uint256 internal hubKey = uint256(keccak256("hub")); // makeAddr's key for "hub"
    address internal alice = makeAddr("alice"); // payer
    address internal bob = makeAddr("bob"); // payer
    address internal prov1 = makeAddr("provider1");
    address internal prov2 = makeAddr("provider2");
    address internal stranger = makeAddr("stranger");

    bytes32 internal settlerRole;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        token = new GpuFedToken(address(this));
        escrow = _newEscrow(token, FEE_BPS);
        settlerRole = escrow.SETTLER_ROLE();
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub);

        address[2] memory payers = [alice, bob];
        for (uint256 i; i < payers.length; ++i) {
            token.mint(payers[i], FUNDS);
            vm.prank(payers[i]);
            token.approve(address(escrow), type(uint256).max);
            _authorise(escrow, payers[i], hub, FUNDS);
        }
    }

    /// @dev An escrow over `t` with the fixture's admin, treasury, delays and fee `bps`.
    function _newEscrow(IERC20 t, uint16 bps) internal returns (JobEscrow) {
        return new JobEscrow(t, admin, treasury, bps, ADMIN_DELAY, CLAIM_WINDOW, MAX_LOCK);
    }

    /// @dev `payer` lets `settler` lock up to `amount` on `e` for a year.
    function _authorise(JobEscrow e, address payer, address settler, uint256 amount) internal {
        vm.prank(payer);
        e.approveSpending(settler, amount, uint64(block.timestamp + 365 days));
    }

    function _deposit(address payer, uint256 amount) internal {
        vm.prank(payer);
        escrow.deposit(amount);
    }

    function _lock(bytes32 jobId, address payer, address provider, uint256 amount, uint64 deadline) internal {
        vm.prank(hub);
        escrow.lock(jobId, payer, provider, amount, deadline);
    }

    function _state(bytes32 jobId) internal view returns (uint8 state) {
        (,,,, state) = escrow.getLock(jobId);
    }

    function _soon() internal view returns (uint64) {
        return uint64(block.timestamp + 1 hours);
    }

    /// @dev The first timestamp at which a lock with `deadline` can be expired.
    function _expirable(uint64 deadline) internal pure returns (uint64) {
        return deadline + CLAIM_WINDOW + 1;
    }
}
