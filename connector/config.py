"""Node configuration: YAML with `${VAR}` interpolation, validated by pydantic.

YAML keys are camelCase (`btpServerPort`), Python attributes snake_case (`btp_server_port`);
both spellings are accepted on input. Unknown keys are errors, so a typo never silently
falls back to a default.

Loading is the edge: `load_config` reads the file and the environment; the models below
only validate. Every failure becomes one `ConfigError` whose message names the field path
(`peers[1].evmAddress: not a valid EVM address`) and never carries a value, so a bad token
or key cannot leak through an error message. Tokens and keys are `SecretStr`: their `repr`
and `str` are masked.

The treasury private key is never read from YAML: `settlement.privateKeyEnv` names the
environment variable that holds it, read once at load time.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import yaml
from eth_utils import to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from connector.codec.address import MAX_ADDRESS_LENGTH, is_valid_address

# A route prefix may also be a bare scheme (`g`) so a parent can be the default route;
# full addresses are checked by the codec's RFC 0015 rule.
ILP_PREFIX_PATTERN = re.compile(
    r"^(g|private|example|peer|self|test[1-3]?|local)([.][a-zA-Z0-9_~-]+)*$"
)
# Peer and node ids become ILP address segments and Temporal workflow id parts.
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_~-]+$")
EVM_ADDRESS_PATTERN = re.compile(r"^0x[0-9a-fA-F]{40}$")
PRIVATE_KEY_PATTERN = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
UINT64_MAX = 2**64 - 1

DEFAULT_CREDIT_LIMIT = 10**12
# Load shedding (connector/services/in_flight.py; the figures behind the defaults are in
# BENCHMARKS.md "Reliability — load").
DEFAULT_MAX_IN_FLIGHT_PER_PEER = 1_000
DEFAULT_MAX_IN_FLIGHT_TOTAL = 4_000
DEFAULT_PRIVATE_KEY_ENV = "TREASURY_EVM_PRIVATE_KEY"
# `${VAR}` or `${VAR:-default}`; `$${` is a literal `${`.
_INTERPOLATION = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem, as one line naming the field path."""


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error about a sub-field of the model being validated.

    The formatter appends `field` to the error's location, so cross-field checks in a
    model validator still name the exact key (`settlement.rpcUrl`), not just the section.
    """
    return PydanticCustomError("config_field", message, {"field": field})


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        # The docstring under each field is its description (paychan config-reference).
        use_attribute_docstrings=True,
    )


def is_evm_address(value: str) -> bool:
    """0x + 40 hex digits; mixed case must be a valid EIP-55 checksum (all one case is not)."""
    if not EVM_ADDRESS_PATTERN.match(value):
        return False
    digits = value[2:]
    if digits == digits.lower() or digits == digits.upper():
        return True
    return to_checksum_address(value) == value


def _check_ilp_address(value: str) -> str:
    if not is_valid_address(value):
        raise PydanticCustomError("ilp_address", "not a valid ILP address (RFC 0015)")
    return value


def _check_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise PydanticCustomError("id", "must be letters, digits, '_', '~' or '-' only")
    return value


def _secret_of_length(minimum: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < minimum:
            raise PydanticCustomError(
                "secret_length", "must be at least {minimum} characters", {"minimum": minimum}
            )
        return value

    return AfterValidator(check)


Identifier = Annotated[str, AfterValidator(_check_id)]
IlpAddress = Annotated[str, AfterValidator(_check_ilp_address)]


class PeerConfig(_Section):
    """A BTP peer. With `url` we connect out as a client; without it the peer connects in.

    `auth_token` is what we send when connecting out, and what we expect when it connects in.
    Amounts are integers in the base unit of the settlement asset.
    """

    id: Identifier
    """Peer id: letters, digits, `_`, `~`, `-`; part of its workflow id and ILP routes."""
    url: str | None = None
    """`ws://` or `wss://` URL to connect out to; without it the peer connects in."""
    auth_token: Annotated[SecretStr, _secret_of_length(1)]
    """BTP auth token: sent when connecting out, expected when it connects in; never logged."""
    relation: Literal["peer", "parent", "child"] = "peer"
    """ILP relation of the peer to this node."""
    evm_address: str | None = None
    """The peer's EVM address (quote it in YAML); without it provisioning is SKIPPED."""
    preferred_tokens: list[str] = Field(default_factory=lambda: ["M2M"], min_length=1)
    """Settlement tokens; the first one names the channel workflow and its channel."""
    max_packet_amount: int | None = Field(default=None, gt=0, le=UINT64_MAX)
    """Largest Prepare amount accepted from the peer (F08 above it); none: no limit."""
    credit_limit: int = Field(default=DEFAULT_CREDIT_LIMIT, ge=0)
    """How much the peer may owe us before its Prepares are refused with T04."""
    settlement_threshold: int | None = Field(default=None, gt=0)
    """What we may owe the peer before settling; none: `settlement.settlementThreshold`."""
    max_in_flight: int | None = Field(default=None, gt=0)
    """Prepares from the peer held here at once (T03 above it); none: `maxInFlightPerPeer`."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^wss?://[^/\s]+", value):
            raise PydanticCustomError("url", "must be a ws:// or wss:// URL")
        return value

    @field_validator("evm_address", mode="before")
    @classmethod
    def _check_evm_address(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 0x... as a hexadecimal integer.
            raise PydanticCustomError(
                "evm_address", "not a valid EVM address (quote it: YAML read it as a number)"
            )
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not is_evm_address(value):
            raise PydanticCustomError(
                "evm_address", "not a valid EVM address (0x + 40 hex digits, valid checksum)"
            )
        return to_checksum_address(value)

    @property
    def is_outbound(self) -> bool:
        return self.url is not None


class RouteConfig(_Section):
    """A static route: packets whose destination starts with `prefix` go to `peer`."""

    prefix: str
    """ILP address prefix (RFC 0015), or a bare scheme such as `g` for a default route."""
    peer: str
    """Id of a configured peer that packets for `prefix` go to."""

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if len(value) > MAX_ADDRESS_LENGTH or not ILP_PREFIX_PATTERN.match(value):
            raise PydanticCustomError("ilp_prefix", "not a valid ILP address prefix (RFC 0015)")
        return value


class SettlementConfig(_Section):
    """On-chain settlement over EVM payment channels.

    Contract addresses come from `deployment_file` (the JSON `paychan deploy` writes) or are
    given explicitly (`registry_address` + `token_address`). The treasury key is read from the
    environment variable named by `private_key_env`.
    """

    enable_settlement: bool = False
    """Provision a payment channel per peer on connect (Temporal + EVM chain)."""
    threshold: int = Field(default=1_000_000, gt=0, alias="settlementThreshold")
    """What we may owe a peer before a claim is sent (base units)."""
    initial_deposit_multiplier: int = Field(default=10, ge=1)
    """Deposit target of a channel: this times the peer's settlement threshold."""
    min_deposit_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """Top up when our deposit not yet paid out by our claims falls below this fraction of
    the target."""
    settle_timeout: int = Field(default=500, gt=0)
    """Blocks between closing a channel and settling it (bounded by the contract)."""
    idle_close_seconds: float = Field(default=86_400.0, ge=0.0)
    """Close a channel when no claim has moved on it for this long (0: never)."""
    block_time_seconds: float = Field(default=2.0, gt=0.0)
    """The chain's block time: turns the settle window (in blocks) into a timer."""
    rpc_url: str | None = None
    """EVM JSON-RPC endpoint (`http(s)://` or `ws(s)://`); required when enabled."""
    chain_id: int | None = Field(default=None, gt=0)
    """Chain id used with explicit addresses; none: read from the RPC."""
    deployment_file: Path | None = None
    """JSON written by `paychan deploy`: registry, token and token network addresses."""
    registry_address: str | None = None
    """TokenNetworkRegistry address, instead of `deploymentFile`."""
    token_address: str | None = None
    """Settlement token (ERC20) address, instead of `deploymentFile`."""
    token_network_address: str | None = None
    """TokenNetwork of the token; none: looked up in the registry."""
    private_key_env: str = Field(
        default=DEFAULT_PRIVATE_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    """Name of the environment variable holding the treasury private key (never in YAML)."""
    # Filled from the environment at load time; excluded from dumps, masked in repr.
    private_key: SecretStr | None = Field(default=None, exclude=True)

    @field_validator("registry_address", "token_address", "token_network_address", mode="before")
    @classmethod
    def _check_contract_address(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not is_evm_address(value):
            raise PydanticCustomError("evm_address", "not a valid EVM address")
        return to_checksum_address(value)

    @field_validator("rpc_url")
    @classmethod
    def _check_rpc_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(https?|wss?)://\S+$", value):
            raise PydanticCustomError("url", "must be an http(s):// or ws(s):// URL")
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_private_key(cls, data: Any, info: ValidationInfo) -> Any:
        """Take the treasury key from the environment given as validation context."""
        environ = (info.context or {}).get("environ")
        if not isinstance(data, dict) or environ is None:
            return data
        if "privateKey" in data or "private_key" in data:
            raise _field_error("privateKey", "not allowed in YAML; set privateKeyEnv instead")
        if not _needs_private_key(info):
            return data
        name = data.get("privateKeyEnv", data.get("private_key_env", DEFAULT_PRIVATE_KEY_ENV))
        key = environ.get(name) if isinstance(name, str) else None
        return {**data, "private_key": key} if key else data

    @model_validator(mode="after")
    def _check_enabled(self, info: ValidationInfo) -> SettlementConfig:
        if not self.enable_settlement:
            return self
        if self.rpc_url is None:
            raise _field_error("rpcUrl", "required when enableSettlement is true")
        if self.deployment_file is None and (
            self.registry_address is None or self.token_address is None
        ):
            raise _field_error(
                "deploymentFile",
                "required when enableSettlement is true, unless registryAddress and "
                "tokenAddress are both given",
            )
        if self.private_key is None and not _needs_private_key(info):
            return self
        if self.private_key is None:
            raise _field_error(
                "privateKeyEnv",
                f"environment variable {self.private_key_env} is not set "
                "(it must hold the treasury private key)",
            )
        if not PRIVATE_KEY_PATTERN.match(self.private_key.get_secret_value()):
            raise _field_error(
                "privateKeyEnv",
                f"environment variable {self.private_key_env} is not a private key "
                "(0x + 64 hex digits)",
            )
        return self


def _needs_private_key(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("need_private_key", True))


class HealthConfig(_Section):
    """`/health` server. Port 0 picks a free port. Use 0.0.0.0 inside containers."""

    host: str = "127.0.0.1"
    """Interface of `/health`, `/health/live`, `/health/ready` and `/metrics`."""
    port: int = Field(default=0, ge=0, le=65535)
    """Port; 0 picks a free one."""


class AdminConfig(_Section):
    """Admin API: bearer-token protected, loopback by default."""

    host: str = "127.0.0.1"
    """Interface of the admin API; keep it on loopback."""
    port: int = Field(default=0, ge=0, le=65535)
    """Port; 0 picks a free one (`paychan send` needs a fixed one)."""
    token: Annotated[SecretStr, _secret_of_length(16)]
    """Bearer token every admin request must carry (16 characters or more)."""


class TemporalConfig(_Section):
    """Where the node's channel workflows live, and who runs their workers."""

    address: str = "127.0.0.1:7233"
    """Temporal frontend `host:port`."""
    namespace: str = "default"
    """Temporal namespace of the node's workflows."""
    run_worker: bool = True
    """Run the node's provisioning workers in the connector; false: `paychan worker` runs them."""


class NodeConfig(_Section):
    """One connector node."""

    node_id: Identifier
    """This node's id: letters, digits, `_`, `~`, `-`; names its workflows and task queues."""
    ilp_address: IlpAddress
    """This node's ILP address (RFC 0015), e.g. `g.peer2`."""
    btp_server_host: str = "127.0.0.1"
    """Interface the BTP server listens on for peers that connect in."""
    btp_server_port: int = Field(ge=0, le=65535)
    """BTP server port; 0 picks a free one."""
    peers: list[PeerConfig] = Field(default_factory=list)
    """BTP peers (section `peers[]`)."""
    routes: list[RouteConfig] = Field(default_factory=list)
    """Static routes (section `routes[]`); this node's own address is always routed here."""
    settlement: SettlementConfig | None = None
    """Payment channels (section `settlement`); none: no settlement."""
    health: HealthConfig = Field(default_factory=HealthConfig)
    """Health and metrics server (section `health`)."""
    # No admin section → no admin API: it is never served without a token.
    admin: AdminConfig | None = None
    """Admin API (section `admin`); none: no admin API."""
    ledger_path: Path | None = None
    """SQLite balance ledger; none: `data/<nodeId>/ledger.sqlite3`."""
    # SQLite `synchronous` for the WAL ledger: "normal" survives process crashes, "full" also
    # power loss (an fsync per write batch). See connector/balances.py and BENCHMARKS.md.
    ledger_sync: Literal["normal", "full"] = "normal"
    """`normal` survives process crashes; `full` also power loss (an fsync per write batch)."""
    # Seeds the fulfillments of packets addressed to this node (local delivery).
    receiver_secret: Annotated[SecretStr, _secret_of_length(16)] | None = None
    """Seeds the fulfillments of packets addressed to this node; none: random per start."""
    fee_basis_points: int = Field(default=0, ge=0, le=10_000)
    """Fee kept on forwarded packets, in 1/100 of a percent."""
    max_in_flight_per_peer: int = Field(default=DEFAULT_MAX_IN_FLIGHT_PER_PEER, gt=0)
    """Prepares one peer may have in flight here at once; more are refused with T03
    Connector Busy (load shedding; a peer's own `maxInFlight` overrides it)."""
    max_in_flight_total: int | None = Field(default=DEFAULT_MAX_IN_FLIGHT_TOTAL, gt=0)
    """Prepares from all peers together in flight here at once (T03 above it); none: no
    cap beyond the per-peer ones."""
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    """Temporal connection (section `temporal`)."""
    log_format: Literal["console", "json"] = "console"
    """`console` for people, `json` for log collectors."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""

    @model_validator(mode="after")
    def _check_references(self) -> NodeConfig:
        seen: set[str] = set()
        for index, peer in enumerate(self.peers):
            if peer.id in seen:
                raise _field_error(f"peers[{index}].id", f"duplicate peer id {peer.id!r}")
            if peer.id == self.node_id:
                raise _field_error(f"peers[{index}].id", "a peer cannot have this node's id")
            seen.add(peer.id)
        for index, route in enumerate(self.routes):
            if route.peer not in seen:
                raise _field_error(f"routes[{index}].peer", f"unknown peer {route.peer!r}")
        return self

    @property
    def resolved_ledger_path(self) -> Path:
        return self.ledger_path or Path("data") / self.node_id / "ledger.sqlite3"

    def peer(self, peer_id: str) -> PeerConfig:
        for peer in self.peers:
            if peer.id == peer_id:
                return peer
        raise KeyError(peer_id)

    def settlement_threshold_for(self, peer_id: str) -> int | None:
        """What we may owe `peer_id` before settling: its own value, else the node's."""
        own = self.peer(peer_id).settlement_threshold
        if own is not None:
            return own
        return self.settlement.threshold if self.settlement is not None else None


# --- loading ----------------------------------------------------------------------------


def _format_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "config_field":
        field = error["ctx"]["field"]
        # A field given from the top (`peers[1].id`) is already a full path.
        loc = (*loc, field) if loc else (field,)
    path = _format_path(loc)
    return f"{path}: {error['msg']}" if path else error["msg"]


def _interpolate(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: _interpolate(item, f"{path}.{key}" if path else str(key), environ)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(item, f"{path}[{i}]", environ) for i, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        # Shell semantics: `${VAR:-default}` also replaces an empty value.
        if found is not None and (found or default is None):
            return found
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _INTERPOLATION.sub(substitute, value)


def parse_config(
    text: str,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
    *,
    need_private_key: bool = True,
) -> NodeConfig:
    """Validate YAML text; `${VAR}` and `${VAR:-default}` come from `environ`.

    `need_private_key=False` is for operator commands that only read state (`paychan
    channels`): the treasury key is then neither required nor read.
    """
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    data = _interpolate(raw, "", env)
    try:
        return NodeConfig.model_validate(
            data, context={"environ": env, "need_private_key": need_private_key}
        )
    except ValidationError as exc:
        # Only the first problem: one clear line. `from None` keeps pydantic's rendering,
        # which may quote input values, out of any traceback.
        raise ConfigError(_describe(exc.errors()[0])) from None


def load_config(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    *,
    need_private_key: bool = True,
) -> NodeConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    return parse_config(text, environ, source=str(path), need_private_key=need_private_key)


def load_config_or_exit(path: str | Path, *, need_private_key: bool = True) -> NodeConfig:
    """For CLI commands: the config, or one line on stderr and exit code 2."""
    try:
        return load_config(path, need_private_key=need_private_key)
    except ConfigError as exc:
        _exit_with(f"paychan: config error: {exc}")


def _exit_with(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)
