"""The full phase: write every item that passed validation, chunk by chunk, safely."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from prefect import flow, get_run_logger, runtime, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.futures import PrefectFuture
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from batchgate.breaker import CircuitBreaker, evaluate, threshold_value
from batchgate.config import Job, Layout
from batchgate.connectors import capabilities_of, refresher
from batchgate.destinations import Destination
from batchgate.errors import (
    BatchgateError,
    ConfigError,
    FatalError,
    LedgerError,
    SourceError,
    WriteError,
)
from batchgate.hold import DestinationHold
from batchgate.ledger import OWN_PLAN, Ledger, new_run_id
from batchgate.planner import (
    Candidate,
    FrozenSlices,
    Plan,
    freeze,
    from_frozen,
    plan_run,
)
from batchgate.progress import ConsoleProgress, Progress, duration
from batchgate.report_full import FullReport, destination_notes
from batchgate.secrets import secret_values
from batchgate.sources import Source
from batchgate.writer import Outcome, RetryPolicy, RunContext, WorkItem, record_failures
from blocks.factory import destination_for, source_for
from blocks.ledger import open_ledger
from flows.dry_run import _write_json
from tasks.events import emit_breaker, emit_dlq_added, emit_outcome
from tasks.limits import holding
from tasks.process import item_task, outcomes_of, process_items
from tasks.validate import check_destination, validate_into_ledger

PENDING_AFTER_LEDGER_ERROR = ("The items it could not record stay pending, not in the dead-letter "
                              "queue: run again once the ledger is back.")  # fmt: skip
WINDOW = 3  # chunks in flight: new ones start while the oldest one's slowest item finishes
PUBLISH_GROUP = 100


@dataclass
class Chunk:
    number: int
    groups: list[list[WorkItem]]
    futures: list[PrefectFuture[Any]] = field(default_factory=list)
    started: float = 0.0

    @property
    def items(self) -> list[WorkItem]:
        return [w for g in self.groups for w in g]


@flow(name="full", task_runner=ThreadPoolTaskRunner(max_workers=32), log_prints=False)
def full(
    job: Job,
    json_path: str | None = None,
    job_ref: str = "JOB.yaml",
    run_id: str | None = None,
    console_progress: bool = False,
    parent_run_id: str | None = None,
    item_ids: list[str] | None = None,
    since: datetime | None = None,
    plan_id: str | None = None,
) -> dict[str, Any] | State:
    """Write every item that passed validation, with retries, limits and a circuit breaker.

    `plan_id` (a dry-run's run id) writes the plan that dry-run froze, exactly as it was reviewed,
    without reading the source again; `item_ids` limits the run to those items (a dead-letter
    retry); `since` to the items edited at or after it (an incremental sync); `parent_run_id` links
    the run to the pipeline, sync or run it retries. The run plans and writes only while it holds
    the destination, so runs on one destination never write an item twice.
    """
    logger = get_run_logger()
    mode = "retry" if item_ids is not None else "full"
    run_id = run_id or new_run_id(mode)
    if job.batch.shards > 1:  # plan here, write through N full-shard runs on the work pool
        from flows.shards import run_sharded

        return run_sharded(job, run_id, mode, json_path, job_ref, console_progress, logger,
                           parent_run_id, set(item_ids) if item_ids is not None else None,
                           since, plan_id)  # fmt: skip
    started = time.monotonic()
    stopped = _Stopped(run_id, job_ref, json_path, console_progress, logger, started)
    try:
        prepared = prepare_run(job, run_id, mode, parent_run_id, since=since, plan_id=plan_id)
    except (BatchgateError, WriteError) as exc:
        emit_outcome(job, run_id, None, _outcome_of(exc), message=str(exc))
        return stopped(exc)
    ledger, destination, source = prepared.ledger, prepared.destination, prepared.source
    draft = not _publishes(destination)
    only = set(item_ids) if item_ids is not None else None
    say = announcer(logger, console_progress)
    capacity = layout_for(job, destination).writes_in_flight
    try:
        with holding(ledger, destination.key, run_id, say,
                     lambda: _ensure_limit(destination, capacity)) as hold:  # fmt: skip
            plan = plan_in_slices(prepared, run_id, draft, only, job_ref=job_ref)
            work = work_in_slices(prepared, draft, only, job_ref=job_ref, gone=plan.gone)
            ctx = RunContext(run_id, destination, ledger, draft=draft, retries=job.batch.retries,
                             refresh=refresher(source),
                             secrets=secret_values(job))  # fmt: skip
            runner = _Runner(job, ctx, work, console_progress, logger, hold, job_ref,
                             total=plan.work_count)  # fmt: skip
            runner.progress.skipped = plan.skipped
            runner.run()
    except (BatchgateError, WriteError) as exc:
        ledger.finish_run(run_id, _outcome_of(exc), message=str(exc), outcome=_outcome_of(exc))
        emit_outcome(job, run_id, destination.key, _outcome_of(exc), message=str(exc))
        return stopped(exc, destination.key)
    finally:
        discard_own_plan(prepared, run_id)
    quota_low = destination.quota_low if capabilities_of(destination).rate_per_s else None
    if quota_low is not None:
        logger.info("Lowest X-RateLimit-Remaining during the run: %d", quota_low)

    ending = Ending(job_ref, json_path, console_progress, logger, started)
    return ending.report(job, prepared, run_id, plan, runner.abort_reason,
                         aborted=bool(runner.abort_reason),
                         publish_failures=runner.publish_failures)  # fmt: skip


@dataclass
class Ending:
    """How a run that wrote ends: its one report, from the ledger's counts (every item of the
    run, whichever process wrote it), in the ledger, as artifacts and an event, on the console,
    in the JSON file and as the flow's result."""

    job_ref: str
    json_path: str | None
    console: bool
    logger: Any
    started: float

    def report(self, job: Job, prepared: Prepared, run_id: str, plan: Plan, reason: str | None,
               aborted: bool, publish_failures: int,
               extra: dict[str, Any] | None = None) -> dict[str, Any] | State:  # fmt: skip
        ledger, destination = prepared.ledger, prepared.destination
        counts = ledger.status_counts(run_id)
        succeeded = counts.get("succeeded", 0) + counts.get("unchanged", 0)
        attempted = succeeded + counts.get("failed", 0) + counts.get("pending", 0)
        status = (
            "aborted" if aborted else evaluate(succeeded, attempted, job.batch.success_threshold)
        )
        report = FullReport(
            run_id=run_id, status=status, total=plan.row_count, succeeded=succeeded,
            failed=counts.get("failed", 0), skipped=counts.get("skipped", 0),
            pending=counts.get("pending", 0), unchanged=counts.get("unchanged", 0),
            held=ledger.held_items(run_id), duration_s=time.monotonic() - self.started,
            threshold=threshold_value(job.batch.success_threshold), destination=destination.key,
            dlq=ledger.dead_letters(run_id), reason=reason, job_ref=self.job_ref,
            published_failures=publish_failures, missing=plan.missing,
            notes=destination_notes(destination),
        )  # fmt: skip
        ledger.finish_run(
            run_id, status, message=reason, total=report.total, succeeded=report.succeeded,
            failed=report.failed, skipped=report.skipped, pending=report.pending,
            unchanged=report.unchanged, success_rate=report.success_rate, outcome=status,
            duration_s=report.duration_s, ready=plan.work_count + plan.unchanged,
            blocked=plan.skipped, filtered_out=prepared.filtered_out, missing=plan.missing,
        )  # fmt: skip
        _publish_final(report)
        emit_outcome(job, run_id, destination.key, status, report.as_json())
        if self.console:
            print(report.as_text(), end="", flush=True)
        if self.json_path:
            _write_json(Path(self.json_path), {**report.as_json(), **(extra or {})})
        self.logger.info("Full run %s: %s, %s", run_id, status,
                         json.dumps(report.as_json()["dlq"][:3]))  # fmt: skip
        if status in ("failed", "aborted"):
            return Failed(message=f"{status}: {reason or f'success rate {report.success_rate}%'}")
        return {**report.as_json(), "report": report.as_text(), **(extra or {})}


def _outcome_of(exc: Exception) -> str:
    """A fatal error (bad token, missing collection) aborts the run; anything else fails it."""
    return "aborted" if isinstance(exc, FatalError) else "failed"


class _Stopped:
    """A run stopped before or while writing: its report says why, on the console, in the JSON
    file and as the `full-report` artifact, like any other run's."""

    def __init__(self, run_id: str, job_ref: str, json_path: str | None, console: bool,
                 logger: Any, started: float) -> None:  # fmt: skip
        self.run_id, self.job_ref, self.json_path = run_id, job_ref, json_path
        self.console, self.logger, self.started = console, logger, started

    def __call__(self, exc: Exception, destination: str = "?") -> State:
        self.logger.error(str(exc))
        if isinstance(exc, ConfigError | SourceError):  # the job's error: nothing was attempted
            if self.console:
                print(f"❌ Run {self.run_id} did not start: the job needs a fix.", flush=True)
            if self.json_path:
                _write_json(Path(self.json_path), {"run_id": self.run_id, "status": "error",
                                                   "reason": str(exc)})  # fmt: skip
            return Failed(message=f"error: {exc}")
        report = FullReport(
            run_id=self.run_id, status=_outcome_of(exc), total=0, succeeded=0, failed=0,
            skipped=0, pending=0, unchanged=0, duration_s=time.monotonic() - self.started,
            threshold=0, destination=destination, reason=str(exc), job_ref=self.job_ref,
        )  # fmt: skip
        _publish_final(report)
        if self.console:
            print(report.as_text(), end="", flush=True)
        if self.json_path:
            _write_json(Path(self.json_path), report.as_json())
        return Failed(message=f"{report.status}: {exc}")


class Prepared(NamedTuple):
    ledger: Ledger
    destination: Destination
    source: Source
    candidates: FrozenSlices  # the run's plan, read from the ledger a slice at a time
    filtered_out: int
    frozen_at: datetime | None = None  # when the plan was frozen (a dry-run's plan)


def prepare_run(
    job: Job,
    run_id: str,
    mode: str,
    parent_run_id: str | None,
    since: datetime | None = None,
    plan_id: str | None = None,
) -> Prepared:
    """Record the run's start and get its candidates: the plan a dry-run froze (`plan_id`), or
    a plan of its own, made from a fresh read of the source as a dry-run makes one (validated
    and frozen into the ledger a chunk at a time; `discard_own_plan` drops it at the run's end).
    Either is read back in slices (`FrozenSlices`). Shared by the writing flows; which
    candidates need a write is decided later, under the destination's hold (`plan_in_slices`,
    `slice_plans`). A failure marks the run failed in the ledger and is raised.
    """
    ledger: Ledger | None = None
    try:
        ledger = open_ledger(job.ledger)
        destination = destination_for(job)
        source = source_for(job)
        ledger.start_run(
            run_id, job_name=job.name, job_fingerprint=job.fingerprint(), mode=mode,
            source=source.path, flow_run_id=str(runtime.flow_run.id or "") or None,
            parent_run_id=parent_run_id,
            job_json=job.model_dump_json(),  # SecretStr fields are masked
        )  # fmt: skip
        ledger.finish_run(run_id, "running", destination_key=destination.key)
        frozen_at = None
        if plan_id is not None:
            candidates, filtered_out, frozen_at = _frozen(ledger, plan_id, job)
            destination.check()  # the collection schema the writes map fields with
        else:
            # the run's own plan, made as a dry-run makes one: read, validated and frozen into
            # the ledger a chunk at a time, then read back in slices, so memory stays flat
            check = check_destination(quote(destination))
            ledger.drop_abandoned_plans()  # what runs killed before their end left
            own = own_plan_id(run_id)
            _, filtered_out, _, _ = validate_into_ledger(quote(ledger), own, quote(source), job,
                                                      check, since=since)  # fmt: skip
            candidates = FrozenSlices(ledger, own)
        destination.prepare()
    except (BatchgateError, WriteError) as exc:
        if ledger is not None and ledger.run(run_id) is not None:
            ledger.finish_run(run_id, _outcome_of(exc), message=str(exc), outcome=_outcome_of(exc))
            if plan_id is None:  # a source that failed part-way left part of the run's own plan
                ledger.drop_items(own_plan_id(run_id))
        raise
    return Prepared(ledger, destination, source, candidates, filtered_out, frozen_at)


def own_plan_id(run_id: str) -> str:
    """Where a run that was given no reviewed plan keeps the plan it makes for itself: item rows
    under this id, with no run row of their own (`discard_own_plan` drops them at its end, and
    a later run those of a run that ended without doing so)."""
    if len(run_id) > 80 - len(OWN_PLAN):  # the ledger's run ids are at most 80 characters
        run_id = hashlib.sha1(run_id.encode()).hexdigest()[:32]
    return f"{OWN_PLAN}{run_id}"


def discard_own_plan(prepared: Prepared, run_id: str) -> None:
    """Drop the plan a run made for itself, once the run has recorded its own item rows."""
    if prepared.candidates.plan_id == own_plan_id(run_id):
        prepared.ledger.drop_items(own_plan_id(run_id))


def _frozen(ledger: Ledger, plan_id: str, job: Job) -> tuple[FrozenSlices, int, datetime]:
    run = ledger.run(plan_id)
    if run is None or run["mode"] != "dry-run":
        raise BatchgateError(f"plan {plan_id} is not a dry-run in the ledger at {ledger.where}. "
                             "Fix: pass the run id of the dry-run whose plan was reviewed.")  # fmt: skip
    if run["status"] != "completed":  # a dry-run stopped by its source part-way recorded a part
        raise BatchgateError(f"plan {plan_id} is a dry-run that did not complete ({run['status']}"
                             "). Fix: fix what stopped it and run the dry-run again.")  # fmt: skip
    if run["job_fingerprint"] != job.fingerprint():
        raise BatchgateError(f"plan {plan_id} was made with other job settings. Fix: run the "
                             "pipeline again with this job, so its plan is reviewed.")  # fmt: skip
    return FrozenSlices(ledger, plan_id), int(run.get("filtered_out") or 0), run["started_at"]


def _held_for_review(ledger: Ledger, key: str) -> dict[str, tuple[str, str]]:
    return {
        item_id: (
            f"awaiting review in pipeline {pipeline} (its sample wrote this item)",
            "approve or reject that pipeline's sample (batchgate approve|reject), then run again",
        )  # fmt: skip
        for item_id, pipeline in ledger.pending_reviews(key).items()
    }


def plan_in_slices(
    prepared: Prepared,
    run_id: str,
    draft: bool,
    only: set[str] | None = None,
    job_ref: str = "JOB.yaml",
    with_data: bool = False,
) -> Plan:
    """Decide what to write from what the ledger says now (call it holding the destination), a
    slice of the frozen plan at a time: every item of the run is recorded up front, slice by slice, each slice planned against the destination map of its
    own items; only the counts are kept (`work_in_slices` yields the writes). `with_data` also
    records each pending item's frozen data on its row (a sharded run's shards read it there).
    The items each slice found missing at the destination are in the plan's `gone`."""
    total = Plan(counted=(0, 0))
    for part in slice_plans(prepared, draft, only, job_ref):
        rows = part.rows
        if with_data:
            data = {w.seq: freeze(w.data) for w in part.work}
            rows = [{**r, "data": data.get(r["seq"])} for r in rows]
        prepared.ledger.plan_items(run_id, rows)
        total.add(part)
    return total


def work_in_slices(
    prepared: Prepared,
    draft: bool,
    only: set[str] | None = None,
    job_ref: str = "JOB.yaml",
    gone: set[str] | None = None,
) -> Iterator[WorkItem]:
    """The writes of `plan_in_slices`, planned again a slice at a time as the runner needs them
    (the run holds the destination, and nothing but this run touched these items since); `gone`
    is what that plan found missing at the destination, so it is not asked again."""
    for part in slice_plans(prepared, draft, only, job_ref, gone):
        yield from part.work


def slice_plans(
    prepared: Prepared,
    draft: bool,
    only: set[str] | None = None,
    job_ref: str = "JOB.yaml",
    gone: set[str] | None = None,
) -> Iterator[Plan]:
    """The run's plan a slice of the frozen plan at a time, each slice planned against the
    destination map of its own items, and that map checked against the destination (`gone`:
    already checked, these are missing). Call it holding the destination."""
    held = _held_for_review(prepared.ledger, prepared.destination.key)
    for part in prepared.candidates.slices():
        yield _plan_part(prepared, part, held, draft, only, job_ref, gone)


def plan_at(
    prepared: Prepared, seqs: Iterable[int], draft: bool, job_ref: str = "JOB.yaml"
) -> Plan:
    """The items of the frozen plan at these positions, planned as `slice_plans` plans them (the
    sample's picks, read back once chosen)."""
    frozen = prepared.candidates
    part = from_frozen(frozen.ledger.items_by_seq(frozen.plan_id, sorted(seqs)))
    held = _held_for_review(prepared.ledger, prepared.destination.key)
    return _plan_part(prepared, part, held, draft, None, job_ref)


def _plan_part(
    prepared: Prepared,
    part: list[Candidate],
    held: dict[str, tuple[str, str]],
    draft: bool,
    only: set[str] | None,
    job_ref: str,
    gone: set[str] | None = None,
) -> Plan:
    """A slice planned against the map, whose unchanged items are then looked up at the
    destination: those it no longer holds are planned again, to be written (`gone`: the
    items found missing by an earlier look-up of this run; none is made then)."""
    targets = prepared.ledger.targets_for_items(prepared.destination.key, [c.item_id for c in part])

    def plan(missing: set[str] | None) -> Plan:
        return plan_run(part, targets, only=only, draft=draft, held=held,
                        frozen_at=prepared.frozen_at, gone=missing,
                        review_fix=f"take it through a new review: batchgate pipeline --job {job_ref}")  # fmt: skip

    planned = plan(gone)
    if gone is None and (missing := missing_at(prepared.destination, planned)):
        return plan(missing)
    return planned


def missing_at(destination: Destination, plan: Plan) -> set[str]:
    """The items a slice's plan counts unchanged that the destination no longer holds (a table
    emptied, items deleted by hand): the map is checked, not trusted, with one `versions` read
    of the slice (SQL: one query; Webflow: the run's shared listing of the collection)."""
    by_dest = {r["dest_id"]: r["item_id"] for r in plan.rows
               if r["status"] == "unchanged" and r.get("dest_id")}  # fmt: skip
    if not by_dest:
        return set()
    found = destination.versions(list(by_dest))
    return {item_id for dest_id, item_id in by_dest.items() if found.get(dest_id) is None}


def announcer(logger: Any, console: bool) -> Any:
    def say(message: str) -> None:
        logger.warning(message)
        if console:
            print(message, flush=True)

    return say


class _Runner:
    """Fans chunks out as mapped tasks, collects them in order, and applies the circuit breaker."""

    def __init__(self, job: Job, ctx: RunContext, work: Iterable[WorkItem], console: bool,
                 logger: Any, hold: DestinationHold, job_ref: str = "JOB.yaml",
                 total: int | None = None) -> None:  # fmt: skip
        self.job, self.ctx, self.logger, self.hold = job, ctx, logger, hold
        self.job_ref = job_ref
        batch = job.batch
        self.layout = layout = layout_for(job, ctx.destination)
        self.per_task, self.window = layout.items_per_request, layout.chunks_in_flight
        step = layout.items_per_chunk
        # `work` may be an iterator (a plan read in slices): chunks are made as they are needed
        total = len(work) if total is None else total  # type: ignore[arg-type]
        self.chunk_count = -(-total // step)
        self.chunks = _chunks(work, step, self.per_task)
        self.breaker = CircuitBreaker(batch.pause_at, batch.abort_at)
        self.progress = Progress(total=total, chunks=self.chunk_count)
        self.console = ConsoleProgress(self.progress) if console else None
        self.abort_reason: str | None = None
        self.publish_failures = 0
        self._to_publish: list[str] = []
        self._item_task = item_task(batch)
        self._policy = RetryPolicy(batch.retries, batch.backoff_base_s, batch.jitter)
        self._artifact_id = None

    def run(self) -> None:
        if self.console:
            self.console.header(
                "Full Batch Processing in Progress", self.layout.items_per_chunk, self._estimate()
            )
        self._artifact_id = create_progress_artifact(
            progress=0.0, description=f"Full run {self.ctx.run_id}: items written"
        )
        switch = sys.getswitchinterval()
        if self.ctx.destination.rate_per_s:
            # A paced writer must wake on time: hand the GIL over every 1 ms, not 5 ms, or every
            # request starts a few ms late and the rate falls short (measured: 92.8% -> see bench).
            sys.setswitchinterval(0.001)
        try:
            self._run_chunks()
        finally:
            sys.setswitchinterval(switch)
        self._flush_publish(force=True)
        if self.console:
            self.console.finish()

    def _run_chunks(self) -> None:
        in_flight: deque[Chunk] = deque()
        for chunk in self.chunks:
            if self.abort_reason:
                break
            self._submit(chunk)
            in_flight.append(chunk)
            while len(in_flight) >= self.window and not self.abort_reason:
                self._collect(in_flight.popleft())
        while in_flight:
            self._collect(in_flight.popleft())

    def _submit(self, chunk: Chunk) -> None:
        size = len(chunk.items)
        chunk.started = time.monotonic()
        # quoted: Prefect would otherwise walk every item's data looking for futures, twice
        # per task run (measured: the largest single cost of a SQL run, more than the writes)
        if self.per_task == 1:
            chunk.futures = list(
                self._item_task.map([quote(g[0]) for g in chunk.groups], unmapped(self.ctx))
            )
        else:
            chunk.futures = list(
                process_items.map([quote(g) for g in chunk.groups], unmapped(self.ctx),
                                  unmapped(self._policy))
            )  # fmt: skip
        self.progress.in_progress += size

    def _collect(self, chunk: Chunk) -> None:
        outcomes: list[Outcome] = []
        for group, future in zip(chunk.groups, chunk.futures, strict=True):
            try:
                outcomes.extend(outcomes_of(group, future))
            except LedgerError as exc:
                # the run cannot record its writes: it stops, and the items it could not record
                # stay pending (never the DLQ: the fault is not theirs); a rerun resumes them
                self.progress.in_progress -= len(group)
                if not self.abort_reason:
                    self.abort_reason = f"{exc} {getattr(exc, 'then', PENDING_AFTER_LEDGER_ERROR)}"
                    self.logger.error(self.abort_reason)
        self._record(chunk, outcomes)

    def _record(self, chunk: Chunk, outcomes: list[Outcome]) -> None:
        failed = [o for o in outcomes if o.status == "failed"]
        record_failures(self.ctx, {w.seq: w for w in chunk.items}, failed)
        emit_dlq_added(self.job, self.ctx.run_id, self.ctx.key, failed)
        for o in outcomes:
            if o.status == "held":
                self.ctx.ledger.hold_item(self.ctx.run_id, o.seq, o.message or "changed since review",
                                          f"batchgate pipeline --job {self.job_ref}")  # fmt: skip
        held = sum(o.status == "held" for o in outcomes)
        self.progress.held += held
        self.progress.in_progress -= held
        outcomes = [o for o in outcomes if o.status != "held"]
        size = len(outcomes)
        self.progress.in_progress -= size
        self.progress.succeeded += size - len(failed)
        self.progress.failed += len(failed)
        self.progress.retrying = len(self.ctx.retrying)
        self._to_publish += [o.dest_id for o in outcomes if o.status == "succeeded" and o.dest_id]
        self._flush_publish()
        retries = sum(o.retried for o in outcomes)
        seconds = time.monotonic() - chunk.started
        first = self.progress.done - size + 1
        line = self.progress.chunk_line(
            chunk.number, first, self.progress.done, size, size, seconds, retries, len(failed)
        )
        self.logger.info(line)
        if self.console:
            self.console.chunk_done(line)
        if self._artifact_id:
            update_progress_artifact(self._artifact_id, progress=100 * self.progress.fraction())
        if self.abort_reason:
            return
        fatal = next((o for o in failed if o.fatal), None)
        if fatal:
            self.abort_reason = f"item {fatal.item_id}: {fatal.message}"
            return
        if self.hold.lost:
            self.abort_reason = (f"the run lost its hold on {self.ctx.key} (stalled for longer than "
                                 "its lease); stopped so that two runs never write at once")  # fmt: skip
            self.logger.error(self.abort_reason)
            return
        if chunk.number == self.chunk_count:
            return  # the last chunk: nothing left to pause or stop; the threshold decides
        decision = self.breaker.decide(len(failed), size)
        if self.console:
            self.console.breaker(decision, self.job.batch.pause_seconds)
        rate = f"{100 * len(failed) / size:.0f}%" if size else "0%"
        if decision == "abort":
            kinds = sorted({o.error_type or "unknown" for o in failed})
            self.abort_reason = (
                f"circuit breaker: {len(failed)}/{size} items ({rate}) of batch {chunk.number} failed "
                f"({', '.join(kinds)}), at or over the abort threshold of {self.breaker.abort_at:.0%}"
            )
            self.logger.error(self.abort_reason)
            emit_breaker(self.job, self.ctx.run_id, self.ctx.key, "abort", self.abort_reason, chunk=chunk.number, failed=len(failed), size=size)  # fmt: skip
        elif decision == "pause":
            pause = self.job.batch.pause_seconds
            message = (f"⚠️  Circuit breaker triggered - {rate} of batch {chunk.number} failed; "
                       f"pausing for {pause:g} seconds before continuing")  # fmt: skip
            self.logger.warning(message)
            emit_breaker(self.job, self.ctx.run_id, self.ctx.key, "pause", message, chunk=chunk.number, failed=len(failed), size=size, pause_s=pause)  # fmt: skip
            if self.console:
                self.console.chunk_done(message)
            time.sleep(pause)

    def _flush_publish(self, force: bool = False) -> None:
        if not self.ctx.destination.needs_publish:
            self._to_publish.clear()
            return
        while self._to_publish and (force or len(self._to_publish) >= PUBLISH_GROUP):
            group, self._to_publish = (
                self._to_publish[:PUBLISH_GROUP],
                self._to_publish[PUBLISH_GROUP:],
            )
            try:
                failures = self.ctx.destination.publish(group)
            except WriteError as exc:
                failures = {dest_id: exc.message for dest_id in group}
            # only a confirmed publish counts: the rest stay "written, not published" in the
            # ledger, and the next run publishes them
            self.ctx.ledger.mark_published(self.ctx.key, [d for d in group if d not in failures])
            self.publish_failures += len(failures)
            for dest_id, reason in failures.items():
                self.logger.warning("Item %s was written but not published: %s", dest_id, reason)

    def _estimate(self) -> str:
        rate = self.ctx.destination.rate_per_s
        if not rate:
            return "a few seconds to minutes (no destination rate limit)"
        return f"about {duration(self.progress.total / rate)} at {rate * 60:g} requests/min"


def layout_for(job: Job, destination: Destination) -> Layout:
    """The job's batch keys, with what it leaves unset fitted to the destination: its group
    size per write, and its writers (SQLite 1, PostgreSQL 4; an API destination WINDOW, its
    pacer keeping the rate)."""
    writers = capabilities_of(destination).max_writers
    return job.batch.layout(max(1, destination.group_size), writers, WINDOW)


def _chunks(work: Iterable[WorkItem], step: int, per_task: int) -> Iterator[Chunk]:
    buffer: list[WorkItem] = []
    number = 0
    for item in work:
        buffer.append(item)
        if len(buffer) >= step:
            number += 1
            yield Chunk(number, _groups(buffer, per_task))
            buffer = []
    if buffer:
        yield Chunk(number + 1, _groups(buffer, per_task))


def _groups(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _publishes(destination: Destination) -> bool:
    return capabilities_of(destination).live


def _limit_name(key: str) -> str:
    readable = re.sub(r"[^a-z0-9]+", "-", key.lower().split("://")[0])[:30].strip("-")
    return f"batchgate-{readable}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _ensure_limit(destination: Destination, capacity: int) -> tuple[str, int]:
    """The destination's global concurrency limit, created if missing, and the slots to take.

    A run holds its slots from start to end, so by default runs on one destination take turns
    across processes and workers, and each run's pacer keeps the destination's rate. An operator
    may raise the limit (prefect gcl update) to let runs overlap.
    """
    from prefect.exceptions import ObjectNotFound

    name = _limit_name(destination.key)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, limit=capacity)
            limit = capacity
    return name, max(1, min(capacity, limit))


def _publish_final(report: FullReport) -> None:
    create_markdown_artifact(key="full-report", markdown=report.as_markdown(),
                             description=f"Full run {report.run_id}")  # fmt: skip
    if report.dlq:
        rows = [{k: e.get(k) for k in ("item_id", "item_name", "error_type", "status_code",
                                       "attempts", "message")} for e in report.dlq]  # fmt: skip
        create_table_artifact(key="dead-letter-queue", table=rows,
                              description=f"Dead-letter queue of {report.run_id}")  # fmt: skip
