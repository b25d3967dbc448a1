// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {ProviderBond} from "../../src/ProviderBond.sol";

/// @dev Drives ProviderBond with random valid calls from providers and the arbiter; records ghost totals.
contract ProviderBondHandler is Test {
    GpuFedToken public immutable token;
    ProviderBond public immutable bond;
    address public immutable arbiter;
    address public immutable treasury;

    address[] public providers;
    uint256 public totalStaked;
    uint256 public totalWithdrawn;
    uint256 public totalSlashed;
    uint256 public earlyWithdrawals; // withdraw() succeeded before the release time
    uint256 public overSlashes; // slash() of more than the bond succeeded

    constructor(GpuFedToken token_, ProviderBond bond_, address arbiter_) {
        token = token_;
        bond = bond_;
        arbiter = arbiter_;
        treasury = bond_.treasury();
        for (uint256 i; i < 4; ++i) {
            providers.push(makeAddr(string.concat("bond-provider", vm.toString(i))));
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

    function slash(uint256 seed, uint256 amount, bytes32 evidence) external {
        address p = providers[seed % providers.length];
        (uint256 bonded, uint256 unbonding,,) = bond.bondOf(p);
        uint256 available = bonded + unbonding;
        if (available == 0) return;
        amount = bound(amount, 1, available);
        vm.prank(arbiter);
        bond.slash(p, amount, evidence);
        totalSlashed += amount;
    }

    function overSlash(uint256 seed, uint256 extra) external {
        address p = providers[seed % providers.length];
        (uint256 bonded, uint256 unbonding,,) = bond.bondOf(p);
        uint256 amount = bonded + unbonding + bound(extra, 1, 1e30);
        vm.prank(arbiter);
        try bond.slash(p, amount, bytes32(0)) {
            ++overSlashes;
        } catch {}
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 3 days));
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    function sumBondedAndUnbonding() external view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            (uint256 bonded, uint256 unbonding,,) = bond.bondOf(providers[i]);
            s += bonded + unbonding;
        }
    }

    function sumSlashedTotal() external view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            (,,, uint256 slashed) = bond.bondOf(providers[i]);
            s += slashed;
        }
    }
}
