"""The outcome ring: random price paths and operator actions through the four services'
decision cores wired in-process (tests/outcomes/ring.py), with a trader's invariants checked
after every step:

* a position past its stop for ``STOP_WITHIN`` evaluations, not halted, has had an exit
  approved within them;
* after a flatten the position is flat within ``FLAT_WITHIN`` ticks unless halted;
* the ledger's position equals the exchange's net fills, and no sell exceeds the holding;
* never more than three tranches, no counted limit exceeded, event time never backwards.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.outcomes.ring import World, new_world

STOP_WITHIN = 6
FLAT_WITHIN = 6
EXAMPLES = 100
STEPS = 50

fills = st.sampled_from(["full", "full", "full", "partial", "fail"])
moves = st.sampled_from([Decimal(m) for m in ("-4", "-2", "-1", "-0.5", "0", "0.5", "1", "2")])


KINDS = ["tick"] * 8 + ["buy", "buy", "sell", "flatten", "halt", "resume", "restart"]


class Trader(RuleBasedStateMachine):
    """One bot; each step is a tick (most of them) or an operator action."""

    def __init__(self) -> None:
        super().__init__()
        self.world: World = new_world()

    @rule(
        kind=st.sampled_from(KINDS),
        seconds=st.sampled_from([1] * 8 + [2, 2, 3, 5, 60]),
        move=moves,
        fill=fills,
    )
    def step(self, kind: str, seconds: int, move: Decimal, fill: str) -> None:
        world = self.world
        if kind == "tick":
            world.tick(seconds, move, fill)  # type: ignore[arg-type]
        elif kind in ("buy", "sell"):
            world.inject(kind, fill)  # type: ignore[arg-type]
        elif kind == "flatten":
            world.flatten(fill)  # type: ignore[arg-type]
        elif kind == "halt":
            world.halt()
        elif kind == "resume":
            world.resume()
        else:
            world.restart_signal()

    @invariant()
    def a_trader_can_rely_on_it(self) -> None:
        self.world.check(STOP_WITHIN, FLAT_WITHIN)
        assert self.world.violations == [], self.world.violations


Trader.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
TestTraderInvariants = Trader.TestCase
