"""Bots over HTTP: list, read, create, change, pause, resume, remove.

Reads are open and change nothing (no evaluation, no timer moves). Writes need the operator's
bearer token (``TRANCHE_CONTROL_TOKEN``, the same as safety's kill switch) and go through
:class:`services.signal.registry.BotRegistry`: validated, stored in the ``tranche_bots`` bucket
with a compare-and-set on the revision, announced on ``tranche.bots.changed``.

Optimistic concurrency: ``GET /bots/{id}`` answers with ``ETag: "<revision>"``; a ``PUT`` or
``DELETE`` with ``If-Match: "<revision>"`` is refused with 409 when the bot has moved on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from pydantic import BaseModel

from services.signal.registry import BotError, BotRegistry
from shared.bots import BotState
from shared.catalog import Bot
from shared.contracts import BotChange, BotStatus, Contract, Token
from shared.http import answers

PositionStatus = Literal["open", "flat", "unknown"]
Operator = Annotated[str, Header(alias="X-Tranche-Operator", max_length=64)]
"""Who asks, for the record and the announcement (``tranche bots`` sends the user name)."""


class NewBot(Contract):
    bot_id: Token
    config: Bot


class BotView(BaseModel):
    bot_id: str
    status: BotStatus
    revision: int | None
    """The bot's revision in the bucket (send it back as If-Match); none: only in the file."""
    config: Bot
    change: BotChange | None
    changed_at: datetime | None
    changed_by: str | None
    position: PositionStatus
    """What the positions bucket says (``unknown`` until it has been read)."""
    evaluating: bool
    """Whether this signal instance runs the bot now (false for a removed one)."""


def _revision(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise HTTPException(422, f'If-Match must be a bot revision such as "7", not {if_match!r}')
    return int(text)


def bots_api(
    registry: BotRegistry,
    guard: Callable[..., None],
    position_of: Callable[[str], PositionStatus],
    open_position: Callable[[str], Awaitable[str | tuple[str, str] | None]],
    evaluating: Callable[[str], bool],
    position_fixed: Callable[[str], Awaitable[str | None]],
) -> APIRouter:
    """``open_position``: why a bot may not be removed now (or None, or a code and a sentence);
    ``position_fixed``: why its product may not change now (or None)."""
    api = APIRouter(prefix="/bots", tags=["bots"])
    writer = [Depends(guard)]

    def view(state: BotState) -> BotView:
        return BotView(
            bot_id=state.bot_id,
            status=state.status,
            revision=state.revision,
            config=state.config,
            change=state.change,
            changed_at=state.changed_at,
            changed_by=state.changed_by,
            position=position_of(state.bot_id),
            evaluating=state.status != "removed" and evaluating(state.bot_id),
        )

    def answer(state: BotState, response: Response) -> BotView:
        if state.revision is not None:
            response.headers["ETag"] = f'"{state.revision}"'
        return view(state)

    def refused(error: BotError) -> HTTPException:
        return HTTPException(error.status, {"code": error.code, "message": error.message})

    @api.get("", summary="Every bot (paused ones included) with its status; evaluates nothing")
    async def list_bots() -> list[BotView]:
        return [view(state) for _, state in sorted(registry.live.states.items())]

    @api.get(
        "/{bot_id}",
        summary="One bot: config, status, revision (ETag); evaluates nothing",
        responses=answers(404),
    )
    async def one_bot(bot_id: str, response: Response) -> BotView:
        try:
            return answer(registry.current(bot_id), response)
        except BotError as error:
            raise refused(error) from None

    @api.post(
        "",
        status_code=201,
        summary="Create a bot (409 if it exists)",
        dependencies=writer,
        responses=answers(401, 403, 409, 422),
    )
    async def create(body: NewBot, response: Response, operator: Operator = "http") -> BotView:
        try:
            return answer(await registry.create(body.bot_id, body.config, operator), response)
        except BotError as error:
            raise refused(error) from None

    @api.put(
        "/{bot_id}",
        summary="Replace a bot's whole config (409 POSITION_OPEN for a new product_id or "
        "exit_allocation while it holds a position)",
        dependencies=writer,
        responses=answers(401, 403, 404, 409, 422),
    )
    async def change(
        bot_id: str,
        config: Bot,
        response: Response,
        operator: Operator = "http",
        if_match: Annotated[str | None, Header()] = None,
    ) -> BotView:
        try:
            revision = _revision(if_match)
            state = await registry.change(bot_id, config, operator, position_fixed, revision)
            return answer(state, response)
        except BotError as error:
            raise refused(error) from None

    async def set_status(
        bot_id: str, status: BotStatus, operator: str, response: Response
    ) -> BotView:
        try:
            state, _changed = await registry.set_status(bot_id, status, operator)
            return answer(state, response)
        except BotError as error:
            raise refused(error) from None

    @api.post(
        "/{bot_id}/pause",
        summary="Pause: no new entries or adds; exits (protective and signal) still act",
        dependencies=writer,
        responses=answers(401, 403, 404, 409),
    )
    async def pause(bot_id: str, response: Response, operator: Operator = "http") -> BotView:
        return await set_status(bot_id, "paused", operator, response)

    @api.post(
        "/{bot_id}/resume",
        summary="Resume a paused bot",
        dependencies=writer,
        responses=answers(401, 403, 404, 409),
    )
    async def resume(bot_id: str, response: Response, operator: Operator = "http") -> BotView:
        return await set_status(bot_id, "active", operator, response)

    @api.delete(
        "/{bot_id}",
        summary="Remove a bot (409 while it holds a position or its stop rests on the exchange)",
        dependencies=writer,
        responses=answers(401, 403, 404, 409, 422),
    )
    async def remove(
        bot_id: str,
        operator: Operator = "http",
        if_match: Annotated[str | None, Header()] = None,
    ) -> BotView:
        try:
            state = await registry.remove(bot_id, operator, open_position, _revision(if_match))
        except BotError as error:
            raise refused(error) from None
        return view(state)

    return api
