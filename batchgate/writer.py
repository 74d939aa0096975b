"""Writing items: one attempt, the retry loop for multi-item tasks, and what each item became.

Prefect task retries drive single-item tasks (tasks/process.py); a task that writes many items
uses `write_with_retries`, with the same backoff, classification and ledger rows per item.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchgate.backoff import backoff_delays, jittered
from batchgate.connectors import capabilities_of
from batchgate.destinations import Destination, WriteResult
from batchgate.dlq import recommendations, redact
from batchgate.errors import (
    AlreadyExists,
    ChangedSinceReview,
    FatalError,
    LedgerError,
    RetryableError,
    WriteError,
)
from batchgate.ledger import Ledger
from batchgate.records import META, written


@dataclass(slots=True)
class WorkItem:
    """One item to write, with what the ledger knows of it from earlier runs."""

    seq: int
    item_id: str
    title: str
    source_url: str | None
    data: dict[str, Any]  # the record the plan froze (what is written), with its bookkeeping
    content_hash: str
    dest_id: str | None = None
    intent: bool = False  # a write was sent before without an answer: look it up first
    write_ahead: dict[str, Any] | None = None  # what the destination held before the first try
    prev_run_id: str | None = None  # the run whose version this write replaces


@dataclass(slots=True)
class Outcome:
    """What became of one item in this run."""

    seq: int
    item_id: str
    status: str  # succeeded | failed | held
    attempts: int
    duration_ms: int
    dest_id: str | None = None
    action: str | None = None
    previous: dict[str, Any] | None = None
    version: str | None = None
    prev_run_id: str | None = None
    error_type: str | None = None
    status_code: int | None = None
    message: str | None = None
    fatal: bool = False

    @property
    def retried(self) -> int:
        return max(self.attempts - 1, 0)


class RunContext:
    """Everything a write needs. A plain class on purpose: Prefect does not walk into it."""

    def __init__(
        self,
        run_id: str,
        destination: Destination,
        ledger: Ledger,
        draft: bool,
        retries: int = 0,
        refresh: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        self.run_id = run_id
        self.secrets = list(secrets or [])  # the job's: masked in every recorded error message
        self.refresh = refresh  # the source's: re-read an item whose file URLs expire soon
        self.retries = retries
        self.destination = destination
        self.ledger = ledger
        self.draft = draft
        self.key = destination.key
        self.retrying: set[str] = set()  # items waiting for another attempt, for progress
        self._lock = threading.Lock()

    def mark_retrying(self, item_id: str, retrying: bool) -> None:
        with self._lock:
            (self.retrying.add if retrying else self.retrying.discard)(item_id)


def write_once(work: WorkItem, ctx: RunContext, attempt: int) -> Outcome:
    """One attempt at one item (a group of one); a failure is raised."""
    result = write_group([work], ctx, attempt)[work.seq]
    if isinstance(result, Exception):
        raise result
    return result


def write_group(
    works: list[WorkItem], ctx: RunContext, attempt: int
) -> dict[int, Outcome | Exception]:
    """One attempt at a group, in as few requests as the destination allows: one snapshot read,
    one write-ahead transaction in the ledger, one group write. What the destination holds is
    recorded before the write, so a crash between the write and its ledger row never loses the
    original version; a write that may have happened already is looked up first, so nothing is
    written twice. Each item gets its own outcome or error: one bad item fails only itself."""
    started = time.monotonic()
    results: dict[int, Outcome | Exception] = {}
    ready: list[tuple[WorkItem, dict[str, Any], str | None]] = []
    for work in works:
        try:
            ready.append((work, *_prepare(work, ctx, attempt)))
        except Exception as exc:  # noqa: BLE001 - classified per item by the caller
            results[work.seq] = exc
    if not ready:
        return results
    try:
        dest_ids = _write_ahead([(w, d) for w, _, d in ready], ctx)
    except LedgerError:
        raise  # the run's own bookkeeping failed: never the items' fault (see flows/full.py)
    except Exception as exc:  # noqa: BLE001 - a snapshot read: the whole group
        return {**results, **{w.seq: exc for w, _, _ in ready}}
    answers = _upserted(ctx, [(record, dest_ids[w.seq], (w.write_ahead or {}).get("previous"))
                              for w, record, _ in ready])  # fmt: skip
    ms = int(1000 * (time.monotonic() - started) / len(ready))
    for (work, _, _), answer in zip(ready, answers, strict=True):
        if (isinstance(answer, AlreadyExists) and dest_ids[work.seq] is None
                and (attempt > 1 or work.intent)):  # fmt: skip
            # an earlier attempt went unanswered and its create landed after the look-up: the
            # item is this write's own; the next attempt finds it and updates it
            answer = RetryableError(
                f"{answer.message}: an earlier attempt at this create went unanswered and has "
                "most likely landed since; it is looked up again", status_code=answer.status_code,
                error_type="api-error",
            )  # fmt: skip
        results[work.seq] = (
            answer if isinstance(answer, Exception) else _succeeded(work, answer, attempt, ms)
        )
    return results


def _upserted(ctx: RunContext, entries: list[Any]) -> list[WriteResult | WriteError]:
    """The group's answers; a connector that raises instead of answering per item fails the
    group with its error, tried again where an upsert by key is safe to repeat."""
    try:
        answers = ctx.destination.upsert_many(entries, ctx.draft)
    except LedgerError:
        raise
    except WriteError as exc:
        return [exc] * len(entries)
    except Exception as exc:  # noqa: BLE001 - a connector of the user's: never a traceback
        message = f"the destination's connector raised {type(exc).__name__}: {exc}"[:500]
        again = capabilities_of(ctx.destination).idempotent_upsert
        kind = RetryableError if again else WriteError
        return [kind(message, error_type="unknown")] * len(entries)
    if len(answers) != len(entries):
        error = WriteError(f"the destination's connector answered {len(answers)} results for "
                           f"{len(entries)} items", error_type="unknown")  # fmt: skip
        return [error] * len(entries)
    return list(answers)


def _prepare(work: WorkItem, ctx: RunContext, attempt: int) -> tuple[dict[str, Any], str | None]:
    """The record to write and the item's destination id, if it has one already."""
    meta = work.data.get(META) or {}
    if ctx.refresh is not None and meta.get("media_expires_at"):
        work.data = _refreshed(work, ctx, meta)
    record = written(work.data)  # the record the plan froze: what was reviewed is written
    dest_id = work.dest_id
    if dest_id is None and (work.intent or attempt > 1):
        dest_id = ctx.destination.find(record)
    return record, dest_id


REFRESHED = ("hero_image_url", "body_html")  # the signed file URLs a source may hand out anew


def _refreshed(work: WorkItem, ctx: RunContext, meta: dict[str, Any]) -> dict[str, Any]:
    """The frozen record with its expiring file URLs read again (Notion's last an hour); the
    source's content key proves the content is still the one reviewed."""
    assert ctx.refresh is not None
    fresh = ctx.refresh(work.item_id, dict(meta))
    if fresh is meta or fresh.get("media_expires_at") == meta.get("media_expires_at"):
        return work.data
    if fresh.get("content_key") != work.content_hash:
        raise ChangedSinceReview(
            "the source item changed after the plan was frozen (its file URLs had to be "
            "read again and its content differs): it was not written unreviewed"
        )
    urls = {k: fresh[k] for k in REFRESHED if k in fresh and k in work.data}
    kept = {k: fresh[k] for k in ("media_expires_at", "content_key") if k in fresh}
    return {**work.data, **urls, META: {**meta, **kept}}


def _write_ahead(
    pairs: list[tuple[WorkItem, str | None]], ctx: RunContext
) -> dict[int, str | None]:
    """Record, for the items that have no write-ahead yet, what the destination holds now."""
    dest_ids = {work.seq: dest_id for work, dest_id in pairs}
    need = [(work, dest_id) for work, dest_id in pairs if work.write_ahead is None]
    if not need:
        return dest_ids
    need = _found(need, ctx)
    dest_ids.update((work.seq, dest_id) for work, dest_id in need)
    snapshots = ctx.destination.snapshot_many([d for _, d in need if d])
    entries = []
    for work, dest_id in need:
        current = snapshots.get(dest_id) if dest_id else None
        if current is None:
            dest_ids[work.seq] = dest_id = None  # gone from the destination: written as new
        entries.append((work.item_id, dest_id, {
            "action": "create" if current is None else "update", "previous": current,
            "prev_run": work.prev_run_id}))  # fmt: skip
    # an earlier write that never finished keeps its record of the original
    in_force = ctx.ledger.mark_intents(ctx.key, ctx.run_id, entries)
    for work, _ in need:
        work.write_ahead = in_force[work.item_id]
    return dest_ids


def _found(
    need: list[tuple[WorkItem, str | None]], ctx: RunContext
) -> list[tuple[WorkItem, str | None]]:
    """Items the map does not know, looked up at a destination whose upsert overwrites by key (a
    table, a PUT): one there already (the user's own row) is snapshotted and recorded as an
    update, so a rollback restores it instead of deleting it. One query for the group."""
    unknown = [work.item_id for work, dest_id in need if dest_id is None]
    if not unknown or not capabilities_of(ctx.destination).idempotent_upsert:
        return need
    found = ctx.destination.find_many(unknown)
    return [(work, dest_id or found.get(work.item_id)) for work, dest_id in need]


def _succeeded(work: WorkItem, result: WriteResult, attempt: int, ms: int) -> Outcome:
    ahead = work.write_ahead or {}
    created = ahead.get("action") == "create"
    return Outcome(
        seq=work.seq, item_id=work.item_id, status="succeeded", attempts=attempt, duration_ms=ms,
        dest_id=result.dest_id, action="created" if created else "updated",
        previous=None if created else ahead.get("previous"), version=result.version,
        prev_run_id=None if created else ahead.get("prev_run"),
    )  # fmt: skip


def record_attempt_error(work: WorkItem, ctx: RunContext, attempt: int, exc: BaseException) -> None:
    """Every failed attempt goes into the ledger: the DLQ's retry history reads it."""
    error = as_write_error(exc)
    ctx.ledger.record_attempt(ctx.run_id, work.item_id, attempt, error.error_type,
                              error.status_code, redact(error.message, ctx.secrets))  # fmt: skip


def as_write_error(exc: BaseException) -> WriteError:
    """Any exception as a WriteError; an unexpected one is 'unknown' and never retried."""
    if isinstance(exc, WriteError):
        return exc
    return WriteError(f"{type(exc).__name__}: {exc}", error_type="unknown")


def failed_outcome(work: WorkItem, exc: BaseException, attempts: int, started: float) -> Outcome:
    error = as_write_error(exc)
    status = "held" if isinstance(error, ChangedSinceReview) else "failed"
    return Outcome(
        seq=work.seq, item_id=work.item_id, status=status, attempts=attempts,
        duration_ms=int(1000 * (time.monotonic() - started)), error_type=error.error_type,
        status_code=error.status_code, message=error.message, fatal=isinstance(error, FatalError),
    )  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    base_s: float = 2.0
    jitter: float = 0.5

    def delays(self) -> list[float]:
        return backoff_delays(self.base_s, self.retries)


def write_with_retries(
    works: list[WorkItem],
    ctx: RunContext,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Attempts at a group until each item succeeded, failed for good, or ran out of retries
    (for multi-item tasks): the items a transient error hit are tried again together, after the
    backoff or the longest Retry-After among them."""
    started = time.monotonic()
    delays = policy.delays()
    outcomes: dict[int, Outcome] = {}
    pending = list(works)
    for attempt in range(1, policy.retries + 2):
        last = attempt > policy.retries
        transient, wait = _attempt(pending, ctx, attempt, outcomes, started, may_retry=not last)
        if last and len(transient) > 1:
            # one item can make a whole request fail (a 5xx the server raises on its content):
            # halve what is left until only the items that fail on their own go to the DLQ
            _split(
                transient, ctx, attempt + 1, outcomes, started, sleep, delays[0] if delays else 0.0
            )
        if last or not transient:
            break
        sleep(max(jittered(delays[attempt - 1], policy.jitter), wait))
        pending = transient
    return [outcomes[work.seq] for work in works]


def _attempt(
    pending: list[WorkItem],
    ctx: RunContext,
    attempt: int,
    outcomes: dict[int, Outcome],
    started: float,
    may_retry: bool,
) -> tuple[list[WorkItem], float]:
    """One attempt at a group: each item's outcome goes into `outcomes`, except those a transient
    error hit while `may_retry`. Returns the items a transient error hit and the longest
    Retry-After among them."""
    results = write_group(pending, ctx, attempt)
    transient, wait = [], 0.0
    for work in pending:
        result = results[work.seq]
        if isinstance(result, Outcome):
            outcomes[work.seq] = result
            ctx.mark_retrying(work.item_id, False)
            continue
        record_attempt_error(work, ctx, attempt, result)
        if isinstance(result, RetryableError):
            transient.append(work)
            wait = max(wait, result.retry_after or 0.0)
            if may_retry:
                ctx.mark_retrying(work.item_id, True)
                continue
        outcomes[work.seq] = failed_outcome(work, result, attempt, started)
        ctx.mark_retrying(work.item_id, False)
    return transient, wait


def _split(
    works: list[WorkItem],
    ctx: RunContext,
    attempt: int,
    outcomes: dict[int, Outcome],
    started: float,
    sleep: Callable[[float], None],
    pause: float,
) -> None:
    """One more attempt at each half of a group that kept failing after its retries, and so on
    down to single items: the good ones are written and the failing ones keep their own error.
    Each piece is tried once (the group had its retries), `pause` seconds after the one before;
    a lone item's last error stands.

    A destination that is down (or a locked database) fails every piece alike: when both halves
    fail whole, one item of each is tried alone, and if both fail too the failure is the
    destination's, not the items': splitting stops there (a handful of attempts, not one per
    item), and the items keep their transient error for the breaker and a later retry."""

    def once(piece: list[WorkItem], number: int) -> list[WorkItem]:
        sleep(pause)
        return _attempt(piece, ctx, number, outcomes, started, may_retry=False)[0]

    middle = len(works) // 2
    halves = [works[:middle], works[middle:]]
    failing = [once(half, attempt) for half in halves]
    if all(len(f) == len(h) for f, h in zip(failing, halves, strict=True)):
        probes = [f[0] for f in failing if len(f) > 1]
        if len(probes) == 2 and all(once([probe], attempt + 1) for probe in probes):
            return  # the destination fails whatever it is sent
        failing = [[w for w in f if outcomes[w.seq].status != "succeeded"] for f in failing]
    for piece in failing:
        if len(piece) > 1:
            _split(piece, ctx, attempt + 1, outcomes, started, sleep, pause)


def record_failures(ctx: RunContext, works: dict[int, WorkItem], failed: list[Outcome]) -> None:
    """Failed items go to the dead-letter queue; each outcome's attempts come from the history."""
    for outcome in failed:
        work = works[outcome.seq]
        # an API that echoes a credential in its error never gets it into the ledger or a report
        outcome.message = redact(outcome.message, ctx.secrets)
        outcome.attempts = ctx.ledger.record_failure(
            ctx.run_id, work.seq, work.item_id, item_name=work.title,
            source_url=work.source_url, error_type=outcome.error_type or "unknown",
            status_code=outcome.status_code, message=outcome.message or "",
            recommendations=recommendations(outcome.error_type or "unknown"),
        )  # fmt: skip
