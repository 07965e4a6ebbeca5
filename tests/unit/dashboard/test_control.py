"""Halt and resume forwarded to safety: the caller's token goes to safety and nowhere else."""

from __future__ import annotations

import json

import httpx

from services.dashboard.control import forward
from shared.contracts import SafetyCommandResult

SAFETY = "http://safety.test"


def client_answering(status: int, body: dict | str, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def halted(ok: bool = True, code: str = "HALT") -> dict:
    return SafetyCommandResult(
        ok=ok, code=code, message="bot b-1 halted: no approvals until resumed", state="halted"
    ).model_dump(mode="json")


async def test_without_a_token_nothing_is_sent_and_the_page_stays_read_only() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(200, halted(), seen) as client:
        for missing in (None, "", "Bearer ", "Bearer   "):
            outcome = await forward(client, SAFETY, "halt", "b-1", missing)
            assert outcome.status == 401
            assert "read-only" in outcome.message
    assert seen == []


async def test_the_token_and_the_command_go_to_safety() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(200, halted(), seen) as client:
        outcome = await forward(client, SAFETY, "halt", "b-1", "Bearer s3cret")

    assert outcome.status == 200
    assert outcome.message == "HALT: bot b-1 halted: no approvals until resumed"
    assert outcome.result.state == "halted"
    [request] = seen
    assert str(request.url) == f"{SAFETY}/halt"
    assert request.headers["Authorization"] == "Bearer s3cret"
    body = json.loads(request.content)
    assert body["bot_id"] == "b-1"
    assert body["operator"] == "dashboard"


async def test_resume_everything_sends_no_bot() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(200, halted(code="RESUME"), seen) as client:
        await forward(client, SAFETY, "resume", None, "Bearer s3cret")

    assert str(seen[0].url) == f"{SAFETY}/resume"
    assert json.loads(seen[0].content)["bot_id"] is None


async def test_a_refused_token_is_said_and_not_repeated() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(401, {"detail": "a valid bearer token is required"}, seen) as c:
        outcome = await forward(c, SAFETY, "halt", "b-1", "Bearer wrong")

    assert outcome.status == 401
    assert "refused" in outcome.message
    assert "wrong" not in outcome.message


async def test_a_command_safety_did_not_carry_out_is_a_conflict() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(200, halted(ok=False, code="BOT_REQUIRED"), seen) as client:
        outcome = await forward(client, SAFETY, "halt", "b-1", "Bearer s3cret")

    assert outcome.status == 409
    assert outcome.message.startswith("BOT_REQUIRED")


async def test_safety_down_is_a_bad_gateway_with_the_address() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        outcome = await forward(client, SAFETY, "halt", None, "Bearer s3cret")

    assert outcome.status == 502
    assert SAFETY in outcome.message
    assert "s3cret" not in outcome.message


async def test_an_answer_that_is_not_a_command_result_is_a_bad_gateway() -> None:
    seen: list[httpx.Request] = []
    async with client_answering(200, "<html>proxy error</html>", seen) as client:
        outcome = await forward(client, SAFETY, "halt", "b-1", "Bearer s3cret")

    assert outcome.status == 502
