"""The README's examples cannot drift: every command it shows is one the CLI accepts, written
the same way everywhere, and every query parameter it names is one the service takes, with the
required ones shown with a value. (The replay example's figures and fingerprint are checked
against a real replay in tests/e2e/test_replay_determinism.py.)"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tranche.cli import parser
from tranche.stack import ROOT

README = (ROOT / "README.md").read_text()
SERVICES = ("signal", "safety", "executor", "ledger", "dashboard")


def shell_lines() -> list[str]:
    """Every line of the README's ``sh`` and ``console`` blocks, continuations joined, prompts
    and comments removed."""
    lines = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.removeprefix("$ ").strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def tranche_commands() -> list[str]:
    return [line for line in shell_lines() if ".venv/bin/tranche " in line]


def test_the_readme_shows_tranche_commands() -> None:
    assert len(tranche_commands()) >= 10


def test_every_command_is_written_the_same_way() -> None:
    bare = [line for line in shell_lines() if re.match(r"tranche\s", line)]
    assert not bare, f"write these as .venv/bin/tranche ...: {bare}"


@pytest.mark.parametrize("line", tranche_commands())
def test_every_tranche_command_in_the_readme_is_accepted(line: str) -> None:
    command = line.split(".venv/bin/tranche ", 1)[1]
    argv = shlex.split(command, comments=True)
    argv = [arg.replace("…", "x") for arg in argv]
    try:
        parser().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"`tranche {command}` is refused by the CLI (exit {error.code})")


def endpoints() -> list[tuple[str, str, str]]:
    """``(path, parameter, what follows the '=')`` of every ``GET /path?param=...`` shown."""
    return re.findall(r"GET (/[\w/{}]+)\?(\w+)=([^`&\s]*)", README)


def openapi_parameters(path: str) -> dict[str, bool]:
    """``{parameter: required}`` of ``GET path`` on whichever service documents it."""
    for service in SERVICES:
        spec = json.loads((ROOT / "docs" / "api" / f"{service}.openapi.json").read_text())
        if path in spec["paths"] and "get" in spec["paths"][path]:
            found = spec["paths"][path]["get"].get("parameters", [])
            return {p["name"]: bool(p.get("required")) for p in found}
    raise AssertionError(f"no service documents GET {path}")


def test_the_readme_names_query_parameters() -> None:
    assert ("/fills", "bot_id", "<bot>") in endpoints()


@pytest.mark.parametrize(("path", "name", "value"), endpoints())
def test_every_query_parameter_exists_and_a_required_one_has_a_value(
    path: str, name: str, value: str
) -> None:
    parameters = openapi_parameters(path)
    assert name in parameters, f"GET {path} takes no {name!r}: {sorted(parameters)}"
    if parameters[name]:
        assert value, f"GET {path}?{name}= reads as optional, but {name} is required"
