// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {
    IAccessControlDefaultAdminRules
} from "@openzeppelin/contracts/access/extensions/IAccessControlDefaultAdminRules.sol";

import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowFixture} from "./utils/Fixtures.sol";
import {MockWallet} from "./mocks/MockWallet.sol";

/// @notice Payer-authorised spending (approveSpending, permitSpending, the checks in lock), bounded lock
///         deadlines, and what the admin and a stolen or new settler key can no longer do.
contract JobEscrowSpendingTest is EscrowFixture {
    event SpendingApproved(address indexed payer, address indexed settler, uint256 amount, uint64 validUntil);

    address internal carol; // payer signing permits
    uint256 internal carolKey;
    address internal hub2 = makeAddr("hub2"); // a second settler
    address internal thief = makeAddr("thief");

    function setUp() public override {
        super.setUp();
        (carol, carolKey) = makeAddrAndKey("carol");
        token.mint(carol, FUNDS);
        vm.prank(carol);
        token.approve(address(escrow), type(uint256).max);
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub2);
    }

    // ---------------------------------------------------------------------------------------------
    // EIP-712 constants
    // ---------------------------------------------------------------------------------------------

    function test_eip712_domainAndTypehashes() public view {
        assertEq(escrow.DOMAIN_SEPARATOR(), _domainSeparator(address(escrow)));
        assertEq(escrow.SPENDING_PERMIT_TYPEHASH(), PERMIT_TYPEHASH);
        assertEq(escrow.USAGE_RECEIPT_TYPEHASH(), RECEIPT_TYPEHASH);
        (, string memory name, string memory version, uint256 chainId, address verifying,,) =
            escrow.eip712Domain();
        assertEq(name, "GpuFed JobEscrow");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifying, address(escrow));
        assertEq(vm.addr(hubKey), hub, "fixture hub key");
    }

    // ---------------------------------------------------------------------------------------------
    // approveSpending
    // ---------------------------------------------------------------------------------------------

    function test_approveSpending_setsReplacesAndRevokes() public {
        uint64 until = uint64(block.timestamp + 7 days);
        vm.expectEmit(address(escrow));
        emit SpendingApproved(carol, hub, 50e18, until);
        vm.prank(carol);
        escrow.approveSpending(hub, 50e18, until);
        (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 50e18);
        assertEq(validUntil, until);
        assertTrue(escrow.everAuthorised(carol, hub));
        assertFalse(escrow.everAuthorised(carol, hub2));

        // replaces, does not add
        vm.prank(carol);
        escrow.approveSpending(hub, 3e18, until + 1);
        (remaining, validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 3e18);
        assertEq(validUntil, until + 1);

        // amount 0 revokes; the authorisation is still remembered for receipts
        vm.expectEmit(address(escrow));
        emit SpendingApproved(carol, hub, 0, 0);
        vm.prank(carol);
        escrow.approveSpending(hub, 0, 0);
        (remaining, validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 0);
        assertEq(validUntil, 0);
        assertTrue(escrow.everAuthorised(carol, hub));
        // other payers and settlers are untouched
        (remaining,) = escrow.spendingAllowance(alice, hub);
        assertEq(remaining, FUNDS);
        (remaining, validUntil) = escrow.spendingAllowance(carol, hub2);
        assertEq(remaining, 0);
        assertEq(validUntil, 0);
    }

    function test_approveSpending_zeroAmountDoesNotAuthorise() public {
        vm.prank(carol);
        escrow.approveSpending(hub, 0, uint64(block.timestamp + 1 days));
        assertFalse(escrow.everAuthorised(carol, hub));
    }

    function test_approveSpending_revertsOnZeroSettler() public {
        vm.prank(carol);
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        escrow.approveSpending(address(0), 1, uint64(block.timestamp + 1));
    }

    function test_approveSpending_revertsAboveUint128() public {
        uint256 tooMuch = uint256(type(uint128).max) + 1;
        vm.prank(carol);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.AmountTooLarge.selector, tooMuch, uint256(type(uint128).max))
        );
        escrow.approveSpending(hub, tooMuch, uint64(block.timestamp + 1));
        vm.prank(carol);
        escrow.approveSpending(hub, type(uint128).max, type(uint64).max);
        (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, type(uint128).max);
        assertEq(validUntil, type(uint64).max);
    }

    // ---------------------------------------------------------------------------------------------
    // permitSpending
    // ---------------------------------------------------------------------------------------------

    function _permit(
        uint256 key,
        address payer,
        address settler,
        uint256 amount,
        uint64 validUntil,
        uint256 deadline
    ) internal view returns (bytes memory) {
        return _sign(
            key,
            _permitDigest(address(escrow), payer, settler, amount, validUntil, escrow.nonces(payer), deadline)
        );
    }

    function test_permitSpending_valid() public {
        uint64 until = uint64(block.timestamp + 7 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _permit(carolKey, carol, hub, 40e18, until, deadline);
        assertEq(escrow.nonces(carol), 0);

        vm.expectEmit(address(escrow));
        emit SpendingApproved(carol, hub, 40e18, until);
        vm.prank(stranger); // anyone may submit it
        escrow.permitSpending(carol, hub, 40e18, until, deadline, sig);

        (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 40e18);
        assertEq(validUntil, until);
        assertEq(escrow.nonces(carol), 1, "nonce consumed");

        // and the hub can now lock carol's deposit
        vm.prank(carol);
        escrow.deposit(100e18);
        _lock(JOB, carol, prov1, 40e18, _soon());
        (remaining,) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 0);
    }

    function test_permitSpending_atDeadline() public {
        uint256 deadline = block.timestamp;
        bytes memory sig = _permit(carolKey, carol, hub, 1e18, uint64(block.timestamp + 1 days), deadline);
        escrow.permitSpending(carol, hub, 1e18, uint64(block.timestamp + 1 days), deadline, sig);
        (uint256 remaining,) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 1e18);
    }

    function test_permitSpending_revertsWhenExpired() public {
        uint256 deadline = block.timestamp + 1 hours;
        uint64 until = uint64(block.timestamp + 1 days);
        bytes memory sig = _permit(carolKey, carol, hub, 1e18, until, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PermitExpired.selector, deadline));
        escrow.permitSpending(carol, hub, 1e18, until, deadline, sig);
        assertEq(escrow.nonces(carol), 0);
    }

    function test_permitSpending_revertsForWrongSigner() public {
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        // the admin (or anyone) signing for carol
        (, uint256 adminKey) = makeAddrAndKey("admin");
        bytes memory sig = _permit(adminKey, carol, admin, FUNDS, until, deadline);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, admin, FUNDS, until, deadline, sig);
        (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(carol, admin);
        assertEq(remaining, 0);
        assertEq(validUntil, 0);
    }

    function test_permitSpending_revertsForChangedFields() public {
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _permit(carolKey, carol, hub, 1e18, until, deadline);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 2e18, until, deadline, sig); // amount
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub2, 1e18, until, deadline, sig); // settler
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 1e18, until + 1, deadline, sig); // validUntil
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 1e18, until, deadline + 1, sig); // deadline
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 1e18, until, deadline, bytes("")); // no signature
    }

    function test_permitSpending_revertsForAnotherEscrow() public {
        JobEscrow other = _newEscrow(token, FEE_BPS);
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _permit(carolKey, carol, hub, 1e18, until, deadline); // signed for `escrow`
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        other.permitSpending(carol, hub, 1e18, until, deadline, sig);
    }

    function test_permitSpending_revertsWhenReplayed() public {
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _permit(carolKey, carol, hub, 5e18, until, deadline);
        escrow.permitSpending(carol, hub, 5e18, until, deadline, sig);
        vm.prank(carol);
        escrow.deposit(10e18);
        _lock(JOB, carol, prov1, 5e18, _soon());
        // the hub replays the permit to refill its allowance: the nonce was consumed
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 5e18, until, deadline, sig);
        (uint256 remaining,) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 0);
    }

    function test_permitSpending_revertsForFutureNonce() public {
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig =
            _sign(carolKey, _permitDigest(address(escrow), carol, hub, 1e18, until, 1, deadline));
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(carol, hub, 1e18, until, deadline, sig);
    }

    function test_permitSpending_revertsOnZeroSettlerAndKeepsNonce() public {
        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _permit(carolKey, carol, address(0), 1e18, until, deadline);
        vm.expectRevert(JobEscrow.ZeroAddress.selector);
        escrow.permitSpending(carol, address(0), 1e18, until, deadline, sig);
        assertEq(escrow.nonces(carol), 0);
    }

    function test_permitSpending_erc1271Wallet() public {
        (address owner, uint256 ownerKey) = makeAddrAndKey("wallet-owner");
        MockWallet wallet = new MockWallet(owner);
        address payer = address(wallet);
        vm.prank(alice);
        escrow.depositFor(payer, 20e18);

        uint64 until = uint64(block.timestamp + 1 days);
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 digest = _permitDigest(address(escrow), payer, hub, 20e18, until, 0, deadline);
        // signed by someone else than the wallet's owner: the wallet says no
        bytes memory bad = _sign(carolKey, digest);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(payer, hub, 20e18, until, deadline, bad);

        escrow.permitSpending(payer, hub, 20e18, until, deadline, _sign(ownerKey, digest));
        (uint256 remaining,) = escrow.spendingAllowance(payer, hub);
        assertEq(remaining, 20e18);
        _lock(JOB, payer, prov1, 20e18, _soon());
        assertEq(escrow.deposits(payer), 0);
    }

    // ---------------------------------------------------------------------------------------------
    // lock within the authorisation
    // ---------------------------------------------------------------------------------------------

    function test_lock_revertsWithoutAuthorisation() public {
        vm.prank(carol);
        escrow.deposit(10e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1e18));
        _lock(JOB, carol, prov1, 1e18, _soon());
    }

    function test_lock_revertsAboveAuthorisation() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, uint64(block.timestamp + 1 days));
        vm.stopPrank();
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 10e18, 10e18 + 1)
        );
        _lock(JOB, carol, prov1, 10e18 + 1, _soon());
        _lock(JOB, carol, prov1, 6e18, _soon());
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 4e18, 5e18)
        );
        _lock(JOB2, carol, prov1, 5e18, _soon());
        _lock(JOB2, carol, prov1, 4e18, _soon());
    }

    function test_lock_revertsAfterAuthorisationExpired() public {
        uint64 until = uint64(block.timestamp + 1 days);
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, until);
        vm.stopPrank();
        vm.warp(until); // validUntil is inclusive
        _lock(JOB, carol, prov1, 1e18, _soon());
        vm.warp(until + 1);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingAuthorisationExpired.selector, carol, hub, until)
        );
        _lock(JOB2, carol, prov1, 1e18, _soon());
    }

    function test_lock_revertsWhenAuthorisedWithValidUntilZero() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, 0);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1e18));
        _lock(JOB, carol, prov1, 1e18, _soon());
    }

    function test_lock_revertsAfterRevocation() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, uint64(block.timestamp + 1 days));
        escrow.approveSpending(hub, 0, uint64(block.timestamp + 1 days));
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1e18));
        _lock(JOB, carol, prov1, 1e18, _soon());
    }

    function test_lock_decrementsAllowanceOfTheCallerOnly() public {
        uint64 until = uint64(block.timestamp + 1 days);
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, until);
        escrow.approveSpending(hub2, 5e18, until);
        vm.stopPrank();
        _lock(JOB, carol, prov1, 7e18, _soon());
        (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 3e18);
        assertEq(validUntil, until, "validUntil unchanged");
        (remaining,) = escrow.spendingAllowance(carol, hub2);
        assertEq(remaining, 5e18, "other settler's allowance untouched");
        // hub2 cannot use hub's allowance
        vm.prank(hub2);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub2, 5e18, 6e18)
        );
        escrow.lock(JOB2, carol, prov1, 6e18, _soon());
    }

    function test_lock_refundsDoNotRestoreAllowance() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, uint64(block.timestamp + 30 days));
        vm.stopPrank();
        _lock(JOB, carol, prov1, 6e18, _soon());
        vm.prank(hub);
        escrow.settle(JOB, 1e18); // 5 refunded to the deposit
        _lock(JOB2, carol, prov1, 4e18, _soon());
        vm.warp(block.timestamp + 2 days);
        escrow.expire(JOB2); // 4 back to the deposit
        assertEq(escrow.deposits(carol), 99e18);
        (uint256 remaining,) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 0, "the allowance caps the total ever locked");
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1));
        _lock(keccak256("job-3"), carol, prov1, 1, _soon());
    }

    // ---------------------------------------------------------------------------------------------
    // bounded deadline and the order of checks
    // ---------------------------------------------------------------------------------------------

    function test_lock_revertsOnDeadlineTooFar() public {
        _deposit(alice, 10e18);
        uint64 tooFar = uint64(block.timestamp + MAX_LOCK + 1);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.DeadlineTooFar.selector, tooFar, block.timestamp + MAX_LOCK)
        );
        _lock(JOB, alice, prov1, 1e18, tooFar);
        vm.expectRevert(
            abi.encodeWithSelector(
                JobEscrow.DeadlineTooFar.selector, type(uint64).max, block.timestamp + MAX_LOCK
            )
        );
        _lock(JOB, alice, prov1, 1e18, type(uint64).max);
        _lock(JOB, alice, prov1, 1e18, uint64(block.timestamp + MAX_LOCK));
        (,,, uint64 deadline,) = escrow.getLock(JOB);
        assertEq(deadline, block.timestamp + MAX_LOCK);
    }

    function test_lock_checkOrder() public {
        // carol has no deposit and no authorisation: DeadlineTooFar comes before the authorisation,
        uint64 tooFar = uint64(block.timestamp + MAX_LOCK + 1);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.DeadlineTooFar.selector, tooFar, block.timestamp + MAX_LOCK)
        );
        _lock(JOB, carol, prov1, 1e18, tooFar);
        // DeadlineInPast before it too,
        vm.expectRevert(
            abi.encodeWithSelector(
                JobEscrow.DeadlineInPast.selector, uint64(block.timestamp), block.timestamp
            )
        );
        _lock(JOB, carol, prov1, 1e18, uint64(block.timestamp));
        // the authorisation before the deposit,
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1e18));
        _lock(JOB, carol, prov1, 1e18, _soon());
        // and with an authorisation, the deposit last.
        vm.prank(carol);
        escrow.approveSpending(hub, 10e18, uint64(block.timestamp + 1 days));
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.InsufficientDeposit.selector, carol, 0, 1e18));
        _lock(JOB, carol, prov1, 1e18, _soon());
        (uint256 remaining,) = escrow.spendingAllowance(carol, hub);
        assertEq(remaining, 10e18, "a failed lock uses up nothing");
    }

    // ---------------------------------------------------------------------------------------------
    // the admin and a stolen or new settler key cannot move deposits
    // ---------------------------------------------------------------------------------------------

    /// The attack of the review: the admin makes itself a settler and locks a payer's deposit to itself.
    function test_adminCannotMoveADeposit() public {
        _deposit(alice, 100e18);
        _deposit(bob, 100e18);
        vm.prank(admin);
        escrow.grantRole(settlerRole, admin);

        address[2] memory victims = [alice, bob];
        for (uint256 i; i < victims.length; ++i) {
            vm.prank(admin);
            vm.expectRevert(
                abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, victims[i], admin, 0, 100e18)
            );
            escrow.lock(JOB, victims[i], admin, 100e18, _soon());
            vm.prank(admin);
            vm.expectRevert(
                abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, victims[i], admin, 0, 1)
            );
            escrow.lock(JOB, victims[i], thief, 1, _soon());
        }
        // nothing was locked, so there is nothing to settle
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(0)));
        escrow.settle(JOB, 100e18);
        // it cannot authorise itself on the payers' behalf either: approveSpending sets the caller's own
        // allowance, and a permit needs the payer's signature
        vm.prank(admin);
        escrow.approveSpending(admin, FUNDS, type(uint64).max);
        (, uint256 adminKey) = makeAddrAndKey("admin");
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory forged = _permit(adminKey, alice, admin, FUNDS, type(uint64).max, deadline);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.permitSpending(alice, admin, FUNDS, type(uint64).max, deadline, forged);
        vm.prank(admin);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, alice, admin, 0, 100e18)
        );
        escrow.lock(JOB, alice, admin, 100e18, _soon());

        assertEq(escrow.deposits(alice), 100e18);
        assertEq(escrow.deposits(bob), 100e18);
        assertEq(token.balanceOf(admin), 0);
        assertEq(token.balanceOf(address(escrow)), 200e18);
    }

    /// A settler key the payers never authorised (a new or stolen account given the role) is as powerless.
    function test_unauthorisedSettlerCannotMoveADeposit() public {
        _deposit(alice, 100e18);
        vm.prank(admin);
        escrow.grantRole(settlerRole, thief);
        vm.prank(thief);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, alice, thief, 0, 100e18)
        );
        escrow.lock(JOB, alice, thief, 100e18, _soon());
        // hub2 also holds the role but alice never authorised it
        vm.prank(hub2);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, alice, hub2, 0, 1e18)
        );
        escrow.lock(JOB, alice, thief, 1e18, _soon());
        assertEq(escrow.deposits(alice), 100e18);
        assertEq(token.balanceOf(thief), 0);
    }

    /// Nor can such a settler pay out the locks the hub made: settling needs the payer's authorisation too.
    function test_unauthorisedSettlerCannotSettleOpenLocks() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 50e18, uint64(block.timestamp + 1 days));
        vm.stopPrank();
        vm.startPrank(hub);
        escrow.lock(JOB, carol, prov1, 20e18, _soon());
        escrow.lock(JOB2, carol, prov1, 20e18, _soon());
        vm.stopPrank();
        vm.prank(admin);
        escrow.grantRole(settlerRole, admin);

        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SettlerNotAuthorised.selector, JOB, carol, admin));
        escrow.settle(JOB, 20e18);
        bytes32[] memory ids = new bytes32[](2);
        ids[0] = JOB;
        ids[1] = JOB2;
        uint256[] memory paid = new uint256[](2);
        paid[0] = 0;
        paid[1] = 20e18;
        vm.prank(admin);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SettlerNotAuthorised.selector, JOB, carol, admin));
        escrow.settleBatch(ids, paid);
        (,,,, uint8 state) = escrow.getLock(JOB);
        assertEq(state, escrow.STATE_LOCKED());
        assertEq(token.balanceOf(prov1), 0);

        // the hub, which carol authorised, still settles — also once her authorisation has run out
        vm.warp(block.timestamp + 2 days);
        vm.prank(hub);
        escrow.settleBatch(ids, paid);
        assertEq(token.balanceOf(prov1), 20e18 - 20e18 * uint256(FEE_BPS) / 10_000);
    }

    /// A stolen *authorised* hub key takes at most what each payer authorised it for.
    function test_stolenHubKeyBoundedByAuthorisation() public {
        vm.startPrank(carol);
        escrow.deposit(100e18);
        escrow.approveSpending(hub, 10e18, uint64(block.timestamp + 1 days));
        vm.stopPrank();
        vm.startPrank(hub); // the thief, with the hub's key
        escrow.lock(JOB, carol, thief, 10e18, _soon());
        escrow.settle(JOB, 10e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.SpendingNotAuthorised.selector, carol, hub, 0, 1));
        escrow.lock(JOB2, carol, thief, 1, _soon());
        vm.stopPrank();
        assertEq(token.balanceOf(thief), 10e18 - 10e18 * uint256(FEE_BPS) / 10_000);
        assertEq(escrow.deposits(carol), 90e18);
    }

    /// Whoever calls lock with whatever role: nothing beyond the authorisation of msg.sender is ever locked.
    function testFuzz_lockNeverExceedsAuthorisation(address caller, uint128 authorised, uint96 amount)
        public
    {
        vm.assume(caller != address(0));
        amount = uint96(bound(amount, 1, 1_000e18));
        vm.prank(carol);
        escrow.deposit(1_000e18);
        if (caller != hub) {
            vm.prank(admin);
            escrow.grantRole(settlerRole, caller);
        }
        vm.prank(carol);
        escrow.approveSpending(caller, authorised, uint64(block.timestamp + 1 days));
        vm.prank(caller);
        if (amount > authorised) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    JobEscrow.SpendingNotAuthorised.selector,
                    carol,
                    caller,
                    uint256(authorised),
                    uint256(amount)
                )
            );
            escrow.lock(JOB, carol, prov1, amount, _soon());
            assertEq(escrow.deposits(carol), 1_000e18);
        } else {
            escrow.lock(JOB, carol, prov1, amount, _soon());
            (uint256 remaining,) = escrow.spendingAllowance(carol, caller);
            assertEq(remaining, uint256(authorised) - amount);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // the admin behind a delay
    // ---------------------------------------------------------------------------------------------

    function test_adminTransfer_onlyAfterDelay() public {
        address newAdmin = makeAddr("new-admin");
        bytes32 adminRole = escrow.DEFAULT_ADMIN_ROLE();
        vm.prank(admin);
        escrow.beginDefaultAdminTransfer(newAdmin);
        (address pending, uint48 schedule) = escrow.pendingDefaultAdmin();
        assertEq(pending, newAdmin);
        assertEq(schedule, block.timestamp + ADMIN_DELAY);

        vm.prank(newAdmin);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminDelay.selector, schedule
            )
        );
        escrow.acceptDefaultAdminTransfer();
        vm.warp(schedule);
        vm.prank(newAdmin);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminDelay.selector, schedule
            )
        );
        escrow.acceptDefaultAdminTransfer();
        assertEq(escrow.defaultAdmin(), admin);

        vm.warp(schedule + 1);
        vm.prank(newAdmin);
        escrow.acceptDefaultAdminTransfer();
        assertEq(escrow.defaultAdmin(), newAdmin);
        assertTrue(escrow.hasRole(adminRole, newAdmin));
        assertFalse(escrow.hasRole(adminRole, admin));
        vm.prank(newAdmin);
        escrow.setFeeBps(0);
        vm.prank(admin);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, admin, adminRole)
        );
        escrow.setFeeBps(1);
    }

    function test_adminTransfer_cancelled() public {
        address newAdmin = makeAddr("new-admin");
        vm.prank(admin);
        escrow.beginDefaultAdminTransfer(newAdmin);
        vm.prank(admin);
        escrow.cancelDefaultAdminTransfer();
        vm.warp(block.timestamp + ADMIN_DELAY + 1);
        vm.prank(newAdmin);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControlDefaultAdminRules.AccessControlInvalidDefaultAdmin.selector, newAdmin
            )
        );
        escrow.acceptDefaultAdminTransfer();
        assertEq(escrow.defaultAdmin(), admin);
    }

    function test_adminRole_cannotBeGrantedDirectly() public {
        bytes32 adminRole = escrow.DEFAULT_ADMIN_ROLE();
        vm.prank(admin);
        vm.expectRevert(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminRules.selector);
        escrow.grantRole(adminRole, stranger);
        assertFalse(escrow.hasRole(adminRole, stranger));
    }
}
