"""Generate the API documents: each service's AsyncAPI (FastStream) and OpenAPI (FastAPI).

    python -m tranche.apidocs [OUT_DIR]      (``make docs``; default docs/api)

Generated, never written by hand; a test checks the committed files are current.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.service import Service
    from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent


def documents(data_dir: Path) -> dict[str, Any]:
    """``{"signal.asyncapi.json": {...}, "signal.openapi.json": {...}, ...}``"""
    from services.dashboard.app import build as build_dashboard
    from services.dashboard.config import DashboardSettings
    from services.executor.app import build as build_executor
    from services.executor.config import ExecutorSettings
    from services.ledger.app import build as build_ledger
    from services.ledger.config import LedgerSettings
    from services.safety.app import build as build_safety
    from services.safety.config import SafetySettings
    from services.signal.app import build as build_signal
    from services.signal.config import SignalSettings

    builders: dict[str, tuple[Callable[[Any], Service], type[ServiceSettings]]] = {
        "signal": (build_signal, SignalSettings),
        "safety": (build_safety, SafetySettings),
        "executor": (build_executor, ExecutorSettings),
        "ledger": (build_ledger, LedgerSettings),
        "dashboard": (build_dashboard, DashboardSettings),
    }
    from shared.signing import new_key_pair

    private_key, public_key = new_key_pair()  # throwaway pairs: signing is not documented here
    order_private_key, order_public_key = new_key_pair()
    reads_order_events = {"order_signing_public_key": order_public_key}
    extra: dict[str, dict[str, Any]] = {
        "signal": {"replay": "", "signing_public_key": public_key} | reads_order_events,
        "safety": {"signing_key": private_key} | reads_order_events,
        "executor": {"signing_public_key": public_key, "order_signing_key": order_private_key},
        "ledger": reads_order_events,
        "dashboard": reads_order_events,
    }
    out: dict[str, Any] = {}
    for name, (build, settings_class) in builders.items():
        fields: dict[str, Any] = {"data_dir": data_dir, **extra.get(name, {})}
        service = build(settings_class(**fields))
        out[f"{name}.asyncapi.json"] = service.asyncapi()
        out[f"{name}.openapi.json"] = service.http_app().openapi()
        service.engine.dispose()
    return out


def render(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "api"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for filename, document in documents(Path(scratch)).items():
            (target / filename).write_text(render(document))
            print(f"wrote {target / filename}")


if __name__ == "__main__":
    main()
