"""One rate across processes: a shared pacer whose slots come from a row in the ledger.

Every shard of a run writes to the same destination from its own process, perhaps on another
machine, so a pacer in one process cannot keep the destination's limit. The row
`batchgate_buckets` (one per destination) holds the next free slot on a common clock (the
database's wall clock as seen by each process: `time.time()`); a process takes a block of
`block` consecutive slots in one short transaction (PostgreSQL `SELECT ... FOR UPDATE` under an
advisory lock, SQLite `BEGIN IMMEDIATE`), then hands them out locally, each at its own time.
Slots are spaced 1/rate apart whoever holds them, so the shards together never go faster than
the rate, and a block costs one round trip however short the spacing (a generic cell rate
algorithm, rather than a count of tokens: no burst when several blocks are taken at once).

Also here: the run-level control row (`batchgate_shard_control`) the parent writes and its
shards read: one circuit breaker for all of them (paused until, or aborted with a reason),
and each shard's attempt and heartbeat, so a shard whose worker died is run again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from batchgate.ledger import Ledger
from batchgate.pacer import Pacer

metadata = MetaData()
buckets = Table(
    "batchgate_buckets",
    metadata,
    Column("destination_key", String(300), primary_key=True),
    Column("next_slot", Float, nullable=False),  # time.time() of the next free slot
)
control = Table(
    "batchgate_shard_control",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("shard", Integer, primary_key=True),  # -1: the run itself (the breaker's decision)
    Column("state", String(20), nullable=False),  # run: running|paused|aborted; shard: running|done
    Column("until", Float),  # paused until (time.time())
    Column("attempt", Integer, nullable=False, default=0),
    Column("flow_run_id", String(64)),
    Column("seen", Float),  # the shard's last heartbeat
    Column("message", Text),
)
RUN = -1
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


def take_slots(ledger: Ledger, key: str, interval: float, block: int, burst_s: float) -> float:
    """Reserve `block` consecutive slots `interval` apart; returns the time of the first.

    A bucket unused for a while starts at most `burst_s` in the past, so an idle destination
    allows a short burst and no more.
    """
    with ledger.exclusive(f"bucket:{key}") as conn:
        now = time.time()
        row = _locked_row(conn, key)
        first = max(now - burst_s, row if row is not None else now - burst_s)
        after = first + block * interval
        if row is None:
            conn.execute(insert(buckets).values(destination_key=key, next_slot=after))
        else:
            conn.execute(
                update(buckets).where(buckets.c.destination_key == key).values(next_slot=after)
            )
    return first


def _locked_row(conn: Connection, key: str) -> float | None:
    query = select(buckets.c.next_slot).where(buckets.c.destination_key == key)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    value = conn.execute(query).scalar()
    return None if value is None else float(value)


class SharedPacer(Pacer):
    """A `Pacer` whose slots are taken, a block at a time, from the destination's shared bucket.

    Its `interval` is the spacing the bucket hands out; a 429 (`hold`, `slow_down`) still holds
    or slows this process's writers, as the local pacer does.
    """

    def __init__(self, ledger: Ledger, key: str, rate_per_s: float, block: int = 4,
                 burst_s: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        super().__init__(rate_per_s, clock=time.time, sleep=sleep)
        ensure_tables(ledger)
        self.ledger, self.key, self.block, self.burst_s = ledger, key, max(1, block), burst_s
        self._slots: list[float] = []
        self.taken = 0  # blocks taken from the bucket, for the benchmark

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
        return max(self._last - asked, 0.0)


# --- the run's control row: one breaker for every shard, and each shard's heartbeat ------------


def set_run_state(ledger: Ledger, run_id: str, state: str, until: float | None = None,
                  message: str | None = None) -> None:  # fmt: skip
    """The parent's decision for every shard: running, paused (until), or aborted (why)."""
    _upsert(ledger, run_id, RUN, state=state, until=until, message=message)


def run_state(ledger: Ledger, run_id: str) -> dict[str, Any]:
    with ledger.engine.connect() as conn:
        row = conn.execute(
            select(control).where(control.c.run_id == run_id, control.c.shard == RUN)
        ).first()
    return dict(row._mapping) if row else {"state": "running", "until": None, "message": None}


def start_attempt(ledger: Ledger, run_id: str, shard: int, attempt: int, flow_run_id: str) -> None:
    """The parent starts (or starts again) a shard: only this attempt may write for it."""
    _upsert(ledger, run_id, shard, state="running", attempt=attempt, flow_run_id=flow_run_id,
            seen=time.time(), message=None)  # fmt: skip


def heartbeat(
    ledger: Ledger, run_id: str, shard: int, attempt: int, state: str = "running"
) -> bool:
    """The shard is alive (or done); False if a newer attempt replaced this one: stop writing."""
    with ledger.exclusive(f"shard:{run_id}:{shard}") as conn:
        row = conn.execute(
            select(control.c.attempt).where(control.c.run_id == run_id, control.c.shard == shard)
        ).first()
        if row is not None and row.attempt != attempt:
            return False
        values = {"seen": time.time(), "state": state, "attempt": attempt}
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
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(control).where(control.c.run_id == run_id, control.c.shard != RUN)
        )
        return {row.shard: dict(row._mapping) for row in rows}


def _upsert(ledger: Ledger, run_id: str, shard: int, **values: Any) -> None:
    ensure_tables(ledger)
    key = (control.c.run_id == run_id) & (control.c.shard == shard)
    with ledger.exclusive(f"shard:{run_id}:{shard}") as conn:
        if conn.execute(select(control.c.run_id).where(key)).first() is None:
            values.setdefault("attempt", 0)
            conn.execute(insert(control).values(run_id=run_id, shard=shard, **values))
        else:
            conn.execute(update(control).where(key).values(**values))
