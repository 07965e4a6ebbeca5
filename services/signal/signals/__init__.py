"""Signals: candles in, a score from -1 (strong sell) to +1 (strong buy) and a confidence out.

Each signal is a small class registered by name (:func:`register`); a bot names the ones it uses
in its configuration, with weights and parameters, so a new signal needs no change to the
service: write the class, decorate it, name it in the bots file.
"""

from __future__ import annotations

from services.signal.signals import ma_cross, macd, momentum, rsi  # noqa: F401 - registers them
from services.signal.signals.base import REGISTRY, Score, Signal, create, register

__all__ = ["REGISTRY", "Score", "Signal", "create", "register"]
