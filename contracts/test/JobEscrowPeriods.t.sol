// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowFixture} from "./utils/Fixtures.sol";

/// @notice `settlePeriod`: a running (serving) job's lock paid period by period, each period exactly
///         once, then settled or expired with what is left (docs/adr/0030-serving-jobs.md).
contract JobEscrowPeriodsTest is EscrowFixture {
    event PeriodSettled(bytes32 indexed jobId, uint32 indexed period, uint256 paid, uint256 fee, uint256 remaining);

    function _fee(uint256 paid) internal pure returns (uint256) {
        return paid * uint256(FEE_BPS) / 10_000;
    }

    function test_settlePeriod_paysProviderAndTreasuryAndKeepsTheRestLocked() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        vm.expectEmit(address(escrow));
        emit PeriodSettled(JOB, 1, 10e18, _fee(10e18), 30e18);
        vm.prank(hub);
        escrow.settlePeriod(JOB, 1, 10e18);

        assertEq(token.balanceOf(prov1), 10e18 - _fee(10e18));
        assertEq(token.balanceOf(treasury), _fee(10e18));
        assertEq(escrow.periodsSettled(JOB), 1);
        assertEq(_state(JOB), 1, "still locked");
        (,, uint128 amount,,) = escrow.getLock(JOB);
        assertEq(amount, 30e18);
        assertEq(escrow.deposits(alice), 60e18, "the free deposit is untouched");
        assertEq(token.balanceOf(address(escrow)), 90e18);
    }

    function test_settlePeriod_eachPeriodOnlyOnceAndInOrder() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        vm.startPrank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PeriodNotNext.selector, JOB, uint32(2), uint32(1)));
        escrow.settlePeriod(JOB, 2, 1e18);
        escrow.settlePeriod(JOB, 1, 1e18);
        // The same period again (a hub restarted after sending it): refused, nothing moves.
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PeriodNotNext.selector, JOB, uint32(1), uint32(2)));
        escrow.settlePeriod(JOB, 1, 1e18);
        escrow.settlePeriod(JOB, 2, 2e18);
        vm.stopPrank();
        assertEq(escrow.periodsSettled(JOB), 2);
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury), 3e18);
    }

    function test_settlePeriod_neverPaysMoreThanIsLeft() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.startPrank(hub);
        escrow.settlePeriod(JOB, 1, 6e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB, 5e18, 4e18));
        escrow.settlePeriod(JOB, 2, 5e18);
        escrow.settlePeriod(JOB, 2, 4e18);
        vm.stopPrank();
        (,, uint128 amount,,) = escrow.getLock(JOB);
        assertEq(amount, 0);
    }

    function test_settleAfterPeriods_paysTheLastPartAndRefundsWhatIsLeft() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        vm.startPrank(hub);
        escrow.settlePeriod(JOB, 1, 10e18);
        escrow.settlePeriod(JOB, 2, 10e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB, 25e18, 20e18));
        escrow.settle(JOB, 25e18);
        escrow.settle(JOB, 5e18);
        vm.stopPrank();
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury), 25e18);
        assertEq(escrow.deposits(alice), 75e18, "60 free + 15 refunded");
        assertEq(token.balanceOf(address(escrow)), 75e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.settlePeriod(JOB, 3, 0);
    }

    function test_expireAfterPeriods_refundsOnlyWhatIsLeft() public {
        _deposit(alice, 100e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 40e18, deadline);
        vm.prank(hub);
        escrow.settlePeriod(JOB, 1, 30e18);
        vm.warp(_expirable(deadline));
        escrow.expire(JOB);
        assertEq(escrow.deposits(alice), 70e18);
        assertEq(token.balanceOf(address(escrow)), 70e18);
    }

    function test_settlePeriod_onlyAnAuthorisedSettler() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        vm.prank(stranger);
        vm.expectRevert();
        escrow.settlePeriod(JOB, 1, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB2, uint8(0)));
        escrow.settlePeriod(JOB2, 1, 0);
    }

    /// Any split of a lock into periods and a final settlement pays exactly what one settlement of the
    /// sum would, fees rounded per period.
    function testFuzz_periodsThenSettle_conserveTheLock(uint96 amount, uint96 a, uint96 b, uint96 c) public {
        amount = uint96(bound(amount, 1, 1_000_000e18));
        a = uint96(bound(a, 0, amount));
        b = uint96(bound(b, 0, amount - a));
        c = uint96(bound(c, 0, amount - a - b));
        _deposit(alice, amount);
        _lock(JOB, alice, prov1, amount, _soon());
        vm.startPrank(hub);
        escrow.settlePeriod(JOB, 1, a);
        escrow.settlePeriod(JOB, 2, b);
        escrow.settle(JOB, c);
        vm.stopPrank();
        uint256 paid = uint256(a) + b + c;
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury), paid);
        assertEq(token.balanceOf(treasury), _fee(a) + _fee(b) + _fee(c));
        assertEq(escrow.deposits(alice), amount - paid);
        assertEq(token.balanceOf(address(escrow)), amount - paid);
    }
}
