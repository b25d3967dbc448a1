// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {ProviderBond} from "../../src/ProviderBond.sol";
import {ProviderBondHandler} from "./ProviderBondHandler.sol";

/// @notice Stateful fuzzing of ProviderBond: random stakes, unbond requests, withdrawals (also too early),
///         slash proposals (also too large or reusing evidence), appeals (also too late), appeal decisions,
///         lapses, cancellations, executions (also too early) and time jumps.
contract ProviderBondInvariantTest is Test {
    GpuFedToken internal token;
    ProviderBond internal bond;
    ProviderBondHandler internal handler;
    address internal treasury = makeAddr("bond-treasury");

    function setUp() public {
        vm.warp(1_700_000_000);
        address admin = makeAddr("bond-admin");
        address arbiter = makeAddr("bond-arbiter");
        address referee = makeAddr("bond-referee");
        token = new GpuFedToken(address(this));
        bond = new ProviderBond(token, admin, treasury, 2 days, 1 days);
        bytes32 arbiterRole = bond.ARBITER_ROLE();
        bytes32 refereeRole = bond.REFEREE_ROLE();
        vm.startPrank(admin);
        bond.grantRole(arbiterRole, arbiter);
        bond.grantRole(refereeRole, referee);
        vm.stopPrank();
        handler = new ProviderBondHandler(token, bond, arbiter, referee);
        token.transferOwnership(address(handler));

        bytes4[] memory selectors = new bytes4[](13);
        selectors[0] = ProviderBondHandler.stake.selector;
        selectors[1] = ProviderBondHandler.requestUnbond.selector;
        selectors[2] = ProviderBondHandler.withdraw.selector;
        selectors[3] = ProviderBondHandler.propose.selector;
        selectors[4] = ProviderBondHandler.overPropose.selector;
        selectors[5] = ProviderBondHandler.reuseEvidence.selector;
        selectors[6] = ProviderBondHandler.appeal.selector;
        selectors[7] = ProviderBondHandler.resolve.selector;
        selectors[8] = ProviderBondHandler.lapse.selector;
        selectors[9] = ProviderBondHandler.cancel.selector;
        selectors[10] = ProviderBondHandler.execute.selector;
        selectors[11] = ProviderBondHandler.warp.selector;
        selectors[12] = ProviderBondHandler.propose.selector; // proposals twice as likely
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// The contract holds exactly the bonded, unbonding and frozen tokens of all providers.
    function invariant_balanceEqualsBondedPlusUnbondingPlusFrozen() public view {
        assertEq(token.balanceOf(address(bond)), handler.sumHeld());
    }

    /// Conservation: every staked token was withdrawn, paid to a tenant or the treasury, or is still held.
    function invariant_stakedEqualsWithdrawnPlusSlashedPlusHeld() public view {
        assertEq(
            handler.totalStaked(),
            handler.totalWithdrawn() + handler.totalToTenants() + handler.totalToTreasury()
                + token.balanceOf(address(bond))
        );
        assertEq(token.balanceOf(treasury), handler.totalToTreasury(), "the rest reaches the treasury");
        assertEq(handler.sumTenantBalances(), handler.totalToTenants(), "shares reach the tenants");
        assertEq(handler.totalSlashed(), handler.totalToTenants() + handler.totalToTreasury());
        assertEq(handler.sumSlashedTotal(), handler.totalSlashed(), "slashedTotal bookkeeping");
    }

    /// Frozen tokens are exactly those of pending slashes.
    function invariant_frozenIsPending() public view {
        assertEq(handler.sumFrozen(), handler.pendingFrozen());
    }

    /// No withdrawal before the release time, no slash beyond the bond, no evidence hash used twice, no
    /// execution inside the appeal window, no appeal after it, no decision after the appeal lapsed.
    function invariant_noEarlyWithdrawOverSlashReuseEarlyExecutionOrLateAppeal() public view {
        assertEq(handler.earlyWithdrawals(), 0);
        assertEq(handler.overSlashes(), 0);
        assertEq(handler.evidenceReuses(), 0);
        assertEq(handler.earlyExecutions(), 0);
        assertEq(handler.lateAppeals(), 0);
        assertEq(handler.lateResolutions(), 0);
    }
}
