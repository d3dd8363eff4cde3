"""The worker's data converter writes the same payloads as temporalio's pydantic converter and
reads them back, and every converter instance (one per workflow run) shares one TypeAdapter
per type."""

from __future__ import annotations

from temporalio.contrib.pydantic import pydantic_data_converter

from worker.data_converter import DATA_CONVERTER, SharedAdaptersPayloadConverter, type_adapter
from workflows.messages import ChannelParams, SubmitResult
from workflows.provisioning.state import ProvisioningState, Stage

PARAMS = ChannelParams(
    node_id="node",
    peer_id="peer",
    token="M2M",
    chain_id=31337,
    token_network="0x" + "11" * 20,
    our_address="0x" + "22" * 20,
    peer_address="0x" + "33" * 20,
    deposit_target=10**22,
    carried=ProvisioningState(
        our_address="0x" + "22" * 20,
        peer_address="0x" + "33" * 20,
        deposit_target=10**22,
        stage=Stage.READY,
    ),
)


def test_payloads_are_those_of_the_pydantic_converter_both_ways() -> None:
    ours = DATA_CONVERTER.payload_converter.to_payloads([PARAMS])
    theirs = pydantic_data_converter.payload_converter.to_payloads([PARAMS])
    assert ours == theirs
    assert DATA_CONVERTER.payload_converter.from_payloads(theirs, [ChannelParams]) == [PARAMS]
    assert pydantic_data_converter.payload_converter.from_payloads(ours, [ChannelParams]) == [
        PARAMS
    ]


def test_converters_of_different_runs_share_one_adapter_per_type() -> None:
    payloads = DATA_CONVERTER.payload_converter.to_payloads([PARAMS, SubmitResult(txs=())])
    hints = [ChannelParams, SubmitResult]
    SharedAdaptersPayloadConverter().from_payloads(payloads, hints)
    before = type_adapter.cache_info()
    for _ in range(5):  # temporalio makes a converter per workflow run
        assert SharedAdaptersPayloadConverter().from_payloads(payloads, hints) == [
            PARAMS,
            SubmitResult(txs=()),
        ]
    after = type_adapter.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 10
