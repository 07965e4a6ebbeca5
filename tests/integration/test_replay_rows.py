"""``tranche replay`` stops at once on a bad row, naming the file, row and field (issue 14,
item 5): it used to hang until its timeout with no log line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("bad", "field"),
    [("9999-12-31T00:00:00Z,1,1,1,0.09,1", "time"), ("2018-01-20T04:55:00Z,1,1,1,abc,1", "close"),
     ("2018-01-20T04:55:00Z,1,1,1,-5,1", "close")],
)  # fmt: skip
def test_a_bad_row_stops_the_replay_at_once(tmp_path: Path, bad: str, field: str) -> None:
    data = tmp_path / "ETH-BTC-1m.csv"
    data.write_text(
        "time,open,high,low,close,volume\n2018-01-20T04:54:00Z,1,1,1,0.09,1\n" + bad + "\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tranche", "replay", str(data), "--timeout", "60",
         "--data-dir", str(tmp_path / "run")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())  # rich may wrap: join the lines
    assert done.returncode == 1, output
    assert "ETH-BTC-1m.csv, row 3" in output and f"field {field}" in output, output
    assert time.monotonic() - started < 20
