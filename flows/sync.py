"""Incremental sync: write only the items edited since the last successful sync of this job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State

from batchgate.config import Job
from batchgate.errors import BatchgateError
from batchgate.ledger import new_run_id
from blocks.factory import source_for
from blocks.ledger import open_ledger
from flows.full import full


@flow(name="sync", log_prints=False)
def sync(
    job: Job,
    overlap_s: int = 120,
    job_ref: str = "JOB.yaml",
    console_progress: bool = False,
) -> dict[str, Any] | State:
    """Write the items edited since the last successful sync (the watermark), minus `overlap_s`
    so an edit made while that sync was reading is not missed. The first sync writes everything.
    Items written before are updated in place; unchanged ones are left alone.
    """
    logger = get_run_logger()
    run_id = new_run_id("sync")
    started = datetime.now(UTC)
    try:
        ledger = open_ledger(job.ledger)
        where = source_for(job).path
        mark = ledger.watermark(job.name, where)
        ledger.start_run(
            run_id, job_name=job.name, job_fingerprint=job.fingerprint(), mode="sync",
            source=where, flow_run_id=str(runtime.flow_run.id or "") or None,
            job_json=job.model_dump_json(),
        )  # fmt: skip
    except BatchgateError as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    # the run's started_at is the next watermark: what is edited from now on is picked up later
    since = mark - timedelta(seconds=overlap_s) if mark else None
    logger.info("Sync %s: items edited since %s", run_id, since.isoformat() if since else "ever")
    full(job, job_ref=job_ref, parent_run_id=run_id, since=since,
                console_progress=console_progress, return_state=True)  # fmt: skip
    child = next(iter(ledger.runs_of(run_id, mode="full")), None) or {}
    outcome = child.get("outcome") or "failed"
    counts = {k: int(child.get(k) or 0) for k in ("total", "succeeded", "failed", "unchanged")}
    message = (f"since {since.isoformat() if since else 'the beginning'}: "
               f"{counts['total']} item(s) edited, {counts['succeeded'] - counts['unchanged']} "
               f"written, {counts['unchanged']} unchanged, {counts['failed']} failed "
               f"(full run {child.get('run_id', '?')})")  # fmt: skip
    ledger.finish_run(run_id, outcome, message=message, outcome=outcome, **counts)
    summary = {"run_id": run_id, "since": since.isoformat() if since else None,
               "started": started.isoformat(), "outcome": outcome, "message": message,
               "full_run_id": child.get("run_id"), **counts}  # fmt: skip
    if outcome in ("complete", "partial-success"):
        logger.info("Sync %s: %s", run_id, message)
        return summary
    logger.error("Sync %s: %s", run_id, message)
    return Failed(message=f"{outcome}: {message}")
