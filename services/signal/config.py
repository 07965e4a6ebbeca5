from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from shared.settings import ReadsOrderEvents, ReadsSafetyEvents


class SignalSettings(ReadsOrderEvents, ReadsSafetyEvents):
    service: str = "signal"
    replay: str = ""
    """Feeds to replay, ``PRODUCT=file.csv`` separated by commas; empty = no replay."""
    replay_speed: float = Field(default=120.0, ge=0)
    """Event seconds per wall second; 0 = as fast as possible."""
    replay_lockstep: bool = False
    """Lock step: after each replayed tick wait until every intent so far has settled (decided;
    approved ones final, booked and seen by safety), so a replay decides the same way every time
    (``tranche replay`` sets it)."""
    replay_settle_timeout_s: float = Field(default=30.0, gt=0)
    """Lock step: an intent not settled within this many seconds stops the replay with its id."""
    random_walk: str = ""
    """Products to simulate, ``PRODUCT=start_price`` separated by commas (a seeded random walk,
    one tick per second of wall time)."""
    random_walk_seed: int = 1
    stale_after_s: float = Field(default=120.0, gt=0)
    """A product without a tick for this long (wall clock) is stale: announced, no new entries."""
    position_wait_s: float = Field(default=2.0, ge=0, le=30)
    """An injected sell that finds no position waits up to this long (wall clock) for the
    ledger's newer one before it answers NOTHING_TO_SELL: the position lags a fill."""
    bots_reseed: bool = False
    """On start, put every bot of the bots file in the ``tranche_bots`` bucket as the file says,
    replacing what run-time changes made (bots only in the bucket stay). Default: the file only
    seeds bots the bucket has never held."""
    control_token: SecretStr | None = None
    """Bearer token for changing bots over HTTP (the same as safety's kill switch); unset: bot
    changes over HTTP are refused (403), reads stay open."""
    coinbase_feed: str = ""
    """Products to follow live on Coinbase (public market data), separated by commas; empty =
    none. Works in mock mode too: paper trading on live prices."""
    coinbase_feed_transport: Literal["websocket", "rest"] = "websocket"
    """How the live feed reads Coinbase: its WebSocket (REST polling only while the WebSocket
    cannot connect) or REST polling alone."""
    coinbase_ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    """Coinbase's market-data WebSocket (``wss://``; ``ws://`` only for a local stand-in)."""
    coinbase_ws_silence_s: float = Field(default=10.0, gt=0)
    """A WebSocket without any message (heartbeats come every second) for this long is dead:
    it is closed and opened again."""
    coinbase_ws_fallback_after: int = Field(default=3, ge=1)
    """Failed WebSocket connection attempts in a row before REST polling takes over."""
    coinbase_ws_retry_s: float = Field(default=60.0, gt=0)
    """While REST polling stands in, the WebSocket is tried again this often."""
    coinbase_poll_s: float = Field(default=1.0, ge=0.2)
    """Seconds between two polls of one product (Coinbase allows about 10 public requests/s)."""
    coinbase_max_backoff_s: float = Field(default=60.0, gt=0)
    """Longest wait between polls while Coinbase fails (429, 5xx, timeouts)."""
    coinbase_base_url: str = "api.coinbase.com"
    """Host (and port), no scheme: the SDK adds ``https://``."""
    coinbase_timeout_s: float = Field(default=5.0, gt=0)
    coinbase_ca_file: Path | None = None
    """A CA bundle to trust instead of the system's (a local stand-in in tests), for REST and
    the WebSocket."""

    @field_validator("coinbase_ws_url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        if not url.startswith(("wss://", "ws://")):
            raise ValueError("expected a WebSocket URL starting with wss:// (or ws:// locally)")
        return url
