"""The WebSocket feed's pure part: Coinbase's market-data messages -> Tickers at the exchange's
trade time (each trade once, shared with the REST feed's cursor), and the checks that find lost
messages (``sequence_num``, ``heartbeat_counter``). Messages are built in the shapes the local
stand-in sends (tests/support/coinbase_ws_standin.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signal.config import SignalSettings
from services.signal.feeds.coinbase import Cursor, new_tickers
from services.signal.feeds.coinbase_stream import StreamReader
from shared.settings import load
from tests.support.coinbase_ws_standin import (
    envelope,
    heartbeat_event,
    stamp,
    ticker_event,
    trades_event,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def trade(trade_id: int, price: str, seconds: float, product: str = "BTC-USD") -> dict:
    return {"trade_id": str(trade_id), "product_id": product, "price": price, "size": "0.1",
            "side": "BUY", "time": stamp(T0 + timedelta(seconds=seconds))}  # fmt: skip


def trades(sequence: int, kind: str, *newest_first: dict) -> str:
    return json.dumps(envelope("market_trades", sequence, [trades_event(kind, list(newest_first))]))


def ticker(sequence: int, bid: str, ask: str) -> str:
    event = ticker_event("update", "BTC-USD", "100", bid, ask)
    return json.dumps(envelope("ticker", sequence, [event]))


def heartbeat(sequence: int, counter: int) -> str:
    return json.dumps(envelope("heartbeats", sequence, [heartbeat_event(counter)]))


def test_the_first_snapshot_gives_only_the_newest_trade_at_its_exchange_time() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    reader.read(ticker(0, "99.5", "100.5"))
    reading = reader.read(trades(1, "snapshot", trade(3, "102", 2), trade(2, "101", 1)))
    (tick,) = reading.tickers
    assert (tick.price, tick.time, tick.source) == (Decimal(102), T0 + timedelta(seconds=2),
                                                    "coinbase")  # fmt: skip
    assert (tick.best_bid, tick.best_ask) == (Decimal("99.5"), Decimal("100.5"))
    assert (reading.missed_messages, reading.missed_heartbeats) == (0, 0)


def test_updates_give_every_new_trade_once_oldest_first_and_a_later_snapshot_only_the_unseen():
    reader = StreamReader("BTC-USD", Cursor())
    reader.read(trades(0, "snapshot", trade(1, "100", 0)))
    update = reader.read(trades(1, "update", trade(3, "102", 2), trade(2, "101", 1)))
    assert [t.price for t in update.tickers] == [Decimal(101), Decimal(102)]
    assert reader.read(trades(2, "update", trade(3, "102", 2))).tickers == []  # repeated
    # After a resubscribe the snapshot holds what a lost message hid: only that is new.
    snapshot = reader.read(
        trades(3, "snapshot", trade(5, "104", 4), trade(4, "103", 3), trade(3, "102", 2))
    )
    assert [t.price for t in snapshot.tickers] == [Decimal(103), Decimal(104)]


def test_the_rest_feed_and_the_websocket_share_one_cursor_so_no_trade_is_published_twice():
    cursor = Cursor()
    reader = StreamReader("BTC-USD", cursor)
    reader.read(trades(0, "snapshot", trade(1, "100", 0)))
    rest_answer = {"trades": [trade(2, "101", 1), trade(1, "100", 0)]}
    assert [t.price for t in new_tickers("BTC-USD", rest_answer, cursor)] == [Decimal(101)]
    assert reader.read(trades(1, "update", trade(2, "101", 1))).tickers == []


def test_a_jump_in_sequence_num_is_the_count_of_lost_messages() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    assert reader.read(heartbeat(0, 1)).missed_messages == 0
    assert reader.read(heartbeat(1, 2)).missed_messages == 0
    assert reader.read(ticker(4, "1", "2")).missed_messages == 2
    assert reader.read(ticker(5, "1", "2")).missed_messages == 0


def test_a_late_or_repeated_message_loses_nothing_and_its_trade_still_counts_once() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    reader.read(trades(0, "snapshot", trade(1, "100", 0)))
    reader.read(heartbeat(2, 1))  # 1 lost...
    late = reader.read(trades(1, "update", trade(2, "101", 1)))  # ...arrives late
    assert late.missed_messages == 0 and [t.price for t in late.tickers] == [Decimal(101)]
    assert reader.read(heartbeat(3, 2)).missed_messages == 0  # the count did not go back


def test_a_new_connection_counts_its_sequence_afresh() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    reader.read(heartbeat(0, 1))
    reader.read(heartbeat(57, 2))
    reader.connected()
    assert reader.read(heartbeat(0, 1)).missed_messages == 0
    assert reader.read(heartbeat(1, 2)).missed_heartbeats == 0


def test_a_jump_in_heartbeat_counter_is_the_count_of_lost_heartbeats() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    reader.read(heartbeat(0, 10))
    assert reader.read(heartbeat(1, 11)).missed_heartbeats == 0
    reading = reader.read(heartbeat(2, 14))
    assert (reading.missed_heartbeats, reading.missed_messages) == (2, 0)
    reader.resubscribed()  # a renewed subscription may count from the start again
    assert reader.read(heartbeat(3, 1)).missed_heartbeats == 0
    assert reader.read(heartbeat(4, 2)).missed_heartbeats == 0
    assert reader.read(heartbeat(5, 1)).missed_heartbeats == 0  # went back: followed, no gap


def test_coinbase_refusing_and_unreadable_messages_are_told_apart_never_raised() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    refused = reader.read(json.dumps({"type": "error", "message": "Failure to subscribe"}))
    assert refused.refused == "Failure to subscribe"
    assert reader.read("<html>").unreadable == "not JSON"
    assert reader.read("[1, 2]").unreadable == "not a JSON object"
    assert reader.read(json.dumps({"channel": "market_trades", "events": "x"})).tickers == []
    bad = {"channel": "market_trades", "sequence_num": "n/a", "events": [{"trades": [7, None]}]}
    assert reader.read(json.dumps(bad)).tickers == []


def test_other_products_and_channels_publish_nothing() -> None:
    reader = StreamReader("BTC-USD", Cursor())
    other = reader.read(trades(0, "snapshot", trade(1, "3000", 0, product="ETH-USD")))
    assert other.tickers == []
    subscriptions = envelope("subscriptions", 1, [{"subscriptions": {"ticker": ["BTC-USD"]}}])
    assert reader.read(json.dumps(subscriptions)).tickers == []
    eth = envelope("ticker", 2, [ticker_event("update", "ETH-USD", "3000", "2999", "3001")])
    reader.read(json.dumps(eth))
    assert (reader.best_bid, reader.best_ask) == (None, None)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, unique=True))
def test_over_any_increasing_sequence_the_gaps_add_up_to_the_numbers_never_received(
    numbers: list[int],
) -> None:
    numbers.sort()
    reader = StreamReader("BTC-USD", Cursor())
    missed = sum(reader.read(heartbeat(n, n)).missed_messages for n in numbers)
    assert missed == (numbers[-1] - numbers[0] + 1) - len(numbers)


@pytest.mark.parametrize(
    ("variable", "value", "sentence"),
    [
        ("TRANCHE_COINBASE_FEED_TRANSPORT", "udp",
         "TRANCHE_COINBASE_FEED_TRANSPORT: Input should be 'websocket' or 'rest' (got 'udp')"),
        ("TRANCHE_COINBASE_WS_URL", "https://advanced-trade-ws.coinbase.com",
         "TRANCHE_COINBASE_WS_URL: Value error, expected a WebSocket URL starting with wss:// "
         "(or ws:// locally)"),
    ],
)  # fmt: skip
def test_a_bad_transport_setting_stops_the_service_with_one_sentence(
    variable: str, value: str, sentence: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        load(SignalSettings)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"invalid setting: {sentence}")


def test_websocket_is_the_default_transport_and_rest_can_be_chosen(monkeypatch) -> None:
    assert SignalSettings().coinbase_feed_transport == "websocket"
    assert SignalSettings().coinbase_ws_url == "wss://advanced-trade-ws.coinbase.com"
    monkeypatch.setenv("TRANCHE_COINBASE_FEED_TRANSPORT", "rest")
    assert SignalSettings().coinbase_feed_transport == "rest"
