"""The dry-run phase: validate every item, write nothing to the destination, report."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from batchgate.config import Job
from batchgate.connectors import capabilities_of, describe
from batchgate.errors import BatchgateError, WriteError
from batchgate.ledger import Ledger, new_run_id
from batchgate.report import DryRunReport
from blocks.factory import destination_for, source_for
from blocks.ledger import open_ledger
from tasks.validate import check_destination, publish_report, validate_into_ledger

SLICE = 5000  # item rows read back from the ledger at a time, for the report


@flow(name="dry-run", log_prints=False)
def dry_run(
    job: Job,
    json_path: str | None = None,
    job_ref: str = "JOB.yaml",
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any] | State:
    """Validate every item of the job's source and report Ready, Warnings and Blocked.

    The source is read, validated and recorded a chunk at a time (the frozen plan goes into the
    ledger as it is made), and the report is made from the ledger, so memory stays flat."""
    logger = get_run_logger()
    run_id = run_id or new_run_id("dry-run")
    ledger: Ledger | None = None
    try:
        ledger = open_ledger(job.ledger)
        source = source_for(job)
        ledger.start_run(
            run_id,
            job_name=job.name,
            job_fingerprint=job.fingerprint(),
            mode="dry-run",
            source=source.path,
            flow_run_id=str(runtime.flow_run.id or "") or None,
            parent_run_id=parent_run_id,
        )
        ledger.drop_abandoned_plans()  # what runs killed before their end left
        destination = destination_for(job) if job.destination else None
        check = check_destination(quote(destination)) if destination is not None else None
        # the frozen plan, a chunk at a time: what a sample shows and the full run after an
        # approval writes
        description, filtered_out, _, source_notes = validate_into_ledger(
            quote(ledger), run_id, quote(source), job, check
        )
    except (BatchgateError, WriteError) as exc:
        logger.error(str(exc))
        if ledger is not None and ledger.run(run_id) is not None:
            ledger.finish_run(run_id, "failed", message=str(exc))
        return Failed(message=str(exc))

    report = DryRunReport.from_rows(
        run_id, job.name, description, recorded(ledger, run_id), filtered_out, job_ref
    )
    report.notes += source_notes
    if check is not None:
        report.notes += check.notes
    if check is not None and check.unmapped_fields:
        report.notes.append(
            "Mapped fields the destination lacks (they will not be sent): "
            + ", ".join(check.unmapped_fields)
        )
    if destination is not None:  # what a rollback and a rerun can promise there
        report.notes.append(describe(capabilities_of(destination)))
    ledger.finish_run(
        run_id,
        "completed",
        total=report.total,
        ready=report.count("ready"),
        warnings=report.count("warning"),
        blocked=report.count("blocked"),
        filtered_out=filtered_out,
        report=report.as_text(),
    )
    publish_report(quote(report))
    if json_path:
        _write_report_json(Path(json_path), report, recorded(ledger, run_id))
    logger.info(
        "Dry-run %s: %d items, %d ready, %d warnings, %d blocked",
        run_id,
        report.total,
        report.count("ready"),
        report.count("warning"),
        report.count("blocked"),
    )
    return {**report.summary(), "report": report.as_text()}


def recorded(ledger: Ledger, run_id: str, size: int = SLICE) -> Iterator[dict[str, Any]]:
    """A run's item rows in source order, read from the ledger a slice at a time."""
    after = -1
    while rows := ledger.item_slice(run_id, after, size):
        yield from rows
        after = rows[-1]["seq"]


def _write_report_json(path: Path, report: DryRunReport, rows: Iterator[dict[str, Any]]) -> None:
    """The JSON report with every item, streamed from the ledger; atomic like `_write_json`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        report.write_json(out, rows)
    tmp.replace(path)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
