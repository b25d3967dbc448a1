// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, console} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";
import {JobEscrowHandler} from "./JobEscrowHandler.sol";

/// @notice Stateful fuzzing of JobEscrow through JobEscrowHandler (random sequences of deposits, withdrawals,
///         locks, settlements, batches, expiries, time jumps, fee and treasury changes, and retries that must
///         fail).
contract JobEscrowInvariantTest is Test {
    GpuFedToken internal token;
    JobEscrow internal escrow;
    JobEscrowHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        address admin = makeAddr("inv-admin");
        address hub = makeAddr("inv-hub");
        token = new GpuFedToken(address(this));
        escrow = new JobEscrow(token, admin, makeAddr("inv-treasury"), 250, 3 days, 1 days, 30 days);
        bytes32 settlerRole = escrow.SETTLER_ROLE();
        vm.prank(admin);
        escrow.grantRole(settlerRole, hub);
        handler = new JobEscrowHandler(token, escrow, hub, admin);
        token.transferOwnership(address(handler)); // the handler mints for payers
        for (uint256 i; i < handler.payerCount(); ++i) {
            vm.prank(handler.payers(i));
            escrow.approveSpending(hub, type(uint128).max, type(uint64).max);
        }

        bytes4[] memory selectors = new bytes4[](11);
        selectors[0] = JobEscrowHandler.deposit.selector;
        selectors[1] = JobEscrowHandler.withdraw.selector;
        selectors[2] = JobEscrowHandler.lock.selector;
        selectors[3] = JobEscrowHandler.settle.selector;
        selectors[4] = JobEscrowHandler.settleBatch.selector;
        selectors[5] = JobEscrowHandler.expire.selector;
        selectors[6] = JobEscrowHandler.retryClosed.selector;
        selectors[7] = JobEscrowHandler.relockExisting.selector;
        selectors[8] = JobEscrowHandler.warp.selector;
        selectors[9] = JobEscrowHandler.setFeeBps.selector;
        selectors[10] = JobEscrowHandler.setTreasury.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// The escrow holds exactly the free deposits plus the open locks: no token is created or stranded.
    function invariant_balanceEqualsDepositsPlusOpenLocks() public view {
        assertEq(
            token.balanceOf(address(escrow)),
            handler.sumFreeDeposits() + handler.sumOpenLocks(),
            "escrow balance != free deposits + open locks"
        );
    }

    /// Every token minted is in a payer's wallet, in the escrow, or with a provider/treasury.
    function invariant_tokensConserved() public view {
        assertEq(
            handler.totalMinted(),
            handler.sumPayerWallets() + token.balanceOf(address(escrow)) + handler.receiverBalances(),
            "tokens leaked"
        );
    }

    /// A lock settles or expires at most once, and its state never goes back to Locked.
    function invariant_closedAtMostOnce() public view {
        assertEq(handler.unexpectedSuccesses(), 0, "a call that must revert succeeded");
        uint256 n = handler.jobCount();
        for (uint256 i; i < n; ++i) {
            bytes32 jobId = handler.jobIds(i);
            assertLe(handler.closeCount(jobId), 1, "closed twice");
            uint8 expected = handler.finalState(jobId);
            (,,,, uint8 state) = escrow.getLock(jobId);
            assertEq(state, expected == 0 ? 1 : expected, "state differs from history");
        }
    }

    /// Nobody is paid more than was locked: provider + treasury receipts per job <= its lock, and the token
    /// flows of every settlement match the expected provider/treasury split.
    function invariant_paidAtMostLocked() public view {
        assertEq(handler.flowMismatches(), 0, "token flows differ from paid/fee split");
        uint256 n = handler.jobCount();
        for (uint256 i; i < n; ++i) {
            bytes32 jobId = handler.jobIds(i);
            assertLe(handler.receivedFor(jobId), handler.lockedAmount(jobId), "paid more than locked");
        }
    }

    /// Printed with -vv at the end of each run, to see that the campaign really exercised the paths.
    function afterInvariant() public view {
        console.log("jobs locked / settled / in batches / expired:");
        console.log(handler.jobCount(), handler.settledCount(), handler.batchCount(), handler.expiredCount());
    }
}
