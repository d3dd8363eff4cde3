// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {TokenNetwork} from "./TokenNetwork.sol";

/// @title One TokenNetwork per token, created on demand.
contract TokenNetworkRegistry {
    mapping(address token => address tokenNetwork) private _tokenNetworks;

    event TokenNetworkCreated(address indexed token, address indexed tokenNetwork);

    error InvalidToken(address token);
    error TokenNetworkExists(address token, address tokenNetwork);

    function createTokenNetwork(address token) external returns (address tokenNetwork) {
        if (token.code.length == 0) revert InvalidToken(token);
        address existing = _tokenNetworks[token];
        if (existing != address(0)) revert TokenNetworkExists(token, existing);
        tokenNetwork = address(new TokenNetwork(IERC20(token)));
        _tokenNetworks[token] = tokenNetwork;
        emit TokenNetworkCreated(token, tokenNetwork);
    }

    /// The token's network, or the zero address.
    function getTokenNetwork(address token) external view returns (address) {
        return _tokenNetworks[token];
    }
}
