// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowFixture} from "./utils/Fixtures.sol";

/// @notice `extendLock`: a serving job's lock renewed one window at a time from the payer's deposit, paid
///         period by period across the renewals (docs/adr/0030-serving-jobs.md, "Renewed windows").
contract JobEscrowRenewalTest is EscrowFixture {
    event LockExtended(
        bytes32 indexed jobId, address indexed payer, uint256 added, uint256 amount, uint64 deadline
    );

    function _fee(uint256 paid) internal pure returns (uint256) {
        return paid * uint256(FEE_BPS) / 10_000;
    }

    function _amount(bytes32 jobId) internal view returns (uint256 amount, uint64 deadline) {
        (,, uint128 a, uint64 d,) = escrow.getLock(jobId);
        return (a, d);
    }

    function test_extendLock_movesTheNextWindowFromTheDepositAndPushesTheDeadline() public {
        _deposit(alice, 100e18);
        uint64 first = _soon();
        _lock(JOB, alice, prov1, 40e18, first);
        vm.prank(hub);
        escrow.settlePeriod(JOB, 1, 10e18);
        uint64 second = first + 1 hours;
        vm.expectEmit(address(escrow));
        emit LockExtended(JOB, alice, 40e18, 70e18, second);
        vm.prank(hub);
        escrow.extendLock(JOB, 40e18, second);

        (uint256 amount, uint64 deadline) = _amount(JOB);
        assertEq(amount, 70e18, "30 left of the first window + 40 for the next");
        assertEq(deadline, second);
        assertEq(escrow.deposits(alice), 20e18);
        assertEq(escrow.periodsSettled(JOB), 1, "the paid periods carry over");
        (uint256 remaining,) = escrow.spendingAllowance(alice, hub);
        assertEq(remaining, FUNDS - 80e18, "a renewal uses up the authorisation like a lock");
        assertEq(token.balanceOf(address(escrow)), 90e18);

        // Periods go on counting across the renewal; the final settlement refunds what is left.
        vm.startPrank(hub);
        escrow.settlePeriod(JOB, 2, 30e18);
        escrow.settle(JOB, 5e18);
        vm.stopPrank();
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury), 45e18);
        assertEq(escrow.deposits(alice), 55e18, "20 free + 35 refunded");
        assertEq(token.balanceOf(address(escrow)), 55e18);
    }

    function test_extendLock_refusedWhenThePayerCannotFundTheWindow() public {
        _deposit(alice, 50e18);
        uint64 first = _soon();
        _lock(JOB, alice, prov1, 40e18, first);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, alice, 10e18, 40e18));
        escrow.extendLock(JOB, 40e18, first + 1 hours);
        (uint256 amount, uint64 deadline) = _amount(JOB);
        assertEq(amount, 40e18, "nothing moved");
        assertEq(deadline, first);

        // An authorisation used up or expired stops the renewal too.
        _authorise(escrow, alice, hub, 5e18);
        vm.prank(hub);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, alice, hub, 5e18, 10e18)
        );
        escrow.extendLock(JOB, 10e18, first + 1 hours);
        vm.prank(alice);
        escrow.approveSpending(hub, 100e18, uint64(block.timestamp + 10));
        vm.warp(block.timestamp + 11);
        vm.prank(hub);
        vm.expectRevert(
            abi.encodeWithSelector(
                JobEscrow.SpendingAuthorisationExpired.selector, alice, hub, uint64(block.timestamp - 1)
            )
        );
        escrow.extendLock(JOB, 10e18, first + 1 hours);
    }

    function test_extendLock_checksTheLockAndTheDeadline() public {
        _deposit(alice, 100e18);
        uint64 first = _soon();
        vm.startPrank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(0)));
        escrow.extendLock(JOB, 1e18, first);
        vm.stopPrank();
        _lock(JOB, alice, prov1, 10e18, first);
        vm.startPrank(hub);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        escrow.extendLock(JOB, 0, first);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlineNotLater.selector, JOB, first - 1, first));
        escrow.extendLock(JOB, 1e18, first - 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                JobEscrow.DeadlineInPast.selector, uint64(block.timestamp), block.timestamp
            )
        );
        escrow.extendLock(JOB, 1e18, uint64(block.timestamp));
        uint64 far = uint64(block.timestamp + MAX_LOCK + 1);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.DeadlineTooFar.selector, far, block.timestamp + MAX_LOCK)
        );
        escrow.extendLock(JOB, 1e18, far);
        // The same deadline is allowed (more money for the same window).
        escrow.extendLock(JOB, 1e18, first);
        escrow.settle(JOB, 0);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.extendLock(JOB, 1e18, first + 1);
        vm.stopPrank();
        assertEq(escrow.deposits(alice), 100e18, "all refunded");
    }

    function test_extendLock_onlyASettlerThePayerAuthorised() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.prank(stranger);
        vm.expectRevert();
        escrow.extendLock(JOB, 1e18, _soon());
        // A second settler holding the role but never authorised by alice cannot grow her lock.
        address hub2 = makeAddr("hub2");
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub2);
        vm.prank(hub2);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, alice, hub2, 0, 1e18)
        );
        escrow.extendLock(JOB, 1e18, _soon());
    }

    function test_expireAfterRenewal_waitsForTheNewDeadlineAndRefundsTheRest() public {
        _deposit(alice, 100e18);
        uint64 first = _soon();
        _lock(JOB, alice, prov1, 40e18, first);
        vm.prank(hub);
        escrow.extendLock(JOB, 40e18, first + 1 hours);
        vm.warp(_expirable(first));
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, first + 1 hours + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
        vm.warp(_expirable(first + 1 hours));
        escrow.expire(JOB);
        assertEq(escrow.deposits(alice), 100e18);
        assertEq(token.balanceOf(address(escrow)), 100e18);
    }

    /// Any sequence of windows, each renewed from the deposit and paid in a period, then a final settlement:
    /// the escrow holds exactly the free deposit, the provider and treasury got exactly what the periods and
    /// the settlement paid, and nothing was ever paid beyond what was locked.
    function testFuzz_windowsRenewedAndPaid_balance(
        uint96 window,
        uint96 deposit,
        uint8 windows,
        uint256 seed
    ) public {
        window = uint96(bound(window, 1, 1_000e18));
        deposit = uint96(bound(deposit, window, 10_000e18));
        windows = uint8(bound(windows, 1, 12));
        _deposit(alice, deposit);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, window, deadline);
        uint256 lockedEver = window;
        uint256 paid;
        uint32 period;
        vm.startPrank(hub);
        for (uint256 w = 1; w < windows; ++w) {
            // Pay a part of what is locked for this window, then renew for the next if the deposit allows.
            (uint256 amount,) = _amount(JOB);
            uint256 part = bound(uint256(keccak256(abi.encode(seed, w))), 0, amount);
            escrow.settlePeriod(JOB, ++period, part);
            paid += part;
            if (escrow.deposits(alice) < window) {
                vm.expectRevert();
                escrow.extendLock(JOB, window, deadline + 1 hours);
                break;
            }
            vm.warp(block.timestamp + 30 minutes);
            deadline += 1 hours;
            escrow.extendLock(JOB, window, deadline);
            lockedEver += window;
            assertEq(escrow.deposits(alice), deposit - lockedEver, "the deposit funds each window");
        }
        (uint256 left,) = _amount(JOB);
        uint256 last = bound(seed, 0, left);
        escrow.settle(JOB, last);
        vm.stopPrank();
        paid += last;
        assertLe(paid, lockedEver, "never paid beyond what was locked");
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury), paid);
        assertEq(escrow.deposits(alice), deposit - paid, "everything not paid is back in the deposit");
        assertEq(token.balanceOf(address(escrow)), deposit - paid);
    }
}
