"""Rollback of a run: created items deleted, updated ones restored byte for byte, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchgate.config import load_job
from blocks.ledger import open_ledger
from blocks.sql_destination import SqlDestination
from tests.conftest import blog_row
from tests.fakes.webflow_server import WebflowServer
from tests.test_full_flow import webflow_job

pytestmark = pytest.mark.prefect


def content(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "updated_at"} for r in rows]


def test_rollback_restores_updates_byte_for_byte_and_deletes_creations(
    prefect_api: str, tmp_path: Path, write_csv, write_job
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    write_csv([blog_row(n) for n in range(1, 4)])
    job = load_job(
        write_job(extra=f"destination: {{type: sql, url: 'sqlite:///{tmp_path / 'cms.db'}'}}\n")
    )
    first = full(job)
    cms = SqlDestination.from_config(job.destination)  # type: ignore[arg-type]
    before = content(cms.rows())

    write_csv([blog_row(1), blog_row(2, title="Changed title", body_markdown="# New\n\nNew body."),
               blog_row(3), blog_row(4)])  # fmt: skip
    second = full(job)
    assert second["succeeded"] == 4 and second["unchanged"] == 2  # p-002 updated, p-004 created
    assert [r["title"] for r in cms.rows()][1] == "Changed title"

    undone = rollback(second["run_id"], ledger=job.ledger)
    assert {o["item_id"]: o["outcome"] for o in undone["outcomes"]} == {
        "p-004": "deleted",
        "p-002": "restored",
    }
    assert content(cms.rows()) == before  # every column but updated_at, exactly as before
    assert "Rollback Complete" in undone["report"]

    again = rollback(second["run_id"], ledger=job.ledger)
    assert again["already"] and "nothing to roll back" in again["report"]
    assert content(cms.rows()) == before

    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    cli = subprocess.run([str(Path(sys.executable).with_name("batchgate")), "rollback", first["run_id"],
                          "--ledger", f"sqlite:///{job.ledger.path}"], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cms.rows() == [] and "deleted" in cli.stdout
    ledger = open_ledger(job.ledger)
    assert ledger.run(first["run_id"])["status"] == "rolled-back"

    rerun = full(job)  # the map forgot the rolled-back items: they are written again, once
    assert rerun["succeeded"] == 4 and len(cms.rows()) == 4


def test_rollback_of_a_webflow_run_from_its_recorded_job(
    prefect_api: str, tmp_path: Path, write_csv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")
    write_csv([blog_row(n) for n in range(1, 6)])
    with WebflowServer() as server:
        job = load_job(webflow_job(tmp_path, server))
        summary = full(job)
        assert len(server.items) == 5
        ledger = open_ledger(job.ledger)
        assert "test-token" not in (ledger.run(summary["run_id"])["job_json"] or "")
        undone = rollback(summary["run_id"], ledger=job.ledger)  # no job passed: the recorded one
        assert server.items == {} and len(undone["outcomes"]) == 5


def test_unknown_run_is_a_clear_error(prefect_api: str, tmp_path: Path) -> None:
    from batchgate.config import LedgerConfig
    from flows.rollback import rollback

    state = rollback(
        "no-such-run", ledger=LedgerConfig(path=str(tmp_path / "l.db")), return_state=True
    )
    assert state.is_failed() and "not in the ledger" in state.message


def test_a_big_rollback_reads_the_run_a_page_at_a_time_and_lists_20_items_per_outcome(
    prefect_api: str, tmp_path: Path, write_csv, write_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,200 written items rolled back in pages of 100: the whole run and the whole destination
    map are never read, no page is bigger than 100, each item is undone once, and the report
    counts every outcome but lists the first 20 of each."""
    import re
    import sqlite3
    from collections import Counter

    import batchgate.rollback
    from batchgate.ledger import Ledger
    from flows.full import full
    from flows.rollback import rollback

    write_csv([blog_row(n) for n in range(1, 1501)])
    cms_db = tmp_path / "cms.db"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: 'sqlite:///{cms_db}'}}\n"))
    assert full(job)["succeeded"] == 1500
    cms = SqlDestination.from_config(job.destination)  # type: ignore[arg-type]
    before = content(cms.rows())
    write_csv([blog_row(n, summary="Changed.") if n <= 1200 else blog_row(n)
               for n in range(1, 2501)])  # fmt: skip
    second = full(job)  # p-001..p-1200 updated, p-1501..p-2500 created
    assert second["succeeded"] == 2500 and second["unchanged"] == 300
    edited = [f"p-{n:03d}" for n in range(1, 31)]  # changed outside batchgate: conflicts
    gone = [f"p-{n}" for n in range(2001, 2026)]  # deleted outside: the goal is met already
    with sqlite3.connect(cms_db) as conn:
        conn.executemany("UPDATE posts SET title = 'Edited' WHERE source_id = ?",
                         [(i,) for i in edited])  # fmt: skip
        conn.executemany("DELETE FROM posts WHERE source_id = ?", [(i,) for i in gone])

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole run or the whole destination map was read")

    pages: list[tuple[int, list[int]]] = []
    lookups: list[int] = []
    marked: Counter[str] = Counter()
    page_of, targets_of, mark = (
        Ledger.written_items_page, Ledger.targets_for_items, Ledger.mark_rolled_back
    )  # fmt: skip

    def spy_page(self: Ledger, run_id: str, before_seq: int | None, limit: int) -> list[dict]:
        rows = page_of(self, run_id, before_seq, limit)
        pages.append((limit, [row["seq"] for row in rows]))
        assert all("data" not in row for row in rows)
        return rows

    def spy_targets(self: Ledger, key: str, ids: list[str]) -> dict:
        lookups.append(len(ids))
        return targets_of(self, key, ids)

    def spy_mark(self: Ledger, run_id: str, undone: list, key: str) -> None:
        assert len(undone) <= 100  # one transaction per group of marks
        marked.update(row["item_id"] for row, _ in undone)
        mark(self, run_id, undone, key)

    monkeypatch.setattr(batchgate.rollback, "PAGE", 100, raising=False)
    monkeypatch.setattr(Ledger, "written_items", whole)
    monkeypatch.setattr(Ledger, "targets_for", whole)
    monkeypatch.setattr(Ledger, "written_items_page", spy_page)
    monkeypatch.setattr(Ledger, "targets_for_items", spy_targets)
    monkeypatch.setattr(Ledger, "mark_rolled_back", spy_mark)
    undone = rollback(second["run_id"], ledger=job.ledger)

    assert all(limit == 100 and len(seqs) <= 100 for limit, seqs in pages)
    assert max(lookups) <= 100
    seqs = [seq for _, page in pages for seq in page]
    assert len(seqs) == 2200 and seqs == sorted(set(seqs), reverse=True)  # newest first, once
    updated = {f"p-{n:03d}" for n in range(1, 1201)}
    created = {f"p-{n}" for n in range(1501, 2501)}
    assert set(marked) == (updated | created) - set(edited) and set(marked.values()) == {1}
    rows = content(cms.rows())
    assert len(rows) == 1500  # the created ones are gone
    left = [r for r in rows if r["source_id"] in edited]  # left alone, as the editor left them
    assert len(left) == 30 and all(
        (r["title"], r["summary"]) == ("Edited", "Changed.") for r in left
    )
    restored = [r for r in rows if r["source_id"] not in edited]
    assert restored == [r for r in before if r["source_id"] not in edited]  # exactly as before
    counts = open_ledger(job.ledger).status_counts(second["run_id"])
    assert (counts["rolled-back"], counts["succeeded"]) == (2170, 30)

    assert undone["counts"] == {"deleted": 1000, "restored": 1170, "conflict": 30, "failed": 0}
    assert (undone["conflicts"], undone["failed"]) == (30, 0)
    assert len(undone["outcomes"]) <= batchgate.rollback.KEEP
    text = undone["report"]
    listed = Counter(re.findall(r"^\d+\. .+: (\w+)(?: - .*)?$", text, flags=re.MULTILINE))
    assert listed == {"deleted": 20, "restored": 20, "conflict": 20}, listed
    assert "Items: 2,170 rolled back, 30 left alone (changed since), 0 failed" in text
    assert "… and 980 more deleted (1,000 in all)" in text
    assert "… and 1,150 more restored (1,170 in all)" in text
    assert "… and 10 more conflict (30 in all)" in text
    assert "the ledger has every one" in text and "Rollback Incomplete" in text
