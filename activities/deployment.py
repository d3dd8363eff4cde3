"""Deploy the contracts to any RPC, fund test wallets, and read/write the deployment JSON.

`deploy` sends three transactions (M2MToken, TokenNetworkRegistry, createTokenNetwork) and
checks up front that the deployer can pay for all three, so an unfunded key fails before
anything reaches the chain. `fund` pipelines ETH transfers and M2M mints in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import Web3RPCError

from activities.token_network import (
    Deployment,
    GasLimit,
    build_mint,
    build_transfer_eth,
    contract_abi,
    fee_fields,
    get_token_network,
    send_and_wait,
    send_batch,
)

_DEPLOY_GAS = GasLimit.DEPLOY_TOKEN + GasLimit.DEPLOY_REGISTRY + GasLimit.CREATE_TOKEN_NETWORK


class DeploymentError(RuntimeError):
    """Deploying or funding cannot proceed; the message is one line for the operator.

    RpcUnreachable: the RPC endpoint does not answer.
    InsufficientFunds: the sending key cannot pay for what it must send.
    """


class RpcUnreachable(DeploymentError):
    pass


class InsufficientFunds(DeploymentError):
    pass


async def chain_id_of(w3: AsyncWeb3, url: str) -> int:
    """The chain id, or RpcUnreachable naming the URL and the reason."""
    try:
        return await w3.eth.chain_id
    except (aiohttp.ClientError, OSError, TimeoutError, Web3RPCError) as exc:
        reason = str(exc) or type(exc).__name__
        raise RpcUnreachable(f"cannot reach RPC at {url}: {reason}") from exc


async def _require_balance(
    w3: AsyncWeb3, account: LocalAccount, gas: int, value: int, chain_id: int, what: str
) -> None:
    fees = await fee_fields(w3)
    price = fees.get("maxFeePerGas", fees.get("gasPrice", 0))
    needed = gas * price + value
    balance = await w3.eth.get_balance(account.address)
    if balance < needed:
        raise InsufficientFunds(
            f"{what} key {account.address} has {balance} wei on chain {chain_id}, "
            f"needs about {needed} wei (gas limit {gas} at {price} wei/gas"
            + (f" plus {value} wei sent)" if value else ")")
        )


async def deploy(w3: AsyncWeb3, deployer: LocalAccount, *, rpc_url: str = "") -> Deployment:
    """Deploy M2MToken and TokenNetworkRegistry, create the M2M TokenNetwork through it."""
    chain_id = await chain_id_of(w3, rpc_url or "the configured URL")
    await _require_balance(w3, deployer, _DEPLOY_GAS, 0, chain_id, "deployer")

    token_receipt = await send_and_wait(
        w3,
        deployer,
        {
            "data": "0x" + contract_abi("M2MToken").encode_deploy().hex(),
            "value": 0,
            "gas": GasLimit.DEPLOY_TOKEN,
            "chainId": chain_id,
        },
    )
    token = to_checksum_address(token_receipt["contractAddress"])
    registry_receipt = await send_and_wait(
        w3,
        deployer,
        {
            "data": "0x" + contract_abi("TokenNetworkRegistry").encode_deploy().hex(),
            "value": 0,
            "gas": GasLimit.DEPLOY_REGISTRY,
            "chainId": chain_id,
        },
    )
    registry = to_checksum_address(registry_receipt["contractAddress"])
    await send_and_wait(
        w3,
        deployer,
        {
            "to": registry,
            "data": "0x"
            + contract_abi("TokenNetworkRegistry").encode_call("createTokenNetwork", token).hex(),
            "value": 0,
            "gas": GasLimit.CREATE_TOKEN_NETWORK,
            "chainId": chain_id,
        },
    )
    token_network = await get_token_network(w3, registry, token)
    if token_network is None:
        raise DeploymentError(f"registry {registry} has no token network for {token}")
    return Deployment(
        chain_id=chain_id,
        registry=registry,
        token=token,
        token_network=token_network,
        deployed_block=token_receipt["blockNumber"],
    )


async def fund(
    w3: AsyncWeb3,
    funder: LocalAccount,
    deployment: Deployment,
    addresses: Sequence[str],
    *,
    eth_wei: int,
    m2m_wei: int,
    rpc_url: str = "",
) -> None:
    """Send `eth_wei` ETH and mint `m2m_wei` M2M to each address, in one pipelined batch."""
    chain_id = await chain_id_of(w3, rpc_url or "the configured URL")
    if chain_id != deployment.chain_id:
        raise DeploymentError(
            f"deployment is for chain {deployment.chain_id} but the RPC serves chain {chain_id}"
        )
    txs = []
    for address in addresses:
        if eth_wei:
            txs.append(build_transfer_eth(deployment, address, eth_wei))
        if m2m_wei:
            txs.append(build_mint(deployment, address, m2m_wei))
    if not txs:
        return
    await _require_balance(
        w3,
        funder,
        sum(tx["gas"] for tx in txs),
        eth_wei * len(addresses),
        chain_id,
        "funding",
    )
    await send_batch(w3, funder, txs)


def write_deployment(path: Path, deployment: Deployment) -> None:
    path.write_text(deployment.model_dump_json(indent=2) + "\n")


def read_deployment(path: Path) -> Deployment:
    return Deployment.model_validate_json(path.read_text())
