"""Retry dead letters: the chosen items of one run go through a new run linked to the old one."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed, State

from batchgate.config import Job, LedgerConfig
from batchgate.errors import BatchgateError
from batchgate.ledger import new_run_id
from batchgate.rollback import job_of_run
from blocks.ledger import open_ledger
from flows.full import full

AFTER = {
    "succeeded": "succeeded",
    "unchanged": "succeeded (already written by a later run)",
    "failed": "failed again (see the new run's dead-letter queue)",
    "skipped": "blocked by validation now (fix the source item)",
    "pending": "not attempted (the retry run stopped early)",
}


@flow(name="dlq-retry", log_prints=False)
def dlq_retry(
    run_id: str,
    item_ids: list[str] | None = None,
    error_type: str | None = None,
    ledger: LedgerConfig | None = None,
    job: Job | None = None,
    console_progress: bool = False,
) -> dict[str, Any] | State:
    """Retry the open dead letters of `run_id`: all, the named items, or one error type.

    The items are read again from the source and validated, then written by a new run whose
    parent is `run_id`. Each retried entry is closed with what became of it.
    """
    logger = get_run_logger()
    try:
        config = ledger or (job.ledger if job else LedgerConfig())
        book = open_ledger(config)
        run = book.run(run_id)
        if run is None:
            raise BatchgateError(f"run {run_id} is not in the ledger at {book.where}. Fix: pick one "
                                 "from `batchgate runs` or `batchgate dlq list`.")  # fmt: skip
        entries = book.dlq_entries(run_id, item_ids, error_type)
        missing = sorted(set(item_ids or []) - {e["item_id"] for e in entries})
        if missing:
            kind = f" with error type {error_type}" if error_type else ""
            raise BatchgateError(
                f"item(s) {', '.join(missing)} have no open dead letter{kind} in run {run_id}. "
                f"Fix: see `batchgate dlq list --run {run_id}` for the open ones."
            )
        job = (job or job_of_run(run)).model_copy(update={"ledger": config})
    except BatchgateError as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    if not entries:
        kind = f" of type {error_type}" if error_type else ""
        text = f"Nothing to retry: run {run_id} has no open dead letters{kind}.\n"
        return {"run_id": None, "parent_run_id": run_id, "retried": 0, "report": text}

    retry_id = new_run_id("retry")
    # claimed atomically: two retries of the same run never both write an entry
    ids = book.claim_dlq(run_id, [e["item_id"] for e in entries], retry_id)
    if not ids:
        text = (f"Nothing to retry: the open dead letters of run {run_id} were just claimed by "
                "another retry.\n")  # fmt: skip
        return {"run_id": None, "parent_run_id": run_id, "retried": 0, "report": text}
    logger.info("Retrying %d dead letter(s) of %s as %s", len(ids), run_id, retry_id)
    state = full(job, run_id=retry_id, parent_run_id=run_id, item_ids=ids,
                 console_progress=console_progress, return_state=True)  # fmt: skip
    after = {row["item_id"]: row["status"] for row in book.item_rows(retry_id)}
    closed: dict[str, list[str]] = defaultdict(list)
    for item_id in ids:
        status = after.get(item_id)
        note = AFTER.get(status or "", "no longer in the source (or filtered out)")
        closed[f"retried in {retry_id}: {note}"].append(item_id)
    for note, group in closed.items():
        book.set_dlq_state(run_id, group, "retried", note)
    outcomes = {item_id: after.get(item_id, "missing") for item_id in ids}
    retry_run = book.run(retry_id) or {}
    status = retry_run.get("outcome") or "failed"
    logger.info("Retry run %s: %s", retry_id, status)
    # The retry's own outcome is on its full subflow (Failed when it failed); this flow did its
    # job (retry and record) either way, so it ends Completed with the outcome in its result.
    return {"run_id": retry_id, "parent_run_id": run_id, "retried": len(ids), "status": status,
            "outcomes": outcomes, "message": state.message}  # fmt: skip
