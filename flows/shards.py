"""A full run split over the work pool (`batch.shards` N > 1): the parent's side.

The parent plans once, holding the destination, and records every item's planned row with its
data in the ledger. It then starts N runs of the `full-shard` deployment (flows/full_shard.py)
with `run_deployment`, linked to it as subflow runs; any worker of the deployment's pool runs
them. While they write it watches the ledger: one circuit breaker over every shard's items
(pausing or aborting them all through the run's control row), per-shard progress, and each
shard's heartbeat. A shard whose run crashed, failed or went silent (its worker was killed) is
started again; it resumes from the ledger. The report, the threshold and the DLQ are the run's.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Crashed, State
from sqlalchemy import func, select

from batchgate.breaker import CircuitBreaker
from batchgate.bucket import (
    STALE_S,
    ensure_tables,
    set_run_state,
    shard_rows,
    silent_for,
    start_attempt,
)
from batchgate.config import Job
from batchgate.errors import BatchgateError, WriteError
from batchgate.ledger import Ledger, items
from batchgate.planner import Plan
from flows.full import (
    Ending,
    _ensure_limit,
    _outcome_of,
    _publishes,
    _Stopped,
    announcer,
    discard_own_plan,
    layout_for,
    plan_in_slices,
    prepare_run,
)
from tasks.events import emit_breaker, emit_outcome
from tasks.limits import holding

DEPLOYMENT = "full-shard/full-shard"
POLL_S = 2.0
# STALE_S (batchgate/bucket.py): a running shard silent this long, on the ledger database's
# clock, lost its worker: it is started again
ATTEMPTS = 3  # per shard
SHARE_PROGRESS_S = 10.0


def shard_deployment() -> str:
    return os.environ.get("BATCHGATE_SHARD_DEPLOYMENT", DEPLOYMENT)


def refuse_unreachable_ledger(job: Job) -> None:
    """Shards run on any worker: a SQLite ledger (a file on this host) only when the job says
    every worker runs here."""
    url = job.ledger.url.get_secret_value() if job.ledger.url is not None else "sqlite:"
    if url.startswith("sqlite") and not job.batch.shards_on_this_host:
        raise BatchgateError(
            f"batch.shards is {job.batch.shards}, but the ledger is SQLite, a file other "
            "machines' workers cannot reach. Fix: set ledger.url to a PostgreSQL database "
            "(e.g. ledger: {url: ${BATCHGATE_LEDGER_URL}}), or, if every worker of the pool runs "
            "on this host, set batch.shards_on_this_host: true."
        )


def run_sharded(
    job: Job,
    run_id: str,
    mode: str,
    json_path: str | None,
    job_ref: str,
    console: bool,
    logger: Any,
    parent_run_id: str | None = None,
    only: set[str] | None = None,
    since: Any = None,
    plan_id: str | None = None,
) -> dict[str, Any] | State:
    """The `full` flow's body for N > 1 shards (see the module docstring)."""
    started = time.monotonic()
    stopped = _Stopped(run_id, job_ref, json_path, console, logger, started)
    try:
        refuse_unreachable_ledger(job)
        prepared = prepare_run(job, run_id, mode, parent_run_id, since=since, plan_id=plan_id)  # fmt: skip
    except (BatchgateError, WriteError) as exc:
        emit_outcome(job, run_id, None, _outcome_of(exc), message=str(exc))
        return stopped(exc)
    ledger, destination = prepared.ledger, prepared.destination
    draft = not _publishes(destination)
    say = announcer(logger, console)
    capacity = layout_for(job, destination).writes_in_flight
    try:
        with holding(ledger, destination.key, run_id, say,
                     lambda: _ensure_limit(destination, capacity)) as hold:  # fmt: skip
            plan = plan_for_shards(prepared, run_id, draft, only, job_ref)
            ensure_tables(ledger)
            set_run_state(ledger, run_id, "running")
            watcher = _Watcher(
                job, ledger, run_id, destination.key, console, logger, plan.work_count
            )
            try:
                watcher.run(hold)
            except BaseException as exc:  # shards started must not write past the hold
                set_run_state(ledger, run_id, "aborted", message=f"the run stopped: {exc}")
                raise
    except (BatchgateError, WriteError) as exc:
        ledger.finish_run(run_id, _outcome_of(exc), message=str(exc), outcome=_outcome_of(exc))
        emit_outcome(job, run_id, destination.key, _outcome_of(exc), message=str(exc))
        return stopped(exc, destination.key)
    finally:
        discard_own_plan(prepared, run_id)  # also when the run stopped before it planned
    return _finish(job, prepared, plan, run_id, watcher, json_path, job_ref, console, logger,
                   started)  # fmt: skip


def plan_for_shards(prepared: Any, run_id: str, draft: bool, only: set[str] | None,
                    job_ref: str) -> Plan:  # fmt: skip
    """Plan once (holding the destination) and record every item's planned row, each pending
    one with its frozen data for the shards, a slice at a time: only the counts are kept. A plan
    the run made for itself is dropped then: the shards read the run's own rows."""
    try:
        return plan_in_slices(prepared, run_id, draft, only, job_ref=job_ref, with_data=True)
    finally:
        discard_own_plan(prepared, run_id)


class _Watcher:
    """Starts the shards, watches them through the ledger, and starts a lost one again."""

    def __init__(self, job: Job, ledger: Ledger, run_id: str, key: str, console: bool,
                 logger: Any, total: int) -> None:  # fmt: skip
        self.job, self.ledger, self.run_id, self.key = job, ledger, run_id, key
        self.console, self.logger, self.total = console, logger, total
        self.n = job.batch.shards
        self.breaker = CircuitBreaker(job.batch.pause_at, job.batch.abort_at)
        self.window = max(1, job.batch.items_per_chunk or layout_for_window(job))
        self.abort_reason: str | None = None
        self.publish_failures = 0
        self.flow_runs: dict[int, Any] = {}
        self.attempts: dict[int, int] = {}
        self.running_since: dict[int, float] = {}  # database time the attempt was seen running
        self.ended: dict[int, str] = {}
        self._judged = (0, 0)  # finished, failed at the last judgement
        self._paused_until = 0.0  # time.monotonic(): this process's own wait
        self._artifact: Any = None
        self._shared = 0.0
        self._said = 0.0

    def run(self, hold: Any) -> None:
        self._artifact = create_progress_artifact(
            progress=0.0, description=f"Full run {self.run_id}: items written, {self.n} shards"
        )
        if self.console:
            print(f"🚀 Full Batch Processing in Progress: {self.total} items in {self.n} shards "
                  f"({shard_deployment()} on the work pool)", flush=True)  # fmt: skip
        for shard in range(self.n):
            self._start(shard)
        while len(self.ended) < self.n:
            time.sleep(POLL_S)
            per_shard = self._counts()
            self._judge(per_shard)
            self._check_shards()
            self._show(per_shard)
            if hold.lost and not self.abort_reason:
                self._abort(f"the run lost its hold on {self.key} (stalled for longer than its "
                            "lease); stopped so that two runs never write at once")  # fmt: skip
        self._show(self._counts(), force=True)

    def _start(self, shard: int) -> None:
        attempt = self.attempts.get(shard, 0) + 1
        self.attempts[shard] = attempt
        self.running_since.pop(shard, None)
        params = {"job": self.job.model_dump(mode="json", exclude_none=True), "run_id": self.run_id,
                  "shard": shard, "shards": self.n, "attempt": attempt}  # fmt: skip
        # the job as the parent got it: secrets as the ${VAR} the job file wrote, or masked
        flow_run = run_deployment(shard_deployment(), parameters=params, timeout=0,
                                  flow_run_name=f"{self.run_id}-shard-{shard + 1}-of-{self.n}"
                                  + (f"-attempt-{attempt}" if attempt > 1 else ""))  # fmt: skip
        self.flow_runs[shard] = flow_run
        start_attempt(self.ledger, self.run_id, shard, attempt, str(flow_run.id))
        self.logger.info("Shard %d/%d: flow run %s (attempt %d)", shard + 1, self.n,
                         flow_run.id, attempt)  # fmt: skip

    def _check_shards(self) -> None:
        with get_client(sync_client=True) as client:
            states = {
                shard: client.read_flow_run(self.flow_runs[shard].id).state
                for shard in range(self.n)
                if shard not in self.ended
            }
            rows = shard_rows(self.ledger, self.run_id)  # after the states: a shard ends it first
            for shard, state in states.items():
                row = rows.get(shard, {})
                if (
                    row.get("state") in ("done", "aborted")
                    and row.get("attempt") == self.attempts[shard]
                ):
                    self.ended[shard] = row["state"]
                    if row["state"] == "aborted" and not self.abort_reason:
                        self._abort(f"shard {shard + 1}: {row.get('message') or 'aborted'}")
                    elif (row.get("message") or "").startswith("publish_failures="):
                        self.publish_failures += int(row["message"].split("=")[1])
                    continue
                final = state is not None and state.is_final()
                cancelling = state is not None and (state.is_cancelled() or state.is_cancelling())
                running = state is not None and (state.is_running() or cancelling) and bool(row)
                if running:  # a shard's silence counts from when it was first seen running
                    self.running_since.setdefault(shard, row["now"])
                silent = running and silent_for(row, self.running_since[shard]) > STALE_S
                if cancelling:
                    # cancelled in Prefect (the UI, `prefect flow-run cancel`, or with the
                    # parent): never started again behind anyone's back; the shards are one run,
                    # so all of them stop. It counts as ended only once it is Cancelled (or
                    # silent): until then its process may still be writing under the run's hold
                    if not self.abort_reason:
                        why = f": {state.message}" if state.message else ""
                        self._abort(
                            f"shard {shard + 1}/{self.n} was cancelled in Prefect (flow run "
                            f"{self.flow_runs[shard].id}{why}); the other shards stop after their "
                            "current chunk and the unwritten items stay pending. Fix: run the "
                            "same full run again to write them"
                        )
                    if final or silent:
                        self.ended[shard] = "cancelled"
                    continue
                if final or silent:
                    self._lost(client, shard, state, "went silent" if silent else state.type.value)

    def _lost(self, client: Any, shard: int, state: Any, how: str) -> None:
        if self.abort_reason or self.attempts[shard] >= ATTEMPTS:
            self.ended[shard] = "lost"
            self.logger.error("Shard %d/%d %s; not started again (%s)", shard + 1, self.n, how,
                              self.abort_reason or f"{ATTEMPTS} attempts")  # fmt: skip
            return
        if state is not None and not state.is_final():
            client.set_flow_run_state(self.flow_runs[shard].id, Crashed(
                message=f"no heartbeat for {STALE_S:g} s: its worker is gone; started again"),
                force=True)  # fmt: skip
        message = f"Shard {shard + 1}/{self.n} {how}: starting it again; it resumes from the ledger"
        self.logger.warning(message)
        if self.console:
            print(f"⚠️  {message}", flush=True)
        self._start(shard)

    def _counts(self) -> dict[int, dict[str, int]]:
        query = (
            select(func.mod(items.c.seq, self.n), items.c.status, func.count())
            .where(items.c.run_id == self.run_id)
            .group_by(func.mod(items.c.seq, self.n), items.c.status)
        )
        out: dict[int, dict[str, int]] = {k: {} for k in range(self.n)}
        with self.ledger.engine.connect() as conn:
            for shard, status, count in conn.execute(query):
                out[int(shard)][status] = int(count)
        return out

    def _judge(self, per_shard: dict[int, dict[str, int]]) -> None:
        """One breaker over every shard: each `window` items finished, their failure rate."""
        succeeded = sum(c.get("succeeded", 0) for c in per_shard.values())
        failed = sum(c.get("failed", 0) for c in per_shard.values())
        finished = succeeded + failed
        seen, seen_failed = self._judged
        if self.abort_reason or finished - seen < self.window or finished >= self.total:
            return
        if time.monotonic() < self._paused_until:
            return
        size, bad = finished - seen, failed - seen_failed
        self._judged = (finished, failed)
        decision = self.breaker.decide(bad, size)
        rate = f"{100 * bad / size:.0f}%"
        if decision == "abort":
            self._abort(f"circuit breaker: {bad}/{size} items ({rate}) across the shards failed, at "
                        f"or over the abort threshold of {self.breaker.abort_at:.0%}")  # fmt: skip
            emit_breaker(self.job, self.run_id, self.key, "abort", self.abort_reason or "",
                         failed=bad, size=size)  # fmt: skip
        elif decision == "pause":
            pause = self.job.batch.pause_seconds
            message = (f"⚠️  Circuit breaker triggered - {rate} of the last {size} items across the "
                       f"shards failed; pausing every shard for {pause:g} seconds")  # fmt: skip
            self._paused_until = time.monotonic() + pause
            set_run_state(self.ledger, self.run_id, "paused", pause_s=pause)  # database time
            self.logger.warning(message)
            emit_breaker(self.job, self.run_id, self.key, "pause", message, failed=bad, size=size,
                         pause_s=pause)  # fmt: skip
            if self.console:
                print(message, flush=True)

    def _abort(self, reason: str) -> None:
        self.abort_reason = reason
        set_run_state(self.ledger, self.run_id, "aborted", message=reason)
        self.logger.error(reason)
        if self.console:
            print(f"❌ {reason}", flush=True)

    def _show(self, per_shard: dict[int, dict[str, int]], force: bool = False) -> None:
        done = sum(c.get("succeeded", 0) + c.get("failed", 0) for c in per_shard.values())
        planned = sum(c.get("pending", 0) + c.get("succeeded", 0) + c.get("failed", 0)
                      for c in per_shard.values())  # fmt: skip
        if self._artifact:
            update_progress_artifact(self._artifact, progress=100.0 * done / max(1, planned))
        rows = self._rows(per_shard)
        now = time.monotonic()
        if force or now - self._shared > SHARE_PROGRESS_S:
            self._shared = now
            create_markdown_artifact(key="full-shards", markdown=_table(rows),
                                     description=f"Shards of {self.run_id}")  # fmt: skip
        if self.console and (force or now - self._said > 5.0):
            self._said = now
            print(f"Progress: {done}/{planned} items", flush=True)
            for row in rows:
                print(f"  Shard {row['shard']}: {row['written']}/{row['items']} written, "
                      f"{row['failed']} failed, {row['pending']} pending (attempt "
                      f"{row['attempt']}, {row['state']})", flush=True)  # fmt: skip

    def _rows(self, per_shard: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
        rows = []
        for shard in range(self.n):
            c = per_shard.get(shard, {})
            rows.append({
                "shard": f"{shard + 1}/{self.n}",
                "items": c.get("pending", 0) + c.get("succeeded", 0) + c.get("failed", 0),
                "written": c.get("succeeded", 0), "failed": c.get("failed", 0),
                "pending": c.get("pending", 0), "attempt": self.attempts.get(shard, 0),
                "state": self.ended.get(shard, "running"),
                "flow_run": str(self.flow_runs[shard].id) if shard in self.flow_runs else "",
            })  # fmt: skip
        return rows


def layout_for_window(job: Job) -> int:
    return job.batch.items_per_request or 100


def _table(rows: list[dict[str, Any]]) -> str:
    head = "| shard | items | written | failed | pending | attempt | state | flow run |\n"
    line = "|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['shard']} | {r['items']} | {r['written']} | {r['failed']} | {r['pending']} | "
        f"{r['attempt']} | {r['state']} | {r['flow_run']} |\n"
        for r in rows
    )
    return head + line + body


def _finish(job: Job, prepared: Any, plan: Any, run_id: str, watcher: _Watcher,
            json_path: str | None, job_ref: str, console: bool, logger: Any,
            started: float) -> dict[str, Any] | State:  # fmt: skip
    """The run's one report, from the ledger's counts over every shard."""
    lost = [s + 1 for s, how in sorted(watcher.ended.items()) if how == "lost"]
    reason = watcher.abort_reason or (
        f"shards {lost} could not finish after {ATTEMPTS} attempts; their items stay pending"
        if lost else None
    )  # fmt: skip
    ending = Ending(job_ref, json_path, console, logger, started)
    return ending.report(job, prepared, run_id, plan, reason, aborted=bool(watcher.abort_reason),
                         publish_failures=watcher.publish_failures,
                         extra={"shards": watcher.n})  # fmt: skip
