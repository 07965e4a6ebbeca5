"""Every table the executor keeps, the mock exchange's book included: one list, so the service
and the backtest (``tranche/backtest/engine.py``) create the same ones."""

from __future__ import annotations

from sqlmodel import SQLModel

from services.executor.exchanges.mock import MOCK_TABLES
from services.executor.protective import OrderStopRow
from services.executor.store import TABLES as ORDER_TABLES
from services.executor.trading import TradingStateRow

SERVICE_TABLES: list[type[SQLModel]] = [*ORDER_TABLES, *MOCK_TABLES, OrderStopRow, TradingStateRow]
