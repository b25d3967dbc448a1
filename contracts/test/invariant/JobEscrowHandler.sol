// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {GpuFedToken} from "../../src/GpuFedToken.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";

/// @dev Drives JobEscrow with random but valid calls from payers, the hub, the admin and strangers, and keeps
///      ghost records of what must hold. Every action is valid by construction (the invariant config has
///      fail_on_revert = true); attempts that must fail are made in try/catch and recorded if they succeed.
contract JobEscrowHandler is Test {
    GpuFedToken public immutable token;
    JobEscrow public immutable escrow;
    address public immutable hub;
    address public immutable admin;

    address[] public payers;
    address[] public providers;
    address[] public treasuries;

    bytes32[] public jobIds; // every job ever locked
    bytes32[] internal openJobs; // jobs the handler believes are Locked
    mapping(bytes32 => uint256) public lockedAmount;
    mapping(bytes32 => uint256) public receivedFor; // provider + treasury receipts attributed to the job
    mapping(bytes32 => uint256) public closeCount; // successful settle/expire calls per job
    mapping(bytes32 => uint8) public finalState; // 2 or 3 once closed

    uint256 public totalMinted; // to payers
    uint256 public unexpectedSuccesses; // calls that should have reverted but did not
    uint256 public flowMismatches; // token flows that differ from the expected split
    uint256 public settledCount;
    uint256 public batchCount;
    uint256 public expiredCount;
    uint256 internal nonce;

    constructor(GpuFedToken token_, JobEscrow escrow_, address hub_, address admin_) {
        token = token_;
        escrow = escrow_;
        hub = hub_;
        admin = admin_;
        for (uint256 i; i < 4; ++i) {
            payers.push(makeAddr(string.concat("inv-payer", vm.toString(i))));
        }
        for (uint256 i; i < 3; ++i) {
            providers.push(makeAddr(string.concat("inv-provider", vm.toString(i))));
        }
        treasuries.push(escrow_.treasury());
        treasuries.push(makeAddr("inv-treasury2"));
    }

    // ---------------------------------------------------------------------------------------------
    // actions
    // ---------------------------------------------------------------------------------------------

    function deposit(uint256 payerSeed, uint256 senderSeed, uint256 amount, bool forOther) external {
        address payer = payers[payerSeed % payers.length];
        address sender = forOther ? payers[senderSeed % payers.length] : payer;
        amount = bound(amount, 1, 1_000e18);
        token.mint(sender, amount);
        totalMinted += amount;
        vm.startPrank(sender);
        token.approve(address(escrow), amount);
        if (forOther) escrow.depositFor(payer, amount);
        else escrow.deposit(amount);
        vm.stopPrank();
    }

    function withdraw(uint256 payerSeed, uint256 amount) external {
        address payer = payers[payerSeed % payers.length];
        uint256 free = escrow.deposits(payer);
        if (free == 0) return;
        amount = bound(amount, 1, free);
        vm.prank(payer);
        escrow.withdraw(amount);
    }

    function lock(uint256 payerSeed, uint256 providerSeed, uint256 amount, uint256 lifetime) external {
        address payer = payers[payerSeed % payers.length];
        uint256 free = escrow.deposits(payer);
        if (free == 0) {
            // fund the payer first so that most runs build up open locks
            free = 100e18;
            token.mint(payer, free);
            totalMinted += free;
            vm.startPrank(payer);
            token.approve(address(escrow), free);
            escrow.deposit(free);
            vm.stopPrank();
        }
        amount = bound(amount, 1, free);
        uint64 deadline = uint64(block.timestamp + bound(lifetime, 1, 3 days));
        bytes32 jobId = keccak256(abi.encode("inv-job", ++nonce));
        vm.prank(hub);
        escrow.lock(jobId, payer, providers[providerSeed % providers.length], amount, deadline);
        jobIds.push(jobId);
        openJobs.push(jobId);
        lockedAmount[jobId] = amount;
    }

    function settle(uint256 jobSeed, uint256 paid) external {
        if (openJobs.length == 0) return;
        uint256 idx = jobSeed % openJobs.length;
        bytes32 jobId = openJobs[idx];
        (, address provider, uint128 amount,,) = escrow.getLock(jobId);
        paid = bound(paid, 0, amount);
        uint256 before = _receiverBalances();
        uint256 providerBefore = token.balanceOf(provider);

        vm.prank(hub);
        escrow.settle(jobId, paid);

        uint256 received = _receiverBalances() - before;
        uint256 fee = paid * escrow.lockFeeBps(jobId) / 10_000;
        if (received != paid || token.balanceOf(provider) - providerBefore != paid - fee) ++flowMismatches;
        receivedFor[jobId] += received;
        _close(idx, 2);
        ++settledCount;
    }

    function settleBatch(uint256 seed, uint256 count) external {
        if (openJobs.length == 0) return;
        count = bound(count, 1, openJobs.length < 12 ? openJobs.length : 12);
        bytes32[] memory ids = new bytes32[](count);
        uint256[] memory paid = new uint256[](count);
        uint256[] memory expectedProvider = new uint256[](providers.length);
        uint256 expectedFee;
        uint256[] memory providerBefore = new uint256[](providers.length);
        for (uint256 p; p < providers.length; ++p) {
            providerBefore[p] = token.balanceOf(providers[p]);
        }
        uint256 treasuryBefore = _treasuryBalances();

        // take `count` distinct open jobs, starting at a random index
        uint256 start = seed % openJobs.length;
        for (uint256 i; i < count; ++i) {
            bytes32 jobId = openJobs[(start + i) % openJobs.length];
            (, address provider, uint128 amount,,) = escrow.getLock(jobId);
            ids[i] = jobId;
            paid[i] = bound(uint256(keccak256(abi.encode(seed, i))), 0, amount);
            uint256 fee = paid[i] * escrow.lockFeeBps(jobId) / 10_000;
            expectedFee += fee;
            expectedProvider[_providerIndex(provider)] += paid[i] - fee;
        }

        vm.prank(hub);
        escrow.settleBatch(ids, paid);

        for (uint256 p; p < providers.length; ++p) {
            if (token.balanceOf(providers[p]) - providerBefore[p] != expectedProvider[p]) ++flowMismatches;
        }
        if (_treasuryBalances() - treasuryBefore != expectedFee) ++flowMismatches;
        // Per-provider flows match the model above, so each job's receipts are exactly its `paid`.
        for (uint256 i; i < count; ++i) {
            receivedFor[ids[i]] += paid[i];
            _closeById(ids[i], 2);
        }
        settledCount += count;
        ++batchCount;
    }

    function expire(uint256 jobSeed, address caller) external {
        if (openJobs.length == 0) return;
        // find an open job past its deadline, starting at a random index
        uint256 start = jobSeed % openJobs.length;
        for (uint256 i; i < openJobs.length; ++i) {
            uint256 idx = (start + i) % openJobs.length;
            bytes32 jobId = openJobs[idx];
            (,,, uint64 deadline,) = escrow.getLock(jobId);
            if (block.timestamp > deadline + escrow.claimWindow()) {
                vm.prank(caller);
                escrow.expire(jobId);
                _close(idx, 3);
                ++expiredCount;
                return;
            }
        }
    }

    /// Tries to settle or expire an already closed job again; it must revert.
    function retryClosed(uint256 jobSeed, uint256 paid, bool viaExpire) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        if (finalState[jobId] == 0) return; // still open
        if (viaExpire) {
            try escrow.expire(jobId) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
        } else {
            vm.prank(hub);
            try escrow.settle(jobId, bound(paid, 0, lockedAmount[jobId])) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
        }
    }

    /// Tries to lock a reused job id; it must revert.
    function relockExisting(uint256 jobSeed, uint256 payerSeed) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        address payer = payers[payerSeed % payers.length];
        if (escrow.deposits(payer) == 0) return;
        vm.prank(hub);
        try escrow.lock(jobId, payer, providers[0], 1, uint64(block.timestamp + 1)) {
            ++unexpectedSuccesses;
        } catch {}
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 1 days));
    }

    function setFeeBps(uint256 bps) external {
        uint16 newBps = uint16(bound(bps, 0, escrow.MAX_FEE_BPS()));
        vm.prank(admin);
        escrow.setFeeBps(newBps);
    }

    function setTreasury(uint256 seed) external {
        vm.prank(admin);
        escrow.setTreasury(treasuries[seed % treasuries.length]);
    }

    // ---------------------------------------------------------------------------------------------
    // views for the invariants
    // ---------------------------------------------------------------------------------------------

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    function payerCount() external view returns (uint256) {
        return payers.length;
    }

    function sumFreeDeposits() public view returns (uint256 s) {
        for (uint256 i; i < payers.length; ++i) {
            s += escrow.deposits(payers[i]);
        }
    }

    function sumOpenLocks() public view returns (uint256 s) {
        for (uint256 i; i < jobIds.length; ++i) {
            (,, uint128 amount,, uint8 state) = escrow.getLock(jobIds[i]);
            if (state == 1) s += amount;
        }
    }

    function sumPayerWallets() public view returns (uint256 s) {
        for (uint256 i; i < payers.length; ++i) {
            s += token.balanceOf(payers[i]);
        }
    }

    function receiverBalances() external view returns (uint256) {
        return _receiverBalances();
    }

    // ---------------------------------------------------------------------------------------------
    // internals
    // ---------------------------------------------------------------------------------------------

    function _receiverBalances() internal view returns (uint256 s) {
        for (uint256 i; i < providers.length; ++i) {
            s += token.balanceOf(providers[i]);
        }
        s += _treasuryBalances();
    }

    function _treasuryBalances() internal view returns (uint256 s) {
        for (uint256 i; i < treasuries.length; ++i) {
            s += token.balanceOf(treasuries[i]);
        }
    }

    function _providerIndex(address provider) internal view returns (uint256) {
        for (uint256 p; p < providers.length; ++p) {
            if (providers[p] == provider) return p;
        }
        revert("unknown provider");
    }

    function _close(uint256 idx, uint8 state) internal {
        bytes32 jobId = openJobs[idx];
        openJobs[idx] = openJobs[openJobs.length - 1];
        openJobs.pop();
        ++closeCount[jobId];
        finalState[jobId] = state;
    }

    function _closeById(bytes32 jobId, uint8 state) internal {
        for (uint256 i; i < openJobs.length; ++i) {
            if (openJobs[i] == jobId) return _close(i, state);
        }
        revert("job not open");
    }
}
