"""The Temporal data converter of this project's clients and workers: pydantic JSON (the
same payloads as temporalio's `pydantic_data_converter`), with one TypeAdapter per type
for the whole process.

temporalio builds a new payload converter for every workflow run, inside its sandbox, and
`PydanticPayloadConverter` keeps its TypeAdapters per converter: each run built the pydantic
schema of its input (`ChannelParams`, the whole `ProvisioningState` in it) and of every
activity result it decodes again, ~10% of a provisioning worker's CPU with 100 peers at
once. The payload types are passed through the sandbox (one class object for every run),
so a cache shared by every converter serves them all.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

# Bounded: a type made per run (a class defined in a sandboxed module) must not pin every
# run's sandbox; the payload types of this project are far fewer.
MAX_TYPE_ADAPTERS = 1024


@functools.lru_cache(maxsize=MAX_TYPE_ADAPTERS)
def type_adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class SharedAdaptersJSONConverter(PydanticJSONPlainPayloadConverter):
    """`PydanticJSONPlainPayloadConverter` decoding with the process-wide adapters."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint = Any if type_hint is None else type_hint
        try:
            hash(hint)
        except TypeError:  # not cacheable: built for this payload alone
            return TypeAdapter(hint).validate_json(payload.data)
        return type_adapter(hint).validate_json(payload.data)


class SharedAdaptersPayloadConverter(CompositePayloadConverter):
    """temporalio's default encodings, JSON through pydantic with shared adapters."""

    def __init__(self) -> None:
        json = SharedAdaptersJSONConverter()
        super().__init__(
            *(
                json if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=SharedAdaptersPayloadConverter)
