"""Operator commands: the kill switch (halt/resume), flatten, the mode switch and a mock-only
counter reset. One function, :func:`run_command`, serves HTTP and NATS alike; it runs inside a
safety transaction with the same locks a decision takes, so a command and a decision never
interleave. Every change is a ``tranche.safety.events`` message naming who asked."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.safety.store import (
    SYSTEM,
    PositionRow,
    current_mode,
    forgive_breaker_facts,
    lock_scopes,
    reset_counters,
    safety_event,
    set_state,
)
from shared import subjects
from shared.contracts import Mode, SafetyCommand, SafetyCommandResult
from shared.outbox import stage


def run_command(
    session: Session,
    command: SafetyCommand,
    *,
    start_mode: Mode,
    production_missing: list[str],
    now: datetime,
    bot_exists: bool = True,
) -> SafetyCommandResult:
    """Apply ``command``; the answer says what changed, or why nothing did (``ok=False``).

    ``bot_exists`` is False for a ``bot_id`` that is neither a bot of the deployment nor one
    safety has heard of: a halt or a limits reset for it (a typo, most likely) is refused
    rather than recorded for a bot that will never trade."""
    if command.bot_id and not bot_exists and command.command in ("halt", "limits_reset"):
        return SafetyCommandResult(
            ok=False,
            code="UNKNOWN_BOT",
            message=f"there is no bot {command.bot_id}: nothing was changed (tranche bots list "
            "shows the bots)",
        )
    system, scope = lock_scopes(session, command.bot_id)
    who = f"{command.operator} ({command.command})"
    target = f"bot {command.bot_id}" if command.bot_id else "all bots"
    event_id = f"safety-{command.command}-{command.bot_id or SYSTEM}-{command.command_id}"
    mode = current_mode(system, start_mode)
    reason = command.reason or f"{command.command} by {command.operator}"

    def answer(ok: bool, code: str, message: str) -> SafetyCommandResult:
        return SafetyCommandResult(
            ok=ok,
            code=code,
            message=message,
            state=scope.state,
            mode=current_mode(system, start_mode),
        )

    if command.command == "halt":
        # A halt keeps the protective stops on the exchange unless asked (docs/safety.md); asked
        # while already halted, it still cancels them.
        code = "HALT_CANCEL_STOPS" if command.cancel_stops else "HALT"
        if scope.state == "halted" and not command.cancel_stops:
            return answer(True, "ALREADY_HALTED", f"{target}: already halted ({scope.message})")
        set_state(
            session, scope, "halted", code=code, message=reason, caused_by=who,
            resets_at=None, event_id=event_id, time=now,
        )  # fmt: skip
        stops = (
            "; its protective stops are cancelled"
            if command.cancel_stops
            else ("; protective stops on the exchange stay")
        )
        return answer(True, code, f"{target} halted: no approvals until resumed{stops}")
    if command.command == "resume":
        forgive_breaker_facts(session, command.bot_id)
        if scope.state == "active":
            return answer(True, "ALREADY_ACTIVE", f"{target}: already active")
        was = scope.code
        set_state(
            session, scope, "active", code="RESUME", message=f"{reason} (was {was})",
            caused_by=who, resets_at=None, event_id=event_id, time=now,
        )  # fmt: skip
        return answer(True, "RESUME", f"{target} active again (was {was})")
    if command.command == "flatten":
        if command.bot_id is None:
            return answer(False, "BOT_REQUIRED", "flatten needs a bot")
        if "halted" in (scope.state, system.state):
            return answer(
                False, "HALTED", f"{target} is halted: resume it (or the system) to flatten"
            )
        position = session.get(PositionRow, (command.bot_id, mode))
        held = position.quantity if position is not None else 0
        if scope.state == "active" or scope.resets_at is not None:
            # No new entry may race the exit the flatten asks for, nor follow it until the
            # operator resumes: a breaker's reducing that would reset by itself becomes the
            # operator's (it reset to active under a flatten, and entries came back).
            set_state(
                session, scope, "reducing", code="FLATTEN", message=reason, caused_by=who,
                resets_at=None, event_id=f"{event_id}-reducing", time=now,
            )  # fmt: skip
        stage(
            session,
            subjects.SAFETY_EVENTS,
            safety_event(
                code="FLATTEN_REQUESTED",
                message=f"exit the whole position of bot {command.bot_id} ({held} held): {reason}",
                bot_id=command.bot_id,
                state="reducing",
                caused_by=who,
                message_id=event_id,
                time=now,
            ),
        )
        return answer(
            True,
            "FLATTEN_REQUESTED",
            f"{target} is reducing; the signal service is asked to exit its {held}",
        )
    if command.command == "mode":
        wanted = command.mode
        if wanted is None:
            return answer(False, "MODE_REQUIRED", "say which mode: mock or production")
        if wanted == "production" and production_missing:
            return answer(
                False,
                "PRODUCTION_NOT_ALLOWED",
                f"production needs {', '.join(production_missing)} on safety and the executor",
            )
        if wanted == mode:
            return answer(True, "MODE_UNCHANGED", f"already in {mode} mode")
        system.mode = wanted
        session.add(system)
        stage(
            session,
            subjects.SAFETY_EVENTS,
            safety_event(
                code="MODE_CHANGED",
                message=f"approvals are now made in {wanted} mode (was {mode}); orders already "
                "approved keep syncing until final",
                bot_id=None,
                state=None,
                caused_by=who,
                message_id=event_id,
                time=now,
            ),
        )
        return answer(True, "MODE_CHANGED", f"now approving in {wanted} mode (was {mode})")
    # limits_reset
    if command.bot_id is None:
        return answer(False, "BOT_REQUIRED", "limits reset needs a bot")
    if mode != "mock":
        return answer(
            False,
            "PRODUCTION_LIMITS_KEPT",
            "production counters cannot be reset; switch to mock mode to reset mock counters",
        )
    released = reset_counters(session, command.bot_id, "mock")
    stage(
        session,
        subjects.SAFETY_EVENTS,
        safety_event(
            code="LIMITS_RESET",
            message=f"bot {command.bot_id}'s mock counters and cooldowns were reset "
            f"({released} decisions released)",
            bot_id=command.bot_id,
            state=None,
            caused_by=who,
            message_id=event_id,
            time=now,
        ),
    )
    return answer(True, "LIMITS_RESET", f"{target}: {released} mock decisions no longer count")
