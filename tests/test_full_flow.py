"""The full flow against a real Prefect API, real SQLite/PostgreSQL and the fake Webflow server."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgate.config import LedgerConfig, SqlDestinationConfig, load_job
from blocks.ledger import open_ledger
from blocks.sql_destination import SqlDestination
from tests.conftest import blog_row, copy_example
from tests.fakes.webflow_server import Faults, WebflowServer

pytestmark = pytest.mark.prefect


def webflow_job(
    tmp_path: Path,
    server: WebflowServer,
    batch: str = "",
    publish: bool = False,
    chunk: int = 5,
    per_request: int = 1,
) -> Path:
    """A Webflow job; one item per request unless `per_request` says otherwise (most tests count
    requests per item; tests/test_webflow_groups.py covers groups)."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        "destination:\n"
        "  type: webflow\n"
        f"  base_url: {server.base_url}\n"
        f"  collection_id: {server.state.collection_id}\n"
        "  token: ${WEBFLOW_TOKEN}\n"
        "  rate_per_minute: 60000\n"
        f"  publish: {str(publish).lower()}\n"
        f"  items_per_request: {per_request}\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
        f"batch: {{items_per_chunk: {chunk}, backoff_base_s: 0.05, attempt_timeout_s: 1.0, "
        f"pause_seconds: 0.2{batch}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def test_example_fills_the_sqlite_cms_and_a_rerun_changes_nothing(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.full import full

    copy_example(tmp_path / "blog")
    job = load_job(tmp_path / "blog" / "job.yaml")
    job = job.model_copy(update={"ledger": LedgerConfig(path=str(tmp_path / "ledger.db"))})
    out = tmp_path / "full.json"
    summary = full(job, json_path=str(out))
    assert summary["status"] == "complete"
    assert (summary["succeeded"], summary["failed"], summary["skipped"], summary["pending"]) == (
        49,
        0,
        3,
        0,
    )
    payload = json.loads(out.read_text())
    assert set(payload) >= {"run_id", "mode", "status", "total", "succeeded", "failed", "skipped",
                            "pending", "success_rate", "duration_s", "dlq"}  # fmt: skip
    assert payload["total"] == 52 and payload["success_rate"] == 100.0 and payload["dlq"] == []

    cms = SqlDestination.from_config(job.destination)  # type: ignore[arg-type]
    rows = cms.rows()
    assert len(rows) == 49 and all(r["draft"] for r in rows)
    assert "post-050" not in {r["source_id"] for r in rows}  # blocked: no hero image

    again = full(job)
    assert again["unchanged"] == 49 and again["status"] == "complete"
    assert len(cms.rows()) == 49
    ledger = open_ledger(job.ledger)
    assert ledger.status_counts(again["run_id"]) == {"unchanged": 49, "skipped": 3}


def test_sql_destination_on_postgresql(
    prefect_api: str, pg_schema_url: str, write_csv, write_job
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 13)])
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{pg_schema_url}'}}\n"
                                   "batch: {items_per_chunk: 12, items_per_request: 3}\n"))  # fmt: skip
    summary = full(job)
    assert summary["succeeded"] == 12
    rows = SqlDestination.from_config(SqlDestinationConfig(type="sql", url=pg_schema_url)).rows()
    assert len(rows) == 12


def test_webflow_with_faults_every_item_ends_written_once_or_in_the_dlq(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    rows = [blog_row(n) for n in range(1, 41)]
    write_csv(rows)
    faults = Faults(error_rate=0.15, slow_rate=0.1, slow_seconds=1.5, drop_rate=0.05,
                    bad_request_slugs={"post-number-7"}, error_slugs={"post-number-9"})  # fmt: skip
    with WebflowServer(faults=faults) as server:
        job = load_job(webflow_job(tmp_path, server, publish=True))
        state = full(job, return_state=True)
        slugs = Counter(server.state.slugs())
        published = set(server.state.published)
        items = dict(server.items)
        server.state.faults = Faults(bad_request_slugs={"post-number-7"})  # the outage is over
        rerun = full(job)
        after = Counter(server.state.slugs())
    assert rerun["succeeded"] == 39 and rerun["failed"] == 1  # only the invalid item still fails
    assert len(after) == 39 and max(after.values()) == 1  # the rerun duplicated nothing
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log
    ledger = open_ledger(job.ledger)
    run_id = ledger.runs()[-1]["run_id"]  # the first of the two runs
    counts = ledger.status_counts(run_id)
    assert counts.get("pending", 0) == 0
    assert counts["succeeded"] + counts["failed"] == 40  # none lost
    assert max(slugs.values()) == 1  # none duplicated, despite timeouts after the write
    dlq = {e["item_id"]: e for e in ledger.dead_letters(run_id)}
    assert dlq["p-007"]["error_type"] == "validation" and dlq["p-007"]["status_code"] == 400
    assert dlq["p-007"]["attempts"] == 1  # permanent: never retried
    assert dlq["p-009"]["error_type"] == "api-error" and dlq["p-009"]["status_code"] == 500
    assert dlq["p-009"]["attempts"] == 4  # 1 + 3 retries
    assert [h["attempt"] for h in dlq["p-009"]["history"]] == [1, 2, 3, 4]
    assert dlq["p-009"]["recommendations"]
    stats = ledger.run(run_id)  # the report's error patterns come from the same entries
    assert stats["failed"] == len(dlq)
    succeeded = [r for r in ledger.item_rows(run_id) if r["status"] == "succeeded"]
    assert len(succeeded) == counts["succeeded"]
    assert all(r["dest_id"] in items for r in succeeded)  # the ledger's ids are the real ones
    assert all(r["dest_id"] in published for r in succeeded)  # published in groups
    # An item in the DLQ may exist all the same (its write applied, the answer lost): the rerun
    # below finds it by slug, so it is still written exactly once.
    assert len(slugs) >= len(succeeded)
    assert state.is_completed()  # 38/40 = 95% >= 90%: partial-success still completes
    assert ledger.run(run_id)["outcome"] == "partial-success"


def test_circuit_breaker_pauses_then_aborts_and_records_pending(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 41)])
    # batch 2 (items 6-10): 3 of 5 fail -> pause; batch 4 (16-20): all fail -> abort
    failing = {f"post-number-{n}" for n in (6, 7, 8, *range(16, 21))}
    with WebflowServer(faults=Faults(bad_request_slugs=failing)) as server:
        job = load_job(webflow_job(tmp_path, server))
        state = full(job, return_state=True)
    assert state.is_failed() and "circuit breaker" in state.message
    ledger = open_ledger(job.ledger)
    run = ledger.runs()[0]
    assert run["outcome"] == "aborted" and "batch 4" in run["message"]
    counts = ledger.status_counts(run["run_id"])
    # batches 5 and 6 were already in flight while batch 4 was judged; 7 and 8 never start
    assert counts["pending"] == 10 and counts["failed"] == 8 and counts["succeeded"] == 22


def test_fatal_auth_error_stops_the_run(prefect_api: str, tmp_path: Path, write_csv,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 6)])
    monkeypatch.setenv("WEBFLOW_TOKEN", "wrong-token")
    with WebflowServer() as server:
        state = full(load_job(webflow_job(tmp_path, server)), return_state=True)
    assert state.is_failed() and "HTTP 401" in state.message and "wrong-token" not in state.message


def test_task_retry_delays_are_jittered(prefect_api: str) -> None:
    """Prefect's retry_jitter_factor: the scheduled retry delays differ from the nominal ones."""
    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    from batchgate.errors import RetryableError

    @task(retries=3, retry_delay_seconds=[1, 1, 1], retry_jitter_factor=0.5)
    def always_fails() -> None:
        raise RetryableError("boom")

    @flow
    def runner() -> Any:
        return str(always_fails(return_state=True).state_details.task_run_id)

    task_run_id = runner()
    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=[task_run_id]))
        )
        states = client.read_task_run_states(task_run.id)
    delays = [(s.state_details.scheduled_time - s.timestamp).total_seconds()
              for s in states if s.name == "AwaitingRetry"]  # fmt: skip
    assert len(delays) == 3
    assert all(0.4 <= d <= 1.6 for d in delays)
    assert len({round(d, 3) for d in delays}) == 3 and any(abs(d - 1.0) > 0.01 for d in delays)


def test_a_killed_runs_own_plan_is_dropped_by_the_next_run_and_a_running_ones_kept(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run given no plan makes one of its own and drops it at its end; a run killed
    before that leaves it, and once the ledger has marked that run ended (interrupted), the next
    run given no plan drops it. The plan of a run still running is never touched."""
    import sqlalchemy as sa

    from batchgate.ledger import seen
    from flows.full import full, own_plan_id

    monkeypatch.chdir(tmp_path)  # the example's ledger is .batchgate/ledger.db, here
    job = load_job(copy_example(tmp_path / "blog"))
    ledger = open_ledger(job.ledger)
    assert str(tmp_path) in ledger.where
    rows = [{"seq": n, "item_id": f"p-{n}", "title": "t", "location": "", "status": "ready"}
            for n in range(3)]  # fmt: skip
    for run_id, status in (("killed", "interrupted"), ("busy", "running"),
                           ("killed-dry", "interrupted")):  # fmt: skip
        ledger.start_run(run_id, job_name=job.name, job_fingerprint=job.fingerprint(), mode="full",
                         source="posts.csv")  # fmt: skip
        ledger.finish_run(run_id, status)
        ledger.plan_items(own_plan_id(run_id), rows)
        # what its unique rules saw while it validated (a dry-run's under its own id)
        seen_by = run_id if run_id.endswith("dry") else own_plan_id(run_id)
        ledger.add_seen(seen_by, "unique_slug", [(7, 0, '"a"'), (7, 1, '"a"')])
    summary = full(job, console_progress=False)
    assert summary["succeeded"] > 0
    assert ledger.item_rows(own_plan_id("killed")) == []
    assert len(ledger.item_rows(own_plan_id("busy"))) == 3
    assert ledger.item_rows(own_plan_id(summary["run_id"])) == []
    with ledger.engine.connect() as conn:
        left = sorted({r.run_id for r in conn.execute(sa.select(seen.c.run_id))})
    assert left == [own_plan_id("busy")]
