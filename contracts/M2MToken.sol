// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title M2M: the test token channels are denominated in (18 decimals).
/// @notice On dev chains (chain id 31337 or 1337) `mint` is an open faucet; elsewhere only the
/// deployer may mint, so a public testnet deployment can still fund its own test wallets.
contract M2MToken is ERC20 {
    address public immutable minter;

    error MintNotAllowed(address caller);

    constructor() ERC20("M2M", "M2M") {
        minter = msg.sender;
    }

    function mint(address to, uint256 amount) external {
        if (msg.sender != minter && !isDevChain()) revert MintNotAllowed(msg.sender);
        _mint(to, amount);
    }

    function isDevChain() public view returns (bool) {
        return block.chainid == 31337 || block.chainid == 1337;
    }
}
