"""Parity: the backtest decides what the services decide. Both runs of one file and one set of
bots give a journal (every intent, decision, order event, position and safety event, per bot, in
order); equal journals, equal fingerprints. A difference is shown as the first message where the
two runs part (``tranche.journal.differences``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console

from shared.catalog import Catalog
from tranche.backtest.engine import Options, Run, run_backtest
from tranche.journal import Journal, differences, fingerprint
from tranche.replay import replay_stack, run_replay, slice_rows


@dataclass(frozen=True)
class Parity:
    backtest: str
    replay: str
    differences: list[str]
    replay_seconds: float
    run: Run

    @property
    def equal(self) -> bool:
        return self.backtest == self.replay and not self.differences


def of_bots(journal: Journal, bots: list[str]) -> Journal:
    """The part of a journal about ``bots`` (and system-wide safety events)."""
    return {
        key: messages for key, messages in journal.items() if key.split(" ", 1)[1] in {*bots, "-"}
    }


def compare_with_replay(
    catalog: Catalog,
    config_file: Path | None,
    file: Path,
    product: str,
    work_dir: Path,
    *,
    bots: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    options: Options | None = None,
    timeout_s: float = 600,
) -> Parity:
    """Backtest ``file`` and replay it through the real services (``tranche replay``, lock
    step), then compare the two journals."""
    run = asyncio.run(run_backtest(catalog, [(product, file)], bots, start, end, options))
    replayed = file
    work_dir.mkdir(parents=True, exist_ok=True)
    if start or end:
        replayed = work_dir / f"{file.stem}-slice.csv"
        slice_rows(file, replayed, start, end)
    stack = replay_stack(replayed, product, work_dir / "replay", config_file=config_file,
                         settle_timeout_s=90)  # fmt: skip
    if options is not None and options.fee_rate is not None:
        stack.config.service_env["executor"]["TRANCHE_MOCK_FEE_RATE"] = str(options.fee_rate)
    outcome = run_replay(stack, product, timeout_s, Console(quiet=True))
    ran = [bot.bot_id for bot in run.result.bots]
    theirs, ours = of_bots(outcome["journal"], ran), of_bots(run.journal, ran)
    return Parity(
        backtest=fingerprint(ours),
        replay=fingerprint(theirs),
        differences=differences(theirs, ours),
        replay_seconds=outcome["seconds"],
        run=run,
    )
