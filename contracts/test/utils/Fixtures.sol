// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";

/// @dev Common deployment for JobEscrow tests: GPF token, escrow with a 2.5 % fee, a hub holding
///      SETTLER_ROLE, two funded payers with allowances, two providers.
abstract contract EscrowFixture is Test {
    uint16 internal constant FEE_BPS = 250;
    uint256 internal constant FUNDS = 1_000_000e18;

    GpuFedToken internal token;
    JobEscrow internal escrow;

    address internal admin = makeAddr("admin");
    address internal treasury = makeAddr("treasury");
    address internal hub = makeAddr("hub");
    address internal alice = makeAddr("alice"); // payer
    address internal bob = makeAddr("bob"); // payer
    address internal prov1 = makeAddr("provider1");
    address internal prov2 = makeAddr("provider2");
    address internal stranger = makeAddr("stranger");

    bytes32 internal settlerRole;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        token = new GpuFedToken(address(this));
        escrow = new JobEscrow(token, admin, treasury, FEE_BPS);
        settlerRole = escrow.SETTLER_ROLE();
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub);

        address[2] memory payers = [alice, bob];
        for (uint256 i; i < payers.length; ++i) {
            token.mint(payers[i], FUNDS);
            vm.prank(payers[i]);
            token.approve(address(escrow), type(uint256).max);
        }
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
}
