// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title GpuFed Token (GPF)
/// @notice Plain 18-decimal ERC-20 used for local clusters, tests and demos. The owner can mint.
/// @dev Nothing in gpufed depends on this token: JobEscrow and ProviderBond accept any ERC-20.
///      Minting emits the standard ERC-20 `Transfer(address(0), to, amount)` event.
contract GpuFedToken is ERC20, Ownable {
    /// @notice Deploys the token with no supply.
    /// @param initialOwner Account allowed to mint (and to transfer or renounce ownership).
    constructor(address initialOwner) ERC20("GpuFed Token", "GPF") Ownable(initialOwner) {}

    /// @notice Mints `amount` base units (18 decimals) to `to`.
    /// @dev Reverts with `OwnableUnauthorizedAccount` when not called by the owner and with
    ///      `ERC20InvalidReceiver` when `to` is the zero address.
    /// @param to Receiver of the new tokens.
    /// @param amount Amount in base units.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
