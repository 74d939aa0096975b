"""Group writes: a SQL group is one transaction, and one bad item never fails the rest."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchgate.config import load_job
from blocks.ledger import open_ledger
from tests.conftest import blog_row

pytestmark = pytest.mark.prefect


def sql_job(tmp_path: Path, url: str, batch: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        f"destination: {{type: sql, url: '{url}'}}\n"
        "validation: {preset: blog, allowed_categories: [Data]}\n"
        f"batch: {{backoff_base_s: 0.05{batch}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


def test_one_item_the_database_refuses_fails_alone_and_its_group_is_written(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path], pg_schema_url: str
) -> None:
    from blocks.factory import destination_for
    from flows.full import full

    rows = [blog_row(n) for n in range(1, 21)]
    rows[6]["status"] = "refused"  # a CHECK constraint the dry-run cannot read refuses it
    write_csv(rows)
    job = load_job(sql_job(tmp_path, pg_schema_url, ", success_threshold: low"))
    destination_for(job).prepare()  # the posts table, then a constraint of the database's own
    engine = sa.create_engine(pg_schema_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE posts ADD CONSTRAINT status_ok CHECK (status <> 'refused')"))
    summary = full(job)
    assert (summary["succeeded"], summary["failed"]) == (19, 1)
    (dead,) = summary["dlq"]
    assert dead["item_id"] == "p-007" and dead["error_type"] == "sql-constraint"
    assert "status_ok" in dead["message"] and dead["attempts"] == 1  # permanent: not retried
    with engine.connect() as conn:
        written = sorted(conn.execute(sa.text("SELECT source_id FROM posts")).scalars())
    engine.dispose()
    assert written == sorted(r["id"] for r in rows if r["id"] != "p-007")


def test_a_job_that_says_nothing_writes_sql_in_groups_of_500(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 1201)])
    job = load_job(sql_job(tmp_path, f"sqlite:///{tmp_path / 'cms.db'}"))
    state = full(job, return_state=True)
    summary = state.result()
    assert summary["succeeded"] == 1200 and summary["failed"] == 0
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
    writers = sorted(t.name.rsplit("-", 1)[0] for t in tasks if t.name.startswith("process-"))
    assert writers == ["process-items"] * 3  # 500 + 500 + 200, not 1,200 task runs
    ledger = open_ledger(job.ledger)
    targets = ledger.targets_for(f"sql:sqlite:{os.path.realpath(tmp_path / 'cms.db')}#posts")
    assert len(targets) == 1200 and {t["state"] for t in targets.values()} == {"written"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_many_writes_in_flight_on_a_healthy_database_fail_no_item(
    backend: str, prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path],
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """The most writers the job accepts (64 in flight, small groups): SQLite's one writer and
    PostgreSQL's connection pool (5 + 10 overflow) make them wait, never fail an item."""
    from flows.full import full

    url = (f"sqlite:///{tmp_path / 'cms.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_schema_url"))  # fmt: skip
    write_csv([blog_row(n) for n in range(1, 1281)])
    batch = ", items_per_chunk: 640, items_per_request: 10, writes_in_flight: 64"
    summary = full(load_job(sql_job(tmp_path, url, batch)))
    assert (summary["succeeded"], summary["failed"], summary["pending"]) == (1280, 0, 0), summary
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(DISTINCT source_id) FROM posts")).scalar() == 1280
    engine.dispose()


def test_a_ledger_locked_past_its_busy_timeout_is_the_runs_fault_never_the_items(
    tmp_path: Path,
) -> None:
    """Another process holds the SQLite ledger's write lock longer than the 30 s busy timeout:
    the group's write stops with the ledger's error, nothing is written unrecorded, and no item
    is failed or sent to the dead-letter queue (the run aborts and a rerun resumes them)."""
    import sqlite3

    from batchgate.config import LedgerConfig, SqlDestinationConfig
    from batchgate.errors import LedgerError
    from batchgate.writer import RetryPolicy, RunContext, WorkItem
    from blocks.sql_destination import SqlDestination
    from tasks.process import process_items

    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))
    dest = SqlDestination.from_config(
        SqlDestinationConfig(type="sql", url=f"sqlite:///{tmp_path / 'cms.db'}")
    )
    dest.prepare()
    ledger.start_run("r1", job_name="j", job_fingerprint="f", mode="full", source="x")
    rows = [blog_row(n) for n in range(1, 5)]
    ledger.plan_items("r1", [{"seq": n, "item_id": r["id"], "title": r["title"], "location": None,
                              "status": "pending"} for n, r in enumerate(rows)])  # fmt: skip
    works = [WorkItem(n, r["id"], r["title"], None, r, f"h{n}") for n, r in enumerate(rows)]
    lock = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the ledger
    try:
        ctx = RunContext("r1", dest, ledger, draft=False, retries=3)
        with pytest.raises(LedgerError, match="database is locked"):
            process_items.fn(works, ctx, RetryPolicy(3, 0.01, 0.0))
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert dest.rows() == []  # no write without its write-ahead record
    assert ledger.status_counts("r1") == {"pending": 4}
    assert ledger.dlq_entries("r1", states=None) == []
