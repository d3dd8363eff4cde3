"""channel_params_from_config: the keeping rules each peer's workflow gets from the YAML."""

from __future__ import annotations

from eth_account import Account

from activities.token_network import Deployment
from connector.config import parse_config
from connector.provisioning import KEEP_CHECK_MAX_SECONDS, channel_params_from_config
from worker.run import ChainContext

KEY = "0x" + "42" * 32
DEPLOYMENT = Deployment(
    chain_id=31337,
    registry="0x" + "01" * 20,
    token="0x" + "02" * 20,
    token_network="0x" + "03" * 20,
    deployed_block=1,
)


def params_for(settlement: str) -> dict:
    config = parse_config(
        f"""
nodeId: n1
ilpAddress: g.n1
btpServerPort: 0
peers:
  - id: p1
    authToken: token-p1
    evmAddress: "0x{"aa" * 20}"
settlement:
  enableSettlement: true
  settlementThreshold: 1000
  rpcUrl: http://127.0.0.1:8545
  deploymentFile: deployment.json
{settlement}
""",
        environ={"TREASURY_EVM_PRIVATE_KEY": KEY},
    )
    chain = ChainContext("n1", None, Account.from_key(KEY), DEPLOYMENT, 500)  # type: ignore[arg-type]
    return channel_params_from_config(config, chain)


def test_defaults_top_up_at_half_the_target_idle_close_after_a_day() -> None:
    params = params_for("")["p1"]
    assert params.deposit_target == 10_000
    assert params.top_up_below == 5_000
    assert params.idle_close_seconds == 86_400
    # 500 blocks of 2 s: read at least three times per settle window.
    assert params.keep_check_seconds == 500 * 2 / 3
    assert params.seconds_per_block == 2.0


def test_keeping_follows_the_settlement_section() -> None:
    settlement = "\n".join(
        f"  {line}"
        for line in (
            "minDepositThreshold: 0.3",
            "idleCloseSeconds: 0",
            "settleTimeout: 100000",
            "blockTimeSeconds: 12",
        )
    )
    params = params_for(settlement)["p1"]
    assert params.top_up_below == 3_000
    assert params.idle_close_seconds == 0
    assert params.keep_check_seconds == KEEP_CHECK_MAX_SECONDS
    assert params.seconds_per_block == 12.0
