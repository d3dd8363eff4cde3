"""connector.config: the example line loads, bad fields name their path, secrets stay masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from connector.config import (
    ConfigError,
    NodeConfig,
    PeerConfig,
    SettlementConfig,
    load_config,
    load_config_or_exit,
    parse_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "0x" + "4f" * 32
TOKEN = "tok-very-secret-123"

MINIMAL = """
nodeId: peer2
ilpAddress: g.peer2
btpServerPort: 3002
peers:
  - id: peer1
    authToken: ${TOKEN}
  - id: peer3
    url: ws://127.0.0.1:3003
    authToken: other-secret
    evmAddress: "0x90f79bf6eb2c4f870365e785982e1f101e93b906"
routes:
  - {prefix: g.peer3, peer: peer3}
settlement:
  enableSettlement: true
  rpcUrl: http://127.0.0.1:8545
  deploymentFile: .demo/deployment.json
admin:
  port: 0
  token: admin-token-0123456789
"""

ENV = {"TOKEN": TOKEN, "TREASURY_EVM_PRIVATE_KEY": KEY}


def read_env_example() -> dict[str, str]:
    pairs = {}
    for line in (EXAMPLES / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, ENV if environ is None else environ)
    return str(caught.value)


# --- the examples -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_example_loads_with_env_example(n: int) -> None:
    config = load_config(EXAMPLES / f"peer{n}.yaml", read_env_example())

    assert config.node_id == f"peer{n}"
    assert config.ilp_address == f"g.peer{n}"
    assert config.btp_server_port == 3000 + n
    assert config.settlement is not None and config.settlement.enable_settlement
    assert config.settlement.private_key is not None
    assert config.admin is not None and config.admin.host == "127.0.0.1"


def test_examples_form_a_line_where_each_node_dials_its_right_neighbour() -> None:
    env = read_env_example()
    configs = {n: load_config(EXAMPLES / f"peer{n}.yaml", env) for n in range(1, 6)}

    for n, config in configs.items():
        outbound = {p.id for p in config.peers if p.is_outbound}
        inbound = {p.id for p in config.peers if not p.is_outbound}
        assert outbound == ({f"peer{n + 1}"} if n < 5 else set())
        assert inbound == ({f"peer{n - 1}"} if n > 1 else set())
    for n in range(1, 5):
        left, right = configs[n], configs[n + 1]
        dial = left.peer(f"peer{n + 1}")
        assert dial.url == f"ws://127.0.0.1:{right.btp_server_port}"
        accept = right.peer(f"peer{n}")
        # The token the left node sends is the one the right node expects.
        assert dial.auth_token.get_secret_value() == accept.auth_token.get_secret_value()
        # Each neighbour knows the other's wallet under the address its own key controls.
        assert accept.evm_address == env[f"PEER{n}_EVM_ADDRESS"]


def test_examples_route_every_node_to_every_other_node() -> None:
    env = read_env_example()
    configs = {n: load_config(EXAMPLES / f"peer{n}.yaml", env) for n in range(1, 6)}

    def next_hop(n: int, destination: str) -> int:
        routes = configs[n].routes
        best = max(
            (r for r in routes if destination.startswith(r.prefix)), key=lambda r: len(r.prefix)
        )
        return int(best.peer.removeprefix("peer"))

    for source in range(1, 6):
        for target in range(1, 6):
            node, hops = source, 0
            while node != target:
                node, hops = next_hop(node, f"g.peer{target}.receiver"), hops + 1
                assert hops <= 4
            assert hops == abs(target - source)


def test_examples_use_defaults_and_env_overrides_ports(tmp_path: Path) -> None:
    env = {
        "PEER3_TREASURY_EVM_PRIVATE_KEY": KEY,
        "PEER3_BTP_PORT": "41003",
        "PEER4_BTP_PORT": "41004",
    }
    env["PAYCHAN_DATA_DIR"] = str(tmp_path)

    config = load_config(EXAMPLES / "peer3.yaml", env)

    assert config.btp_server_port == 41003
    assert config.peer("peer4").url == "ws://127.0.0.1:41004"
    assert config.peer("peer2").auth_token.get_secret_value() == "secret-peer2-to-peer3"
    assert config.resolved_ledger_path == tmp_path / "peer3" / "ledger.sqlite3"


def test_examples_load_without_keys_when_settlement_is_disabled() -> None:
    config = load_config(EXAMPLES / "peer1.yaml", {"PAYCHAN_ENABLE_SETTLEMENT": "false"})

    assert config.settlement is not None and not config.settlement.enable_settlement


def test_example_without_its_treasury_key_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "peer5.yaml", {})

    assert str(caught.value) == (
        "settlement.privateKeyEnv: environment variable PEER5_TREASURY_EVM_PRIVATE_KEY is not"
        " set (it must hold the treasury private key)"
    )


def test_read_only_commands_load_an_example_without_reading_its_treasury_key() -> None:
    environ = {"PEER5_TREASURY_EVM_PRIVATE_KEY": KEY}
    config = load_config(EXAMPLES / "peer5.yaml", {}, need_private_key=False)
    keyless = load_config(EXAMPLES / "peer5.yaml", environ, need_private_key=False)

    assert config.settlement is not None and config.settlement.enable_settlement
    assert config.settlement.private_key is None
    assert keyless.settlement is not None and keyless.settlement.private_key is None


# --- values and defaults ------------------------------------------------------------------


def test_minimal_config_has_sensible_defaults() -> None:
    config = parse_config(MINIMAL, ENV)

    assert config.btp_server_host == "127.0.0.1"
    assert config.health.host == "127.0.0.1"
    assert config.temporal.address == "127.0.0.1:7233"
    assert config.temporal.run_worker is True
    assert config.fee_basis_points == 0
    assert config.resolved_ledger_path == Path("data/peer2/ledger.sqlite3")
    peer1 = config.peer("peer1")
    assert peer1.relation == "peer"
    assert peer1.preferred_tokens == ["M2M"]
    assert not peer1.is_outbound
    assert config.peer("peer3").is_outbound
    # Lower-case input comes out checksummed.
    assert config.peer("peer3").evm_address == "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    assert config.settlement is not None
    assert config.settlement.min_deposit_threshold == 0.5
    assert config.settlement.initial_deposit_multiplier == 10


def test_settlement_threshold_falls_back_to_the_settlement_block() -> None:
    text = MINIMAL.replace(
        "authToken: other-secret", "authToken: other-secret\n    settlementThreshold: 77"
    )
    config = parse_config(
        text.replace(
            "enableSettlement: true", "enableSettlement: true\n  settlementThreshold: 500"
        ),
        ENV,
    )

    assert config.settlement_threshold_for("peer3") == 77
    assert config.settlement_threshold_for("peer1") == 500


def test_load_shedding_caps_default_and_are_set_per_node_and_per_peer() -> None:
    default = parse_config(MINIMAL, ENV)
    assert (default.max_in_flight_per_peer, default.max_in_flight_total) == (1_000, 4_000)
    assert default.peer("peer3").max_in_flight is None
    text = MINIMAL.replace("nodeId: peer2", "nodeId: peer2\nmaxInFlightPerPeer: 50")
    text = text.replace("authToken: other-secret", "authToken: other-secret\n    maxInFlight: 7")
    config = parse_config(text + "maxInFlightTotal: null\n", ENV)
    assert (config.max_in_flight_per_peer, config.max_in_flight_total) == (50, None)
    assert config.peer("peer3").max_in_flight == 7


def test_snake_case_names_are_accepted_in_python() -> None:
    peer = PeerConfig(id="p", auth_token=SecretStr("x"), credit_limit=5)
    config = NodeConfig(node_id="n", ilp_address="g.n", btp_server_port=0, peers=[peer])

    assert config.peers[0].credit_limit == 5


# --- interpolation ------------------------------------------------------------------------


def test_interpolation_reads_the_environment_inside_strings() -> None:
    text = MINIMAL.replace("url: ws://127.0.0.1:3003", "url: ws://${HOST:-localhost}:${PORT}")
    config = parse_config(text, {**ENV, "PORT": "4444"})

    assert config.peer("peer3").url == "ws://localhost:4444"


def test_interpolation_default_also_replaces_an_empty_value() -> None:
    text = MINIMAL.replace("btpServerPort: 3002", "btpServerPort: ${PORT:-3999}")

    assert parse_config(text, {**ENV, "PORT": ""}).btp_server_port == 3999


def test_interpolated_numbers_and_booleans_are_coerced() -> None:
    text = MINIMAL.replace("enableSettlement: true", "enableSettlement: ${ON}")
    text = text.replace("btpServerPort: 3002", "btpServerPort: ${PORT}")
    config = parse_config(text, {**ENV, "ON": "false", "PORT": "3010"})

    assert config.btp_server_port == 3010
    assert config.settlement is not None and config.settlement.enable_settlement is False


def test_unset_variable_names_variable_and_field() -> None:
    assert error_of(MINIMAL, {"TREASURY_EVM_PRIVATE_KEY": KEY}) == (
        "peers[0].authToken: environment variable TOKEN is not set"
    )


def test_double_dollar_is_a_literal() -> None:
    text = MINIMAL.replace("authToken: other-secret", "authToken: a$${B}c")

    assert parse_config(text, ENV).peer("peer3").auth_token.get_secret_value() == "a${B}c"


# --- every bad field reports its path -----------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("nodeId: peer2", "nodeId: peer 2", "nodeId: must be letters, digits"),
        ("ilpAddress: g.peer2", "ilpAddress: x.peer2", "ilpAddress: not a valid ILP address"),
        ("ilpAddress: g.peer2", "ilpAddress: g", "ilpAddress: not a valid ILP address"),
        ("btpServerPort: 3002", "btpServerPort: 70000", "btpServerPort: Input should be less"),
        (
            "btpServerPort: 3002",
            "btpServerPort: many",
            "btpServerPort: Input should be a valid integer",
        ),
        ("btpServerPort: 3002\n", "", "btpServerPort: Field required"),
        ("nodeId: peer2", "nodeId: peer2\nnodeID: typo", "nodeID: Extra inputs are not permitted"),
        (
            "  - id: peer1",
            "  - id: peer1\n    creditLimit: -1",
            "peers[0].creditLimit: Input should be greater than or equal to 0",
        ),
        (
            "  - id: peer1",
            "  - id: peer1\n    relation: boss",
            "peers[0].relation: Input should be 'peer', 'parent' or 'child'",
        ),
        (
            "  - id: peer1",
            "  - id: peer1\n    maxPacketAmount: 0",
            "peers[0].maxPacketAmount: Input should be greater than 0",
        ),
        (
            "  - id: peer1",
            "  - id: peer1\n    authTokn: x",
            "peers[0].authTokn: Extra inputs are not permitted",
        ),
        (
            "authToken: other-secret",
            'authToken: ""',
            "peers[1].authToken: must be at least 1 characters",
        ),
        (
            "ws://127.0.0.1:3003",
            "http://127.0.0.1:3003",
            "peers[1].url: must be a ws:// or wss:// URL",
        ),
        (
            '"0x90f79bf6eb2c4f870365e785982e1f101e93b906"',
            '"0x90f79"',
            "peers[1].evmAddress: not a valid EVM address",
        ),
        # Mixed case with a wrong checksum (last letter's case flipped).
        (
            '"0x90f79bf6eb2c4f870365e785982e1f101e93b906"',
            '"0x90F79bf6EB2c4f870365E785982E1f101E93b90"',
            "peers[1].evmAddress: not a valid EVM address",
        ),
        (
            '"0x90f79bf6eb2c4f870365e785982e1f101e93b906"',
            '"0x90F79bf6EB2c4f870365E785982E1f101E93B906"',
            "peers[1].evmAddress: not a valid EVM address",
        ),
        (
            '"0x90f79bf6eb2c4f870365e785982e1f101e93b906"',
            "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
            "peers[1].evmAddress: not a valid EVM address (quote it",
        ),
        ("  - id: peer3", "  - id: peer1", "peers[1].id: duplicate peer id 'peer1'"),
        ("  - id: peer3", "  - id: peer2", "peers[1].id: a peer cannot have this node's id"),
        (
            "{prefix: g.peer3, peer: peer3}",
            "{prefix: g.peer3, peer: peer9}",
            "routes[0].peer: unknown peer 'peer9'",
        ),
        (
            "{prefix: g.peer3, peer: peer3}",
            "{prefix: 'g.peer3.', peer: peer3}",
            "routes[0].prefix: not a valid ILP address prefix",
        ),
        (
            "rpcUrl: http://127.0.0.1:8545",
            "rpcUrl: 127.0.0.1:8545",
            "settlement.rpcUrl: must be an http(s)://",
        ),
        (
            "  rpcUrl: http://127.0.0.1:8545\n",
            "",
            "settlement.rpcUrl: required when enableSettlement is true",
        ),
        (
            "  deploymentFile: .demo/deployment.json\n",
            "",
            "settlement.deploymentFile: required when enableSettlement is true",
        ),
        (
            "enableSettlement: true",
            "enableSettlement: true\n  minDepositThreshold: 1.5",
            "settlement.minDepositThreshold: Input should be less than or equal to 1",
        ),
        (
            "enableSettlement: true",
            "enableSettlement: true\n  settlementThreshold: 0",
            "settlement.settlementThreshold: Input should be greater than 0",
        ),
        (
            "enableSettlement: true",
            "enableSettlement: true\n  privateKey: '0xabc'",
            "settlement.privateKey: not allowed in YAML; set privateKeyEnv instead",
        ),
        (
            "enableSettlement: true",
            "enableSettlement: true\n  registryAddress: '0x12'",
            "settlement.registryAddress: not a valid EVM address",
        ),
        (
            "token: admin-token-0123456789",
            "token: short",
            "admin.token: must be at least 16 characters",
        ),
        ("  port: 0", "  port: 0\n  tokn: x", "admin.tokn: Extra inputs are not permitted"),
        (
            "nodeId: peer2",
            "nodeId: peer2\nfeeBasisPoints: 10001",
            "feeBasisPoints: Input should be less than or equal to 10000",
        ),
        (
            "nodeId: peer2",
            "nodeId: peer2\nlogFormat: xml",
            "logFormat: Input should be 'console' or 'json'",
        ),
        (
            "nodeId: peer2",
            "nodeId: peer2\nreceiverSecret: tiny",
            "receiverSecret: must be at least 16 characters",
        ),
        (
            "nodeId: peer2",
            "nodeId: peer2\nmaxInFlightPerPeer: 0",
            "maxInFlightPerPeer: Input should be greater than 0",
        ),
        (
            "authToken: other-secret",
            "authToken: other-secret\n    maxInFlight: -1",
            "peers[1].maxInFlight: Input should be greater than 0",
        ),
    ],
)
def test_bad_field_reports_its_path(old: str, new: str, expected: str) -> None:
    assert old in MINIMAL
    message = error_of(MINIMAL.replace(old, new, 1))

    assert message.startswith(expected), message
    assert "\n" not in message


def test_explicit_contract_addresses_replace_the_deployment_file() -> None:
    text = MINIMAL.replace(
        "deploymentFile: .demo/deployment.json",
        "registryAddress: '0x5FbDB2315678afecb367f032d93F642f64180aa3'\n"
        "  tokenAddress: '0xe7f1725e7734ce288f8367e1bb143e90bb3f0512'",
    )
    settlement = parse_config(text, ENV).settlement

    assert settlement is not None and settlement.deployment_file is None
    assert settlement.token_address == "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def test_missing_key_names_the_configured_variable() -> None:
    text = MINIMAL.replace(
        "enableSettlement: true", "enableSettlement: true\n  privateKeyEnv: MY_KEY"
    )

    assert error_of(text) == (
        "settlement.privateKeyEnv: environment variable MY_KEY is not set"
        " (it must hold the treasury private key)"
    )


def test_malformed_key_is_rejected_without_echoing_it() -> None:
    secret = "0xnotakey-but-secret"
    message = error_of(MINIMAL, {"TOKEN": TOKEN, "TREASURY_EVM_PRIVATE_KEY": secret})

    assert message.startswith(
        "settlement.privateKeyEnv: environment variable TREASURY_EVM_PRIVATE_KEY is not a private key"
    )
    assert secret not in message


def test_yaml_problems_are_one_line() -> None:
    assert error_of("nodeId: [unclosed").startswith("config: not valid YAML at line")
    assert error_of("- a list") == "config: expected a mapping of settings at the top level"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


# --- secrets ------------------------------------------------------------------------------


def test_secrets_are_masked_in_repr_str_and_dumps() -> None:
    text = MINIMAL.replace("nodeId: peer2", "nodeId: peer2\nreceiverSecret: receiver-secret-0123")
    config = parse_config(text, ENV)

    rendered = [repr(config), str(config), str(config.model_dump()), config.model_dump_json()]
    for secret in (
        TOKEN,
        "other-secret",
        KEY,
        KEY[2:],
        "admin-token-0123456789",
        "receiver-secret-0123",
    ):
        for text_form in rendered:
            assert secret not in text_form
    assert config.settlement is not None
    assert config.settlement.private_key is not None
    assert config.settlement.private_key.get_secret_value() == KEY
    assert config.peer("peer1").auth_token.get_secret_value() == TOKEN


def test_bad_secret_values_never_appear_in_errors() -> None:
    secret = "a-secret-token-of-the-wrong-type"
    # A token that fails validation (wrong type) must not be echoed.
    text = MINIMAL.replace("authToken: other-secret", "authToken: [" + secret + "]")
    message = error_of(text)

    assert message.startswith("peers[1].authToken:")
    assert secret not in message


def test_config_error_hides_the_pydantic_error_chain() -> None:
    text = MINIMAL.replace("authToken: other-secret", "authToken: [leaky-secret]")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, ENV)

    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_settlement_config_rejects_missing_key_when_built_in_python() -> None:
    with pytest.raises(ValueError, match="TREASURY_EVM_PRIVATE_KEY is not set"):
        SettlementConfig(
            enable_settlement=True, rpc_url="http://x:1", deployment_file=Path("d.json")
        )


# --- CLI helper -----------------------------------------------------------------------------


def test_load_config_or_exit_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(MINIMAL.replace("ilpAddress: g.peer2", "ilpAddress: nope"))
    monkeypatch.setenv("TOKEN", TOKEN)
    monkeypatch.setenv("TREASURY_EVM_PRIVATE_KEY", KEY)

    with pytest.raises(SystemExit) as exited:
        load_config_or_exit(path)

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == "paychan: config error: ilpAddress: not a valid ILP address (RFC 0015)\n"


def test_load_config_or_exit_returns_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(MINIMAL)
    monkeypatch.setenv("TOKEN", TOKEN)
    monkeypatch.setenv("TREASURY_EVM_PRIVATE_KEY", KEY)

    assert load_config_or_exit(path).node_id == "peer2"


def test_ilp_address_longer_than_1023_characters_is_rejected() -> None:
    address = "g." + "a" * 1022
    assert error_of(MINIMAL.replace("ilpAddress: g.peer2", f"ilpAddress: {address}")) == (
        "ilpAddress: not a valid ILP address (RFC 0015)"
    )
    assert parse_config(MINIMAL.replace("ilpAddress: g.peer2", f"ilpAddress: {address[:-1]}"), ENV)


def test_a_bare_scheme_is_a_valid_default_route_prefix() -> None:
    text = MINIMAL.replace("{prefix: g.peer3, peer: peer3}", "{prefix: g, peer: peer3}")

    assert parse_config(text, ENV).routes[0].prefix == "g"
