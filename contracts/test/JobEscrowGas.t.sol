// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {console} from "forge-std/Test.sol";
import {GpuFedToken} from "../src/GpuFedToken.sol";
import {JobEscrow} from "../src/JobEscrow.sol";
import {EscrowSigning} from "./utils/Signing.sol";

/// @notice Settlement cost benchmark. Gas is deterministic, so the figures printed here (run with -vv) are
///         the ones quoted in docs/contracts.md, and the assertions keep them from regressing.
/// @dev Jobs are locked in `setUp`, which forge runs as a separate transaction, so the measured settlement
///      sees cold storage exactly like a real settlement transaction. Amounts: 10-99 GPF per job, paid
///      70-100 % of the lock (every 4th job exactly the full lock), so most jobs credit a refund; 2.5 % fee.
///      Worst-case storage: every payer's free deposit and every provider's and the treasury's token balance
///      start at zero (first write to each is a zero -> non-zero SSTORE).
///      "execution" = gas of the settle call as seen by the caller (gasleft() difference), including the cold
///      access to the escrow and token accounts; "calldata" = what the transaction's input bytes cost
///      (16 gas per non-zero byte, 4 per zero byte). A transaction also pays 21,000 once.
abstract contract SettleGasBase is EscrowSigning {
    uint256 internal constant MAX_GAS_PER_JOB = 15_000;

    GpuFedToken internal token;
    JobEscrow internal escrow;
    address internal hub = makeAddr("hub");
    uint256 internal hubKey = uint256(keccak256("hub")); // makeAddr's key for "hub"
    address internal treasury = makeAddr("treasury");
    address[] internal payers;
    bytes32[] internal ids;
    uint256[] internal paid;

    function _scenario() internal pure virtual returns (uint256 n, uint256 nPayers, uint256 nProviders);

    /// @dev Steady state: payers, providers and the treasury already hold a non-zero balance (as after their
    ///      first settlement), so no zero -> non-zero SSTORE happens. Default: cold start (worst case).
    function _steadyState() internal pure virtual returns (bool) {
        return false;
    }

    /// @dev Free deposit and authorisation each payer has on top of what the prepared jobs lock. Default 0.
    function _spare() internal pure virtual returns (uint256) {
        return 0;
    }

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new GpuFedToken(address(this));
        escrow = new JobEscrow(token, address(this), treasury, 250, 3 days, 1 days, 30 days);
        escrow.grantRole(escrow.SETTLER_ROLE(), hub);

        (uint256 n, uint256 nPayers, uint256 nProviders) = _scenario();
        uint256[] memory need = new uint256[](nPayers);
        uint256[] memory amounts = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            amounts[i] = (10 + (i * 7) % 90) * 1e18;
            need[i % nPayers] += amounts[i];
        }
        uint256 extra = (_steadyState() ? 1 : 0) + _spare();
        for (uint256 p; p < nPayers; ++p) {
            payers.push(makeAddr(string.concat("payer", vm.toString(p))));
            token.mint(payers[p], need[p] + extra);
            vm.startPrank(payers[p]);
            token.approve(address(escrow), need[p] + extra);
            escrow.deposit(need[p] + extra); // cold start: exactly what gets locked, free deposit 0 before
            escrow.approveSpending(hub, need[p] + _spare(), uint64(block.timestamp + 1 days));
            vm.stopPrank();
        }
        if (_steadyState()) {
            token.mint(treasury, 1);
            for (uint256 p; p < nProviders; ++p) {
                token.mint(makeAddr(string.concat("provider", vm.toString(p))), 1);
            }
        }
        vm.startPrank(hub);
        for (uint256 i; i < n; ++i) {
            ids.push(keccak256(abi.encode("gpufed-job", i)));
            address provider = makeAddr(string.concat("provider", vm.toString(i % nProviders)));
            escrow.lock(ids[i], payers[i % nPayers], provider, amounts[i], uint64(block.timestamp + 1 days));
            paid.push(i % 4 == 0 ? amounts[i] : amounts[i] * (70 + (i * 13) % 30) / 100);
        }
        vm.stopPrank();
    }

    function _calldataGas(bytes memory data) internal pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }

    /// @dev Settles all prepared jobs in one settleBatch call and returns the execution gas per job.
    function _measureBatch() internal returns (uint256 perJob) {
        (uint256 n, uint256 nPayers, uint256 nProviders) = _scenario();
        bytes32[] memory jobIds = ids;
        uint256[] memory amounts = paid;
        uint256 calldataGas = _calldataGas(abi.encodeCall(JobEscrow.settleBatch, (jobIds, amounts)));

        vm.prank(hub);
        uint256 before = gasleft();
        escrow.settleBatch(jobIds, amounts);
        uint256 execution = before - gasleft();

        perJob = execution / n;
        console.log(
            _steadyState() ? "settleBatch (steady state)" : "settleBatch (cold start)", n, nPayers, nProviders
        );
        console.log("  ^ jobs, payers, providers");
        console.log("  execution gas total:      ", execution);
        console.log("  execution gas per job:    ", perJob);
        console.log("  calldata gas per job:     ", calldataGas / n);
        console.log("  tx gas per job (+21000/n):", (execution + calldataGas + 21_000) / n);
        _checkAllSettled();
    }

    function _checkAllSettled() internal view {
        uint256 free;
        for (uint256 i; i < ids.length; ++i) {
            (,,,, uint8 state) = escrow.getLock(ids[i]);
            assertEq(state, 2);
        }
        for (uint256 p; p < payers.length; ++p) {
            free += escrow.deposits(payers[p]);
        }
        assertEq(token.balanceOf(address(escrow)), free, "only refunds (and spare deposits) stay in escrow");
    }
}

/// The headline figure: 100 jobs, 3 payers, 4 providers.
contract SettleBatchGas100Jobs4ProvidersTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (100, 3, 4);
    }

    function test_gas_settleBatch100Jobs4Providers() public {
        assertLe(_measureBatch(), MAX_GAS_PER_JOB, "settlement gas per job above budget");
    }
}

/// The same 100 jobs once every party already holds tokens (the usual case after the first settlement).
contract SettleBatchGas100Jobs4ProvidersSteadyTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (100, 3, 4);
    }

    function _steadyState() internal pure override returns (bool) {
        return true;
    }

    function test_gas_settleBatch100Jobs4ProvidersSteady() public {
        assertLe(_measureBatch(), MAX_GAS_PER_JOB);
    }
}

/// All jobs to one provider: the cheapest case (one provider transfer).
contract SettleBatchGas100Jobs1ProviderTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (100, 3, 1);
    }

    function test_gas_settleBatch100Jobs1Provider() public {
        assertLe(_measureBatch(), MAX_GAS_PER_JOB);
    }
}

/// Every job to a different provider: the worst case (no aggregation possible, 100 provider transfers to
/// accounts that held no tokens). Not held to the 15k budget, only to a loose ceiling.
contract SettleBatchGas100Jobs100ProvidersTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (100, 3, 100);
    }

    function test_gas_settleBatch100Jobs100Providers() public {
        assertLe(_measureBatch(), 50_000);
    }
}

/// One job settled with settle(), for comparison.
contract SettleSingleGasTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (1, 1, 1);
    }

    function test_gas_settleSingleJob() public {
        bytes32 jobId = ids[0];
        uint256 amount = paid[0];
        vm.prank(hub);
        uint256 before = gasleft();
        escrow.settle(jobId, amount);
        uint256 execution = before - gasleft();
        console.log("settle: 1 job, execution gas:", execution);
        assertLe(execution, 100_000);
        _checkAllSettled();
    }
}

/// One job settled by its provider with claim() and a receipt signed by the hub, for comparison with settle().
contract ClaimSingleGasTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (1, 1, 1);
    }

    function test_gas_claimSingleJob() public {
        bytes32 jobId = ids[0];
        uint256 amount = paid[0];
        bytes memory sig = _signReceipt(hubKey, address(escrow), jobId, amount);
        address provider = makeAddr("provider0");
        vm.prank(provider);
        uint256 before = gasleft();
        escrow.claim(jobId, amount, hub, sig);
        uint256 execution = before - gasleft();
        console.log("claim: 1 job, execution gas:", execution);
        assertLe(execution, 100_000);
        _checkAllSettled();
    }
}

/// One lock of a fresh job (what the hub pays when it admits a job), with the payer's authorisation check.
contract LockSingleGasTest is SettleGasBase {
    function _scenario() internal pure override returns (uint256, uint256, uint256) {
        return (1, 1, 1);
    }

    function _spare() internal pure override returns (uint256) {
        return 100e18;
    }

    function test_gas_lockSingleJob() public {
        address payer = payers[0];
        address provider = makeAddr("provider0");
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.prank(hub);
        uint256 before = gasleft();
        escrow.lock(keccak256("gas-lock"), payer, provider, 10e18, deadline);
        uint256 execution = before - gasleft();
        console.log("lock: 1 job, execution gas:", execution);
        assertLe(execution, 100_000);
        (uint256 remaining,) = escrow.spendingAllowance(payer, hub);
        assertEq(remaining, 90e18);
    }
}
