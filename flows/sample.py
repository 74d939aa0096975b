"""The sample phase: write a few items that span short, medium and long content, as drafts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from batchgate.config import Job
from batchgate.connectors import capabilities_of, refresher
from batchgate.errors import BatchgateError, WriteError
from batchgate.items import model_for
from batchgate.ledger import new_run_id
from batchgate.records import written
from batchgate.sample import (
    Choice,
    Pick,
    SampleEntry,
    SampleKeys,
    SampleReport,
    check_request,
    choose,
)
from batchgate.secrets import secret_values
from batchgate.transform import image_count, record_words
from batchgate.writer import RunContext, record_failures
from flows.dry_run import _write_json
from flows.full import (
    Prepared,
    announcer,
    discard_own_plan,
    plan_at,
    prepare_run,
    slice_plans,
)
from tasks.events import emit_dlq_added
from tasks.limits import holding
from tasks.process import item_task, outcomes_of


@flow(name="sample", log_prints=False)
def sample(
    job: Job,
    sample_count: int = 3,
    sample_ids: list[str] | None = None,
    json_path: str | None = None,
    job_ref: str = "JOB.yaml",
    run_id: str | None = None,
    parent_run_id: str | None = None,
    review_flow_run_id: str | None = None,
    plan_id: str | None = None,
) -> dict[str, Any] | State:
    """Write `sample_count` items (3-5) spanning short, medium and long content as drafts.

    `sample_ids` picks the items instead. `plan_id` (a dry-run's run id) takes them from the
    plan that dry-run froze, which the full run after an approval writes. `review_flow_run_id` is
    the paused pipeline run the reviewer resumes; without it, the report names the full and
    rollback commands.
    """
    logger = get_run_logger()
    run_id = run_id or new_run_id("sample")
    started = time.monotonic()
    try:
        prepared = prepare_run(job, run_id, "sample", parent_run_id, plan_id=plan_id)  # fmt: skip
    except (BatchgateError, WriteError) as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    ledger, destination = prepared.ledger, prepared.destination
    try:
        with holding(ledger, destination.key, run_id, announcer(logger, False)):
            check_request(sample_count, sample_ids)
            # the plan is read a slice at a time, keeping compact keys; then only the picks
            keys = _scan(prepared, sample_ids)
            picks = _fetch(prepared, keys, choose(keys, sample_count, sample_ids), job_ref)
            del keys
            ledger.plan_items(run_id, [{"seq": p.work.seq, "item_id": p.work.item_id,
                                        "title": p.work.title, "location": None,
                                        "status": "pending",
                                        "content_hash": p.work.content_hash} for p in picks])  # fmt: skip
            # a page whose signed file URLs expire before its write is read again (and held if
            # its content changed since the review's plan), as in the full run
            ctx = RunContext(run_id, destination, ledger, draft=True, retries=job.batch.retries,
                             refresh=refresher(prepared.source),
                             secrets=secret_values(job))  # fmt: skip
            works = [p.work for p in picks]
            futures = item_task(job.batch).map(works, unmapped(ctx)) if works else []
            outcomes = {
                o.seq: o
                for w, f in zip(works, list(futures), strict=True)
                for o in outcomes_of([w], f)
            }
            record_failures(ctx, {w.seq: w for w in works},
                            [o for o in outcomes.values() if o.status == "failed"])  # fmt: skip
            for o in outcomes.values():
                if o.status == "held":
                    ledger.hold_item(run_id, o.seq, o.message or "changed since review",
                                     f"batchgate pipeline --job {job_ref}")  # fmt: skip
            emit_dlq_added(job, run_id, destination.key, [o for o in outcomes.values() if o.status == "failed"])  # fmt: skip
    except (BatchgateError, WriteError) as exc:
        logger.error(str(exc))
        ledger.finish_run(run_id, "failed", message=str(exc), outcome="failed")
        return Failed(message=str(exc))
    finally:
        discard_own_plan(prepared, run_id)  # a sample given no reviewed plan made one of its own

    body = model_for(job).spec.body
    report = SampleReport(run_id, destination.key,
                          approve_hint=_hints(run_id, job_ref, review_flow_run_id),
                          drafts=capabilities_of(destination).drafts, body=body)  # fmt: skip
    for pick in picks:
        outcome, record = outcomes[pick.work.seq], written(pick.work.data)
        report.entries.append(SampleEntry(
            title=pick.work.title, item_id=pick.work.item_id, size=pick.size,
            words=record.get("word_count") if body else None,
            reading_time=record.get("reading_time") if body else None,
            images=image_count(record) if body else None, status=outcome.status,
            dest_id=outcome.dest_id,
            link=destination.link(outcome.dest_id, record) if outcome.dest_id else None,
            action=outcome.action, duration_s=outcome.duration_ms / 1000,
            attempts=outcome.attempts, error=outcome.message,
        ))  # fmt: skip
    if any(p.work.dest_id or p.work.intent for p in picks):
        report.note = ("Note: fewer new items than the sample size, so the sample includes "
                       "updates of items written before, edited in place.")  # fmt: skip
    report.duration_s = time.monotonic() - started
    text, markdown = report.as_text(), report.as_markdown()
    ledger.finish_run(
        run_id, report.status, total=len(picks), succeeded=report.succeeded,
        failed=len(picks) - report.succeeded, outcome=report.status,
        duration_s=report.duration_s, report=text,
    )  # fmt: skip
    create_markdown_artifact(key="sample-report", markdown=markdown,
                             description=f"Sample run {run_id}")  # fmt: skip
    if json_path:
        _write_json(Path(json_path), report.as_json())
    logger.info("Sample %s: %d/%d written as drafts", run_id, report.succeeded, len(picks))
    summary = {**report.as_json(), "report": text, "markdown": markdown}
    if report.status == "failed":
        return Failed(message=f"every sample item failed; see the dead-letter queue of {run_id}")
    return summary


def _scan(prepared: Prepared, ids: list[str] | None) -> SampleKeys:
    """Seq, word count and newness of every writable item of the sample's plan (drafts,
    nothing recorded), read a slice of the frozen plan at a time; the items asked for by id
    are kept."""
    keys = SampleKeys(ids)
    for plan in slice_plans(prepared, draft=True):
        for w in plan.work:
            keys.add(w, record_words(w.data))
    return keys


def _fetch(prepared: Prepared, keys: SampleKeys, chosen: list[Choice], job_ref: str) -> list[Pick]:
    """The chosen items' WorkItems, planned again from the ledger as `slice_plans` plans them
    (the run holds the destination, so they are what the scan saw)."""
    asked = {seq: work for _, seq, work in keys.asked.values()}
    wanted = {c.seq for c in chosen if c.seq not in asked}
    work = dict(asked)
    if wanted:
        work.update((w.seq, w) for w in plan_at(prepared, wanted, draft=True, job_ref=job_ref).work)
    missing = sorted(c.seq for c in chosen if c.seq not in work)
    if missing:
        raise BatchgateError(f"sample item(s) at position {missing} changed while the sample "
                             "chose them. Fix: run the sample again.")  # fmt: skip
    return [Pick(work[c.seq], c.size, c.words) for c in chosen]


def _hints(run_id: str, job_ref: str, review_flow_run_id: str | None) -> list[str]:
    if review_flow_run_id:
        return [
            f"✅ Approve: batchgate approve {review_flow_run_id}  (or Resume in the Prefect UI)",
            f"❌ Reject (rolls the sample back): batchgate reject {review_flow_run_id}",
        ]
    return [
        f"✅ Proceed: batchgate full --job {job_ref}",
        f"❌ Rollback: batchgate rollback {run_id}",
    ]
