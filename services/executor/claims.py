"""Which executor instance looks after which order: two instances never sync one order at once.

Several executor instances share one database and one durable consumer (deploy/). Each order has
a claim naming the instance that places and polls it; every instance renews its own heartbeat
row every ``HEARTBEAT_S``. An instance acts on an order only while it holds the claim, and takes
over (compare-and-set on the claim row) an order whose claimant stopped renewing for
``TTL_S`` — it crashed, or stopped cleanly and released its claims at once — or that has no claim
(older rows, adopted orders). Each instance scans for such orders every ``HEARTBEAT_S``.

So each order is polled by one instance (the rate limit and the backoff per order stay
meaningful), and a killed instance's orders are resumed by another within ``TTL_S``. The
heartbeat runs on its own task, so a slow exchange call never lets a claim lapse; only a process
stalled for ``TTL_S`` does, which is why it is several heartbeats long. Clocks of the instances
must agree to well within ``TTL_S`` (NTP).

Works the same on PostgreSQL and SQLite (plain conditional updates); a SQLite file is one
machine's, so in practice SQLite means one instance.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from services.executor.store import OrderRow
from shared.contracts import FINAL_ORDER_STATUSES
from shared.db import UtcDateTime, create_tables, insert_row
from shared.money import utc_now

HEARTBEAT_S = 3.0
TTL_S = 15.0


class InstanceRow(SQLModel, table=True):
    __tablename__ = "executor_instances_v1"

    instance_id: str = Field(primary_key=True, max_length=128)
    alive_until: datetime = Field(sa_type=UtcDateTime)


class ClaimRow(SQLModel, table=True):
    __tablename__ = "executor_claims_v1"

    client_order_id: str = Field(primary_key=True, max_length=128)
    instance_id: str = Field(index=True, max_length=128)


CLAIM_TABLES: list[type[SQLModel]] = [InstanceRow, ClaimRow]
_CLAIMS = ClaimRow.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_CLAIMANT = sa_select(_CLAIMS.c.instance_id).where(_CLAIMS.c.client_order_id == bindparam("cid"))


def new_instance_id() -> str:
    """Unique per process: a restarted instance is a new one (its old claims lapse)."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Claims:
    def __init__(
        self,
        engine: Engine,
        instance_id: str | None = None,
        ttl_s: float = TTL_S,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.engine = engine
        self.instance_id = instance_id or new_instance_id()
        self.ttl = timedelta(seconds=ttl_s)
        self.clock = clock
        create_tables(engine, CLAIM_TABLES)

    def heartbeat(self) -> None:
        """Say this instance is alive for another ``ttl`` (only this instance writes its row)."""
        with Session(self.engine) as session:
            row = session.get(InstanceRow, self.instance_id) or InstanceRow(
                instance_id=self.instance_id, alive_until=self.clock()
            )
            row.alive_until = self.clock() + self.ttl
            session.add(row)
            session.commit()

    def release(self) -> None:
        """A clean stop: the others take this instance's orders over at their next scan."""
        with Session(self.engine) as session:
            row = session.get(InstanceRow, self.instance_id)
            if row is not None:
                row.alive_until = self.clock() - timedelta(seconds=1)
                session.add(row)
                session.commit()

    def stake(self, session: Session, client_order_id: str) -> None:
        """Claim a new order in the transaction that records it."""
        insert_row(session, ClaimRow, client_order_id=client_order_id, instance_id=self.instance_id)

    def hold(self, client_order_id: str) -> bool:
        """Whether this instance may act on the order now: it holds the claim, or it just took
        it from nobody or from an instance that stopped renewing."""
        with Session(self.engine) as session:
            return self.hold_in(session, client_order_id)

    def hold_in(self, session: Session, client_order_id: str) -> bool:
        """:meth:`hold` in the caller's session (it commits a claim it stakes or takes over),
        so a sync reads its order in the session that checked the claim."""
        # Core, compiled once: the claim is asked before every sync of every order.
        holder_id = session.connection().execute(_CLAIMANT, {"cid": client_order_id}).scalar()
        if holder_id is None:
            try:
                self.stake(session, client_order_id)
                session.commit()
                return True
            except IntegrityError:  # another instance claimed it a moment ago
                session.rollback()
                holder_id = (
                    session.connection().execute(_CLAIMANT, {"cid": client_order_id}).scalar()
                )
                if holder_id is None:
                    return False
        if holder_id == self.instance_id:
            return True
        holder = session.get(InstanceRow, holder_id)
        if holder is not None and holder.alive_until > self.clock():
            return False
        taken = session.exec(
            update(ClaimRow)
            .where(
                col(ClaimRow.client_order_id) == client_order_id,
                col(ClaimRow.instance_id) == holder_id,
            )
            .values(instance_id=self.instance_id)
        )
        session.commit()
        return taken.rowcount == 1

    def orphans(self) -> list[str]:
        """Orders not final whose claimant is gone (or that nobody claimed), oldest first."""
        now = self.clock()
        with Session(self.engine) as session:
            query = (
                select(OrderRow.client_order_id)
                .join(
                    ClaimRow,
                    col(ClaimRow.client_order_id) == col(OrderRow.client_order_id),
                    isouter=True,
                )
                .join(
                    InstanceRow,
                    col(InstanceRow.instance_id) == col(ClaimRow.instance_id),
                    isouter=True,
                )
                .where(
                    col(OrderRow.status).not_in(list(FINAL_ORDER_STATUSES)),
                    or_(
                        col(ClaimRow.client_order_id).is_(None),
                        col(InstanceRow.instance_id).is_(None),
                        col(InstanceRow.alive_until) <= now,
                    ),
                )
                .order_by(col(OrderRow.created_at))
            )
            return list(session.exec(query))
