"""``tranche bots``: manage bots while the system runs, through the signal service's HTTP API.

tranche bots list                 every bot with its status and revision
tranche bots show BOT             one bot's whole config (reads change nothing)
tranche bots create FILE          create the bots of FILE ([bots.<id>] tables, as in the bots file)
tranche bots set BOT FILE         replace BOT's config with FILE's [bots.BOT] table
tranche bots pause BOT            no new entries or adds; exits still act
tranche bots resume BOT
tranche bots remove BOT           refused while BOT holds a position

Writes need the operator's token: ``--token`` or ``TRANCHE_CONTROL_TOKEN`` (the kill switch's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from shared.catalog import CatalogError, read_toml
from tranche.safety_cli import _operator

DEFAULT_SIGNAL_URL = "http://127.0.0.1:8101"


class Refused(Exception):
    """One sentence for the operator; the command exits 1."""


def explain(response: httpx.Response) -> str:
    """The signal service's refusal as one sentence."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text[:300]
    if isinstance(detail, dict):
        return f"{detail.get('code')}: {detail.get('message')}"
    if isinstance(detail, list):  # FastAPI's validation errors, one per field
        problems = [
            ".".join(str(p) for p in item.get("loc", []) if p != "body") + f": {item.get('msg')}"
            for item in detail
        ]
        return "invalid bot: " + "; ".join(problems)
    return f"HTTP {response.status_code}: {detail}"


def call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"X-Tranche-Operator": args.operator, **kwargs.pop("headers", {})}
    if method != "GET":
        if not args.token:
            raise Refused(
                "changing bots needs the operator's token: --token or TRANCHE_CONTROL_TOKEN"
            )
        headers["Authorization"] = f"Bearer {args.token}"
    try:
        response = httpx.request(
            method, args.signal_url + path, headers=headers, timeout=10, **kwargs
        )
    except httpx.HTTPError as error:
        raise Refused(f"cannot reach the signal service at {args.signal_url}: {error}") from None
    if response.status_code >= 400:
        raise Refused(explain(response))
    return response.json()


def bots_in(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[bots.<id>]`` tables of a TOML file."""
    try:
        raw = read_toml(path)
    except CatalogError as error:
        raise Refused(str(error)) from None
    bots = raw.get("bots")
    if not isinstance(bots, dict) or not bots:
        raise Refused(f"{path} has no [bots.<id>] table")
    return bots


def line(bot: dict[str, Any]) -> str:
    config = bot["config"]
    return (
        f"{bot['bot_id']:<24} {bot['status']:<7} r{bot['revision'] or '-':<5} "
        f"{config['product_id']:<10} quote {config['quote_size']:<10} "
        f"position {bot['position']:<7} by {bot['changed_by'] or 'file'}"
    )


def show(args: argparse.Namespace, bot: dict[str, Any]) -> None:
    print(json.dumps(bot, indent=2) if args.json else line(bot))


def cmd_list(args: argparse.Namespace) -> None:
    bots = call(args, "GET", "/bots")
    if args.json:
        print(json.dumps(bots, indent=2))
    elif not bots:
        print("no bots")
    for bot in [] if args.json else bots:
        print(line(bot))


def cmd_show(args: argparse.Namespace) -> None:
    bot = call(args, "GET", f"/bots/{args.bot}")
    print(json.dumps(bot, indent=2))


def cmd_create(args: argparse.Namespace) -> None:
    for bot_id, config in bots_in(Path(args.file)).items():
        show(args, call(args, "POST", "/bots", json={"bot_id": bot_id, "config": config}))


def cmd_set(args: argparse.Namespace) -> None:
    bots = bots_in(Path(args.file))
    if args.bot not in bots:
        raise Refused(f"{args.file} has no [bots.{args.bot}] table")
    headers = {"If-Match": f'"{args.revision}"'} if args.revision is not None else {}
    show(args, call(args, "PUT", f"/bots/{args.bot}", json=bots[args.bot], headers=headers))


def cmd_pause(args: argparse.Namespace) -> None:
    show(args, call(args, "POST", f"/bots/{args.bot}/pause"))


def cmd_resume(args: argparse.Namespace) -> None:
    show(args, call(args, "POST", f"/bots/{args.bot}/resume"))


def cmd_remove(args: argparse.Namespace) -> None:
    headers = {"If-Match": f'"{args.revision}"'} if args.revision is not None else {}
    gone = call(args, "DELETE", f"/bots/{args.bot}", headers=headers)
    print(json.dumps(gone, indent=2) if args.json else f"removed {gone['bot_id']}")


def run(args: argparse.Namespace) -> int:
    try:
        args.action(args)
    except Refused as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``tranche bots ...`` to ``tranche``'s parser."""
    bots = commands.add_parser("bots", help="list, create, change, pause, resume, remove bots")
    actions = bots.add_subparsers(dest="bots_command", required=True)

    def action(name: str, handler: Any, help: str, *arguments: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help)
        for argument in arguments:
            parser.add_argument(argument)
        parser.add_argument(
            "--signal-url", default=os.environ.get("TRANCHE_SIGNAL_URL", DEFAULT_SIGNAL_URL)
        )
        parser.add_argument("--token", default=os.environ.get("TRANCHE_CONTROL_TOKEN"))
        parser.add_argument("--operator", default=_operator(), help="who asks (for the record)")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=run, action=handler)
        return parser

    action("list", cmd_list, "every bot with its status")
    action("show", cmd_show, "one bot's config and status", "bot")
    action("create", cmd_create, "create the bots of a TOML file", "file")
    changed = action("set", cmd_set, "replace a bot's config from a TOML file", "bot", "file")
    changed.add_argument("--revision", type=int, help="refuse if the bot is not at this revision")
    action("pause", cmd_pause, "pause a bot (no entries or adds)", "bot")
    action("resume", cmd_resume, "resume a paused bot", "bot")
    gone = action("remove", cmd_remove, "remove a bot (refused while it holds a position)", "bot")
    gone.add_argument("--revision", type=int, help="refuse if the bot is not at this revision")
