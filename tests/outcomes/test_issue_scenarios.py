"""The issue's reproductions, replayed through the ring (tests/outcomes/ring.py) with the same
invariants as the hypothesis machine: each one failed before exits became standing orders."""

from __future__ import annotations

from decimal import Decimal

from tests.outcomes.ring import World, new_world
from tests.outcomes.test_trader_invariants import FLAT_WITHIN, STOP_WITHIN


def holding_then_half_sold() -> World:
    world = new_world()
    world.tick(1, Decimal(0), "full")
    world.inject("buy", "full")
    world.tick(1, Decimal(0), "full")
    world.inject("sell", "full")  # a signal exit of half: the exit cooldown starts
    return world


def run_ticks(world: World, count: int, first_move: str = "0") -> None:
    for n in range(count):
        world.tick(1, Decimal(first_move if n == 0 else "0"), "full")
        world.check(STOP_WITHIN, FLAT_WITHIN)


def test_a_stop_right_after_a_partial_exit_sells_the_rest() -> None:
    world = holding_then_half_sold()
    run_ticks(world, STOP_WITHIN + 2, first_move="-4")
    assert world.violations == []
    assert world.book() is None


def test_a_flatten_right_after_a_partial_exit_ends_flat() -> None:
    world = holding_then_half_sold()
    world.flatten("full")
    run_ticks(world, FLAT_WITHIN + 2)
    assert world.violations == []
    assert world.book() is None


def test_a_flatten_sized_from_a_lagging_position_sells_all_of_it() -> None:
    world = new_world()
    world.tick(1, Decimal(0), "full")
    world.inject("buy", "partial")  # half fills now, a share of the rest at the next tick
    world.tick(1, Decimal(0), "full")  # the signal sees the half; more fills, the rest cancelled
    world.flatten("full")
    run_ticks(world, FLAT_WITHIN + 2)
    assert world.violations == []
    assert world.book() is None


def test_a_failed_stop_exit_is_asked_again() -> None:
    world = new_world()
    world.tick(1, Decimal(0), "full")
    world.inject("buy", "full")
    world.tick(1, Decimal(0), "full")
    world.tick(1, Decimal(-4), "fail")  # the stop's order fails at the exchange
    run_ticks(world, STOP_WITHIN + 4)
    assert world.book() is None


def test_a_stop_refused_through_a_halt_is_asked_again_right_after_the_resume() -> None:
    """Found by the ring: the stop's attempts refused while halted had backed it off (10 s and
    more), so after the resume a position past its stop waited that long for its exit."""
    world = new_world()
    world.tick(1, Decimal(0), "full")
    world.inject("buy", "full")
    world.halt()
    world.tick(1, Decimal(-4), "full")  # past its stop while halted: asked, refused
    for _ in range(5):
        world.tick(1, Decimal(0), "full")  # asked again after 5 s, refused
    world.resume()
    run_ticks(world, STOP_WITHIN + 1)
    assert world.violations == []
    assert world.book() is None
