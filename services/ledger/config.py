from __future__ import annotations

from typing import Literal

from shared.settings import ReadsOrderEvents


class LedgerSettings(ReadsOrderEvents):
    service: str = "ledger"
    exit_allocation: Literal["pro_rata", "fifo"] = "pro_rata"
    """How an exit is split across tranches (pro rata keeps the average entry where it is)."""
