"""Streaming at flat memory (issue 13, point 1): chunked reading, validation and planning chunk by
chunk into the ledger, a capped report with every item in the JSON, writes from the plan in
slices."""

from __future__ import annotations

import gc
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgate.config import load_job
from batchgate.ledger import Ledger, new_run_id
from batchgate.models import Item
from batchgate.schema import BLOG
from batchgate.validation import build_rules, validate_items
from batchgate.validation.engine import make_context
from batchgate.validation.stream import StreamValidator
from blocks.file_source import FileSource
from blocks.ledger import open_ledger
from tests.conftest import blog_row

ITEMS, CHUNK = 3000, 500


def _rows() -> list[dict[str, Any]]:
    """3,000 posts: 45 in an unknown category, slugs shared across chunks and an id shared
    within one."""
    rows = [blog_row(n, id=f"p-{n:05d}", slug=f"post-{n}") for n in range(ITEMS)]
    for n in range(100, 100 + 45 * 64, 64):  # 45 blocked by category_allowed
        rows[n]["category"] = "DevOps"
    rows[2700]["slug"] = rows[10]["slug"]  # chunk 6 repeats a slug of chunk 1
    rows[1999]["slug"] = rows[10]["slug"]  # and chunk 4 too
    rows[1201]["id"] = rows[1200]["id"]  # an id twice in one chunk
    return rows


@pytest.fixture
def posts(write_csv: Callable[..., Path], write_job: Callable[..., Path]) -> Path:
    write_csv(_rows())
    return write_job()


def _alive_items() -> int:
    return sum(type(o) is Item for o in gc.get_objects())


def test_reading_and_validating_is_chunked_and_matches_one_pass(
    posts: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A chunk size of 500 gives 6 chunks; the whole list is never built (read() is never called
    and at most about a chunk of items is alive); unique slugs and ids are found across chunks,
    and every item's status and issues equal one pass over the whole list."""
    from tasks.validate import validate_into_ledger

    job = load_job(posts)
    source = FileSource(path=str(tmp_path / "posts.csv"))
    whole = source.read(BLOG).items
    expected = validate_items(whole, build_rules(job.validation), make_context(job))
    del whole
    gc.collect()

    def no_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole source was read")

    monkeypatch.setattr(FileSource, "read", no_read)
    alive: list[int] = []
    validate = StreamValidator.validate

    def counting(self: StreamValidator, items: list[Item]) -> Any:
        alive.append(_alive_items())
        return validate(self, items)

    monkeypatch.setattr(StreamValidator, "validate", counting)
    ledger, run_id = open_ledger(job.ledger), new_run_id("dry-run")
    ledger.start_run(run_id, job_name=job.name, job_fingerprint=job.fingerprint(),
                     mode="dry-run", source=source.path)  # fmt: skip
    _, _, count, _ = validate_into_ledger.fn(ledger, run_id, source, job, chunk_size=CHUNK)

    assert count == ITEMS and len(alive) == ITEMS // CHUNK
    assert max(alive) <= 2 * CHUNK, f"items alive per chunk: {alive}"
    rows = {r["seq"]: r for r in ledger.item_rows(run_id)}
    assert len(rows) == ITEMS
    for result in expected:
        row = rows[result.seq]
        assert (row["item_id"], row["status"]) == (result.item_id, result.status)
        assert row["issues"] == [i.as_dict() for i in result.issues], result.item_id
        assert (row["data"] is None) == (result.status == "blocked")
    shared = rows[10]["issues"][0]
    assert shared["rule"] == "slug_unique" and "p-01999, p-02700" in shared["message"]
    assert rows[1200]["status"] == rows[1201]["status"] == "blocked"


def test_dry_run_json_lists_every_blocked_item_and_the_text_the_first_20_per_rule(
    prefect_api: str, posts: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tasks.validate
    from flows.dry_run import dry_run

    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", CHUNK)
    out = tmp_path / "out.json"
    summary = dry_run(load_job(posts), json_path=str(out))

    blocked = 45 + 3 + 2
    assert (summary["total"], summary["blocked"]) == (ITEMS, blocked)
    payload = json.loads(out.read_text())
    assert len(payload["items"]) == ITEMS
    assert sum(i["severity"] == "blocked" for i in payload["items"]) == blocked
    in_category = [i for i in payload["items"]
                   if any(x["rule"] == "category_allowed" for x in i["issues"])]  # fmt: skip
    assert len(in_category) == 45
    report = summary["report"]
    assert "… and 25 more category_allowed problems (45 in all" in report
    shown = [i["id"] for i in in_category]
    assert shown[19] in report and shown[20] not in report
    assert "p-02700" in report and "id 'p-01200' is also used" in report  # other rules: all shown
    ledger = open_ledger(load_job(posts).ledger)
    assert ledger.status_counts(summary["run_id"]).get("blocked") == blocked
    # the Prefect artifacts stay readable too: the report's first 20 per rule, the table capped
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {key: [a for a in client.read_artifacts(
                     artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                     if a.description and summary["run_id"] in a.description]
                 for key in ("dry-run-report", "dry-run-items")}  # fmt: skip
    (markdown,), (table,) = found["dry-run-report"], found["dry-run-items"]
    text = str(markdown.data).replace("\\", "")  # Markdown escapes: category\_allowed
    assert "… and 25 more category_allowed problems (45 in all" in text, text[-1500:]
    assert shown[19] in str(markdown.data) and shown[20] not in str(markdown.data)
    rows = table.data if isinstance(table.data, list) else json.loads(str(table.data))
    assert sum(r["rule"] == "category_allowed" for r in rows) == 20, len(rows)


def test_a_full_run_from_a_plan_reads_it_in_slices_and_writes_every_item_once(
    prefect_api: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The plan is read back 500 items at a time and the destination map looked up per slice
    (the whole plan and the whole map are never read); every writable item is written once."""
    import batchgate.planner
    import tasks.validate
    from batchgate.config import SqlDestinationConfig
    from blocks.sql_destination import SqlDestination
    from flows.dry_run import dry_run
    from flows.full import full

    rows = _rows()
    write_csv(rows)
    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{url}'}}\n"))
    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", CHUNK)
    plan_id = dry_run(job)["run_id"]

    monkeypatch.setattr(batchgate.planner, "SLICE", CHUNK)
    slices: list[int] = []
    lookups: list[int] = []
    plan_slice, targets_slice = Ledger.frozen_plan_slice, Ledger.targets_for_items

    def whole(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole plan or destination map was read")

    def spy_plan(self: Ledger, plan: str, after: int, limit: int) -> list[dict[str, Any]]:
        got = plan_slice(self, plan, after, limit)
        slices.append(len(got))
        return got

    def spy_targets(self: Ledger, key: str, ids: Any) -> dict[str, dict[str, Any]]:
        lookups.append(len(ids))
        return targets_slice(self, key, ids)

    monkeypatch.setattr(Ledger, "frozen_plan", whole)
    monkeypatch.setattr(Ledger, "targets_for", whole)
    monkeypatch.setattr(Ledger, "frozen_plan_slice", spy_plan)
    monkeypatch.setattr(Ledger, "targets_for_items", spy_targets)
    summary = full(job, plan_id=plan_id)

    blocked = 45 + 3 + 2
    assert (summary["succeeded"], summary["skipped"]) == (ITEMS - blocked, blocked)
    assert max(slices) == CHUNK and sum(slices) == 2 * ITEMS  # planned, then written, by slice
    assert max(lookups) == CHUNK
    written = SqlDestination.from_config(SqlDestinationConfig(type="sql", url=url)).rows()
    ids = [r["source_id"] for r in written]
    assert len(ids) == len(set(ids)) == ITEMS - blocked
    ledger = open_ledger(job.ledger)
    counts = ledger.status_counts(summary["run_id"])
    assert counts == {"succeeded": ITEMS - blocked, "skipped": blocked}


def test_a_notion_source_yields_a_chunk_as_its_query_pages_arrive() -> None:
    """120 pages in chunks of 50: three chunks numbered across, and the first chunk's bodies are
    read before the query's second page (pages 101-120) is asked for."""
    from blocks.notion_source import NotionSource
    from tests.fakes.notion_server import NotionServer, NotionState

    with NotionServer(NotionState(rate_per_s=1000, burst=1000)) as server:
        server.add_pages(120, seed=5)
        source = NotionSource(base_url=server.base_url, database_id=server.state.database_id,
                              token="notion-test-token", requests_per_second=1000)  # fmt: skip
        chunks = list(source.iter_chunks(BLOG, chunk_size=50))
        paths = [path.split("?")[0] for _, _, path, _ in server.state.requests]
    assert [len(c.items) for c in chunks] == [50, 50, 20]
    assert [i.seq for c in chunks for i in c.items] == list(range(120))
    queries = [n for n, p in enumerate(paths) if p.endswith("/query")]
    first_body = next(n for n, p in enumerate(paths) if "/blocks/" in p)
    assert len(queries) == 2 and first_body < queries[-1]


def test_a_dry_run_its_source_stops_part_way_leaves_no_plan_to_write(
    prefect_api: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Row 1,100 holds a cell over source.max_cell_bytes: the dry-run has recorded its first two
    chunks when the third stops it; it ends failed, and a full run refuses its plan."""
    import tasks.validate
    from flows.dry_run import dry_run
    from flows.full import full

    rows = _rows()[:1500]
    rows[1099]["body_markdown"] = "x" * 1_000_001
    write_csv(rows)
    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{url}'}}\n"))
    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", CHUNK)
    assert dry_run(job, return_state=True).is_failed()
    ledger = open_ledger(job.ledger)
    (dry,) = [r for r in ledger.runs() if r["mode"] == "dry-run"]
    assert dry["status"] == "failed" and "row 1100" in dry["message"]
    assert len(ledger.item_rows(dry["run_id"])) == 2 * CHUNK

    state = full(job, plan_id=dry["run_id"], return_state=True)
    assert state.is_failed() and "did not complete" in str(state.message)
    assert ledger.status_counts(ledger.runs()[0]["run_id"]) == {}


@pytest.mark.parametrize("retry", [False, True], ids=["full-from-the-source", "dlq-retry"])
def test_a_full_run_without_a_reviewed_plan_streams_its_source_and_its_own_plan(
    prefect_api: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    retry: bool,
) -> None:
    """`batchgate full --job`, a sync and a dead-letter retry plan for themselves: the source is
    read and validated 500 rows at a time into a plan of the run's own, read back in slices (the
    source is never read whole, nor the plan or the destination map), every writable item is
    written once (only the named ones for a retry), and the run's own plan is dropped at its end."""
    import batchgate.planner
    import tasks.validate
    from batchgate.config import SqlDestinationConfig
    from blocks.sql_destination import SqlDestination
    from flows.full import full, own_plan_id

    rows = _rows()
    write_csv(rows)
    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{url}'}}\n"))
    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", CHUNK)
    monkeypatch.setattr(batchgate.planner, "SLICE", CHUNK)
    validated: list[int] = []
    slices: list[int] = []
    validate, plan_slice = StreamValidator.validate, Ledger.frozen_plan_slice

    def whole(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole source, plan or destination map was read")

    def counting(self: StreamValidator, items: list[Item]) -> Any:
        validated.append(len(items))
        return validate(self, items)

    def spy_plan(self: Ledger, plan: str, after: int, limit: int) -> list[dict[str, Any]]:
        got = plan_slice(self, plan, after, limit)
        slices.append(len(got))
        return got

    monkeypatch.setattr(FileSource, "read", whole)
    monkeypatch.setattr(Ledger, "frozen_plan", whole)
    monkeypatch.setattr(Ledger, "targets_for", whole)
    monkeypatch.setattr(StreamValidator, "validate", counting)
    monkeypatch.setattr(Ledger, "frozen_plan_slice", spy_plan)
    only = [f"p-{n:05d}" for n in (5, 1500, 2999)] if retry else None
    summary = full(job, item_ids=only)

    blocked = 45 + 3 + 2
    expected = len(only) if only else ITEMS - blocked
    assert summary["succeeded"] == expected
    assert max(validated) == CHUNK and sum(validated) == ITEMS
    assert max(slices) == CHUNK and sum(slices) == 2 * ITEMS  # planned, then written, by slice
    written = SqlDestination.from_config(SqlDestinationConfig(type="sql", url=url)).rows()
    ids = [r["source_id"] for r in written]
    assert len(ids) == len(set(ids)) == expected
    ledger = open_ledger(job.ledger)
    assert ledger.status_counts(summary["run_id"]).get("succeeded") == expected
    assert ledger.item_rows(own_plan_id(summary["run_id"])) == []


def test_a_full_run_whose_source_stops_part_way_writes_nothing_and_keeps_no_plan(
    prefect_api: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The source stops at its third chunk: the run fails naming the row, writes nothing, and the
    part of its own plan it had made is gone."""
    import tasks.validate
    from flows.full import full, own_plan_id

    rows = _rows()[:1500]
    rows[1099]["body_markdown"] = "x" * 1_000_001
    write_csv(rows)
    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{url}'}}\n"))
    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", CHUNK)
    state = full(job, return_state=True)
    assert state.is_failed() and "row 1100" in str(state.message)
    ledger = open_ledger(job.ledger)
    (run,) = [r for r in ledger.runs() if r["mode"] == "full"]
    assert run["status"] == "failed"
    assert ledger.item_rows(own_plan_id(run["run_id"])) == []
    with sqlite3.connect(tmp_path / "cms.db") as db:  # not even its table was made
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'posts'").fetchall() == []


def _seen_rows(ledger: Ledger, run_id: str) -> int:
    import sqlalchemy as sa

    from batchgate.ledger import seen

    query = sa.select(sa.func.count()).select_from(seen).where(seen.c.run_id == run_id)
    with ledger.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _keys_in_the_ledger(
    ledger: Ledger, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int]]:
    """Every chunk's keys go to the ledger: (rows added, rows of the run in the table after)
    per call."""
    calls: list[tuple[int, int]] = []
    add_seen = Ledger.add_seen

    def spy(self: Ledger, run: str, rule: str, rows: Any) -> None:
        add_seen(self, run, rule, rows)
        calls.append((len(rows), _seen_rows(self, run_id)))

    monkeypatch.setattr(Ledger, "add_seen", spy)
    return calls


@pytest.mark.parametrize("collide", [False, True], ids=["hashes", "every-hash-equal"])
def test_a_dry_runs_unique_keys_live_in_the_ledger_and_are_gone_when_it_has_amended(
    ledger_url: str,
    posts: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    collide: bool,
) -> None:
    """3,000 items in chunks of 500 on SQLite and PostgreSQL: no key is kept in memory, each chunk
    adds its 500 ids and 500 slugs to batchgate_seen, the duplicates
    (an id twice in one chunk, a slug in three chunks) give every item the status and issues of
    one pass over the whole list, and the run's rows are gone afterwards. With every hash equal
    (a collision of all 3,000 values) the values themselves still tell the shared ones apart."""
    import batchgate.validation.stream
    from batchgate.config import LedgerConfig
    from tasks.validate import validate_into_ledger

    job = load_job(posts)
    source = FileSource(path=str(tmp_path / "posts.csv"))
    expected = validate_items(source.read(BLOG).items, build_rules(job.validation),
                              make_context(job))  # fmt: skip
    ledger, run_id = open_ledger(LedgerConfig(url=ledger_url)), new_run_id("dry-run")
    ledger.start_run(run_id, job_name=job.name, job_fingerprint=job.fingerprint(),
                     mode="dry-run", source=source.path)  # fmt: skip
    calls = _keys_in_the_ledger(ledger, run_id, monkeypatch)
    if collide:
        monkeypatch.setattr(batchgate.validation.stream, "_key", lambda value: 2**64 - 1)
    _, _, count, _ = validate_into_ledger.fn(ledger, run_id, source, job, chunk_size=CHUNK)

    assert count == ITEMS
    assert [n for n, _ in calls] == [CHUNK] * (2 * ITEMS // CHUNK)  # id and slug, per chunk
    assert [after for _, after in calls] == list(range(CHUNK, 2 * ITEMS + 1, CHUNK))
    assert _seen_rows(ledger, run_id) == 0
    rows = {r["seq"]: r for r in ledger.item_rows(run_id)}
    assert len(rows) == ITEMS
    for result in expected:
        row = rows[result.seq]
        assert (row["item_id"], row["status"]) == (result.item_id, result.status)
        assert row["issues"] == [i.as_dict() for i in result.issues], result.item_id
        assert (row["data"] is None) == (result.status == "blocked")
    for seq, others in ((10, "p-01999, p-02700"), (1999, "p-00010, p-02700"),
                        (2700, "p-00010, p-01999")):  # fmt: skip
        (issue,) = rows[seq]["issues"]
        assert issue["rule"] == "slug_unique" and issue["severity"] == "blocked"
        assert issue["message"] == f"slug 'post-10' is also used by item(s) {others}"
    assert rows[1200]["status"] == rows[1201]["status"] == "blocked"
    assert "id 'p-01200' is also used by item(s) p-01200" in rows[1201]["issues"][0]["message"]
    blocked = sum(r["status"] == "blocked" for r in rows.values())
    assert blocked == 45 + 3 + 2


def test_a_dry_run_its_source_stops_part_way_leaves_no_unique_keys_in_the_ledger(
    ledger_url: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Row 1,100 holds a cell over source.max_cell_bytes: the first two chunks' keys were in the
    ledger when the third stopped the run, and none of them is left after it."""
    from batchgate.config import LedgerConfig
    from batchgate.errors import SourceError
    from tasks.validate import validate_into_ledger

    rows = _rows()[:1500]
    rows[1099]["body_markdown"] = "x" * 1_000_001
    write_csv(rows)
    job = load_job(write_job())
    source = FileSource(path=str(tmp_path / "posts.csv"))
    ledger, run_id = open_ledger(LedgerConfig(url=ledger_url)), new_run_id("dry-run")
    ledger.start_run(run_id, job_name=job.name, job_fingerprint=job.fingerprint(),
                     mode="dry-run", source=source.path)  # fmt: skip
    calls = _keys_in_the_ledger(ledger, run_id, monkeypatch)
    with pytest.raises(SourceError, match="row 1100"):
        validate_into_ledger.fn(ledger, run_id, source, job, chunk_size=CHUNK)
    assert calls[-1] == (CHUNK, 4 * CHUNK)  # two chunks' ids and slugs
    assert _seen_rows(ledger, run_id) == 0
    assert len(ledger.item_rows(run_id)) == 2 * CHUNK
