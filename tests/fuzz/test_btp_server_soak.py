"""The BTP server soak (`bench/fuzz_server.py`) cut down to 20,000 inputs: pipelined on four
authenticated links at once and on 200 fresh connections, every input gets exactly the
answer the protocol rules owe it, in time, and the links stay up. What the hypothesis test
(`test_btp_server.py`) does not check: the accounting of each answer under concurrency.
The million-input figure is in BENCHMARKS.md."""

from __future__ import annotations

import pytest

from bench.fuzz_server import Answer, expected_answer, run
from connector.codec import btp, ilp
from connector.codec.btp import ContentType, ProtocolData
from tests.fuzz import targets

pytestmark = pytest.mark.timeout(120)


def _entry(name: str, data: bytes = b"") -> ProtocolData:
    return ProtocolData(name, ContentType.OCTET_STREAM, data)


def test_the_soak_owes_each_input_the_answer_the_protocol_rules_give() -> None:
    prepare = ilp.encode(ilp.Prepare(1, targets.EXPIRES, bytes(32), "g.x", b""))
    cases = {
        btp.encode(btp.Message(1, (_entry("ilp", prepare),))): Answer.ILP_RESPONSE,
        btp.encode(btp.Message(1, (_entry("x"), _entry("ilp", b"junk")))): Answer.ILP_RESPONSE,
        btp.encode(btp.Message(1, (_entry("auth"), _entry("ilp", prepare)))): Answer.ERROR_F00,
        btp.encode(btp.Message(1, (_entry("payment-channel-claim"),))): Answer.ERROR_F00,
        btp.encode(btp.Message(1, ())): Answer.ERROR_F00,
        btp.encode(btp.Transfer(1, 5, (_entry("ilp", prepare),))): Answer.ERROR_F00,
        btp.encode(btp.Message(1, ()))[:-1] + b"\x00\x00": Answer.ERROR_F01,
        bytes([btp.MessageType.TRANSFER]) + b"\x00\x00\x00\x01": Answer.ERROR_F01,
        btp.encode(btp.Response(1, ())): None,
        btp.encode(btp.Error(1, "F00", "E", "", b"", ())): None,
        bytes([btp.MessageType.MESSAGE, 0, 0, 1]): None,  # no request id to answer
        b"hello, world": None,
    }
    assert {data: expected_answer(data) for data in cases} == cases


def test_20000_inputs_on_four_links_and_fresh_connections_get_exactly_their_answers() -> None:
    result = run(inputs=20_000, links=4, before_auth_every=100, probe_every=2_000, pool_size=300)

    assert result.crashes == 0 and result.hangs == 0, result.failures
    assert (result.inputs, result.after_auth, result.before_auth) == (20_000, 19_800, 200)
    assert result.probes == 4 * (19_800 // 4 // 2_000 + 1)
    owed = {"Response carrying ilp", "Error F00", "Error F01", "no answer", "text message"}
    assert owed <= set(result.kinds), result.kinds
    answered = ("Response carrying ilp", "Error F00", "Error F01")
    assert result.answers == sum(result.kinds[kind] for kind in answered) + result.probes
    assert result.kinds.get("before auth: refused with F00", 0) > 100, result.kinds
