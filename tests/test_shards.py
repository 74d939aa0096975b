"""Shards (issue 13, points 2-4): one rate across processes, and a full run split over workers."""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from batchgate.bucket import SharedPacer
from batchgate.ledger import Ledger
from tests.conftest import BLOG_COLUMNS, ROOT, blog_row

RATE = 20.0  # slots per second, shared
TAKERS = 4
EACH = 15


def _take(url: str, key: str, count: int, start_at: float, out: str) -> None:
    ledger = Ledger(sa.create_engine(url))
    pacer = SharedPacer(ledger, key, RATE, block=3)
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        pacer.acquire()
        stamps.append(time.time())
    Path(out).write_text("\n".join(repr(s) for s in stamps) + f"\n#{pacer.taken}")


def test_processes_taking_from_one_bucket_keep_its_rate_together(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """Four OS processes take slots at once: together they never beat the bucket's rate (in
    any one-second window, and overall), each took blocks rather than one slot a round trip."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # all begin together, after their imports
    outs = [tmp_path / f"taker-{n}.txt" for n in range(TAKERS)]
    procs = [
        context.Process(
            target=_take, args=(pg_schema_url, "webflow:shared", EACH, start_at, str(o))
        )
        for o in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    stamps, blocks = [], 0
    for out in outs:
        lines = out.read_text().splitlines()
        blocks += int(lines[-1][1:])
        stamps += [float(x) for x in lines[:-1]]
    stamps.sort()
    total = TAKERS * EACH
    assert len(stamps) == total
    span = stamps[-1] - stamps[0]
    # n slots spaced 1/R apart span (n-1)/R; a little slack for wake-up jitter only
    assert span >= (total - 1) / RATE * 0.97, span
    assert span <= (total - 1) / RATE * 1.6, span  # and they did not starve each other
    busiest = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    assert busiest <= RATE + 1, busiest
    assert blocks <= total // 3 + TAKERS, blocks


# --- end to end: a Prefect server on PostgreSQL, a process pool with 2 workers, the deployments --

BIN = Path(sys.executable).parent
PG_ITEMS = int(os.environ.get("BATCHGATE_SHARD_ITEMS", "20000"))
SHARDS = 4
WORKERS = int(os.environ.get("BATCHGATE_SHARD_WORKERS", "2"))  # 1: the benchmark's other figure


class Stack:
    """The Prefect server, its pool and workers, as the tests drive them."""

    def __init__(self, api: str, pool: str, home: Path, database: str) -> None:
        self.api, self.pool, self.home, self.database = api, pool, home, database
        self.workers: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**base, "PREFECT_API_URL": self.api, "BATCHGATE_HOME": str(ROOT),
                "PREFECT_WORKER_QUERY_SECONDS": "1", "BATCHGATE_SHARD_STALE_S": "12",
                "WEBFLOW_TOKEN": TOKEN, **extra}  # fmt: skip

    def start_worker(self, n: int) -> subprocess.Popen[str]:
        log = (self.home / f"worker-{n}.log").open("a")
        worker = subprocess.Popen(
            # at most 2 shard runs each, so 4 shards spread over both workers
            [str(BIN / "prefect"), "worker", "start", "--pool", self.pool, "--name", f"w{n}",
             "--limit", "2"],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.workers.append(worker)
        return worker


TOKEN = "shards-token"


@pytest.fixture(scope="module")
def stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server on its own PostgreSQL database (dropped afterwards), the process pool,
    the full-shard deployment of prefect.yaml, and 2 workers on 127.0.0.1."""
    pytest.importorskip("asyncpg", reason="the Prefect server needs asyncpg for PostgreSQL")
    from tests.conftest import _start_prefect_server, _stop

    database = f"prefect_shards_{os.getpid()}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # one a killed run left under the same pid is dropped first
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    home = tmp_path_factory.mktemp("shards-prefect")
    pg = sa.engine.make_url(postgres_url).set(drivername="postgresql+asyncpg", database=database)
    old = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.render_as_string(hide_password=False)
    server = None
    try:
        server, api = _start_prefect_server(home, home / "server.log", deadline_s=180)
        stack = Stack(api, f"shards-{uuid.uuid4().hex[:6]}", home, database)
        for args in (["work-pool", "create", stack.pool, "--type", "process"],
                     ["--no-prompt", "deploy", "--name", "full-shard", "--pool", stack.pool]):  # fmt: skip
            done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=stack.env(),
                                  capture_output=True, text=True, timeout=180)  # fmt: skip
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        for n in range(1, WORKERS + 1):
            stack.start_worker(n)
        yield stack
    finally:
        for worker in stack.workers if server else []:
            _kill_tree(worker.pid, signal.SIGTERM)
        if server is not None:
            _stop(server)
        if old is None:
            os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        else:
            os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = old
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int, sig: int, grace_s: float = 20.0) -> None:
    """A worker and every process it started (a flow run's process is in its own session); what
    is still alive after `grace_s` is killed (a Prefect worker told SIGTERM can hang, measured
    by benchmarks/shards.py: its teardown then never ended)."""
    tree = [pid, *_descendants(pid)]
    for target in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
    deadline = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for target in [*tree, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _alive(pid: int) -> bool:
    """Running, and not a zombie: a child that exited is reaped here."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _write_posts(path: Path, count: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=BLOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for n in range(1, count + 1):
            writer.writerow(blog_row(n, id=f"p-{n:06d}", slug=f"post-{n}"))


def _job(tmp_path: Path, count: int, destination: dict[str, Any], ledger_url: str,
         **batch: Any) -> Path:  # fmt: skip
    _write_posts(tmp_path / "posts.csv", count)
    job = {
        "name": "shards", "source": {"type": "file", "path": "posts.csv"},
        "destination": destination,
        "validation": {"preset": "blog",
                       "allowed_categories": ["Engineering", "Data", "Cloud", "Security", "AI"]},
        "batch": {"shards": SHARDS, **batch}, "ledger": {"url": ledger_url},
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def _full(stack: Stack, job: Path, **env: str) -> subprocess.Popen[str]:
    with (job.parent / "full.log").open("w") as log:  # the child keeps its own handle
        return subprocess.Popen([str(BIN / "batchgate"), "full", "--job", str(job), "--json",
                                 str(job.parent / "full.json")], cwd=job.parent,
                                env=stack.env(**env), stdout=log, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip


def _finished(process: subprocess.Popen[str], job: Path, timeout: float) -> dict[str, Any]:
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(
            f"the full run took over {timeout} s: {(job.parent / 'full.log').read_text()[-3000:]}"
        )
    said = (job.parent / "full.log").read_text()
    assert code == 0, said[-4000:]
    return {"said": said, **json.loads((job.parent / "full.json").read_text())}


def _exactly_once(ledger_url: str, run_id: str, count: int) -> None:
    engine = sa.create_engine(ledger_url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text(
            "SELECT status, count(*) FROM batchgate_items WHERE run_id = :r GROUP BY status"),
            {"r": run_id}).all())  # fmt: skip
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT item_id) FROM batchgate_items "
                                    "WHERE run_id = :r"), {"r": run_id}).one()  # fmt: skip
    engine.dispose()
    assert statuses == {"succeeded": count}, statuses
    assert tuple(rows) == (count, count)


def test_20000_items_in_4_shards_into_postgresql(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """The parent plans once; 4 shard runs on 2 workers write every item once into PostgreSQL;
    the parent's report and per-shard rows count all of them."""
    job = _job(tmp_path, PG_ITEMS, {"type": "sql", "url": pg_schema_url}, pg_schema_url)
    started = time.monotonic()
    result = _finished(_full(stack, job), job, 600)
    took = time.monotonic() - started
    assert result["status"] == "complete" and result["succeeded"] == PG_ITEMS, result
    assert result["shards"] == SHARDS
    for shard in range(1, SHARDS + 1):
        assert (
            f"Shard {shard}/{SHARDS}: {PG_ITEMS // SHARDS}/{PG_ITEMS // SHARDS} written"
            in result["said"]
        )
    _exactly_once(pg_schema_url, result["run_id"], PG_ITEMS)
    # the parent's artifacts in Prefect: its progress at 100% and the full-shards table, a row a
    # shard with its items all written
    artifacts = httpx.post(f"{stack.api}/artifacts/filter", json={"sort": "CREATED_DESC"}).json()
    (table,) = [a for a in artifacts if a["key"] == "full-shards"
                and a["description"] == f"Shards of {result['run_id']}"][:1]  # fmt: skip
    share = PG_ITEMS // SHARDS
    for shard in range(1, SHARDS + 1):
        row = rf"\| {shard}/{SHARDS} \| {share} \| {share} \| 0 \| 0 \| \d \| done \| [0-9a-f-]{{36}} \|"
        assert re.search(row, table["data"]), table["data"]
    progress = [a for a in artifacts if a["type"] == "progress"
                and a["flow_run_id"] == table["flow_run_id"]]  # fmt: skip
    assert progress and progress[0]["data"] == 100.0, progress
    # the shard runs are the parent's subflow runs (run_deployment links them)
    shard_runs = httpx.post(f"{stack.api}/flow_runs/filter", json={
        "flow_runs": {"name": {"like_": f"{result['run_id']}-shard-"}}}).json()  # fmt: skip
    assert len(shard_runs) == SHARDS
    for shard_run in shard_runs:
        link = httpx.get(f"{stack.api}/task_runs/{shard_run['parent_task_run_id']}").json()
        assert link["flow_run_id"] == table["flow_run_id"], (shard_run["name"], link)
    engine = sa.create_engine(pg_schema_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT source_id) FROM posts")).one()
    engine.dispose()
    assert tuple(rows) == (PG_ITEMS, PG_ITEMS)
    print(
        f"\n{PG_ITEMS} items, {SHARDS} shards, {WORKERS} workers: {took:.1f} s, {PG_ITEMS / took:.0f} items/s"
    )


_PLANNED_THEN_SHARDED = """
import json, sys
from pathlib import Path
from batchgate.config import load_job
from flows.dry_run import dry_run
from flows.full import full

job = load_job(Path("job.yaml"))
planned = dry_run(job)
Path("posts.csv").unlink()  # the shards must write the frozen plan, never read the source
full(job, plan_id=planned["run_id"], json_path="full.json")
print("plan", planned["run_id"])
"""


def test_shards_write_the_dry_runs_frozen_plan_with_the_source_gone(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """The full run given a dry-run's plan (as the pipeline gives it after the approval) shards
    that plan: with the source file deleted after the dry-run, every planned item is still
    written once, from the data the dry-run froze in the ledger."""
    count = 2000
    job = _job(tmp_path, count, {"type": "sql", "url": pg_schema_url}, pg_schema_url)
    done = subprocess.run([sys.executable, "-c", _PLANNED_THEN_SHARDED], cwd=job.parent,
                          env=stack.env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "plan " in done.stdout, said[-4000:]
    assert not (tmp_path / "posts.csv").exists()
    result = json.loads((tmp_path / "full.json").read_text())
    assert result["status"] == "complete" and result["succeeded"] == count, result
    assert result["shards"] == SHARDS
    _exactly_once(pg_schema_url, result["run_id"], count)
    engine = sa.create_engine(pg_schema_url)
    with engine.connect() as conn:
        titles = conn.execute(
            sa.text("SELECT count(DISTINCT source_id), min(title) FROM posts")
        ).one()
    engine.dispose()
    assert tuple(titles) == (count, "Post number 1"), titles


WEBFLOW_RATE = 600  # requests per minute: the fake allows 10 a second


def _webflow(server: Any, per_request: int) -> dict[str, Any]:
    return {"type": "webflow", "base_url": server.base_url, "token": "${WEBFLOW_TOKEN}",
            "collection_id": server.state.collection_id, "rate_per_minute": WEBFLOW_RATE,
            "items_per_request": per_request}  # fmt: skip


def _writes(server: Any) -> list[tuple[float, str, str, int]]:
    return [r for r in server.state.requests if r[1] in ("POST", "PATCH")]


def test_4_shards_into_webflow_keep_one_shared_rate_with_no_429(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """4 shards at once against the fake Webflow's limit (10 requests a second): each shard alone
    would send at the full rate, so only the shared bucket keeps them under it together."""
    from tests.fakes.webflow_server import WebflowServer

    count = 160
    # the fake counts every request in windows of 10 s (100 requests): 4 unshared pacers send 4x
    with WebflowServer(token=TOKEN, rate_limit=WEBFLOW_RATE // 6, window_s=10.0) as server:
        job = _job(tmp_path, count, _webflow(server, 1), pg_schema_url, items_per_chunk=10)
        result = _finished(_full(stack, job), job, 300)
        writes = _writes(server)
        refused = [r for r in server.state.requests if r[3] == 429]
        slugs = Counter(server.state.slugs())
    assert result["status"] == "complete" and result["succeeded"] == count, result
    assert not refused, f"{len(refused)} requests got 429"
    assert len(slugs) == count and set(slugs.values()) == {1}
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log
    _exactly_once(pg_schema_url, result["run_id"], count)
    times = sorted(r[0] for r in writes)
    rate = WEBFLOW_RATE / 60
    overall = (len(times) - 1) / (times[-1] - times[0])
    middle = times[len(times) // 4 : 3 * len(times) // 4]  # all 4 shards writing
    steady = (len(middle) - 1) / (middle[-1] - middle[0])
    assert steady <= rate * 1.02, steady
    print(
        f"\n4 shards against R = {rate:g}/s: {steady:.2f}/s ({steady / rate:.0%} of R) over the "
        f"middle half of {len(times)} writes, {overall / rate:.0%} first to last; 0 x 429"
    )


def test_a_worker_killed_part_way_loses_nothing(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """SIGKILL to a worker and the shard runs it was running, a third of the way: the parent
    starts those shards again on the other worker, they resume from the ledger, and every item
    is written exactly once (the destination and the ledger), the report counting all of them."""
    from tests.fakes.webflow_server import Faults, WebflowServer

    count = 240
    with WebflowServer(token=TOKEN, faults=Faults(latency=(0.02, 0.05))) as server:
        job = _job(tmp_path, count, _webflow(server, 2), pg_schema_url)
        parent = _full(stack, job)
        engine = sa.create_engine(pg_schema_url)
        deadline = time.monotonic() + 180
        while _succeeded(engine) < count // 3:
            assert parent.poll() is None, (job.parent / "full.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.2)
        victim = max(stack.workers, key=lambda w: len(_descendants(w.pid)))
        running = _descendants(victim.pid)
        _kill_tree(victim.pid, signal.SIGKILL)
        stack.workers.remove(victim)
        result = _finished(parent, job, 300)
        slugs = Counter(server.state.slugs())
        engine.dispose()
        stack.start_worker(3)  # for any test after this one
    assert running, "the killed worker was running no shard"
    assert "starting it again; it resumes from the ledger" in result["said"], result["said"][-3000:]
    assert result["status"] == "complete" and result["succeeded"] == count, result
    assert len(slugs) == count and set(slugs.values()) == {1}, slugs.most_common(3)
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log
    _exactly_once(pg_schema_url, result["run_id"], count)


def _succeeded(engine: sa.Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM batchgate_items i JOIN batchgate_runs r USING (run_id) "
                "WHERE r.mode = 'full' AND i.status = 'succeeded'")).scalar() or 0)  # fmt: skip
    except sa.exc.ProgrammingError:  # no tables yet
        return 0


def test_a_sqlite_ledger_is_refused_for_shards_unless_every_worker_is_on_this_host() -> None:
    """Other machines' workers cannot reach a SQLite file: refused, naming the fix, no item."""
    from batchgate.config import parse_job
    from batchgate.errors import BatchgateError
    from flows.shards import refuse_unreachable_ledger

    base = {"source": {"type": "file", "path": "posts.csv"}, "batch": {"shards": 4}}
    with pytest.raises(BatchgateError) as refused:
        refuse_unreachable_ledger(parse_job(base))
    message = str(refused.value)
    assert "SQLite" in message and "ledger.url to a PostgreSQL database" in message
    assert "batch.shards_on_this_host: true" in message and "item" not in message
    refuse_unreachable_ledger(
        parse_job({**base, "batch": {"shards": 4, "shards_on_this_host": True}})
    )
    refuse_unreachable_ledger(parse_job({**base, "ledger": {"url": "postgresql://u@h/db"}}))


def test_a_sharded_run_on_a_sqlite_ledger_is_refused_before_any_shard_or_write(
    stack: Stack, tmp_path: Path
) -> None:
    """End to end: `batchgate full` with shards: 4 and a SQLite ledger stops at once with the
    fix in one line, no traceback, starting no shard and writing nothing."""
    cms, ledger = tmp_path / "cms.db", tmp_path / "ledger.db"
    job = _job(tmp_path, 20, {"type": "sql", "url": f"sqlite:///{cms}"}, f"sqlite:///{ledger}")
    code = _full(stack, job).wait(120)
    said = (job.parent / "full.log").read_text()
    assert code == 1 and "Traceback" not in said, said[-3000:]
    assert "batch.shards is 4, but the ledger is SQLite" in said, said[-3000:]
    assert "set batch.shards_on_this_host: true" in said
    shard_runs = httpx.post(f"{stack.api}/flow_runs/filter", json={
        "flow_runs": {"name": {"like_": "-shard-"}, "state": {"type": {"any_": ["SCHEDULED",
        "PENDING", "RUNNING"]}}}}).json()  # fmt: skip
    assert shard_runs == []
    if cms.exists():
        with sqlite3.connect(cms) as conn:
            assert not conn.execute("SELECT name FROM sqlite_master WHERE name='posts'").fetchall()


def test_one_breaker_across_the_shards_aborts_them_all(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """Most items are refused (400): the parent judges every shard's items together, aborts the
    run, and every shard stops at its next chunk; the rest stay pending, counted in the report."""
    from tests.fakes.webflow_server import Faults, WebflowServer

    count = 400
    refused = {f"post-{n}" for n in range(1, count + 1) if n % 10}  # 90% of the items
    with WebflowServer(token=TOKEN, faults=Faults(bad_request_slugs=refused)) as server:
        job = _job(tmp_path, count, _webflow(server, 1), pg_schema_url, items_per_chunk=10,
                   retries=0)  # fmt: skip
        process = _full(stack, job)
        code = process.wait(300)
    said = (job.parent / "full.log").read_text()
    result = json.loads((job.parent / "full.json").read_text())
    assert code == 4, said[-3000:]
    assert result["status"] == "aborted" and "across the shards failed" in result["reason"], result
    assert (
        result["pending"] > 0
        and result["failed"] + result["succeeded"] + result["pending"] == count
    )
    engine = sa.create_engine(pg_schema_url)
    with engine.connect() as conn:
        states = conn.execute(sa.text("SELECT shard, state FROM batchgate_shard_control "
                                      "WHERE run_id = :r ORDER BY shard"),
                              {"r": result["run_id"]}).all()  # fmt: skip
        # one dead-letter queue: every failed item, whichever shard wrote it, in the run's queue
        dead = conn.execute(sa.text(
            "SELECT i.seq FROM batchgate_dlq d JOIN batchgate_items i "
            "ON i.run_id = d.run_id AND i.item_id = d.item_id WHERE d.run_id = :r"),
            {"r": result["run_id"]}).scalars().all()  # fmt: skip
        failed = conn.execute(sa.text(
            "SELECT seq FROM batchgate_items WHERE run_id = :r AND status = 'failed'"),
            {"r": result["run_id"]}).scalars().all()  # fmt: skip
    engine.dispose()
    assert states[0] == (-1, "aborted") and len(states) == SHARDS + 1, states
    assert len(dead) == result["failed"] > 0 and sorted(dead) == sorted(failed), (dead, failed)


def test_one_breaker_pauses_every_shard_and_one_threshold_judges_the_whole_run(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """Refusals in one shard only (every other one of its first 30 items, 15 in all, so that
    while it writes alone no window reaches the abort threshold): the parent's breaker, judging
    every shard's items together, pauses every shard (each stops after its current chunk and
    all resume together: a stretch with no write from any shard); the success threshold is
    applied once, to the run's counts: 225/240 = 93.75% meets 90%, so the run ends
    partial-success (exit 3), although that shard alone (45/60 = 75%) would not."""
    from tests.fakes.webflow_server import Faults, WebflowServer

    count, pause = 240, 8.0
    refused = {f"post-{n}" for n in range(1, count + 1) if n % (2 * SHARDS) == 1 and n <= 120}
    with WebflowServer(token=TOKEN, faults=Faults(bad_request_slugs=refused)) as server:
        job = _job(tmp_path, count, _webflow(server, 1), pg_schema_url, items_per_chunk=10,
                   writes_in_flight=1, retries=0, pause_at=0.1, pause_seconds=pause,
                   abort_at=0.9, success_threshold=90)  # fmt: skip
        code = _full(stack, job).wait(300)
        writes = sorted(r[0] for r in _writes(server))
    said = (job.parent / "full.log").read_text()
    result = json.loads((job.parent / "full.json").read_text())
    assert code == 3, said[-3000:]
    assert (result["status"], result["succeeded"], result["failed"]) == (
        "partial-success", count - len(refused), len(refused)), result  # fmt: skip
    assert f"pausing every shard for {pause:g} seconds" in said, said[-3000:]
    # a pause holds a shard's next chunk, as in a one-process run (the chunks in flight finish):
    # with one chunk in flight, each shard stops after it. The four shards write 10 requests a
    # second between them, so a chunk of 10 takes a shard about 4 s: the last one stops at most
    # 4 s into the pause, and none writes again until the pause ends
    gaps = [later - earlier for earlier, later in zip(writes, writes[1:], strict=False)]
    assert max(gaps) >= pause - 4.0, sorted(gaps)[-5:]


def test_a_shard_that_crashes_every_time_is_given_up_after_3_attempts_its_items_pending(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """Shard runs that can never start (their deployment's entrypoint is missing on the worker,
    as after a bad deploy) end Crashed or Failed: the parent starts each again, at most 3
    attempts, then gives up, naming the shards; every item stays pending, none is lost."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings={"base_url": stack.api}) as client:
        shard = client.read_deployment_by_name("full-shard/full-shard")
        client.create_deployment(flow_id=shard.flow_id, name="missing-code",
                                 entrypoint="flows/no_such_module.py:full_shard",
                                 work_pool_name=stack.pool, path=shard.path,
                                 pull_steps=shard.pull_steps, job_variables=shard.job_variables)  # fmt: skip
    count = 40
    job = _job(tmp_path, count, {"type": "sql", "url": pg_schema_url}, pg_schema_url)
    code = _full(stack, job, BATCHGATE_SHARD_DEPLOYMENT="full-shard/missing-code").wait(400)
    said = (job.parent / "full.log").read_text()
    result = json.loads((job.parent / "full.json").read_text())
    assert code == 4, said[-3000:]
    assert "could not finish after 3 attempts; their items stay pending" in result["reason"]
    assert "shards [1, 2, 3, 4]" in result["reason"], result["reason"]
    assert (result["succeeded"], result["failed"], result["pending"]) == (0, 0, count), result
    runs = httpx.post(f"{stack.api}/flow_runs/filter", json={
        "flow_runs": {"name": {"like_": f"{result['run_id']}-shard-"}}}).json()  # fmt: skip
    assert len(runs) == 3 * SHARDS, sorted(r["name"] for r in runs)


def _running_shard_runs(stack: Stack, since: str) -> list[dict[str, Any]]:
    query = {"flow_runs": {"name": {"like_": "-shard-"}, "state": {"type": {"any_": ["RUNNING"]}},
                           "start_time": {"after_": since}}}  # fmt: skip
    return list(httpx.post(f"{stack.api}/flow_runs/filter", json=query).json())


def test_a_shard_cancelled_in_prefect_is_never_started_again_and_the_run_stops(
    stack: Stack, pg_schema_url: str, tmp_path: Path
) -> None:
    """A person cancels one shard's flow run (the UI's Cancel): the parent does not start it
    again behind their back (a crashed or silent shard it would); it stops the whole run, names
    the shard, and leaves the unwritten items pending, each written item written once."""
    from tests.fakes.webflow_server import WebflowServer

    count = 240  # 24 s at the fake's 10 requests a second
    with WebflowServer(token=TOKEN) as server:
        job = _job(tmp_path, count, _webflow(server, 1), pg_schema_url, items_per_chunk=10)
        since = datetime.now(UTC).isoformat()  # this run's shards only
        parent = _full(stack, job)
        engine = sa.create_engine(pg_schema_url)
        deadline = time.monotonic() + 180
        while len(running := _running_shard_runs(stack, since)) < SHARDS or _succeeded(engine) < 40:
            assert parent.poll() is None, (job.parent / "full.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"shards never all ran: {running}"
            time.sleep(0.3)
        engine.dispose()
        (victim,) = [r for r in running if f"-shard-2-of-{SHARDS}" in r["name"]]
        cancel = {"state": {"type": "CANCELLING", "name": "Cancelling"}}
        assert httpx.post(f"{stack.api}/flow_runs/{victim['id']}/set_state", json=cancel).is_success
        code = parent.wait(300)
        # the parent ended only once no shard could write: the cancelled one Cancelled, or silent
        # past its lease (then it sends nothing more); no write reaches the fake afterwards
        writes_at_end = len(_writes(server))
        time.sleep(3)
        late = len(_writes(server)) - writes_at_end
        slugs = Counter(server.state.slugs())
    assert late == 0, f"{late} writes after the parent ended"
    said = (job.parent / "full.log").read_text()
    result = json.loads((job.parent / "full.json").read_text())
    assert code == 4, said[-3000:]
    assert result["status"] == "aborted", result
    assert f"shard 2/{SHARDS} was cancelled in Prefect (flow run {victim['id']}" in result["reason"]
    cancelled = httpx.get(f"{stack.api}/flow_runs/{victim['id']}").json()["state"]["type"]
    assert cancelled in ("CANCELLING", "CANCELLED"), cancelled
    assert "starting it again" not in said, said[-3000:]
    attempts = httpx.post(f"{stack.api}/flow_runs/filter", json={
        "flow_runs": {"name": {"like_": f"{result['run_id']}-shard-"}}}).json()  # fmt: skip
    assert len(attempts) == SHARDS and not [r for r in attempts if "attempt" in r["name"]]
    assert "(attempt 1, cancelled)" in said
    assert result["pending"] > 0, result
    assert result["succeeded"] + result["failed"] + result["pending"] == count, result
    assert set(slugs.values()) == {1} and len(slugs) >= result["succeeded"], slugs.most_common(3)
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log


# --- one clock: the ledger database's ----------------------------------------------------------

SKEW = 3600.0  # an hour: a host whose clock is that far off


@contextlib.contextmanager
def _clock_off(monkeypatch: pytest.MonkeyPatch, by: float) -> Iterator[None]:
    """This process's `time.time()` is `by` seconds off, as on a host with a wrong clock."""
    real = time.time
    with monkeypatch.context() as patched:
        patched.setattr(time, "time", lambda: real() + by)
        yield


def test_hosts_whose_clocks_disagree_by_an_hour_share_one_bucket(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of slots taken in turn by a host on time and hosts an hour ahead and behind: on
    the real clock the slots are 1/rate apart, back to back, none an hour away; a pacer on the
    host an hour behind, taking after the others, sleeps only until its slot, not an hour."""
    from batchgate.bucket import SharedPacer, ensure_tables, take_slots

    ledger = Ledger(sa.create_engine(pg_schema_url))
    ensure_tables(ledger)
    interval, block, real = 1.0 / RATE, 2, time.time
    slots = []
    for _ in range(4):
        for off in (0.0, SKEW, -SKEW):
            with _clock_off(monkeypatch, off):
                first = take_slots(ledger, "webflow:skew", interval, block, 0.0)
            slots += [first - off + n * interval for n in range(block)]  # on the real clock
    slots.sort()
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= interval * 0.8, gaps  # the offset is measured to a few ms
    assert max(gaps) <= interval * 1.2 + 0.05, gaps  # back to back: no host's slots an hour off
    assert abs(slots[0] - real()) < 60, slots[0] - real()
    slept: list[float] = []

    def nap(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with _clock_off(monkeypatch, -SKEW):
        pacer = SharedPacer(ledger, "webflow:skew", RATE, block=2, sleep=nap)
        for _ in range(4):
            pacer.acquire()
    # its slots come after the others' (about 1.2 s of slots), never an hour away
    assert sum(slept) < 10.0, slept
    ledger.engine.dispose()


def test_a_shard_on_a_host_an_hour_off_is_not_judged_silent_and_pauses_for_the_pause(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats, the parent's staleness test and the breaker's pause use the ledger
    database's clock: a shard an hour behind or ahead heartbeats and is not silent to a parent
    on time; one that stopped beating is; a pause set by a parent an hour ahead lasts its
    length for a shard an hour behind."""
    from batchgate.bucket import (
        STALE_S,
        ensure_tables,
        heartbeat,
        run_state,
        set_run_state,
        shard_rows,
        silent_for,
        start_attempt,
    )

    ledger = Ledger(sa.create_engine(pg_schema_url))
    ensure_tables(ledger)
    run = "full-skew"
    for shard, off in ((0, -SKEW), (1, SKEW), (2, 0.0)):
        start_attempt(ledger, run, shard, 1, f"flow-{shard}")  # the parent, on time
        with _clock_off(monkeypatch, off):  # the shard's host
            assert heartbeat(ledger, run, shard, 1)
    for off in (0.0, SKEW, -SKEW):  # the parent, wherever its clock is
        with _clock_off(monkeypatch, off):
            rows = shard_rows(ledger, run)
        assert all(silent_for(rows[s]) < STALE_S for s in range(3)), rows
    engine = ledger.engine
    with engine.begin() as conn:  # shard 3 stopped beating STALE_S + 1 s ago (database time)
        conn.execute(sa.text("UPDATE batchgate_shard_control SET seen = seen - :s "
                             "WHERE run_id = :r AND shard = 2"), {"s": STALE_S + 1, "r": run})  # fmt: skip
    rows = shard_rows(ledger, run)
    assert silent_for(rows[2]) > STALE_S and silent_for(rows[0]) < STALE_S
    with _clock_off(monkeypatch, SKEW):
        set_run_state(ledger, run, "paused", pause_s=30.0)
    with _clock_off(monkeypatch, -SKEW):
        state = run_state(ledger, run)
    assert state["state"] == "paused" and 25.0 < state["until"] - state["now"] <= 30.0, state
    engine.dispose()


# --- a replaced shard stops before its next write --------------------------------------------


def test_a_shard_whose_lease_lapsed_or_was_replaced_sends_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease, on a clock the test moves: a lapsed lease that one beat renews lets the write
    through; a lapse no beat renews (the ledger unreachable), or a beat that finds a newer
    attempt, fences the attempt for good: no further write reaches the destination, and the
    error is the run's (a LedgerError: its items stay pending), never the items'."""
    import flows.full_shard as fs
    from batchgate.bucket import ensure_tables, start_attempt
    from batchgate.errors import LedgerError

    monkeypatch.setattr(fs, "HEARTBEAT_S", 3600.0)  # no background beat: the test decides
    ledger = Ledger(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    ensure_tables(ledger)
    start_attempt(ledger, "full-lease", 0, 1, "flow-1")
    sent: list[int] = []

    class Destination:
        key = "sql:test#posts"

        def upsert_many(self, entries: list[Any], draft: bool) -> list[Any]:
            sent.append(len(entries))
            return list(entries)

    now = [100.0]
    for replaced in (False, True):
        now[0] = 100.0
        sent.clear()
        hold = fs.ParentHold(ledger, Destination.key, "full-lease", 0, 1, lease_s=10.0,
                             clock=lambda: now[0])  # fmt: skip
        fenced = fs.FencedDestination(Destination(), hold)
        with hold:
            fenced.upsert_many([1, 2], False)
            now[0] += 11.0  # lapsed, but a beat now renews it
            fenced.upsert_many([3], False)
            assert hold.fenced is None and sent == [2, 1]
            now[0] += 11.0
            if replaced:
                start_attempt(ledger, "full-lease", 0, 2, "flow-2")
            else:
                monkeypatch.setattr(fs, "heartbeat", _unreachable)
            with pytest.raises(fs.Replaced) as stopped:
                fenced.upsert_many([4], False)
            monkeypatch.undo()
            monkeypatch.setattr(fs, "HEARTBEAT_S", 3600.0)
            now[0] += 1.0
            with pytest.raises(fs.Replaced):  # for good
                fenced.upsert_many([5], False)
        assert sent == [2, 1], sent
        assert isinstance(stopped.value, LedgerError)
        assert ("replaced it" if replaced else "lease lapsed") in str(stopped.value)
        assert "sends no more writes" in fenced.publish(["a"])["a"] and sent == [2, 1]
    ledger.engine.dispose()


def test_a_write_waiting_for_its_rate_slot_is_stopped_when_the_shard_is_replaced_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paced write may wait long for its slot of the shared rate: the lease is asked again
    once the slot has come, right before the request. Replaced during the wait, the request is
    never sent; a read (not a write) still gets its slot."""
    import flows.full_shard as fs
    from batchgate.bucket import ensure_tables, start_attempt

    monkeypatch.setattr(fs, "HEARTBEAT_S", 3600.0)
    ledger = Ledger(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))
    ensure_tables(ledger)
    start_attempt(ledger, "full-paced", 0, 1, "flow-1")
    hold = fs.ParentHold(ledger, "webflow:paced", "full-paced", 0, 1)
    sent: list[Any] = []

    def nap(seconds: float) -> None:  # while the write waits for its slot, it is replaced
        if len(sent) == 1 and not hold.superseded:
            start_attempt(ledger, "full-paced", 0, 2, "flow-2")
            hold._renew()  # the next heartbeat finds attempt 2
        time.sleep(seconds)

    class Paced:
        key, rate_per_s = "webflow:paced", 5.0
        pacer = SharedPacer(ledger, "webflow:paced", 5.0, block=1, sleep=nap)

        def upsert_many(self, entries: list[Any], draft: bool) -> list[Any]:
            self.pacer.acquire()  # as the Webflow destination does before each request
            sent.append(entries)
            return list(entries)

    destination = Paced()
    fenced = fs.FencedDestination(destination, hold)
    with hold, fs._fencing(destination, hold):
        fenced.upsert_many([1], False)
        with pytest.raises(fs.Replaced):
            fenced.upsert_many([2], False)
        destination.pacer.acquire()  # a read is not stopped: its error would be the items'
    assert sent == [[1]] and destination.pacer.fence is None
    ledger.engine.dispose()


def _unreachable(*args: Any, **kwargs: Any) -> bool:
    raise ConnectionError("the ledger is unreachable")


def test_a_replaced_shard_sends_no_further_group_of_its_chunk(
    prefect_api: str, pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard attempt is replaced (the parent registers attempt 2) while its chunk's groups are
    under way: once a heartbeat has told it, none of the groups it has not sent reaches the
    destination (today's runner only stopped after the chunk). They stay pending, never in the
    dead-letter queue; attempt 2 writes each of them exactly once."""
    import threading

    from prefect import flow

    import flows.full_shard as fs
    from batchgate.bucket import ensure_tables, set_run_state, start_attempt
    from batchgate.config import load_job
    from batchgate.hold import DestinationHold
    from blocks.sql_destination import SqlDestination
    from flows.full import _publishes, own_plan_id, prepare_run
    from flows.shards import plan_for_shards

    count, group = 60, 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fs, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(fs, "PAGE", 20)  # the slice read 20 pending items at a time
    path = _job(tmp_path, count, {"type": "sql", "url": pg_schema_url}, pg_schema_url,
                items_per_request=group, items_per_chunk=30)  # fmt: skip
    job = load_job(path)
    run_id = f"full-replaced-{uuid.uuid4().hex[:6]}"

    @flow(name="test-shards-parent")
    def parent() -> tuple[str, int]:
        """The parent's plan, recorded for the shard (the test holds the destination)."""
        prepared = prepare_run(job, run_id, "full", None)
        draft = not _publishes(prepared.destination)
        plan = plan_for_shards(prepared, run_id, draft, None, "job.yaml")
        ensure_tables(prepared.ledger)
        set_run_state(prepared.ledger, run_id, "running")
        start_attempt(prepared.ledger, run_id, 0, 1, "flow-1")
        return prepared.destination.key, plan.work_count

    key, planned = parent()
    assert planned == count
    ledger = Ledger(sa.create_engine(pg_schema_url))
    assert ledger.status_counts(own_plan_id(run_id)) == {}  # the parent's own plan: dropped

    lock, phase = threading.Lock(), {"attempt": 1, "intents": 0}
    holds: list[Any] = []  # attempt 1's ParentHold
    writes: list[tuple[int, bool, list[str]]] = []  # (attempt, after it was told, source ids)
    real_init, real_intents = fs.ParentHold.__init__, Ledger.mark_intents
    real_upsert = SqlDestination.upsert_many

    def told() -> bool:  # a heartbeat of attempt 1 found attempt 2
        return bool(holds) and bool(holds[0].superseded)

    def until(condition: Any) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, "the test's order of events never came"
            time.sleep(0.01)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        holds.append(self)

    def intents(self: Ledger, key_: str, run: str, entries: Any) -> Any:
        if run == run_id and phase["attempt"] == 1:
            with lock:
                phase["intents"] += 1
                nth = phase["intents"]
            if nth == 3:  # the chunk's third group: once the first two were sent, replaced
                until(lambda: len(writes) == 2)
                start_attempt(ledger, run_id, 0, 2, "flow-2")
            if nth >= 3:  # this group and the chunk's others go on once attempt 1 is told
                until(told)
        return real_intents(self, key_, run, entries)

    def upsert_many(self: Any, entries: Any, draft: bool) -> Any:
        ids = [record["source_id"] for record, _, _ in entries]
        writes.append((phase["attempt"], told(), ids))
        return real_upsert(self, entries, draft)

    looked_up: list[int] = []  # the destination map, read a page's items at a time
    real_targets = Ledger.targets_for_items

    def targets_for_items(self: Ledger, key_: str, ids: Any) -> Any:
        looked_up.append(len(ids))
        return real_targets(self, key_, ids)

    def whole_map(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a shard read the whole destination map")

    monkeypatch.setattr(Ledger, "targets_for_items", targets_for_items)
    monkeypatch.setattr(Ledger, "targets_for", whole_map)
    monkeypatch.setattr(fs.ParentHold, "__init__", init)
    monkeypatch.setattr(Ledger, "mark_intents", intents)
    monkeypatch.setattr(SqlDestination, "upsert_many", upsert_many)
    raw = job.model_dump(mode="json", exclude_none=True)
    with DestinationHold(ledger, key, run_id):
        first = fs.full_shard(job=raw, run_id=run_id, shard=0, shards=1, attempt=1)
        counts = ledger.status_counts(run_id)
        dead = ledger.dead_letters(run_id)
        phase["attempt"] = 2
        second = fs.full_shard(job=raw, run_id=run_id, shard=0, shards=1, attempt=2)
    late = [ids for attempt, after, ids in writes if attempt == 1 and after]
    assert not late, f"attempt 1 sent {len(late)} groups after it was told it was replaced"
    sent_first = sum(len(ids) for attempt, _, ids in writes if attempt == 1)
    assert first["state"] == "superseded", first
    assert counts == {"succeeded": sent_first, "pending": count - sent_first}, counts
    assert sent_first == 2 * group and not dead, (sent_first, dead)  # the rest: pending
    assert second["state"] == "done", second
    assert looked_up and max(looked_up) <= 20, looked_up
    per_item = Counter(i for _, _, ids in writes for i in ids)
    assert len(per_item) == count and set(per_item.values()) == {1}, per_item.most_common(3)
    _exactly_once(pg_schema_url, run_id, count)
    engine = sa.create_engine(pg_schema_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT source_id) FROM posts")).one()
    engine.dispose()
    assert tuple(rows) == (count, count)
    ledger.engine.dispose()


def test_a_shard_that_begins_after_the_run_stopped_sends_nothing(
    prefect_api: str, pg_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard run that gets a worker only after the parent aborted the run (its breaker, a
    cancelled shard) ends at once: no request to the destination, every item of its slice
    pending, its row aborted, so the parent's count is right."""
    from prefect import flow

    import flows.full_shard as fs
    from batchgate.bucket import ensure_tables, set_run_state, shard_rows, start_attempt
    from batchgate.config import load_job
    from batchgate.hold import DestinationHold
    from blocks.sql_destination import SqlDestination
    from flows.full import _publishes, prepare_run
    from flows.shards import plan_for_shards

    count = 20
    monkeypatch.chdir(tmp_path)
    job = load_job(_job(tmp_path, count, {"type": "sql", "url": pg_schema_url}, pg_schema_url))
    run_id = f"full-stopped-{uuid.uuid4().hex[:6]}"

    @flow(name="test-shards-parent")
    def parent() -> str:
        prepared = prepare_run(job, run_id, "full", None)
        plan_for_shards(prepared, run_id, not _publishes(prepared.destination), None, "job.yaml")
        ensure_tables(prepared.ledger)
        set_run_state(prepared.ledger, run_id, "aborted", message="circuit breaker: 9/10 failed")
        start_attempt(prepared.ledger, run_id, 0, 1, "flow-1")
        return prepared.destination.key

    key = parent()
    sent: list[int] = []
    for name in ("check", "prepare", "upsert_many"):
        monkeypatch.setattr(SqlDestination, name, lambda *a, **k: sent.append(1))
    ledger = Ledger(sa.create_engine(pg_schema_url))
    raw = job.model_dump(mode="json", exclude_none=True)
    with DestinationHold(ledger, key, run_id):
        result = fs.full_shard(job=raw, run_id=run_id, shard=0, shards=1, attempt=1)
    assert (result["state"], result["items"], result["reason"]) == (
        "aborted", 0, "circuit breaker: 9/10 failed"), result  # fmt: skip
    assert not sent, "the shard reached the destination"
    assert ledger.status_counts(run_id) == {"pending": count}
    assert shard_rows(ledger, run_id)[0]["state"] == "aborted"
    ledger.engine.dispose()
