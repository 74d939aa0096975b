"""The map is checked against the destination, not trusted (issue 19, deliverable 6): an item
the ledger has as written that the destination no longer holds is written again, and reported."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from batchgate.config import Job, load_job
from batchgate.planner import Candidate, plan_run
from batchgate.report_full import FullReport
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.fakes.webflow_server import WebflowServer
from tests.test_full_flow import webflow_job
from tests.test_shards import Stack, _finished, _full, _job, stack  # noqa: F401 - the fixture

WORDING = "Missing at the destination, written again"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


# --- the plan and the report ---------------------------------------------------------------------


def test_an_unchanged_item_found_gone_is_planned_again_with_its_old_dest_id() -> None:
    """`gone` turns the map's unchanged items the destination no longer holds into writes (the
    stale dest_id kept, for the writer's write-ahead to find gone); the rest stay unchanged."""
    candidates = [
        Candidate(seq=n, item_id=f"p-{n}", title="t", location="row", data={"n": n},
                  content_hash=f"h{n}")
        for n in range(3)
    ]  # fmt: skip
    targets = {f"p-{n}": {"state": "written", "content_hash": f"h{n}", "dest_id": f"d{n}",
                          "run_id": "earlier", "draft": 1} for n in range(3)}  # fmt: skip
    plan = plan_run(candidates, targets, gone={"p-1", "p-9"})
    assert (plan.unchanged, plan.missing, plan.gone) == (2, 1, {"p-1"})
    (work,) = plan.work
    assert (work.item_id, work.dest_id, work.intent) == ("p-1", "d1", False)
    assert [r["status"] for r in plan.rows] == ["unchanged", "pending", "unchanged"]
    assert plan_run(candidates, targets).work == []  # unchecked, the map is what it says


def test_the_full_report_says_how_many_were_missing_in_text_markdown_and_json() -> None:
    report = FullReport(run_id="r", status="complete", total=5, succeeded=5, failed=0, skipped=0,
                        pending=0, unchanged=2, duration_s=1.0, threshold=95, destination="d",
                        missing=3)  # fmt: skip
    assert f"{WORDING}: 3" in report.as_text()
    assert f"| {WORDING} | 3 |" in report.as_markdown()
    assert report.as_json()["missing_at_destination"] == 3
    quiet = FullReport(run_id="r", status="complete", total=5, succeeded=5, failed=0, skipped=0,
                       pending=0, unchanged=5, duration_s=1.0, threshold=95, destination="d")  # fmt: skip
    assert WORDING not in quiet.as_text() and quiet.as_json()["missing_at_destination"] == 0


# --- a SQLite destination ------------------------------------------------------------------------


def _sql_job(tmp_path: Path, write_csv: Callable[..., Path], write_job: Callable[..., Path],
             count: int) -> Job:  # fmt: skip
    write_csv([blog_row(n) for n in range(1, count + 1)])
    cms = tmp_path / "cms.db"
    return load_job(write_job(extra=f"destination: {{type: sql, url: 'sqlite:///{cms}'}}\n"
                                    "batch: {items_per_chunk: 10}\n"))  # fmt: skip


def _cms(tmp_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "cms.db")) as conn, conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.prefect
def test_rows_deleted_behind_batchgates_back_are_written_again_and_reported(
    prefect_api: str, tmp_path: Path, write_csv, write_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run, then 7 of its 24 rows deleted with raw SQL: the next run writes those 7 again
    (as creates) and says so in its report and its run row; the map is read back one query a
    slice (slices of 10 here), in the planning pass only; a third run finds everything there."""
    from blocks.sql_destination import SqlDestination
    from flows.full import full

    job = _sql_job(tmp_path, write_csv, write_job, 24)
    assert full(job)["succeeded"] == 24
    gone = [f"p-{n:03d}" for n in (1, 5, 10, 11, 17, 23, 24)]
    _cms(tmp_path, f"DELETE FROM posts WHERE source_id IN ({','.join('?' * len(gone))})", *gone)
    assert _cms(tmp_path, "SELECT count(*) FROM posts") == [(17,)]

    monkeypatch.setattr("batchgate.planner.SLICE", 10)
    reads: list[int] = []
    versions = SqlDestination.versions
    monkeypatch.setattr(SqlDestination, "versions",
                        lambda self, ids: reads.append(len(ids)) or versions(self, ids))  # fmt: skip
    again = full(job, json_path=str(tmp_path / "again.json"))
    assert again["status"] == "complete"
    assert (again["succeeded"], again["unchanged"], again["missing_at_destination"]) == (24, 17, 7)
    assert f"{WORDING}: 7" in again["report"]
    assert reads == [10, 10, 4]  # one read a slice, of its unchanged items; none while writing
    assert _cms(tmp_path, "SELECT count(*), count(DISTINCT source_id) FROM posts") == [(24, 24)]
    ledger = open_ledger(job.ledger)
    assert ledger.run(again["run_id"])["missing"] == 7
    rows = {r["item_id"]: r for r in ledger.item_rows(again["run_id"])}
    assert {i for i, r in rows.items() if r["status"] == "succeeded"} == set(gone)
    assert {rows[i]["action"] for i in gone} == {"created"}

    third = full(job)
    assert (third["unchanged"], third["missing_at_destination"]) == (24, 0)
    assert WORDING not in third["report"]
    assert ledger.run(third["run_id"])["missing"] == 0


@pytest.mark.prefect
def test_a_sample_writes_an_item_the_emptied_table_lost(
    prefect_api: str, tmp_path: Path, write_csv, write_job
) -> None:
    """The sample plans as the full run does (plan_at): with the table emptied, its picks are
    written again rather than found unchanged."""
    from flows.full import full
    from flows.sample import sample

    job = _sql_job(tmp_path, write_csv, write_job, 6)
    assert full(job)["succeeded"] == 6
    _cms(tmp_path, "DELETE FROM posts")
    summary = sample(job, sample_count=3)
    assert summary["succeeded"] == 3
    assert {i["action"] for i in summary["items"]} == {"created"}
    assert _cms(tmp_path, "SELECT count(*) FROM posts") == [(3,)]


# --- the fake Webflow ----------------------------------------------------------------------------


def _delete(server: WebflowServer, dest_ids: list[str]) -> None:
    with httpx.Client(base_url=server.base_url,
                      headers={"Authorization": "Bearer test-token"}) as client:  # fmt: skip
        for dest_id in dest_ids:
            path = f"/collections/{server.state.collection_id}/items/{dest_id}"
            assert client.delete(path).status_code == 204


@pytest.mark.prefect
@pytest.mark.parametrize("per_request", [1, 100])
def test_items_deleted_in_webflow_are_written_again_and_reported(
    prefect_api: str, tmp_path: Path, write_csv, per_request: int
) -> None:
    """5 of 14 items deleted through the API: the next run writes them again, each slug once;
    the check is one listing of the collection, not a GET per item, with one item a request or
    a hundred."""
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 15)])
    with WebflowServer() as server:
        job = load_job(webflow_job(tmp_path, server, per_request=per_request))
        assert full(job)["succeeded"] == 14
        doomed = sorted(server.items)[::3]
        _delete(server, doomed)
        before = len(server.state.requests)
        again = full(job)
        requests = server.state.requests[before:]
        slugs = Counter(server.state.slugs())
    assert again["status"] == "complete"
    assert (again["succeeded"], again["unchanged"], again["missing_at_destination"]) == (14, 9, 5)
    assert f"{WORDING}: 5" in again["report"]
    assert len(slugs) == 14 and set(slugs.values()) == {1}
    items = f"/v2/collections/{server.state.collection_id}/items"
    listings = [r for r in requests if r[1] == "GET" and r[2].startswith(items + "?")]
    by_id = [r for r in requests if r[1] == "GET" and r[2].startswith(items + "/")]
    assert len([r for r in listings if "sortBy" not in r[2]]) == 1, listings  # the whole one
    # per item only the write-ahead snapshots of the deleted ones (one item a request)
    assert len(by_id) == (5 if per_request == 1 else 0), by_id


# --- a sharded run -------------------------------------------------------------------------------


def test_a_sharded_run_writes_the_rows_deleted_since_and_reports_them(
    stack: Stack,  # noqa: F811 - the fixture of tests/test_shards.py
    pg_schema_url: str,
    tmp_path: Path,
) -> None:
    """2 shards: the parent's plan has the deleted rows pending with their frozen data, and the
    shards write them (never settle them as already written: another run wrote their map entry)."""
    count = 40
    job = _job(tmp_path, count, {"type": "sql", "url": pg_schema_url}, pg_schema_url, shards=2)
    first = _finished(_full(stack, job), job, 300)
    assert first["succeeded"] == count and first["shards"] == 2, first
    engine = sa.create_engine(pg_schema_url)
    with engine.begin() as conn:
        deleted = conn.execute(sa.text("DELETE FROM posts WHERE source_id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)), {"ids": [f"p-{n:06d}" for n in range(1, 12)]})  # fmt: skip
        assert deleted.rowcount == 11
    again = _finished(_full(stack, job), job, 300)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT source_id) FROM posts")).one()
        run = conn.execute(sa.text("SELECT missing FROM batchgate_runs WHERE run_id = :r"),
                           {"r": again["run_id"]}).scalar_one()  # fmt: skip
        statuses = dict(conn.execute(sa.text(
            "SELECT status, count(*) FROM batchgate_items WHERE run_id = :r GROUP BY status"),
            {"r": again["run_id"]}).all())  # fmt: skip
    engine.dispose()
    assert again["status"] == "complete" and again["shards"] == 2, again
    assert (again["succeeded"], again["unchanged"], again["missing_at_destination"]) == (40, 29, 11)
    assert f"{WORDING}: 11" in again["said"]
    assert tuple(rows) == (count, count)
    assert run == 11 and statuses == {"succeeded": 11, "unchanged": 29}
