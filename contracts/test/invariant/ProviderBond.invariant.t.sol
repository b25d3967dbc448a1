// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {ProviderBond} from "../../src/ProviderBond.sol";
import {ProviderBondHandler} from "./ProviderBondHandler.sol";

/// @notice Stateful fuzzing of ProviderBond: random stakes, unbond requests, withdrawals (also too early),
///         slashes (also too large) and time jumps.
contract ProviderBondInvariantTest is Test {
    GpuFedToken internal token;
    ProviderBond internal bond;
    ProviderBondHandler internal handler;
    address internal treasury = makeAddr("bond-treasury");

    function setUp() public {
        vm.warp(1_700_000_000);
        address admin = makeAddr("bond-admin");
        address arbiter = makeAddr("bond-arbiter");
        token = new GpuFedToken(address(this));
        bond = new ProviderBond(token, admin, treasury, 2 days);
        bytes32 arbiterRole = bond.ARBITER_ROLE();
        vm.prank(admin);
        bond.grantRole(arbiterRole, arbiter);
        handler = new ProviderBondHandler(token, bond, arbiter);
        token.transferOwnership(address(handler));

        bytes4[] memory selectors = new bytes4[](6);
        selectors[0] = ProviderBondHandler.stake.selector;
        selectors[1] = ProviderBondHandler.requestUnbond.selector;
        selectors[2] = ProviderBondHandler.withdraw.selector;
        selectors[3] = ProviderBondHandler.slash.selector;
        selectors[4] = ProviderBondHandler.overSlash.selector;
        selectors[5] = ProviderBondHandler.warp.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// The contract holds exactly the bonded plus unbonding tokens of all providers.
    function invariant_balanceEqualsBondedPlusUnbonding() public view {
        assertEq(token.balanceOf(address(bond)), handler.sumBondedAndUnbonding());
    }

    /// Every staked token was withdrawn, slashed to the treasury, or is still held.
    function invariant_stakedEqualsWithdrawnPlusSlashedPlusHeld() public view {
        assertEq(
            handler.totalStaked(),
            handler.totalWithdrawn() + handler.totalSlashed() + token.balanceOf(address(bond))
        );
        assertEq(token.balanceOf(treasury), handler.totalSlashed(), "slashed tokens reach the treasury");
        assertEq(handler.sumSlashedTotal(), handler.totalSlashed(), "slashedTotal bookkeeping");
    }

    /// No withdrawal before the release time, no slash beyond the bond.
    function invariant_noEarlyWithdrawOrOverSlash() public view {
        assertEq(handler.earlyWithdrawals(), 0);
        assertEq(handler.overSlashes(), 0);
    }
}
