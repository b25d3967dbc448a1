// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowFixture} from "./utils/Fixtures.sol";
import {MockWallet} from "./mocks/MockWallet.sol";
import {ReentrantToken} from "./mocks/MockTokens.sol";

/// @notice The claim window and the provider's own claim with a hub-signed usage receipt.
contract JobEscrowClaimTest is EscrowFixture {
    address internal hub2;
    uint256 internal hub2Key;

    function setUp() public override {
        super.setUp();
        (hub2, hub2Key) = makeAddrAndKey("hub2");
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub2);
    }

    function _receipt(bytes32 jobId, uint256 paid) internal view returns (bytes memory) {
        return _signReceipt(hubKey, address(escrow), jobId, paid);
    }

    // ---------------------------------------------------------------------------------------------
    // claim pays exactly like settle
    // ---------------------------------------------------------------------------------------------

    function test_claim_paysLikeSettle() public {
        _deposit(alice, 100e18);
        _lock(JOB, alice, prov1, 40e18, _soon());
        bytes memory sig = _receipt(JOB, 30e18);
        vm.expectEmit(address(escrow));
        emit Settled(JOB, alice, prov1, 30e18, 0.75e18, 10e18);
        vm.prank(prov1);
        escrow.claim(JOB, 30e18, hub, sig);

        assertEq(token.balanceOf(prov1), 29.25e18);
        assertEq(token.balanceOf(treasury), 0.75e18);
        assertEq(escrow.deposits(alice), 70e18);
        assertEq(token.balanceOf(address(escrow)), 70e18);
        assertEq(_state(JOB), 2);
    }

    function test_claim_byAnyoneStillPaysTheProvider() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        bytes memory sig = _receipt(JOB, 10e18);
        vm.prank(stranger);
        escrow.claim(JOB, 10e18, hub, sig);
        assertEq(token.balanceOf(prov1), 9.75e18);
        assertEq(token.balanceOf(stranger), 0);
    }

    function test_claim_zeroPaidRefundsAll() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        bytes memory sig = _receipt(JOB, 0);
        escrow.claim(JOB, 0, hub, sig);
        assertEq(escrow.deposits(alice), 10e18);
        assertEq(token.balanceOf(prov1), 0);
        assertEq(_state(JOB), 2);
    }

    /// For any amount, paid and fee, a claim moves exactly what settle moves.
    function testFuzz_claimEqualsSettle(uint96 amount, uint96 paid, uint16 bps) public {
        amount = uint96(bound(amount, 1, 1_000e18));
        paid = uint96(bound(paid, 0, amount));
        bps = uint16(bound(bps, 0, 1_000));
        vm.prank(admin);
        escrow.setFeeBps(bps);
        _deposit(alice, amount);
        _deposit(bob, amount);
        _lock(JOB, alice, prov1, amount, _soon());
        _lock(JOB2, bob, prov2, amount, _soon());

        vm.prank(hub);
        escrow.settle(JOB, paid);
        uint256 treasuryAfterSettle = token.balanceOf(treasury);
        bytes memory sig = _receipt(JOB2, paid);
        vm.prank(prov2);
        escrow.claim(JOB2, paid, hub, sig);

        assertEq(token.balanceOf(prov1), token.balanceOf(prov2), "provider payout");
        assertEq(treasuryAfterSettle, token.balanceOf(treasury) - treasuryAfterSettle, "fee");
        assertEq(escrow.deposits(alice), escrow.deposits(bob), "refund");
        assertEq(_state(JOB2), 2);
    }

    // ---------------------------------------------------------------------------------------------
    // the claim window
    // ---------------------------------------------------------------------------------------------

    /// The review's scenario: the job is done, the deadline has passed and the hub is late. The payer cannot
    /// expire before the provider claims, and once claimed the lock cannot be expired.
    function test_claim_duringClaimWindowBeatsTheExpiry() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 10e18, deadline);
        bytes memory sig = _receipt(JOB, 8e18);
        vm.warp(deadline + 1);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(JobEscrow.LockNotExpired.selector, JOB, deadline + CLAIM_WINDOW)
        );
        escrow.expire(JOB);
        vm.warp(deadline + CLAIM_WINDOW);
        vm.prank(prov1);
        escrow.claim(JOB, 8e18, hub, sig);
        assertEq(token.balanceOf(prov1), 7.8e18);
        vm.warp(deadline + CLAIM_WINDOW + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.expire(JOB);
    }

    function test_claim_afterClaimWindowUntilExpired() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 10e18, deadline);
        vm.warp(deadline + 30 days);
        escrow.claim(JOB, 1e18, hub, _receipt(JOB, 1e18));
        assertEq(_state(JOB), 2);
    }

    function test_settle_duringClaimWindow() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 10e18, deadline);
        vm.warp(deadline + CLAIM_WINDOW);
        vm.prank(hub);
        escrow.settle(JOB, 10e18);
        assertEq(_state(JOB), 2);
    }

    // ---------------------------------------------------------------------------------------------
    // a lock settles once, whichever comes first
    // ---------------------------------------------------------------------------------------------

    function test_claim_afterSettleReverts() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        vm.prank(hub);
        escrow.settle(JOB, 2e18);
        bytes memory sig = _receipt(JOB, 10e18);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.claim(JOB, 10e18, hub, sig);
        assertEq(token.balanceOf(prov1), 1.95e18);
    }

    function test_settle_afterClaimReverts() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        escrow.claim(JOB, 2e18, hub, _receipt(JOB, 2e18));
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.settle(JOB, 10e18);
        bytes32[] memory ids = new bytes32[](1);
        uint256[] memory paid = new uint256[](1);
        ids[0] = JOB;
        paid[0] = 10e18;
        vm.prank(hub);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.settleBatch(ids, paid);
        assertEq(token.balanceOf(prov1), 1.95e18);
        assertEq(escrow.deposits(alice), 8e18);
    }

    function test_claim_twiceReverts() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
        bytes memory sig = _receipt(JOB, 2e18);
        escrow.claim(JOB, 2e18, hub, sig);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(2)));
        escrow.claim(JOB, 2e18, hub, sig);
    }

    function test_claim_afterExpireReverts() public {
        _deposit(alice, 10e18);
        uint64 deadline = _soon();
        _lock(JOB, alice, prov1, 10e18, deadline);
        bytes memory sig = _receipt(JOB, 2e18);
        vm.warp(_expirable(deadline));
        escrow.expire(JOB);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(3)));
        escrow.claim(JOB, 2e18, hub, sig);
    }

    function test_claim_unknownJobReverts() public {
        bytes memory sig = _receipt(JOB, 0);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.LockNotActive.selector, JOB, uint8(0)));
        escrow.claim(JOB, 0, hub, sig);
    }

    function test_claim_revertsWhenPaidExceedsLock() public {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 4e18, _soon());
        bytes memory sig = _receipt(JOB, 4e18 + 1);
        vm.expectRevert(abi.encodeWithSelector(JobEscrow.PaidExceedsLocked.selector, JOB, 4e18 + 1, 4e18));
        escrow.claim(JOB, 4e18 + 1, hub, sig);
    }

    // ---------------------------------------------------------------------------------------------
    // who may sign a receipt
    // ---------------------------------------------------------------------------------------------

    function _lockedJob() internal {
        _deposit(alice, 10e18);
        _lock(JOB, alice, prov1, 10e18, _soon());
    }

    function test_claim_revertsForNonSettlerReceipt() public {
        _lockedJob();
        (address faker, uint256 fakerKey) = makeAddrAndKey("faker");
        // even a signer the payer authorised is not enough without the role
        vm.prank(alice);
        escrow.approveSpending(faker, 1e18, uint64(block.timestamp + 1 days));
        bytes memory sig = _signReceipt(fakerKey, address(escrow), JOB, 10e18);
        vm.prank(prov1);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 10e18, faker, sig);
        // the provider signing its own receipt
        (, uint256 provKey) = makeAddrAndKey("provider1");
        sig = _signReceipt(provKey, address(escrow), JOB, 10e18);
        vm.prank(prov1);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 10e18, prov1, sig);
        assertEq(_state(JOB), 1);
    }

    function test_claim_revertsForSettlerThePayerNeverAuthorised() public {
        _lockedJob();
        // hub2 holds SETTLER_ROLE, but alice never authorised it (and so does the admin, made a settler)
        bytes memory sig = _signReceipt(hub2Key, address(escrow), JOB, 10e18);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 10e18, hub2, sig);

        vm.prank(admin);
        escrow.grantRole(settlerRole, admin);
        (, uint256 adminKey) = makeAddrAndKey("admin");
        sig = _signReceipt(adminKey, address(escrow), JOB, 10e18);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 10e18, admin, sig);
        assertEq(_state(JOB), 1);
    }

    function test_claim_revertsForRevokedSettler() public {
        _lockedJob();
        bytes memory sig = _receipt(JOB, 10e18);
        vm.prank(admin);
        escrow.revokeRole(settlerRole, hub);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 10e18, hub, sig);
    }

    function test_claim_revertsForAlteredOrMisattributedReceipt() public {
        _lockedJob();
        vm.prank(alice);
        escrow.approveSpending(hub2, 1e18, uint64(block.timestamp + 1 days));
        bytes memory sig = _receipt(JOB, 3e18);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 4e18, hub, sig); // paid changed
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 3e18, hub2, sig); // another (authorised) settler named as signer
        _deposit(alice, 10e18);
        _lock(JOB2, alice, prov1, 10e18, _soon());
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB2, 3e18, hub, sig); // another job
        JobEscrow other = _newEscrow(token, FEE_BPS);
        bytes memory otherSig = _signReceipt(hubKey, address(other), JOB, 3e18);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 3e18, hub, otherSig); // signed for another escrow
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 3e18, hub, ""); // no signature
        escrow.claim(JOB, 3e18, hub, sig);
    }

    /// A receipt is about work already done: it stays valid after the payer's authorisation of its signer
    /// expired, was used up or was revoked.
    function test_claim_validAfterAuthorisationEndedOrRevoked() public {
        _deposit(alice, 30e18);
        vm.prank(alice);
        escrow.approveSpending(hub, 30e18, uint64(block.timestamp + 1 hours));
        uint64 deadline = uint64(block.timestamp + 2 hours);
        _lock(JOB, alice, prov1, 20e18, deadline);
        _lock(JOB2, alice, prov1, 10e18, deadline); // authorisation used up
        vm.warp(block.timestamp + 3 hours); // and expired
        escrow.claim(JOB, 5e18, hub, _receipt(JOB, 5e18));
        vm.prank(alice);
        escrow.approveSpending(hub, 0, 0); // and revoked
        escrow.claim(JOB2, 5e18, hub, _receipt(JOB2, 5e18));
        assertEq(token.balanceOf(prov1), 2 * 4.875e18);
    }

    /// After a key rotation (old key revoked, new key granted and authorised by the payer), the new key's
    /// receipts pay locks made with the old key.
    function test_claim_byNewSettlerAfterRotation() public {
        _lockedJob();
        vm.prank(admin);
        escrow.revokeRole(settlerRole, hub);
        vm.prank(alice);
        escrow.approveSpending(hub2, 1, uint64(block.timestamp + 1 days));
        escrow.claim(JOB, 6e18, hub2, _signReceipt(hub2Key, address(escrow), JOB, 6e18));
        assertEq(_state(JOB), 2);
        assertEq(escrow.deposits(alice), 4e18);
    }

    function test_claim_erc1271Settler() public {
        _lockedJob();
        (address owner, uint256 ownerKey) = makeAddrAndKey("settler-wallet-owner");
        address wallet = address(new MockWallet(owner));
        vm.prank(admin);
        escrow.grantRole(settlerRole, wallet);
        vm.prank(alice);
        escrow.approveSpending(wallet, 1, uint64(block.timestamp + 1 days));
        bytes memory sig = _signReceipt(ownerKey, address(escrow), JOB, 6e18);
        vm.expectRevert(JobEscrow.InvalidSignature.selector);
        escrow.claim(JOB, 6e18, wallet, _signReceipt(hubKey, address(escrow), JOB, 6e18));
        escrow.claim(JOB, 6e18, wallet, sig);
        assertEq(_state(JOB), 2);
    }

    // ---------------------------------------------------------------------------------------------
    // reentrancy
    // ---------------------------------------------------------------------------------------------

    function test_reentrancy_settleCannotReenterClaim() public {
        ReentrantToken rt = new ReentrantToken();
        JobEscrow e = _newEscrow(rt, FEE_BPS);
        vm.prank(admin);
        e.grantRole(settlerRole, hub);
        rt.mint(alice, 100e18);
        vm.startPrank(alice);
        rt.approve(address(e), type(uint256).max);
        e.deposit(100e18);
        vm.stopPrank();
        _authorise(e, alice, hub, 100e18);
        vm.startPrank(hub);
        e.lock(JOB, alice, prov1, 10e18, _soon());
        e.lock(JOB2, alice, prov1, 10e18, _soon());
        vm.stopPrank();
        bytes memory sig = _signReceipt(hubKey, address(e), JOB2, 10e18);
        rt.arm(address(e), abi.encodeCall(JobEscrow.claim, (JOB2, 10e18, hub, sig)));
        vm.prank(hub);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        e.settle(JOB, 10e18);
    }
}
