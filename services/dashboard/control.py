"""Halt and resume, forwarded to safety's kill switch with the operator's own token.

The page sends the token it holds (typed in by the operator, kept in the tab's sessionStorage)
as ``Authorization: Bearer …`` with each click; this module passes that header on to safety's
``POST /halt`` or ``POST /resume`` and forgets it. The dashboard stores, logs and counts no token
(DESIGN.md, promise 7): safety alone decides whether it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import ValidationError

from shared.contracts import SafetyCommandResult

Command = Literal["halt", "halt-cancel-stops", "resume"]
"""``halt-cancel-stops``: a halt that cancels the protective stops on the exchange too, as
``tranche halt --cancel-stops`` does; a plain halt keeps them (they only reduce risk)."""
OPERATOR = "dashboard"


@dataclass(frozen=True)
class Outcome:
    """What to tell the operator: the HTTP status for the page, a sentence, and safety's answer
    when there was one."""

    status: int
    message: str
    result: SafetyCommandResult | None = None


async def forward(
    client: httpx.AsyncClient,
    safety_url: str,
    command: Command,
    bot_id: str | None,
    authorization: str | None,
) -> Outcome:
    """Ask safety to ``command`` one bot (or everything when ``bot_id`` is ``None``)."""
    target = f"bot {bot_id}" if bot_id else "all bots"
    if not authorization or not authorization.removeprefix("Bearer ").strip():
        return Outcome(401, "enter the safety token first: without it the page is read-only")
    body: dict[str, object] = {
        "bot_id": bot_id, "operator": OPERATOR, "reason": f"{command} from the dashboard",
    }  # fmt: skip
    if command == "halt-cancel-stops":
        command, body["cancel_stops"] = "halt", True
    try:
        response = await client.post(
            f"{safety_url}/{command}",
            json=body,
            headers={"Authorization": authorization},
            timeout=5,
        )
    except httpx.HTTPError as error:
        return Outcome(502, f"safety unreachable at {safety_url}: {type(error).__name__}")
    if response.status_code == 401:
        return Outcome(401, "safety refused the token: nothing was changed")
    if response.status_code != 200:
        detail = response.text[:200]
        return Outcome(502, f"safety answered {response.status_code} for {target}: {detail}")
    try:
        result = SafetyCommandResult.model_validate_json(response.content)
    except ValidationError:
        return Outcome(502, f"safety's answer for {target} was not a command result")
    return Outcome(200 if result.ok else 409, f"{result.code}: {result.message}", result)
