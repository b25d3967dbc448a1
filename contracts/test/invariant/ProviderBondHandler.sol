// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {ProviderBond} from "../../src/ProviderBond.sol";

/// @dev Drives ProviderBond with random calls from providers, the arbiter, the referee and anyone: stakes,
///      unbonding, withdrawals (also too early), slash proposals (also too large or with a used evidence
///      hash), appeals (also too late), appeal decisions, lapses, cancellations, executions (also too early)
///      and time jumps. Records ghost totals.
contract ProviderBondHandler is Test {
    GpuFedToken public immutable token;
    ProviderBond public immutable bond;
    address public immutable arbiter;
    address public immutable referee;
    address public immutable treasury;

    address[] public providers;
    address[] public tenants;
    bytes32[] public evidences; // every evidence hash a proposal succeeded with
    uint256 public totalStaked;
    uint256 public totalWithdrawn;
    uint256 public totalSlashed;
    uint256 public totalToTenants;
    uint256 public totalToTreasury;
    uint256 public pendingFrozen; // sum of amounts of slashes proposed, appealed or upheld
    uint256 public earlyWithdrawals; // withdraw() succeeded before the release time
    uint256 public overSlashes; // proposeSlash() of more than the bond succeeded
    uint256 public evidenceReuses; // proposeSlash() with a used evidence hash succeeded
    uint256 public earlyExecutions; // executeSlash() succeeded inside the appeal window without a decision
    uint256 public lateAppeals; // appeal() succeeded after the window
    uint256 public lateResolutions; // resolveAppeal() succeeded after the appeal lapsed
    uint256 private nonce;

    constructor(GpuFedToken token_, ProviderBond bond_, address arbiter_, address referee_) {
        token = token_;
        bond = bond_;
        arbiter = arbiter_;
        referee = referee_;
        treasury = bond_.treasury();
        for (uint256 i; i < 4; ++i) {
            providers.push(makeAddr(string.concat("bond-provider", vm.toString(i))));
        }
        for (uint256 i; i < 3; ++i) {
            tenants.push(makeAddr(string.concat("bond-tenant", vm.toString(i))));
        }
    }

    function stake(uint256 seed, uint256 amount) external {
        address p = providers[seed % providers.length];
        amount = bound(amount, 1, 1_000e18);
        token.mint(p, amount);
        vm.startPrank(p);
        token.approve(address(bond), amount);
        bond.stake(amount);
        vm.stopPrank();
        totalStaked += amount;
    }

    function requestUnbond(uint256 seed, uint256 amount) external {
        address p = providers[seed % providers.length];
        (uint256 bonded,,,) = bond.bondOf(p);
        if (bonded == 0) return;
        amount = bound(amount, 1, bonded);
        vm.prank(p);
        bond.requestUnbond(amount);
    }

    function withdraw(uint256 seed) external {
        address p = providers[seed % providers.length];
        (, uint256 unbonding, uint64 releaseAt,) = bond.bondOf(p);
        if (unbonding == 0) return;
        if (block.timestamp < releaseAt) {
            vm.prank(p);
            try bond.withdraw() {
                ++earlyWithdrawals;
            } catch {}
            return;
        }
        vm.prank(p);
        bond.withdraw();
        totalWithdrawn += unbonding;
    }

    /// A valid proposal with up to three tenants whose shares add up to at most the amount.
    function propose(uint256 seed, uint256 amount, uint256 shareSeed, uint8 tenantCount) external {
        address p = providers[seed % providers.length];
        (uint256 bonded, uint256 unbonding,,) = bond.bondOf(p);
        uint256 available = bonded + unbonding;
        if (available == 0) return;
        amount = bound(amount, 1, available);
        uint256 n = bound(tenantCount, 0, tenants.length);
        address[] memory ts = new address[](n);
        uint256[] memory shares = new uint256[](n);
        uint256 left = amount;
        for (uint256 i; i < n; ++i) {
            ts[i] = tenants[i];
            shares[i] = bound(uint256(keccak256(abi.encode(shareSeed, i))), 0, left);
            left -= shares[i];
        }
        bytes32 evidence = keccak256(abi.encode("evidence", ++nonce));
        vm.prank(arbiter);
        bond.proposeSlash(p, evidence, amount, ts, shares);
        evidences.push(evidence);
        pendingFrozen += amount;
    }

    function overPropose(uint256 seed, uint256 extra) external {
        address p = providers[seed % providers.length];
        (uint256 bonded, uint256 unbonding,,) = bond.bondOf(p);
        uint256 amount = bonded + unbonding + bound(extra, 1, 1e30);
        address[] memory none;
        vm.prank(arbiter);
        try bond.proposeSlash(p, keccak256(abi.encode("over", ++nonce)), amount, none, new uint256[](0)) {
            ++overSlashes;
        } catch {}
    }

    function reuseEvidence(uint256 seed, uint256 which) external {
        if (evidences.length == 0) return;
        address p = providers[seed % providers.length];
        bytes32 evidence = evidences[which % evidences.length];
        address[] memory none;
        vm.prank(arbiter);
        try bond.proposeSlash(p, evidence, 1, none, new uint256[](0)) {
            ++evidenceReuses;
        } catch {}
    }

    function appeal(uint256 which, bytes32 answer) external {
        if (evidences.length == 0) return;
        bytes32 evidence = evidences[which % evidences.length];
        (address p,, uint64 executableAt, uint8 state,,,) = bond.getSlash(evidence);
        if (state != bond.SLASH_PROPOSED()) return;
        if (answer == bytes32(0)) answer = bytes32(uint256(1));
        vm.prank(p);
        if (block.timestamp >= executableAt) {
            try bond.appeal(evidence, answer) {
                ++lateAppeals;
            } catch {}
            return;
        }
        bond.appeal(evidence, answer);
    }

    function resolve(uint256 which, bool upheld) external {
        if (evidences.length == 0) return;
        bytes32 evidence = evidences[which % evidences.length];
        (, uint256 amount, uint64 executableAt, uint8 state,,,) = bond.getSlash(evidence);
        if (state != bond.SLASH_APPEALED()) return;
        bool lapsed = block.timestamp >= executableAt + bond.appealWindow();
        vm.prank(referee);
        if (lapsed) {
            try bond.resolveAppeal(evidence, upheld) {
                ++lateResolutions;
            } catch {}
            return;
        }
        bond.resolveAppeal(evidence, upheld);
        if (!upheld) pendingFrozen -= amount;
    }

    function lapse(uint256 which) external {
        if (evidences.length == 0) return;
        bytes32 evidence = evidences[which % evidences.length];
        (, uint256 amount, uint64 executableAt, uint8 state,,,) = bond.getSlash(evidence);
        if (state != bond.SLASH_APPEALED() || block.timestamp < executableAt + bond.appealWindow()) return;
        bond.lapseAppeal(evidence);
        pendingFrozen -= amount;
    }

    function cancel(uint256 which) external {
        if (evidences.length == 0) return;
        bytes32 evidence = evidences[which % evidences.length];
        (, uint256 amount,, uint8 state,,,) = bond.getSlash(evidence);
        if (state != bond.SLASH_PROPOSED() && state != bond.SLASH_APPEALED()) return;
        vm.prank(arbiter);
        bond.cancelSlash(evidence);
        pendingFrozen -= amount;
    }

    function execute(uint256 which) external {
        if (evidences.length == 0) return;
        bytes32 evidence = evidences[which % evidences.length];
        (, uint256 amount, uint64 executableAt, uint8 state,, address[] memory ts, uint256[] memory shares) =
            bond.getSlash(evidence);
        bool due = (state == bond.SLASH_PROPOSED() && block.timestamp >= executableAt)
            || state == bond.SLASH_UPHELD();
        if (!due) {
            try bond.executeSlash(evidence) {
                if (state == bond.SLASH_PROPOSED()) ++earlyExecutions;
            } catch {}
            return;
        }
        uint256 toTreasuryBefore = token.balanceOf(treasury);
        bond.executeSlash(evidence);
        uint256 compensated;
        for (uint256 i; i < ts.length; ++i) {
            compensated += shares[i];
        }
        totalSlashed += amount;
        totalToTenants += compensated;
        totalToTreasury += amount - compensated;
        pendingFrozen -= amount;
        assertEq(token.balanceOf(treasury) - toTreasuryBefore, amount - compensated, "treasury gets the rest");
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 3 days));
    }

    function sumHeld() external view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            (uint256 bonded, uint256 unbonding,,) = bond.bondOf(providers[i]);
            s += bonded + unbonding + bond.frozenOf(providers[i]);
        }
    }

    function sumFrozen() external view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            s += bond.frozenOf(providers[i]);
        }
    }

    function sumTenantBalances() external view returns (uint256 s) {
        for (uint256 i; i < tenants.length; ++i) {
            s += token.balanceOf(tenants[i]);
        }
    }

    function sumSlashedTotal() external view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            (,,, uint256 slashed) = bond.bondOf(providers[i]);
            s += slashed;
        }
    }
}
