// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {GpuFedToken} from "../src/GpuFedToken.sol";

contract GpuFedTokenTest is Test {
    event Transfer(address indexed from, address indexed to, uint256 value);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    GpuFedToken internal token;
    address internal owner = makeAddr("owner");
    address internal user = makeAddr("user");

    function setUp() public {
        token = new GpuFedToken(owner);
    }

    function test_metadata() public view {
        assertEq(token.name(), "GpuFed Token");
        assertEq(token.symbol(), "GPF");
        assertEq(token.decimals(), 18);
        assertEq(token.totalSupply(), 0);
        assertEq(token.owner(), owner);
    }

    function test_constructor_emitsOwnershipTransferred() public {
        vm.expectEmit(true, true, false, false);
        emit OwnershipTransferred(address(0), user);
        new GpuFedToken(user);
    }

    function test_constructor_revertsOnZeroOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new GpuFedToken(address(0));
    }

    function test_mint_byOwner() public {
        vm.expectEmit(address(token));
        emit Transfer(address(0), user, 5e18);
        vm.prank(owner);
        token.mint(user, 5e18);
        assertEq(token.balanceOf(user), 5e18);
        assertEq(token.totalSupply(), 5e18);
    }

    function test_mint_revertsForNonOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, user));
        vm.prank(user);
        token.mint(user, 1);
    }

    function test_mint_revertsToZeroAddress() public {
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InvalidReceiver.selector, address(0)));
        vm.prank(owner);
        token.mint(address(0), 1);
    }

    function test_mint_afterOwnershipTransfer() public {
        vm.prank(owner);
        token.transferOwnership(user);
        vm.prank(user);
        token.mint(user, 1);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, owner));
        vm.prank(owner);
        token.mint(owner, 1);
    }

    function testFuzz_mint(address to, uint256 a, uint256 b) public {
        vm.assume(to != address(0));
        a = bound(a, 0, type(uint128).max);
        b = bound(b, 0, type(uint128).max);
        vm.startPrank(owner);
        token.mint(to, a);
        token.mint(to, b);
        vm.stopPrank();
        assertEq(token.balanceOf(to), a + b);
        assertEq(token.totalSupply(), a + b);
    }

    function testFuzz_mint_onlyOwner(address caller) public {
        vm.assume(caller != owner);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, caller));
        vm.prank(caller);
        token.mint(caller, 1);
    }
}
