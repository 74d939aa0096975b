"""The item-writing tasks of the full run."""

from __future__ import annotations

import time
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.futures import PrefectFuture
from prefect.runtime import task_run as current_task_run
from prefect.states import State

from batchgate.backoff import backoff_delays
from batchgate.config import BatchConfig
from batchgate.errors import LedgerError, RetryableError
from batchgate.writer import (
    Outcome,
    RetryPolicy,
    RunContext,
    WorkItem,
    as_write_error,
    failed_outcome,
    record_attempt_error,
    write_once,
    write_with_retries,
)


def retry_transient_only(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry 429, 5xx, timeouts and dropped connections; never a permanent or unknown error."""
    try:
        state.result()
    except RetryableError:
        return True
    except Exception:
        return False
    return False


@task(name="process-item", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only)
def process_item(work: WorkItem, ctx: RunContext) -> Outcome:
    """Transform-and-write one item; Prefect retries it with jittered exponential backoff."""
    attempt = int(current_task_run.run_count or 1)
    try:
        outcome = write_once(work, ctx, attempt)
    except LedgerError:
        raise  # the run's bookkeeping, not the item: it stays pending (flows/full.py)
    except Exception as exc:
        record_attempt_error(work, ctx, attempt, exc)
        will_retry = isinstance(exc, RetryableError) and attempt <= ctx.retries
        ctx.mark_retrying(work.item_id, will_retry)
        raise
    ctx.mark_retrying(work.item_id, False)
    ctx.ledger.record_writes(ctx.run_id, ctx.key, [_write_row(work, outcome, ctx)])
    return outcome


@task(name="process-items", cache_policy=NO_CACHE)
def process_items(works: list[WorkItem], ctx: RunContext, policy: RetryPolicy) -> list[Outcome]:
    """Write a group in one task run (fast destinations, big runs): one write-ahead transaction,
    one group write and one ledger transaction per attempt; same per-item rules and rows."""
    started = time.monotonic()
    try:
        outcomes = write_with_retries(works, ctx, policy)
    except LedgerError:
        raise  # the run's bookkeeping, not the items: they stay pending (flows/full.py)
    except Exception as exc:  # noqa: BLE001 - unexpected: each item fails with it
        outcomes = [failed_outcome(work, exc, 1, started) for work in works]
    by_seq = {w.seq: w for w in works}
    written = [_write_row(by_seq[o.seq], o, ctx) for o in outcomes if o.status == "succeeded"]
    if written:
        ctx.ledger.record_writes(ctx.run_id, ctx.key, written)
    return outcomes


def _write_row(work: WorkItem, outcome: Outcome, ctx: RunContext) -> dict[str, Any]:
    return {
        # an item that must be published by a separate call stays a draft in the map until the
        # destination confirms the publish (Ledger.mark_published)
        "draft": ctx.draft or ctx.destination.needs_publish,
        "seq": work.seq, "item_id": work.item_id, "action": outcome.action,
        "dest_id": outcome.dest_id, "attempts": outcome.attempts,
        "duration_ms": outcome.duration_ms, "previous": outcome.previous,
        "content_hash": work.content_hash, "version": outcome.version,
        "prev_run_id": outcome.prev_run_id,
    }  # fmt: skip


def item_task(batch: BatchConfig) -> Task[..., Outcome]:
    """process_item with the job's retries and jittered exponential backoff."""
    return process_item.with_options(
        retries=batch.retries,
        retry_delay_seconds=backoff_delays(batch.backoff_base_s, batch.retries) or 0,
        retry_jitter_factor=batch.jitter or None,
    )


def outcomes_of(group: list[WorkItem], future: PrefectFuture[Any]) -> list[Outcome]:
    """Wait for one task run; a failed run becomes a failed outcome for its (single) item. A
    ledger failure is raised: it is the run's, and its items stay pending."""
    future.wait()
    state = future.state
    if state.is_completed():
        result = state.result()
        return result if isinstance(result, list) else [result]
    raised = state.result(raise_on_failure=False)
    if isinstance(raised, LedgerError):
        raise raised
    error = as_write_error(raised or RuntimeError(state.message))
    # attempts: set from the ledger's history when the failure is recorded (record_failures)
    return [failed_outcome(group[0], error, 1, time.monotonic())]
