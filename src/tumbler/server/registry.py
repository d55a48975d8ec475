"""Sandbox records in SQL: what the server created, so that a restarted server knows it again.

SQLite (WAL mode) by default, any SQLAlchemy URL otherwise (Postgres works). Every method is
blocking and short; the service calls them from a worker thread. `last_active` changes on every
request, so the service keeps it in memory and writes it back in batches (`touch_many`).
"""
from __future__ import annotations

import itertools
import json
import time

from sqlalchemy import (Float, Integer, String, Text, bindparam, create_engine, delete, event,
                        insert, select, update)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from tumbler import wire
from tumbler.runtime.spec import SandboxSpec, SandboxState


class Base(DeclarativeBase):
    pass


class SandboxRow(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created: Mapped[float] = mapped_column(Float)
    last_active: Mapped[float] = mapped_column(Float)
    ttl_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    labels_json: Mapped[str] = mapped_column(Text, default="{}")
    runtime: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


# One sandbox as the registry knows it: the wire's SandboxOut is the record itself (times: unix
# seconds). SandboxRow above is only how it is stored.
SandboxRecord = wire.SandboxOut


class TransitionRow(Base):
    """One change of a sandbox's state (ROCK's state_history), kept until the sandbox goes."""

    __tablename__ = "state_history"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)


def _from_row(row: SandboxRow) -> SandboxRecord:
    return SandboxRecord(id=row.id, spec=SandboxSpec.model_validate_json(row.spec_json),
                         state=SandboxState(row.state), created=row.created,
                         last_active=row.last_active, ttl_s=row.ttl_s, expires_at=row.expires_at,
                         runtime=row.runtime, error=row.error)


class Registry:
    """The table of sandboxes. Thread-safe (one SQLAlchemy session per call)."""

    def __init__(self, url: str):
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}} \
            if url.startswith("sqlite") else {"pool_pre_ping": True}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def add(self, record: SandboxRecord) -> None:
        self.write_many([("add", (record,))])

    def write_many(self, writes: list[tuple[str, tuple]]) -> None:
        """Several ("add", (record,)) and ("set_state", (id, state, error)) writes in one
        transaction, in order: a burst of creates costs one commit, not one each, and each
        run of writes of one kind is one executemany per table (the ORM's unit of work made
        a burst of 1,000 pooled creates spend a sixth of the server's time here)."""
        now = time.time()
        with self._session.begin() as s:
            for kind, run in itertools.groupby(writes, key=lambda w: w[0]):
                args = [a for _, a in run]
                if kind == "add":
                    records = [r for (r,) in args]
                    s.execute(insert(_SANDBOXES), [_row(r) for r in records])
                    s.execute(insert(_HISTORY), [{"sandbox_id": r.id, "state": r.state.value,
                                                  "at": r.created} for r in records])
                else:
                    s.execute(_SET_STATE, [{"b_id": sid, "state": state.value, "error": error,
                                            "last_active": now} for sid, state, error in args])
                    s.execute(insert(_HISTORY), [{"sandbox_id": sid, "state": state.value,
                                                  "at": now} for sid, state, _ in args])

    def get(self, sandbox_id: str) -> SandboxRecord | None:
        with self._session() as s:
            row = s.get(SandboxRow, sandbox_id)
            return _from_row(row) if row else None

    def list(self) -> list[SandboxRecord]:
        with self._session() as s:
            return [_from_row(r) for r in s.scalars(select(SandboxRow).order_by(SandboxRow.created))]

    def set_state(self, sandbox_id: str, state: SandboxState, error: str | None = None) -> None:
        self.write_many([("set_state", (sandbox_id, state, error))])

    def history(self, sandbox_id: str) -> list[tuple[str, float]]:
        """The sandbox's states, oldest first, each with when it began (unix seconds)."""
        with self._session() as s:
            rows = s.scalars(select(TransitionRow).where(TransitionRow.sandbox_id == sandbox_id)
                             .order_by(TransitionRow.seq))
            return [(r.state, r.at) for r in rows]

    def set_expires(self, sandbox_id: str, expires_at: float | None) -> None:
        """A new removal deadline (unix seconds; None: none), as E2B's set_timeout gives."""
        with self._session.begin() as s:
            s.execute(update(SandboxRow).where(SandboxRow.id == sandbox_id)
                      .values(expires_at=expires_at))

    def touch_many(self, last_active: dict[str, float]) -> None:
        """Write back last-active times (unix seconds) gathered in memory."""
        if not last_active:
            return
        with self._session.begin() as s:
            for sid, t in last_active.items():
                s.execute(update(SandboxRow).where(SandboxRow.id == sid).values(last_active=t))

    def delete(self, sandbox_id: str) -> None:
        with self._session.begin() as s:
            row = s.get(SandboxRow, sandbox_id)
            if row is not None:
                s.delete(row)
            s.execute(delete(TransitionRow).where(TransitionRow.sandbox_id == sandbox_id))

    def close(self) -> None:
        self.engine.dispose()


def _row(record: SandboxRecord) -> dict:
    return {"id": record.id, "spec_json": record.spec.model_dump_json(),
            "state": record.state.value, "created": record.created,
            "last_active": record.last_active, "ttl_s": record.ttl_s,
            "expires_at": record.expires_at, "labels_json": json.dumps(record.labels),
            "runtime": record.runtime, "error": record.error}


_SANDBOXES = SandboxRow.__table__
_HISTORY = TransitionRow.__table__
_SET_STATE = (update(_SANDBOXES).where(_SANDBOXES.c.id == bindparam("b_id"))
              .values(state=bindparam("state"), error=bindparam("error"),
                      last_active=bindparam("last_active")))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; synchronous=NORMAL is durable across a process kill
    # (only a power loss can drop the last transactions).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
