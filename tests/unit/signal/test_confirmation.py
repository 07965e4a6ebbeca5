"""Confirmation: N consecutive evaluations and T seconds of event time, reset by a flip or a
drop in band; after firing it counts again from zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.signal.confirmation import Confirmation

T0 = datetime(2018, 1, 20, tzinfo=UTC)


def run(needed: int, hold_s: int, steps: list[tuple[str, str, int]]) -> list[bool]:
    """(direction, band, seconds after T0) -> which evaluations fire."""
    confirmation = Confirmation(needed, timedelta(seconds=hold_s))
    return [confirmation.feed(d, b, T0 + timedelta(seconds=s)).fires for d, b, s in steps]  # type: ignore[arg-type]


def test_fires_after_n_evaluations_and_t_seconds() -> None:
    steps = [("buy", "hot", 0), ("buy", "hot", 30), ("buy", "hot", 60), ("buy", "hot", 90)]
    assert run(3, 60, steps) == [False, False, True, False]  # then it counts again from zero


def test_a_persistent_direction_asks_again_after_another_n_and_t() -> None:
    steps = [("buy", "hot", 60 * n) for n in range(7)]
    assert run(3, 60, steps) == [False, False, True, False, False, True, False]


def test_without_confirmation_every_evaluation_acts() -> None:
    assert run(1, 0, [("buy", "hot", 0), ("buy", "hot", 0), ("sell", "cool", 1)]) == [True] * 3


def test_needs_both_the_count_and_the_time() -> None:
    quick = [("buy", "hot", 0), ("buy", "hot", 1), ("buy", "hot", 2), ("buy", "hot", 61)]
    assert run(3, 60, quick) == [False, False, False, True]
    slow = [("buy", "hot", 0), ("buy", "hot", 120), ("buy", "hot", 240)]
    assert run(3, 60, slow) == [False, False, True]


def test_a_flip_starts_again() -> None:
    steps = [("buy", "hot", 0), ("buy", "hot", 60), ("sell", "hot", 120), ("sell", "hot", 180),
             ("sell", "hot", 240)]  # fmt: skip
    assert run(3, 60, steps) == [False, False, False, False, True]


def test_a_drop_to_a_lower_band_starts_again_but_a_rise_keeps_counting() -> None:
    drop = [("buy", "hot", 0), ("buy", "hot", 60), ("buy", "warm", 120), ("buy", "warm", 180)]
    assert run(3, 0, drop) == [False, False, False, False]
    rise = [("buy", "warm", 0), ("buy", "warm", 60), ("buy", "hot", 120)]
    assert run(3, 0, rise) == [False, False, True]


def test_hold_resets_and_a_new_run_may_fire_again() -> None:
    steps = [("buy", "hot", 0), ("buy", "hot", 60), ("hold", "cool", 120), ("buy", "hot", 180),
             ("buy", "hot", 240)]  # fmt: skip
    assert run(2, 60, steps) == [False, True, False, False, True]


def test_progress_says_how_far_it_is() -> None:
    confirmation = Confirmation(3, timedelta(seconds=60))
    confirmation.feed("buy", "hot", T0)
    progress = confirmation.feed("buy", "hot", T0 + timedelta(seconds=20))
    assert (progress.count, progress.needed, progress.held_for(T0 + timedelta(seconds=20))) == (
        2,
        3,
        timedelta(seconds=20),
    )


steps = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell", "hold"]),
        st.sampled_from(["frozen", "cool", "warm", "hot"]),
        st.integers(0, 120),
    ),
    max_size=40,
)


@given(st.integers(1, 5), st.integers(0, 300), steps)
def test_never_fires_before_n_evaluations_and_t_seconds_of_one_run(
    needed: int, hold_s: int, raw: list[tuple[str, str, int]]
) -> None:
    confirmation = Confirmation(needed, timedelta(seconds=hold_s))
    now = T0
    run_start: datetime | None = None
    run_length, previous, previous_band = 0, "hold", "frozen"
    order = {"frozen": 0, "cool": 1, "warm": 2, "hot": 3}
    for direction, band, gap in raw:
        now += timedelta(seconds=gap)
        if direction == "hold":
            run_length, run_start = 0, None
        elif direction != previous or order[band] < order[previous_band]:
            run_length, run_start = 1, now
        else:
            run_length += 1
        previous, previous_band = direction, band
        progress = confirmation.feed(direction, band, now)  # type: ignore[arg-type]
        if progress.fires:
            assert direction != "hold"
            assert run_length >= needed
            assert run_start is not None and now - run_start >= timedelta(seconds=hold_s)
            run_length, run_start = 0, now  # it counts again from zero
