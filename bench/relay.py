"""The baseline: a bare nats-py relay of four JetStream hops with no logic.

The same shape as Tranche's path (inject -> intent -> approval -> order event -> position: five
JetStream publishes, four services in between): a message is published to the first of five
streams, and four relays each pull it from one stream and publish it to the next,
acknowledging after the publish, as the services do. Latency is measured from the
first publish to the arrival on the last subject.

Run as its own process (``python -m bench.relay URL --messages N --burst B``) so that its CPU time
and peak RSS are measured the way the services' are; it prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import nats
from nats.js.api import ConsumerConfig, StorageType, StreamConfig

from bench.procstat import cpu_seconds, peak_rss_mb

HOPS = 4
STREAMS = HOPS + 1
FETCH = 64
"""A relay pulls up to this many messages at a time, publishes each in order, then acks it."""


async def run_relay(nats_url: str, messages: int, burst: int = 1) -> tuple[list[float], float]:
    """Latencies in seconds of ``messages`` sent ``burst`` at a time through the four hops (each
    burst waits until all of it arrived), and the seconds spent sending and waiting."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for hop in range(STREAMS):
        await js.add_stream(
            StreamConfig(name=f"RELAY{hop}", subjects=[f"relay.{hop}"], storage=StorageType.FILE)
        )
    relays = []
    # Stopped by an event, not by cancelling: on Python 3.11 a cancellation that races the end
    # of fetch()'s internal wait_for is swallowed, and the relay then fetched forever (seen:
    # `make bench` stalled after a configuration, every relayed message delivered).
    stop = asyncio.Event()

    async def relay(hop: int) -> None:
        sub = await js.pull_subscribe(
            f"relay.{hop}", durable=f"relay{hop}", config=ConsumerConfig(ack_wait=30)
        )
        while not stop.is_set():
            try:
                batch = await sub.fetch(FETCH, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                await js.publish(f"relay.{hop + 1}", msg.data)
                await msg.ack()

    for hop in range(HOPS):
        relays.append(asyncio.create_task(relay(hop)))
    arrived: dict[bytes, asyncio.Future[float]] = {}

    async def on_last(msg) -> None:
        waiting = arrived.get(msg.data)
        if waiting is not None and not waiting.done():
            waiting.set_result(time.perf_counter())

    await nc.subscribe(f"relay.{HOPS}", cb=on_last)
    latencies: list[float] = []
    busy = 0.0
    loop = asyncio.get_running_loop()
    for first in range(0, messages, burst):
        started = time.perf_counter()
        sent: dict[bytes, float] = {}
        for n in range(first, min(first + burst, messages)):
            key = str(n).encode()
            arrived[key] = loop.create_future()
            sent[key] = time.perf_counter()
            await js.publish("relay.0", key)
        for key, at in sent.items():
            latencies.append(await asyncio.wait_for(arrived[key], 60) - at)
            del arrived[key]
        busy += time.perf_counter() - started
    stop.set()
    await asyncio.gather(*relays, return_exceptions=True)
    await nc.close()
    return latencies, busy


def main() -> None:
    parser = argparse.ArgumentParser(description="the bare four-hop relay, as its own process")
    parser.add_argument("nats_url")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=1)
    args = parser.parse_args()
    cpu_before = cpu_seconds(os.getpid())
    latencies, busy = asyncio.run(run_relay(args.nats_url, args.messages, args.burst))
    print(
        json.dumps(
            {
                "latencies": latencies,
                "busy_s": busy,
                "cpu_s": cpu_seconds(os.getpid()) - cpu_before,
                "peak_rss_mb": peak_rss_mb(os.getpid()),
            }
        )
    )


if __name__ == "__main__":
    main()
