"""The restart decisions of ``tranche up`` (tranche/supervision.py), without processes."""

from __future__ import annotations

import signal

from tranche.supervision import (
    GAVE_UP,
    RESTARTING,
    RUNNING,
    STOPPED,
    RestartPolicy,
    Supervisor,
    exit_reason,
)

POLICY = RestartPolicy(first_delay_s=1, max_delay_s=8, healthy_after_s=60, give_up_after=5)


def test_a_crashed_service_is_restarted_after_a_back_off_that_doubles() -> None:
    sup = Supervisor(POLICY)
    sup.started("executor", now=0)
    delays = []
    now = 10.0
    for _ in range(4):
        run = sup.exited("executor", "killed by SIGKILL", now)
        assert run.state == RESTARTING
        restart_at = run.restart_at
        delays.append(restart_at - now)
        assert sup.due(restart_at - 0.1) == []
        assert sup.due(restart_at) == ["executor"]
        sup.started("executor", restart_at)
        now = restart_at + 1
    assert delays == [1, 2, 4, 8]
    assert sup.runs["executor"].restarts == 4
    assert sup.summary(now) == {"executor": "running (restarted 4x)"}


def test_after_n_quick_failures_it_gives_up_and_says_why() -> None:
    sup = Supervisor(POLICY)
    now = 0.0
    for _ in range(POLICY.give_up_after):
        sup.started("ledger", now)
        run = sup.exited("ledger", "exit 2: TRANCHE_DATABASE_URL: not a URL", now + 0.5)
        now = (run.restart_at or now) + 0.1
    assert run.state == GAVE_UP
    assert sup.due(now + 3600) == []
    assert sup.summary(now)["ledger"] == (
        "gave up after 5 quick failures (exit 2: TRANCHE_DATABASE_URL: not a URL)"
    )


def test_a_long_healthy_run_resets_the_count_of_quick_failures() -> None:
    sup = Supervisor(POLICY)
    now = 0.0
    for _ in range(POLICY.give_up_after - 1):
        sup.started("safety", now)
        now = sup.exited("safety", "exit 1", now + 1).restart_at or now
    sup.started("safety", now)
    run = sup.exited("safety", "exit 1", now + POLICY.healthy_after_s)
    assert run.state == RESTARTING
    assert run.quick_failures == 1
    assert run.restart_at == now + POLICY.healthy_after_s + POLICY.first_delay_s


def test_a_service_stopped_on_purpose_is_not_restarted() -> None:
    sup = Supervisor(POLICY)
    sup.started("signal", 0)
    sup.stopped("signal")
    assert sup.runs["signal"].state == STOPPED
    assert sup.due(1000) == []
    sup.started("signal", 5)
    assert sup.runs["signal"].state == RUNNING
    assert sup.runs["signal"].restarts == 0


def test_the_restart_countdown_is_shown_with_the_reason() -> None:
    sup = Supervisor(POLICY)
    sup.started("executor", 99)
    sup.exited("executor", "killed by SIGKILL", 100)
    sup.exited("executor", "killed by SIGKILL", 100)
    assert sup.summary(100.4) == {"executor": "restarting in 2 s (killed by SIGKILL)"}


def test_exit_reasons_name_the_signal_or_the_code_and_last_line() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-signal.SIGKILL, "ignored") == "killed by SIGKILL"
    assert exit_reason(2, "  bad setting TRANCHE_MODE \n") == "exit 2: bad setting TRANCHE_MODE"
    assert exit_reason(0) == "exit 0"
