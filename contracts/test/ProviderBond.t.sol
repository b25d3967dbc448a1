// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {GpuFedToken} from "../src/GpuFedToken.sol";
import {ProviderBond} from "../src/ProviderBond.sol";
import {FeeOnTransferToken, FalseReturnToken, ReentrantToken} from "./mocks/MockTokens.sol";

contract ProviderBondTest is Test {
    event Staked(address indexed provider, uint256 amount, uint256 bonded);
    event UnbondRequested(address indexed provider, uint256 amount, uint256 unbonding, uint64 releaseAt);
    event Withdrawn(address indexed provider, uint256 amount);
    event Slashed(address indexed provider, uint256 amount, bytes32 indexed evidenceHash);
    event TreasuryUpdated(address indexed oldTreasury, address indexed newTreasury);

    uint64 internal constant DELAY = 7 days;
    uint64 internal constant WINDOW = 2 days;
    uint256 internal constant FUNDS = 1_000_000e18;
    bytes32 internal constant EVIDENCE = keccak256("evidence: job 42 returned garbage");

    GpuFedToken internal token;
    ProviderBond internal bond;
    address internal admin = makeAddr("admin");
    address internal treasury = makeAddr("treasury");
    address internal arbiter = makeAddr("arbiter");
    address internal prov = makeAddr("provider");
    address internal prov2 = makeAddr("provider2");
    address internal stranger = makeAddr("stranger");
    bytes32 internal arbiterRole;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new GpuFedToken(address(this));
        bond = new ProviderBond(token, admin, treasury, DELAY, WINDOW);
        arbiterRole = bond.ARBITER_ROLE();
        vm.prank(admin);
        bond.grantRole(arbiterRole, arbiter);
        address[2] memory ps = [prov, prov2];
        for (uint256 i; i < ps.length; ++i) {
            token.mint(ps[i], FUNDS);
            vm.prank(ps[i]);
            token.approve(address(bond), type(uint256).max);
        }
    }

    function _stake(address who, uint256 amount) internal {
        vm.prank(who);
        bond.stake(amount);
    }

    function _unbond(address who, uint256 amount) internal {
        vm.prank(who);
        bond.requestUnbond(amount);
    }

    address[] internal noTenants;
    uint256[] internal noShares;

    /// Proposes a slash without tenants (the caller pranks as needed).
    function _propose(address who, bytes32 evidence, uint256 amount) internal {
        bond.proposeSlash(who, evidence, amount, noTenants, noShares);
    }

    /// Proposes a slash without tenants as the arbiter, waits out the appeal window and executes it.
    function _slash(address who, uint256 amount, bytes32 evidence) internal {
        vm.prank(arbiter);
        _propose(who, evidence, amount);
        vm.warp(block.timestamp + WINDOW);
        bond.executeSlash(evidence);
    }

    function _bond(address who)
        internal
        view
        returns (uint256 bonded, uint256 unbonding, uint64 releaseAt, uint256 slashed)
    {
        return bond.bondOf(who);
    }

    // ---------------------------------------------------------------------------------------------
    // constructor / admin
    // ---------------------------------------------------------------------------------------------

    function test_constructor_setsState() public view {
        assertEq(address(bond.token()), address(token));
        assertEq(bond.treasury(), treasury);
        assertEq(bond.unbondingDelay(), DELAY);
        assertEq(bond.ARBITER_ROLE(), keccak256("ARBITER_ROLE"));
        assertTrue(bond.hasRole(bond.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(bond.hasRole(arbiterRole, arbiter));
        assertFalse(bond.hasRole(arbiterRole, admin));
    }

    function test_constructor_emitsTreasury() public {
        vm.expectEmit(true, true, false, false);
        emit TreasuryUpdated(address(0), treasury);
        new ProviderBond(token, admin, treasury, 2, 1);
    }

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(ProviderBond.ZeroAddress.selector);
        new ProviderBond(IERC20(address(0)), admin, treasury, DELAY, WINDOW);
    }

    function test_constructor_revertsOnZeroAdmin() public {
        vm.expectRevert(ProviderBond.ZeroAddress.selector);
        new ProviderBond(token, address(0), treasury, DELAY, WINDOW);
    }

    function test_constructor_revertsOnZeroTreasury() public {
        vm.expectRevert(ProviderBond.ZeroAddress.selector);
        new ProviderBond(token, admin, address(0), DELAY, WINDOW);
    }

    function test_constructor_revertsOnDelayTooLong() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                ProviderBond.UnbondingDelayTooLong.selector, uint64(365 days + 1), uint64(365 days)
            )
        );
        new ProviderBond(token, admin, treasury, 365 days + 1, WINDOW);
    }

    function test_constructor_acceptsMaxDelay() public {
        ProviderBond b = new ProviderBond(token, admin, treasury, 365 days, WINDOW);
        assertEq(b.unbondingDelay(), b.MAX_UNBONDING_DELAY());
    }

    function test_setTreasury_updatesAndEmits() public {
        vm.expectEmit(address(bond));
        emit TreasuryUpdated(treasury, stranger);
        vm.prank(admin);
        bond.setTreasury(stranger);
        assertEq(bond.treasury(), stranger);
    }

    function test_setTreasury_revertsOnZero() public {
        vm.prank(admin);
        vm.expectRevert(ProviderBond.ZeroAddress.selector);
        bond.setTreasury(address(0));
    }

    function test_setTreasury_revertsForNonAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, arbiter, bond.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(arbiter);
        bond.setTreasury(stranger);
    }

    // ---------------------------------------------------------------------------------------------
    // stake
    // ---------------------------------------------------------------------------------------------

    function test_stake_bondsAndEmits() public {
        vm.expectEmit(address(bond));
        emit Staked(prov, 100e18, 100e18);
        _stake(prov, 100e18);
        vm.expectEmit(address(bond));
        emit Staked(prov, 50e18, 150e18);
        _stake(prov, 50e18);
        (uint256 bonded, uint256 unbonding, uint64 releaseAt, uint256 slashed) = _bond(prov);
        assertEq(bonded, 150e18);
        assertEq(unbonding, 0);
        assertEq(releaseAt, 0);
        assertEq(slashed, 0);
        assertEq(token.balanceOf(address(bond)), 150e18);
        assertEq(token.balanceOf(prov), FUNDS - 150e18);
    }

    function test_stake_revertsOnZero() public {
        vm.prank(prov);
        vm.expectRevert(ProviderBond.ZeroAmount.selector);
        bond.stake(0);
    }

    function test_stake_revertsWithoutAllowance() public {
        token.mint(stranger, 1e18);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(bond), 0, 1e18)
        );
        bond.stake(1e18);
    }

    function test_stake_feeOnTransferCreditsReceived() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(100);
        ProviderBond b = new ProviderBond(fot, admin, treasury, DELAY, WINDOW);
        fot.mint(prov, 1_000);
        vm.startPrank(prov);
        fot.approve(address(b), type(uint256).max);
        vm.expectEmit(address(b));
        emit Staked(prov, 990, 990);
        b.stake(1_000);
        vm.stopPrank();
        (uint256 bonded,,,) = b.bondOf(prov);
        assertEq(bonded, 990);
    }

    function test_stake_revertsWhenNothingArrives() public {
        FeeOnTransferToken fot = new FeeOnTransferToken(10_000);
        ProviderBond b = new ProviderBond(fot, admin, treasury, DELAY, WINDOW);
        fot.mint(prov, 1_000);
        vm.startPrank(prov);
        fot.approve(address(b), type(uint256).max);
        vm.expectRevert(ProviderBond.ZeroAmount.selector);
        b.stake(1_000);
        vm.stopPrank();
    }

    // ---------------------------------------------------------------------------------------------
    // requestUnbond
    // ---------------------------------------------------------------------------------------------

    function test_requestUnbond_movesToUnbonding() public {
        _stake(prov, 100e18);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.expectEmit(address(bond));
        emit UnbondRequested(prov, 30e18, 30e18, releaseAt);
        _unbond(prov, 30e18);
        (uint256 bonded, uint256 unbonding, uint64 rel,) = _bond(prov);
        assertEq(bonded, 70e18);
        assertEq(unbonding, 30e18);
        assertEq(rel, releaseAt);
        assertEq(token.balanceOf(address(bond)), 100e18, "nothing leaves yet");
    }

    function test_requestUnbond_secondRequestAddsAndResetsReleaseTime() public {
        _stake(prov, 100e18);
        _unbond(prov, 30e18);
        vm.warp(block.timestamp + 5 days);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.expectEmit(address(bond));
        emit UnbondRequested(prov, 20e18, 50e18, releaseAt);
        _unbond(prov, 20e18);
        (uint256 bonded, uint256 unbonding, uint64 rel,) = _bond(prov);
        assertEq(bonded, 50e18);
        assertEq(unbonding, 50e18);
        assertEq(rel, releaseAt, "whole unbonding balance waits for the new release time");
        // the first 30 are not withdrawable at their original release time
        vm.warp(block.timestamp + 2 days + 1);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.UnbondingNotReleased.selector, releaseAt));
        bond.withdraw();
    }

    function test_requestUnbond_all() public {
        _stake(prov, 100e18);
        _unbond(prov, 100e18);
        (uint256 bonded, uint256 unbonding,,) = _bond(prov);
        assertEq(bonded, 0);
        assertEq(unbonding, 100e18);
    }

    function test_requestUnbond_revertsOnZero() public {
        _stake(prov, 1e18);
        vm.prank(prov);
        vm.expectRevert(ProviderBond.ZeroAmount.selector);
        bond.requestUnbond(0);
    }

    function test_requestUnbond_revertsAboveBonded() public {
        _stake(prov, 10e18);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.InsufficientBond.selector, 10e18, 10e18 + 1));
        bond.requestUnbond(10e18 + 1);
    }

    function test_requestUnbond_revertsForUnbondingTokens() public {
        _stake(prov, 10e18);
        _unbond(prov, 10e18);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.InsufficientBond.selector, 0, 1));
        bond.requestUnbond(1);
    }

    // ---------------------------------------------------------------------------------------------
    // withdraw
    // ---------------------------------------------------------------------------------------------

    function test_withdraw_afterReleaseTime() public {
        _stake(prov, 100e18);
        _unbond(prov, 40e18);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(bond));
        emit Withdrawn(prov, 40e18);
        vm.prank(prov);
        bond.withdraw();
        (uint256 bonded, uint256 unbonding, uint64 rel,) = _bond(prov);
        assertEq(bonded, 60e18);
        assertEq(unbonding, 0);
        assertEq(rel, 0);
        assertEq(token.balanceOf(prov), FUNDS - 60e18);
        assertEq(token.balanceOf(address(bond)), 60e18);
    }

    function test_withdraw_revertsBeforeReleaseTime() public {
        _stake(prov, 100e18);
        _unbond(prov, 40e18);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.warp(releaseAt - 1);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.UnbondingNotReleased.selector, releaseAt));
        bond.withdraw();
    }

    function test_withdraw_revertsWithNothingUnbonding() public {
        _stake(prov, 100e18);
        vm.prank(prov);
        vm.expectRevert(ProviderBond.NothingToWithdraw.selector);
        bond.withdraw();
    }

    function test_withdraw_revertsTwice() public {
        _stake(prov, 100e18);
        _unbond(prov, 40e18);
        vm.warp(block.timestamp + DELAY);
        vm.startPrank(prov);
        bond.withdraw();
        vm.expectRevert(ProviderBond.NothingToWithdraw.selector);
        bond.withdraw();
        vm.stopPrank();
    }

    function test_withdraw_shortestDelay() public {
        ProviderBond b = new ProviderBond(token, admin, treasury, 2, 1);
        vm.startPrank(prov);
        token.approve(address(b), type(uint256).max);
        b.stake(5e18);
        b.requestUnbond(5e18);
        vm.warp(block.timestamp + 2);
        b.withdraw();
        vm.stopPrank();
        assertEq(token.balanceOf(prov), FUNDS);
    }

    function test_withdraw_revertsWhenTokenReturnsFalse() public {
        FalseReturnToken ft = new FalseReturnToken();
        ProviderBond b = new ProviderBond(ft, admin, treasury, 2, 1);
        ft.mint(prov, 1_000);
        vm.startPrank(prov);
        ft.approve(address(b), type(uint256).max);
        b.stake(1_000);
        b.requestUnbond(1_000);
        vm.stopPrank();
        vm.warp(block.timestamp + 2);
        ft.setFailTransfers(true);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(SafeERC20.SafeERC20FailedOperation.selector, address(ft)));
        b.withdraw();
        (, uint256 unbonding,,) = b.bondOf(prov);
        assertEq(unbonding, 1_000);
    }

    // ---------------------------------------------------------------------------------------------
    // slash
    // ---------------------------------------------------------------------------------------------

    function test_slash_fromBonded() public {
        _stake(prov, 100e18);
        _unbond(prov, 30e18);
        vm.prank(arbiter);
        _propose(prov, EVIDENCE, 50e18);
        vm.warp(block.timestamp + WINDOW);
        vm.expectEmit(address(bond));
        emit Slashed(prov, 50e18, EVIDENCE);
        bond.executeSlash(EVIDENCE);
        (uint256 bonded, uint256 unbonding,, uint256 slashed) = _bond(prov);
        assertEq(bonded, 20e18);
        assertEq(unbonding, 30e18, "unbonding untouched while bonded suffices");
        assertEq(slashed, 50e18);
        assertEq(token.balanceOf(treasury), 50e18);
        assertEq(token.balanceOf(address(bond)), 50e18);
    }

    function test_slash_bondedThenUnbonding() public {
        _stake(prov, 100e18);
        _unbond(prov, 30e18);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        _slash(prov, 80e18, EVIDENCE);
        (uint256 bonded, uint256 unbonding, uint64 rel, uint256 slashed) = _bond(prov);
        assertEq(bonded, 0);
        assertEq(unbonding, 20e18);
        assertEq(rel, releaseAt, "release time kept while something unbonds");
        assertEq(slashed, 80e18);
        assertEq(token.balanceOf(treasury), 80e18);
    }

    function test_slash_everything() public {
        _stake(prov, 100e18);
        _unbond(prov, 30e18);
        _slash(prov, 100e18, EVIDENCE);
        (uint256 bonded, uint256 unbonding, uint64 rel, uint256 slashed) = _bond(prov);
        assertEq(bonded, 0);
        assertEq(unbonding, 0);
        assertEq(rel, 0);
        assertEq(slashed, 100e18);
        assertEq(token.balanceOf(address(bond)), 0);
        vm.prank(prov);
        vm.expectRevert(ProviderBond.NothingToWithdraw.selector);
        bond.withdraw();
    }

    function test_slash_unbondingAfterReleaseButBeforeWithdraw() public {
        _stake(prov, 10e18);
        _unbond(prov, 10e18);
        vm.warp(block.timestamp + DELAY + 1);
        _slash(prov, 4e18, EVIDENCE);
        vm.prank(prov);
        bond.withdraw();
        assertEq(token.balanceOf(prov), FUNDS - 4e18);
    }

    function test_slash_accumulatesTotalAndGoesToCurrentTreasury() public {
        _stake(prov, 100e18);
        _slash(prov, 10e18, EVIDENCE);
        vm.prank(admin);
        bond.setTreasury(stranger);
        _slash(prov, 5e18, keccak256("other evidence"));
        (,,, uint256 slashed) = _bond(prov);
        assertEq(slashed, 15e18);
        assertEq(token.balanceOf(treasury), 10e18);
        assertEq(token.balanceOf(stranger), 5e18);
    }

    function test_slash_doesNotTouchOtherProviders() public {
        _stake(prov, 10e18);
        _stake(prov2, 10e18);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashExceedsBond.selector, 10e18, 11e18));
        _propose(prov, EVIDENCE, 11e18);
        (uint256 bonded2,,,) = _bond(prov2);
        assertEq(bonded2, 10e18);
    }

    function test_slash_revertsOnZero() public {
        _stake(prov, 10e18);
        vm.prank(arbiter);
        vm.expectRevert(ProviderBond.ZeroAmount.selector);
        _propose(prov, EVIDENCE, 0);
    }

    function test_slash_revertsAboveBond() public {
        _stake(prov, 10e18);
        _unbond(prov, 4e18);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashExceedsBond.selector, 10e18, 10e18 + 1));
        _propose(prov, EVIDENCE, 10e18 + 1);
    }

    function test_slash_revertsForUnknownProvider() public {
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashExceedsBond.selector, 0, 1));
        _propose(stranger, EVIDENCE, 1);
    }

    function test_slash_revertsForNonArbiter() public {
        _stake(prov, 10e18);
        address[3] memory callers = [admin, prov, stranger];
        for (uint256 i; i < callers.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IAccessControl.AccessControlUnauthorizedAccount.selector, callers[i], arbiterRole
                )
            );
            vm.prank(callers[i]);
            _propose(prov, EVIDENCE, 1);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // slashing with evidence: tenants, appeals, window
    // ---------------------------------------------------------------------------------------------

    address internal tenantA = makeAddr("tenantA");
    address internal tenantB = makeAddr("tenantB");
    address internal referee = makeAddr("referee");

    function _proposeTwo(uint256 amount, uint256 shareA, uint256 shareB) internal {
        address[] memory ts = new address[](2);
        ts[0] = tenantA;
        ts[1] = tenantB;
        uint256[] memory shares = new uint256[](2);
        shares[0] = shareA;
        shares[1] = shareB;
        vm.prank(arbiter);
        bond.proposeSlash(prov, EVIDENCE, amount, ts, shares);
    }

    function _grantReferee() internal {
        bytes32 role = bond.REFEREE_ROLE();
        vm.prank(admin);
        bond.grantRole(role, referee);
    }

    function test_constructor_revertsUnlessAppealWindowShorterThanUnbonding() public {
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.AppealWindowInvalid.selector, DELAY, DELAY));
        new ProviderBond(token, admin, treasury, DELAY, DELAY);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.AppealWindowInvalid.selector, uint64(0), DELAY));
        new ProviderBond(token, admin, treasury, DELAY, 0);
        vm.expectRevert(
            abi.encodeWithSelector(ProviderBond.AppealWindowInvalid.selector, uint64(1), uint64(0))
        );
        new ProviderBond(token, admin, treasury, 0, 1);
        assertEq(new ProviderBond(token, admin, treasury, DELAY, DELAY - 1).appealWindow(), DELAY - 1);
    }

    function test_slash_paysTenantsTheirSharesAndTheTreasuryTheRest() public {
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        assertEq(bond.frozenOf(prov), 30e18, "frozen at proposal");
        (uint256 bonded,,,) = _bond(prov);
        assertEq(bonded, 70e18);
        vm.warp(block.timestamp + WINDOW);
        bond.executeSlash(EVIDENCE); // anyone may execute
        assertEq(token.balanceOf(tenantA), 10e18);
        assertEq(token.balanceOf(tenantB), 15e18);
        assertEq(token.balanceOf(treasury), 5e18);
        assertEq(bond.frozenOf(prov), 0);
        (,,, uint256 slashed) = _bond(prov);
        assertEq(slashed, 30e18);
        (,,, uint8 state,,,) = bond.getSlash(EVIDENCE);
        assertEq(state, bond.SLASH_EXECUTED());
    }

    function test_slash_executeInsideTheWindowReverts() public {
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        uint64 at = uint64(block.timestamp) + WINDOW;
        vm.warp(at - 1);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.TooEarly.selector, at));
        bond.executeSlash(EVIDENCE);
        assertEq(token.balanceOf(tenantA) + token.balanceOf(treasury), 0);
    }

    function test_slash_oneSlashPerEvidenceHashEver() public {
        _stake(prov, 100e18);
        _slash(prov, 1e18, EVIDENCE);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.EvidenceAlreadyUsed.selector, EVIDENCE));
        _propose(prov, EVIDENCE, 1e18);
        // A cancelled one counts too.
        bytes32 other = keccak256("other");
        vm.prank(arbiter);
        _propose(prov, other, 1e18);
        vm.prank(arbiter);
        bond.cancelSlash(other);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.EvidenceAlreadyUsed.selector, other));
        _propose(prov2, other, 1e18);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashNotInState.selector, EVIDENCE, uint8(4)));
        bond.executeSlash(EVIDENCE);
    }

    function test_slash_badInputReverts() public {
        _stake(prov, 100e18);
        address[] memory ts = new address[](1);
        ts[0] = tenantA;
        uint256[] memory two = new uint256[](2);
        uint256[] memory one = new uint256[](1);
        one[0] = 11e18;
        vm.startPrank(arbiter);
        vm.expectRevert(ProviderBond.ZeroEvidence.selector);
        bond.proposeSlash(prov, bytes32(0), 10e18, noTenants, noShares);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.LengthMismatch.selector, 1, 2));
        bond.proposeSlash(prov, EVIDENCE, 10e18, ts, two);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SharesExceedAmount.selector, 11e18, 10e18));
        bond.proposeSlash(prov, EVIDENCE, 10e18, ts, one);
        ts[0] = prov;
        one[0] = 1;
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.TenantIsProvider.selector, prov));
        bond.proposeSlash(prov, EVIDENCE, 10e18, ts, one);
        ts[0] = address(0);
        vm.expectRevert(ProviderBond.ZeroAddress.selector);
        bond.proposeSlash(prov, EVIDENCE, 10e18, ts, one);
        address[] memory many = new address[](65);
        uint256[] memory manyShares = new uint256[](65);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.TooManyTenants.selector, 65, 64));
        bond.proposeSlash(prov, EVIDENCE, 10e18, many, manyShares);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashNotInState.selector, EVIDENCE, uint8(0)));
        bond.executeSlash(EVIDENCE);
        (uint256 bonded,,,) = _bond(prov);
        assertEq(bonded, 100e18, "nothing changed");
        assertEq(bond.frozenOf(prov), 0);
    }

    function test_slash_frozenTokensCannotBeWithdrawnByUnbonding() public {
        _stake(prov, 10e18);
        _unbond(prov, 10e18);
        vm.prank(arbiter);
        _propose(prov, EVIDENCE, 6e18);
        vm.warp(block.timestamp + DELAY);
        vm.prank(prov);
        bond.withdraw();
        assertEq(token.balanceOf(prov), FUNDS - 10e18 + 4e18, "only the unfrozen part leaves");
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.InsufficientBond.selector, 0, 1));
        bond.requestUnbond(1);
        bond.executeSlash(EVIDENCE);
        assertEq(token.balanceOf(treasury), 6e18);
        assertEq(token.balanceOf(address(bond)), 0);
    }

    function test_appeal_dismissedReturnsTheTokensToTheBond() public {
        _grantReferee();
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        vm.prank(prov);
        bond.appeal(EVIDENCE, keccak256("my answer"));
        vm.warp(block.timestamp + WINDOW);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.SlashNotInState.selector, EVIDENCE, uint8(2)));
        bond.executeSlash(EVIDENCE);
        vm.prank(referee);
        bond.resolveAppeal(EVIDENCE, false);
        (uint256 bonded,,, uint256 slashed) = _bond(prov);
        assertEq(bonded, 100e18);
        assertEq(slashed, 0);
        assertEq(bond.frozenOf(prov), 0);
        (,,, uint8 state, bytes32 answer,,) = bond.getSlash(EVIDENCE);
        assertEq(state, bond.SLASH_CANCELLED());
        assertEq(answer, keccak256("my answer"));
    }

    function test_appeal_upheldCanBeExecutedAtOnce() public {
        _grantReferee();
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        vm.prank(prov);
        bond.appeal(EVIDENCE, keccak256("wrong answer"));
        vm.prank(referee);
        bond.resolveAppeal(EVIDENCE, true);
        bond.executeSlash(EVIDENCE);
        assertEq(token.balanceOf(tenantA), 10e18);
        assertEq(token.balanceOf(treasury), 5e18);
    }

    function test_appeal_rules() public {
        _grantReferee();
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        uint64 at = uint64(block.timestamp) + WINDOW;
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.NotSlashedProvider.selector, stranger, prov));
        bond.appeal(EVIDENCE, keccak256("a"));
        vm.prank(prov);
        vm.expectRevert(ProviderBond.ZeroAnswer.selector);
        bond.appeal(EVIDENCE, bytes32(0));
        bytes32 refereeRole = bond.REFEREE_ROLE();
        vm.prank(arbiter);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, arbiter, refereeRole
            )
        );
        bond.resolveAppeal(EVIDENCE, false);
        vm.warp(at);
        vm.prank(prov);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.AppealWindowClosed.selector, at));
        bond.appeal(EVIDENCE, keccak256("a"));
    }

    function test_appeal_lapsesInTheProvidersFavourWhenNobodyDecides() public {
        _stake(prov, 100e18);
        _proposeTwo(30e18, 10e18, 15e18);
        uint64 at = uint64(block.timestamp) + WINDOW;
        vm.prank(prov);
        bond.appeal(EVIDENCE, keccak256("a"));
        vm.warp(at + WINDOW - 1);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.TooEarly.selector, at + WINDOW));
        bond.lapseAppeal(EVIDENCE);
        vm.warp(at + WINDOW);
        _grantReferee();
        vm.prank(referee);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.AppealLapsed.selector, at + WINDOW));
        bond.resolveAppeal(EVIDENCE, true);
        bond.lapseAppeal(EVIDENCE);
        (uint256 bonded,,,) = _bond(prov);
        assertEq(bonded, 100e18);
    }

    /// Any split: each tenant gets exactly its share, the treasury the rest, the bond keeps the remainder.
    function testFuzz_slashSplit(
        uint256 stakeAmount,
        uint256 amount,
        uint256 shareA,
        uint256 shareB,
        uint32 waited
    ) public {
        stakeAmount = bound(stakeAmount, 1, FUNDS);
        amount = bound(amount, 1, stakeAmount);
        shareA = bound(shareA, 0, amount);
        shareB = bound(shareB, 0, amount - shareA);
        _stake(prov, stakeAmount);
        _proposeTwo(amount, shareA, shareB);
        uint64 at = uint64(block.timestamp) + WINDOW;
        vm.warp(block.timestamp + waited);
        if (block.timestamp < at) {
            vm.expectRevert(abi.encodeWithSelector(ProviderBond.TooEarly.selector, at));
            bond.executeSlash(EVIDENCE);
            return;
        }
        bond.executeSlash(EVIDENCE);
        assertEq(token.balanceOf(tenantA), shareA);
        assertEq(token.balanceOf(tenantB), shareB);
        assertEq(token.balanceOf(treasury), amount - shareA - shareB);
        assertEq(token.balanceOf(address(bond)), stakeAmount - amount);
    }

    function test_reentrancy_withdrawCannotReenterWithdraw() public {
        ReentrantToken rt = new ReentrantToken();
        ProviderBond b = new ProviderBond(rt, admin, treasury, 2, 1);
        rt.mint(prov, 10e18);
        vm.startPrank(prov);
        rt.approve(address(b), type(uint256).max);
        b.stake(10e18);
        b.requestUnbond(10e18);
        vm.stopPrank();
        vm.warp(block.timestamp + 2);
        rt.arm(address(b), abi.encodeCall(ProviderBond.withdraw, ()));
        vm.prank(prov);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        b.withdraw();
    }

    function test_bondOf_unknownIsZero() public view {
        (uint256 bonded, uint256 unbonding, uint64 rel, uint256 slashed) = _bond(stranger);
        assertEq(bonded + unbonding + rel + slashed, 0);
    }

    // ---------------------------------------------------------------------------------------------
    // fuzz
    // ---------------------------------------------------------------------------------------------

    /// Stake, unbond and withdraw arbitrary amounts: the provider gets back exactly what it unbonded.
    function testFuzz_stakeUnbondWithdraw(uint256 stakeAmount, uint256 unbondAmount, uint32 waited) public {
        stakeAmount = bound(stakeAmount, 1, FUNDS);
        unbondAmount = bound(unbondAmount, 1, stakeAmount);
        _stake(prov, stakeAmount);
        _unbond(prov, unbondAmount);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.warp(block.timestamp + waited);
        vm.prank(prov);
        if (block.timestamp < releaseAt) {
            vm.expectRevert(abi.encodeWithSelector(ProviderBond.UnbondingNotReleased.selector, releaseAt));
            bond.withdraw();
        } else {
            bond.withdraw();
            assertEq(token.balanceOf(prov), FUNDS - stakeAmount + unbondAmount);
        }
        (uint256 bonded, uint256 unbonding,,) = _bond(prov);
        assertEq(token.balanceOf(address(bond)), bonded + unbonding);
        assertEq(bonded, stakeAmount - unbondAmount);
    }

    /// Slashing takes from bonded first, then unbonding, and never more than asked or available.
    function testFuzz_slashOrder(uint256 stakeAmount, uint256 unbondAmount, uint256 slashAmount) public {
        stakeAmount = bound(stakeAmount, 1, FUNDS);
        unbondAmount = bound(unbondAmount, 0, stakeAmount);
        slashAmount = bound(slashAmount, 1, FUNDS * 2);
        _stake(prov, stakeAmount);
        if (unbondAmount != 0) _unbond(prov, unbondAmount);
        uint256 bondedBefore = stakeAmount - unbondAmount;

        if (slashAmount > stakeAmount) {
            vm.prank(arbiter);
            vm.expectRevert(
                abi.encodeWithSelector(ProviderBond.SlashExceedsBond.selector, stakeAmount, slashAmount)
            );
            _propose(prov, EVIDENCE, slashAmount);
            return;
        }
        _slash(prov, slashAmount, EVIDENCE);
        (uint256 bonded, uint256 unbonding,, uint256 slashed) = _bond(prov);
        if (slashAmount <= bondedBefore) {
            assertEq(bonded, bondedBefore - slashAmount);
            assertEq(unbonding, unbondAmount);
        } else {
            assertEq(bonded, 0);
            assertEq(unbonding, stakeAmount - slashAmount);
        }
        assertEq(slashed, slashAmount);
        assertEq(token.balanceOf(treasury), slashAmount);
        assertEq(token.balanceOf(address(bond)), bonded + unbonding);
    }

    /// Only ARBITER_ROLE can slash, only DEFAULT_ADMIN_ROLE can set the treasury.
    function testFuzz_rolesEnforced(address caller) public {
        vm.assume(caller != arbiter && caller != admin);
        _stake(prov, 10e18);
        vm.startPrank(caller);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, arbiterRole
            )
        );
        _propose(prov, EVIDENCE, 1);
        bytes32 adminRole = bond.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole
            )
        );
        bond.setTreasury(caller);
        vm.stopPrank();
    }

    /// Any unbonding delay works: withdraw exactly at release time, never one second before.
    function testFuzz_unbondingDelay(uint64 delay) public {
        delay = uint64(bound(delay, 2, 365 days));
        ProviderBond b = new ProviderBond(token, admin, treasury, delay, delay - 1);
        vm.startPrank(prov);
        token.approve(address(b), type(uint256).max);
        b.stake(1e18);
        b.requestUnbond(1e18);
        uint64 releaseAt = uint64(block.timestamp) + delay;
        vm.warp(releaseAt - 1);
        vm.expectRevert(abi.encodeWithSelector(ProviderBond.UnbondingNotReleased.selector, releaseAt));
        b.withdraw();
        vm.warp(releaseAt);
        b.withdraw();
        vm.stopPrank();
        assertEq(token.balanceOf(prov), FUNDS);
    }
}
