"""Group writes: a SQL group is one transaction, and one bad item never fails the rest."""

from __future__ import annotations

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
    from flows.full import full

    rows = [blog_row(n) for n in range(1, 21)]
    rows[6]["status"] = "x" * 150  # the posts table's status holds 100 characters
    write_csv(rows)
    job = load_job(sql_job(tmp_path, pg_schema_url, ", success_threshold: low"))
    summary = full(job)
    assert (summary["succeeded"], summary["failed"]) == (19, 1)
    (dead,) = summary["dlq"]
    assert dead["item_id"] == "p-007" and dead["error_type"] == "validation"
    assert "too long" in dead["message"] and dead["attempts"] == 1  # permanent: not retried
    engine = sa.create_engine(pg_schema_url)
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
    targets = ledger.targets_for(f"sql:sqlite:///{tmp_path / 'cms.db'}#posts")
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
