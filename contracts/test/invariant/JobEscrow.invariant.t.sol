// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, console} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";
import {FeeOnTransferToken} from "../mocks/MockTokens.sol";
import {JobEscrowHandler} from "./JobEscrowHandler.sol";

/// @notice Stateful fuzzing of JobEscrow through JobEscrowHandler: random sequences of deposits, withdrawals,
///         authorisations and permits, locks, settlements, batches, claims, expiries, time jumps, fee, treasury
///         and role changes, retries that must fail, and attacks by the admin, a thief and a stranger (role
///         fuzzing). Run over a plain ERC-20 (`JobEscrowInvariantTest`) and over a fee-on-transfer token
///         (`JobEscrowFeeOnTransferInvariantTest`).
abstract contract JobEscrowInvariantBase is Test {
    IERC20 internal token;
    JobEscrow internal escrow;
    JobEscrowHandler internal handler;

    /// @dev The token to run over and its own transfer fee in basis points.
    function _deployToken() internal virtual returns (IERC20 token_, uint256 transferFeeBps);

    /// @dev Lets the handler mint.
    function _handOverMinting() internal virtual;

    function setUp() public {
        vm.warp(1_700_000_000);
        uint256 transferFeeBps;
        (token, transferFeeBps) = _deployToken();
        address admin = makeAddr("inv-admin");
        escrow = new JobEscrow(token, admin, makeAddr("inv-treasury"), 250, 3 days, 1 days, 30 days);
        handler = new JobEscrowHandler(token, escrow, transferFeeBps);
        bytes32 settlerRole = escrow.SETTLER_ROLE();
        vm.startPrank(admin);
        escrow.grantRole(settlerRole, handler.hub());
        escrow.grantRole(settlerRole, handler.hub2());
        vm.stopPrank();
        _handOverMinting();

        bytes4[] memory selectors = new bytes4[](23);
        selectors[0] = JobEscrowHandler.deposit.selector;
        selectors[1] = JobEscrowHandler.withdraw.selector;
        selectors[2] = JobEscrowHandler.approve.selector;
        selectors[3] = JobEscrowHandler.permit.selector;
        selectors[4] = JobEscrowHandler.lock.selector;
        selectors[5] = JobEscrowHandler.lock.selector; // twice as often: open locks to work on
        selectors[6] = JobEscrowHandler.settle.selector;
        selectors[7] = JobEscrowHandler.claim.selector;
        selectors[8] = JobEscrowHandler.settleBatch.selector;
        selectors[9] = JobEscrowHandler.expire.selector;
        selectors[10] = JobEscrowHandler.retryClosed.selector;
        selectors[11] = JobEscrowHandler.badLock.selector;
        selectors[12] = JobEscrowHandler.attackLock.selector;
        selectors[13] = JobEscrowHandler.attackSettle.selector;
        selectors[14] = JobEscrowHandler.attackClaim.selector;
        selectors[15] = JobEscrowHandler.attackGrantRole.selector;
        selectors[16] = JobEscrowHandler.attackPermitOrWithdraw.selector;
        selectors[17] = JobEscrowHandler.toggleHub2.selector;
        selectors[18] = JobEscrowHandler.warp.selector;
        selectors[19] = JobEscrowHandler.setFeeBps.selector;
        selectors[20] = JobEscrowHandler.setTreasury.selector;
        selectors[21] = JobEscrowHandler.warp.selector; // twice as often: deadlines and claim windows pass
        selectors[22] = JobEscrowHandler.extend.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    // Forge runs a separate campaign (128 runs x 100 calls) per invariant function: the six checks below are
    // grouped into three campaigns to keep the suite quick; each check runs after every call of its campaign.

    /// The escrow's books: in total and per payer, and what each settlement paid.
    function invariant_books() public view {
        _checkBalanceEqualsDepositsPlusOpenLocks();
        _checkPerPayerAccounting();
        _checkPaidAtMostLocked();
    }

    /// Authorisations bound what is locked, locks close once, and every call that must fail fails.
    function invariant_authorisationsAndStates() public view {
        _checkLockedWithinAuthorisation();
        _checkClosedAtMostOnce();
    }

    /// Where tokens go: only to providers, the treasury and payers withdrawing their own deposit.
    function invariant_tokenDestinations() public view {
        _checkTokensOnlyToProvidersTreasuryAndWithdrawingPayers();
    }

    /// The escrow holds exactly the free deposits plus the open locks: no token is created or stranded.
    function _checkBalanceEqualsDepositsPlusOpenLocks() internal view {
        assertEq(
            token.balanceOf(address(escrow)),
            handler.sumFreeDeposits() + handler.sumOpenLocks(),
            "escrow balance != free deposits + open locks"
        );
    }

    /// Per payer: free deposit + its Locked amounts == what arrived for it - what it withdrew - what its locks
    /// paid out.
    function _checkPerPayerAccounting() internal view {
        uint256[] memory openLocks = handler.openLocksByPayer();
        for (uint256 i; i < handler.payerCount(); ++i) {
            address payer = handler.payers(i);
            assertEq(
                escrow.deposits(payer) + openLocks[i],
                handler.ghostDeposited(payer) - handler.ghostWithdrawn(payer) - handler.ghostPaidOut(payer),
                "payer's deposit + open locks != deposited - withdrawn - paid out"
            );
        }
    }

    /// Per payer: it never had more locked than it authorised in total; per payer and settler: the remaining
    /// authorisation is exactly the latest authorisation minus what that settler locked since. Attackers never
    /// get an authorisation.
    function _checkLockedWithinAuthorisation() internal view {
        address hub = handler.hub();
        address hub2 = handler.hub2();
        for (uint256 i; i < handler.payerCount(); ++i) {
            address payer = handler.payers(i);
            assertLe(
                handler.ghostLockedEver(payer), handler.ghostAuthorisedEver(payer), "locked > authorised"
            );
            (uint256 remaining,) = escrow.spendingAllowance(payer, hub);
            assertEq(
                remaining,
                handler.ghostApproved(payer, hub) - handler.ghostLockedSinceApproval(payer, hub),
                "hub allowance"
            );
            (remaining,) = escrow.spendingAllowance(payer, hub2);
            assertEq(
                remaining,
                handler.ghostApproved(payer, hub2) - handler.ghostLockedSinceApproval(payer, hub2),
                "hub2 allowance"
            );
            for (uint256 a; a < handler.attackerCount(); ++a) {
                address attacker = handler.attackers(a);
                (remaining,) = escrow.spendingAllowance(payer, attacker);
                assertEq(remaining, 0, "attacker authorised");
                assertFalse(escrow.everAuthorised(payer, attacker), "attacker ever authorised");
            }
        }
    }

    /// No token leaves the escrow except to a lock's provider, the treasury, or a payer withdrawing its own
    /// deposit: the escrow's outflow is exactly the withdrawals plus the locks' payouts, every wallet holds
    /// exactly what those transfers delivered to it, attackers hold nothing, and no token is anywhere else.
    function _checkTokensOnlyToProvidersTreasuryAndWithdrawingPayers() internal view {
        uint256 withdrawn;
        uint256 paidOut;
        for (uint256 i; i < handler.payerCount(); ++i) {
            address payer = handler.payers(i);
            withdrawn += handler.ghostWithdrawn(payer);
            paidOut += handler.ghostPaidOut(payer);
            assertEq(token.balanceOf(payer), handler.ghostWallet(payer), "payer wallet");
        }
        assertEq(handler.ghostEscrowOut(), withdrawn + paidOut, "escrow outflow != withdrawals + payouts");
        assertEq(
            token.balanceOf(address(escrow)),
            handler.ghostEscrowIn() - handler.ghostEscrowOut(),
            "escrow balance"
        );
        for (uint256 i; i < handler.providerCount(); ++i) {
            address provider = handler.providers(i);
            assertEq(token.balanceOf(provider), handler.ghostWallet(provider), "provider wallet");
        }
        for (uint256 i; i < handler.treasuryCount(); ++i) {
            address treasury = handler.treasuries(i);
            assertEq(token.balanceOf(treasury), handler.ghostWallet(treasury), "treasury wallet");
        }
        for (uint256 i; i < handler.attackerCount(); ++i) {
            address attacker = handler.attackers(i);
            assertEq(token.balanceOf(attacker), 0, "an attacker received tokens");
            assertEq(escrow.deposits(attacker), 0, "an attacker got a deposit");
        }
        assertEq(token.totalSupply(), handler.sumKnownBalances(), "tokens went to an unknown account");
    }

    /// A lock settles or expires at most once, its state never goes back to Locked, and every call that must
    /// revert did (every call that must succeed did).
    function _checkClosedAtMostOnce() internal view {
        assertEq(handler.unexpectedSuccesses(), 0, "a call that must revert succeeded");
        assertEq(handler.unexpectedFailures(), 0, "a call that must succeed reverted");
        uint256 n = handler.jobCount();
        for (uint256 i; i < n; ++i) {
            bytes32 jobId = handler.jobIds(i);
            assertLe(handler.closeCount(jobId), 1, "closed twice");
            uint8 expected = handler.finalState(jobId);
            (,,,, uint8 state) = escrow.getLock(jobId);
            assertEq(state, expected == 0 ? 1 : expected, "state differs from history");
        }
    }

    /// Nobody is paid more than was locked, and the token flows of every deposit, withdrawal and settlement
    /// (single, batch, claim) match the expected split.
    function _checkPaidAtMostLocked() internal view {
        assertEq(handler.flowMismatches(), 0, "token flows differ from the expected split");
        uint256 n = handler.jobCount();
        for (uint256 i; i < n; ++i) {
            bytes32 jobId = handler.jobIds(i);
            assertLe(handler.paidOutFor(jobId), handler.lockedAmount(jobId), "paid more than locked");
        }
    }

    /// Printed with -vv at the end of each run, to see that the campaign really exercised the paths.
    function afterInvariant() public view {
        console.log("jobs locked / settled / in batches / claimed / expired:");
        console.log(handler.jobCount(), handler.settledCount(), handler.batchCount());
        console.log(handler.claimCount(), handler.expiredCount());
        console.log("locks renewed (extendLock):", handler.extendCount());
        console.log("permits / attacks / settlements by an attacker with the role:");
        console.log(handler.permitCount(), handler.attackCount(), handler.attackerSettleCount());
    }
}

/// Over GpuFedToken (plain ERC-20).
contract JobEscrowInvariantTest is JobEscrowInvariantBase {
    function _deployToken() internal override returns (IERC20, uint256) {
        return (new GpuFedToken(address(this)), 0);
    }

    function _handOverMinting() internal override {
        GpuFedToken(address(token)).transferOwnership(address(handler));
    }
}

/// Over a token that burns 1 % of every transfer: the escrow credits what arrives and pays from its books.
contract JobEscrowFeeOnTransferInvariantTest is JobEscrowInvariantBase {
    function _deployToken() internal override returns (IERC20, uint256) {
        return (new FeeOnTransferToken(100), 100);
    }

    function _handOverMinting() internal override {}
}
