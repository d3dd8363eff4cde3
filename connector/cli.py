"""`paychan`: the one console entry point.

Exit codes: 0 ok, 2 usage or config error, 1 runtime failure. Each subcommand imports its
implementation lazily so `paychan --help` stays fast and light.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paychan",
        description="Interledger connector with EVM payment channels provisioned by Temporal.",
        epilog="Exit codes: 0 ok, 2 usage or config error, 1 runtime failure. "
        "`paychan COMMAND --help` describes each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_chain_commands(commands)
    _add_channel_commands(commands)
    _add_connector_command(commands)
    _add_worker_command(commands)
    _add_demo_command(commands)
    _add_send_command(commands)
    _add_config_reference_command(commands)
    return parser


def _add_send_command(commands: argparse._SubParsersAction) -> None:
    send = commands.add_parser(
        "send",
        help="send a test payment from a running node (its admin API) and show the answer",
        description="Ask the node's admin API (POST /admin/payments, admin.host/port/token "
        "from the config) to send AMOUNT base units to DESTINATION, and print whether it was "
        "fulfilled, or the Reject's code, message and triggering address. Exit 0 fulfilled, "
        "1 rejected or node unreachable, 2 usage or config error (no admin section, "
        "admin.port 0, invalid ILP address, token refused).",
    )
    send.add_argument("destination", metavar="DESTINATION", help="ILP address, e.g. g.peer5")
    send.add_argument("amount", metavar="AMOUNT", type=int, help="base units (0 .. 2^64-1)")
    send.add_argument("--config", type=Path, required=True, help="the sending node's YAML config")
    send.add_argument(
        "--json", action="store_true", help="print the payment result as JSON (PaymentResult)"
    )
    send.set_defaults(run=_run_send)


def _run_send(args: argparse.Namespace) -> int:
    from connector.payment_command import send_command

    return send_command(args)


def _add_config_reference_command(commands: argparse._SubParsersAction) -> None:
    reference = commands.add_parser(
        "config-reference",
        help="print the YAML config reference (Markdown), generated from the pydantic models",
        description="One Markdown table per config section: YAML key, type and limits, "
        "default, description. With --write FILE, replace the block between the "
        "config-reference markers in FILE (the README's) instead of printing. Exit 2 when "
        "FILE has no markers, 1 when it cannot be written.",
    )
    reference.add_argument(
        "--write", type=Path, metavar="FILE", help="update the marked block of FILE in place"
    )
    reference.set_defaults(run=_run_config_reference)


def _run_config_reference(args: argparse.Namespace) -> int:
    from connector.config_reference import config_reference_command

    return config_reference_command(args)


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="Temporal dev server + anvil + contracts + the 5-node line; channels READY, then traffic",
        description="Start the Temporal dev server with its web UI, anvil (--block-time 1), "
        "deploy the contracts, fund five wallets and run the 5-node line peer1..peer5 from "
        "examples/ as connector processes. Wait until every link's channel is READY on both "
        "ends, then send payments peer1 -> peer5, showing a live status table (links, stages, "
        "channels, deposits, balances, claims) and the URLs of the Temporal UI and each "
        "node's /health and /metrics. Ctrl-C stops everything it started. Fixed ports "
        "(7233, 8233, 8545, 3001-3005, 8081-8085, 9091-9095) when free. Exit 1 when a "
        "process fails or channels are not READY in time.",
    )
    demo.add_argument("--workdir", type=Path, default=Path(".demo"), help="state and logs")
    demo.add_argument(
        "--payments", type=int, default=100, help="payments of 50,000 peer1 -> peer5 (100)"
    )
    demo.add_argument(
        "--exit-after-traffic", action="store_true", help="stop once the payments are answered"
    )
    demo.add_argument(
        "--any-ports",
        action="store_true",
        help="pick free ports instead of the fixed ones (several demos, or ports in use)",
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from connector.demo import demo_command

    return demo_command(args)


def _add_worker_command(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "worker",
        help="run the node's provisioning workers apart from its connector (several may run)",
        description="Poll the node's provisioning-<nodeId> and wallet-<nodeId> task queues "
        "(channel workflows, wallet sequencer, chain activities) until SIGTERM/SIGINT; set "
        "temporal.runWorker: false in the connector's config when workers run this way. "
        "Needs the treasury key (settlement.privateKeyEnv). Exit 2 on a bad config "
        "(settlement disabled, unreadable deployment), 1 when Temporal or the chain cannot "
        "be reached.",
    )
    worker.add_argument("--config", type=Path, required=True, help="node YAML config")
    worker.set_defaults(run=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from worker.command import worker_command

    return worker_command(args)


def _add_connector_command(commands: argparse._SubParsersAction) -> None:
    connector = commands.add_parser(
        "connector",
        help="run an ILP connector node until SIGTERM/SIGINT",
        description="Run one node: BTP server and clients, routing, balances (SQLite), "
        "health (/health, /metrics) and admin HTTP, and, with settlement enabled, channel "
        "provisioning on every authenticated peer link (plus its worker unless "
        "temporal.runWorker is false). Exit 2 on a bad config (one line naming the field), 1 "
        "when it cannot start, 0 after a clean shutdown.",
    )
    connector.add_argument("--config", type=Path, required=True, help="node YAML config")
    connector.set_defaults(run=_run_connector)


def _run_connector(args: argparse.Namespace) -> int:
    from connector.node_command import connector_command

    return connector_command(args)


def _add_chain_commands(commands: argparse._SubParsersAction) -> None:
    key_help = "environment variable holding the sending private key (never pass keys as arguments)"
    deploy = commands.add_parser(
        "deploy",
        help="deploy TokenNetworkRegistry, M2M token and its TokenNetwork; write deployment JSON",
        description="Deploy the contracts from contracts/build with the key in --key-env and "
        "write their addresses, chain id and block to --out (settlement.deploymentFile). "
        "Exit 2 for a missing or malformed key, 1 for an unreachable RPC, an unfunded key or "
        "a reverted transaction.",
    )
    deploy.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint")
    deploy.add_argument("--key-env", default="PAYCHAN_DEPLOYER_KEY", help=key_help)
    deploy.add_argument("--out", type=Path, default=Path("deployment.json"), help="JSON to write")
    deploy.set_defaults(run=_run_deploy)

    fund = commands.add_parser(
        "fund",
        help="send ETH and mint M2M to addresses (dev/test chains)",
        description="From the key in --key-env, send --eth ETH to each ADDRESS and mint it "
        "--m2m M2M with the test token's faucet (dev and test chains only). Exit 2 for a bad "
        "key, amount, address or deployment file, 1 for an unreachable RPC or a revert.",
    )
    fund.add_argument("addresses", nargs="+", metavar="ADDRESS", help="0x... addresses to fund")
    fund.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint")
    fund.add_argument(
        "--deployment",
        type=Path,
        default=Path("deployment.json"),
        help="deployment JSON written by `paychan deploy` (default deployment.json)",
    )
    fund.add_argument("--key-env", default="PAYCHAN_DEPLOYER_KEY", help=key_help)
    fund.add_argument("--eth", default="1", help="ETH per address (decimal, default 1)")
    fund.add_argument("--m2m", default="1000", help="M2M per address (decimal, default 1000)")
    fund.set_defaults(run=_run_fund)


def _run_deploy(args: argparse.Namespace) -> int:
    from connector.chain_commands import deploy_command

    return deploy_command(args)


def _run_fund(args: argparse.Namespace) -> int:
    from connector.chain_commands import fund_command

    return fund_command(args)


def _add_channel_commands(commands: argparse._SubParsersAction) -> None:
    config_help = "node YAML config (the treasury key is not needed)"
    channels = commands.add_parser(
        "channels",
        help="table of this node's peers: stage, channel, deposits, last error, shortfall",
        description="Each configured peer's channel workflow (NOT_STARTED when it never "
        "connected) and any other running one of this node: stage, channel id, our/their "
        "deposit and target in token units, last error, and what to fund when AWAITING_FUNDS. "
        "Live from each workflow's status query; '(no worker)' when no worker of the node "
        "answers, with stage and channel from search attributes. Exit 1 when Temporal is "
        "unreachable. See docs/operations.md.",
    )
    channels.add_argument("--config", type=Path, required=True, help=config_help)
    channels.add_argument(
        "--json", action="store_true", help="JSON document (full channel ids, wei strings)"
    )
    channels.add_argument(
        "--query-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="wait this long for a worker to answer each status query (default 3)",
    )
    channels.set_defaults(run=_run_channels)

    retry = commands.add_parser(
        "retry",
        help="signal `retry` to a peer's channel workflow (after funding, or after FAILED)",
        description="Send the retry signal to channel/<node>/<peer>/<token> (token: the "
        "peer's first preferredTokens entry), as the Temporal UI's Send a Signal does. It acts "
        "in AWAITING_FUNDS and FAILED. Exit 2 for an unknown peer, 1 when the workflow does "
        "not exist or is not running.",
    )
    retry.add_argument("peer", help="peer id from the config")
    retry.add_argument("--config", type=Path, required=True, help=config_help)
    retry.set_defaults(run=_run_retry)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a peer's channel workflow (Temporal cancellation; it stops cleanly)",
        description="Request Temporal cancellation of channel/<node>/<peer>/<token>, as the "
        "Temporal UI's Request Cancellation does, and wait for it to stop. The channel and its "
        "deposits stay on-chain; a new run starts, and adopts them, when the peer next "
        "connects. Exit 2 for an unknown peer, 1 when the workflow does not exist or is not "
        "running.",
    )
    cancel.add_argument("peer", help="peer id from the config")
    cancel.add_argument("--config", type=Path, required=True, help=config_help)
    cancel.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for the workflow to stop (default 10)",
    )
    cancel.set_defaults(run=_run_cancel)

    close = commands.add_parser(
        "close",
        help="close a peer's READY channel and settle it (unilateral or --cooperative)",
        description="Send the close signal to channel/<node>/<peer>/<token>. Unilateral: "
        "closeChannel with the best claim the peer signed, then settleChannel once the settle "
        "window (in blocks) is over. --cooperative: both sides sign the final balances and one "
        "cooperativeSettle pays them at once; if the peer declines or does not answer, the "
        "close goes unilateral. The workflow ends SETTLED with the payout; the next connect "
        "opens a new channel. Exit 2 for an unknown peer, 1 when the workflow is not running "
        "or has no READY channel.",
    )
    close.add_argument("peer", help="peer id from the config")
    close.add_argument("--config", type=Path, required=True, help=config_help)
    close.add_argument(
        "--cooperative",
        action="store_true",
        help="ask the peer to sign a cooperative settle (no settle window)",
    )
    close.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="follow the close this long and print the stage or payout (default 0)",
    )
    close.set_defaults(run=_run_close)


def _run_channels(args: argparse.Namespace) -> int:
    from connector.channel_commands import channels_command

    return channels_command(args)


def _run_retry(args: argparse.Namespace) -> int:
    from connector.channel_commands import retry_command

    return retry_command(args)


def _run_close(args: argparse.Namespace) -> int:
    from connector.channel_commands import close_command

    return close_command(args)


def _run_cancel(args: argparse.Namespace) -> int:
    from connector.channel_commands import cancel_command

    return cancel_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


def entry() -> None:
    """The console script (and `python -m connector.cli`): run, flush, leave without finalizing.

    A Temporal client's Rust threads outlive the command; finalizing the interpreter under them
    aborts the process about one time in eight (SIGABRT, "PyGILState_Release: thread state ...
    must be current when releasing", temporalio/sdk-python#300) after the command succeeded.
    Every command closes what it opened before returning, so there is nothing left to finalize.
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
