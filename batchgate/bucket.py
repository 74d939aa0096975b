"""One rate across processes: a shared pacer whose slots come from a row in the ledger.

Every shard of a run writes to the same destination from its own process, perhaps on another
machine, so a pacer in one process cannot keep the destination's limit. The row
`batchgate_buckets` (one per destination) holds the next free slot on one clock, the ledger
database's (`db_now`: PostgreSQL's `clock_timestamp()`, read in the same transaction; a SQLite
ledger is a file on this host, whose clock is `time.time()`), so the hosts' clocks need not
agree; a process takes a block of `block` consecutive slots in one short transaction
(PostgreSQL `SELECT ... FOR UPDATE` under an advisory lock, SQLite `BEGIN IMMEDIATE`), turns
them into its own clock, and hands them out locally, each at its own time.
Slots are spaced 1/rate apart whoever holds them, so the shards together never go faster than
the rate, and a block costs one round trip however short the spacing (a generic cell rate
algorithm, rather than a count of tokens: no burst when several blocks are taken at once).

Also here: the run-level control row (`batchgate_shard_control`) the parent writes and its
shards read: one circuit breaker for all of them (paused until, or aborted with a reason),
and each shard's attempt and heartbeat, so a shard whose worker died is run again. Its times
(`until`, `seen`) are the ledger database's too, and each read gives that clock's `now` with
the row, so a host whose clock is off neither looks silent nor pauses for the wrong time.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from batchgate.ledger import DB_NOW as _NOW
from batchgate.ledger import Ledger, db_now
from batchgate.pacer import Pacer

metadata = MetaData()
buckets = Table(
    "batchgate_buckets",
    metadata,
    Column("destination_key", String(300), primary_key=True),
    Column("next_slot", Float, nullable=False),  # the next free slot, in database time
)
control = Table(
    "batchgate_shard_control",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("shard", Integer, primary_key=True),  # -1: the run itself (the breaker's decision)
    Column("state", String(20), nullable=False),  # run: running|paused|aborted; shard: running|done
    Column("until", Float),  # paused until (database time)
    Column("attempt", Integer, nullable=False, default=0),
    Column("flow_run_id", String(64)),
    Column("seen", Float),  # the shard's last heartbeat (database time)
    Column("message", Text),
)
RUN = -1
# a running shard silent this long (database time) lost its worker: the parent starts it again
STALE_S = float(os.environ.get("BATCHGATE_SHARD_STALE_S", "20"))
# a shard sends no write once its last heartbeat is this old (monotonic): the rest of STALE_S
# covers a write already in flight before the parent may replace it
LEASE_S = STALE_S / 2
_CREATED: set[str] = set()
_CREATED_LOCK = threading.Lock()


def ensure_tables(ledger: Ledger) -> None:
    """Create this module's tables in the ledger's database, once per process."""
    where = ledger.where
    with _CREATED_LOCK:
        if where in _CREATED:
            return
        with ledger.exclusive("bucket-schema") as conn:
            metadata.create_all(conn, checkfirst=True)
        _CREATED.add(where)


def _with_now(conn: Connection, query: Any) -> tuple[Any, bool]:
    """`query` with the database's clock as a column `now` (read with the rows), when it has one."""
    if conn.dialect.name == "sqlite":
        return query, False
    return query.add_columns(_NOW.label("now")), True


def take_slots(ledger: Ledger, key: str, interval: float, block: int, burst_s: float) -> float:
    """Reserve `block` consecutive slots `interval` apart; returns the time of the first, on
    this process's `time.time()`.

    The bucket keeps its slots in database time (`db_now`, read in the same transaction), so
    processes whose clocks disagree still space their slots 1/rate apart; the first is turned
    into this host's clock by the offset measured around that read. A bucket unused for a
    while starts at most `burst_s` in the past, so an idle destination allows a short burst and
    no more.
    """
    with ledger.exclusive(f"bucket:{key}") as conn:
        row = _locked_row(conn, key)
        before = time.time()
        now = db_now(conn)
        offset = 0.0 if conn.dialect.name == "sqlite" else now - (before + time.time()) / 2
        first = max(now - burst_s, row if row is not None else now - burst_s)
        after = first + block * interval
        if row is None:
            conn.execute(insert(buckets).values(destination_key=key, next_slot=after))
        else:
            conn.execute(
                update(buckets).where(buckets.c.destination_key == key).values(next_slot=after)
            )
    return first - offset


def _locked_row(conn: Connection, key: str) -> float | None:
    query = select(buckets.c.next_slot).where(buckets.c.destination_key == key)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    value = conn.execute(query).scalar()
    return None if value is None else float(value)


class SharedPacer(Pacer):
    """A `Pacer` whose slots are taken, a block at a time, from the destination's shared bucket.

    Its `interval` is the spacing the bucket hands out; a 429 (`hold`, `slow_down`) still holds
    or slows this process's writers, as the local pacer does. `fence`, if set, is called once a
    slot has come, right before the caller sends its request: it raises to stop the request
    (a shard that was replaced, flows/full_shard.py).
    """

    def __init__(self, ledger: Ledger, key: str, rate_per_s: float, block: int = 4,
                 burst_s: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        super().__init__(rate_per_s, clock=time.time, sleep=sleep)
        ensure_tables(ledger)
        self.ledger, self.key, self.block, self.burst_s = ledger, key, max(1, block), burst_s
        self._slots: list[float] = []
        self.taken = 0  # blocks taken from the bucket, for the benchmark
        self.fence: Callable[[], None] | None = None

    def acquire(self) -> float:
        asked = self._clock()
        with self._turn:
            now = self._clock()
            # a slot that passed unused stays unused: taking it late would crowd another shard's
            while self._slots and self._slots[0] < now - self.interval:
                self._slots.pop(0)
            if not self._slots:
                first = take_slots(self.ledger, self.key, self.interval, self.block, self.burst_s)
                self._slots = [first + i * self.interval for i in range(self.block)]
                self.taken += 1
            slot = self._slots.pop(0)
            while True:
                now = self._clock()
                with self._hold_lock:
                    wait_until = max(slot, self._hold_until, self._last + self.base_interval)
                if wait_until <= now:
                    break
                self._sleep(wait_until - now)
            self._last = self._clock()
        fence = self.fence
        if fence is not None:
            fence()
        return max(self._last - asked, 0.0)


# --- the run's control row: one breaker for every shard, and each shard's heartbeat ------------


def set_run_state(ledger: Ledger, run_id: str, state: str, pause_s: float | None = None,
                  message: str | None = None) -> None:  # fmt: skip
    """The parent's decision for every shard: running, paused (for `pause_s`, until a time on
    the database's clock), or aborted (why)."""
    at_now = {"until": pause_s} if pause_s is not None else {}
    _upsert(ledger, run_id, RUN, at_now, state=state, until=None, message=message)


def run_state(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """The run's control row, with `now`: the database's clock as it was read."""
    with ledger.engine.connect() as conn:
        query, has_now = _with_now(
            conn, select(control).where(control.c.run_id == run_id, control.c.shard == RUN)
        )
        row = conn.execute(query).first()
        now = db_now(conn) if not has_now or row is None else None
    if row is None:
        return {"state": "running", "until": None, "message": None, "now": now}
    out = dict(row._mapping)
    out["now"] = float(out["now"]) if has_now else now
    return out


def start_attempt(ledger: Ledger, run_id: str, shard: int, attempt: int, flow_run_id: str) -> None:
    """The parent starts (or starts again) a shard: only this attempt may write for it."""
    _upsert(ledger, run_id, shard, {"seen": 0.0}, state="running", attempt=attempt,
            flow_run_id=flow_run_id, message=None)  # fmt: skip


def heartbeat(
    ledger: Ledger, run_id: str, shard: int, attempt: int, state: str = "running"
) -> bool:
    """The shard is alive (or done), as of the database's clock; False if a newer attempt
    replaced this one: stop writing."""
    with ledger.exclusive(f"shard:{run_id}:{shard}") as conn:
        row = conn.execute(
            select(control.c.attempt).where(control.c.run_id == run_id, control.c.shard == shard)
        ).first()
        if row is not None and row.attempt != attempt:
            return False
        values = {"seen": db_now(conn), "state": state, "attempt": attempt}
        if row is None:
            conn.execute(insert(control).values(run_id=run_id, shard=shard, **values))
        else:
            conn.execute(
                update(control)
                .where(control.c.run_id == run_id, control.c.shard == shard)
                .values(**values)
            )
    return True


def shard_rows(ledger: Ledger, run_id: str) -> dict[int, dict[str, Any]]:
    """Each shard's control row, with `now`: the database's clock as the rows were read."""
    with ledger.engine.connect() as conn:
        query, has_now = _with_now(
            conn, select(control).where(control.c.run_id == run_id, control.c.shard != RUN)
        )
        rows = list(conn.execute(query))
        now = None if has_now else db_now(conn)
    out = {}
    for row in rows:
        values = dict(row._mapping)
        values["now"] = float(values["now"]) if has_now else now
        out[row.shard] = values
    return out


def silent_for(row: dict[str, Any], since: float | None = None) -> float:
    """How long (database time) a shard has given no sign of life: since its last heartbeat or
    its attempt's start (`seen`), or `since` (database time, e.g. when it was seen running),
    whichever came last. Compared against STALE_S by the parent."""
    return float(row["now"]) - max(float(row.get("seen") or 0.0), since or 0.0)


def _upsert(ledger: Ledger, run_id: str, shard: int, at_now: dict[str, float],
            **values: Any) -> None:  # fmt: skip
    """Insert or update a control row; each `at_now` column is set to the database's clock
    plus its offset, read in the same transaction."""
    ensure_tables(ledger)
    key = (control.c.run_id == run_id) & (control.c.shard == shard)
    with ledger.exclusive(f"shard:{run_id}:{shard}") as conn:
        if at_now:
            now = db_now(conn)
            values.update({column: now + offset for column, offset in at_now.items()})
        if conn.execute(select(control.c.run_id).where(key)).first() is None:
            values.setdefault("attempt", 0)
            conn.execute(insert(control).values(run_id=run_id, shard=shard, **values))
        else:
            conn.execute(update(control).where(key).values(**values))
