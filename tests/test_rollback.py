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
