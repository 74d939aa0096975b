"""Roll back a run: delete what it created, restore what it updated to the recorded version."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed, State

from batchgate.config import Job, LedgerConfig
from batchgate.errors import BatchgateError, WriteError
from batchgate.hold import DestinationHold
from batchgate.ledger import new_run_id
from batchgate.rollback import KINDS, job_of_run, roll_back
from blocks.factory import destination_for
from blocks.ledger import open_ledger


@flow(name="rollback", log_prints=False)
def rollback(
    run_id: str, ledger: LedgerConfig | None = None, job: Job | None = None
) -> dict[str, Any] | State:
    """Undo one run; a second call finds nothing left to undo and says so."""
    logger = get_run_logger()
    try:
        book = open_ledger(ledger or (job.ledger if job else LedgerConfig()))
        run = book.run(run_id)
        if run is None:
            raise BatchgateError(f"run {run_id} is not in the ledger at {book.where}. Fix: pick one "
                                 "from `batchgate runs`, or pass the ledger the run used.")  # fmt: skip
        destination = destination_for(job or job_of_run(run))
        # one writer per destination: a rollback waits for a run that is writing there
        with DestinationHold(book, destination.key, new_run_id("rollback"),
                             on_wait=logger.warning):  # fmt: skip
            report = roll_back(run_id, destination, book)
    except (BatchgateError, WriteError) as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    if not report.already:
        undone = report.rolled_back
        clean = not report.failed and not report.conflicts
        book.finish_run(run_id, "rolled-back" if clean else run["status"],
                        message=f"rolled back: {undone} items, {report.conflicts} conflicts, "
                        f"{report.failed} failed")  # fmt: skip
    text = report.as_text()
    create_markdown_artifact(key="rollback-report", markdown=f"```\n{text}```",
                             description=f"Rollback of {run_id}")  # fmt: skip
    logger.info("Rollback of %s: %d items, %d failed", run_id, report.total, report.failed)
    # counts, and the first KEEP items' outcomes (all of a smaller run), never one per item of
    # a big run: the ledger has every one
    summary = {"run_id": run_id, "already": report.already, "items": report.total,
               "rolled_back": report.rolled_back, "failed": report.failed,
               "conflicts": report.conflicts, "counts": {k: report.counts[k] for k in KINDS},
               "outcomes": report.outcomes, "report": text}  # fmt: skip
    return Failed(message=text) if report.failed else summary
