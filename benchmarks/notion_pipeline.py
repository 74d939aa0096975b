"""Read once: how many Notion requests does a whole pipeline make, against one dry-run read?

The same Notion workspace (300 blog pages with Notion-hosted covers, by default) is served twice
by the fake Notion API at Notion's limit (3 requests/s as a token bucket, bursts of 10, answers
after 50-250 ms), and read:

- by the dry-run flow alone (one read of every page and all its blocks);
- by the pipeline flow into the fake Webflow collection: dry-run, a sample of 3 drafts, the
  approval (given at once through the Prefect API, as the UI does), then the full run.

Reported side by side: Notion API requests (the image host's cover fetches left out), 429s and
wall time of each, and the pipeline's requests as a multiple of one read (the issue's target: at
most 1.15x). At 3 requests/s each read of 300 pages takes about 9 minutes; `--rate 30` runs the
fake (and the job's pace) ten times faster, with the same request counts.
Run: python benchmarks/notion_pipeline.py [--pages 300] [--rate 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("NOTION_TOKEN", "notion-test-token")
os.environ.setdefault("WEBFLOW_TOKEN", "test-token")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchgate import pacer, window_pacer  # noqa: E402
from batchgate.config import load_job  # noqa: E402
from blocks.ledger import open_ledger  # noqa: E402
from tests.fakes.notion_server import NotionFaults, NotionServer, NotionState  # noqa: E402
from tests.fakes.webflow_server import WebflowServer  # noqa: E402

TARGET = 1.15


def job_yaml(where: Path, notion: NotionServer, webflow: WebflowServer, rate: float) -> Path:
    path = where / "notion.yaml"
    path.write_text(
        "source:\n"
        "  type: notion\n"
        f"  base_url: {notion.base_url}\n"
        f"  database_id: {notion.state.database_id}\n"
        "  token: ${NOTION_TOKEN}\n"
        "  filter: {Status: Published}\n"
        f"  requests_per_second: {rate:g}\n"
        "destination:\n"
        "  type: webflow\n"
        f"  base_url: {webflow.base_url}\n"
        f"  collection_id: {webflow.state.collection_id}\n"
        "  token: ${WEBFLOW_TOKEN}\n"
        "  rate_per_minute: 60000\n"
        "  publish: true\n"
        "validation: {preset: blog}\n"
        f"ledger: {{path: {where / 'ledger.db'}}}\n"
        "network: {allow_private_hosts: true}   # the covers are served by the test server\n"
    )
    return path


def dry_run_alone(job: Any) -> dict[str, Any]:
    from flows.dry_run import dry_run

    report = dry_run(job)
    return {"pages": report["total"]}


def whole_pipeline(job: Any) -> dict[str, Any]:
    from flows.pipeline import pipeline
    from tests.test_sample_pipeline import answer_when_paused

    ledger = open_ledger(job.ledger)
    reviewer = answer_when_paused(ledger, approve=True, notes="benchmark")
    state = pipeline(job, approval_poll_s=1, return_state=True)
    reviewer.join(60)
    (run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    if not state.is_completed() or run["outcome"] != "complete":
        raise SystemExit(f"the pipeline did not complete: {run['outcome']}: {run['message']}")
    full = ledger.runs_of(run["run_id"], mode="full")[0]
    return {"pages": int(full["total"] or 0)}


def measure(name: str, pages: int, rate: float, run: Any) -> dict[str, Any]:
    pacer._PACERS.clear()  # each run starts at the full pace, as a new process would
    window_pacer._PACERS.clear()
    state = NotionState(window_requests=int(rate * 60), faults=NotionFaults(latency=(0.05, 0.25)))
    with NotionServer(state) as notion, WebflowServer() as webflow:
        notion.add_pages(pages, seed=9, hosted=True)
        with tempfile.TemporaryDirectory() as where:
            job = load_job(job_yaml(Path(where), notion, webflow, rate))
            started = time.monotonic()
            result = run(job)
            seconds = time.monotonic() - started
        requests = [r for r in notion.state.requests if r[2].startswith("/v1/")]
    statuses = Counter(status for *_, status in requests)
    row = {"run": name, "pages": result["pages"], "requests": len(requests),
           "throttled": statuses[429], "seconds": seconds}  # fmt: skip
    print(f"{name:<16} {row['pages']:>5} pages {len(requests):>6} Notion requests "
          f"({statuses[429]} x 429) in {seconds:7.1f} s", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=3.0,
                        help="the fake's limit and the job's pace, requests/s (Notion: 3)")  # fmt: skip
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    print(f"Notion at {args.rate:g} requests/s, {args.pages} pages with hosted covers", flush=True)
    with prefect_test_harness(server_startup_timeout=120):
        read = measure("dry-run alone", args.pages, args.rate, dry_run_alone)
        whole = measure("pipeline", args.pages, args.rate, whole_pipeline)
    ratio = whole["requests"] / read["requests"]
    print(f"\nThe pipeline made {ratio:.3f}x the Notion requests of one dry-run read "
          f"({whole['requests']} against {read['requests']}; target at most {TARGET}x) and took "
          f"{whole['seconds'] / read['seconds']:.2f}x its wall time "
          f"({whole['seconds']:.0f} s against {read['seconds']:.0f} s).")  # fmt: skip
    print(f"figure: notion_requests_ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
