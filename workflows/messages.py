"""What crosses the Temporal boundary: workflow inputs, status documents, activity I/O.

Plain frozen dataclasses (the pydantic data converter serialises them), so workflow modules
stay free of web3 and sockets. Wei amounts shown to operators are decimal strings.
"""

# No `from __future__ import annotations`: these types cross the workflow sandbox, where
# pydantic cannot resolve string annotations against modules the sandbox never imported.

from dataclasses import dataclass

from workflows.provisioning.commands import TxIntent
from workflows.provisioning.state import ProvisioningState


@dataclass(frozen=True)
class ChannelParams:
    """Everything a channel workflow needs; `carried` is set only by continue-as-new."""

    node_id: str
    peer_id: str
    token: str
    chain_id: int
    token_network: str
    our_address: str
    peer_address: str | None
    deposit_target: int
    funds_recheck_seconds: float = 60.0
    carried: ProvisioningState | None = None


@dataclass(frozen=True)
class ShortfallStatus:
    address: str
    eth_missing: str
    token_missing: str


@dataclass(frozen=True)
class ChannelStatus:
    """The `status` query document, as the Temporal UI and `paychan channels` show it."""

    node_id: str
    peer_id: str
    token: str
    stage: str
    our_address: str
    peer_address: str | None
    channel_id: str | None
    our_deposit: str
    their_deposit: str
    deposit_target: str
    last_error: str | None
    shortfall: ShortfallStatus | None


@dataclass(frozen=True)
class ReadChainStateInput:
    peer_address: str


@dataclass(frozen=True)
class SubmitRequest:
    """A batch of intents for the wallet sequencer. `request_id` is unique per batch and
    stable across retries, so the sequencer answers a repeat with the first answer."""

    request_id: str
    intents: tuple[TxIntent, ...]


@dataclass(frozen=True)
class SubmitBatch:
    """Several submissions in one Update: a worker process groups the ones that arrive
    together, since Temporal admits only a few Updates in flight per workflow."""

    requests: tuple[SubmitRequest, ...]


@dataclass(frozen=True)
class SignedTx:
    intent: TxIntent
    nonce: int
    tx_hash: str
    raw: str


@dataclass(frozen=True)
class SubmitResult:
    txs: tuple[SignedTx, ...]
    # Set when the node refused a transaction outright (not a revert): nothing will mine.
    refused: str | None = None


@dataclass(frozen=True)
class SignInput:
    intents: tuple[TxIntent, ...]
    first_nonce: int


@dataclass(frozen=True)
class BroadcastOutcome:
    tx_hash: str
    nonce: int
    error: str | None = None


@dataclass(frozen=True)
class FillNoncesInput:
    nonces: tuple[int, ...]


@dataclass(frozen=True)
class WaitForReceiptsInput:
    txs: tuple[SignedTx, ...]


@dataclass(frozen=True)
class SettlementReady:
    """Told to the connector process of `node_id` when its peer's channel is READY."""

    node_id: str
    peer_id: str
    token: str
    channel_id: str
    our_deposit: str
    their_deposit: str


@dataclass(frozen=True)
class SequencerParams:
    node_id: str
    next_nonce: int | None = None
    # Recent answers by request id, carried across continue-as-new.
    remembered: tuple[tuple[str, SubmitResult], ...] = ()
