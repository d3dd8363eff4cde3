"""`paychan send --config FILE DESTINATION AMOUNT`: one test payment from a running node.

It asks the node's admin API (`POST /admin/payments`, bearer token from the config's
`admin.token`) to send a Prepare for AMOUNT base units to DESTINATION, and prints whether it
was fulfilled, or the Reject's code, message and the address that triggered it. The payment
is the node's own packet, so it goes through routing, balances and the next hops like any
other; the node whose ILP address is DESTINATION fulfils it (a test payment needs no
credentials, see connector/services/local.py, so keep amounts small).

Exit codes: 0 fulfilled; 1 rejected, node unreachable or refused; 2 usage or config error
(no `admin` section, `admin.port` 0, an invalid ILP address, a token the node refuses).
The admin token is sent in a header only and never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from pydantic import ValidationError

from connector.codec.address import is_valid_address
from connector.config import NodeConfig, load_config_or_exit
from connector.http import PaymentRequest, PaymentResult

# The node waits up to the payment's expiry (30 s) for an answer; leave it room to reply.
HTTP_TIMEOUT_SECONDS = 40.0
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class CommandError(Exception):
    """A one-line failure with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def admin_payments_url(config: NodeConfig) -> str:
    """Where the node's admin API takes payments, from its config."""
    admin = config.admin
    if admin is None:
        raise CommandError(f"node {config.node_id} has no admin section: no admin API", 2)
    if admin.port == 0:
        raise CommandError("admin.port is 0 (any free port): set a fixed port to reach it", 2)
    host = "127.0.0.1" if admin.host in WILDCARD_HOSTS else admin.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{admin.port}/admin/payments"


def describe_result(destination: str, amount: int, result: PaymentResult) -> str:
    if result.fulfilled:
        return f"fulfilled: {amount} to {destination} (fulfillment {result.fulfillment})"
    by = f" by {result.triggered_by}" if result.triggered_by else ""
    message = f": {result.message}" if result.message else ""
    return f"rejected: {amount} to {destination}, {result.code}{by}{message}"


def post_payment(url: str, token: str, request: PaymentRequest) -> PaymentResult:
    body = json.dumps(request.to_json()).encode()
    http_request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(http_request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return PaymentResult.model_validate_json(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise CommandError(f"the node refused admin.token ({url}: 401)", 2) from None
        detail = _error_text(exc)
        raise CommandError(f"the node refused the payment ({exc.code}: {detail})", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach the node's admin API at {url}: {reason}", 1) from None
    except ValidationError:
        raise CommandError(f"{url} did not answer with a payment result", 1) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


def send_command(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, need_private_key=False)
    try:
        if not is_valid_address(args.destination):
            raise CommandError(f"not a valid ILP address: {args.destination!r}", 2)
        try:
            request = PaymentRequest(destination=args.destination, amount=args.amount)
        except ValidationError:
            raise CommandError(f"amount must be 0 .. 2^64-1, not {args.amount}", 2) from None
        url = admin_payments_url(config)
        assert config.admin is not None
        result = post_payment(url, config.admin.token.get_secret_value(), request)
    except CommandError as exc:
        print(f"paychan send: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(describe_result(args.destination, args.amount, result))
    return 0 if result.fulfilled else 1
