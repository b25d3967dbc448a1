// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @dev A 6-decimal ERC-20 (like USDC) with GpuFedToken's constructor and `mint`, so the e2e harness
///      can deploy either; e2e/tests/payment_recovery.rs checks that the hub reads `decimals()`.
contract SixDecimalsToken is ERC20, Ownable {
    constructor(address initialOwner) ERC20("Six Decimals", "SIX") Ownable(initialOwner) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
