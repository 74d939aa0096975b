"""Full-run benchmarks, each side by side in one run on this machine.

  rate       1,000 items into the fake Webflow API allowing R requests/s (default 20) and answering
             in 50-300 ms: batchgate's full flow against the pattern document's scheme (5 items
             at a time, then a fixed delay of 5/R s). Both reported as a fraction of R, with 429s.
  webflow    10,000 items into the fake Webflow API at R = 60 requests/min (a 60 s window, answers
             in 50-300 ms) with items_per_request: 100, as items/min against 100 x R; beside it the
             one-item-per-request scheme (items_per_request: 1) on the same fake, for --small items
             (default 120), whose items/min is extrapolated to 10,000 items.
  overhead   10,000 items into SQLite with no latency: the full flow of a job that says nothing
             about batching (the destination's defaults) against the honest baseline, a plain
             loop with raw sqlite3 that renders the same records and upserts them by id.
             Reports items/s and the ratio.
  overhead-pg  the same into the local PostgreSQL (a fresh schema each), against the same loop
             with the raw psycopg2 driver.
  memory     peak RSS of each phase in its own process, for 10,000 and 100,000 items (--items N:
             that size alone, e.g. 1000000) into SQLite or the local PostgreSQL (--db postgres,
             schemas of its own, dropped after): the dry-run (reads, validates and freezes the
             plan a chunk at a time), the sample from its plan (3 drafts, chosen over the plan
             read in slices), the full run from its plan (read back in slices), and a full run
             given no plan (`batchgate full --job`: its own plan made from the source as a
             dry-run makes one, into a second, empty destination), and the rollback of that
             full run from the plan (read back a page at a time). --phases picks some of
             dry,sample,plan,source,rollback. Every item must be accounted for in the ledger.

Usage: python benchmarks/full_run.py [rate|webflow|overhead|memory|all] [--items N] [--rate R]
                                     [--db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Prefect's INFO logs to the API cost throughput (measured); the figures are batchgate's, not theirs.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from blog_data import CATEGORIES, make_csv  # noqa: E402

from batchgate.schema import BLOG  # noqa: E402


def write_job(folder: Path, destination: str, batch: str) -> Path:
    path = folder / "job.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        f"destination: {destination}\n"
        f"validation: {{preset: blog, allowed_categories: {CATEGORIES}}}\n"
        f"batch: {batch}\n"
        f"ledger: {{path: {folder / 'ledger.db'}}}\n"
    )
    return path


# --- rate ----------------------------------------------------------------------------------------


def bench_rate(items: int, rate: int) -> None:
    from batchgate.config import load_job
    from batchgate.transform import blog_record
    from blocks.webflow import WebflowDestination
    from flows.full import full
    from tests.fakes.webflow_server import Faults, WebflowServer

    os.environ["WEBFLOW_TOKEN"] = "test-token"
    faults = Faults(latency=(0.05, 0.3))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_csv(folder / "posts.csv", items, body_words=40, problems=False)

        with WebflowServer(rate_limit=rate, window_s=1.0, faults=faults) as server:
            destination = (
                f"{{type: webflow, base_url: '{server.base_url}', collection_id: "
                f"{server.state.collection_id}, token: '${{WEBFLOW_TOKEN}}', rate_per_minute: {rate * 60}}}"
            )
            job = load_job(write_job(folder, destination, "{size: 10}"))
            started = time.monotonic()
            summary = full(job)
            seconds = time.monotonic() - started
            writes = [r for r in server.state.requests if r[1] == "POST"]
            results["batchgate"] = {
                "seconds": seconds, "created": len(server.items), "succeeded": summary["succeeded"],
                "429s": sum(1 for r in server.state.requests if r[3] == 429),
                "items_per_s": len(writes and server.items) / _span(writes),
            }  # fmt: skip

        with WebflowServer(rate_limit=rate, window_s=1.0, faults=faults) as server:
            dest = WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                                      token="test-token", rate_per_minute=10**9)  # fmt: skip
            from blocks.file_source import FileSource

            batch = FileSource(path=str(folder / "posts.csv")).read(BLOG)
            records = [blog_record(i.id, i.data) for i in batch.items]
            delay = 5 / rate  # the document: 5 items, then 5 s, against 60/min (1/s)
            failed = 0
            started = time.monotonic()
            with ThreadPoolExecutor(5) as pool:
                for start in range(0, len(records), 5):
                    group = records[start : start + 5]
                    for outcome in pool.map(lambda r: _try(dest, r), group):
                        failed += outcome
                    time.sleep(delay)
            seconds = time.monotonic() - started
            writes = [r for r in server.state.requests if r[1] == "POST"]
            results["pattern (5 + delay)"] = {
                "seconds": seconds, "created": len(server.items), "succeeded": len(server.items),
                "429s": sum(1 for r in server.state.requests if r[3] == 429),
                "items_per_s": len(server.items) / _span(writes), "failed": failed,
            }  # fmt: skip

    print(f"\nRate efficiency: {items:,} items, destination allows R = {rate} requests/s, "
          "answers in 50-300 ms\n")  # fmt: skip
    print(f"{'scheme':<22} {'seconds':>8} {'items/s':>8} {'of R':>6} {'429s':>5} {'created':>8}")
    for name, r in results.items():
        print(f"{name:<22} {r['seconds']:>8.1f} {r['items_per_s']:>8.2f} "
              f"{r['items_per_s'] / rate:>6.1%} {r['429s']:>5} {r['created']:>8}")  # fmt: skip
    a, b = results["batchgate"]["items_per_s"], results["pattern (5 + delay)"]["items_per_s"]
    print(f"\nbatchgate / pattern throughput: {a / b:.2f}x")


def _span(requests: list) -> float:
    if len(requests) < 2:
        return 1.0
    return max(requests[-1][0] - requests[0][0], 1e-9) * len(requests) / (len(requests) - 1)


def _try(dest, record) -> int:  # noqa: ANN001
    from batchgate.errors import WriteError

    try:
        dest.upsert(record, None, draft=True)
        return 0
    except WriteError:
        return 1


# --- webflow: group writes at Webflow's own limit --------------------------------------------------


def webflow_stage(folder: Path, items: int, per_request: int, per_minute: int) -> dict:
    """One full run into a fresh fake allowing `per_minute` requests per 60 s window."""
    from collections import Counter

    from batchgate.config import load_job
    from flows.full import full
    from tests.fakes.webflow_server import Faults, WebflowServer

    make_csv(folder / "posts.csv", items, body_words=40, problems=False)
    faults = Faults(latency=(0.05, 0.3))
    with WebflowServer(rate_limit=per_minute, window_s=60.0, faults=faults) as server:
        destination = (
            f"{{type: webflow, base_url: '{server.base_url}', collection_id: "
            f"{server.state.collection_id}, token: '${{WEBFLOW_TOKEN}}', "
            f"rate_per_minute: {per_minute}, items_per_request: {per_request}}}"
        )
        (folder / "ledger.db").unlink(missing_ok=True)
        job = load_job(write_job(folder, destination, "{}"))
        started = time.monotonic()
        summary = full(job)
        seconds = time.monotonic() - started
        slugs = Counter(server.state.slugs())
        return {
            "items": items, "seconds": seconds, "succeeded": summary["succeeded"],
            "failed": summary["failed"], "created": len(slugs),
            "duplicated": sum(n - 1 for n in slugs.values()),
            "requests": len(server.state.requests),
            "429s": sum(1 for r in server.state.requests if r[3] == 429),
            "items_per_min": 60 * summary["succeeded"] / seconds,
        }  # fmt: skip


def bench_webflow(items: int, small: int, per_minute: int = 60) -> None:
    os.environ["WEBFLOW_TOKEN"] = "test-token"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = folder / "warm"
        warm.mkdir()
        webflow_stage(warm, 1, 1, 6000)  # the temporary Prefect server's start is not timed
        rows = {
            "items_per_request: 100": webflow_stage(folder, items, 100, per_minute),
            "items_per_request: 1": webflow_stage(folder, small, 1, per_minute),
        }
    ceiling = 100 * per_minute
    print(f"\nWebflow: fake API at R = {per_minute} requests/min, answers in 50-300 ms\n")
    print(f"{'scheme':<24} {'items':>6} {'seconds':>8} {'items/min':>9} {'of 100xR':>8} "
          f"{'failed':>6} {'dup':>4} {'429s':>5} {'requests':>8}")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:<24} {r['items']:>6} {r['seconds']:>8.1f} {r['items_per_min']:>9.0f} "
              f"{r['items_per_min'] / ceiling:>8.1%} {r['failed']:>6} {r['duplicated']:>4} "
              f"{r['429s']:>5} {r['requests']:>8}")  # fmt: skip
    grouped = rows["items_per_request: 100"]
    print(f"figure: webflow_of_100R {grouped['items_per_min'] / ceiling:.4f}")
    print(f"figure: webflow_clean {int(not (grouped['failed'] or grouped['duplicated']))}")
    one = rows["items_per_request: 1"]
    print(
        f"\none item per request, extrapolated from {one['items']} items: 10,000 items in "
        f"{10_000 / one['items_per_min']:.0f} min; grouped: "
        f"{rows['items_per_request: 100']['seconds'] * 10_000 / items / 60:.1f} min"
    )


# --- overhead and memory --------------------------------------------------------------------------


PG_URL = os.environ.get(
    "BATCHGATE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def sql_stage(kind: str, folder: Path, items: int, db: str = "sqlite") -> dict:
    """One measurement, in this (fresh) process."""
    from batchgate.config import load_job

    make_csv(folder / "posts.csv", items, body_words=120, problems=False)
    url = f"sqlite:///{folder / 'cms.db'}"
    schema = None
    if db == "postgres":
        schema = f"bench_{os.getpid()}"
        url = _pg_schema(schema)
    job = load_job(write_job(folder, f"{{type: sql, url: '{url}'}}", "{}"))
    try:
        if kind == "loop":
            started = time.perf_counter()
            if db == "postgres":
                _plain_loop_pg(folder / "posts.csv", schema)
            else:
                _plain_loop(folder / "posts.csv", folder / "plain.db")
            seconds = time.perf_counter() - started
            counts = {"succeeded": items}
        else:
            seconds, counts = _flow_stage(job, folder)
    finally:
        if schema:
            _drop_schema(schema)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "items": items, "seconds": seconds, "peak_mb": peak, "counts": counts}


def _pg_schema(schema: str) -> str:
    """A fresh schema on the local PostgreSQL; the URL that writes into it."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def _drop_schema(schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


def _plain_loop_pg(csv_path: Path, schema: str) -> None:
    """The same loop with the raw PostgreSQL driver (psycopg2): upsert by id, one commit."""
    import psycopg2

    from batchgate.transform import blog_record
    from blocks.file_source import FileSource
    from blocks.sql_destination import CONTENT_FIELDS

    db = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test",
                          options=f"-csearch_path={schema}")  # fmt: skip
    cur = db.cursor()
    columns = ", ".join(("source_id", *CONTENT_FIELDS))
    cur.execute(f"CREATE TABLE plain ({', '.join(c + ' text' for c in ('source_id', *CONTENT_FIELDS))}, "
                "PRIMARY KEY (source_id))")  # fmt: skip
    marks = ", ".join(["%s"] * (len(CONTENT_FIELDS) + 1))
    update = ", ".join(f"{c} = excluded.{c}" for c in CONTENT_FIELDS)
    sql = (f"INSERT INTO plain ({columns}) VALUES ({marks}) "
           f"ON CONFLICT (source_id) DO UPDATE SET {update}")  # fmt: skip
    for item in FileSource(path=str(csv_path)).read(BLOG).items:
        record = blog_record(item.id, item.data)
        record["tags"] = json.dumps(record["tags"] or [])
        cur.execute(sql, [record["source_id"], *(_text(record.get(c)) for c in CONTENT_FIELDS)])
    db.commit()
    db.close()


def _text(value: object) -> object:
    return None if value is None else str(value)


def _flow_stage(job, folder: Path) -> tuple[float, dict]:  # noqa: ANN001
    from blocks.ledger import open_ledger
    from flows.full import full

    warm = folder / "warm.csv"
    make_csv(warm, 1)  # a one-item run first: the temporary Prefect server's start is not timed
    full(job.model_copy(update={"source": job.source.model_copy(update={"path": str(warm)})}))
    started = time.perf_counter()
    summary = full(job)
    seconds = time.perf_counter() - started
    return seconds, open_ledger(job.ledger).status_counts(summary["run_id"])


def _plain_loop(csv_path: Path, db_path: Path) -> None:
    """What a person would write by hand: read, render, upsert by id with raw sqlite3."""
    import sqlite3

    from batchgate.transform import blog_record
    from blocks.file_source import FileSource
    from blocks.sql_destination import CONTENT_FIELDS

    db = sqlite3.connect(db_path)
    columns = ", ".join(("source_id", *CONTENT_FIELDS))
    db.execute(f"CREATE TABLE posts ({columns}, PRIMARY KEY (source_id))")
    marks = ", ".join("?" * (len(CONTENT_FIELDS) + 1))
    update = ", ".join(f"{c} = excluded.{c}" for c in CONTENT_FIELDS)
    sql = f"INSERT INTO posts ({columns}) VALUES ({marks}) ON CONFLICT(source_id) DO UPDATE SET {update}"
    for item in FileSource(path=str(csv_path)).read(BLOG).items:
        record = blog_record(item.id, item.data)
        record["tags"] = json.dumps(record["tags"] or [])
        db.execute(sql, [record["source_id"], *(record.get(c) for c in CONTENT_FIELDS)])
    db.commit()
    db.close()


def run_stage(kind: str, items: int, db: str = "sqlite") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "_stage", kind, str(items), tmp, db]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp)
        return json.loads(out.stdout.strip().splitlines()[-1])


def bench_overhead(items: int, db: str = "sqlite") -> float:
    """The flow's time over the plain loop's (best of 2 each, interleaved); every item written."""
    rows = [run_stage(kind, items, db) for kind in ("loop", "flow", "loop", "flow")]
    for r in rows:
        assert r["counts"].get("succeeded") == items, f"not every item succeeded: {r['counts']}"
    best = {k: min(r["seconds"] for r in rows if r["kind"] == k) for k in ("loop", "flow")}
    driver = "raw psycopg2" if db == "postgres" else "raw sqlite3"
    print(f"\nOverhead: {items:,} items into {db}, the default job, against a plain loop with "
          f"{driver} (best of 2, interleaved)\n")  # fmt: skip
    for kind, seconds in best.items():
        print(f"{kind:<6} {seconds:>7.2f} s {items / seconds:>9,.0f} items/s")
    ratio = best["flow"] / best["loop"]
    print(f"\nfull flow / plain loop time: {ratio:.2f}x (goal: at most 2x)")
    print(f"figure: {db}_flow_over_loop {ratio:.3f}")
    return ratio


PHASES = ("dry", "sample", "plan", "source", "rollback")


def bench_memory(sizes: list[int], db: str = "sqlite", phases: tuple[str, ...] = PHASES) -> None:
    print(f"\nMemory: peak RSS into {db}, each phase in its own process: {', '.join(phases)}\n")
    for items in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            make_csv(folder / "posts.csv", items, body_words=120, problems=False)
            schemas = [f"bench_mem_{os.getpid()}", f"bench_src_{os.getpid()}"]
            if db == "postgres":
                url, fresh = _pg_schema(schemas[0]), _pg_schema(schemas[1])
            else:
                url, fresh = f"sqlite:///{folder / 'cms.db'}", f"sqlite:///{folder / 'fresh.db'}"
            write_job(folder, f"{{type: sql, url: '{url}'}}", "{}")
            source_job = write_job(folder, f"{{type: sql, url: '{fresh}'}}", "{}")
            source_job.rename(folder / "job-source.yaml")
            write_job(folder, f"{{type: sql, url: '{url}'}}", "{}")
            print(f"{items:>9,} items: source written in {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
            results = []
            try:
                for phase in phases:
                    if (
                        phase in ("sample", "plan", "rollback")
                        and not (folder / "plan_id").exists()
                    ):
                        dry = _memory_stage("dry", folder)
                        (folder / "plan_id").write_text(dry["run_id"])
                    if phase == "rollback" and not (folder / "full_id").exists():
                        (folder / "full_id").write_text(_memory_stage("plan", folder)["run_id"])
                    result = _memory_stage(phase, folder)
                    if phase in ("dry", "plan"):
                        (folder / ("plan_id" if phase == "dry" else "full_id")).write_text(
                            result["run_id"]
                        )
                    results.append(result)
                    print(f"{items:>9,} items  {result['phase']:<26} {result['peak_mb']:>6.0f} MB  "
                          f"{result['seconds']:>7.1f} s  {result['counts']}", flush=True)  # fmt: skip
                    print(f"figure: {db}_{phase}_{items}_peak_mb {result['peak_mb']:.0f}")
            finally:
                if db == "postgres":
                    for schema in schemas:
                        _drop_schema(schema)
        for r in results:
            if r["kind"] in ("plan", "source"):
                total = sum(r["counts"].values())
                assert total == items, f"an item is missing from the ledger: {total:,} of {items:,}"
            if r["kind"] == "rollback":
                c = r["counts"]  # every item undone, or left as it was (the sample's, published)
                total = c["rolled back"] + sum(c["left"].values())
                assert total == items and not c["conflict"] + c["failed"], f"not undone: {c}"


def _memory_stage(kind: str, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "_memory", kind, str(folder)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=folder)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_stage(kind: str, folder: Path) -> dict:
    """One phase in this (fresh) process, after a one-item warm-up of the same phase on files of
    its own (the temporary Prefect server's start is not timed)."""
    from batchgate.config import load_job
    from blocks.ledger import open_ledger
    from flows.dry_run import dry_run
    from flows.full import full
    from flows.rollback import rollback
    from flows.sample import sample

    warm = folder / f"warm-{kind}"
    warm.mkdir()
    make_csv(warm / "posts.csv", 1)
    warm_job = load_job(write_job(warm, f"{{type: sql, url: 'sqlite:///{warm / 'cms.db'}'}}", "{}"))
    warm_plan = dry_run(warm_job)["run_id"]
    if kind == "plan":
        full(warm_job, plan_id=warm_plan)
    elif kind == "sample":
        sample(warm_job, plan_id=warm_plan, sample_count=3)
    elif kind == "source":
        full(warm_job)
    elif kind == "rollback":
        rollback(full(warm_job, plan_id=warm_plan)["run_id"], ledger=warm_job.ledger)
    job = load_job(folder / ("job-source.yaml" if kind == "source" else "job.yaml"))
    started = time.perf_counter()
    if kind == "dry":
        summary = dry_run(job)
        counts = {k: summary[k] for k in ("ready", "warnings", "blocked")}
        phase = "dry-run"
    elif kind == "sample":
        summary = sample(job, plan_id=(folder / "plan_id").read_text(), sample_count=3)
        counts = {"succeeded": summary["succeeded"]}
        phase = "sample (from the plan)"
    elif kind == "plan":
        summary = full(job, plan_id=(folder / "plan_id").read_text())
        counts = open_ledger(job.ledger).status_counts(summary["run_id"])
        phase = "full (from the plan)"
    elif kind == "source":
        summary = full(job)
        counts = open_ledger(job.ledger).status_counts(summary["run_id"])
        phase = "full (no plan: the source)"
    else:
        summary = rollback((folder / "full_id").read_text(), ledger=job.ledger)
        left = open_ledger(job.ledger).status_counts(summary["run_id"])
        left.pop("rolled-back", None)
        counts = {"rolled back": summary["rolled_back"], **summary["counts"], "left": left}
        phase = "rollback (of the full run)"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "phase": phase, "run_id": summary["run_id"], "seconds": seconds,
            "peak_mb": peak, "counts": counts}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_stage":
        kind, items, folder = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
        print(json.dumps(sql_stage(kind, folder, items, sys.argv[5])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        print(json.dumps(memory_stage(sys.argv[2], Path(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "which", nargs="?", default="all",
        choices=["rate", "webflow", "overhead", "overhead-pg", "memory", "all"],
    )  # fmt: skip
    parser.add_argument("--small", type=int, default=120, help="webflow: one-per-request items")
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                        help="memory: the destination's database")  # fmt: skip
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="memory: which of dry,sample,plan,source,rollback")  # fmt: skip
    args = parser.parse_args()
    if args.which in ("rate", "all"):
        bench_rate(args.items or 1000, args.rate)
    if args.which in ("webflow", "all"):
        bench_webflow(args.items or 10_000, args.small)
    if args.which in ("overhead", "all"):
        bench_overhead(args.items or 10_000)
    if args.which in ("overhead-pg", "all"):
        bench_overhead(args.items or 10_000, "postgres")
    if args.which in ("memory", "all"):
        phases = tuple(p for p in args.phases.split(",") if p)
        unknown = set(phases) - set(PHASES)
        if unknown:
            parser.error(f"unknown phases {sorted(unknown)}: choose from {', '.join(PHASES)}")
        bench_memory([args.items] if args.items else [10_000, 100_000], args.db, phases)


if __name__ == "__main__":
    main()
