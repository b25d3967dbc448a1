// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {JobEscrow} from "../../src/JobEscrow.sol";
import {EscrowSigning} from "../utils/Signing.sol";

/// @dev What the handler needs from a test token besides ERC-20: minting (GpuFedToken once the handler owns
///      it, FeeOnTransferToken for anyone).
interface IMintable {
    function mint(address to, uint256 amount) external;
}

/// @dev Drives JobEscrow with random but valid calls from payers, the two settlers (hub, hub2), providers, the
///      admin and strangers, and keeps ghost records of what must hold. Every legitimate action is valid by
///      construction (the invariant config has fail_on_revert = true); attempts that must fail, and the
///      attacks of the role-fuzzing actions, are made in try/catch and counted if they succeed.
///
///      Works over a plain ERC-20 and over a fee-on-transfer token (`transferFeeBps` > 0): the escrow's
///      books are in what it received and sent, and every ghost of what a wallet receives applies the token's
///      fee per transfer.
///
///      Roles: `hub` and `hub2` hold SETTLER_ROLE and are the only accounts payers ever authorise. The
///      attackers `admin`, `thief` and `stranger` are never authorised by any payer; the admin can grant
///      SETTLER_ROLE (to itself, the thief, the stranger) at random. Attackers must never receive a token or a
///      deposit.
contract JobEscrowHandler is EscrowSigning {
    IERC20 public immutable token;
    JobEscrow public immutable escrow;
    uint256 public immutable transferFeeBps; // the token's own fee on transfers (0 for a plain token)
    bytes32 internal immutable settlerRole;

    address public hub;
    uint256 internal hubKey;
    address public hub2;
    uint256 internal hub2Key;
    address public admin;
    uint256 internal adminKey;
    address public thief;
    uint256 internal thiefKey;
    address public stranger;
    uint256 internal strangerKey;

    address[] public payers;
    uint256[] internal payerKeys;
    address[] public providers;
    address[] public treasuries;
    address[] public attackers;

    // per job
    bytes32[] public jobIds; // every job ever locked
    bytes32[] internal openJobs; // jobs the handler believes are Locked
    mapping(bytes32 => uint256) public lockedAmount;
    mapping(bytes32 => address) public lockedBy; // the settler that locked it
    mapping(bytes32 => uint256) public paidOutFor; // what left the escrow for this job (provider + fee)
    mapping(bytes32 => uint256) public closeCount; // successful settle/claim/expire calls per job
    mapping(bytes32 => uint8) public finalState; // 2 or 3 once closed

    // per payer
    mapping(address => uint256) public ghostDeposited; // credited to its deposit (what arrived)
    mapping(address => uint256) public ghostWithdrawn; // debited from its deposit by withdraw
    mapping(address => uint256) public ghostPaidOut; // `paid` of its settled locks (provider + fee)
    mapping(address => uint256) public ghostLockedEver;
    mapping(address => uint256) public ghostAuthorisedEver; // sum of the amounts of all its authorisations
    mapping(address => mapping(address => uint256)) public ghostApproved; // latest amount per settler
    mapping(address => mapping(address => uint256)) public ghostLockedSinceApproval;

    // per wallet: what must have arrived
    mapping(address => uint256) public ghostWallet; // payers, providers and treasuries
    uint256 public ghostEscrowIn; // what arrived in the escrow
    uint256 public ghostEscrowOut; // what the escrow sent

    uint256 public unexpectedSuccesses; // calls that should have reverted but did not
    uint256 public unexpectedFailures; // role-fuzzing calls that should have worked but reverted
    uint256 public flowMismatches; // token flows that differ from the expected split
    uint256 public settledCount;
    uint256 public batchCount;
    uint256 public claimCount;
    uint256 public expiredCount;
    uint256 public extendCount;
    uint256 public permitCount;
    uint256 public attackCount;
    uint256 public attackerSettleCount; // settle attempts by an attacker holding SETTLER_ROLE (all refused)
    uint256 internal nonce;

    constructor(IERC20 token_, JobEscrow escrow_, uint256 transferFeeBps_) {
        token = token_;
        escrow = escrow_;
        transferFeeBps = transferFeeBps_;
        settlerRole = escrow_.SETTLER_ROLE();
        (hub, hubKey) = makeAddrAndKey("inv-hub");
        (hub2, hub2Key) = makeAddrAndKey("inv-hub2");
        (admin, adminKey) = makeAddrAndKey("inv-admin");
        (thief, thiefKey) = makeAddrAndKey("inv-thief");
        (stranger, strangerKey) = makeAddrAndKey("inv-stranger");
        for (uint256 i; i < 4; ++i) {
            (address p, uint256 k) = makeAddrAndKey(string.concat("inv-payer", vm.toString(i)));
            payers.push(p);
            payerKeys.push(k);
        }
        for (uint256 i; i < 3; ++i) {
            providers.push(makeAddr(string.concat("inv-provider", vm.toString(i))));
        }
        treasuries.push(escrow_.treasury());
        treasuries.push(makeAddr("inv-treasury2"));
        attackers.push(admin);
        attackers.push(thief);
        attackers.push(stranger);
    }

    // ---------------------------------------------------------------------------------------------
    // payers
    // ---------------------------------------------------------------------------------------------

    function deposit(uint256 payerSeed, uint256 senderSeed, uint256 amount, bool forOther) external {
        address payer = payers[payerSeed % payers.length];
        address sender = forOther ? payers[senderSeed % payers.length] : payer;
        _deposit(payer, sender, bound(amount, 1, 1_000e18), forOther);
    }

    function withdraw(uint256 payerSeed, uint256 amount) external {
        address payer = payers[payerSeed % payers.length];
        uint256 free = escrow.deposits(payer);
        if (free == 0) return;
        amount = bound(amount, 1, free);
        uint256 walletBefore = token.balanceOf(payer);
        vm.prank(payer);
        escrow.withdraw(amount);
        ghostWithdrawn[payer] += amount;
        ghostEscrowOut += amount;
        ghostWallet[payer] += _arrives(amount);
        if (token.balanceOf(payer) - walletBefore != _arrives(amount)) ++flowMismatches;
    }

    /// A payer sets (replaces) its authorisation of one of the two settlers: any amount, possibly 0, and a
    /// validUntil that may already have passed.
    function approve(uint256 payerSeed, bool second, uint256 amount, uint256 validFor, bool expired)
        external
    {
        address payer = payers[payerSeed % payers.length];
        address settler = second ? hub2 : hub;
        amount = bound(amount, 0, 2_000e18);
        uint64 validUntil = expired
            ? uint64(block.timestamp - bound(validFor, 1, 1 days))
            : uint64(block.timestamp + bound(validFor, 0, 3 days));
        vm.prank(payer);
        escrow.approveSpending(settler, amount, validUntil);
        _recordApproval(payer, settler, amount);
    }

    /// The same through a signed permit, submitted by the settler (or anyone).
    function permit(uint256 payerSeed, bool second, uint256 amount, uint256 validFor, address submitter)
        external
    {
        uint256 i = payerSeed % payers.length;
        address settler = second ? hub2 : hub;
        amount = bound(amount, 0, 2_000e18);
        _permit(i, settler, amount, uint64(block.timestamp + bound(validFor, 0, 3 days)), submitter);
    }

    // ---------------------------------------------------------------------------------------------
    // settlers
    // ---------------------------------------------------------------------------------------------

    function lock(uint256 payerSeed, uint256 providerSeed, uint256 amount, uint256 lifetime, bool second)
        external
    {
        uint256 i = payerSeed % payers.length;
        address settler = second ? hub2 : hub;
        if (!escrow.hasRole(settlerRole, settler)) settler = hub; // hub2's role may be revoked
        uint256 free = _ensureFunded(payers[i]);
        uint256 remaining = _ensureAuthorised(i, settler, amount, lifetime);
        amount = bound(amount, 1, free < remaining ? free : remaining);
        _lock(settler, payers[i], providers[providerSeed % providers.length], amount, lifetime);
    }

    /// A serving job's lock renewed for its next window (`extendLock`) by the settler that locked it, from the
    /// payer's free deposit and within its authorisation; the new deadline is up to a day after the current one.
    function extend(uint256 jobSeed, uint256 amount, uint256 lifetime) external {
        if (openJobs.length == 0) return;
        bytes32 jobId = openJobs[jobSeed % openJobs.length];
        (address payer,,, uint64 current,) = escrow.getLock(jobId);
        address settler = lockedBy[jobId];
        if (!escrow.hasRole(settlerRole, settler)) return; // (hub2's role may be revoked)
        uint256 i;
        while (payers[i] != payer) ++i;
        uint256 free = _ensureFunded(payer);
        uint256 remaining = _ensureAuthorised(i, settler, amount, lifetime);
        amount = bound(amount, 1, free < remaining ? free : remaining);
        uint256 from = current > block.timestamp ? current : block.timestamp + 1;
        uint64 deadline = uint64(bound(lifetime, from, from + 1 days));
        vm.prank(settler);
        escrow.extendLock(jobId, amount, deadline);
        lockedAmount[jobId] += amount;
        ghostLockedEver[payer] += amount;
        ghostLockedSinceApproval[payer][settler] += amount;
        ++extendCount;
    }

    function settle(uint256 jobSeed, uint256 paid, bool second) external {
        if (openJobs.length == 0) return;
        uint256 idx = jobSeed % openJobs.length;
        bytes32 jobId = openJobs[idx];
        (address payer,,,,) = escrow.getLock(jobId);
        // any settler holding the role that the payer ever authorised may settle
        address settler = second && escrow.hasRole(settlerRole, hub2) && escrow.everAuthorised(payer, hub2)
            ? hub2
            : hub;
        if (!escrow.everAuthorised(payer, settler)) return; // (hub2 locked it; the payer never authorised hub)
        paid = bound(paid, 0, lockedAmount[jobId]);
        _settleOne(idx, paid, settler, address(0), "");
    }

    /// The provider (or anyone) settles with a usage receipt signed by the settler that locked the job, or by
    /// the other settler if the payer ever authorised it.
    function claim(uint256 jobSeed, uint256 paid, address caller, bool second) external {
        if (openJobs.length == 0) return;
        uint256 idx = jobSeed % openJobs.length;
        bytes32 jobId = openJobs[idx];
        (address payer,,,,) = escrow.getLock(jobId);
        address signer = lockedBy[jobId];
        address other = signer == hub ? hub2 : hub;
        if (second && escrow.everAuthorised(payer, other)) signer = other;
        if (!escrow.hasRole(settlerRole, signer)) signer = hub; // hub keeps its role throughout
        if (!escrow.everAuthorised(payer, signer)) return; // (hub2 locked it, then lost its role)
        paid = bound(paid, 0, lockedAmount[jobId]);
        bytes memory sig = _signReceipt(signer == hub ? hubKey : hub2Key, address(escrow), jobId, paid);
        _settleOne(idx, paid, caller, signer, sig);
        ++claimCount;
    }

    function settleBatch(uint256 seed, uint256 count) external {
        if (openJobs.length == 0) return;
        bytes32[] memory ids = _hubSettleable(seed % openJobs.length, count);
        count = ids.length;
        if (count == 0) return;
        uint256[] memory paid = new uint256[](count);
        uint256[] memory expectedProvider = new uint256[](providers.length);
        uint256 expectedFee;
        uint256 totalPaid;
        uint256[] memory providerBefore = new uint256[](providers.length);
        for (uint256 p; p < providers.length; ++p) {
            providerBefore[p] = token.balanceOf(providers[p]);
        }
        uint256 treasuryBefore = _treasuryBalances();
        uint256 escrowBefore = token.balanceOf(address(escrow));

        for (uint256 i; i < count; ++i) {
            bytes32 jobId = ids[i];
            (, address provider,,,) = escrow.getLock(jobId);
            paid[i] = bound(uint256(keccak256(abi.encode(seed, i))), 0, lockedAmount[jobId]);
            uint256 fee = paid[i] * escrow.lockFeeBps(jobId) / 10_000;
            expectedFee += fee;
            totalPaid += paid[i];
            expectedProvider[_providerIndex(provider)] += paid[i] - fee;
        }

        vm.prank(hub);
        escrow.settleBatch(ids, paid);

        // one transfer per provider and one to the treasury: the token's fee applies to each sum
        for (uint256 p; p < providers.length; ++p) {
            uint256 arrived = _arrives(expectedProvider[p]);
            if (token.balanceOf(providers[p]) - providerBefore[p] != arrived) ++flowMismatches;
            ghostWallet[providers[p]] += arrived;
        }
        if (_treasuryBalances() - treasuryBefore != _arrives(expectedFee)) ++flowMismatches;
        ghostWallet[escrow.treasury()] += _arrives(expectedFee);
        if (escrowBefore - token.balanceOf(address(escrow)) != totalPaid) ++flowMismatches;
        ghostEscrowOut += totalPaid;
        for (uint256 i; i < count; ++i) {
            (address payer,,,,) = escrow.getLock(ids[i]);
            paidOutFor[ids[i]] += paid[i];
            ghostPaidOut[payer] += paid[i];
            _closeById(ids[i], 2);
        }
        settledCount += count;
        ++batchCount;
    }

    /// @dev 1 to 12 (by `countSeed`) distinct open jobs whose payers ever authorised the hub (only those may
    ///      it settle), taken from `start` on; empty when there are none.
    function _hubSettleable(uint256 start, uint256 countSeed) internal view returns (bytes32[] memory ids) {
        uint256 eligible;
        for (uint256 i; i < openJobs.length; ++i) {
            (address payer,,,,) = escrow.getLock(openJobs[(start + i) % openJobs.length]);
            if (escrow.everAuthorised(payer, hub)) ++eligible;
        }
        if (eligible == 0) return new bytes32[](0);
        ids = new bytes32[](bound(countSeed, 1, eligible < 12 ? eligible : 12));
        uint256 taken;
        for (uint256 j; taken < ids.length; ++j) {
            bytes32 jobId = openJobs[(start + j) % openJobs.length];
            (address payer,,,,) = escrow.getLock(jobId);
            if (escrow.everAuthorised(payer, hub)) ids[taken++] = jobId;
        }
    }

    function expire(uint256 jobSeed, address caller) external {
        if (openJobs.length == 0) return;
        // find an open job past its deadline and claim window, starting at a random index
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

    // ---------------------------------------------------------------------------------------------
    // calls that must fail
    // ---------------------------------------------------------------------------------------------

    /// Tries to settle, claim or expire an already closed job again, or to expire an open one inside its
    /// deadline + claim window; it must revert.
    function retryClosed(uint256 jobSeed, uint256 paid, uint8 how) external {
        if (jobIds.length == 0) return;
        bytes32 jobId = jobIds[jobSeed % jobIds.length];
        if (finalState[jobId] == 0) {
            (,,, uint64 deadline,) = escrow.getLock(jobId);
            if (block.timestamp > deadline + escrow.claimWindow()) return; // expirable: not a failing call
            try escrow.expire(jobId) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
            return;
        }
        paid = bound(paid, 0, lockedAmount[jobId]);
        how %= 3;
        if (how == 0) {
            try escrow.expire(jobId) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
        } else if (how == 1) {
            vm.prank(hub);
            try escrow.settle(jobId, paid) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
        } else {
            bytes memory sig = _signReceipt(hubKey, address(escrow), jobId, paid);
            try escrow.claim(jobId, paid, hub, sig) {
                ++unexpectedSuccesses;
                ++closeCount[jobId];
            } catch {}
        }
    }

    /// Tries to lock a reused job id, a deadline beyond maxLockDuration, or more than the authorisation.
    function badLock(uint256 jobSeed, uint256 payerSeed, uint256 extra, uint8 how) external {
        address payer = payers[payerSeed % payers.length];
        if (escrow.deposits(payer) == 0) return;
        bytes32 jobId = keccak256(abi.encode("inv-bad-job", ++nonce));
        uint64 deadline = uint64(block.timestamp + 1);
        uint256 amount = 1;
        how %= 3;
        if (how == 0) {
            if (jobIds.length == 0) return;
            jobId = jobIds[jobSeed % jobIds.length];
        } else if (how == 1) {
            deadline = uint64(block.timestamp + escrow.maxLockDuration() + bound(extra, 1, 365 days));
        } else {
            (uint256 remaining, uint64 validUntil) = escrow.spendingAllowance(payer, hub);
            if (block.timestamp > validUntil) amount = bound(extra, 1, 1_000e18);
            else amount = remaining + bound(extra, 1, 1_000e18);
        }
        vm.prank(hub);
        try escrow.lock(jobId, payer, providers[0], amount, deadline) {
            ++unexpectedSuccesses;
        } catch {}
    }

    // ---------------------------------------------------------------------------------------------
    // role fuzzing: the admin, a thief and a stranger attack
    // ---------------------------------------------------------------------------------------------

    /// An attacker tries to lock a payer's deposit, payable to itself. It never holds an authorisation, so
    /// this must fail even when it holds SETTLER_ROLE (which the admin can give it, or itself).
    function attackLock(uint256 actorSeed, uint256 payerSeed, uint256 amount, uint256 lifetime) external {
        address actor = attackers[actorSeed % attackers.length];
        address payer = payers[payerSeed % payers.length];
        amount = bound(amount, 1, 1_000e18);
        uint64 deadline = uint64(block.timestamp + bound(lifetime, 1, escrow.maxLockDuration()));
        bytes32 jobId = keccak256(abi.encode("inv-attack-job", ++nonce));
        ++attackCount;
        vm.prank(actor);
        try escrow.lock(jobId, payer, actor, amount, deadline) {
            ++unexpectedSuccesses;
        } catch {}
    }

    /// An attacker tries to settle an open lock. Without SETTLER_ROLE it must fail; with it (the admin can
    /// give it, or itself) too, since no payer ever authorised an attacker.
    function attackSettle(uint256 actorSeed, uint256 jobSeed, uint256 paid) external {
        if (openJobs.length == 0) return;
        address actor = attackers[actorSeed % attackers.length];
        uint256 idx = jobSeed % openJobs.length;
        bytes32 jobId = openJobs[idx];
        paid = bound(paid, 0, lockedAmount[jobId]);
        ++attackCount;
        if (escrow.hasRole(settlerRole, actor)) ++attackerSettleCount;
        vm.prank(actor);
        try escrow.settle(jobId, paid) {
            ++unexpectedSuccesses;
        } catch {}
    }

    /// An attacker tries to claim an open lock with a receipt it signed itself (naming itself or a real
    /// settler as the signer), or a real settler's receipt for more than it says: all must fail. Or it
    /// submits hub2's genuine receipt, which must work exactly while hub2 holds SETTLER_ROLE and the lock's
    /// payer ever authorised hub2 (hub2's role comes and goes with `toggleHub2`).
    function attackClaim(uint256 actorSeed, uint256 jobSeed, uint256 paid, uint8 how) external {
        if (openJobs.length == 0) return;
        uint256 a = actorSeed % attackers.length;
        address actor = attackers[a];
        uint256 actorKey = a == 0 ? adminKey : a == 1 ? thiefKey : strangerKey;
        uint256 idx = jobSeed % openJobs.length;
        bytes32 jobId = openJobs[idx];
        paid = bound(paid, 0, lockedAmount[jobId]);
        bytes memory sig;
        address signer;
        how %= 4;
        if (how == 3) {
            (address payer,,,,) = escrow.getLock(jobId);
            sig = _signReceipt(hub2Key, address(escrow), jobId, paid);
            ++attackCount;
            if (escrow.hasRole(settlerRole, hub2) && escrow.everAuthorised(payer, hub2)) {
                _settleOne(idx, paid, actor, hub2, sig); // a genuine receipt, whoever submits it
                ++claimCount;
            } else {
                vm.prank(actor);
                try escrow.claim(jobId, paid, hub2, sig) {
                    ++unexpectedSuccesses;
                } catch {}
            }
            return;
        }
        if (how == 0) {
            (signer, sig) = (actor, _signReceipt(actorKey, address(escrow), jobId, paid));
        } else if (how == 1) {
            (signer, sig) = (hub, _signReceipt(actorKey, address(escrow), jobId, paid));
        } else {
            if (paid == 0) return;
            (signer, sig) = (hub, _signReceipt(hubKey, address(escrow), jobId, paid - 1));
        }
        ++attackCount;
        vm.prank(actor);
        try escrow.claim(jobId, paid, signer, sig) {
            ++unexpectedSuccesses;
        } catch {}
    }

    /// Someone tries to grant SETTLER_ROLE to an attacker, or the admin role to anyone. Only the admin's
    /// settler grants work.
    function attackGrantRole(uint256 actorSeed, uint256 targetSeed, bool adminRole) external {
        address actor = targetSeed % 5 == 0 ? admin : attackers[actorSeed % attackers.length];
        address target = attackers[targetSeed % attackers.length];
        bytes32 role = adminRole ? escrow.DEFAULT_ADMIN_ROLE() : settlerRole;
        bool expected = actor == admin && !adminRole;
        ++attackCount;
        vm.prank(actor);
        try escrow.grantRole(role, target) {
            if (!expected) ++unexpectedSuccesses;
        } catch {
            if (expected) ++unexpectedFailures;
        }
    }

    /// An attacker forges a permit for a payer (to authorise itself), or withdraws what is not its own.
    function attackPermitOrWithdraw(uint256 actorSeed, uint256 payerSeed, uint256 amount, bool viaWithdraw)
        external
    {
        uint256 a = actorSeed % attackers.length;
        address actor = attackers[a];
        uint256 actorKey = a == 0 ? adminKey : a == 1 ? thiefKey : strangerKey;
        address payer = payers[payerSeed % payers.length];
        amount = bound(amount, 1, 1_000e18);
        ++attackCount;
        vm.startPrank(actor);
        if (viaWithdraw) {
            try escrow.withdraw(amount) {
                ++unexpectedSuccesses;
            } catch {}
        } else {
            uint64 until = uint64(block.timestamp + 1 days);
            uint256 deadline = block.timestamp + 1 hours;
            bytes memory sig = _sign(
                actorKey,
                _permitDigest(address(escrow), payer, actor, amount, until, escrow.nonces(payer), deadline)
            );
            try escrow.permitSpending(payer, actor, amount, until, deadline, sig) {
                ++unexpectedSuccesses;
            } catch {}
        }
        vm.stopPrank();
    }

    // ---------------------------------------------------------------------------------------------
    // administration and time
    // ---------------------------------------------------------------------------------------------

    /// The admin revokes or grants hub2's role (a key rotation). hub keeps its role throughout.
    function toggleHub2(bool grant) external {
        vm.prank(admin);
        if (grant) escrow.grantRole(settlerRole, hub2);
        else escrow.revokeRole(settlerRole, hub2);
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

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    function treasuryCount() external view returns (uint256) {
        return treasuries.length;
    }

    function attackerCount() external view returns (uint256) {
        return attackers.length;
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

    /// The Locked amounts of each payer's locks, summed (index as in `payers`), in one pass over the jobs.
    function openLocksByPayer() external view returns (uint256[] memory sums) {
        sums = new uint256[](payers.length);
        for (uint256 i; i < jobIds.length; ++i) {
            (address p,, uint128 amount,, uint8 state) = escrow.getLock(jobIds[i]);
            if (state != 1) continue;
            for (uint256 k; k < payers.length; ++k) {
                if (payers[k] == p) sums[k] += amount;
            }
        }
    }

    /// Token balance of every account the handler knows (all that may ever hold tokens, attackers included).
    function sumKnownBalances() external view returns (uint256 s) {
        s = token.balanceOf(address(escrow));
        for (uint256 i; i < payers.length; ++i) {
            s += token.balanceOf(payers[i]);
        }
        for (uint256 i; i < providers.length; ++i) {
            s += token.balanceOf(providers[i]);
        }
        s += _treasuryBalances();
        for (uint256 i; i < attackers.length; ++i) {
            s += token.balanceOf(attackers[i]);
        }
        s += token.balanceOf(hub) + token.balanceOf(hub2);
    }

    // ---------------------------------------------------------------------------------------------
    // internals
    // ---------------------------------------------------------------------------------------------

    function _lock(address settler, address payer, address provider, uint256 amount, uint256 lifetime)
        internal
    {
        uint64 deadline = uint64(block.timestamp + bound(lifetime, 1, 1 days));
        bytes32 jobId = keccak256(abi.encode("inv-job", ++nonce));
        vm.prank(settler);
        escrow.lock(jobId, payer, provider, amount, deadline);
        jobIds.push(jobId);
        openJobs.push(jobId);
        lockedAmount[jobId] = amount;
        lockedBy[jobId] = settler;
        ghostLockedEver[payer] += amount;
        ghostLockedSinceApproval[payer][settler] += amount;
    }

    /// @dev Funds `payer` first if its free deposit is empty, so that most runs build up open locks.
    function _ensureFunded(address payer) internal returns (uint256 free) {
        free = escrow.deposits(payer);
        if (free == 0) {
            _deposit(payer, payer, 100e18, false);
            free = escrow.deposits(payer);
        }
    }

    /// @dev Makes sure payer `payerIndex` authorised `settler` (half the time with a permit), returns what it
    ///      may still lock.
    function _ensureAuthorised(uint256 payerIndex, address settler, uint256 seed, uint256 lifetime)
        internal
        returns (uint256 remaining)
    {
        address payer = payers[payerIndex];
        uint64 validUntil;
        (remaining, validUntil) = escrow.spendingAllowance(payer, settler);
        if (remaining != 0 && block.timestamp <= validUntil) return remaining;
        remaining = bound(seed, 1, 2_000e18);
        uint64 until = uint64(block.timestamp + bound(lifetime, 0, 3 days));
        if (seed % 2 == 0) {
            _permit(payerIndex, settler, remaining, until, settler);
        } else {
            vm.prank(payer);
            escrow.approveSpending(settler, remaining, until);
            _recordApproval(payer, settler, remaining);
        }
    }

    /// @dev What arrives when `amount` is transferred (the token burns its fee from it).
    function _arrives(uint256 amount) internal view returns (uint256) {
        return amount - amount * transferFeeBps / 10_000;
    }

    function _deposit(address payer, address sender, uint256 amount, bool forOther) internal {
        IMintable(address(token)).mint(sender, amount);
        ghostWallet[sender] += amount;
        uint256 escrowBefore = token.balanceOf(address(escrow));
        uint256 depositBefore = escrow.deposits(payer);
        vm.startPrank(sender);
        token.approve(address(escrow), amount);
        if (forOther) escrow.depositFor(payer, amount);
        else escrow.deposit(amount);
        vm.stopPrank();
        ghostWallet[sender] -= amount;
        uint256 arrived = _arrives(amount);
        if (token.balanceOf(address(escrow)) - escrowBefore != arrived) ++flowMismatches;
        if (escrow.deposits(payer) - depositBefore != arrived) ++flowMismatches;
        ghostDeposited[payer] += arrived;
        ghostEscrowIn += arrived;
    }

    function _permit(
        uint256 payerIndex,
        address settler,
        uint256 amount,
        uint64 validUntil,
        address submitter
    ) internal {
        address payer = payers[payerIndex];
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _sign(
            payerKeys[payerIndex],
            _permitDigest(address(escrow), payer, settler, amount, validUntil, escrow.nonces(payer), deadline)
        );
        vm.prank(submitter);
        escrow.permitSpending(payer, settler, amount, validUntil, deadline, sig);
        _recordApproval(payer, settler, amount);
        ++permitCount;
    }

    function _recordApproval(address payer, address settler, uint256 amount) internal {
        ghostApproved[payer][settler] = amount;
        ghostLockedSinceApproval[payer][settler] = 0;
        ghostAuthorisedEver[payer] += amount;
    }

    /// @dev Settles open job `idx` with `paid`: with `settle` by `caller`, or, when `signer` is set, with
    ///      `claim` (submitted by `caller`) of `signer`'s receipt `sig`; checks and records the token flows.
    function _settleOne(uint256 idx, uint256 paid, address caller, address signer, bytes memory sig)
        internal
    {
        bytes32 jobId = openJobs[idx];
        (address payer, address provider,,,) = escrow.getLock(jobId);
        uint256 fee = paid * escrow.lockFeeBps(jobId) / 10_000;
        address treasury = escrow.treasury();
        uint256 providerBefore = token.balanceOf(provider);
        uint256 treasuryBefore = token.balanceOf(treasury);
        uint256 escrowBefore = token.balanceOf(address(escrow));

        vm.prank(caller);
        if (signer == address(0)) escrow.settle(jobId, paid);
        else escrow.claim(jobId, paid, signer, sig);

        uint256 out = escrowBefore - token.balanceOf(address(escrow));
        if (out != paid) ++flowMismatches;
        if (token.balanceOf(provider) - providerBefore != _arrives(paid - fee)) ++flowMismatches;
        if (token.balanceOf(treasury) - treasuryBefore != _arrives(fee)) ++flowMismatches;
        ghostWallet[provider] += _arrives(paid - fee);
        ghostWallet[treasury] += _arrives(fee);
        ghostEscrowOut += out;
        ghostPaidOut[payer] += paid;
        paidOutFor[jobId] += out;
        _close(idx, 2);
        ++settledCount;
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
