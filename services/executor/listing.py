"""The exchange's product rules, kept current (production): fetched through the SDK
(``get_product``) at start and on a schedule, stored, and read when an approval is sized.

Mock mode does not use this: the mock exchange trades by the bots file's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import Gauge
from sqlmodel import Session

from services.executor.exchanges.base import ExchangeError
from services.executor.gateway import Gateway
from services.executor.products import ProductRules
from services.executor.store import ProductRulesRow
from shared.logging import get_logger
from shared.money import utc_now
from shared.service import Service

log = get_logger("tranche.executor.listing")

RULES_AGE = Gauge(
    "tranche_executor_product_rules_age_seconds",
    "Seconds since the exchange's rules of a product were fetched",
    ["product_id"],
)

NOT_LISTED = "not listed"


class Listing:
    """What the exchange says each product may trade at. ``rules_for`` answers from memory,
    then storage, then the exchange; a product the exchange does not list is ``None``."""

    def __init__(
        self,
        service: Service,
        gateway: Gateway,
        products: Callable[[], Iterable[str]],
        refresh: timedelta,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.service = service
        self.gateway = gateway
        self.products = products
        self.refresh = refresh
        self.clock = clock
        self._known: dict[str, ProductRules | str] = {}

    async def rules_for(self, product_id: str) -> ProductRules | None:
        """The product's rules (fetched now if never seen or older than the refresh period;
        the stored ones if the exchange cannot be asked). Raises :class:`ExchangeError` when
        there are none at all."""
        known = self._known.get(product_id)
        if known is None:
            known = await self.service.read(lambda session: _load(session, product_id))
            if known is not None:
                self._known[product_id] = known
        if known is None or self._stale(known):
            try:
                return await self.fetch(product_id)
            except ExchangeError:
                if known is None:
                    raise
                log.warning("product_rules.stale_kept", product_id=product_id)
        return None if isinstance(known, str) else known  # the only text kept is NOT_LISTED

    def _stale(self, known: ProductRules | str) -> bool:
        if isinstance(known, str):
            return True  # "not listed" is asked again every time: it may be listed now
        return known.fetched_at is None or self.clock() - known.fetched_at > self.refresh

    async def fetch(self, product_id: str) -> ProductRules | None:
        rules = await self.gateway.call("get_product", self.gateway.exchange.product, product_id)
        now = self.clock()

        def store(session: Session) -> None:
            _save(session, product_id, rules, now)

        await self.service.transact(store)
        self._known[product_id] = rules if rules is not None else NOT_LISTED
        if rules is None:
            log.warning("product_rules.not_listed", product_id=product_id)
        else:
            RULES_AGE.labels(product_id).set(0)
            log.info(
                "product_rules.fetched",
                product_id=product_id,
                base_min_size=str(rules.base_min_size),
                base_increment=str(rules.base_increment),
                quote_increment=str(rules.quote_increment),
                quote_min_size=str(rules.quote_min_size),
            )
        return rules

    async def refresh_all(self) -> None:
        """Fetch every product's rules once (at start); a failure is logged, not fatal: the
        stored rules serve, and an order without any is refused."""
        for product_id in sorted(set(self.products()) | set(self._known)):
            try:
                await self.fetch(product_id)
            except ExchangeError as error:
                log.warning("product_rules.fetch_failed", product_id=product_id, code=error.code)
            except Exception as error:  # storage trouble: the next round tries again
                log.error("product_rules.store_failed", product_id=product_id, error=repr(error))

    async def keep_current(
        self, quiet_s: float | None = None, last_answer: Callable[[], float | None] = lambda: None
    ) -> None:
        """Fetch every product's rules now and then on the schedule, forever (a background
        job, so an unreachable exchange never holds up the start). ``quiet_s``: when no call
        reached the exchange for that long, ask for one product's rules (the exchange health
        stays current without orders)."""
        next_refresh = 0.0
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now >= next_refresh:
                next_refresh = now + self.refresh.total_seconds()
                await self.refresh_all()
                self._report_age()
            elif quiet_s is not None:
                seen = last_answer()
                if seen is None or now - seen >= quiet_s:
                    await self._heartbeat()
            await asyncio.sleep(min(self.refresh.total_seconds(), quiet_s or float("inf")))

    async def _heartbeat(self) -> None:
        products = sorted(set(self.products()) | set(self._known))
        if products:
            try:
                await self.fetch(products[0])
            except Exception as error:  # told to the health already; try at the next tick
                log.debug("exchange.heartbeat_failed", error=repr(error))

    def _report_age(self) -> None:
        for product_id, known in self._known.items():
            if isinstance(known, ProductRules) and known.fetched_at is not None:
                age = (self.clock() - known.fetched_at).total_seconds()
                RULES_AGE.labels(product_id).set(age)


def _load(session: Session, product_id: str) -> ProductRules | str | None:
    row = session.get(ProductRulesRow, product_id)
    if row is None:
        return None
    if not row.listed:
        return NOT_LISTED
    return ProductRules(**{name: getattr(row, name) for name in _FIELDS})


def _save(session: Session, product_id: str, rules: ProductRules | None, now: datetime) -> None:
    if rules is None:
        zero: dict[str, Any] = dict.fromkeys(_REQUIRED_DECIMALS, Decimal(0))
        row = ProductRulesRow(product_id=product_id, listed=False, fetched_at=now, **zero)
    else:
        values = asdict(rules) | {"product_id": product_id, "fetched_at": now}
        row = ProductRulesRow(listed=True, **values)
    session.merge(row)


_FIELDS = tuple(field.name for field in fields(ProductRules))
_REQUIRED_DECIMALS = ("base_increment", "quote_increment", "base_min_size", "quote_min_size")
