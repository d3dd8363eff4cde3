"""A pure ABI codec over one artifact: calldata, return values, event logs, custom errors.

Kept free of web3 providers so transaction builders and revert classification run without a
network (and without web3's per-call contract machinery). Our contracts have no overloaded
functions, so names are unique keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import eth_abi
from eth_utils import keccak, to_checksum_address

from contracts import Artifact


def _canonical_type(param: dict[str, Any]) -> str:
    # Enums reach the ABI as uint8 already; tuples are not used by our contracts.
    return param["type"]


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_canonical_type(p) for p in entry['inputs'])})"


def _normalise(kind: str, value: Any) -> Any:
    if kind == "address":
        return to_checksum_address(value)
    if kind.startswith("bytes") and isinstance(value, bytes):
        return "0x" + value.hex()
    return value


@dataclass(frozen=True, slots=True)
class FunctionAbi:
    name: str
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    output_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DecodedError:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    name: str
    address: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _EventAbi:
    name: str
    inputs: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)


class ContractAbi:
    """Encodes calls to, and decodes answers from, one compiled contract."""

    def __init__(self, artifact: Artifact) -> None:
        self.name = artifact.name
        self.bytecode = bytes.fromhex(artifact.bytecode.removeprefix("0x"))
        self.functions: dict[str, FunctionAbi] = {}
        self.errors: dict[bytes, _ErrorAbi] = {}
        self._events: dict[bytes, _EventAbi] = {}
        self._constructor_types: tuple[str, ...] = ()
        for entry in artifact.abi:
            kind = entry["type"]
            if kind == "function":
                self.functions[entry["name"]] = FunctionAbi(
                    name=entry["name"],
                    selector=keccak(text=_signature(entry))[:4],
                    input_types=tuple(_canonical_type(p) for p in entry["inputs"]),
                    output_types=tuple(_canonical_type(p) for p in entry["outputs"]),
                    output_names=tuple(p["name"] for p in entry["outputs"]),
                )
            elif kind == "error":
                self.errors[keccak(text=_signature(entry))[:4]] = _ErrorAbi(
                    name=entry["name"],
                    types=tuple(_canonical_type(p) for p in entry["inputs"]),
                    names=tuple(p["name"] for p in entry["inputs"]),
                )
            elif kind == "event":
                self._events[keccak(text=_signature(entry))] = _EventAbi(
                    name=entry["name"],
                    inputs=tuple(
                        (p["name"], _canonical_type(p), p["indexed"]) for p in entry["inputs"]
                    ),
                )
            elif kind == "constructor":
                self._constructor_types = tuple(_canonical_type(p) for p in entry["inputs"])

    def encode_call(self, function: str, *args: Any) -> bytes:
        abi = self.functions[function]
        return abi.selector + eth_abi.encode(abi.input_types, args)

    def encode_deploy(self, *args: Any) -> bytes:
        return self.bytecode + eth_abi.encode(self._constructor_types, args)

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        abi = self.functions[function]
        values = eth_abi.decode(abi.output_types, data)
        return tuple(_normalise(t, v) for t, v in zip(abi.output_types, values, strict=True))

    def decode_error(self, data: bytes) -> DecodedError | None:
        """The custom error `data` encodes, if this contract declares it."""
        error = self.errors.get(bytes(data[:4]))
        if error is None:
            return None
        values = eth_abi.decode(error.types, bytes(data[4:]))
        args = {
            n: _normalise(t, v) for n, t, v in zip(error.names, error.types, values, strict=True)
        }
        return DecodedError(name=error.name, args=args)

    def decode_log(self, address: str, topics: list[bytes], data: bytes) -> DecodedEvent | None:
        """The event a log holds, if this contract declares it (matched by topic 0)."""
        if not topics:
            return None
        event = self._events.get(bytes(topics[0]))
        if event is None:
            return None
        indexed = [(n, t) for n, t, is_indexed in event.inputs if is_indexed]
        plain = [(n, t) for n, t, is_indexed in event.inputs if not is_indexed]
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(indexed, topics[1:], strict=True):
            args[name] = _normalise(kind, eth_abi.decode([kind], bytes(topic))[0])
        values = eth_abi.decode([t for _, t in plain], bytes(data))
        for (name, kind), value in zip(plain, values, strict=True):
            args[name] = _normalise(kind, value)
        return DecodedEvent(name=event.name, address=to_checksum_address(address), args=args)
