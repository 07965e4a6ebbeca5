"""The README's safety tables are copies of docs/safety.md's: they must not drift apart."""

from __future__ import annotations

from tranche.apidocs import ROOT


def tables(text: str) -> list[str]:
    found, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    return found


def test_the_readme_carries_the_rules_and_breakers_tables_of_docs_safety() -> None:
    readme = tables((ROOT / "README.md").read_text())
    safety = tables((ROOT / "docs" / "safety.md").read_text())
    rules = next(t for t in safety if "`NO_MARKET_DATA`" in t)
    breakers = next(t for t in safety if "`LOSING_STREAK`" in t)
    assert rules in readme and breakers in readme
