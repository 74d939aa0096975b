"""Dry-run validation speed and memory, without network.

Each measurement runs in a fresh subprocess (so peak RSS is its own), and the stages are
interleaved over several rounds, so the figures are side by side on a noisy shared machine:

  pandas-read   plain `pd.read_csv` of the file: the floor any CSV-based validation pays
  validate      batchgate: read + type every cell + run the blog preset's rules
  validate+ledger   the same, then every item's result written to a SQLite ledger
  flow          the whole `dry_run` Prefect flow (temporary local API, started before timing),
                report and artifacts included

Usage: python benchmarks/validate_rows.py [--rows 100000] [--rounds 3] [--no-flow]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from blog_data import CATEGORIES, make_csv  # noqa: E402


def stage(name: str, csv_path: Path, workdir: Path) -> dict:
    """Run one stage in this process and return its timing and counts."""
    started = time.perf_counter()
    if name == "pandas-read":
        import pandas as pd

        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        counts = {"rows": len(frame)}
    elif name == "flow":
        from batchgate.config import LedgerConfig, load_job

        job_path = workdir / "job.yaml"
        job_path.write_text(
            f"source: {{type: file, path: {csv_path}}}\n"
            f"validation: {{preset: blog, allowed_categories: {CATEGORIES}}}\n"
        )
        job = load_job(job_path).model_copy(
            update={"ledger": LedgerConfig(path=str(workdir / f"flow-{time.time_ns()}.db"))}
        )
        from flows.dry_run import dry_run

        warm = workdir / "warm.csv"
        make_csv(warm, 1)
        dry_run(
            job.model_copy(update={"source": job.source.model_copy(update={"path": str(warm)})})
        )
        started = time.perf_counter()  # the temporary Prefect server is up: time the flow alone
        summary = dry_run(job)
        counts = {k: summary[k] for k in ("total", "ready", "warnings", "blocked")}
    else:
        from batchgate.config import LedgerConfig, ValidationConfig
        from batchgate.schema import BLOG
        from batchgate.validation import build_rules, validate_items
        from batchgate.validation.rules import Context
        from blocks.file_source import FileSource

        started = time.perf_counter()  # imports are paid once per process, not per row
        items = FileSource(path=str(csv_path)).read(BLOG).items
        config = ValidationConfig(allowed_categories=CATEGORIES)
        results = validate_items(items, build_rules(config), Context(allowed_categories=CATEGORIES))
        counts = {s: sum(r.status == s for r in results) for s in ("ready", "warning", "blocked")}
        if name == "validate+ledger":
            from batchgate.ledger import new_run_id
            from blocks.ledger import open_ledger

            ledger = open_ledger(LedgerConfig(path=str(workdir / f"l-{time.time_ns()}.db")))
            run_id = new_run_id("dry-run")
            ledger.start_run(
                run_id, job_name="bench", job_fingerprint="-", mode="dry-run", source=""
            )
            ledger.record_validation(run_id, results)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"stage": name, "seconds": elapsed, "peak_rss_mb": peak_mb, **counts}


def measure(name: str, csv_path: Path, workdir: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--stage",
        name,
        "--csv",
        str(csv_path),
        "--workdir",
        str(workdir),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=workdir)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-flow", action="store_true", help="skip the Prefect flow stage")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, Path(args.csv), Path(args.workdir))))
        return

    with tempfile.TemporaryDirectory(prefix="bg-bench-") as tmp:
        workdir = Path(tmp)
        csv_path = workdir / "posts.csv"
        make_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        stages = ["pandas-read", "validate", "validate+ledger"] + ([] if args.no_flow else ["flow"])
        samples: dict[str, list[dict]] = {s: [] for s in stages}
        for _ in range(args.rounds):
            for name in stages:  # interleaved: every round sees the same machine load
                samples[name].append(measure(name, csv_path, workdir))

    print(
        f"\n{args.rows:,} rows ({size_mb:.0f} MB CSV), median of {args.rounds} interleaved rounds\n"
    )
    print(f"{'stage':<17} {'seconds':>8} {'rows/s':>10} {'peak RSS':>9} {'vs pandas-read':>15}")
    base = statistics.median(s["seconds"] for s in samples["pandas-read"])
    for name in stages:
        seconds = statistics.median(s["seconds"] for s in samples[name])
        peak = max(s["peak_rss_mb"] for s in samples[name])
        print(
            f"{name:<17} {seconds:>8.2f} {args.rows / seconds:>10,.0f} {peak:>7.0f}MB "
            f"{seconds / base:>14.1f}x"
        )
    last = samples["validate"][-1]
    print(
        f"\ncounts: ready {last['ready']:,}, warnings {last['warning']:,}, blocked {last['blocked']:,}"
    )
    print(
        "target: validating 100,000 rows in under 10 s; the pattern document's 2-3 s per item "
        f"would take {args.rows * 2 / 3600:,.0f}-{args.rows * 3 / 3600:,.0f} hours"
    )


if __name__ == "__main__":
    main()
