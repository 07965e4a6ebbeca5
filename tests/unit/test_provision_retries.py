"""Provisioning a cluster that has just formed: JetStream refuses a replicated stream with "no
suitable peers for placement" until its peers are known. That refusal is waited out (CI saw
`tranche nats provision` fail on it, then on the update it fell back to); any other bad request
is raised at once, and a stream someone else created meanwhile is updated."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import BadRequestError, NotFoundError

from shared.streams import ALL_STREAMS, NO_PEERS_FOR_PLACEMENT, STREAM_NAME_IN_USE, ensure_stream
from tranche.nats_cli import _until_jetstream_answers


class Forming:
    """A JetStream context whose first ``refusals`` adds are refused with ``err_code``."""

    def __init__(self, refusals: int, err_code: int):
        self.refusals, self.err_code = refusals, err_code
        self.streams: dict[str, object] = {}
        self.updated: list[str] = []

    async def stream_info(self, name: str) -> object:
        if name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        return self.streams[name]

    async def add_stream(self, config) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            if self.err_code == STREAM_NAME_IN_USE:
                self.streams[config.name] = config  # another service made it meanwhile
            raise BadRequestError(code=400, err_code=self.err_code, description="refused")
        self.streams[config.name] = config

    async def update_stream(self, config) -> None:
        if config.name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        self.updated.append(config.name)


async def streams_only(js, replicas: int) -> None:
    """ensure_streams without the buckets (a fake has no key-value API)."""
    for stream in ALL_STREAMS:
        await ensure_stream(js, stream, replicas)


def test_no_peers_for_placement_is_waited_out() -> None:
    js = Forming(refusals=2, err_code=NO_PEERS_FOR_PLACEMENT)

    async def run() -> None:
        deadline = asyncio.get_running_loop().time() + 10
        await _until_jetstream_answers(streams_only, js, 3, deadline)

    asyncio.run(run())
    assert set(js.streams) == {stream.name for stream in ALL_STREAMS}


def test_another_bad_request_is_raised_at_once() -> None:
    js = Forming(refusals=1, err_code=10052)  # say, an invalid configuration

    async def run() -> None:
        deadline = asyncio.get_running_loop().time() + 10
        await _until_jetstream_answers(streams_only, js, 3, deadline)

    with pytest.raises(BadRequestError):
        asyncio.run(run())


def test_a_stream_created_meanwhile_is_updated_and_any_other_refusal_raised() -> None:
    made_meanwhile = Forming(refusals=1, err_code=STREAM_NAME_IN_USE)
    asyncio.run(streams_only(made_meanwhile, 1))
    assert made_meanwhile.updated == [ALL_STREAMS[0].name]
    no_peers = Forming(refusals=1, err_code=NO_PEERS_FOR_PLACEMENT)
    with pytest.raises(BadRequestError):  # not an update of a stream that is not there
        asyncio.run(streams_only(no_peers, 3))
    assert no_peers.updated == []
