"""Tasks of the dry-run: validate a batch, record it in the ledger, publish the report."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from batchgate.config import Job
from batchgate.destinations import Destination, DestinationCheck
from batchgate.errors import LedgerError
from batchgate.items import ItemModel, TransformError, destination_issue, model_for, transform_issue
from batchgate.ledger import Ledger
from batchgate.models import Item, ItemResult
from batchgate.planner import from_source, frozen_rows
from batchgate.report import DryRunReport
from batchgate.sources import Source, SourceBatch, chunks_of
from batchgate.validation import build_rules, validate_items
from batchgate.validation.engine import check_rule_fields, make_context
from batchgate.validation.stream import StoredKeys, StreamValidator

CHUNK_SIZE = 5000  # items read, validated and recorded at a time


@task(name="validate-items", cache_policy=NO_CACHE)
def validate_batch(
    items: list[Item], job: Job, check: DestinationCheck | None = None
) -> list[ItemResult]:
    """Run the job's rules over every item (with what the destination reported, if any)."""
    rules = build_rules(job.validation, check, id_field=job.id_field)
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
) -> Validated:
    """Read, validate and record a chunk at a time, each writable item with its frozen data, so
    no more than a chunk of items is ever held; then give every owner of a value a unique rule
    found shared its issue. What the unique rules have seen is kept in the ledger
    (batchgate_seen), not in memory, and dropped at the end, whether the source ended or failed.
    Returns the source's description, the rows filtered out, the items, and what the report
    should say of the source's columns."""
    model = model_for(job)
    rules = build_rules(job.validation, check, id_field=model.schema.id_field)
    validator = StreamValidator(
        rules,
        make_context(job, check=check),
        keys=lambda rule: StoredKeys(ledger, run_id, rule.name),
    )
    description, filtered_out, count, columns = source.path, 0, 0, {}
    said: list[str] = []  # what the source itself says (e.g. a database of several sources)
    size = chunk_size or CHUNK_SIZE
    done = False
    try:
        for chunk in chunks_of(source, model.schema, since, size):
            if not columns:  # a rule on a field the source lacks is the job's error
                check_rule_fields(rules, fields_of(model, chunk), chunk.description)
            columns.update(dict.fromkeys(chunk.columns or ["?"]))
            said += [note for note in chunk.notes if note not in said]
            results = validator.validate(chunk.items)
            results, records = make_records(model, chunk.items, results, check)
            frozen = frozen_rows(from_source(chunk.items, results, records))
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
    return Validated(description, filtered_out, count, said + source_notes(model, list(columns)))


class Validated(NamedTuple):
    """What a validation into the ledger read: for the reports."""

    description: str  # the source's, e.g. "posts.csv (CSV)"
    filtered_out: int
    count: int  # items validated
    notes: list[str]  # what the report should say of the source's columns


def fields_of(model: ItemModel, chunk: SourceBatch) -> list[str]:
    """The fields the items have: the declared ones, else the source's columns and the preset's."""
    if model.schema.only_declared:
        return list(model.schema.converters)
    found = list(chunk.columns) or list(dict.fromkeys(k for i in chunk.items for k in i.data))
    return list(dict.fromkeys([*found, *model.schema.converters]))


def source_notes(model: ItemModel, columns: list[str]) -> list[str]:
    """What the dry-run says of the source's columns: those the records leave out, or that
    none is typed."""
    if model.name == "columns":
        return ["No fields are declared: every column is written as the source gives it (text "
                "from a CSV). Declare fields: with their types to type and check them."]  # fmt: skip
    left_out = [c for c in columns if c not in model.schema.converters and c != "?"]
    if model.schema.only_declared and left_out:
        return [f"Source columns not among the job's fields, left out of the records: "
                f"{', '.join(left_out)}. Declare them under fields: to write them."]  # fmt: skip
    return []


def make_records(
    model: ItemModel,
    items: list[Item],
    results: list[ItemResult],
    check: DestinationCheck | None = None,
) -> tuple[list[ItemResult], dict[int, dict[str, Any]]]:
    """Each writable item's record, as the plan freezes it; a transform that raises, or a value
    the destination cannot hold, blocks the item here, in the dry-run, never at write time."""
    problems = check.record_problems if check is not None else None
    records: dict[int, dict[str, Any]] = {}
    out = []
    for item, result in zip(items, results, strict=True):
        if result.status != "blocked":
            issues = []
            try:
                record = model.record(item)
            except TransformError as exc:
                issues.append(transform_issue(model, str(exc)))
            else:
                issues += [destination_issue(*p) for p in (problems(record) if problems else [])]
                if not issues:
                    records[item.seq] = record
            if issues:
                result = ItemResult(result.item_id, result.seq, result.title, result.location,
                                    [*result.issues, *issues])  # fmt: skip
        out.append(result)
    return out, records


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
