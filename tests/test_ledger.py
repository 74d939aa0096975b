"""The ledger on a real SQLite file and the machine's PostgreSQL, through SqlAlchemyConnector."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from batchgate.config import LedgerConfig
from batchgate.errors import ConfigError, LedgerError
from batchgate.ledger import MIGRATIONS, Ledger, new_run_id
from batchgate.models import Issue, ItemResult
from blocks.ledger import ledger_connector, open_ledger


def results(n: int) -> list[ItemResult]:
    out = []
    for seq in range(n):
        issues = []
        if seq % 10 == 1:
            issues = [Issue("title_length", "title", "warning", "too long", "shorten", "wraps")]
        if seq % 10 == 2:
            issues = [
                Issue("hero_image_required", "hero_image_url", "blocked", "missing", "add one")
            ]
        out.append(ItemResult(f"p-{seq}", seq, f"Post {seq}", f"posts.csv row {seq + 1}", issues))
    return out


def test_connector_is_prefect_sqlalchemy(ledger_url: str) -> None:
    from prefect_sqlalchemy import SqlAlchemyConnector

    assert isinstance(ledger_connector(LedgerConfig(url=ledger_url)), SqlAlchemyConnector)


def test_run_lifecycle_and_item_rows(ledger_url: str) -> None:
    ledger = open_ledger(LedgerConfig(url=ledger_url))
    run_id = new_run_id("dry-run")
    ledger.start_run(
        run_id, job_name="blog", job_fingerprint="abc", mode="dry-run", source="posts.csv"
    )
    assert ledger.run(run_id)["status"] == "running"
    assert ledger.record_validation(run_id, results(12_345)) == 12_345
    ledger.finish_run(run_id, "completed", total=12_345, ready=9_876, warnings=1_235, blocked=1_234)
    run = ledger.run(run_id)
    assert run["status"] == "completed" and run["total"] == 12_345 and run["finished_at"]
    rows = ledger.item_rows(run_id)
    assert len(rows) == 12_345
    assert rows[2]["status"] == "blocked" and rows[2]["issues"][0]["rule"] == "hero_image_required"
    assert rows[1]["issues"][0]["impact"] == "wraps"
    assert [r["run_id"] for r in ledger.runs()] == [run_id]


def test_runs_are_listed_newest_first(ledger_url: str) -> None:
    ledger = open_ledger(LedgerConfig(url=ledger_url))
    ids = []
    for _ in range(3):
        run_id = new_run_id("dry-run")
        ledger.start_run(run_id, job_name="j", job_fingerprint="f", mode="dry-run", source="s")
        ids.append(run_id)
    assert [r["run_id"] for r in ledger.runs(limit=2)] == ids[::-1][:2]


def test_schema_is_created_once_and_upgraded_in_order(ledger_url: str) -> None:
    engine = ledger_connector(LedgerConfig(url=ledger_url)).get_engine()
    old = Ledger(engine)
    assert old.schema_version() == 0
    assert old.ensure_schema() == len(MIGRATIONS)
    assert old.ensure_schema() == len(MIGRATIONS)  # idempotent
    run_id = new_run_id("dry-run")
    old.start_run(run_id, job_name="j", job_fingerprint="f", mode="dry-run", source="s")

    def add_note_column(conn: sa.Connection) -> None:
        conn.execute(sa.text("ALTER TABLE batchgate_runs ADD COLUMN note VARCHAR(50)"))

    newer = Ledger(engine, migrations=[*MIGRATIONS, add_note_column])
    assert newer.ensure_schema() == len(MIGRATIONS) + 1
    assert newer.schema_version() == len(MIGRATIONS) + 1
    with engine.connect() as conn:
        note = conn.execute(
            sa.text("SELECT note FROM batchgate_runs WHERE run_id = :r"), {"r": run_id}
        )
        assert note.scalar() is None  # the old row survived the upgrade
    assert newer.ensure_schema() == len(MIGRATIONS) + 1


def test_default_is_a_sqlite_file_at_the_configured_path(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "ledger.db"
    ledger = open_ledger(LedgerConfig(path=str(path)))
    assert path.exists() and ledger.engine.dialect.name == "sqlite"


def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    config = LedgerConfig(url="postgresql://batch:s3cret@127.0.0.1:1/ledger")
    with pytest.raises(LedgerError) as err:
        open_ledger(config)
    message = str(err.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "Fix:" in message


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a SQLAlchemy URL"):
        ledger_connector(LedgerConfig(url="not a url"))
