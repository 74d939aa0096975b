"""The ledger: every run and every item's result, in SQL. It is the source of truth for what happened.

Queries run on a SQLAlchemy engine (supplied by prefect-sqlalchemy's SqlAlchemyConnector); the
schema is created or upgraded on first use, one numbered migration at a time.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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
    delete,
    event,
    extract,
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
from batchgate.identity import is_old_style, old_spellings
from batchgate.models import ItemResult
from batchgate.secrets import mask_credentials

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
# Version 6: the frozen plan (each item's validated data and content hash, kept on the dry-run's or
# the run's own item rows), what each write left at the destination (`version`) and whose version
# it replaced (`prev_run_id`), the write-ahead record of a write in flight, DLQ claims, and the
# one-writer hold of each destination (batchgate_holds).
_ITEMS_V6 = [
    Column("content_hash", String(64)),
    Column("data", Text),
    Column("version", String(64)),
    Column("prev_run_id", String(80)),
]
_TARGETS_V6 = [Column("write_ahead", Text), Column("version", String(64))]
_DLQ_V6 = [Column("claimed_by", String(80)), Column("claimed_at", Float)]
CLAIM_START_S = 600.0  # a claim whose retry run never started is free again after this
# Version 8: the items a full run found missing at the destination although the map had them as
# written (a table emptied, items deleted by hand), which it wrote again. Set when a full run ends
# (NULL for other runs); no default, so starting a run never names it (an older schema takes it).
_RUNS_V8 = [Column("missing", Integer)]

runs = Table(
    "batchgate_runs",
    metadata,
    *_runs_columns(),
    *[c.copy() for c in _RUNS_V2 + _RUNS_V3 + _RUNS_V4 + _RUNS_V5 + _RUNS_V8],
)
items = Table(
    "batchgate_items", metadata, *_items_columns(), *[c.copy() for c in _ITEMS_V2 + _ITEMS_V6]
)

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
    *[c.copy() for c in _TARGETS_V5 + _TARGETS_V6],
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
    *[c.copy() for c in _DLQ_V6],
    PrimaryKeyConstraint("run_id", "item_id"),
)

# One writer per destination: the run that holds it, its process, and when the hold lapses unless
# renewed. It lives in the ledger, not in a Prefect server's memory, so a holder that died frees
# the destination after one lease whatever server the next run talks to.
holds = Table(
    "batchgate_holds",
    metadata,
    Column("destination_key", String(300), primary_key=True),
    Column("run_id", String(80), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Version 7: what a dry-run's unique rules have seen (tasks/validate.py), one row per item and
# rule while the run validates: the value's 64-bit hash as a signed integer, the item's position
# and the value as JSON. The process keeps a chunk, not every key; the rows go when it has amended.
# The primary key's index leads with (run_id, rule, key); SQLite keeps the rows in it (no rowid).
seen = Table(
    "batchgate_seen",
    metadata,
    Column("run_id", String(80), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("key", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "rule", "key", "seq"),
    sqlite_with_rowid=False,
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


def _v6(conn: Connection) -> None:
    _add_columns(conn, "batchgate_items", _ITEMS_V6)
    _add_columns(conn, "batchgate_targets", _TARGETS_V6)
    _add_columns(conn, "batchgate_dlq", _DLQ_V6)
    metadata.create_all(conn, tables=[holds], checkfirst=True)


def _v7(conn: Connection) -> None:
    metadata.create_all(conn, tables=[seen], checkfirst=True)


def _v8(conn: Connection) -> None:
    _add_columns(conn, "batchgate_runs", _RUNS_V8)


# Append-only: a migration, once released, never changes; a new schema is a new entry.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8]
INSERT_CHUNK = 5000
SEEN_PAGE = 500  # shared keys read back at a time


DB_NOW = extract("epoch", func.clock_timestamp())
OWN_PLAN = "plan~"  # item rows under OWN_PLAN + a run id: the plan a run made for itself
_ADOPTED: set[tuple[str, str]] = set()  # (ledger, key): its old spellings merged, this process


def db_now(conn: Connection) -> float:
    """The ledger database's clock, in seconds since the epoch: the one clock every process of
    a run shares, whatever its host's clock says (PostgreSQL's `clock_timestamp()`, the moment
    of the call; SQLite is a file on this host: `time.time()` is its clock)."""
    if conn.dialect.name == "sqlite":
        return time.time()
    return float(conn.execute(select(DB_NOW)).scalar_one())


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
                    reason = mask_credentials(
                        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    )
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
        """Create the tables, or apply the migrations this database has not had yet.

        Safe from many processes at once: the check and every migration run in one exclusive
        transaction (SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock), so the second process
        waits and then finds the work done, and a migration stopped half-way is rolled back whole
        (DDL is transactional in both) and done again by the next open.
        """
        if self.schema_version() >= len(self.migrations):
            return self.schema_version()
        with self._guard("creating or upgrading its schema"), self.exclusive("schema") as conn:
            metadata.create_all(conn, tables=[schema_table], checkfirst=True)
            current = int(conn.execute(select(func.max(schema_table.c.version))).scalar() or 0)
            for version, migrate in enumerate(self.migrations, start=1):
                if version > current:
                    migrate(conn)
                    conn.execute(insert(schema_table).values(version=version))
            return max(current, len(self.migrations))

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[Connection]:
        """A transaction that no other process holds `name` during: SQLite takes the database's
        write lock up front (BEGIN IMMEDIATE, waiting out busy_timeout), PostgreSQL an advisory
        transaction lock on the name. Commits on success, rolls back on any error."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                             {"k": zlib.crc32(f"batchgate:{name}".encode())})  # fmt: skip
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

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

    def record_validation(
        self,
        run_id: str,
        results: Iterable[ItemResult],
        frozen: dict[int, tuple[str, str]] | None = None,
    ) -> int:
        """Write one row per item with its status and issues; returns how many were written.

        `frozen` (seq -> content hash, data as JSON) freezes the plan: a sample and the full run
        after an approval write exactly this content, never a newer read of the source.
        """
        now = datetime.now(UTC)
        frozen = frozen or {}
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
                "content_hash": frozen.get(result.seq, (None, None))[0],
                "data": frozen.get(result.seq, (None, None))[1],
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

    def frozen_plan(self, plan_id: str) -> list[dict[str, Any]]:
        """The items a dry-run froze, in source order, whole (runs read `frozen_plan_slice`)."""
        return self.frozen_plan_slice(plan_id, -1, None)

    def frozen_plan_slice(
        self, plan_id: str, after_seq: int, limit: int | None
    ) -> list[dict[str, Any]]:
        """Up to `limit` items of a frozen plan after `after_seq` (all of them for None), in
        source order: status, issues, content hash and data. A run reads its plan a slice at a
        time, so it never holds the whole plan."""
        query = (
            select(items.c.seq, items.c.item_id, items.c.title, items.c.location, items.c.status,
                   items.c.issues, items.c.content_hash, items.c.data)
            .where(items.c.run_id == plan_id, items.c.seq > after_seq)
            .order_by(items.c.seq)
            .limit(limit)
        )  # fmt: skip
        with self._guard("reading the frozen plan"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        if any(r["status"] != "blocked" and r["data"] is None for r in rows):
            raise LedgerError(
                f"run {plan_id} has no frozen plan (it is not a dry-run of this version). Fix: "
                "run the dry-run again and review its sample."
            )
        return rows

    def item_slice(
        self, run_id: str, after_seq: int, limit: int, statuses: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Up to `limit` item rows of a run after `after_seq`, in source order (issues parsed)."""
        query = select(items).where(items.c.run_id == run_id, items.c.seq > after_seq)
        if statuses is not None:
            query = query.where(items.c.status.in_(list(statuses)))
        query = query.order_by(items.c.seq).limit(limit)
        with self._guard("reading item results"), self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row["issues"] = json.loads(row["issues"])
        return rows

    def items_by_seq(self, run_id: str, seqs: Sequence[int]) -> list[dict[str, Any]]:
        """The item rows of a run at these positions (issues parsed)."""
        out: list[dict[str, Any]] = []
        with self._guard("reading item results"), self.engine.connect() as conn:
            for i in range(0, len(seqs), 500):
                query = select(items).where(
                    items.c.run_id == run_id, items.c.seq.in_(list(seqs[i : i + 500]))
                )
                out += [dict(row._mapping) for row in conn.execute(query)]
        for row in out:
            row["issues"] = json.loads(row["issues"])
        return sorted(out, key=lambda r: r["seq"])

    def amend_items(self, run_id: str, rows: Iterable[dict[str, Any]]) -> int:
        """Change recorded items (by seq): status, issues (JSON), content hash and data; for a
        check that needs the whole set (unique), found only after the items were recorded."""
        count = 0
        with self._guard("amending item results"), self.engine.begin() as conn:
            for row in rows:
                conn.execute(
                    update(items)
                    .where(items.c.run_id == run_id, items.c.seq == row["seq"])
                    .values(status=row["status"], issues=row["issues"],
                            content_hash=row["content_hash"], data=row["data"])
                )  # fmt: skip
                count += 1
        return count

    def add_seen(self, run_id: str, rule: str, rows: Sequence[tuple[int, int, str]]) -> None:
        """Record what a unique rule saw in one chunk: (key, seq, value as JSON) rows, the key a
        signed 64-bit hash of the value (one executemany)."""
        if not rows:
            return
        batch = [{"run_id": run_id, "rule": rule, "key": k, "seq": s, "value": v}
                 for k, s, v in rows]  # fmt: skip
        with self._guard("recording the values unique rules have seen"), self.engine.begin() as c:
            c.execute(insert(seen), batch)

    def shared_seen(self, run_id: str, rule: str) -> Iterator[tuple[str, list[int]]]:
        """Every value (JSON) a rule saw more than once, with its owners' seqs in order: the keys
        seen more than once (GROUP BY key HAVING COUNT(*) > 1, a page at a time), then their
        rows, grouped by value within a key, so values whose hashes collide stay apart."""
        where = (seen.c.run_id == run_id, seen.c.rule == rule)
        after: int | None = None
        while True:
            keys_query = select(seen.c.key).where(*where)
            if after is not None:
                keys_query = keys_query.where(seen.c.key > after)
            keys_query = (keys_query.group_by(seen.c.key).having(func.count() > 1)
                          .order_by(seen.c.key).limit(SEEN_PAGE))  # fmt: skip
            with self._guard("reading what unique rules saw"), self.engine.connect() as c:
                keys = list(c.execute(keys_query).scalars())
                owners = c.execute(
                    select(seen.c.key, seen.c.value, seen.c.seq)
                    .where(*where, seen.c.key.in_(keys))
                    .order_by(seen.c.key, seen.c.seq)
                ).all() if keys else []  # fmt: skip
            by_value: dict[tuple[int, str], list[int]] = {}
            for key, value, seq in owners:
                by_value.setdefault((key, value), []).append(seq)
            for (_, value), seqs in by_value.items():
                if len(seqs) > 1:
                    yield value, seqs
            if len(keys) < SEEN_PAGE:
                return
            after = keys[-1]

    def drop_seen(self, run_id: str) -> int:
        """Delete what the unique rules of `run_id` have seen."""
        with self._guard("dropping the values unique rules have seen"), self.engine.begin() as c:
            return int(c.execute(delete(seen).where(seen.c.run_id == run_id)).rowcount or 0)

    def targets_for_items(
        self, destination_key: str, item_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """What this destination holds of these items from earlier runs, by item id (a slice
        of `targets_for`)."""
        out: dict[str, dict[str, Any]] = {}
        with self._guard("reading the destination map"), self.engine.connect() as conn:
            for i in range(0, len(item_ids), 500):
                query = select(targets).where(
                    targets.c.destination_key == destination_key,
                    targets.c.item_id.in_(list(item_ids[i : i + 500])),
                )
                out.update({row.item_id: dict(row._mapping) for row in conn.execute(query)})
        return out

    def plan_items(self, run_id: str, rows: Iterable[dict[str, Any]]) -> int:
        """Record every item of a full run up front (pending, skipped, unchanged or held)."""
        now = datetime.now(UTC)
        blank = {"recorded_at": now, "issues": "[]", "attempts": 0, "action": None,
                 "dest_id": None, "error_type": None, "duration_ms": None, "previous": None,
                 "content_hash": None, "data": None, "version": None,
                 "prev_run_id": None}  # fmt: skip
        planned = ({"run_id": run_id, **blank, **row} for row in rows)
        with self._guard("recording the run's items"), self.engine.begin() as conn:
            return _insert_chunked(conn, planned)

    def drop_items(self, run_id: str) -> int:
        """Delete every item row recorded under `run_id` (a run's own working plan)."""
        with self._guard("dropping a run's working plan"), self.engine.begin() as conn:
            return int(conn.execute(delete(items).where(items.c.run_id == run_id)).rowcount or 0)

    def drop_abandoned_plans(self, prefix: str = OWN_PLAN) -> int:
        """Drop what runs that have ended left behind (a run killed after the ledger marked it
        interrupted, say): their working plans (item rows under `prefix` + a run id) and the
        values their unique rules saw (batchgate_seen, under the run's or its plan's id). What a
        run still running, or unknown, left is kept. Two small reads: one range of the items'
        run-id index, and the seen table's run ids (only validations in flight or abandoned)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        plans = select(items.c.run_id).where(items.c.run_id >= prefix, items.c.run_id < end)
        with self._guard("dropping abandoned plans"), self.engine.begin() as conn:
            found = {row.run_id for row in conn.execute(plans.distinct())}
            validating = {row.run_id for row in conn.execute(select(seen.c.run_id).distinct())}
            base = {r: r[len(prefix) :] if r.startswith(prefix) else r for r in found | validating}
            ended = {
                row.run_id
                for row in conn.execute(
                    select(runs.c.run_id).where(
                        runs.c.run_id.in_(set(base.values())), runs.c.status != "running"
                    )
                )
            }
            gone = [r for r in sorted(found) if base[r] in ended]
            if gone:
                conn.execute(delete(items).where(items.c.run_id.in_(gone)))
            stale = [r for r in sorted(validating) if base[r] in ended]
            if stale:
                conn.execute(delete(seen).where(seen.c.run_id.in_(stale)))
        return len(gone) + len(stale)

    def targets_for(self, destination_key: str) -> dict[str, dict[str, Any]]:
        """What this destination holds from earlier runs, by item id."""
        query = select(targets).where(targets.c.destination_key == destination_key)
        with self._guard("reading the destination map"), self.engine.connect() as conn:
            return {row.item_id: dict(row._mapping) for row in conn.execute(query)}

    def mark_intent(
        self,
        destination_key: str,
        item_id: str,
        run_id: str,
        dest_id: str | None,
        write_ahead: dict[str, Any],
    ) -> dict[str, Any]:
        """Before a write (write-ahead): see `mark_intents`. Returns the write-ahead in force."""
        return self.mark_intents(destination_key, run_id, [(item_id, dest_id, write_ahead)])[
            item_id
        ]

    def mark_intents(
        self,
        destination_key: str,
        run_id: str,
        entries: Sequence[tuple[str, str | None, dict[str, Any]]],
    ) -> dict[str, dict[str, Any]]:
        """Before a group's write (write-ahead), in one transaction: what the destination held
        before it, per item (item id, dest id, write-ahead), so a crash between the write and
        its ledger row never loses the original version, and a write whose answer was lost is
        looked up first by the next attempt or run.

        A write-ahead left by an earlier write that never finished is kept: it, not what that
        write left behind, is the original. Returns the write-ahead in force, by item id.
        """
        now = datetime.now(UTC)
        ids = [item_id for item_id, _, _ in entries]
        in_force: dict[str, dict[str, Any]] = {}
        inserts, updates = [], []
        with self._guard("recording write intents"), self.engine.begin() as conn:
            existing = {
                row.item_id: row
                for row in conn.execute(select(targets).where(
                    targets.c.destination_key == destination_key, targets.c.item_id.in_(ids)))
            }  # fmt: skip
            for item_id, dest_id, ahead in entries:
                row = existing.get(item_id)
                kept = row is not None and row.state == "intent" and bool(row.write_ahead)
                in_force[item_id] = json.loads(row.write_ahead) if kept else ahead
                values = {"b_item": item_id, "dest_id": dest_id or (row.dest_id if kept else None),
                          "write_ahead": row.write_ahead if kept
                          else json.dumps(ahead, default=str)}  # fmt: skip
                (updates if row is not None else inserts).append(values)
            common = {"content_hash": None, "state": "intent", "run_id": run_id, "updated_at": now}
            if inserts:
                conn.execute(insert(targets), [
                    {"destination_key": destination_key, "item_id": v["b_item"], "draft": None,
                     "dest_id": v["dest_id"], "write_ahead": v["write_ahead"], **common}
                    for v in inserts])  # fmt: skip
            if updates:
                conn.execute(
                    update(targets)
                    .where(targets.c.destination_key == destination_key,
                           targets.c.item_id == bindparam("b_item"))
                    .values(dest_id=bindparam("dest_id"), write_ahead=bindparam("write_ahead"),
                            **common),
                    updates,
                )  # fmt: skip
        return in_force

    def target(self, destination_key: str, item_id: str) -> dict[str, Any] | None:
        query = select(targets).where(
            targets.c.destination_key == destination_key, targets.c.item_id == item_id
        )
        with self._guard("reading the destination map"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def pending_reviews(self, destination_key: str) -> dict[str, str]:
        """Items of this destination written by a sample whose pipeline awaits its review:
        item id -> the pipeline run. No other run may publish or overwrite them meanwhile."""
        sample, pipe = runs.alias("s"), runs.alias("p")
        query = (
            select(targets.c.item_id, pipe.c.run_id)
            .join(sample, sample.c.run_id == targets.c.run_id)
            .join(pipe, pipe.c.run_id == sample.c.parent_run_id)
            .where(targets.c.destination_key == destination_key, sample.c.mode == "sample",
                   pipe.c.status == "awaiting-approval")
        )  # fmt: skip
        with self._guard("reading pending reviews"), self.engine.connect() as conn:
            return {item_id: run_id for item_id, run_id in conn.execute(query)}

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
             "b_previous": json.dumps(w["previous"], default=str) if w.get("previous") else None,
             "b_version": w.get("version"), "b_prev_run": w.get("prev_run_id")}
            for w in writes
        ]  # fmt: skip
        target_rows = [
            {"destination_key": destination_key, "item_id": w["item_id"], "dest_id": w["dest_id"],
             "content_hash": w["content_hash"], "state": "written", "run_id": run_id,
             "updated_at": now, "draft": int(bool(w.get("draft"))), "write_ahead": None,
             "version": w.get("version")}
            for w in writes
        ]  # fmt: skip
        mark_written = (
            update(items)
            .where(items.c.run_id == run_id, items.c.seq == bindparam("b_seq"))
            .values(status="succeeded", action=bindparam("b_action"), dest_id=bindparam("b_dest"),
                    attempts=bindparam("b_attempts"), duration_ms=bindparam("b_ms"),
                    previous=bindparam("b_previous"), version=bindparam("b_version"),
                    prev_run_id=bindparam("b_prev_run"), recorded_at=now)
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
        changing = ("dest_id", "content_hash", "state", "run_id", "updated_at", "draft",
                    "write_ahead", "version")  # fmt: skip
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

    def hold_item(self, run_id: str, seq: int, reason: str, fix: str) -> None:
        """The item was not written, on purpose (e.g. it changed since its review)."""
        issues = json.dumps([{"rule": "held", "field": "", "severity": "blocked",
                              "message": reason, "fix": fix, "impact": None}])  # fmt: skip
        with self._guard("recording a held item"), self.engine.begin() as conn:
            conn.execute(update(items).where(items.c.run_id == run_id, items.c.seq == seq)
                         .values(status="held", issues=issues, recorded_at=datetime.now(UTC)))  # fmt: skip

    def held_items(self, run_id: str) -> list[dict[str, Any]]:
        """The run's held items: id, title and why, with the fix."""
        query = (
            select(items.c.item_id, items.c.title, items.c.issues)
            .where(items.c.run_id == run_id, items.c.status == "held")
            .order_by(items.c.seq)
        )
        with self._guard("reading held items"), self.engine.connect() as conn:
            rows = list(conn.execute(query))
        out = []
        for item_id, title, issues in rows:
            issue = (json.loads(issues) or [{}])[0]
            out.append({"item_id": item_id, "title": title, "reason": issue.get("message", ""),
                        "fix": issue.get("fix", "")})  # fmt: skip
        return out

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
            .where(
                dlq.c.run_id == run_id,
                dlq.c.item_id.in_(list(item_ids)),
                dlq.c.state.in_(["open", "retrying"]),
            )
            .values(state=state, note=note)
        )
        with self._guard("updating the dead-letter queue"), self.engine.begin() as conn:
            return int(conn.execute(query).rowcount or 0)

    def mark_published(self, destination_key: str, dest_ids: Sequence[str]) -> None:
        """The destination confirmed these items live: only now are they no longer drafts."""
        if not dest_ids:
            return
        query = (
            update(targets)
            .where(targets.c.destination_key == destination_key,
                   targets.c.dest_id.in_(list(dest_ids)), targets.c.state == "written")
            .values(draft=0)
        )  # fmt: skip
        with self._guard("recording published items"), self.engine.begin() as conn:
            conn.execute(query)

    def claim_dlq(self, run_id: str, item_ids: Sequence[str], claimer: str) -> list[str]:
        """Claim open dead letters for one retry run, atomically: two retries of the same run
        never both get an entry. An entry claimed by a run that is no longer running (it died,
        or ended without closing it) can be claimed again. Returns the items this call got."""
        ended = select(runs.c.run_id).where(runs.c.status != "running")
        got = []
        with self._guard("claiming dead letters"), self.exclusive(f"dlq:{run_id}") as conn:
            now = db_now(conn)
            claimable = (dlq.c.state == "open") | (
                (dlq.c.state == "retrying")
                & (dlq.c.claimed_by.in_(ended) | (dlq.c.claimed_at < now - CLAIM_START_S)
                   & dlq.c.claimed_by.not_in(select(runs.c.run_id)))
            )  # fmt: skip
            for item_id in item_ids:
                changed = conn.execute(
                    update(dlq)
                    .where(dlq.c.run_id == run_id, dlq.c.item_id == item_id, claimable)
                    .values(
                        state="retrying",
                        claimed_by=claimer,
                        claimed_at=now,
                        note=f"claimed by {claimer}",
                    )  # fmt: skip
                ).rowcount
                if changed:
                    got.append(item_id)
        return got

    # --- one writer per destination -------------------------------------------------------

    def acquire_hold(
        self,
        destination_key: str,
        run_id: str,
        holder: str,
        lease_s: float,
        is_dead: Callable[[str], bool],
    ) -> dict[str, Any] | None:
        """Take the destination for `run_id`, or return the hold that stands in the way.

        A hold whose lease lapsed, or whose holder is a process on this host that is gone, is
        taken over (its run is marked interrupted). Decided in one exclusive transaction, so two
        processes asking at once never both get it. The first time, rows under the key's old
        spellings become the key's (`adopt_key`); a live hold under one stands in the way.
        """
        key = holds.c.destination_key == destination_key
        is_old = old_spellings(destination_key)
        with (
            self._guard("taking the destination's hold"),
            self.exclusive(f"hold:{destination_key}") as conn,
        ):
            now = db_now(conn)  # leases on the database's clock: hosts' clocks may disagree
            if is_old is not None and (self.where, destination_key) not in _ADOPTED:
                other = self._adopt(conn, destination_key, is_old, now, is_dead)
                if other is not None:
                    return {**other, "now": now}
            row = conn.execute(select(holds).where(key)).first()
            if row is not None and row.run_id != run_id:
                if row.expires_at > now and not is_dead(row.holder):
                    return {**row._mapping, "now": now}
                conn.execute(
                    update(runs)
                    .where(runs.c.run_id == row.run_id, runs.c.status == "running")
                    .values(status="interrupted",
                            message="the process stopped without finishing (its hold was freed)")
                )  # fmt: skip
            values = {"run_id": run_id, "holder": holder, "acquired_at": now,
                      "expires_at": now + lease_s}  # fmt: skip
            if row is None:
                conn.execute(insert(holds).values(destination_key=destination_key, **values))
            else:
                conn.execute(update(holds).where(key).values(**values))
        if is_old is not None:
            _ADOPTED.add((self.where, destination_key))
        return None

    def adopt_key(
        self,
        destination_key: str,
        is_old: Callable[[str], bool],
        is_dead: Callable[[str], bool] = lambda holder: False,
    ) -> dict[str, Any] | None:
        """Make the rows stored under old spellings of a destination's key (those `is_old`
        accepts, among keys an earlier version wrote: `sql:<url>#<table>`) the key's own: the
        destination map, the runs and the holds. Where several spellings map one item, the most
        recently updated row is kept. A live hold under an old spelling (a run of an earlier
        version writing there) stops it: that hold is returned and nothing changes; a lapsed one
        is dropped and its run marked interrupted. One exclusive transaction, the hold's."""
        with (
            self._guard("adopting the destination's old keys"),
            self.exclusive(f"hold:{destination_key}") as conn,
        ):
            other = self._adopt(conn, destination_key, is_old, db_now(conn), is_dead)
        return other

    def _adopt(
        self,
        conn: Connection,
        key: str,
        is_old: Callable[[str], bool],
        now: float,
        is_dead: Callable[[str], bool],
    ) -> dict[str, Any] | None:
        found = {*_distinct(conn, targets.c.destination_key),
                 *conn.execute(select(runs.c.destination_key).distinct()).scalars(),
                 *conn.execute(select(holds.c.destination_key)).scalars()}  # fmt: skip
        olds = sorted(k for k in found if k and k != key and is_old_style(k) and is_old(k))
        if not olds:
            return None
        stale = conn.execute(select(holds).where(holds.c.destination_key.in_(olds))).all()
        for row in stale:
            if row.expires_at > now and not is_dead(row.holder):
                return dict(row._mapping)
        conn.execute(
            update(runs)
            .where(runs.c.run_id.in_([row.run_id for row in stale]), runs.c.status == "running")
            .values(status="interrupted",
                    message="the process stopped without finishing (its hold was freed)")
        )  # fmt: skip
        conn.execute(delete(holds).where(holds.c.destination_key.in_(olds)))
        every, other = [key, *olds], targets.alias("other")
        newer = (
            select(other.c.item_id)
            .where(other.c.destination_key.in_(every), other.c.item_id == targets.c.item_id,
                   (other.c.updated_at > targets.c.updated_at)
                   | ((other.c.updated_at == targets.c.updated_at)
                      & (other.c.destination_key > targets.c.destination_key)))
            .exists()
        )  # fmt: skip
        conn.execute(delete(targets).where(targets.c.destination_key.in_(every), newer))
        for table in (targets, runs):
            conn.execute(update(table).where(table.c.destination_key.in_(olds))
                         .values(destination_key=key))  # fmt: skip
        return None

    def renew_hold(self, destination_key: str, run_id: str, lease_s: float) -> bool:
        """Extend our hold; False if it is no longer ours (it lapsed and was taken over)."""
        with self._guard("renewing the destination's hold"), self.engine.begin() as conn:
            query = (
                update(holds)
                .where(holds.c.destination_key == destination_key, holds.c.run_id == run_id)
                .values(expires_at=db_now(conn) + lease_s)
            )
            return bool(conn.execute(query).rowcount)

    def release_hold(self, destination_key: str, run_id: str) -> None:
        query = holds.delete().where(
            holds.c.destination_key == destination_key, holds.c.run_id == run_id
        )
        with self._guard("releasing the destination's hold"), self.engine.begin() as conn:
            conn.execute(query)

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

    def written_items_page(
        self, run_id: str, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` of `written_items`, newest first, before `before_seq` (None: from the
        newest): only what a rollback needs (no `data`), so it never holds the whole run."""
        query = (
            select(items.c.seq, items.c.item_id, items.c.dest_id, items.c.action,
                   items.c.previous, items.c.version, items.c.prev_run_id)
            .where(items.c.run_id == run_id, items.c.status == "succeeded",
                   items.c.action.in_(["created", "updated"]))
            .order_by(items.c.seq.desc())
            .limit(limit)
        )  # fmt: skip
        if before_seq is not None:
            query = query.where(items.c.seq < before_seq)
        with self._guard("reading written items"), self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["previous"] = json.loads(row["previous"]) if row["previous"] else None
        return rows

    def mark_rolled_back(
        self, run_id: str, undone: Sequence[tuple[dict[str, Any], str | None]], destination_key: str
    ) -> None:
        """These items are back as they were before the run, in one transaction: (row, version
        the restore left) each. A created one is forgotten by the map; an updated one holds the
        version of the run it replaced again (so that run can still be rolled back) and is
        marked stale, so the next full run writes it again."""
        if not undone:
            return
        now = datetime.now(UTC)
        mine = (targets.c.destination_key == destination_key) & (targets.c.run_id == run_id)
        with self._guard("recording a rollback"), self.engine.begin() as conn:
            for start in range(0, len(undone), 500):
                part = undone[start : start + 500]
                conn.execute(update(items).where(
                    items.c.run_id == run_id, items.c.seq.in_([r["seq"] for r, _ in part]))
                    .values(status="rolled-back"))  # fmt: skip
                created = [r["item_id"] for r, _ in part if r["action"] == "created"]
                if created:
                    conn.execute(targets.delete().where(mine, targets.c.item_id.in_(created)))
            for row, version in undone:
                if row["action"] != "created":
                    conn.execute(update(targets).where(mine, targets.c.item_id == row["item_id"])
                                 .values(content_hash=None, run_id=row.get("prev_run_id") or run_id,
                                         version=version, updated_at=now))  # fmt: skip

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
        """When the last successful read-and-write of this job's source started (its items were
        read after that moment), or None before the first: a sync's start, or the start of a
        pipeline's dry-run whose frozen plan its full run then wrote (complete or partial)."""
        done = ["complete", "partial-success"]
        syncs = select(runs.c.started_at).where(
            runs.c.mode == "sync", runs.c.job_name == job_name, runs.c.source == source,
            runs.c.outcome.in_(done),
        )  # fmt: skip
        written = runs.alias("written")
        pipelines = select(runs.c.started_at).where(
            runs.c.mode == "dry-run", runs.c.job_name == job_name, runs.c.source == source,
            runs.c.parent_run_id.is_not(None),
            select(written.c.run_id).where(
                written.c.parent_run_id == runs.c.parent_run_id, written.c.mode == "full",
                written.c.outcome.in_(done),
            ).exists(),
        )  # fmt: skip
        query = select(func.max(syncs.union_all(pipelines).subquery().c.started_at))
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


def _distinct(conn: Connection, column: Any) -> list[str]:
    """The distinct values of an indexed column, one index probe each (not a scan of the rows)."""
    values: list[str] = []
    while True:
        query = select(func.min(column))
        value = conn.execute(query.where(column > values[-1]) if values else query).scalar()
        if value is None:
            return values
        values.append(value)


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
