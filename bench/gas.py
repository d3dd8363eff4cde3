"""Gas used by each TokenNetwork operation, measured on a fresh real anvil.

    .venv/bin/python bench/gas.py            # print the table
    .venv/bin/python bench/gas.py --write    # and update the "## Gas" section of BENCHMARKS.md

Gas is deterministic for a given compiler output, so the figures only change when the
contracts do. Where storage temperature matters (first deposit into the contract, first
channel of a pair) both cases are measured; the tx builders' fixed limits in
`activities/token_network.py` (GasLimit) must stay above the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities import token_network as tn
from activities.balance_proof import (
    BalanceProof,
    CooperativeSettle,
    WithdrawProof,
    sign_balance_proof,
    sign_cooperative_settle,
    sign_withdraw_proof,
)
from activities.deployment import deploy
from connector.devstack import ANVIL_KEYS, run_anvil

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
COMMAND = ".venv/bin/python bench/gas.py --write"
SETTLE_TIMEOUT = 5
# Targets from the TypeScript original (issue 2).
TARGETS = {"open channel": 150_000, "deposit (first, contract already holds tokens)": 80_000}


@dataclass(frozen=True)
class Measurement:
    operation: str
    gas_used: int
    limit: int | None
    needs: int | None = None


class GasBench:
    def __init__(self, w3: AsyncWeb3, deployment: tn.Deployment) -> None:
        self.w3 = w3
        self.d = deployment
        self.results: list[Measurement] = []
        self._accounts = 0

    async def measure(
        self, operation: str, account: LocalAccount, tx: tn.UnsignedTx, limit: int | None = None
    ) -> None:
        # The limit must cover gas *before* refunds (cleared storage), which gasUsed hides.
        needs = await self.w3.eth.estimate_gas({**tx, "from": account.address})
        receipt = await tn.send_and_wait(self.w3, account, tx)
        self.results.append(Measurement(operation, receipt["gasUsed"], limit or tx["gas"], needs))

    async def account(self) -> LocalAccount:
        # Fixed keys on a fresh chain: calldata (zero bytes in addresses) and so gas repeat.
        self._accounts += 1
        account = Account.from_key(keccak(text=f"paychan gas bench {self._accounts}"))
        await self.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        return account

    def sign(self, key: bytes, message: BalanceProof) -> bytes:
        return sign_balance_proof(key, message, self.d.chain_id, self.d.token_network)

    async def run(self) -> None:
        d = self.d
        a, b = await self.account(), await self.account()
        await self.measure("mint (faucet)", a, tn.build_mint(d, a.address, 10**24))
        await tn.send_and_wait(self.w3, b, tn.build_mint(d, b.address, 10**24))
        await self.measure("approve", a, tn.build_approve(d, 10**24))
        await tn.send_and_wait(self.w3, b, tn.build_approve(d, 10**24))

        channel = await tn.next_channel_id(self.w3, d, a.address, b.address)
        await self.measure("open channel", a, tn.build_open_channel(d, b.address, SETTLE_TIMEOUT))
        await self.measure(
            "deposit (first into an empty contract)",
            a,
            tn.build_set_total_deposit(d, channel, a.address, 1000),
        )
        await self.measure(
            "deposit (first, contract already holds tokens)",
            b,
            tn.build_set_total_deposit(d, channel, b.address, 1000),
        )
        await self.measure(
            "deposit (top-up)", a, tn.build_set_total_deposit(d, channel, a.address, 1500)
        )

        expiration = await self.w3.eth.block_number + 100
        withdraw = WithdrawProof(
            channel_id=channel, participant=a.address, total_withdraw=100, expiration=expiration
        )
        partner_sig = sign_withdraw_proof(b.key, withdraw, d.chain_id, d.token_network)
        await self.measure("withdraw", a, tn.build_withdraw(d, withdraw, partner_sig))

        proof_b = BalanceProof(channel_id=channel, nonce=3, transferred_amount=200)
        await self.measure(
            "close channel (with partner proof)",
            a,
            tn.build_close_channel(d, channel, proof_b, self.sign(b.key, proof_b)),
        )
        proof_a = BalanceProof(channel_id=channel, nonce=5, transferred_amount=300)
        await self.measure(
            "update non-closing balance proof",
            b,
            tn.build_update_non_closing(d, proof_a, self.sign(a.key, proof_a)),
        )
        await self.w3.provider.make_request("anvil_mine", [hex(SETTLE_TIMEOUT + 1)])
        await self.measure("settle channel", b, tn.build_settle(d, channel))

        second = await tn.next_channel_id(self.w3, d, a.address, b.address)
        await self.measure(
            "open channel (pair reopens after settle)",
            b,
            tn.build_open_channel(d, a.address, SETTLE_TIMEOUT),
        )
        await tn.send_batch(
            self.w3,
            a,
            [tn.build_set_total_deposit(d, second, a.address, 1000)],
        )
        await self.measure("close channel (no proof)", b, tn.build_close_channel(d, second))

        # Worst cases for settlement: payees whose token balance is zero before the payout.
        f, g = await self.account(), await self.account()
        await tn.send_batch(
            self.w3, f, [tn.build_mint(d, f.address, 2000), tn.build_approve(d, 2000)]
        )
        fourth = await tn.next_channel_id(self.w3, d, f.address, g.address)
        await tn.send_batch(
            self.w3,
            f,
            [
                tn.build_open_channel(d, g.address, SETTLE_TIMEOUT),
                tn.build_set_total_deposit(d, fourth, f.address, 1000),
                tn.build_set_total_deposit(d, fourth, g.address, 1000),
                tn.build_close_channel(d, fourth),
            ],
        )
        await self.w3.provider.make_request("anvil_mine", [hex(SETTLE_TIMEOUT + 1)])
        await self.measure("settle channel (payees hold no tokens)", g, tn.build_settle(d, fourth))

        c, e = await self.account(), await self.account()
        await tn.send_batch(
            self.w3, c, [tn.build_mint(d, c.address, 1500), tn.build_approve(d, 1500)]
        )
        third = await tn.next_channel_id(self.w3, d, c.address, e.address)
        await tn.send_batch(
            self.w3,
            c,
            [
                tn.build_open_channel(d, e.address, SETTLE_TIMEOUT),
                tn.build_set_total_deposit(d, third, c.address, 1000),
                tn.build_set_total_deposit(d, third, e.address, 500),
            ],
        )
        settlement = CooperativeSettle.between(third, {c.address: 900, e.address: 600})
        sig_c = sign_cooperative_settle(c.key, settlement, d.chain_id, d.token_network)
        sig_e = sign_cooperative_settle(e.key, settlement, d.chain_id, d.token_network)
        first_sig, second_sig = (
            (sig_c, sig_e) if settlement.participant1 == c.address else (sig_e, sig_c)
        )
        await self.measure(
            "cooperative settle (payees hold no tokens)",
            e,
            tn.build_cooperative_settle(d, settlement, first_sig, second_sig),
        )


async def deploy_gas(w3: AsyncWeb3) -> tuple[tn.Deployment, list[Measurement]]:
    deployer = Account.from_key(ANVIL_KEYS[0])
    deployment = await deploy(w3, deployer)
    results = []
    for number, (operation, limit) in enumerate(
        [
            ("deploy M2MToken", tn.GasLimit.DEPLOY_TOKEN),
            ("deploy TokenNetworkRegistry", tn.GasLimit.DEPLOY_REGISTRY),
            ("createTokenNetwork", tn.GasLimit.CREATE_TOKEN_NETWORK),
        ]
    ):
        block = await w3.eth.get_block(deployment.deployed_block + number, full_transactions=True)
        receipt = await w3.eth.get_transaction_receipt(block["transactions"][0]["hash"])
        results.append(Measurement(operation, receipt["gasUsed"], limit))
    return deployment, results


async def measure_all() -> list[Measurement]:
    with run_anvil() as anvil:
        w3 = AsyncWeb3(AsyncHTTPProvider(anvil.url))
        try:
            deployment, results = await deploy_gas(w3)
            bench = GasBench(w3, deployment)
            await bench.run()
            return bench.results + results
        finally:
            await w3.provider.disconnect()


def render(results: list[Measurement]) -> str:
    lines = [
        "| operation | gas used | limit needed | builder limit | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results:
        target = TARGETS.get(m.operation)
        lines.append(
            f"| {m.operation} | {m.gas_used:,} | "
            + (f"{m.needs:,}" if m.needs else "")
            + f" | {m.limit:,} | "
            + (f"< {target:,}" if target else "")
            + " |"
        )
    return "\n".join(lines)


def section(results: list[Measurement]) -> str:
    today = datetime.date.today().isoformat()
    return (
        "## Gas\n\n"
        "Gas per TokenNetwork operation on a fresh anvil, sent through the Python tx builders.\n"
        'Gas is deterministic: the figures change only when the contracts do. "limit needed"\n'
        'is `eth_estimateGas` (gas before refunds of cleared storage); "builder limit" is the\n'
        "fixed limit of `GasLimit` in `activities/token_network.py`, which lets provisioning\n"
        "pipeline approve + open + deposit in one block without estimating.\n\n"
        f"Command: `{COMMAND}` · machine `2-core` · {today} · solc-js 0.8.37, optimizer\n"
        "10,000 runs, evm `cancun`\n\n" + render(results) + "\n"
    )


def write_section(text: str, path: Path = BENCHMARKS) -> None:
    current = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nFigures measured by the `bench/` scripts.\n"
    )
    pattern = re.compile(r"^## Gas\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = asyncio.run(measure_all())
    print(render(results))
    over = [m for m in results if m.limit is not None and (m.needs or m.gas_used) > m.limit]
    missed = [m for m in results if m.operation in TARGETS and m.gas_used >= TARGETS[m.operation]]
    if args.write:
        write_section(section(results))
        print(f"updated {BENCHMARKS}")
    for m in over:
        print(
            f"gas used {m.gas_used} exceeds the builder limit {m.limit}: {m.operation}",
            file=sys.stderr,
        )
    for m in missed:
        print(f"missed target: {m.operation} used {m.gas_used}", file=sys.stderr)
    return 1 if over or missed else 0


if __name__ == "__main__":
    sys.exit(main())
