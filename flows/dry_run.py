"""The dry-run phase: validate every item, write nothing to the destination, report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from batchgate.config import Job
from batchgate.errors import BatchgateError, WriteError
from batchgate.ledger import Ledger, new_run_id
from batchgate.planner import from_source, frozen_rows
from batchgate.report import DryRunReport
from batchgate.schema import SCHEMAS
from blocks.factory import destination_for, source_for
from blocks.ledger import open_ledger
from tasks.validate import check_destination, publish_report, record_results, validate_batch


@flow(name="dry-run", log_prints=False)
def dry_run(
    job: Job,
    json_path: str | None = None,
    job_ref: str = "JOB.yaml",
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any] | State:
    """Validate every item of the job's source and report Ready, Warnings and Blocked."""
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
        batch = source.read(SCHEMAS[job.validation.preset])
        check = check_destination(quote(destination_for(job))) if job.destination else None
        # quote(): large item lists are passed as they are; Prefect would otherwise walk every
        # item looking for futures, which costs more than the validation itself.
        results = validate_batch(quote(batch.items), job, check)
        # the frozen plan: what a sample shows and the full run after an approval writes
        frozen = frozen_rows(from_source(batch.items, results))
        record_results(quote(ledger), run_id, quote(results), quote(frozen))
    except (BatchgateError, WriteError) as exc:
        logger.error(str(exc))
        if ledger is not None and ledger.run(run_id) is not None:
            ledger.finish_run(run_id, "failed", message=str(exc))
        return Failed(message=str(exc))

    report = DryRunReport(run_id, job.name, batch.description, results, batch.filtered_out, job_ref)
    if check is not None and check.unmapped_fields:
        report.notes.append(
            "Mapped fields the destination lacks (they will not be sent): "
            + ", ".join(check.unmapped_fields)
        )
    ledger.finish_run(
        run_id,
        "completed",
        total=report.total,
        ready=report.count("ready"),
        warnings=len(report.warnings),
        blocked=len(report.blocked),
        filtered_out=batch.filtered_out,
        report=report.as_text(),
    )
    publish_report(quote(report))
    if json_path:
        _write_json(Path(json_path), report.as_json())
    logger.info(
        "Dry-run %s: %d items, %d ready, %d warnings, %d blocked",
        run_id,
        report.total,
        report.count("ready"),
        len(report.warnings),
        len(report.blocked),
    )
    summary = {k: v for k, v in report.as_json().items() if k != "items"}
    return {**summary, "report": report.as_text()}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
