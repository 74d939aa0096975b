"""The dry-run flow against a real Prefect API: report, ledger, artifacts, JSON, nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from batchgate.config import LedgerConfig, load_job
from blocks.ledger import open_ledger
from tests.conftest import blog_row, copy_example

pytestmark = pytest.mark.prefect


@pytest.fixture
def example_job(tmp_path: Path):
    """The committed example, copied so the test's ledger and CMS file stay in tmp_path."""
    folder = tmp_path / "blog"
    copy_example(folder)
    job = load_job(folder / "job.yaml")
    return job.model_copy(update={"ledger": LedgerConfig(path=str(tmp_path / "ledger.db"))})


def test_example_counts_report_ledger_artifacts_and_json(
    prefect_api: str, example_job, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.dry_run import dry_run

    out = tmp_path / "out.json"
    state = dry_run(example_job, json_path=str(out), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary["total"], summary["ready"], summary["warnings"], summary["blocked"]) == (
        52,
        45,
        4,
        3,
    )

    report = summary["report"]
    for heading in (
        "Total Items Analyzed: 52",
        "✅ Ready: 45 (87%)",
        "⚠️  Warnings: 4 (8%)",
        "❌ Blocked: 3 (6%)",
        "❌ BLOCKED (must fix before proceeding):",
        "⚠️  WARNINGS (can proceed, quality degradation):",
        "NEXT STEPS:",
    ):
        assert heading in report
    assert report.count("   Fix: ") == 3 + 4 and report.count("   Impact: ") == 4

    payload = json.loads(out.read_text())
    assert set(payload) >= {"run_id", "mode", "total", "ready", "warnings", "blocked", "items"}
    assert payload["mode"] == "dry-run" and len(payload["items"]) == 52
    assert {i["severity"] for i in payload["items"]} == {"ready", "warning", "blocked"}
    blocked = [i for i in payload["items"] if i["severity"] == "blocked"]
    assert sorted(i["issues"][0]["rule"] for i in blocked) == [
        "category_allowed",
        "hero_image_required",
        "hero_image_required",
    ]
    assert set(blocked[0]["issues"][0]) == {"rule", "field", "message", "fix", "impact"}

    ledger = open_ledger(example_job.ledger)
    run = ledger.run(summary["run_id"])
    assert run["status"] == "completed" and run["blocked"] == 3 and run["filtered_out"] == 3
    assert run["flow_run_id"] == str(state.state_details.flow_run_id)
    assert len(ledger.item_rows(summary["run_id"])) == 52

    with get_client(sync_client=True) as client:
        flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        artifacts = client.read_artifacts(flow_run_filter=flow_run_filter)
    by_key = {a.key: a for a in artifacts}
    assert by_key["dry-run-report"].type == "markdown"
    assert "❌ Blocked | 3 | 6%" in by_key["dry-run-report"].data
    assert by_key["dry-run-items"].type == "table"
    table = json.loads(by_key["dry-run-items"].data)
    assert len(table) == 45 + 4 + 3 and table[0]["status"] == "blocked"

    # a dry-run writes nothing to the destination
    assert not (Path(example_job.source.path).parent / "cms.db").exists()


def test_source_error_fails_the_run_with_the_message(
    prefect_api: str, write_job: Callable[..., Path], tmp_path: Path
) -> None:
    from flows.dry_run import dry_run

    job = load_job(write_job(source="missing.csv"))
    state = dry_run(job, return_state=True)
    assert state.is_failed()
    assert "missing.csv does not exist" in state.message
    run = open_ledger(job.ledger).runs()[0]
    assert run["status"] == "failed" and "does not exist" in run["message"]
    assert open_ledger(job.ledger).item_rows(run["run_id"]) == []  # nothing half-written


def test_any_blog_csv_follows_the_rules(
    prefect_api: str, write_csv: Callable[..., Path], write_job: Callable[..., Path]
) -> None:
    from flows.dry_run import dry_run

    write_csv(
        [
            blog_row(1),
            blog_row(2, slug="dup"),
            blog_row(3, slug="dup"),
            blog_row(4, title="x" * 120),
            blog_row(5, status="Draft"),
        ]
    )
    job = load_job(write_job(extra="batch: {items_per_chunk: 2}\n"))
    summary = dry_run(job)
    assert (summary["total"], summary["ready"], summary["warnings"], summary["blocked"]) == (
        5,
        2,
        1,
        2,
    )


def test_any_blog_json_follows_the_rules(prefect_api: str, tmp_path: Path, write_job) -> None:
    from flows.dry_run import dry_run

    rows = [
        blog_row(1, tags=["a", "b"], hero_width=1600, hero_height=900),
        blog_row(2, category=None),
        blog_row(3, hero_width=1200, hero_height=1200),
        blog_row(4, hero_width="huge"),
    ]
    (tmp_path / "posts.json").write_text(json.dumps(rows), encoding="utf-8")
    summary = dry_run(load_job(write_job(source="posts.json")))
    assert (summary["total"], summary["ready"], summary["warnings"], summary["blocked"]) == (
        4,
        1,
        1,
        2,
    )


def test_webflow_destination_schema_feeds_the_dry_run(
    prefect_api: str, tmp_path: Path, write_csv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Categories come from the collection's options; a mapped field it lacks is reported (and
    never sent); a required field nothing maps to blocks every item. Nothing is written."""
    from flows.dry_run import dry_run
    from tests.fakes.webflow_server import WebflowServer, blog_fields
    from tests.test_full_flow import webflow_job

    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")
    write_csv([blog_row(1, category="Data"), blog_row(2, category="Cloud")])
    fields = blog_fields(categories=["Data"], without=["reading-time"])
    with WebflowServer(fields=fields) as server:
        summary = dry_run(load_job(webflow_job(tmp_path, server)))
        assert server.items == {}
    assert (summary["ready"], summary["blocked"]) == (1, 1)
    assert "reading_time -> reading-time" in summary["report"]
    assert "the webflow destination" in summary["report"]

    with WebflowServer(fields=blog_fields(extra_required=["author"])) as server:
        summary = dry_run(load_job(webflow_job(tmp_path, server)))
    assert summary["blocked"] == 2 and "'author'" in summary["report"]
