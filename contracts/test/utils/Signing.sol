// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";

/// @dev EIP-712 digests and signatures for JobEscrow, built independently of the contract (from the type
///      strings in docs/contracts.md), so the tests also check the contract's hashing.
abstract contract EscrowSigning is Test {
    bytes32 internal constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant PERMIT_TYPEHASH = keccak256(
        "SpendingPermit(address payer,address settler,uint256 amount,uint64 validUntil,uint256 nonce,uint256 deadline)"
    );
    bytes32 internal constant RECEIPT_TYPEHASH = keccak256("UsageReceipt(bytes32 jobId,uint256 paid)");

    function _domainSeparator(address escrow) internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                EIP712_DOMAIN_TYPEHASH, keccak256("GpuFed JobEscrow"), keccak256("1"), block.chainid, escrow
            )
        );
    }

    function _permitDigest(
        address escrow,
        address payer,
        address settler,
        uint256 amount,
        uint64 validUntil,
        uint256 nonce,
        uint256 deadline
    ) internal view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(PERMIT_TYPEHASH, payer, settler, amount, validUntil, nonce, deadline)
        );
        return keccak256(abi.encodePacked("\x19\x01", _domainSeparator(escrow), structHash));
    }

    function _receiptDigest(address escrow, bytes32 jobId, uint256 paid) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(RECEIPT_TYPEHASH, jobId, paid));
        return keccak256(abi.encodePacked("\x19\x01", _domainSeparator(escrow), structHash));
    }

    /// @dev 65-byte r || s || v signature of `digest` with `key`.
    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signReceipt(uint256 key, address escrow, bytes32 jobId, uint256 paid)
        internal
        view
        returns (bytes memory)
    {
        return _sign(key, _receiptDigest(escrow, jobId, paid));
    }
}
