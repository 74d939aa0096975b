"""One identity per destination, whatever the spelling of its URL (batchgate/identity.py).

Real SQLite files in tmp_path (relative, absolute, symlinked folder, another driver name; before
and after the file exists), the machine's PostgreSQL (localhost, 127.0.0.1, ::1 spellings, an
explicit default port, a password), the ledger's rows under old-style keys adopted, and two
spellings of one SQLite destination run as separate `batchgate` processes: one hold, one map,
each item written once, and a rollback of the older run that leaves the newer run's work.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import batchgate.identity
from batchgate.config import LedgerConfig, parse_job
from batchgate.errors import BatchgateError, FatalError
from batchgate.hold import DestinationHold
from batchgate.identity import KEY_LENGTH, old_spellings, sql_key
from batchgate.ledger import Ledger, holds, runs, targets
from blocks.ledger import open_ledger
from tests.conftest import blog_row

SECRET = "s3cret-pw"


def destination(url: str, table: str = "posts") -> Any:
    from blocks.sql_destination import SqlDestination

    job = parse_job({"source": {"type": "file", "path": "p.csv"},
                     "destination": {"type": "sql", "url": url, "table": table}})  # fmt: skip
    return SqlDestination.from_config(job.destination)


def key_of(url: str, table: str = "posts") -> str:
    return destination(url, table).key


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/data holds the file; tmp_path/link is a symlink to it; the cwd is tmp_path/sub."""
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    return tmp_path


# --- SQLite ------------------------------------------------------------------------------------


def test_every_spelling_of_one_sqlite_file_is_one_key_before_and_after_the_file_exists(
    folders: Path,
) -> None:
    real = os.path.realpath(folders / "data" / "cms.db")
    spellings = [
        "sqlite:///../data/cms.db",  # relative to the working directory
        f"sqlite:///{folders}/data/cms.db",  # absolute
        f"sqlite:///{folders}/link/cms.db",  # a symlinked folder
        "sqlite:///../link/./cms.db",
        f"sqlite+pysqlite:///{folders}/sub/../data/cms.db",  # another driver name, a `..`
        f"sqlite:///file:{folders}/link/cms.db?uri=true",  # a URI filename
    ]
    before = {key_of(url) for url in spellings}
    assert not (folders / "data" / "cms.db").exists()  # computing a key never creates the file
    destination(spellings[0]).prepare()
    after = {key_of(url) for url in spellings}
    assert before == after == {f"sql:sqlite:{real}#posts"}
    assert key_of(spellings[2], table="POSTS") == f"sql:sqlite:{real}#posts"  # SQLite ignores case


def test_other_files_and_tables_are_other_keys(folders: Path) -> None:
    one = key_of(f"sqlite:///{folders}/data/cms.db")
    assert key_of(f"sqlite:///{folders}/data/other.db") != one
    assert key_of(f"sqlite:///{folders}/data/cms.db", table="pages") != one
    assert key_of(f"sqlite:///{folders}/sub/cms.db") != one


def test_a_long_path_is_shortened_to_fit_the_ledger_and_stays_stable(folders: Path) -> None:
    deep = folders / "data" / "/".join(["a-rather-long-folder-name"] * 14)
    deep.mkdir(parents=True)
    key = key_of(f"sqlite:///{deep}/cms.db")
    assert len(key) <= KEY_LENGTH and key.startswith("sql:sqlite:/") and key.endswith("#posts")
    assert key == key_of(f"sqlite:///{str(deep).replace('/data/', '/link/')}/cms.db")


# --- PostgreSQL --------------------------------------------------------------------------------


def spellings_of(url: str) -> list[str]:
    """The same server, database, user and settings written five ways."""
    rest = url.split("@127.0.0.1:5432", 1)[1]
    user = url.split("://", 1)[1].split("@", 1)[0]
    return [
        url,
        f"postgresql+psycopg2://{user}@localhost{rest}",
        f"postgresql://{user}@127.0.0.1{rest}",  # the default port left out
        f"postgresql+psycopg2://{user}:{SECRET}@localhost:5432{rest}",  # trust auth ignores it
        f"postgresql+psycopg2://{user}@LocalHost{rest}",
    ]


@pytest.mark.postgres
def test_every_spelling_of_one_postgresql_table_is_one_key(pg_schema_url: str) -> None:
    schema = pg_schema_url.rsplit("%3D", 1)[1]
    keys = {key_of(url) for url in spellings_of(pg_schema_url)}
    (key,) = keys
    assert re.fullmatch(rf"sql:postgresql:\d+/test/{schema}#posts", key), key
    assert SECRET not in key and "postgres@" not in key and len(key) <= KEY_LENGTH
    # the server's own identity: the same whatever the table is called, then another table
    assert key_of(pg_schema_url, table="pages") == key.replace("#posts", "#pages")


@pytest.mark.postgres
def test_another_schema_on_the_same_server_is_another_destination(
    pg_schema_url: str, postgres_url: str
) -> None:
    assert key_of(pg_schema_url) != key_of(postgres_url)
    assert key_of(postgres_url).endswith("/test/public#posts")


@pytest.mark.postgres
def test_a_server_refusing_its_system_identifier_is_named_by_host_and_port(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batchgate.identity, "SYSTEM_ID",
                        sa.text("SELECT system_identifier FROM no_such_function()"))  # fmt: skip
    schema = pg_schema_url.rsplit("%3D", 1)[1]
    keys = {key_of(url) for url in spellings_of(pg_schema_url)}
    assert keys == {f"sql:postgresql:localhost:5432/test/{schema}#posts"}


def test_an_unreachable_server_is_the_checks_fatal_error_without_its_password() -> None:
    dest = destination(f"postgresql://u:{SECRET}@127.0.0.1:9/db?connect_timeout=2")
    with pytest.raises(FatalError, match="cannot be reached") as caught:
        dest.key  # noqa: B018 - the property connects
    assert SECRET not in str(caught.value) and "127.0.0.1:9/db" in str(caught.value)


# --- old-style keys in an existing ledger ---------------------------------------------------------


def run_with(ledger: Ledger, run_id: str, key: str | None, status: str = "completed") -> None:
    ledger.start_run(run_id, job_name="j", job_fingerprint="f", mode="full", source="s")
    ledger.finish_run(run_id, status, destination_key=key)


def wrote(ledger: Ledger, run_id: str, key: str, *items: str) -> None:
    ledger.record_writes(run_id, key, [
        {"seq": n, "item_id": i, "dest_id": i, "content_hash": f"{run_id}:{i}", "action": "created",
         "attempts": 1, "duration_ms": 1, "version": f"v-{run_id}"}
        for n, i in enumerate(items)])  # fmt: skip
    time.sleep(0.01)  # the next write is later, on any clock resolution


def rows_of(ledger: Ledger, table: sa.Table) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def test_two_old_spellings_merge_into_the_key_keeping_each_items_latest_row(
    folders: Path, ledger_url: str
) -> None:
    ledger = open_ledger(LedgerConfig(url=ledger_url))
    relative = "sql:sqlite:///../data/cms.db#posts"  # keys as earlier versions wrote them
    absolute = f"sql:sqlite:///{folders}/link/cms.db#posts"
    unrelated = f"sql:sqlite:///{folders}/data/other.db#posts"
    run_with(ledger, "run-a", relative)
    run_with(ledger, "run-b", absolute)
    run_with(ledger, "run-c", relative)
    run_with(ledger, "run-x", unrelated)
    wrote(ledger, "run-a", relative, "p-1", "p-2", "p-3")
    wrote(ledger, "run-b", absolute, "p-2", "p-3")
    wrote(ledger, "run-c", relative, "p-3")
    wrote(ledger, "run-x", unrelated, "p-1")
    wrote(ledger, "run-w", "webflow:abc", "p-1")
    # a hold an earlier version's run left behind when it was killed (its lease lapsed)
    run_with(ledger, "run-killed", absolute, status="running")
    assert ledger.acquire_hold(absolute, "run-killed", "elsewhere:1", -1.0, lambda h: False) is None

    key = key_of(f"sqlite:///{folders}/data/cms.db")
    with DestinationHold(ledger, key, "run-new", timeout_s=5):
        mapped = ledger.targets_for(key)
        assert {i: t["run_id"] for i, t in mapped.items()} == {
            "p-1": "run-a", "p-2": "run-b", "p-3": "run-c"}  # fmt: skip
        assert [h["run_id"] for h in rows_of(ledger, holds)] == ["run-new"]
    keys = {t["destination_key"] for t in rows_of(ledger, targets)}
    assert keys == {key, f"sql:sqlite:///{folders}/data/other.db#posts", "webflow:abc"}
    assert ledger.targets_for(unrelated)["p-1"]["run_id"] == "run-x"  # another file: untouched
    by_run = {r["run_id"]: r for r in rows_of(ledger, runs)}
    assert {by_run[r]["destination_key"] for r in ("run-a", "run-b", "run-c")} == {key}
    assert by_run["run-killed"]["status"] == "interrupted"
    assert by_run["run-x"]["destination_key"] == unrelated


def test_a_live_hold_under_an_old_spelling_keeps_the_destination_until_it_ends(
    folders: Path, tmp_path: Path
) -> None:
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))
    old = f"sql:sqlite:///{folders}/link/cms.db#posts"
    run_with(ledger, "run-old", old, status="running")
    wrote(ledger, "run-old", old, "p-1")
    assert ledger.acquire_hold(old, "run-old", "elsewhere:1", 60.0, lambda h: False) is None
    key = key_of("sqlite:///../data/cms.db")
    with pytest.raises(BatchgateError, match="still held by run run-old"):
        DestinationHold(ledger, key, "run-new", timeout_s=0.5).acquire()
    assert ledger.targets_for(key) == {} and ledger.targets_for(old)  # nothing moved meanwhile
    ledger.release_hold(old, "run-old")
    with DestinationHold(ledger, key, "run-new", timeout_s=5):
        assert ledger.targets_for(key)["p-1"]["run_id"] == "run-old"
    assert ledger.targets_for(old) == {}


@pytest.mark.postgres
def test_old_postgresql_keys_are_adopted_when_only_the_host_and_port_spelling_differ(
    pg_schema_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))
    key = key_of(pg_schema_url)
    rest = pg_schema_url.split("@127.0.0.1:5432", 1)[1]
    same = [f"sql:postgresql+psycopg2://postgres:***@localhost:5432{rest}#posts",
            f"sql:postgresql://postgres@127.0.0.1{rest}#posts"]  # fmt: skip
    other = [f"sql:postgresql://root@127.0.0.1{rest}#posts",  # another user: maybe another schema
             "sql:postgresql://postgres@127.0.0.1/test#posts",  # another search_path
             f"sql:postgresql://postgres@db.example.com{rest}#posts",
             f"sql:postgresql://postgres@127.0.0.1{rest}#pages"]  # fmt: skip
    is_old = old_spellings(key)
    assert is_old is not None
    assert [is_old(k) for k in same + other] == [True, True, False, False, False, False]
    for n, old in enumerate(same + other):
        wrote(ledger, f"run-{n}", old, f"p-{n}")
    assert ledger.adopt_key(key, is_old) is None
    assert sorted(ledger.targets_for(key)) == ["p-0", "p-1"]
    assert all(ledger.targets_for(old) for old in other)


def test_keys_that_are_not_old_style_are_never_adopted(folders: Path, tmp_path: Path) -> None:
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))
    key = key_of("sqlite:///../data/cms.db")
    wrote(ledger, "run-1", "sql:sqlite:../data/cms.db#posts", "p-1")  # no `://`: not a URL key
    assert ledger.adopt_key(key, lambda old: True) is None
    assert ledger.targets_for(key) == {}
    assert sql_key(sa.create_engine("sqlite://"), "posts") == "sql:sqlite::memory:#posts"


# --- end to end: two spellings, separate processes --------------------------------------------------


def job_file(path: Path, url: str, csv: Path, ledger: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"source: {{type: file, path: {csv}}}\n"
        f"destination: {{type: sql, url: '{url}'}}\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
        "batch: {items_per_chunk: 10, backoff_base_s: 0.05}\n"
        f"ledger: {{path: {ledger}}}\n"
    )
    return path


def cms_rows(db: Path) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = {r.source_id: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM posts"))}
    engine.dispose()
    return rows


def wait_for(process_logs: list[Any], text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in Path(log.name).read_text() for log in process_logs):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.prefect
def test_two_spellings_of_one_sqlite_file_share_one_hold_one_map_and_one_history(
    prefect_api: str, folders: Path, write_csv: Callable[..., Path]
) -> None:
    from tests.test_guarantees import finish, run, start

    tmp = folders
    rows = [blog_row(n) for n in range(1, 31)]
    csv = write_csv(rows)
    ledger_db, db = tmp / "ledger.db", tmp / "data" / "cms.db"
    # the job file's folder makes `sqlite:///data/cms.db` absolute; the other goes through the link
    job_a = job_file(tmp / "job.yaml", "sqlite:///data/cms.db", csv, ledger_db)
    job_b = job_file(
        tmp / "other" / "job.yaml", "sqlite+pysqlite:///../link/cms.db", csv, ledger_db
    )
    destination(f"sqlite:///{db}").prepare()  # the table, so a reader is never blocked below

    # started together: a writer lock on the file stalls whichever run holds the destination
    # first, so the other is sure to find it held
    lock = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})
    conn = lock.connect()
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    both = [start(prefect_api, tmp, "full", "--job", str(j), "--json", f"{j.parent.name}-1.json",
                  PYTHONUNBUFFERED="1") for j in (job_a, job_b)]  # fmt: skip
    try:
        waited = wait_for([p.log for p in both], "waiting for the destination", 25)
    finally:
        conn.rollback()
        conn.close()
        lock.dispose()
    results = [finish(p, timeout=120) for p in both]
    assert [code for code, _ in results] == [0, 0], [out[-1500:] for _, out in results]
    assert waited, [out[-1500:] for _, out in results]
    (held,) = [out for _, out in results if "waiting for the destination" in out]
    assert "holds it" in held and f"sql:sqlite:{os.path.realpath(db)}#posts" in held
    ledger = open_ledger(LedgerConfig(path=str(ledger_db)))
    summaries = [json.loads((tmp / f"{name}-1.json").read_text()) for name in (tmp.name, "other")]
    assert [s["succeeded"] for s in summaries] == [30, 30]
    assert sorted(s["unchanged"] for s in summaries) == [0, 30]  # the second found them mapped
    written = {s["run_id"]: len(ledger.written_items(s["run_id"])) for s in summaries}
    assert sorted(written.values()) == [0, 30]  # each item written once
    older = next(run_id for run_id, n in written.items() if n)
    first = cms_rows(db)
    assert len(first) == 30 and all(r["updated_at"] == r["created_at"] for r in first.values())

    # one after another, through the other spelling: five edited items, and only those written
    edited = {f"p-{n:03d}" for n in range(1, 6)}
    write_csv([dict(r, title=f"NEW {r['title']}") if r["id"] in edited else r for r in rows])
    code, out = run(prefect_api, tmp, "full", "--job", str(job_b), "--json", "later.json")
    assert code == 0, out[-2000:]
    later = json.loads((tmp / "later.json").read_text())
    assert (later["succeeded"], later["unchanged"]) == (30, 25)
    assert {r["item_id"] for r in ledger.written_items(later["run_id"])} == edited
    mapped = rows_of(ledger, targets)
    assert {t["destination_key"] for t in mapped} == {f"sql:sqlite:{os.path.realpath(db)}#posts"}
    assert (
        len(mapped) == 30
        and {t["item_id"] for t in mapped if t["run_id"] == later["run_id"]} == edited
    )

    # the older run rolled back through its own spelling: the newer run's five items stay
    code, out = run(prefect_api, tmp, "rollback", older, "--job", str(job_a))
    assert code == 3, out[-2000:]
    left = cms_rows(db)
    assert set(left) == edited and all(r["title"].startswith("NEW ") for r in left.values())
    assert out.count(f"changed since by run {later['run_id']}") == 5
