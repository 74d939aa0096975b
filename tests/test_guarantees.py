"""What batchgate guarantees, tried the way a careful reviewer would: separate processes on one
destination, SIGKILL between steps, a source edited during a review, rollbacks over newer work,
failed publishes, and many processes opening one new ledger."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchgate.config import LedgerConfig, load_job
from batchgate.ledger import Ledger
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer
from tests.test_full_flow import webflow_job

BATCHGATE = str(Path(sys.executable).with_name("batchgate"))


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def env(prefect_api: str | None, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if prefect_api:
        base["PREFECT_API_URL"] = prefect_api
    return {**base, "WEBFLOW_TOKEN": "test-token", **extra}


def start(prefect_api: str | None, cwd: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    """The command in its own process; its output goes to a file, not a pipe, so a temporary
    Prefect server it leaves behind (when it is killed) cannot hold the output open."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", dir=cwd, delete=False)  # noqa: SIM115
    process = subprocess.Popen([BATCHGATE, *args], cwd=cwd, env=env(prefect_api, **extra),
                               stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    process.wait(timeout=timeout)
    log = process.log  # type: ignore[attr-defined]
    log.close()
    return process.returncode, Path(log.name).read_text()


def run(prefect_api: str | None, cwd: Path, *args: str, **extra: str) -> tuple[int, str]:
    return finish(start(prefect_api, cwd, *args, **extra))


def once_each(server: WebflowServer, expected: int) -> None:
    """Every item held once, and created by one create: the fake's request log counts every
    create of a slug it judged, so a second create fails here whether the fake refuses it
    (the default) or suffixes it (BATCHGATE_FAKE_SLUG_CLASH=suffix)."""
    slugs = Counter(server.state.slugs())
    assert len(slugs) == expected and max(slugs.values()) == 1, slugs.most_common(3)
    creates = server.state.creates
    assert max(creates.values(), default=0) == 1, creates.most_common(3)


# --- one writer per destination --------------------------------------------------------------------


@pytest.mark.prefect
def test_two_full_processes_started_together_write_every_item_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    write_csv([blog_row(n) for n in range(1, 41)])
    # slow answers, 20 items in a row per task: the first run still writes when the second starts
    with WebflowServer(faults=Faults(latency=(0.4, 0.6))) as server:
        job = webflow_job(tmp_path, server, batch=", items_per_request: 20", chunk=100)
        first, second = (start(prefect_api, tmp_path, "full", "--job", str(job)) for _ in "ab")
        (code_a, out_a), (code_b, out_b) = finish(first), finish(second)
        once_each(server, 40)
        posts = [r for r in server.state.requests if r[1] == "POST"]
    assert (code_a, code_b) == (0, 0), out_a[-1500:] + out_b[-1500:]
    assert len(posts) == 40  # not one create more than items
    # one of them waited for the other, and said which run holds the destination
    waited = [out for out in (out_a, out_b) if "waiting for the destination" in out]
    assert len(waited) == 1 and "holds it" in waited[0]
    assert "40 unchanged since an earlier run" in (out_a + out_b)


@pytest.mark.prefect
def test_full_sync_and_two_dlq_retries_at_once_write_every_item_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    rows = [blog_row(n) for n in range(1, 21)]
    write_csv(rows)
    failing = {"post-number-4", "post-number-9"}
    with WebflowServer(faults=Faults(error_slugs=failing, error_times=1)) as server:
        job = webflow_job(tmp_path, server, batch=", retries: 0, pause_at: 1.0, abort_at: 1.0")
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "first.json")
        assert code == 3, out[-2000:]
        first = json.loads((tmp_path / "first.json").read_text())["run_id"]
        write_csv(rows + [blog_row(n) for n in range(21, 31)])  # new items for full and sync
        server.state.faults = Faults(latency=(0.02, 0.06))
        processes = [
            start(prefect_api, tmp_path, "full", "--job", str(job)),
            start(prefect_api, tmp_path, "sync", "--job", str(job)),
            start(prefect_api, tmp_path, "dlq", "retry", "--run", first, "--job", str(job)),
            start(prefect_api, tmp_path, "dlq", "retry", "--run", first, "--job", str(job)),
        ]
        results = [finish(p) for p in processes]
        once_each(server, 30)
    assert all(code in (0, 3) for code, _ in results), [out[-800:] for _, out in results]
    ledger = open_ledger(load_job(job).ledger)
    entries = ledger.dlq_entries(first, states=None)
    assert {e["item_id"] for e in entries} == {"p-004", "p-009"}
    assert all(e["state"] == "retried" for e in entries)
    retries = [r for r in ledger.runs(50) if r["mode"] == "retry"]
    # the two retries never both took an entry: one run retried them (or neither, if full or sync
    # wrote them first), and the other said they were claimed
    assert len(retries) <= 1
    assert sum("claimed by another retry" in out or "Nothing to retry" in out
               for _, out in results[2:]) >= 1  # fmt: skip


@pytest.mark.prefect
def test_sigkill_with_no_prefect_server_then_rerun_resumes_within_a_lease(
    tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """No PREFECT_API_URL: each command starts its own temporary server, which dies with a
    SIGKILLed command and takes its concurrency leases with it."""
    write_csv([blog_row(n) for n in range(1, 31)])
    home = {"PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "BATCHGATE_LOCAL_SERVER": "0"}  # no background server: Prefect's temporary one  # fmt: skip
    faults = Faults(latency=(0.05, 0.15), slow_rate=0.3, slow_seconds=0.6)
    with WebflowServer(faults=faults) as server:
        job = webflow_job(tmp_path, server)
        first = start(None, tmp_path, "full", "--job", str(job), **home)
        deadline = time.monotonic() + 240
        while len(server.items) < 8 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert 0 < len(server.items) < 30  # killed half-way
        ledger = open_ledger(load_job(job).ledger)
        (killed,) = ledger.runs()
        assert killed["status"] == "running"  # it never finished

        code, out = run(None, tmp_path, "full", "--job", str(job), "--json", "out.json", **home)
        once_each(server, 30)
    assert code == 0, out[-3000:]
    # the dead holder was freed at once (its process is gone), not after a wait
    assert "holds it" not in out
    assert json.loads((tmp_path / "out.json").read_text())["succeeded"] == 30
    assert ledger.run(killed["run_id"])["status"] == "interrupted"


def test_a_hold_whose_holder_is_gone_lapses_after_one_lease_on_any_host(tmp_path: Path) -> None:
    from batchgate.hold import DestinationHold, holder_is_dead

    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "l.db")))
    now = time.time()
    # a holder on another machine: only its lease can tell
    assert ledger.acquire_hold("dest", "run-a", "elsewhere:123", 0.5, holder_is_dead) is None
    other = ledger.acquire_hold("dest", "run-b", "here:1", 0.5, holder_is_dead)
    assert other is not None and other["run_id"] == "run-a" and other["expires_at"] >= now
    said: list[str] = []
    with DestinationHold(ledger, "dest", "run-b", on_wait=said.append, lease_s=5):
        pass  # it waited for the lease to lapse, and no longer
    assert len(said) == 1 and "run run-a holds it" in said[0]
    # a holder process on this host that is gone: taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    holder = f"{__import__('socket').gethostname()}:{dead}"
    assert ledger.acquire_hold("dest", "run-c", holder, 3600, holder_is_dead) is None
    assert ledger.acquire_hold("dest", "run-d", "x:1", 60, holder_is_dead) is None


def test_a_host_whose_clock_is_an_hour_ahead_never_takes_a_live_hold(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are on the ledger database's clock: a process on a host an hour ahead (or behind)
    sees a live hold as live, and renews its own for the lease, not for an hour more or less."""
    import batchgate.ledger
    from batchgate.config import LedgerConfig as Config
    from batchgate.hold import holder_is_dead

    ledger = open_ledger(Config(url=pg_schema_url))
    assert ledger.acquire_hold("dest", "run-a", "elsewhere:1", 60, holder_is_dead) is None
    real = time.time
    for skew in (3600.0, -3600.0):
        monkeypatch.setattr(batchgate.ledger.time, "time", lambda skew=skew: real() + skew)
        other = ledger.acquire_hold("dest", "run-b", "elsewhere:2", 60, holder_is_dead)
        assert other is not None and other["run_id"] == "run-a"
        assert 0 < other["expires_at"] - other["now"] <= 60
        assert ledger.renew_hold("dest", "run-a", 60)  # still run-a's, for 60 s of database time
        monkeypatch.setattr(batchgate.ledger.time, "time", real)
        with ledger.engine.connect() as conn:
            expires = conn.execute(sa.select(batchgate.ledger.holds.c.expires_at)).scalar_one()
        assert 50 < expires - real() <= 61  # renewed on the database's clock, never an hour off


# --- the approved plan is what gets written -----------------------------------------------------


def sql_job(tmp_path: Path, publish: bool = True) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        f"destination: {{type: sql, url: 'sqlite:///cms.db', publish: {str(publish).lower()}}}\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
        "batch: {items_per_chunk: 5, backoff_base_s: 0.05}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


def cms(tmp_path: Path) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cms.db'}")
    with engine.connect() as conn:
        rows = {r.source_id: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM posts"))}
    engine.dispose()
    return rows


@pytest.mark.prefect
def test_an_edit_during_the_review_is_never_written_unreviewed(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.pipeline import pipeline, send_review, wait_for_pause

    words = lambda n: " ".join(["word"] * (60 * n))  # noqa: E731 - short, medium and long posts
    rows = [blog_row(n, body_markdown=f"# T\n\n{words(n)}") for n in range(1, 13)]
    write_csv(rows)
    job_path = sql_job(tmp_path)
    job = load_job(job_path)
    ledger = open_ledger(job.ledger)
    seen: dict[str, Any] = {}

    def reviewer() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            waiting = [r for r in ledger.runs() if r["status"] == "awaiting-approval"]
            if waiting:
                break
            time.sleep(0.2)
        flow_run_id = waiting[0]["flow_run_id"]
        wait_for_pause(flow_run_id)
        (drafts,) = ledger.runs_of(waiting[0]["run_id"], mode="sample")
        sampled = [r["item_id"] for r in ledger.item_rows(drafts["run_id"])]
        seen["sampled"] = sampled
        # the source changes while the reviewer looks: a sampled item and one that is not
        other = next(r["id"] for r in rows if r["id"] not in sampled)
        seen["other"] = other
        edited = [dict(r, title=f"EDITED {r['title']}") if r["id"] in (sampled[0], other) else r
                  for r in rows]  # fmt: skip
        write_csv(edited)
        # and someone runs full directly: it must not publish or overwrite the drafts under review
        seen["direct"] = run(prefect_api, tmp_path, "full", "--job", str(job_path), "--json",
                             "direct.json")  # fmt: skip
        seen["during"] = cms(tmp_path)
        send_review(flow_run_id, True, "looks right")

    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    state = pipeline(job, approval_poll_s=1, job_ref=str(job_path), return_state=True)
    thread.join(60)
    assert not thread.is_alive()
    assert state.is_completed(), state.message
    sampled, other = seen["sampled"], seen["other"]

    code, out = seen["direct"]
    assert code == 0, out[-2000:]
    direct = json.loads((tmp_path / "direct.json").read_text())
    assert {h["item_id"] for h in direct["held"]} == set(sampled)  # held, not touched
    assert all(seen["during"][i]["draft"] and not seen["during"][i]["title"].startswith("EDITED")
               for i in sampled)  # fmt: skip
    assert seen["during"][other]["title"].startswith("EDITED")  # the direct run wrote the edit

    after = cms(tmp_path)
    assert len(after) == 12
    # the sample goes live as it was reviewed: the edit made during the review is not written
    assert after[sampled[0]]["title"] == f"Post number {int(sampled[0][2:])}"
    assert not any(after[i]["draft"] for i in sampled)
    # the item the direct run changed after the freeze is held as changed since review, listed
    # with the command that takes it through a new review
    (pipe,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    (full_run,) = ledger.runs_of(pipe["run_id"], mode="full")
    held = ledger.held_items(full_run["run_id"])
    assert [h["item_id"] for h in held] == [other]
    assert "changed since review" in held[0]["reason"]
    assert "batchgate pipeline --job" in held[0]["fix"]
    assert after[other]["title"].startswith("EDITED")  # newer work left alone


# --- rollback never destroys newer work ----------------------------------------------------------


@pytest.mark.prefect
def test_rollback_of_an_older_run_leaves_newer_work_and_exits_3(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    rows = [blog_row(n) for n in range(1, 6)]
    write_csv(rows)
    job = sql_job(tmp_path, publish=False)
    code, _ = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "a.json")
    run_a = json.loads((tmp_path / "a.json").read_text())["run_id"]
    write_csv([dict(r, title=f"B {r['title']}") if r["id"] in ("p-001", "p-002") else r
               for r in rows])  # fmt: skip
    code, _ = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "b.json")
    run_b = json.loads((tmp_path / "b.json").read_text())["run_id"]
    assert code == 0

    code, out = run(prefect_api, tmp_path, "rollback", run_a, "--job", str(job))
    assert code == 3, out
    rows_now = cms(tmp_path)
    assert rows_now["p-001"]["title"] == "B Post number 1"  # B's content is intact
    assert set(rows_now) == {"p-001", "p-002"}  # A's other three items were undone
    assert f"p-001 (p-001): conflict - changed since by run {run_b}" in out
    assert "2 left alone (changed since)" in out

    # a restore that changes nothing is a conflict, not a success
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cms.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM posts WHERE source_id = 'p-002'"))
    engine.dispose()
    code, out = run(prefect_api, tmp_path, "rollback", run_b, "--job", str(job))
    assert code == 3, out
    assert "p-002 (p-002): conflict - no longer at the destination" in out
    assert cms(tmp_path)["p-001"]["title"] == "Post number 1"  # B undone where it could be
    # now A's version is back at p-001, and A can be rolled back there
    code, out = run(prefect_api, tmp_path, "rollback", run_a, "--job", str(job))
    assert code == 3 and "p-001 (p-001): deleted" in out, out  # p-002 stays a conflict


@pytest.mark.prefect
def test_rollback_never_touches_an_item_changed_outside_batchgate(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    write_csv([blog_row(n) for n in range(1, 4)])
    with WebflowServer() as server:
        job = load_job(webflow_job(tmp_path, server))
        done = full(job)
        (edited,) = [i for i in server.items.values() if i["fieldData"]["slug"] == "post-number-2"]
        edited["fieldData"]["name"] = "Changed by an editor in Webflow"
        result = rollback(done["run_id"], job=job)
        names = sorted(i["fieldData"]["name"] for i in server.items.values())
    assert result["conflicts"] == 1 and names == ["Changed by an editor in Webflow"]
    (conflict,) = [o for o in result["outcomes"] if o["outcome"] == "conflict"]
    assert "outside batchgate" in conflict["error"]


@pytest.mark.prefect
def test_sigkill_between_the_write_and_its_ledger_row_keeps_the_original_for_rollback(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    rows = [blog_row(n) for n in range(1, 4)]
    write_csv(rows)
    with WebflowServer() as server:
        job = webflow_job(tmp_path, server, batch=", retries: 0")
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "a.json")
        assert code == 0, out[-2000:]
        original = {i["fieldData"]["slug"]: dict(i["fieldData"]) for i in server.items.values()}
        write_csv([dict(r, title=f"Second {r['title']}") for r in rows])
        # the server applies each update, then takes 30 s to answer: kill the writer meanwhile
        server.state.faults = Faults(slow_rate=1.0, slow_seconds=30)
        writer = start(prefect_api, tmp_path, "full", "--job", str(job))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
            i["fieldData"]["name"].startswith("Second") for i in server.items.values()
        ):
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        server.state.faults = Faults()
        landed = sum(i["fieldData"]["name"].startswith("Second") for i in server.items.values())
        assert landed >= 1  # written at the destination, never recorded in the ledger

        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "c.json")
        assert code == 0, out[-2000:]
        assert all(i["fieldData"]["name"].startswith("Second") for i in server.items.values())
        run_c = json.loads((tmp_path / "c.json").read_text())["run_id"]
        code, out = run(prefect_api, tmp_path, "rollback", run_c, "--job", str(job))
        assert code == 0, out
        after = {i["fieldData"]["slug"]: i["fieldData"] for i in server.items.values()}
        once_each(server, 3)
    assert after == original  # the first version, not the crashed write's, came back


# --- publish state is true ------------------------------------------------------------------------


@pytest.mark.prefect
def test_a_failed_publish_leaves_items_written_not_published_and_the_next_run_publishes_them(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 8)])
    with WebflowServer(faults=Faults(publish_errors=1)) as server:
        job = load_job(webflow_job(tmp_path, server, publish=True))
        first = full(job)
        assert not server.state.published and "Written, not published: 7" in first["report"]
        ledger = open_ledger(job.ledger)
        assert all(
            t["draft"] == 1
            for t in ledger.targets_for(f"webflow:{server.state.collection_id}").values()
        )  # noqa: E501
        second = full(job)
        published = set(server.state.published)
        once_each(server, 7)
    assert published == set(server.items)  # every item confirmed live now
    assert second["succeeded"] == 7 and second["unchanged"] == 0
    assert all(
        t["draft"] == 0
        for t in ledger.targets_for(f"webflow:{server.state.collection_id}").values()
    )  # noqa: E501


# --- the ledger opened by many processes at once ------------------------------------------------


def _open(url: str, barrier: Any) -> None:
    barrier.wait()
    open_ledger(LedgerConfig(url=url))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_many_processes_open_a_new_ledger_at_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_schema_url"))  # fmt: skip
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(6)
    workers = [context.Process(target=_open, args=(url, barrier)) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 6
    ledger = open_ledger(LedgerConfig(url=url))
    with ledger.engine.connect() as conn:
        versions = [v for (v,) in conn.execute(sa.text("SELECT version FROM batchgate_schema"))]
    assert sorted(versions) == list(range(1, len(ledger.migrations) + 1))  # each once


def test_a_migration_stopped_half_way_is_rolled_back_and_finished_on_the_next_open(
    ledger_url: str,
) -> None:
    from batchgate.ledger import MIGRATIONS

    def broken(conn: Any) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
        raise RuntimeError("stopped half-way")

    engine = sa.create_engine(ledger_url)
    with pytest.raises(RuntimeError, match="half-way"):
        Ledger(engine, migrations=[*MIGRATIONS, broken]).ensure_schema()
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("half_done")  # rolled back whole
        assert not sa.inspect(conn).has_table("batchgate_runs")
    assert Ledger(engine).ensure_schema() == len(MIGRATIONS)  # the next open finishes it
    engine.dispose()
