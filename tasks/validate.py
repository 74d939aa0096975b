"""Tasks of the dry-run: validate a batch, record it in the ledger, publish the report."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from batchgate.config import Job
from batchgate.destinations import Destination, DestinationCheck
from batchgate.ledger import Ledger
from batchgate.models import Item, ItemResult
from batchgate.report import DryRunReport
from batchgate.validation import build_rules, validate_items
from batchgate.validation.engine import make_context


@task(name="validate-items", cache_policy=NO_CACHE)
def validate_batch(
    items: list[Item], job: Job, check: DestinationCheck | None = None
) -> list[ItemResult]:
    """Run the job's rules over every item (with what the destination reported, if any)."""
    rules = build_rules(job.validation, check)
    return validate_items(items, rules, make_context(job, check=check))


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
