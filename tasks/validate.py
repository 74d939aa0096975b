"""Tasks of the dry-run: validate a batch, record it in the ledger, publish the report."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from batchgate.config import Job
from batchgate.destinations import Destination, DestinationCheck
from batchgate.errors import LedgerError
from batchgate.ledger import Ledger
from batchgate.models import Item, ItemResult
from batchgate.planner import from_source, frozen_rows
from batchgate.report import DryRunReport
from batchgate.schema import SCHEMAS
from batchgate.sources import Source, chunks_of
from batchgate.validation import build_rules, validate_items
from batchgate.validation.engine import make_context
from batchgate.validation.stream import StoredKeys, StreamValidator

CHUNK_SIZE = 5000  # items read, validated and recorded at a time


@task(name="validate-items", cache_policy=NO_CACHE)
def validate_batch(
    items: list[Item], job: Job, check: DestinationCheck | None = None
) -> list[ItemResult]:
    """Run the job's rules over every item (with what the destination reported, if any)."""
    rules = build_rules(job.validation, check)
    return validate_items(items, rules, make_context(job, check=check))


@task(name="validate-items", cache_policy=NO_CACHE)
def validate_into_ledger(
    ledger: Ledger,
    run_id: str,
    source: Source,
    job: Job,
    check: DestinationCheck | None = None,
    since: datetime | None = None,
    chunk_size: int | None = None,
) -> tuple[str, int, int]:
    """Read, validate and record a chunk at a time, each writable item with its frozen data, so
    no more than a chunk of items is ever held; then give every owner of a value a unique rule
    found shared its issue. What the unique rules have seen is kept in the ledger
    (batchgate_seen), not in memory, and dropped at the end, whether the source ended or failed.
    Returns the source's description, the rows filtered out, the items."""
    validator = StreamValidator(
        build_rules(job.validation, check),
        make_context(job, check=check),
        keys=lambda rule: StoredKeys(ledger, run_id, rule.name),
    )
    description, filtered_out, count = source.path, 0, 0
    size = chunk_size or CHUNK_SIZE
    done = False
    try:
        for chunk in chunks_of(source, SCHEMAS[job.validation.preset], since, size):
            results = validator.validate(chunk.items)
            frozen = frozen_rows(from_source(chunk.items, results))
            ledger.record_validation(run_id, results, frozen)
            description, count = chunk.description, count + len(results)
            filtered_out += chunk.filtered_out
        validator.amend(
            lambda seqs: ledger.items_by_seq(run_id, seqs),
            lambda rows: ledger.amend_items(run_id, rows),
        )
        done = True
    finally:
        try:
            ledger.drop_seen(run_id)
        except LedgerError:
            if done:  # else the error that stopped the run is the one to tell
                raise
    return description, filtered_out, count


@task(name="check-destination", cache_policy=NO_CACHE)
def check_destination(destination: Destination) -> DestinationCheck:
    """Ask the destination for its category options and field-mapping problems (read-only)."""
    return destination.check()


@task(name="record-results", cache_policy=NO_CACHE)
def record_results(
    ledger: Ledger,
    run_id: str,
    results: list[ItemResult],
    frozen: dict[int, tuple[str, str]] | None = None,
) -> int:
    """Write every item's result to the ledger, with the frozen plan when given."""
    return ledger.record_validation(run_id, results, frozen)


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(report: DryRunReport) -> None:
    """The report as a Markdown artifact and its items as a table artifact."""
    create_markdown_artifact(
        key="dry-run-report", markdown=report.as_markdown(), description=f"Dry-run {report.run_id}"
    )
    create_table_artifact(
        key="dry-run-items", table=report.table_rows(), description=f"Dry-run {report.run_id} items"
    )
