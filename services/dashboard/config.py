"""The dashboard's settings (prefix ``TRANCHE_``). It holds no secret: the operator's safety token
comes with each halt or resume request from the page and is never stored here; the executor's
public key (``TRANCHE_ORDER_SIGNING_PUBLIC_KEY``) is public."""

from __future__ import annotations

from pydantic import Field

from shared.settings import DEFAULT_PORTS, ReadsOrderEvents

WATCHED = ("signal", "safety", "executor", "ledger")


class DashboardSettings(ReadsOrderEvents):
    service: str = "dashboard"
    service_urls: dict[str, str] = Field(default_factory=dict)
    """Where the other services answer, as JSON (``{"safety": "http://127.0.0.1:8102"}``); a
    missing one is ``http://<TRANCHE_HTTP_HOST>:<its default port>``."""
    health_every_s: float = Field(default=5.0, gt=0)
    """Seconds between two ``GET /ready`` of each service (one probe, however many pages)."""
    push_every_s: float = Field(default=0.25, ge=0)
    """Seconds a page's stream waits after a change before sending, so a burst of messages is
    one redraw (at most four a second by default)."""

    def url_of(self, service: str) -> str:
        found = self.service_urls.get(service)
        return found or f"http://{self.http_host}:{DEFAULT_PORTS[service]}"
