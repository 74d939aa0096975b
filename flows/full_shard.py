"""One shard of a sharded full run: its slice of the parent's plan, read from the ledger.

The parent (`full` with `batch.shards` N > 1, flows/shards.py) plans once, recording every
item's planned row with its data, holds the destination, and starts N runs of the `full-shard`
deployment. Shard k writes the parent run's pending items with `seq % N == k`, never reading the
source: under the parent's hold (it checks the hold names the parent's run), on the destination's
shared rate (batchgate/bucket.py), stopping or pausing when the parent's one breaker says so.
Its item rows are the parent run's, so an item already written is skipped when a shard whose
worker died is run again, and the parent's report counts every item.

A replaced attempt stops before its next write: every group's write (and every paced request
inside it) first asks the attempt's lease (`ParentHold.check`): no write once a heartbeat said a
newer attempt replaced this one, or once its last successful heartbeat is older than LEASE_S
(half of the parent's STALE_S: the other half covers a write already in flight) and one more
heartbeat does not renew it. What it did not send stays pending; the write-ahead intents of a
group in flight make the new attempt look it up before writing it again.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from sqlalchemy import func, select, update

from batchgate import pacer as pacers
from batchgate.breaker import CircuitBreaker
from batchgate.bucket import LEASE_S, SharedPacer, heartbeat, run_state
from batchgate.config import Job
from batchgate.connectors import capabilities_of
from batchgate.errors import BatchgateError, LedgerError, WriteError
from batchgate.ledger import Ledger, holds, items
from batchgate.planner import Candidate, plan_run, thaw
from batchgate.rollback import job_of_run
from batchgate.secrets import has_hidden_password, secret_values
from batchgate.writer import Outcome, RunContext, WorkItem
from blocks.factory import destination_for
from blocks.ledger import open_ledger
from flows.full import Chunk, _publishes, _Runner

HEARTBEAT_S = 3.0
HOLD_CHECK_S = 5.0
PAGE = 2000  # pending items of the slice read from the ledger at a time
BLOCK_S = 0.5  # a shard takes this many seconds of the shared rate per round trip (at least 1 slot)


@flow(name="full-shard", task_runner=ThreadPoolTaskRunner(max_workers=32), log_prints=False)
def full_shard(
    job: dict[str, Any],
    run_id: str,
    shard: int,
    shards: int,
    attempt: int = 1,
    job_ref: str = "JOB.yaml",
) -> dict[str, Any] | State:
    """Write shard `shard` of `shards` of the full run `run_id` (its pending items with
    seq % shards == shard), under that run's hold on the destination."""
    logger = get_run_logger()
    try:
        job = _job_of(job, run_id)
    except BatchgateError as exc:
        logger.error(str(exc))
        return Failed(message=f"shard {shard}: {exc}")
    ledger = open_ledger(job.ledger)
    if not heartbeat(ledger, run_id, shard, attempt):
        return _superseded(logger, run_id, shard, attempt)
    stopped = run_state(ledger, run_id)
    if stopped["state"] == "aborted":  # the run stopped while this shard waited for a worker
        logger.warning("Shard %d/%d of %s (attempt %d): the run was stopped before it began (%s); "
                       "nothing sent, its items stay pending", shard + 1, shards, run_id, attempt,
                       stopped["message"])  # fmt: skip
        heartbeat(ledger, run_id, shard, attempt, state="aborted")
        return {"run_id": run_id, "shard": shard, "attempt": attempt, "items": 0, "settled": 0,
                "state": "aborted", "reason": stopped["message"]}  # fmt: skip
    try:
        destination = destination_for(job)
        share_rate(ledger, destination)  # every request of the shard, its first reads included
        destination.check()
        destination.prepare()
        _require_parent_hold(ledger, destination.key, run_id)
        draft = not _publishes(destination)
        slice_ = _Slice(ledger, run_id, shard, shards, destination.key, draft)
    except (BatchgateError, WriteError) as exc:
        heartbeat(ledger, run_id, shard, attempt, state="aborted")
        _set_message(ledger, run_id, shard, str(exc))
        logger.error(str(exc))
        return Failed(message=f"shard {shard}: {exc}")
    hold = ParentHold(ledger, destination.key, run_id, shard, attempt)
    ctx = RunContext(run_id, FencedDestination(destination, hold), ledger, draft=draft,
                     retries=job.batch.retries, secrets=secret_values(job))  # fmt: skip
    logger.info("Shard %d/%d of %s (attempt %d): %d items pending in its slice, read %d at a "
                "time (those already written are settled as they are read)", shard + 1, shards,
                run_id, attempt, slice_.pending, PAGE)  # fmt: skip
    with hold, _fencing(destination, hold):
        runner = _ShardRunner(job, ctx, slice_.work(), False, logger, hold, job_ref,
                              total=slice_.pending)  # fmt: skip
        runner.run()
    logger.info("Shard %d/%d of %s (attempt %d): %d items sent to its writers, %d found already "
                "written", shard + 1, shards, run_id, attempt, slice_.sent, slice_.settled)  # fmt: skip
    if hold.fenced is not None:  # what it did not send stays pending, for its next attempt
        logger.warning("Shard %d/%d of %s (attempt %d) stopped before its next write: %s",
                       shard + 1, shards, run_id, attempt, hold.fenced)  # fmt: skip
        if hold.superseded:
            return _superseded(logger, run_id, shard, attempt)
        return Failed(message=f"shard {shard}: {hold.fenced}")  # the parent starts it again
    final = "aborted" if runner.abort_reason else "done"
    heartbeat(ledger, run_id, shard, attempt, state=final)
    _set_message(ledger, run_id, shard, runner.abort_reason, runner.publish_failures)
    summary = {"run_id": run_id, "shard": shard, "attempt": attempt, "items": slice_.sent,
               "settled": slice_.settled, "state": final, "reason": runner.abort_reason}  # fmt: skip
    return summary


class _ShardRunner(_Runner):
    """The full run's chunk runner, judged by the parent's one breaker instead of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = CircuitBreaker(pause_at=2.0, abort_at=2.0)  # never trips: see the parent

    def _record(self, chunk: Chunk, outcomes: list[Outcome]) -> None:
        super()._record(chunk, outcomes)
        if self.abort_reason:
            return
        while True:  # the parent's decision, read after every chunk
            state = run_state(self.ctx.ledger, self.ctx.run_id)  # `until`, `now`: database time
            if state["state"] == "aborted":
                self.abort_reason = state["message"] or "aborted by the run's circuit breaker"
                return
            if state["state"] != "paused" or (state["until"] or 0) <= state["now"]:
                return
            if self.hold.lost:
                return
            time.sleep(min(1.0, max(0.0, state["until"] - state["now"])))


class Replaced(LedgerError):
    """This shard attempt may send no more writes: a newer attempt replaced it, or its lease
    lapsed. Never the items' fault: like any ledger error it stops the run and leaves the items
    of the group pending (never the dead-letter queue), for the attempt that replaces it."""

    then = "The items it did not send stay pending, for the attempt that replaces this one."


class ParentHold:
    """The parent run's hold on the destination, as a shard sees it, and this attempt's lease.

    `lost` turns true when the hold no longer names the parent's run, or a newer attempt of this
    shard replaced this one, or the lease lapsed. Beats the shard's heartbeat in the background
    meanwhile; each successful beat renews the lease (`clock`, monotonic). `check` is asked before
    every write (`FencedDestination`, and the shared pacer right before a paced request): it
    raises `Replaced` once a beat said a newer attempt replaced this one, or when the last
    successful beat is older than `lease_s` and a beat tried then does not renew it. A fence
    is for good: the attempt sends nothing more.
    """

    def __init__(self, ledger: Ledger, key: str, run_id: str, shard: int, attempt: int,
                 lease_s: float = LEASE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ledger, self.key, self.run_id = ledger, key, run_id
        self.shard, self.attempt = shard, attempt
        self.lease_s, self._clock = lease_s, clock
        self.superseded = False
        self.fenced: str | None = None  # why this attempt sends no more writes
        self._renewed = clock()  # when the last successful heartbeat was sent
        self._lost = False
        self._checked = 0.0
        self._renewing = threading.Lock()
        self._writing = threading.local()
        self._stop = threading.Event()
        self._beater = threading.Thread(target=self._beat, daemon=True, name="batchgate-shard")

    def __enter__(self) -> ParentHold:
        self._renew()  # the lease starts with a heartbeat
        self._beater.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beater.join(timeout=10)

    @property
    def lost(self) -> bool:
        if not self._lost and time.monotonic() - self._checked > HOLD_CHECK_S:
            self._checked = time.monotonic()
            self._lost = _holder_of(self.ledger, self.key) != self.run_id
        return self._lost or self.superseded or self.fenced is not None

    def check(self) -> None:
        """Raise `Replaced` unless this attempt may send a write now."""
        if self.fenced is None and self.superseded:
            self._fence("a newer attempt of this shard replaced it")
        if self.fenced is None and self._clock() - self._renewed > self.lease_s:
            with self._renewing:  # a lapsed lease: one beat now, for every writer waiting
                if self._clock() - self._renewed > self.lease_s and not self._renew():
                    self._fence(
                        "a newer attempt of this shard replaced it"
                        if self.superseded
                        else f"its lease lapsed (no heartbeat for over {self.lease_s:g} s)"
                    )
        if self.fenced is not None:
            raise Replaced(
                f"shard {self.shard + 1} of {self.run_id}, attempt {self.attempt}, sends no "
                f"more writes: {self.fenced}. Its unsent items stay pending for the attempt that "
                "replaces it."
            )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A write of this attempt: checked first, and again before each paced request in it."""
        self.check()
        self._writing.active = True
        try:
            yield
        finally:
            self._writing.active = False

    def check_if_writing(self) -> None:
        """The shared pacer's fence: only a write is stopped (a read's error would be taken for
        the item's)."""
        if getattr(self._writing, "active", False):
            self.check()

    def _fence(self, why: str) -> None:
        if self.fenced is None:
            self.fenced = why

    def _renew(self) -> bool:
        started = self._clock()
        try:
            alive = heartbeat(self.ledger, self.run_id, self.shard, self.attempt)
        except Exception:  # noqa: BLE001 - a missed beat: the lease is not renewed
            return False
        if not alive:
            self.superseded = True
            return False
        self._renewed = max(self._renewed, started)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._renew() and self.superseded:
                return


class FencedDestination:
    """The destination as a shard attempt writes to it: each write method asks the attempt's
    lease first (`ParentHold.writing`), so a replaced attempt sends no further group; every
    other attribute is the destination's own."""

    def __init__(self, destination: Any, hold: ParentHold) -> None:
        self._destination, self._hold = destination, hold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._destination, name)

    def upsert_many(self, entries: list[Any], draft: bool) -> list[Any]:
        with self._hold.writing():
            return list(self._destination.upsert_many(entries, draft))

    def upsert(self, *args: Any, **kwargs: Any) -> Any:
        with self._hold.writing():
            return self._destination.upsert(*args, **kwargs)

    def publish(self, dest_ids: list[str]) -> dict[str, str]:
        """Not published by a replaced attempt: they stay 'written, not published' in the
        ledger, and the attempt that replaces it publishes them."""
        try:
            with self._hold.writing():
                return dict(self._destination.publish(dest_ids))
        except Replaced as exc:
            return dict.fromkeys(dest_ids, str(exc))


@contextlib.contextmanager
def _fencing(destination: Any, hold: ParentHold) -> Iterator[None]:
    """The shared pacer asks the lease right before each paced request of a write (a slot may
    come long after the write was checked)."""
    pacer = destination.pacer if capabilities_of(destination).rate_per_s else None
    if not isinstance(pacer, SharedPacer):
        yield
        return
    pacer.fence = hold.check_if_writing
    try:
        yield
    finally:
        pacer.fence = None


def share_rate(ledger: Ledger, destination: Any) -> None:
    """Make the destination's process-wide pacer take its slots from the shared bucket."""
    if not capabilities_of(destination).rate_per_s:
        return
    local = destination.pacer
    rate = 1.0 / local.base_interval
    if isinstance(local, SharedPacer):
        return
    key = getattr(destination, "pacer_key", destination.key)  # Webflow paces per API token
    shared = SharedPacer(ledger, key, rate, block=max(1, int(rate * BLOCK_S)))
    shared.stated_limit = local.stated_limit
    with pacers._PACERS_LOCK:
        pacers._PACERS[key] = shared


class _Slice:
    """The shard's slice of the parent's plan (its pending items with seq % shards == shard),
    read a page at a time: each page planned against the destination map of its own items, its
    items already written settled, its writes yielded. Never the whole slice in memory."""

    def __init__(self, ledger: Ledger, run_id: str, shard: int, shards: int, key: str,
                 draft: bool, page: int | None = None) -> None:  # fmt: skip
        self.ledger, self.run_id, self.shard, self.shards = ledger, run_id, shard, shards
        self.key, self.draft, self.page = key, draft, page or PAGE
        self.sent = self.settled = 0
        where = self._where()
        with ledger.engine.connect() as conn:
            pending, with_data = conn.execute(
                select(func.count(), func.count(items.c.data)).where(*where)
            ).one()
        self.pending = int(pending)
        if with_data != pending:
            raise BatchgateError(
                f"run {run_id} recorded no planned data for {pending - with_data} pending items "
                "of this shard. Fix: start the full run again; its plan records every item's data."
            )

    def _where(self) -> list[Any]:
        return [items.c.run_id == self.run_id, items.c.status == "pending",
                func.mod(items.c.seq, self.shards) == self.shard]  # fmt: skip

    def pages(self) -> Iterator[list[Candidate]]:
        after = -1
        while True:
            query = (
                select(items.c.seq, items.c.item_id, items.c.title, items.c.location,
                       items.c.content_hash, items.c.data)
                .where(*self._where(), items.c.seq > after)
                .order_by(items.c.seq)
                .limit(self.page)
            )  # fmt: skip
            with self.ledger.engine.connect() as conn:
                rows = list(conn.execute(query))
            if not rows:
                return
            after = rows[-1].seq
            missing = [r.item_id for r in rows if r.data is None]
            if missing:
                raise BatchgateError(
                    f"run {self.run_id} recorded no planned data for pending item {missing[0]}. "
                    "Fix: start the full run again; its plan records every item's data."
                )
            yield [
                Candidate(seq=r.seq, item_id=r.item_id, title=r.title or "",
                          location=r.location, data=thaw(r.data), content_hash=r.content_hash)
                for r in rows
            ]  # fmt: skip

    def work(self) -> Iterator[WorkItem]:
        for page in self.pages():
            targets = self.ledger.targets_for_items(self.key, [c.item_id for c in page])
            plan = plan_run(page, targets, draft=self.draft, gone=self._gone(page, targets))
            _settle(self.ledger, self.run_id, plan.rows)  # written before this attempt
            self.settled += len(page) - len(plan.work)
            self.sent += len(plan.work)
            yield from plan.work

    def _gone(self, page: list[Candidate], targets: dict[str, dict[str, Any]]) -> set[str]:
        """The pending items whose map entry another run wrote: the parent planned such an item
        pending, though the map calls it current, only when the destination no longer held it
        (flows/full.py `missing_at`), so it is written, never settled; only what this run wrote
        (an earlier attempt of this shard) is settled."""
        return {c.item_id for c in page
                if (t := targets.get(c.item_id)) is not None and t["run_id"] != self.run_id}  # fmt: skip


def _settle(ledger: Ledger, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Items a killed attempt wrote whose target the ledger already shows current: record them
    as the run's (an earlier attempt of this run wrote them with this content)."""
    done = [r for r in rows if r["status"] != "pending"]
    if not done:
        return
    with ledger.engine.begin() as conn:
        for row in done:
            status = "succeeded" if row["status"] == "unchanged" else row["status"]
            conn.execute(update(items).where(items.c.run_id == run_id, items.c.seq == row["seq"])
                         .values(status=status, dest_id=row.get("dest_id")))  # fmt: skip


def _holder_of(ledger: Ledger, key: str) -> str | None:
    with ledger.engine.connect() as conn:
        return conn.execute(select(holds.c.run_id).where(holds.c.destination_key == key)).scalar()


def _require_parent_hold(ledger: Ledger, key: str, run_id: str) -> None:
    holder = _holder_of(ledger, key)
    if holder != run_id:
        raise BatchgateError(
            f"the destination {key} is not held by run {run_id} (held by {holder or 'no run'}): "
            "a shard writes only under its parent's hold. Fix: start the full run again."
        )


def _job_of(raw: dict[str, Any], run_id: str) -> Job:
    """The job as the parent got it (secrets as the `${VAR}` the job file wrote, or masked),
    with its secrets read from this worker's environment (a masked token from WEBFLOW_TOKEN or
    NOTION_TOKEN), as a rollback rebuilds a recorded job."""
    if has_hidden_password((raw.get("ledger") or {}).get("url")):
        raise BatchgateError(
            "the ledger URL holds a password the shard cannot see (the job file wrote it as a "
            "literal). Fix: write ledger.url as ${VAR} in the job file and set VAR on every worker."
        )
    return job_of_run({"run_id": run_id, "mode": "full", "job_json": json.dumps(raw)})


def _set_message(ledger: Ledger, run_id: str, shard: int, message: str | None,
                 publish_failures: int = 0) -> None:  # fmt: skip
    from batchgate.bucket import control

    text = message or (f"publish_failures={publish_failures}" if publish_failures else None)
    with ledger.engine.begin() as conn:
        conn.execute(update(control).where(control.c.run_id == run_id, control.c.shard == shard)
                     .values(message=text))  # fmt: skip


def _superseded(logger: Any, run_id: str, shard: int, attempt: int) -> dict[str, Any]:
    logger.warning("Shard %d of %s: attempt %d was replaced by a newer one; nothing to do",
                   shard, run_id, attempt)  # fmt: skip
    return {"run_id": run_id, "shard": shard, "attempt": attempt, "state": "superseded",
            "flow_run": str(runtime.flow_run.id or "")}  # fmt: skip
