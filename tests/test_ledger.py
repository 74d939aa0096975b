"""The ledger on a real SQLite file and the machine's PostgreSQL, through SqlAlchemyConnector."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

import batchgate.ledger
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


def test_a_v6_ledger_gains_the_seen_table_and_it_groups_shared_values_by_key_then_value(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 7 adds batchgate_seen to a version-6 ledger (its runs survive); a key seen more
    than once names each value owned twice or more with its owners in order, a value whose hash
    collides with another's but is owned once is not shared, and the run's rows can be dropped."""
    engine = ledger_connector(LedgerConfig(url=ledger_url)).get_engine()
    v6 = Ledger(engine, migrations=MIGRATIONS[:6])
    assert v6.ensure_schema() == 6
    assert not sa.inspect(engine).has_table("batchgate_seen")
    run_id = new_run_id("dry-run")
    v6.start_run(run_id, job_name="j", job_fingerprint="f", mode="dry-run", source="s")

    ledger = Ledger(engine)
    assert ledger.ensure_schema() == len(MIGRATIONS) >= 7
    assert ledger.run(run_id)["status"] == "running"
    top = -(2**63)  # the hash is a signed 64-bit integer: both ends fit
    ledger.add_seen(run_id, "slug_unique", [(top, 0, '"a"'), (5, 1, '"b"'), (top, 2, '"z"')])
    ledger.add_seen(
        run_id,
        "slug_unique",
        [(top, 3, '"a"'), (5, 4, '"c"'), (2**63 - 1, 5, '"a"'), (5, 6, '"b"')],
    )
    ledger.add_seen(run_id, "id_unique", [(5, 0, '"p-1"'), (5, 1, '"p-1"'), (5, 2, '"p-1"')])
    ledger.add_seen("other-run", "slug_unique", [(top, 9, '"a"')])
    shared = [('"a"', [0, 3]), ('"b"', [1, 6])]
    assert list(ledger.shared_seen(run_id, "slug_unique")) == shared
    monkeypatch.setattr(batchgate.ledger, "SEEN_PAGE", 1)  # a key a page: the same
    assert list(ledger.shared_seen(run_id, "slug_unique")) == shared
    assert list(ledger.shared_seen(run_id, "id_unique")) == [('"p-1"', [0, 1, 2])]
    assert ledger.drop_seen(run_id) == 10
    assert list(ledger.shared_seen(run_id, "id_unique")) == []
    assert ledger.drop_seen("other-run") == 1
