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
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    bindparam,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from batchgate.errors import LedgerError
from batchgate.models import ItemResult

metadata = MetaData()

schema_table = Table("batchgate_schema", metadata, Column("version", Integer, nullable=False))


def _runs_columns() -> list[Column]:
    return [
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
    ]


def _items_columns() -> list[Any]:
    return [
        Column("run_id", String(80), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("item_id", String(200), nullable=False, index=True),
        Column("title", Text),
        Column("location", String(500)),
        Column("status", String(20), nullable=False),
        Column("issues", Text, nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("run_id", "seq"),
    ]


# Columns and tables added by schema version 2 (the full run).
_RUNS_V2 = [
    Column("destination_key", String(300)),
    Column("succeeded", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("pending", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("success_rate", Float),
    Column("outcome", String(20)),
    Column("duration_s", Float),
]
_ITEMS_V2 = [
    Column("action", String(20)),
    Column("dest_id", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error_type", String(20)),
    Column("duration_ms", Integer),
    Column("previous", Text),
]

# Version 3: who holds the destination's concurrency slots, so a killed run's can be freed.
_RUNS_V3 = [Column("holder", String(200)), Column("lease_id", String(64))]
# Version 4: the job's settings (secrets masked), so a run can be rolled back by its id alone.
_RUNS_V4 = [Column("job_json", Text)]
# Version 5: a run's report as printed (the sample's, for the approval prompt and UI form), and
# whether a target was written as a draft (so an approved sample is published in place).
_RUNS_V5 = [Column("report", Text)]
_TARGETS_V5 = [Column("draft", Integer)]

runs = Table(
    "batchgate_runs",
    metadata,
    *_runs_columns(),
    *[c.copy() for c in _RUNS_V2 + _RUNS_V3 + _RUNS_V4 + _RUNS_V5],
)
items = Table("batchgate_items", metadata, *_items_columns(), *[c.copy() for c in _ITEMS_V2])

targets = Table(
    "batchgate_targets",
    metadata,
    Column("destination_key", String(300), nullable=False),
    Column("item_id", String(200), nullable=False),
    Column("dest_id", String(200)),
    Column("content_hash", String(64)),
    Column("state", String(16), nullable=False),  # intent: a create was sent; written: confirmed
    Column("run_id", String(80), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    *[c.copy() for c in _TARGETS_V5],
    PrimaryKeyConstraint("destination_key", "item_id"),
)

attempts = Table(
    "batchgate_attempts",
    metadata,
    Column("run_id", String(80), nullable=False, index=True),
    Column("item_id", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("error_type", String(20), nullable=False),
    Column("status_code", Integer),
    Column("message", Text, nullable=False),
)

dlq = Table(
    "batchgate_dlq",
    metadata,
    Column("run_id", String(80), nullable=False),
    Column("item_id", String(200), nullable=False),
    Column("item_name", Text),
    Column("source_url", Text),
    Column("error_type", String(20), nullable=False),
    Column("status_code", Integer),
    Column("message", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("history", Text, nullable=False),
    Column("recommendations", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False, default="open"),  # open | retried | skipped
    Column("note", Text),
    PrimaryKeyConstraint("run_id", "item_id"),
)


def _v1(conn: Connection) -> None:
    v1 = MetaData()
    Table("batchgate_runs", v1, *_runs_columns())
    Table("batchgate_items", v1, *_items_columns())
    v1.create_all(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    for table, columns in (("batchgate_runs", _RUNS_V2), ("batchgate_items", _ITEMS_V2)):
        for column in columns:
            kind = column.type.compile(dialect=conn.dialect)
            default = " DEFAULT 0" if column.default is not None else ""
            null = " NOT NULL" if not column.nullable else ""
            conn.execute(
                text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}{default}{null}")
            )
    metadata.create_all(conn, tables=[targets, attempts, dlq], checkfirst=True)


def _add_columns(conn: Connection, table: str, columns: list[Column]) -> None:
    # A table created by an earlier migration from the current metadata has them already.
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    for column in columns:
        if column.name in present:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = " DEFAULT 0" if column.default is not None else ""
        null = " NOT NULL" if not column.nullable else ""
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}{default}{null}"))


def _v3(conn: Connection) -> None:
    _add_columns(conn, "batchgate_runs", _RUNS_V3)


def _v4(conn: Connection) -> None:
    _add_columns(conn, "batchgate_runs", _RUNS_V4)


def _v5(conn: Connection) -> None:
    _add_columns(conn, "batchgate_runs", _RUNS_V5)
    _add_columns(conn, "batchgate_targets", _TARGETS_V5)


# Append-only: a migration, once released, never changes; a new schema is a new entry.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5]
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
        tune_sqlite(engine)

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
        job_json: str | None = None,
    ) -> None:
        row = {
            "job_json": job_json,
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
        rows = (
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
            for result in results
        )
        with self._guard("recording item results"), self.engine.begin() as conn:
            return _insert_chunked(conn, rows)

    def finish_run(
        self, run_id: str, status: str, message: str | None = None, **counts: int
    ) -> None:
        values = {"status": status, "finished_at": datetime.now(UTC), "message": message, **counts}
        with self._guard("recording the end of a run"), self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))

    # --- full runs ------------------------------------------------------------------------

    def plan_items(self, run_id: str, rows: Iterable[dict[str, Any]]) -> int:
        """Record every item of a full run up front (pending, skipped or unchanged)."""
        now = datetime.now(UTC)
        blank = {"recorded_at": now, "issues": "[]", "attempts": 0, "action": None,
                 "dest_id": None, "error_type": None, "duration_ms": None, "previous": None}  # fmt: skip
        planned = ({"run_id": run_id, **blank, **row} for row in rows)
        with self._guard("recording the run's items"), self.engine.begin() as conn:
            return _insert_chunked(conn, planned)

    def targets_for(self, destination_key: str) -> dict[str, dict[str, Any]]:
        """What this destination holds from earlier runs, by item id."""
        query = select(targets).where(targets.c.destination_key == destination_key)
        with self._guard("reading the destination map"), self.engine.connect() as conn:
            return {row.item_id: dict(row._mapping) for row in conn.execute(query)}

    def mark_intent(self, destination_key: str, item_id: str, run_id: str) -> None:
        """Before a create: if we die before hearing back, the next run looks the item up first."""
        row = {"destination_key": destination_key, "item_id": item_id, "dest_id": None,
               "content_hash": None, "state": "intent", "run_id": run_id,
               "updated_at": datetime.now(UTC), "draft": None}  # fmt: skip
        with self._guard("recording a write intent"), self.engine.begin() as conn:
            conn.execute(self._upsert_targets_statement(conn), [row])

    def record_writes(
        self, run_id: str, destination_key: str, writes: list[dict[str, Any]]
    ) -> None:
        """The destination accepted these items: their rows become succeeded (the commit marker)."""
        if not writes:
            return
        now = datetime.now(UTC)
        item_rows = [
            {"b_seq": w["seq"], "b_action": w["action"], "b_dest": w["dest_id"],
             "b_attempts": w["attempts"], "b_ms": w["duration_ms"],
             "b_previous": json.dumps(w["previous"]) if w.get("previous") else None}
            for w in writes
        ]  # fmt: skip
        target_rows = [
            {"destination_key": destination_key, "item_id": w["item_id"], "dest_id": w["dest_id"],
             "content_hash": w["content_hash"], "state": "written", "run_id": run_id,
             "updated_at": now, "draft": int(bool(w.get("draft")))}
            for w in writes
        ]  # fmt: skip
        mark_written = (
            update(items)
            .where(items.c.run_id == run_id, items.c.seq == bindparam("b_seq"))
            .values(status="succeeded", action=bindparam("b_action"), dest_id=bindparam("b_dest"),
                    attempts=bindparam("b_attempts"), duration_ms=bindparam("b_ms"),
                    previous=bindparam("b_previous"), recorded_at=now)
        )  # fmt: skip
        with self._guard("recording written items"), self.engine.begin() as conn:
            conn.execute(mark_written, item_rows)
            conn.execute(self._upsert_targets_statement(conn), target_rows)

    def _upsert_targets_statement(self, conn: Connection) -> Any:
        dialect = conn.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise LedgerError(f"the ledger supports SQLite and PostgreSQL, not {dialect}")
        module = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
        statement = module.insert(targets)
        changing = ("dest_id", "content_hash", "state", "run_id", "updated_at", "draft")
        return statement.on_conflict_do_update(
            index_elements=[targets.c.destination_key, targets.c.item_id],
            set_={name: statement.excluded[name] for name in changing},
        )

    def record_attempt(
        self,
        run_id: str,
        item_id: str,
        attempt: int,
        error_type: str,
        status_code: int | None,
        message: str,
    ) -> None:
        row = {
            "run_id": run_id,
            "item_id": item_id,
            "attempt": attempt,
            "at": datetime.now(UTC),
            "error_type": error_type,
            "status_code": status_code,
            "message": message[:2000],
        }
        with self._guard("recording an attempt"), self.engine.begin() as conn:
            conn.execute(insert(attempts).values(**row))

    def attempt_history(self, run_id: str, item_id: str) -> list[dict[str, Any]]:
        query = (
            select(
                attempts.c.attempt,
                attempts.c.at,
                attempts.c.error_type,
                attempts.c.status_code,
                attempts.c.message,
            )
            .where(attempts.c.run_id == run_id, attempts.c.item_id == item_id)
            .order_by(attempts.c.attempt)
        )
        with self._guard("reading attempts"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def record_failure(
        self,
        run_id: str,
        seq: int,
        item_id: str,
        *,
        item_name: str,
        source_url: str | None,
        error_type: str,
        status_code: int | None,
        message: str,
        recommendations: list[str],
    ) -> int:
        """The item failed for good: its row becomes failed and it enters the dead-letter queue.
        Returns the attempts it had, from the recorded history."""
        history = self.attempt_history(run_id, item_id)
        entry = {
            "run_id": run_id,
            "item_id": item_id,
            "item_name": item_name,
            "source_url": source_url,
            "error_type": error_type,
            "status_code": status_code,
            "message": message[:2000],
            "attempts": max(len(history), 1),
            "history": json.dumps(history, default=str),
            "recommendations": json.dumps(recommendations),
            "created_at": datetime.now(UTC),
            "state": "open",
            "note": None,
        }
        with self._guard("recording a failed item"), self.engine.begin() as conn:
            conn.execute(
                update(items)
                .where(items.c.run_id == run_id, items.c.seq == seq)
                .values(
                    status="failed",
                    error_type=error_type,
                    attempts=entry["attempts"],
                    recorded_at=entry["created_at"],
                )
            )
            conn.execute(insert(dlq).values(**entry))
        return entry["attempts"]

    def status_counts(self, run_id: str) -> dict[str, int]:
        query = (
            select(items.c.status, func.count())
            .where(items.c.run_id == run_id)
            .group_by(items.c.status)
        )
        with self._guard("counting item results"), self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    def dead_letters(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every dead letter (of one run), whatever its state."""
        return self.dlq_entries(run_id, states=None)

    def dlq_entries(
        self,
        run_id: str | None = None,
        item_ids: Sequence[str] | None = None,
        error_type: str | None = None,
        states: Sequence[str] | None = ("open",),
    ) -> list[dict[str, Any]]:
        """Dead letters matching every filter given (by default the open ones), oldest first."""
        query = select(dlq).order_by(dlq.c.created_at, dlq.c.item_id)
        if run_id:
            query = query.where(dlq.c.run_id == run_id)
        if item_ids:
            query = query.where(dlq.c.item_id.in_(list(item_ids)))
        if error_type:
            query = query.where(dlq.c.error_type == error_type)
        if states:
            query = query.where(dlq.c.state.in_(list(states)))
        with self._guard("reading the dead-letter queue"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["history"] = json.loads(row["history"])
            row["recommendations"] = json.loads(row["recommendations"])
        return rows

    def set_dlq_state(self, run_id: str, item_ids: Sequence[str], state: str, note: str) -> int:
        """Close dead letters (retried or skipped) with a note; returns how many changed."""
        query = (
            update(dlq)
            .where(dlq.c.run_id == run_id, dlq.c.item_id.in_(list(item_ids)), dlq.c.state == "open")
            .values(state=state, note=note)
        )
        with self._guard("updating the dead-letter queue"), self.engine.begin() as conn:
            return int(conn.execute(query).rowcount or 0)

    def set_lease(self, run_id: str, holder: str | None, lease_id: str | None) -> None:
        with self._guard("recording the run's lease"), self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id)
                         .values(holder=holder, lease_id=lease_id))  # fmt: skip

    def leases_held(self, destination_key: str) -> list[dict[str, Any]]:
        """Runs on this destination that still hold concurrency slots, by the ledger's account."""
        query = select(runs.c.run_id, runs.c.holder, runs.c.lease_id).where(
            runs.c.destination_key == destination_key, runs.c.lease_id.is_not(None)
        )
        with self._guard("reading leases"), self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def written_items(self, run_id: str) -> list[dict[str, Any]]:
        """Items this run created or updated and has not rolled back, newest first."""
        query = (
            select(items)
            .where(items.c.run_id == run_id, items.c.status == "succeeded",
                   items.c.action.in_(["created", "updated"]))
            .order_by(items.c.seq.desc())
        )  # fmt: skip
        with self._guard("reading written items"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["previous"] = json.loads(row["previous"]) if row["previous"] else None
        return rows

    def mark_rolled_back(self, run_id: str, seq: int, destination_key: str, item_id: str,
                         action: str) -> None:  # fmt: skip
        """The item is back as it was before the run: a created one is forgotten by the map, an
        updated one is marked stale so the next full run writes it again."""
        key = (targets.c.destination_key == destination_key) & (targets.c.item_id == item_id)
        with self._guard("recording a rollback"), self.engine.begin() as conn:
            conn.execute(update(items).where(items.c.run_id == run_id, items.c.seq == seq)
                         .values(status="rolled-back"))  # fmt: skip
            if action == "created":
                conn.execute(targets.delete().where(key))
            else:
                conn.execute(update(targets).where(key).values(content_hash=None))

    def mark_interrupted(self, run_id: str) -> None:
        with self._guard("marking a run interrupted"), self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.status == "running")
                .values(status="interrupted", message="the process stopped without finishing")
            )

    # --- reads ------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        query = select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)
        with self._guard("listing runs"), self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, runs.name):
                return []
            return [dict(row._mapping) for row in conn.execute(query)]

    def runs_of(self, parent_run_id: str, mode: str | None = None) -> list[dict[str, Any]]:
        """Runs started by a pipeline, or retries of a run: newest first."""
        query = select(runs).where(runs.c.parent_run_id == parent_run_id)
        if mode:
            query = query.where(runs.c.mode == mode)
        query = query.order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
        with self._guard("listing child runs"), self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def watermark(self, job_name: str, source: str) -> datetime | None:
        """When the last successful sync of this job's source started (its items were read
        after that moment), or None before the first."""
        query = select(func.max(runs.c.started_at)).where(
            runs.c.mode == "sync", runs.c.job_name == job_name, runs.c.source == source,
            runs.c.outcome.in_(["complete", "partial-success"]),
        )  # fmt: skip
        with self._guard("reading the sync watermark"), self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # SQLite keeps no time zone
        return value

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


def _insert_chunked(conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
    """Insert item rows in chunks (one executemany each), so 100,000 rows never sit in one list."""
    count, batch = 0, []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_CHUNK:
            conn.execute(insert(items), batch)
            count, batch = count + len(batch), []
    if batch:
        conn.execute(insert(items), batch)
        count += len(batch)
    return count


def tune_sqlite(engine: Engine) -> None:
    """WAL, NORMAL sync and a busy timeout on every connection of a SQLite engine (once)."""
    if engine.dialect.name == "sqlite" and not event.contains(engine, "connect", _sqlite_pragmas):
        event.listen(engine, "connect", _sqlite_pragmas)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives a killed process (what resume needs); only a power loss
    # can drop the last commits, and a rerun then writes those items again, idempotently.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
