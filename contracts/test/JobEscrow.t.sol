// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {
    IAccessControlDefaultAdminRules
} from "@openzeppelin/contracts/access/extensions/IAccessControlDefaultAdminRules.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Vm} from "forge-std/Vm.sol";

import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowFixture} from "./utils/Fixtures.sol";
import {FeeOnTransferToken, FalseReturnToken, ReentrantToken} from "./mocks/MockTokens.sol";

contract JobEscrowTest is EscrowFixture {
    event Deposited(address indexed payer, address indexed from, uint256 amount);
    event Withdrawn(address indexed payer, uint256 amount);
    event Locked(
        bytes32 indexed jobId,
        address indexed payer,
        address indexed provider,
        uint256 amount,
        uint64 deadline,
        uint16 feeBps
    );
    event Expired(bytes32 indexed jobId, address indexed payer, uint256 amount);
    event FeeBpsUpdated(uint16 oldFeeBps, uint16 newFeeBps);
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);

    bytes32 internal constant JOB3 = keccak256("job-3");

    // ---------------------------------------------------------------------------------------------
    // constructor
    // ---------------------------------------------------------------------------------------------

    function test_constructor_setsState() public view {
        assertEq(address(escrow.token()), address(token));
        assertEq(escrow.treasury(), treasury);
        assertEq(escrow.feeBps(), FEE_BPS);
        assertEq(escrow.MAX_FEE_BPS(), 1_000);
        assertEq(escrow.SETTLER_ROLE(), keccak256("SETTLER_ROLE"));
        assertTrue(escrow.hasRole(escrow.DEFAULT_ADMIN_ROLE(), admin));
        assertEq(escrow.defaultAdmin(), admin);
        assertEq(escrow.defaultAdminDelay(), ADMIN_DELAY);
        assertEq(escrow.claimWindow(), CLAIM_WINDOW);
        assertEq(escrow.maxLockDuration(), MAX_LOCK);
        assertEq(escrow.MAX_DURATION_LIMIT(), 365 days);
        assertFalse(escrow.hasRole(escrow.DEFAULT_ADMIN_ROLE(), address(this)));
        assertTrue(escrow.hasRole(settlerRole, hub));
        assertFalse(escrow.hasRole(settlerRole, admin));
        assertEq(escrow.STATE_NONE(), 0);
        assertEq(escrow.STATE_LOCKED(), 1);
        assertEq(escrow.STATE_SETTLED(), 2);
        assertEq(escrow.STATE_EXPIRED(), 3);
    }

    function test_constructor_emitsConfigEvents() public {
        vm.expectEmit(true, true, false, false);
        emit TreasuryUpdated(address(0), treasury);
        vm.expectEmit(false, false, false, true);
        emit FeeBpsUpdated(0, 42);
        _newEscrow(token, 42);
    }

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        new JobEscrow(IERC20(address(0)), admin, treasury, FEE_BPS, ADMIN_DELAY, CLAIM_WINDOW, MAX_LOCK);
    }

    function test_constructor_revertsOnZeroAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControlDefaultAdminRules.AccessControlInvalidDefaultAdmin.selector, address(0)
            )
        );
        new JobEscrow(token, address(0), treasury, FEE_BPS, ADMIN_DELAY, CLAIM_WINDOW, MAX_LOCK);
    }

    function test_constructor_revertsOnZeroTreasury() public {
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        new JobEscrow(token, admin, address(0), FEE_BPS, ADMIN_DELAY, CLAIM_WINDOW, MAX_LOCK);
    }

    function test_constructor_revertsOnZeroMaxLockDuration() public {
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.MaxLockDurationOutOfRange.selector, uint64(0), uint64(365 days))
        );
        new JobEscrow(token, admin, treasury, FEE_BPS, ADMIN_DELAY, CLAIM_WINDOW, 0);
    }

    function test_constructor_revertsOnMaxLockDurationAboveLimit() public {
        uint64 tooLong = 365 days + 1;
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.MaxLockDurationOutOfRange.selector, tooLong, uint64(365 days))
        );
        new JobEscrow(token, admin, treasury, FEE_BPS, ADMIN_DELAY, CLAIM_WINDOW, tooLong);
    }

    function test_constructor_revertsOnClaimWindowAboveLimit() public {
        uint64 tooLong = 365 days + 1;
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.ClaimWindowTooLong.selector, tooLong, uint64(365 days))
        );
        new JobEscrow(token, admin, treasury, FEE_BPS, ADMIN_DELAY, tooLong, MAX_LOCK);
    }

    function test_constructor_acceptsLimits() public {
        JobEscrow e = new JobEscrow(token, admin, treasury, FEE_BPS, 0, 0, 1);
        assertEq(e.claimWindow(), 0);
        assertEq(e.maxLockDuration(), 1);
        assertEq(e.defaultAdminDelay(), 0);
        e = new JobEscrow(token, admin, treasury, FEE_BPS, type(uint48).max, 365 days, 365 days);
        assertEq(e.claimWindow(), 365 days);
        assertEq(e.maxLockDuration(), 365 days);
    }

    function test_constructor_revertsOnFeeTooHigh() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.FeeTooHigh.selector, uint16(1_001), uint16(1_000)));
        _newEscrow(token, 1_001);
    }

    function test_constructor_acceptsMaxFee() public {
        JobEscrow e = _newEscrow(token, 1_000);
        assertEq(e.feeBps(), 1_000);
    }

    // ---------------------------------------------------------------------------------------------
    // administration
    // ---------------------------------------------------------------------------------------------

    function test_setFeeBps_updatesAndEmits() public {
        vm.expectEmit(address(escrow));
        emit FeeBpsUpdated(FEE_BPS, 1_000);
        vm.prank(admin);
        escrow.setFeeBps(1_000);
        assertEq(escrow.feeBps(), 1_000);
    }

    function test_setFeeBps_revertsAboveMax() public {
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.FeeTooHigh.selector, uint16(1_001), uint16(1_000)));
        escrow.setFeeBps(1_001);
    }

    function test_setFeeBps_revertsForNonAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, hub, escrow.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(hub);
        escrow.setFeeBps(0);
    }

    function test_setTreasury_updatesAndEmits() public {
        vm.expectEmit(address(escrow));
        emit TreasuryUpdated(treasury, stranger);
        vm.prank(admin);
        escrow.setTreasury(stranger);
        assertEq(escrow.treasury(), stranger);
    }

    function test_setTreasury_revertsOnZero() public {
        vm.prank(admin);
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        escrow.setTreasury(address(0));
    }

    function test_setTreasury_revertsForNonAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                stranger,
                escrow.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(stranger);
        escrow.setTreasury(stranger);
    }

    function test_grantSettler_onlyAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, hub, escrow.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(hub);
        escrow.grantRole(settlerRole, stranger);

        vm.prank(admin);
        escrow.grantRole(settlerRole, stranger);
        assertTrue(escrow.hasRole(settlerRole, stranger));
    }

    function test_revokedSettler_cannotLock() public {
        _deposit(alice, 10e18);
        vm.prank(admin);
        escrow.revokeRole(settlerRole, hub);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, hub, settlerRole)
        );
        _lock(JOB, alice, prov1, 1e18, _soon());
    }

    // ---------------------------------------------------------------------------------------------
    // deposit / depositFor / withdraw
    // ---------------------------------------------------------------------------------------------

    function test_deposit_creditsAndPulls() public {
        vm.expectEmit(address(escrow));
        emit Deposited(alice, alice, 100e18);
        _deposit(alice, 100e18);
        assertEq(escrow.deposits(alice), 100e18);
        assertEq(token.balanceOf(address(escrow)), 100e18);
        assertEq(token.balanceOf(alice), FUNDS - 100e18);
        _deposit(alice, 1);
        assertEq(escrow.deposits(alice), 100e18 + 1);
    }

    function test_deposit_revertsOnZero() public {
        vm.prank(alice);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        escrow.deposit(0);
    }

    function test_deposit_revertsWithoutAllowance() public {
        token.mint(stranger, 5e18);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 5e18)
        );
        escrow.deposit(5e18);
    }

    function test_deposit_revertsWithoutBalance() public {
        vm.prank(stranger);
        token.approve(address(escrow), type(uint256).max);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, stranger, 0, 1)
        );
        escrow.deposit(1);
    }

    function test_depositFor_creditsPayerPullsFromSender() public {
        vm.expectEmit(address(escrow));
        emit Deposited(stranger, alice, 7e18);
        vm.prank(alice);
        escrow.depositFor(stranger, 7e18);
        assertEq(escrow.deposits(stranger), 7e18);
        assertEq(escrow.deposits(alice), 0);
        assertEq(token.balanceOf(alice), FUNDS - 7e18);
        // the credited payer owns the deposit
        vm.prank(stranger);
        escrow.withdraw(7e18);
        assertEq(token.balanceOf(stranger), 7e18);
    }

    function test_depositFor_revertsOnZeroPayer() public {
        vm.prank(alice);
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        escrow.depositFor(address(0), 1e18);
    }

    function test_depositFor_revertsOnZeroAmount() public {
        vm.prank(alice);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        escrow.depositFor(bob, 0);
    }

    function test_withdraw_sendsFreeDeposit() public {
        _deposit(alice, 100e18);
        vm.expectEmit(address(escrow));
        emit Withdrawn(alice, 40e18);
        vm.prank(alice);
        escrow.withdraw(40e18);
        assertEq(escrow.deposits(alice), 60e18);
        assertEq(token.balanceOf(alice), FUNDS - 60e18);
        assertEq(token.balanceOf(address(escrow)), 60e18);
    }

    function test_withdraw_revertsOnZero() public {
        _deposit(alice, 1e18);
        vm.prank(alice);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        escrow.withdraw(0);
    }

    function test_withdraw_revertsAboveFreeDeposit() public {
        _deposit(alice, 10e18);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, alice, 10e18, 10e18 + 1)
        );
        escrow.withdraw(10e18 + 1);
    }

    function test_withdraw_cannotTouchLockedFunds() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 8e18, _soon());
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, alice, 2e18, 3e18));
        escrow.withdraw(3e18);
        vm.prank(alice);
        escrow.withdraw(2e18);
        assertEq(escrow.deposits(alice), 0);
        assertEq(token.balanceOf(address(escrow)), 8e18);
    }

    function test_withdraw_othersDepositIsNotYours() public {
        _deposit(alice, 10e18);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, bob, 0, 1));
        escrow.withdraw(1);
    }

    function test_deposit_feeOnTransferTokenCreditsReceived() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(100); // 1 %
        JobEscrow e = _newEscrow(fot, FEE_BPS);
        fot.mint(alice, 1_000);
        vm.startPrank(alice);
        fot.approve(address(e), type(uint256).max);
        vm.expectEmit(address(e));
        emit Deposited(alice, alice, 990);
        e.deposit(1_000);
        vm.stopPrank();
        assertEq(e.deposits(alice), 990);
        assertEq(fot.balanceOf(address(e)), 990);
    }

    function test_deposit_revertsWhenNothingArrives() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(10_000); // everything burnt
        JobEscrow e = _newEscrow(fot, FEE_BPS);
        fot.mint(alice, 1_000);
        vm.startPrank(alice);
        fot.approve(address(e), type(uint256).max);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        e.deposit(1_000);
        vm.stopPrank();
    }

    function test_withdraw_revertsWhenTokenReturnsFalse() public {
        FalseReturnToken ft = new FalseReturnToken();
        JobEscrow e = _newEscrow(ft, FEE_BPS);
        ft.mint(alice, 1_000);
        vm.startPrank(alice);
        ft.approve(address(e), type(uint256).max);
        e.deposit(1_000);
        vm.stopPrank();
        ft.setFailTransfers(true);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(SafeERC20.SafeERC20FailedOperation.selector, address(ft)));
        e.withdraw(1_000);
        assertEq(e.deposits(alice), 1_000, "state rolled back");
    }

    // ---------------------------------------------------------------------------------------------
    // lock
    // ---------------------------------------------------------------------------------------------

    function test_lock_movesDepositIntoLock() public {
        _deposit(alice, 100e18);
        uint64 deadline = _soon();
        vm.expectEmit(address(escrow));
        emit Locked(JOB, alice, prov1, 30e18, deadline, FEE_BPS);
        _lock(JOB, alice, prov1, 30e18, deadline);

        assertEq(escrow.deposits(alice), 70e18);
        assertEq(token.balanceOf(address(escrow)), 100e18, "tokens stay in escrow");
        (address payer, address provider, uint128 amount, uint64 dl, uint8 state) = escrow.getLock(JOB);
        assertEq(payer, alice);
        assertEq(provider, prov1);
        assertEq(amount, 30e18);
        assertEq(dl, deadline);
        assertEq(state, 1);
        assertEq(escrow.lockFeeBps(JOB), FEE_BPS);
    }

    function test_lock_wholeDeposit() public {
        _deposit(alice, 5e18);
        _lock(JOB, alice, prov1, 5e18, _soon());
        assertEq(escrow.deposits(alice), 0);
    }

    function test_lock_maxUint96Amount() public {
        uint256 big = type(uint96).max;
        token.mint(stranger, big);
        vm.startPrank(stranger);
        token.approve(address(escrow), big);
        escrow.deposit(big);
        vm.stopPrank();
        _authorise(escrow, stranger, hub, big);
        _lock(JOB, stranger, prov1, big, _soon());
        (,, uint128 amount,,) = escrow.getLock(JOB);
        assertEq(amount, big);
    }

    function test_lock_revertsOnZeroJobId() public {
        _deposit(alice, 1e18);
        vm.expectRevert(JobEscrow.ZeroJobId.selector);
        _lock(bytes32(0), alice, prov1, 1e18, _soon());
    }

    function test_lock_revertsOnReusedJobId_locked() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 1e18, _soon());
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobAlreadyExists.selector, JOB));
        _lock(JOB, alice, prov2, 1e18, _soon());
    }

    function test_lock_revertsOnReusedJobId_settled() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 1e18, _soon());
        vm.prank(hub);
        escrow.settle(JOB, 1e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobAlreadyExists.selector, JOB));
        _lock(JOB, alice, prov1, 1e18, _soon());
    }

    function test_lock_revertsOnReusedJobId_expired() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 1e18, _soon());
        vm.warp(block.timestamp + 2 days);
        escrow.expire(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.JobAlreadyExists.selector, JOB));
        _lock(JOB, alice, prov1, 1e18, _soon());
    }

    function test_lock_revertsOnZeroPayer() public {
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        _lock(JOB, address(0), prov1, 1e18, _soon());
    }

    function test_lock_revertsOnZeroProvider() public {
        _deposit(alice, 1e18);
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        _lock(JOB, alice, address(0), 1e18, _soon());
    }

    function test_lock_revertsOnZeroAmount() public {
        _deposit(alice, 1e18);
        vm.expectRevert(JobEscrow.ZeroAmount.selector);
        _lock(JOB, alice, prov1, 0, _soon());
    }

    function test_lock_revertsOnAmountTooLarge() public {
        uint256 tooBig = uint256(type(uint96).max) + 1;
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.AmountTooLarge.selector, tooBig, uint256(type(uint96).max))
        );
        _lock(JOB, alice, prov1, tooBig, _soon());
    }

    function test_lock_revertsOnDeadlineInPast() public {
        _deposit(alice, 1e18);
        uint64 past = uint64(block.timestamp - 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlineInPast.selector, past, block.timestamp));
        _lock(JOB, alice, prov1, 1e18, past);
    }

    function test_lock_revertsOnDeadlineNow() public {
        _deposit(alice, 1e18);
        uint64 nowTs = uint64(block.timestamp);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.DeadlineInPast.selector, nowTs, block.timestamp));
        _lock(JOB, alice, prov1, 1e18, nowTs);
    }

    function test_lock_revertsOnInsufficientDeposit() public {
        _deposit(alice, 1e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, alice, 1e18, 1e18 + 1));
        _lock(JOB, alice, prov1, 1e18 + 1, _soon());
    }

    function test_lock_revertsForNonSettler() public {
        _deposit(alice, 1e18);
        // not even the payer or the admin may lock
        address[3] memory callers = [alice, admin, stranger];
        for (uint256 i; i < callers.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IAccessControl.AccessControlUnauthorizedAccount.selector, callers[i], settlerRole
                )
            );
            vm.prank(callers[i]);
            escrow.lock(JOB, alice, prov1, 1e18, _soon());
        }
    }

    // ---------------------------------------------------------------------------------------------
    // settle
    // ---------------------------------------------------------------------------------------------

    function test_settle_fullAmount() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        uint256 fee = 40e18 * uint256(FEE_BPS) / 10_000; // 1e18
        vm.expectEmit(address(escrow));
        emit Settled(JOB, alice, prov1, 40e18, fee, 0);
        vm.prank(hub);
        escrow.settle(JOB, 40e18);

        assertEq(token.balanceOf(prov1), 40e18 - fee);
        assertEq(token.balanceOf(treasury), fee);
        assertEq(escrow.deposits(alice), 60e18);
        assertEq(token.balanceOf(address(escrow)), 60e18);
        assertEq(_state(JOB), 2);
        (,, uint128 amount,,) = escrow.getLock(JOB);
        assertEq(amount, 40e18, "lock amount kept for the record");
    }

    function test_settle_partialRefundsToFreeDeposit() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        vm.expectEmit(address(escrow));
        emit Settled(JOB, alice, prov1, 10e18, 0.25e18, 30e18);
        vm.prank(hub);
        escrow.settle(JOB, 10e18);

        assertEq(token.balanceOf(prov1), 9.75e18);
        assertEq(token.balanceOf(treasury), 0.25e18);
        assertEq(escrow.deposits(alice), 90e18, "60 free + 30 refund");
        assertEq(token.balanceOf(address(escrow)), 90e18);
        vm.prank(alice);
        escrow.withdraw(90e18);
        assertEq(token.balanceOf(address(escrow)), 0);
    }

    function test_settle_zeroPaidRefundsAll() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.recordLogs();
        vm.prank(hub);
        escrow.settle(JOB, 0);
        assertEq(_countTransfers(vm.getRecordedLogs()), 0, "no token transfers");
        assertEq(token.balanceOf(prov1), 0);
        assertEq(token.balanceOf(treasury), 0);
        assertEq(escrow.deposits(alice), 10e18);
        assertEq(_state(JOB), 2);
    }

    function test_settle_zeroFeeSkipsTreasury() public {
        vm.prank(admin);
        escrow.setFeeBps(0);
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.recordLogs();
        vm.prank(hub);
        escrow.settle(JOB, 10e18);
        assertEq(_countTransfers(vm.getRecordedLogs()), 1, "provider only");
        assertEq(token.balanceOf(prov1), 10e18);
        assertEq(token.balanceOf(treasury), 0);
    }

    function test_settle_feeRoundsDown() public {
        _deposit(alice, 1e18);
        _lock(JOB, alice, prov1, 1e18, _soon());
        vm.prank(hub);
        escrow.settle(JOB, 39); // 39 * 250 / 10000 = 0.975 -> 0
        assertEq(token.balanceOf(prov1), 39);
        assertEq(token.balanceOf(treasury), 0);
    }

    function test_settle_usesFeeSnapshottedAtLock() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 100e18, _soon());
        vm.prank(admin);
        escrow.setFeeBps(1_000);
        vm.prank(hub);
        escrow.settle(JOB, 100e18);
        assertEq(token.balanceOf(treasury), 2.5e18, "2.5 % from lock time, not 10 %");
        assertEq(token.balanceOf(prov1), 97.5e18);
        // a new lock gets the new fee
        _deposit(alice, 100e18);
        _lock(JOB2, alice, prov1, 100e18, _soon());
        assertEq(escrow.lockFeeBps(JOB2), 1_000);
    }

    function test_settle_feeGoesToCurrentTreasury() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 100e18, _soon());
        vm.prank(admin);
        escrow.setTreasury(stranger);
        vm.prank(hub);
        escrow.settle(JOB, 100e18);
        assertEq(token.balanceOf(stranger), 2.5e18);
        assertEq(token.balanceOf(treasury), 0);
    }

    function test_settle_allowedAfterDeadlineUntilExpired() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.warp(block.timestamp + 10 days); // past deadline and claim window, nobody expired it
        vm.prank(hub);
        escrow.settle(JOB, 10e18);
        assertEq(_state(JOB), 2);
    }

    function test_settle_revertsOnUnknownJob() public {
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(0)));
        escrow.settle(JOB, 0);
    }

    function test_settle_revertsTwice() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.startPrank(hub);
        escrow.settle(JOB, 5e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.settle(JOB, 5e18);
        vm.stopPrank();
    }

    function test_settle_revertsAfterExpire() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.warp(block.timestamp + 2 days);
        escrow.expire(JOB);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(3)));
        escrow.settle(JOB, 1);
    }

    function test_settle_revertsWhenPaidExceedsLock() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 4e18, _soon());
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB, 4e18 + 1, 4e18));
        escrow.settle(JOB, 4e18 + 1);
    }

    function test_settle_revertsForNonSettler() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 4e18, _soon());
        address[3] memory callers = [alice, prov1, admin];
        for (uint256 i; i < callers.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IAccessControl.AccessControlUnauthorizedAccount.selector, callers[i], settlerRole
                )
            );
            vm.prank(callers[i]);
            escrow.settle(JOB, 1e18);
        }
    }

    function test_settle_revertsWhenTokenTransferFails() public {
        FalseReturnToken ft = new FalseReturnToken();
        JobEscrow e = _newEscrow(ft, FEE_BPS);
        vm.prank(admin);
        e.grantRole(settlerRole, hub);
        ft.mint(alice, 1_000);
        vm.startPrank(alice);
        ft.approve(address(e), type(uint256).max);
        e.deposit(1_000);
        vm.stopPrank();
        _authorise(e, alice, hub, 1_000);
        vm.prank(hub);
        e.lock(JOB, alice, prov1, 1_000, _soon());
        ft.setFailTransfers(true);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(SafeERC20.SafeERC20FailedOperation.selector, address(ft)));
        e.settle(JOB, 1_000);
        (,,,, uint8 state) = e.getLock(JOB);
        assertEq(state, 1, "still Locked after the failed settlement");
    }

    // ---------------------------------------------------------------------------------------------
    // settleBatch
    // ---------------------------------------------------------------------------------------------

    function _threeJobs() internal {
        _deposit(alice, 100e18);
        _deposit(bob, 100e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        _lock(JOB2, bob, prov2, 20e18, _soon());
        _lock(JOB3, alice, prov1, 30e18, _soon());
    }

    function _arrays(bytes32 a, bytes32 b, bytes32 c, uint256 pa, uint256 pb, uint256 pc)
        internal
        pure
        returns (bytes32[] memory ids, uint256[] memory paid)
    {
        ids = new bytes32[](3);
        paid = new uint256[](3);
        (ids[0], ids[1], ids[2]) = (a, b, c);
        (paid[0], paid[1], paid[2]) = (pa, pb, pc);
    }

    function test_settleBatch_paysAggregatedPerProvider() public {
        _threeJobs();
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 10e18, 8e18, 20e18);

        vm.expectEmit(address(escrow));
        emit Settled(JOB, alice, prov1, 10e18, 0.25e18, 0);
        vm.expectEmit(address(escrow));
        emit Settled(JOB2, bob, prov2, 8e18, 0.2e18, 12e18);
        vm.expectEmit(address(escrow));
        emit Settled(JOB3, alice, prov1, 20e18, 0.5e18, 10e18);
        vm.recordLogs();
        vm.prank(hub);
        escrow.settleBatch(ids, paid);

        // one transfer for prov1 (two jobs), one for prov2, one for the treasury
        assertEq(_countTransfers(vm.getRecordedLogs()), 3);
        assertEq(token.balanceOf(prov1), 30e18 - 0.75e18);
        assertEq(token.balanceOf(prov2), 8e18 - 0.2e18);
        assertEq(token.balanceOf(treasury), 0.95e18);
        assertEq(escrow.deposits(alice), 60e18 + 10e18);
        assertEq(escrow.deposits(bob), 80e18 + 12e18);
        assertEq(_state(JOB), 2);
        assertEq(_state(JOB2), 2);
        assertEq(_state(JOB3), 2);
        assertEq(token.balanceOf(address(escrow)), 70e18 + 92e18);
    }

    function test_settleBatch_singleItem() public {
        _threeJobs();
        bytes32[] memory ids = new bytes32[](1);
        uint256[] memory paid = new uint256[](1);
        ids[0] = JOB2;
        paid[0] = 20e18;
        vm.prank(hub);
        escrow.settleBatch(ids, paid);
        assertEq(token.balanceOf(prov2), 19.5e18);
        assertEq(_state(JOB), 1);
    }

    function test_settleBatch_emptyIsNoop() public {
        vm.recordLogs();
        vm.prank(hub);
        escrow.settleBatch(new bytes32[](0), new uint256[](0));
        assertEq(vm.getRecordedLogs().length, 0);
    }

    function test_settleBatch_zeroPayoutsSkipTransfers() public {
        _threeJobs();
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 0, 0, 0);
        vm.recordLogs();
        vm.prank(hub);
        escrow.settleBatch(ids, paid);
        assertEq(_countTransfers(vm.getRecordedLogs()), 0);
        assertEq(escrow.deposits(alice), 100e18);
        assertEq(escrow.deposits(bob), 100e18);
    }

    function test_settleBatch_revertsOnLengthMismatch() public {
        _threeJobs();
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LengthMismatch.selector, 2, 1));
        escrow.settleBatch(new bytes32[](2), new uint256[](1));
    }

    function test_settleBatch_revertsAllWhenOneItemIsSettled() public {
        _threeJobs();
        vm.prank(hub);
        escrow.settle(JOB3, 1e18);
        uint256 prov1Before = token.balanceOf(prov1);
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 1e18, 1e18, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB3, uint8(2)));
        escrow.settleBatch(ids, paid);
        // nothing from the batch happened
        assertEq(_state(JOB), 1);
        assertEq(_state(JOB2), 1);
        assertEq(token.balanceOf(prov1), prov1Before);
        assertEq(token.balanceOf(prov2), 0);
    }

    function test_settleBatch_revertsOnDuplicateJob() public {
        _threeJobs();
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB, 1e18, 1e18, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.settleBatch(ids, paid);
        assertEq(_state(JOB), 1);
    }

    function test_settleBatch_revertsOnUnknownJob() public {
        _threeJobs();
        bytes32 unknown = keccak256("nope");
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, unknown, JOB2, 1e18, 1e18, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, unknown, uint8(0)));
        escrow.settleBatch(ids, paid);
    }

    function test_settleBatch_revertsOnExpiredJob() public {
        _threeJobs();
        vm.warp(block.timestamp + 2 days);
        escrow.expire(JOB2);
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 1e18, 1e18, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB2, uint8(3)));
        escrow.settleBatch(ids, paid);
    }

    function test_settleBatch_revertsWhenAnItemOverpays() public {
        _threeJobs();
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 1e18, 20e18 + 1, 1e18);
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB2, 20e18 + 1, 20e18));
        escrow.settleBatch(ids, paid);
        assertEq(_state(JOB), 1);
    }

    function test_settleBatch_revertsForNonSettler() public {
        _threeJobs();
        (bytes32[] memory ids, uint256[] memory paid) = _arrays(JOB, JOB2, JOB3, 1, 1, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, admin, settlerRole
            )
        );
        vm.prank(admin);
        escrow.settleBatch(ids, paid);
    }

    // ---------------------------------------------------------------------------------------------
    // expire
    // ---------------------------------------------------------------------------------------------

    function test_expire_afterDeadlineByAnyone() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 6e18, deadline);
        vm.warp(_expirable(deadline));
        vm.expectEmit(address(escrow));
        emit Expired(JOB, alice, 6e18);
        vm.prank(stranger);
        escrow.expire(JOB);
        assertEq(escrow.deposits(alice), 10e18);
        assertEq(_state(JOB), 3);
        assertEq(token.balanceOf(address(escrow)), 10e18, "no tokens move");
        assertEq(token.balanceOf(stranger), 0);
    }

    function test_expire_byPayer() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 6e18, deadline);
        vm.warp(_expirable(deadline));
        vm.prank(alice);
        escrow.expire(JOB);
        vm.prank(alice);
        escrow.withdraw(10e18);
        assertEq(token.balanceOf(alice), FUNDS);
    }

    function test_expire_revertsBeforeDeadline() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 6e18, deadline);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
    }

    function test_expire_revertsAtDeadline() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 6e18, deadline);
        vm.warp(deadline);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
    }

    /// The payer cannot expire right after the deadline: the provider has the claim window to get paid.
    function test_expire_revertsDuringClaimWindow() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 6e18, deadline);
        vm.warp(deadline + 1);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
        vm.warp(deadline + CLAIM_WINDOW);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
        vm.warp(deadline + CLAIM_WINDOW + 1);
        vm.prank(alice);
        escrow.expire(JOB);
        assertEq(_state(JOB), 3);
    }

    /// With a zero claim window, expiry works right after the deadline (the old behaviour).
    function test_expire_zeroClaimWindow() public {
        JobEscrow e = new JobEscrow(token, admin, treasury, FEE_BPS, ADMIN_DELAY, 0, MAX_LOCK);
        vm.prank(admin);
        e.grantRole(settlerRole, hub);
        vm.startPrank(alice);
        token.approve(address(e), type(uint256).max);
        e.deposit(1e18);
        vm.stopPrank();
        _authorise(e, alice, hub, 1e18);
        uint64 deadline = _soon();
        vm.prank(hub);
        e.lock(JOB, alice, prov1, 1e18, deadline);
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline));
        e.expire(JOB);
        vm.warp(deadline + 1);
        e.expire(JOB);
        assertEq(e.deposits(alice), 1e18);
    }

    function test_expire_revertsOnUnknownJob() public {
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(0)));
        escrow.expire(JOB);
    }

    function test_expire_revertsTwice() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 6e18, _soon());
        vm.warp(block.timestamp + 2 days);
        escrow.expire(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(3)));
        escrow.expire(JOB);
        assertEq(escrow.deposits(alice), 10e18, "credited once");
    }

    function test_expire_revertsAfterSettle() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 6e18, _soon());
        vm.prank(hub);
        escrow.settle(JOB, 6e18);
        vm.warp(block.timestamp + 2 days);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.expire(JOB);
    }

    // ---------------------------------------------------------------------------------------------
    // views
    // ---------------------------------------------------------------------------------------------

    function test_getLock_unknownIsZero() public view {
        (address payer, address provider, uint128 amount, uint64 deadline, uint8 state) = escrow.getLock(JOB);
        assertEq(payer, address(0));
        assertEq(provider, address(0));
        assertEq(amount, 0);
        assertEq(deadline, 0);
        assertEq(state, 0);
        assertEq(escrow.lockFeeBps(JOB), 0);
        assertEq(escrow.deposits(alice), 0);
    }

    // ---------------------------------------------------------------------------------------------
    // reentrancy (a malicious token re-entering through its transfer hook)
    // ---------------------------------------------------------------------------------------------

    function _reentrantSetup() internal returns (ReentrantToken rt, JobEscrow e) {
        rt = new ReentrantToken();
        e = _newEscrow(rt, FEE_BPS);
        vm.prank(admin);
        e.grantRole(settlerRole, hub);
        rt.mint(alice, 100e18);
        vm.startPrank(alice);
        rt.approve(address(e), type(uint256).max);
        e.deposit(100e18);
        vm.stopPrank();
        _authorise(e, alice, hub, 100e18);
    }

    function test_reentrancy_withdrawCannotReenterWithdraw() public {
        (ReentrantToken rt, JobEscrow e) = _reentrantSetup();
        rt.arm(address(e), abi.encodeCall(JobEscrow.withdraw, (1e18)));
        vm.prank(alice);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        e.withdraw(1e18);
        assertEq(e.deposits(alice), 100e18);
    }

    function test_reentrancy_settleCannotReenterSettleBatch() public {
        (ReentrantToken rt, JobEscrow e) = _reentrantSetup();
        vm.startPrank(hub);
        e.lock(JOB, alice, prov1, 10e18, _soon());
        e.lock(JOB2, alice, prov1, 10e18, _soon());
        vm.stopPrank();
        bytes32[] memory ids = new bytes32[](1);
        uint256[] memory paid = new uint256[](1);
        ids[0] = JOB2;
        paid[0] = 10e18;
        // Give the token the role too, so the inner call gets past onlyRole and hits the guard
        // (without the role it would already fail with AccessControlUnauthorizedAccount).
        vm.prank(admin);
        e.grantRole(settlerRole, address(rt));
        rt.arm(address(e), abi.encodeCall(JobEscrow.settleBatch, (ids, paid)));
        vm.prank(hub);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        e.settle(JOB, 10e18);
        (,,,, uint8 state) = e.getLock(JOB);
        assertEq(state, 1);
    }

    function test_reentrancy_depositCannotReenterExpire() public {
        (ReentrantToken rt, JobEscrow e) = _reentrantSetup();
        rt.mint(bob, 1e18);
        vm.prank(bob);
        rt.approve(address(e), type(uint256).max);
        rt.arm(address(e), abi.encodeCall(JobEscrow.expire, (JOB)));
        vm.prank(bob);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        e.deposit(1e18);
    }

    // ---------------------------------------------------------------------------------------------
    // fuzz
    // ---------------------------------------------------------------------------------------------

    /// Deposits and withdrawals of arbitrary amounts keep the books equal to the token balance.
    function testFuzz_depositWithdraw(uint256 depositAmount, uint256 withdrawAmount) public {
        depositAmount = bound(depositAmount, 1, FUNDS);
        withdrawAmount = bound(withdrawAmount, 1, FUNDS);
        _deposit(alice, depositAmount);
        vm.prank(alice);
        if (withdrawAmount > depositAmount) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    JobEscrow.InsufficientDeposit.selector, alice, depositAmount, withdrawAmount
                )
            );
            escrow.withdraw(withdrawAmount);
            assertEq(escrow.deposits(alice), depositAmount);
        } else {
            escrow.withdraw(withdrawAmount);
            assertEq(escrow.deposits(alice), depositAmount - withdrawAmount);
            assertEq(token.balanceOf(alice), FUNDS - depositAmount + withdrawAmount);
        }
        assertEq(token.balanceOf(address(escrow)), escrow.deposits(alice));
    }

    /// For any amount, paid <= amount and fee rate, money is conserved and split exactly.
    function testFuzz_settleSplitsExactly(uint96 amount, uint96 paid, uint16 bps) public {
        amount = uint96(bound(amount, 1, type(uint96).max));
        paid = uint96(bound(paid, 0, amount));
        bps = uint16(bound(bps, 0, escrow.MAX_FEE_BPS()));
        vm.prank(admin);
        escrow.setFeeBps(bps);
        token.mint(stranger, amount);
        vm.startPrank(stranger);
        token.approve(address(escrow), amount);
        escrow.deposit(amount);
        vm.stopPrank();
        _authorise(escrow, stranger, hub, amount);
        _lock(JOB, stranger, prov1, amount, _soon());

        vm.prank(hub);
        escrow.settle(JOB, paid);

        uint256 fee = uint256(paid) * bps / 10_000;
        assertEq(token.balanceOf(treasury), fee);
        assertEq(token.balanceOf(prov1), uint256(paid) - fee);
        assertEq(escrow.deposits(stranger), uint256(amount) - paid);
        assertEq(token.balanceOf(prov1) + token.balanceOf(treasury) + escrow.deposits(stranger), amount);
        assertEq(token.balanceOf(address(escrow)), escrow.deposits(stranger));
    }

    /// Overpaying any lock always reverts and leaves the lock untouched.
    function testFuzz_settleRevertsOnOverpay(uint96 amount, uint256 paid) public {
        amount = uint96(bound(amount, 1, 100e18));
        paid = bound(paid, uint256(amount) + 1, type(uint256).max);
        _deposit(alice, amount);
        _lock(JOB, alice, prov1, amount, _soon());
        vm.prank(hub);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB, paid, uint256(amount))
        );
        escrow.settle(JOB, paid);
        assertEq(_state(JOB), 1);
    }

    /// Only SETTLER_ROLE can lock or settle; only DEFAULT_ADMIN_ROLE can configure.
    function testFuzz_rolesEnforced(address caller) public {
        vm.assume(caller != hub && caller != admin);
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 1e18, _soon());

        vm.startPrank(caller);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, settlerRole
            )
        );
        escrow.lock(JOB2, alice, prov1, 1e18, _soon());
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, settlerRole
            )
        );
        escrow.settle(JOB, 1e18);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, settlerRole
            )
        );
        escrow.settleBatch(new bytes32[](0), new uint256[](0));
        bytes32 adminRole = escrow.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole
            )
        );
        escrow.setFeeBps(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole
            )
        );
        escrow.setTreasury(caller);
        vm.stopPrank();
    }

    /// Any fee the admin may set is accepted, anything above the maximum is rejected.
    function testFuzz_setFeeBps(uint16 bps) public {
        vm.prank(admin);
        if (bps > 1_000) {
            vm.expectRevert(abi.encodeWithSelector(JobEscrow.FeeTooHigh.selector, bps, uint16(1_000)));
            escrow.setFeeBps(bps);
        } else {
            escrow.setFeeBps(bps);
            assertEq(escrow.feeBps(), bps);
        }
    }

    /// expire works strictly after deadline + claim window and never before, whoever calls it.
    function testFuzz_expireTiming(uint32 lifetime, uint32 waited, address caller) public {
        lifetime = uint32(bound(lifetime, 1, MAX_LOCK));
        _deposit(alice, 10e18);
        uint64 deadline = uint64(block.timestamp) + lifetime;
        _lock(JOB, alice, prov1, 10e18, deadline);
        vm.warp(block.timestamp + waited);
        vm.prank(caller);
        if (block.timestamp <= deadline + CLAIM_WINDOW) {
            vm.expectRevert(
                abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
            );
            escrow.expire(JOB);
            assertEq(_state(JOB), 1);
        } else {
            escrow.expire(JOB);
            assertEq(_state(JOB), 3);
            assertEq(escrow.deposits(alice), 10e18);
        }
    }

    /// Settling a lock, then trying to settle or expire it again in any order, only the first works.
    function testFuzz_settleOrExpireAtMostOnce(bool settleFirst, bool thenSettle, uint96 paid) public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        paid = uint96(bound(paid, 0, 10e18));
        vm.warp(block.timestamp + 2 days);
        uint8 firstState;
        if (settleFirst) {
            vm.prank(hub);
            escrow.settle(JOB, paid);
            firstState = 2;
        } else {
            escrow.expire(JOB);
            firstState = 3;
        }
        uint256 providerBal = token.balanceOf(prov1);
        uint256 deposit = escrow.deposits(alice);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, firstState));
        if (thenSettle) {
            vm.prank(hub);
            escrow.settle(JOB, 0);
        } else {
            escrow.expire(JOB);
        }
        assertEq(token.balanceOf(prov1), providerBal);
        assertEq(escrow.deposits(alice), deposit);
        assertEq(_state(JOB), firstState);
    }

    /// A batch pays every party exactly what the same jobs settled one by one would (fees rounded per job).
    function testFuzz_settleBatchEqualsSingleSettles(uint256 seed, uint8 count, uint16 bps) public {
        count = uint8(bound(count, 1, 24));
        bps = uint16(bound(bps, 0, 1_000));
        JobEscrow single = _newEscrow(token, bps);
        JobEscrow batched =
            new JobEscrow(token, admin, makeAddr("treasury2"), bps, ADMIN_DELAY, CLAIM_WINDOW, MAX_LOCK);
        address[4] memory provs = [prov1, prov2, makeAddr("p3"), makeAddr("p4")];
        address[4] memory provsB = [makeAddr("b1"), makeAddr("b2"), makeAddr("b3"), makeAddr("b4")];
        vm.startPrank(admin);
        single.grantRole(settlerRole, hub);
        batched.grantRole(settlerRole, hub);
        vm.stopPrank();
        vm.startPrank(alice);
        token.approve(address(single), type(uint256).max);
        token.approve(address(batched), type(uint256).max);
        single.deposit(1_000e18);
        batched.deposit(1_000e18);
        vm.stopPrank();
        _authorise(single, alice, hub, 1_000e18);
        _authorise(batched, alice, hub, 1_000e18);

        bytes32[] memory ids = new bytes32[](count);
        uint256[] memory paid = new uint256[](count);
        vm.startPrank(hub);
        for (uint256 i; i < count; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            ids[i] = keccak256(abi.encode("job", i));
            uint256 amount = bound(r, 1, 40e18);
            paid[i] = bound(r >> 128, 0, amount);
            uint256 p = (r >> 64) % 4;
            single.lock(ids[i], alice, provs[p], amount, _soon());
            batched.lock(ids[i], alice, provsB[p], amount, _soon());
        }
        for (uint256 i; i < count; ++i) {
            single.settle(ids[i], paid[i]);
        }
        batched.settleBatch(ids, paid);
        vm.stopPrank();

        for (uint256 p; p < 4; ++p) {
            assertEq(token.balanceOf(provs[p]), token.balanceOf(provsB[p]), "provider payout");
        }
        assertEq(token.balanceOf(treasury), token.balanceOf(makeAddr("treasury2")), "fees");
        assertEq(single.deposits(alice), batched.deposits(alice), "refunds");
        assertEq(token.balanceOf(address(single)), token.balanceOf(address(batched)));
    }

    // ---------------------------------------------------------------------------------------------
    // helpers
    // ---------------------------------------------------------------------------------------------

    function _countTransfers(Vm.Log[] memory logs) internal view returns (uint256 n) {
        bytes32 sig = IERC20.Transfer.selector;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(token) && logs[i].topics[0] == sig) ++n;
        }
    }
}
