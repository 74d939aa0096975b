"""The four speed figures of group writes and read-once, side by side with the main before them.

Runs, each in its own process and each a ratio measured side by side in one run:
  full_run.py overhead      10,000 items into SQLite: the flow's time over a raw sqlite3 loop's
  full_run.py overhead-pg   the same into PostgreSQL, over a raw psycopg2 loop's
  full_run.py webflow       10,000 items into the fake Webflow at R = 60 requests/min
  notion_pipeline.py        a pipeline's Notion requests over one dry-run read's (300 pages)
  cli_startup.py            `batchgate dry-run` on examples/blog, run a second time

then prints the four figures with their goals and what the main measured before (issue 12).
`--quick` runs Notion at 30 requests/s (the ratio of requests does not depend on the pace).

Usage: python benchmarks/speed.py [--quick]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = [
    ["full_run.py", "overhead"],
    ["full_run.py", "overhead-pg"],
    ["full_run.py", "webflow"],
    ["notion_pipeline.py"],
    ["cli_startup.py"],
]

# (figure, what it is, goal, how it is shown, the main before group writes and read-once)
FIGURES = [
    ("sqlite_flow_over_loop", "SQLite: flow time / raw sqlite3 loop, 10,000 items", "<= 2x",
     "{:.2f}x", "129x (312 s against 2.4 s)"),
    ("postgres_flow_over_loop", "PostgreSQL: flow time / raw psycopg2 loop, 10,000 items",
     "<= 2x", "{:.2f}x", "not measured (one task per item)"),
    ("webflow_of_100R", "Webflow: items/min / (100 x R), R = 60/min", ">= 0.9",
     "{:.1%}", "1.0% (one request per item)"),
    ("notion_requests_ratio", "Notion: pipeline requests / one dry-run read", "<= 1.15x",
     "{:.3f}x", "3x (dry-run, sample, full each read)"),
    ("dry_run_second_s", "batchgate dry-run on examples/blog, second run", "< 5 s",
     "{:.1f} s", "26-33 s"),
]  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    figures: dict[str, float] = {}
    for run in RUNS:
        extra = ["--rate", "30"] if quick and run[0] == "notion_pipeline.py" else []
        cmd = [sys.executable, str(HERE / run[0]), *run[1:], *extra]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("figure: "):
                name, value = line.split()[1:3]
                figures[name] = float(value)
        if process.wait() != 0:
            sys.exit(f"{' '.join(run)} failed with exit code {process.returncode}")
    print("\nThe four figures (issue 12), measured now, beside the main before it:\n")
    print(f"{'figure':<58} {'now':>9} {'goal':>9}   before")
    for key, label, goal, shown, before in FIGURES:
        value = figures.get(key)
        now = shown.format(value) if value is not None else "missing"
        print(f"{label:<58} {now:>9} {goal:>9}   {before}")


if __name__ == "__main__":
    main()
