"""The partner's side of a cooperative settle: what it signs and what it refuses, checked
against a real channel on anvil and a real claim store. (Both sides over a real BTP link and
the settlement on-chain: tests/integration/test_channel_keeping.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from activities import token_network as tn
from activities.balance_proof import CooperativeSettle, recover, sign_cooperative_settle
from activities.token_network import Deployment
from connector.balances import AccountLimits, BalanceLedger
from connector.btp.errors import BtpRefused
from connector.channels import ChannelRegistry
from connector.claim_store import ClaimStore
from connector.claims import ClaimDomain, ClaimSigner
from connector.codec.btp import ContentType, ProtocolData
from connector.config import parse_config
from connector.cooperative_settle import (
    PROTOCOL_NAME,
    CooperativeSettleAcceptance,
    CooperativeSettleProposal,
    CooperativeSettleService,
)
from connector.node import ConnectorNode
from worker.run import ChainContext
from workflows.messages import SettlementReady

pytestmark = pytest.mark.integration

M2M = 10**18
DEPOSIT = 10 * M2M


@dataclass
class Channel:
    """A channel between `requester` (the peer asking) and `us` (its partner, answering)."""

    id: str
    requester: LocalAccount
    us: LocalAccount
    service: CooperativeSettleService
    registry: ChannelRegistry
    claims: ClaimStore
    deployment: Deployment

    def proposal(
        self, ours: int, theirs: int, *, signer: LocalAccount | None = None, **changes: object
    ) -> bytes:
        """The requester's proposal giving us `ours` and it `theirs`."""
        settlement = CooperativeSettle.between(
            self.id, {self.us.address: ours, self.requester.address: theirs}
        )
        signature = sign_cooperative_settle(
            bytes((signer or self.requester).key),
            settlement,
            self.deployment.chain_id,
            self.deployment.token_network,
        )
        fields = {
            "chain_id": self.deployment.chain_id,
            "token_network": self.deployment.token_network,
            "signature": "0x" + signature.hex(),
            **settlement.model_dump(),
            **changes,
        }
        return CooperativeSettleProposal(**fields).to_json()

    async def answer(self, data: bytes) -> tuple[ProtocolData, ...]:
        return await self.service.handle_proposal(
            "requester", (ProtocolData(PROTOCOL_NAME, ContentType.APPLICATION_JSON, data),)
        )


@pytest.fixture
async def channel(
    anvil_w3: AsyncWeb3, deployment: Deployment, new_account, tmp_path: Path
) -> AsyncIterator[Channel]:
    requester, us = await new_account(), await new_account()
    channel_id = await tn.next_channel_id(anvil_w3, deployment, requester.address, us.address)
    await tn.send_batch(
        anvil_w3,
        requester,
        [
            tn.build_approve(deployment, DEPOSIT),
            tn.build_open_channel(deployment, us.address, 5),
            tn.build_set_total_deposit(deployment, channel_id, requester.address, DEPOSIT),
        ],
    )
    await tn.send_batch(
        anvil_w3,
        us,
        [
            tn.build_approve(deployment, DEPOSIT),
            tn.build_set_total_deposit(deployment, channel_id, us.address, DEPOSIT),
        ],
    )
    config = parse_config(
        f"""
nodeId: us
ilpAddress: g.us
btpServerPort: 0
peers:
  - id: requester
    authToken: token-requester
    evmAddress: "{requester.address}"
""",
        environ={},
    )
    path = tmp_path / "ledger.sqlite3"
    ledger = BalanceLedger.open(path, {"requester": AccountLimits(10**30)})
    claims = ClaimStore.open(path, ledger)
    registry = ChannelRegistry()
    registry.mark_ready(SettlementReady("us", "requester", "M2M", channel_id, "1", "1"))
    context = ChainContext("us", anvil_w3, us, deployment, 5)

    async def chain_ready() -> ChainContext:
        return context

    service = CooperativeSettleService(ConnectorNode(config), registry, chain_ready, claims)
    try:
        yield Channel(channel_id, requester, us, service, registry, claims, deployment)
    finally:
        await ledger.close()


async def pay_and_be_paid(channel: Channel, sent: int, received: int) -> None:
    """Our claims to the requester total `sent`, its claims to us `received`."""
    domain = ClaimDomain(channel.deployment.chain_id, channel.deployment.token_network)
    ours = ClaimSigner(bytes(channel.us.key), channel.us.address).sign(domain, channel.id, 1, sent)
    stored = await channel.claims.record_sent("requester", ours, sent)
    await channel.claims.record_acknowledged(stored)
    theirs = ClaimSigner(bytes(channel.requester.key), channel.requester.address).sign(
        domain, channel.id, 1, received
    )
    await channel.claims.record_received("requester", theirs, received)


async def test_balances_our_claims_leave_us_are_signed_and_stop_claims(channel: Channel) -> None:
    await pay_and_be_paid(channel, sent=3 * M2M, received=M2M)
    # Ours: 10 - 3 + 1 = 8 of the 20 held.
    (reply,) = await channel.answer(channel.proposal(8 * M2M, 12 * M2M))
    acceptance = CooperativeSettleAcceptance.model_validate_json(reply.data)
    settlement = CooperativeSettle.between(
        channel.id, {channel.us.address: 8 * M2M, channel.requester.address: 12 * M2M}
    )
    signer = recover(
        settlement,
        bytes.fromhex(acceptance.signature[2:]),
        channel.deployment.chain_id,
        channel.deployment.token_network,
    )
    assert signer == channel.us.address
    view = channel.registry.view("requester")
    assert view is not None and view.stage == "CLOSING" and not view.is_ready


@pytest.mark.parametrize(
    ("ours", "theirs", "changes", "reason"),
    [
        (7 * M2M, 13 * M2M, {}, "below the"),  # less than our claims leave us
        (9 * M2M, 12 * M2M, {}, "do not add up"),
        (8 * M2M, 12 * M2M, {"chain_id": 1}, "chainId 1"),
        (8 * M2M, 12 * M2M, {"token_network": "0x" + "77" * 20}, "tokenNetwork"),
        (8 * M2M, 12 * M2M, {"signer": "stranger"}, "not by the peer's address"),
    ],
)
async def test_proposals_that_shortchange_us_or_are_not_the_peer_s_are_refused(
    channel: Channel, new_account, ours: int, theirs: int, changes: dict, reason: str
) -> None:
    await pay_and_be_paid(channel, sent=3 * M2M, received=M2M)
    if changes.pop("signer", None):
        changes["signer"] = await new_account(eth=0, m2m=0)
    with pytest.raises(BtpRefused) as refused:
        await channel.answer(channel.proposal(ours, theirs, **changes))
    assert refused.value.code == "F00" and reason in str(refused.value)
    view = channel.registry.view("requester")
    assert view is not None and view.is_ready  # a refusal changes nothing


async def test_a_closed_channel_or_unreadable_proposal_is_refused(
    channel: Channel, anvil_w3: AsyncWeb3
) -> None:
    with pytest.raises(BtpRefused) as refused:
        await channel.answer(b'{"version": 1}')
    assert refused.value.code == "F01"
    await tn.send_and_wait(
        anvil_w3, channel.requester, tn.build_close_channel(channel.deployment, channel.id)
    )
    with pytest.raises(BtpRefused) as refused:
        await channel.answer(channel.proposal(10 * M2M, 10 * M2M))
    assert "is CLOSED, not open" in str(refused.value)
