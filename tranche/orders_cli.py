"""The operator's order commands, added to ``tranche`` by :func:`register`.

tranche orders [list]                 recent orders with their status and why each ended
tranche orders resolve CID --as cancelled|filled --reason TEXT [--size --price --fee]
                                      settle an order the exchange lost (unknown_at_exchange)

Both talk to the executor's HTTP API; ``resolve`` needs TRANCHE_CONTROL_TOKEN (the executor's),
and is audited: the final order event and the executor's record carry who and why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from tranche.safety_cli import _operator

DEFAULT_EXECUTOR_URL = "http://127.0.0.1:8103"


def cmd_list(args: argparse.Namespace) -> int:
    try:
        answer = httpx.get(f"{args.executor_url}/orders", params={"limit": args.limit}, timeout=10)
    except httpx.HTTPError as error:
        print(
            f"orders: the executor at {args.executor_url} is unreachable: {error}", file=sys.stderr
        )
        return 2
    if answer.status_code != 200:
        print(f"orders: the executor answered {answer.status_code}: {answer.text}", file=sys.stderr)
        return 2
    orders: list[dict[str, Any]] = answer.json()
    if args.json:
        print(json.dumps(orders, indent=2))
        return 0
    for order in orders:
        reason = order.get("reason") or {}
        why = (
            f"{reason['code']}: {reason['message']}" if reason else (order.get("last_error") or "")
        )
        print(
            f"{order['client_order_id']}  {order['bot_id']}  {order['mode']}  {order['action']} "
            f"{order['side']}  {order['status']}  filled {order['filled_size']}"
            + (f"  -- {why}" if why else "")
        )
    if not orders:
        print("no orders yet")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    if not args.token:
        print("orders resolve: set TRANCHE_CONTROL_TOKEN (or --token)", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"as": args.settled_as, "reason": args.reason, "operator": args.operator}
    for name in ("size", "price", "fee"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    try:
        answer = httpx.post(
            f"{args.executor_url}/orders/{args.client_order_id}/resolve",
            json=body,
            headers={"Authorization": f"Bearer {args.token}"},
            timeout=10,
        )
    except httpx.HTTPError as error:
        print(f"orders resolve: the executor is unreachable: {error}", file=sys.stderr)
        return 2
    if answer.status_code != 200:
        detail = (
            answer.json().get("detail")
            if answer.headers.get("content-type", "").startswith("application/json")
            else answer.text
        )
        print(f"orders resolve: refused ({answer.status_code}): {detail}", file=sys.stderr)
        return 1
    print(f"{args.client_order_id} settled as {args.settled_as}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``tranche orders ...`` to ``tranche``'s parser."""
    orders = commands.add_parser("orders", help="list orders, settle one the exchange lost")
    orders.add_argument(
        "--executor-url", default=os.environ.get("TRANCHE_EXECUTOR_URL", DEFAULT_EXECUTOR_URL)
    )
    orders.add_argument("--limit", type=int, default=50)
    orders.add_argument("--json", action="store_true")
    orders.set_defaults(run=cmd_list)
    actions = orders.add_subparsers(dest="orders_command")
    listing = actions.add_parser("list", help="recent orders with their status and reasons")
    listing.set_defaults(run=cmd_list)
    resolve = actions.add_parser(
        "resolve", help="settle an order the exchange lost (unknown_at_exchange), audited"
    )
    resolve.add_argument("client_order_id")
    resolve.add_argument("--as", dest="settled_as", choices=["cancelled", "filled"], required=True)
    resolve.add_argument("--reason", required=True, help="what you checked, for the record")
    resolve.add_argument("--size", help="filled: the base size not yet booked")
    resolve.add_argument("--price", help="filled: the average fill price")
    resolve.add_argument("--fee", help="filled: the fee paid, quote currency")
    resolve.add_argument("--token", default=os.environ.get("TRANCHE_CONTROL_TOKEN"))
    resolve.add_argument("--operator", default=_operator(), help="who settles it (the record)")
    resolve.set_defaults(run=cmd_resolve)
