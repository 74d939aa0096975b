"""One rate across processes: the ledger's bucket against Prefect's global concurrency limit;
and (memory) the peak RSS of every process of a sharded full run.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python benchmarks/shards.py [--rate 50]
    .venv/bin/python benchmarks/shards.py memory --items 100000
    .venv/bin/python benchmarks/shards.py workers --items 20000

workers: the memory run below on 1 worker, then on 2, one after the other in one invocation,
and the ratio of their wall times.

memory: what tests/test_shards.py's `stack` starts (a Prefect server on a PostgreSQL database of
its own, a process work pool, the full-shard deployment, 2 workers with --limit 2), N posts
(make_csv, 120 body words, no problems), a job with batch: {shards: 4} into a SQL destination on
a fresh PostgreSQL schema and the ledger on another, then `batchgate full --job ... --json ...`
as its own process. Every 0.5 s it reads /proc/<pid>/status VmHWM (peak RSS) of the parent and
of every flow-run process the workers started (`python -m prefect.engine`, named by its flow
run); the server's and the workers' own as well. Checks every item was written exactly once
(ledger: N succeeded; the table: N distinct ids) and prints each process's peak, the figures
shards_<N>_parent_peak_mb and shards_<N>_shard_peak_mb, the wall time and where it went.
Everything it started is stopped, its database and schemas dropped, also on error.

K processes (4, as 4 shards) each want to send requests as fast as the shared rate R allows.
- bucket: batchgate/bucket.py, slots taken in blocks from a row of a PostgreSQL ledger
  (BATCHGATE_TEST_PG_URL, a scratch schema dropped afterwards);
- gcl: a Prefect global concurrency limit with slot_decay_per_second = R, taken in blocks of B
  slots with prefect.concurrency.sync.rate_limit(occupy=B), each block spent 1/R apart.
Prints each one's aggregate rate as a fraction of R, the busiest second, and the cost of one
acquisition (a round trip to the ledger or to the Prefect server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = os.environ.get(
    "BATCHGATE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
PROCESSES = 4


def _bucket(url: str, rate: float, count: int, block: int, start_at: float, out: list) -> None:
    from batchgate.bucket import SharedPacer
    from batchgate.ledger import Ledger

    pacer = SharedPacer(Ledger(sa.create_engine(url)), "bench:shared", rate, block=block)
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        pacer.acquire()
        stamps.append(time.time())
    out.append((stamps, [], pacer.taken))


def _gcl(name: str, rate: float, count: int, block: int, start_at: float, out: list) -> None:
    from prefect.concurrency.sync import rate_limit

    time.sleep(max(0.0, start_at - time.time()))
    stamps, costs, left, next_at = [], [], 0, 0.0
    while len(stamps) < count:
        if left == 0:
            began = time.perf_counter()
            rate_limit(name, occupy=block, strict=True)
            costs.append(time.perf_counter() - began)
            left, next_at = block, time.time()
        time.sleep(max(0.0, next_at - time.time()))
        stamps.append(time.time())
        left -= 1
        next_at = stamps[-1] + 1.0 / rate
    out.append((stamps, costs, len(costs)))


def _run(target, args: tuple, count: int, block: int) -> tuple[list[float], list[float], int]:
    manager = multiprocessing.get_context("spawn").Manager()
    out = manager.list()
    start_at = time.time() + 4.0
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=(*args, count, block, start_at, out))
             for _ in range(PROCESSES)]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
    stamps = sorted(s for stamps, _, _ in out for s in stamps)
    costs = [c for _, costs, _ in out for c in costs]
    return stamps, costs, sum(n for _, _, n in out)


def _take_costs(url: str, block: int) -> list[float]:
    """One block's round trip to the ledger, alone (the bucket's acquisition cost)."""
    from batchgate.bucket import ensure_tables, take_slots
    from batchgate.ledger import Ledger

    ledger = Ledger(sa.create_engine(url))
    ensure_tables(ledger)
    costs = []
    for _ in range(50):
        began = time.perf_counter()
        take_slots(ledger, "bench:cost", 1e-6, block, 0.0)
        costs.append(time.perf_counter() - began)
    return costs


def _report(name: str, rate: float, stamps: list[float], costs: list[float], blocks: int) -> None:
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - 1) / span
    busiest = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    cost = f", {statistics.median(costs) * 1000:.0f} ms per acquisition (median)" if costs else ""
    print(f"{name:7} {len(stamps)} requests in {span:.1f} s: {achieved:.1f}/s = "
          f"{achieved / rate:.0%} of R, busiest second {busiest} (R = {rate:g}), "
          f"{blocks} acquisitions{cost}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="rate", choices=["rate", "memory", "workers"])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--items", type=int, default=100_000, help="memory: the posts")
    parser.add_argument("--shards", type=int, default=4, help="memory: batch.shards")
    parser.add_argument("--workers", type=int, default=2, help="memory: process workers")
    parser.add_argument("--timeout", type=float, default=3 * 3600.0,
                        help="memory: the full run's limit in seconds")  # fmt: skip
    args = parser.parse_args()
    if args.which == "memory":
        bench_memory(args.items, args.shards, args.workers, args.timeout)
        return
    if args.which == "workers":  # the same sharded SQL run on 1 worker, then on 2, side by side
        walls = {n: bench_memory(args.items, args.shards, n, args.timeout) for n in (1, 2)}
        print(f"\nfigure: shards_{args.items}_workers_1_s {walls[1]:.0f}")
        print(f"figure: shards_{args.items}_workers_2_s {walls[2]:.0f}")
        print(f"ratio: 2 workers take {walls[2] / walls[1]:.2f}x the wall time of 1 "
              f"({walls[1] / walls[2]:.2f}x the speed)")  # fmt: skip
        return
    rate, count = args.rate, int(args.rate * args.seconds / PROCESSES)
    block = max(1, int(rate * 0.5 / 1))  # half a second of the rate, as a shard takes

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        stamps, _, blocks = _run(_bucket, (url, rate), count, block)
        _report("bucket", rate, stamps, _take_costs(url, block), blocks)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))

    if not os.environ.get("PREFECT_API_URL"):
        print("gcl     skipped: set PREFECT_API_URL to a Prefect server (make serve)")
        return
    from prefect.client.orchestration import get_client

    name = f"bench-rate-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, limit=block, slot_decay_per_second=rate
        )
    try:
        stamps, costs, blocks = _run(_gcl, (name, rate), count, block)
        _report("gcl", rate, stamps, costs, blocks)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


# --- memory: the peak RSS of every process of a sharded full run ---------------------------------

POLL_S = 0.5


def _status_kb(pid: int, field: str) -> int | None:
    """A /proc/<pid>/status field in kB (VmHWM: the peak RSS), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _flow_run_id(pid: int) -> str | None:
    try:
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
                return entry.split(b"=", 1)[1].decode()
    except OSError:
        return None
    return None


class _Peaks:
    """Each watched process's highest VmHWM seen, by pid, with a label."""

    def __init__(self) -> None:
        self.kb: dict[int, int] = {}
        self.label: dict[int, str] = {}

    def see(self, pid: int, label: str) -> None:
        kb = _status_kb(pid, "VmHWM")
        if kb is not None:
            self.kb[pid] = max(self.kb.get(pid, 0), kb)
            self.label.setdefault(pid, label)

    def mb(self, pid: int) -> float:
        return self.kb.get(pid, 0) / 1024


def _make_database(name: str) -> None:
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def _drop(database: str | None, schemas: list[str]) -> None:
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        if database:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    engine.dispose()


def _start_stack(home: Path, database: str):  # noqa: ANN202
    """tests/test_shards.py's `stack` fixture, without pytest: the server on its own database,
    the process pool, the full-shard deployment, the workers. Returns (server, stack)."""
    from tests.conftest import PortTaken, _start_prefect_server
    from tests.test_shards import BIN, Stack

    class BenchStack(Stack):
        def env(self, **extra: str) -> dict[str, str]:
            env = super().env(**extra)
            env.pop("BATCHGATE_SHARD_STALE_S", None)  # the tests' 12 s: the default here
            return env

    pg = sa.engine.make_url(PG_URL).set(drivername="postgresql+asyncpg", database=database)
    old = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.render_as_string(hide_password=False)
    try:
        for attempt in range(3):
            try:
                server, api = _start_prefect_server(home, home / "server.log", deadline_s=180)
                break
            except PortTaken:
                if attempt == 2:
                    raise
    finally:
        if old is None:
            os.environ.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        else:
            os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = old
    stack = BenchStack(api, f"bench-shards-{uuid.uuid4().hex[:6]}", home, database)
    return server, stack, BIN


def _setup_pool(stack, bin_dir: Path, workers: int) -> None:  # noqa: ANN001
    from tests.conftest import ROOT

    for args in (["work-pool", "create", stack.pool, "--type", "process"],
                 ["--no-prompt", "deploy", "--name", "full-shard", "--pool", stack.pool]):  # fmt: skip
        done = subprocess.run([str(bin_dir / "prefect"), *args], cwd=ROOT, env=stack.env(),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        if done.returncode:
            raise RuntimeError(
                f"prefect {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    for n in range(1, workers + 1):
        stack.start_worker(n)


def _write_job(folder: Path, items: int, shards: int, destination: str, ledger: str) -> Path:
    import yaml
    from blog_data import CATEGORIES, make_csv

    make_csv(folder / "posts.csv", items, body_words=120, problems=False)
    job = {
        "name": "shards-memory", "source": {"type": "file", "path": "posts.csv"},
        "destination": {"type": "sql", "url": destination},
        "validation": {"preset": "blog", "allowed_categories": CATEGORIES},
        "batch": {"shards": shards}, "ledger": {"url": ledger},
    }  # fmt: skip
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def _timeline(text: str, marks: dict[str, float], at: float) -> None:
    """When each line of the parent's output was first seen (its progress lines left out)."""
    for line in text.splitlines():
        if line.strip() and not line.startswith(("Progress:", "  Shard ")) and line not in marks:
            marks[line] = at


def _watch(parent: subprocess.Popen, server, stack, folder: Path, timeout: float):  # noqa: ANN001
    """Poll every POLL_S until the parent exits: peaks, flow-run processes, its output."""
    from tests.test_shards import _descendants

    peaks, flow_runs = _Peaks(), {}  # flow_runs: pid -> flow run id
    marks: dict[str, float] = {}
    started = time.monotonic()
    log = folder / "full.log"
    rusage_kb = None
    last_said = started
    while True:
        peaks.see(parent.pid, "parent (batchgate full)")
        for pid in _descendants(parent.pid):
            peaks.see(pid, f"parent's child: {_cmdline(pid)[:60]}")
        peaks.see(server.pid, "server (prefect server start)")
        for pid in _descendants(server.pid):
            peaks.see(
                pid, "server: " + ("uvicorn" if "uvicorn" in _cmdline(pid) else _cmdline(pid)[:40])
            )
        for n, worker in enumerate(stack.workers, 1):
            peaks.see(worker.pid, f"worker w{n} (prefect worker start)")
            for pid in _descendants(worker.pid):
                if pid not in flow_runs:
                    command = _cmdline(pid)
                    run = _flow_run_id(pid)
                    if "python" not in command or ("prefect.engine" not in command and not run):
                        peaks.see(pid, f"worker w{n}'s child: {command[:60]}")
                        continue
                    flow_runs[pid] = run
                peaks.see(pid, f"flow run of w{n}")
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        _timeline(text, marks, time.monotonic() - started)
        done, status, usage = os.wait4(parent.pid, os.WNOHANG)
        if done:
            parent.returncode = os.waitstatus_to_exitcode(status)
            rusage_kb = usage.ru_maxrss
            break
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"the full run took over {timeout:.0f} s: {text[-3000:]}")
        if now - last_said > 60:
            last_said = now
            shard_mb = max((peaks.mb(p) for p in flow_runs), default=0.0)
            progress = [line for line in text.splitlines() if line.startswith("Progress:")]
            print(f"  {now - started:6.0f} s: parent {peaks.mb(parent.pid):.0f} MB, shards "
                  f"{shard_mb:.0f} MB ({len(flow_runs)} flow-run processes) "
                  f"{progress[-1] if progress else ''}", flush=True)  # fmt: skip
        time.sleep(POLL_S)
    wall = time.monotonic() - started
    _timeline(log.read_text(errors="replace"), marks, wall)  # its last lines
    return peaks, flow_runs, marks, wall, rusage_kb


def _check_once(destination: str, ledger: str, run_id: str, items: int) -> dict:
    """Every item written exactly once: the ledger's counts and the destination's ids."""
    engine = sa.create_engine(ledger)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text(
            "SELECT status, count(*) FROM batchgate_items WHERE run_id = :r GROUP BY status"),
            {"r": run_id}).all())  # fmt: skip
        rows, distinct = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT item_id) FROM batchgate_items WHERE run_id = :r"),
            {"r": run_id}).one()  # fmt: skip
    engine.dispose()
    engine = sa.create_engine(destination)
    with engine.connect() as conn:
        table, ids = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT source_id) FROM posts")).one()  # fmt: skip
    engine.dispose()
    checked = {"ledger": dict(statuses), "ledger rows": rows, "ledger distinct items": distinct,
               "table rows": table, "table distinct ids": ids}  # fmt: skip
    assert statuses == {"succeeded": items}, checked
    assert rows == distinct == table == ids == items, checked
    return checked


def _flow_run_times(api: str, ids: list[str]) -> dict[str, dict]:
    """Each flow run's name, parameters and start/end, from the Prefect server."""
    import httpx

    out = {}
    for run in ids:
        if not run:
            continue
        with contextlib.suppress(httpx.HTTPError):
            body = httpx.get(f"{api}/flow_runs/{run}", timeout=30).json()
            out[run] = {"name": body.get("name"), "start": body.get("start_time"),
                        "end": body.get("end_time"), "seconds": body.get("total_run_time"),
                        "state": (body.get("state") or {}).get("type"),
                        "shard": (body.get("parameters") or {}).get("shard"),
                        "attempt": (body.get("parameters") or {}).get("attempt")}  # fmt: skip
    return out


def _end(process: subprocess.Popen | None, grace: float = 20.0) -> None:
    """SIGTERM to a process and every process under it; SIGKILL to what is left after `grace`
    seconds (a `prefect worker start` told to stop may hang in its shutdown)."""
    from tests.test_shards import _descendants

    if process is None or process.returncode is not None:
        return
    tree = [process.pid, *_descendants(process.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        print(f"pid {process.pid} still running {grace:g} s after SIGTERM: SIGKILL", flush=True)
    for pid in dict.fromkeys([process.pid, *_descendants(process.pid), *tree]):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _stop_all(parent, server, stack) -> None:  # noqa: ANN001
    _end(parent)
    for worker in stack.workers if stack else []:
        _end(worker)
    _end(server)


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the finally blocks stop the stack and drop the databases


def bench_memory(items: int, shards: int, workers: int, timeout: float) -> float:
    """The sharded full run's peaks (printed); returns its wall time in seconds."""
    import shutil
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # blog_data
    signal.signal(signal.SIGTERM, _sigterm)
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:4]}"
    database = f"prefect_bench_shards_{tag}"
    schemas = [f"bench_shards_dst_{tag}", f"bench_shards_led_{tag}"]
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    parent = server = stack = None
    made_db, failed = False, True
    print(f"\nMemory of a sharded full run: {items:,} items, batch.shards {shards}, {workers} "
          f"workers (--limit 2), into PostgreSQL; logs in {folder}\n", flush=True)  # fmt: skip
    try:
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        destination, ledger = (f"{PG_URL}?options=-csearch_path%3D{s}" for s in schemas)
        began = time.monotonic()
        job = _write_job(folder, items, shards, destination, ledger)
        print(f"source written: {items:,} posts, {(folder / 'posts.csv').stat().st_size / 2**20:.0f}"
              f" MB, in {time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
        _make_database(database)
        made_db = True
        began = time.monotonic()
        server, stack, bin_dir = _start_stack(folder, database)
        _setup_pool(stack, bin_dir, workers)
        print(f"stack up in {time.monotonic() - began:.0f} s: server {stack.api}, pool "
              f"{stack.pool}, {workers} workers", flush=True)  # fmt: skip
        time.sleep(3)  # the workers' first poll of the pool
        launched = time.time()
        with (folder / "full.log").open("w") as log:
            parent = subprocess.Popen(
                [str(bin_dir / "batchgate"), "full", "--job", str(job), "--json",
                 str(folder / "full.json")], cwd=folder, env=stack.env(), stdout=log,
                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        peaks, flow_runs, marks, wall, rusage_kb = _watch(parent, server, stack, folder, timeout)
        said = (folder / "full.log").read_text(errors="replace")
        if parent.returncode != 0:
            raise RuntimeError(f"batchgate full exited {parent.returncode}:\n{said[-4000:]}")
        result = json.loads((folder / "full.json").read_text())
        checked = _check_once(destination, ledger, result["run_id"], items)
        times = _flow_run_times(stack.api, [r for r in flow_runs.values() if r])
        _report_memory(items, peaks, parent.pid, server.pid, stack, flow_runs, times, marks, wall,
                rusage_kb, result, checked, launched)  # fmt: skip
        failed = False
        return wall
    finally:
        if failed and parent is not None:
            with contextlib.suppress(OSError):
                print(f"\nthe full run's log (last lines):\n"
                      f"{(folder / 'full.log').read_text(errors='replace')[-3000:]}")  # fmt: skip
        _stop_all(parent, server, stack)
        _drop(database if made_db else None, schemas)
        (folder / "posts.csv").unlink(missing_ok=True)
        if failed:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _report_memory(items, peaks, parent_pid, server_pid, stack, flow_runs, times, marks, wall,  # noqa: ANN001
            rusage_kb, result, checked, launched: float) -> None:  # fmt: skip
    print(f"\nchecked: {checked}")
    print(f"\n{'process':<58} {'peak RSS':>9}")
    print(
        f"{'parent: batchgate full (pid ' + str(parent_pid) + ')':<58} "
        f"{peaks.mb(parent_pid):>6.0f} MB   (its rusage at exit: {rusage_kb / 1024:.0f} MB)"
    )
    for pid in sorted(p for p in peaks.kb if peaks.label[p].startswith("parent's child")):
        print(f"{peaks.label[pid]:<58} {peaks.mb(pid):>6.0f} MB")
    shard_mb = []
    for pid in sorted(
        flow_runs, key=lambda p: (times.get(flow_runs[p] or "", {}).get("shard") or 0, p)
    ):
        t = times.get(flow_runs[pid] or "", {})
        name = (f"shard {t['shard'] + 1} attempt {t['attempt']}" if t.get("shard") is not None
                else f"flow run {flow_runs[pid]}")  # fmt: skip
        shard_mb.append(peaks.mb(pid))
        took = f"{t['seconds']:.0f} s, {t['state']}" if t.get("seconds") is not None else ""
        print(f"{name + ' (' + peaks.label[pid] + ', pid ' + str(pid) + ')':<58} "
              f"{peaks.mb(pid):>6.0f} MB   {took}")  # fmt: skip
    for pid in sorted(p for p in peaks.kb if peaks.label[p].startswith(("server", "worker"))):
        print(f"{peaks.label[pid]:<58} {peaks.mb(pid):>6.0f} MB   (not the run's)")
    parent_mb = max(peaks.mb(parent_pid), rusage_kb / 1024)
    print(f"\nfigure: shards_{items}_parent_peak_mb {parent_mb:.0f}")
    print(f"figure: shards_{items}_shard_peak_mb {max(shard_mb, default=0):.0f}")
    print(f"figure: shards_{items}_wall_s {wall:.0f}")
    print(f"\nwall time of `batchgate full`: {wall:.0f} s; status {result.get('status')}, "
          f"succeeded {result.get('succeeded')}")  # fmt: skip
    print("  the parent's output, each line when first seen (0.5 s polls):")
    for line, at in list(marks.items())[:60]:
        print(f"  at {at:6.1f} s: {line[:200]}")
    starts = [t["start"] for t in times.values() if t.get("start")]
    ends = [t["end"] for t in times.values() if t.get("end")]
    if starts and ends:
        from datetime import datetime

        first = min(map(datetime.fromisoformat, starts)).timestamp() - launched
        last = max(map(datetime.fromisoformat, ends)).timestamp() - launched
        each = ", ".join(f"{t['seconds']:.0f} s" for t in times.values() if t.get("seconds"))
        print(f"  shards: the first started at {first:.1f} s, the last ended at {last:.1f} s "
              f"(each shard's run time: {each})")  # fmt: skip


if __name__ == "__main__":
    main()
