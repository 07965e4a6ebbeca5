"""The message and HTTP API documents are generated, and the committed copies are current."""

from __future__ import annotations

from pathlib import Path

from tranche.apidocs import ROOT, documents, render


def test_committed_api_documents_match_the_code(tmp_path: Path) -> None:
    fresh = documents(tmp_path)
    stale = [
        name
        for name, document in fresh.items()
        if not (ROOT / "docs" / "api" / name).exists()
        or (ROOT / "docs" / "api" / name).read_text() != render(document)
    ]
    assert not stale, f"run `make docs` and commit: {stale}"


def test_every_durable_subject_a_service_writes_is_documented(tmp_path: Path) -> None:
    fresh = documents(tmp_path)
    channels = {
        name: set(doc["channels"]) for name, doc in fresh.items() if name.endswith("asyncapi.json")
    }
    assert "tranche.intents.{bot_id}" in channels["signal.asyncapi.json"]
    assert "tranche.orders.approved.{bot_id}" in channels["safety.asyncapi.json"]
    assert "tranche.orders.events.{bot_id}" in channels["executor.asyncapi.json"]
    assert "tranche.ledger.positions.{bot_id}" in channels["ledger.asyncapi.json"]
