"""The ledger: every run and every item's result, in SQL. It is the source of truth for what happened.

Queries run on a SQLAlchemy engine (supplied by prefect-sqlalchemy's SqlAlchemyConnector); the
schema is created or upgraded on first use, one numbered migration at a time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from batchgate.errors import LedgerError
from batchgate.models import ItemResult

metadata = MetaData()

schema_table = Table("batchgate_schema", metadata, Column("version", Integer, nullable=False))

runs = Table(
    "batchgate_runs",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("job_name", String(200), nullable=False),
    Column("job_fingerprint", String(32), nullable=False),
    Column("mode", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("source", String(500)),
    Column("flow_run_id", String(64)),
    Column("parent_run_id", String(80)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("total", Integer, nullable=False, default=0),
    Column("ready", Integer, nullable=False, default=0),
    Column("warnings", Integer, nullable=False, default=0),
    Column("blocked", Integer, nullable=False, default=0),
    Column("filtered_out", Integer, nullable=False, default=0),
    Column("message", Text),
)

items = Table(
    "batchgate_items",
    metadata,
    Column("run_id", String(80), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("item_id", String(200), nullable=False, index=True),
    Column("title", Text),
    Column("location", String(500)),
    Column("status", String(20), nullable=False),
    Column("issues", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("run_id", "seq"),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[runs, items], checkfirst=True)


# Append-only: a migration, once released, never changes; a new schema is a new entry.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
INSERT_CHUNK = 5000


def new_run_id(mode: str, now: datetime | None = None) -> str:
    """A sortable, unique run id such as 20251028T100000Z-dry-run-3f9a."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{mode}-{secrets.token_hex(2)}"


class Ledger:
    """Runs and item results on one SQLAlchemy engine."""

    def __init__(
        self, engine: Engine, migrations: Sequence[Callable[[Connection], None]] | None = None
    ):
        self.engine = engine
        self.migrations = list(MIGRATIONS if migrations is None else migrations)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)

    @property
    def where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _guard(self, action: str) -> Any:
        ledger = self

        class _Guard:
            def __enter__(self) -> None:
                return None

            def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
                if isinstance(exc, SQLAlchemyError):
                    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    raise LedgerError(
                        f"the ledger at {ledger.where} failed while {action}: {reason}. Fix: check "
                        "that the database is running and reachable, and that ledger.url / "
                        "ledger.path in the job file (or --ledger) is right."
                    ) from None
                return False

        return _Guard()

    # --- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._guard("reading its schema version"), self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, schema_table.name):
                return 0
            version = conn.execute(select(func.max(schema_table.c.version))).scalar()
            return int(version or 0)

    def ensure_schema(self) -> int:
        """Create the tables, or apply the migrations this database has not had yet."""
        with self._guard("creating or upgrading its schema"), self.engine.begin() as conn:
            metadata.create_all(conn, tables=[schema_table], checkfirst=True)
            current = int(conn.execute(select(func.max(schema_table.c.version))).scalar() or 0)
            for version, migrate in enumerate(self.migrations, start=1):
                if version > current:
                    migrate(conn)
                    conn.execute(insert(schema_table).values(version=version))
            return max(current, len(self.migrations))

    # --- writes -----------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        job_name: str,
        job_fingerprint: str,
        mode: str,
        source: str,
        flow_run_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        row = {
            "run_id": run_id,
            "job_name": job_name,
            "job_fingerprint": job_fingerprint,
            "mode": mode,
            "status": "running",
            "source": source,
            "flow_run_id": flow_run_id,
            "parent_run_id": parent_run_id,
            "started_at": datetime.now(UTC),
        }
        with self._guard("recording the start of a run"), self.engine.begin() as conn:
            conn.execute(insert(runs).values(**row))

    def record_validation(self, run_id: str, results: Iterable[ItemResult]) -> int:
        """Write one row per item with its status and issues; returns how many were written."""
        now = datetime.now(UTC)
        count = 0
        with self._guard("recording item results"), self.engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for result in results:
                batch.append(
                    {
                        "run_id": run_id,
                        "seq": result.seq,
                        "item_id": result.item_id,
                        "title": result.title,
                        "location": result.location,
                        "status": result.status,
                        "issues": json.dumps([i.as_dict() for i in result.issues]),
                        "recorded_at": now,
                    }
                )
                if len(batch) >= INSERT_CHUNK:
                    conn.execute(insert(items), batch)
                    count, batch = count + len(batch), []
            if batch:
                conn.execute(insert(items), batch)
                count += len(batch)
        return count

    def finish_run(
        self, run_id: str, status: str, message: str | None = None, **counts: int
    ) -> None:
        values = {"status": status, "finished_at": datetime.now(UTC), "message": message, **counts}
        with self._guard("recording the end of a run"), self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))

    # --- reads ------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        query = select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)
        with self._guard("listing runs"), self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, runs.name):
                return []
            return [dict(row._mapping) for row in conn.execute(query)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._guard("reading a run"), self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
            return dict(row._mapping) if row else None

    def item_rows(self, run_id: str) -> list[dict[str, Any]]:
        query = select(items).where(items.c.run_id == run_id).order_by(items.c.seq)
        with self._guard("reading item results"), self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row["issues"] = json.loads(row["issues"])
        return rows


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
