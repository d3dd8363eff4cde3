"""Deploying and funding against real anvil chains (the session one and throwaway ones)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities import token_network as tn
from activities.deployment import (
    DeploymentError,
    InsufficientFunds,
    RpcUnreachable,
    deploy,
    fund,
    read_deployment,
    write_deployment,
)
from activities.token_network import Deployment, TransactionReverted
from connector.devstack import ANVIL_KEYS, free_port, run_anvil


async def test_deploy_creates_registry_token_and_network(anvil_w3: AsyncWeb3, new_account) -> None:
    deployer = await new_account(m2m=0)
    start = await anvil_w3.eth.block_number
    deployment = await deploy(anvil_w3, deployer)
    assert deployment.chain_id == 31337
    assert deployment.deployed_block == start + 1
    for address in (deployment.registry, deployment.token, deployment.token_network):
        assert len(await anvil_w3.eth.get_code(address)) > 0
    assert len({deployment.registry, deployment.token, deployment.token_network}) == 3
    registry_view = await tn.get_token_network(anvil_w3, deployment.registry, deployment.token)
    assert registry_view == deployment.token_network
    (token,) = await tn.call_function(
        anvil_w3, deployment.token_network, tn.contract_abi("TokenNetwork"), "token"
    )
    assert token == deployment.token


def test_deployment_json_round_trips(tmp_path: Path) -> None:
    deployment = Deployment(
        chain_id=84532,
        registry="0x" + "11" * 20,
        token="0x" + "22" * 20,
        token_network="0x" + "33" * 20,
        deployed_block=123,
    )
    path = tmp_path / "deployment.json"
    write_deployment(path, deployment)
    assert read_deployment(path) == deployment
    assert '"token_network"' in path.read_text()


async def test_fund_sends_eth_and_mints_m2m(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account
) -> None:
    funder = await new_account(m2m=0)
    targets = [Account.create().address for _ in range(3)]
    await fund(anvil_w3, funder, deployment, targets, eth_wei=10**17, m2m_wei=5 * 10**18)
    for address in targets:
        assert await tn.eth_balance(anvil_w3, address) == 10**17
        assert await tn.token_balance(anvil_w3, deployment, address) == 5 * 10**18


async def test_unfunded_deployer_fails_before_sending(anvil_w3: AsyncWeb3) -> None:
    broke = Account.from_key(secrets.token_bytes(32))
    with pytest.raises(InsufficientFunds, match=f"{broke.address} has 0 wei on chain 31337"):
        await deploy(anvil_w3, broke)
    assert await anvil_w3.eth.get_transaction_count(broke.address) == 0


async def test_fund_refuses_a_deployment_of_another_chain(
    anvil_w3: AsyncWeb3, deployment: Deployment
) -> None:
    other = deployment.model_copy(update={"chain_id": 1})
    with pytest.raises(DeploymentError, match="chain 1 but the RPC serves chain 31337"):
        await fund(
            anvil_w3, Account.from_key(ANVIL_KEYS[0]), other, [ANVIL_KEYS[0]], eth_wei=1, m2m_wei=0
        )


async def test_unreachable_rpc_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    w3 = AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None))
    try:
        with pytest.raises(RpcUnreachable, match=f"cannot reach RPC at {url}"):
            await deploy(w3, Account.from_key(ANVIL_KEYS[0]), rpc_url=url)
    finally:
        await w3.provider.disconnect()


async def test_outside_dev_chains_only_the_deployer_mints() -> None:
    with run_anvil(chain_id=84532) as chain:
        w3 = AsyncWeb3(AsyncHTTPProvider(chain.url))
        try:
            deployer, other = Account.from_key(ANVIL_KEYS[0]), Account.from_key(ANVIL_KEYS[1])
            deployment = await deploy(w3, deployer)
            assert deployment.chain_id == 84532
            with pytest.raises(TransactionReverted) as info:
                await tn.send_and_wait(w3, other, tn.build_mint(deployment, other.address, 1))
            assert info.value.error == "MintNotAllowed"
            await fund(w3, deployer, deployment, [other.address], eth_wei=0, m2m_wei=7)
            assert await tn.token_balance(w3, deployment, other.address) == 7
        finally:
            await w3.provider.disconnect()
