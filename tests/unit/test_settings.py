"""The list of known settings stays the fields of the services' settings classes, and unknown
``TRANCHE_*`` names are refused with the closest known one (issue 14, item 9)."""

from __future__ import annotations

import asyncio
import importlib

import pytest
import uvloop
from pydantic import ValidationError

from shared.service import loop_factory
from shared.settings import SERVICE_SETTINGS, ServiceSettings, unknown_settings

SERVICES = ("signal", "safety", "executor", "ledger", "dashboard")


def test_the_known_settings_are_exactly_the_services_fields() -> None:
    classes = [ServiceSettings]
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.config")
        classes += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, ServiceSettings)
        ]
    fields = {f"TRANCHE_{field.upper()}" for cls in classes for field in cls.model_fields}
    assert fields == SERVICE_SETTINGS


def test_an_unknown_name_gets_the_closest_known_one() -> None:
    said = unknown_settings({"TRANCHE_MAX_TRANCHE": "2", "TRANCHE_MODE": "mock", "HOME": "/"})
    assert said == [
        "TRANCHE_MAX_TRANCHE is not a Tranche setting: did you mean TRANCHE_MAX_TRANCHES?"
    ]


def test_tool_variables_are_not_unknown() -> None:
    tools = {"TRANCHE_NATS_PASSWORD_SIGNAL": "x", "TRANCHE_TEST_POSTGRES": "x",
             "TRANCHE_BENCH_LOG_LEVEL": "x", "TRANCHE_SIGNAL_URL": "x"}  # fmt: skip
    assert unknown_settings(tools) == []


@pytest.mark.parametrize(
    "url",
    ["garbage", "sqlite:///", "sqlite://", "mysql://a@b/c", "postgresql://", "postgresql:///x"],
)
def test_a_database_url_we_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="database_url"):
        ServiceSettings(database_url=url)


@pytest.mark.parametrize("url", ["sqlite:///var/x.db", "postgresql://u:p@127.0.0.1:5432/test"])
def test_a_database_url_we_use_is_accepted(url: str) -> None:
    assert ServiceSettings(database_url=url).db_url == url


def test_services_run_on_uvloop_unless_asked_for_asyncios_loop(monkeypatch) -> None:
    assert ServiceSettings().event_loop == "uvloop"
    with asyncio.Runner(loop_factory=loop_factory(ServiceSettings().event_loop)) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setenv("TRANCHE_EVENT_LOOP", "asyncio")
    chosen = ServiceSettings().event_loop
    assert loop_factory(chosen) is None
    with asyncio.Runner(loop_factory=loop_factory(chosen)) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setenv("TRANCHE_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        ServiceSettings()
