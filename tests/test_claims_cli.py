"""README claims about the command line, each run as a real `batchgate` process against the real
servers the suite starts: a Prefect API, the fake Webflow API and SQLite files.

The pipeline timing out without a terminal (exit 6), the sync watermark after a failed and a
partial sync, a skipped dead letter written by a later full run, the DLQ views masking
environment secrets by their variable's name, and the other sentences of "The pipeline and the
approval gate", "The full run" and "Rolling a run back" no other test checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from batchgate.config import LedgerConfig, load_job
from blocks.factory import source_for
from blocks.ledger import open_ledger
from tests.conftest import blog_row, copy_example
from tests.fakes.base import ThreadedServer
from tests.fakes.webflow_server import Faults, WebflowServer, WebflowState, _Handler, blog_fields
from tests.test_full_flow import webflow_job
from tests.test_sample_pipeline import cms_rows

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
MASK = "**********"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")  # load_job here expands the job's ${VAR}s


def env(prefect_api: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**base, "PREFECT_API_URL": prefect_api, "WEBFLOW_TOKEN": "test-token", **extra}


def run(prefect_api: str, cwd: Path, *args: str, **extra: str) -> tuple[int, str]:
    """`batchgate ARGS` in its own process with no terminal: stdin is /dev/null, and the output
    goes to a file (a temporary Prefect server left behind cannot hold a pipe open)."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log", dir=cwd, delete=False) as log:
        process = subprocess.run([BATCHGATE, *args], cwd=cwd, env=env(prefect_api, **extra),
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 text=True, timeout=600, check=False)  # fmt: skip
    return process.returncode, Path(log.name).read_text()


def writes(server: Any, since: int) -> list[tuple[str, str, int]]:
    """The write requests the fake received after the `since`-th request: (method, path, status),
    the path without its query (writes send skipInvalidFiles=false)."""
    return [(method, path.split("?")[0], status)
            for _, method, path, status in server.state.requests[since:]
            if method in ("POST", "PATCH", "DELETE")]  # fmt: skip


# --- the pipeline's exit 6 ------------------------------------------------------------------------


def test_pipeline_without_a_terminal_times_out_with_exit_6_and_leaves_the_drafts(
    prefect_api: str, tmp_path: Path
) -> None:
    """README: "Timeout (`--timeout`): the run ends Failed with the outcome `timed-out` (exit 6),
    and the drafts stay for review; its message says how to roll them back." and "Without a
    terminal it prints the approve/reject commands and waits"."""
    copy_example(tmp_path / "blog")  # 3 of its items are blocked: --allow-blocked goes on
    code, out = run(prefect_api, tmp_path, "pipeline", "--job", "blog/job.yaml",
                    "--allow-blocked", "--timeout", "3")  # fmt: skip
    assert code == 6, out[-3000:]
    assert "Traceback" not in out
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / ".batchgate" / "ledger.db")))
    (pipeline,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert pipeline["outcome"] == "timed-out"
    (sample,) = ledger.runs_of(pipeline["run_id"], mode="sample")
    assert not ledger.runs_of(pipeline["run_id"], mode="full")  # nothing beyond the sample
    flow_run = httpx.get(f"{prefect_api}/flow_runs/{pipeline['flow_run_id']}").json()
    assert flow_run["state"]["type"] == "FAILED"
    # no terminal: it said how to answer, and waited
    assert "No terminal to ask in" in out
    assert f"batchgate approve {pipeline['flow_run_id']}" in out
    assert f"batchgate reject {pipeline['flow_run_id']}" in out
    # the outcome line names the rollback command for the drafts
    assert f"Pipeline {pipeline['run_id']}: timed-out." in out
    assert f"batchgate rollback {sample['run_id']}" in out
    drafts = cms_rows(tmp_path)
    sampled = {r["item_id"] for r in ledger.item_rows(sample["run_id"])}
    assert len(drafts) == 3 and {r["source_id"] for r in drafts} == sampled
    assert all(r["draft"] for r in drafts)  # drafts, left for review

    # the command it printed undoes them
    code, undone = run(prefect_api, tmp_path, "rollback", sample["run_id"])
    assert code == 0, undone[-2000:]
    assert cms_rows(tmp_path) == []


# --- sync: the watermark after a failed and a partial sync -----------------------------------------


def test_a_failed_sync_keeps_the_watermark_and_a_partial_one_moves_it(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README: "the watermark is when the last successful (complete or partial-success) sync of
    this job's source started; a sync reads only the pages edited since then" and "Failed items
    stay in the dead-letter queue for `batchgate dlq retry`; the watermark moves on"."""
    rows = [blog_row(n, last_edited="2025-01-01T00:00:00Z") for n in range(1, 21)]
    write_csv(rows)
    with WebflowServer() as server:
        # no circuit breaker: a run with half its items refused ends failed, not aborted
        path = webflow_job(tmp_path, server, batch=", pause_at: 1.0, abort_at: 1.0")
        job = load_job(path)
        ledger = open_ledger(job.ledger)

        def watermark() -> datetime | None:
            return ledger.watermark(job.name, source_for(job).path)

        def sync(code: int) -> dict[str, Any]:
            before = {r["run_id"] for r in ledger.runs(100)}
            got, out = run(prefect_api, tmp_path, "sync", "--job", str(path), "--overlap", "0")
            assert got == code, out[-3000:]
            (new,) = [
                r for r in ledger.runs(100) if r["mode"] == "sync" and r["run_id"] not in before
            ]
            return new

        def edit(numbers: range | list[int], summary: str) -> None:
            now = datetime.now(UTC).isoformat()
            for n in numbers:
                rows[n - 1] = blog_row(n, summary=summary, last_edited=now)
            write_csv(rows)

        def summaries() -> dict[str, str]:
            return {i["fieldData"]["slug"]: i["fieldData"].get("post-summary")
                    for i in server.items.values()}  # fmt: skip

        first = sync(0)  # the first sync reads everything
        assert first["outcome"] == "complete" and first["total"] == 20
        mark = watermark()
        assert mark is not None and mark.replace(tzinfo=None) == first["started_at"].replace(
            tzinfo=None
        )

        # 10 items edited; half of them refused: 50% is below the threshold, the sync fails
        edit(range(1, 11), "Edited once.")
        server.state.faults = Faults(
            bad_request_slugs={f"post-number-{n}" for n in (1, 3, 5, 7, 9)}
        )
        failed = sync(4)
        assert (failed["outcome"], failed["total"], failed["succeeded"], failed["failed"]) == (
            "failed", 10, 5, 5
        )  # fmt: skip
        assert watermark() == mark  # a failed sync does not move it

        # the next sync reads the same 10 items again; one is still refused: partial success
        server.state.faults = Faults(bad_request_slugs={"post-number-9"})
        before = len(server.state.requests)
        partial = sync(3)
        assert partial["outcome"] == "partial-success"
        assert (partial["total"], partial["succeeded"], partial["failed"]) == (10, 9, 1)
        assert partial["unchanged"] == 5  # the even ones, written by the failed sync
        patched = writes(server, before)
        assert {w[0] for w in patched} == {"PATCH"}  # updates in place, nothing created
        assert len([w for w in patched if w[2] < 300]) == 4  # p-001, p-003, p-005, p-007
        got = summaries()
        assert all(got[f"post-number-{n}"] == "Edited once." for n in range(1, 11) if n != 9)
        assert got["post-number-9"] == "A summary."
        moved = watermark()
        assert moved is not None and moved > mark  # a partial sync moves it
        assert moved.replace(tzinfo=None) == partial["started_at"].replace(tzinfo=None)

        # the next sync reads only what was edited since: one item; p-009 waits in the DLQ
        server.state.faults = Faults()
        edit([15], "Edited after the partial sync.")
        before = len(server.state.requests)
        last = sync(0)
        assert (last["outcome"], last["total"], last["succeeded"], last["failed"]) == (
            "complete", 1, 1, 0
        )  # fmt: skip
        (patch,) = writes(server, before)
        item_15 = next(
            i for i in server.items.values() if i["fieldData"]["slug"] == "post-number-15"
        )
        assert patch[:2] == (
            "PATCH",
            f"/v2/collections/{server.state.collection_id}/items/{item_15['id']}",
        )
        assert summaries()["post-number-15"] == "Edited after the partial sync."
        assert summaries()["post-number-9"] == "A summary."
        partial_full = partial["run_id"]
        (child,) = ledger.runs_of(partial_full, mode="full")
        (entry,) = ledger.dlq_entries(child["run_id"])
        assert entry["item_id"] == "p-009" and entry["state"] == "open"
        assert watermark() > moved


# --- a skipped dead letter and the next full run -------------------------------------------------


def test_a_skipped_item_stays_unwritten_and_a_later_full_run_writes_it(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README: "A skip closes an entry with its reason; the item stays unwritten, and a later full
    run tries it again." Also the --json shape of "The full run", dead letters included."""
    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer(faults=Faults(bad_request_slugs={"post-number-4"})) as server:
        job = webflow_job(tmp_path, server, batch=", pause_at: 1.0, abort_at: 1.0")
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "first.json")
        assert code == 3, out[-3000:]  # 9/10 = 90%: partial success
        first = json.loads((tmp_path / "first.json").read_text())
        assert set(first) >= {"run_id", "mode", "status", "total", "succeeded", "failed",
                              "skipped", "pending", "success_rate", "duration_s", "dlq"}  # fmt: skip
        assert (first["mode"], first["status"], first["total"], first["succeeded"],
                first["failed"], first["skipped"], first["pending"], first["success_rate"]) == (
            "full", "partial-success", 10, 9, 1, 0, 0, 90.0
        )  # fmt: skip
        (dead,) = first["dlq"]
        assert set(dead) >= {"item_id", "error_type", "status_code", "attempts", "message"}
        assert (dead["item_id"], dead["error_type"], dead["status_code"], dead["attempts"]) == (
            "p-004", "validation", 400, 1
        )  # fmt: skip

        code, out = run(prefect_api, tmp_path, "dlq", "skip", "p-004", "--reason",
                        "rewrite pending in the source", "--job", str(job))  # fmt: skip
        assert code == 0, out
        assert f"Skipped p-004 in run {first['run_id']}" in out
        ledger = open_ledger(load_job(job).ledger)
        (entry,) = ledger.dlq_entries(first["run_id"], ["p-004"], states=None)
        assert entry["state"] == "skipped" and entry["note"] == "rewrite pending in the source"
        assert "post-number-4" not in server.state.slugs()  # the item stays unwritten

        server.state.faults = Faults()  # the fault is gone
        before = len(server.state.requests)
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "second.json")
        assert code == 0, out[-3000:]
        second = json.loads((tmp_path / "second.json").read_text())
        assert (second["status"], second["succeeded"], second["failed"], second["dlq"]) == (
            "complete", 10, 0, []
        )  # fmt: skip
        created = writes(server, before)
        slugs = Counter(server.state.slugs())
    assert [(m, s) for m, _, s in created] == [("POST", 202)]  # p-004, and nothing else
    assert len(slugs) == 10 and max(slugs.values()) == 1 and slugs["post-number-4"] == 1
    rows = {r["item_id"]: r["status"] for r in ledger.item_rows(second["run_id"])}
    assert rows["p-004"] == "succeeded"


# --- environment secrets masked in the DLQ views -------------------------------------------------


LEAKS = {"CDN_TOKEN": "cdn-tok-5b7e11", "RELEASE_SIGNING_SECRET": "sign-sec-82ac3f",
         "UPSTREAM_PROXY_PASSWORD": "proxy-pw-c41d9e"}  # fmt: skip
VISIBLE = {"BUILD_LABEL": "build-label-77f0a2"}  # not named like a secret: shown as it is


class _LeakyHandler(_Handler):
    """The fake Webflow API behind a careless proxy whose 400 answers print its own credentials:
    values batchgate's job never held, which only their variables' names mark as secrets."""

    def _error(self, status: int, code: str, message: str, method: str,
               details: list[dict[str, str]] | None = None) -> None:  # fmt: skip
        leaked = " ".join([*LEAKS.values(), *VISIBLE.values()])
        super()._error(status, code, f"{message} (upstream {leaked})", method, details)


def test_dlq_views_and_exports_mask_environment_secrets_by_their_variable_name(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README: an export "masks any `Bearer` value and the value of every `*TOKEN`, `*SECRET`
    and `*PASSWORD` environment variable"; `dlq list | inspect` show the same masked text.
    tests/test_secrets.py covers the job's own secrets; these are not the job's."""
    write_csv([blog_row(n) for n in range(1, 7)])
    state = WebflowState("c0ffee0000000000000000bb", "test-token", blog_fields(), 1000, 60.0,
                         Faults(bad_request_slugs={"post-number-2", "post-number-5"}))  # fmt: skip
    with ThreadedServer(_LeakyHandler, state) as server:
        job = tmp_path / "wf.yaml"
        job.write_text(
            "source: {type: file, path: posts.csv}\n"
            f"destination: {{type: webflow, base_url: '{server.base_url}/v2', "
            f"collection_id: {state.collection_id}, token: '${{WEBFLOW_TOKEN}}', "
            "rate_per_minute: 60000, items_per_request: 1}\n"
            "validation: {preset: blog, allowed_categories: [Data]}\n"
            "batch: {items_per_chunk: 5, backoff_base_s: 0.05, success_threshold: low}\n"
            f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
        )
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), **LEAKS, **VISIBLE)
    assert code == 3, out[-3000:]
    ledger = open_ledger(load_job(job).ledger)
    (full_run,) = ledger.runs()
    raw = ledger.dlq_entries(full_run["run_id"], states=None)
    assert sorted(e["item_id"] for e in raw) == ["p-002", "p-005"]
    # the secrets ARE in the ledger's raw data: only the views can hide them
    raw_text = json.dumps(raw, default=str)
    assert all(value in raw_text for value in LEAKS.values())
    assert all(all(v in e["message"] for v in LEAKS.values()) for e in raw)

    def shown(*args: str) -> str:
        code, out = run(prefect_api, tmp_path, "dlq", *args, "--job", str(job), **LEAKS, **VISIBLE)
        assert code == 0, out
        return out

    texts = {
        "list": shown("list", "--run", full_run["run_id"]),
        "inspect": shown("inspect", "p-005", "--run", full_run["run_id"]),
    }
    assert "p-002" in texts["list"] and "Attempt 1 (" in texts["inspect"]
    for fmt in ("csv", "json", "parquet"):
        out_file = tmp_path / f"dlq.{fmt}"
        shown("export", "--run", full_run["run_id"], "--format", fmt, "-o", str(out_file))
        frame = getattr(pd, f"read_{fmt}")(out_file)
        assert sorted(frame["item_id"]) == ["p-002", "p-005"]
        texts[fmt] = frame.to_json() + out_file.read_bytes().decode("latin-1")
    masked = f"(upstream {MASK} {MASK} {MASK} {VISIBLE['BUILD_LABEL']})"
    for view, text in texts.items():
        assert not [v for v in LEAKS.values() if v in text], view
        assert VISIBLE["BUILD_LABEL"] in text, view
    for view in ("list", "inspect"):
        assert masked in texts[view], view
    for fmt in ("csv", "json", "parquet"):
        frame = getattr(pd, f"read_{fmt}")(tmp_path / f"dlq.{fmt}")
        assert all(masked in m for m in frame["message"]), fmt
        assert all(masked in a["message"] for h in frame["history"] for a in json.loads(h)), fmt


# --- the other claims of "The pipeline and the approval gate", "The full run", "Rolling back" ------


def test_the_review_form_requires_an_explicit_approve() -> None:
    """README: `SampleReview` has "`approve: bool` (required, so nobody approves or rejects by
    leaving a default) and `notes: str`"."""
    from flows.pipeline import SampleReview

    fields = SampleReview.model_fields
    assert fields["approve"].is_required() and fields["approve"].annotation is bool
    assert not fields["notes"].is_required() and fields["notes"].annotation is str
    with pytest.raises(ValueError, match="approve"):
        SampleReview(notes="looks fine")


def test_pipeline_yes_ends_with_the_full_runs_outcome_exit_3(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README: `--yes` approves unattended, and "the pipeline ends with its outcome (exit 0, 3 or
    4 as for `full`)": here one item refused by the destination, 9/10 = partial success."""
    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer(faults=Faults(bad_request_slugs={"post-number-10"})) as server:
        job = webflow_job(tmp_path, server, batch=", pause_at: 1.0, abort_at: 1.0")
        code, out = run(prefect_api, tmp_path, "pipeline", "--job", str(job), "--yes",
                        "--sample-ids", "p-001", "p-002", "p-003")  # fmt: skip
        slugs = Counter(server.state.slugs())
    assert code == 3, out[-3000:]
    assert "--yes given: approving the sample." in out
    ledger = open_ledger(load_job(job).ledger)
    (pipeline,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert pipeline["outcome"] == "partial-success"
    assert f"Pipeline {pipeline['run_id']}: partial-success." in out
    (full_run,) = ledger.runs_of(pipeline["run_id"], mode="full")
    assert (full_run["outcome"], full_run["succeeded"], full_run["failed"]) == (
        "partial-success", 9, 1
    )  # fmt: skip
    assert len(slugs) == 9 and max(slugs.values()) == 1 and "post-number-10" not in slugs
    flow_run = httpx.get(f"{prefect_api}/flow_runs/{pipeline['flow_run_id']}").json()
    assert flow_run["state"]["type"] == "COMPLETED"


@pytest.mark.parametrize(
    ("case", "refused", "batch", "token", "code", "status"),
    [
        # the circuit breaker (failure rate >= abort_at 0.8 after a chunk) aborts: exit 4
        ("breaker", {f"post-number-{n}" for n in range(1, 6)}, "", "test-token", 4, "aborted"),
        # critical = 100: one failure in ten fails the run
        ("critical", {"post-number-3"}, ", pause_at: 1.0, abort_at: 1.0, success_threshold: critical",
         "test-token", 4, "failed"),
        # low = any success: 2 of 10 written is a partial success
        ("low", {f"post-number-{n}" for n in (1, 2, 3, 4, 6, 7, 8, 9)},
         ", pause_at: 1.0, abort_at: 1.0, success_threshold: low", "test-token", 3,
         "partial-success"),
    ],
)  # fmt: skip
def test_full_exit_codes_for_aborts_and_named_thresholds(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path],
    case: str, refused: set[str], batch: str, token: str, code: int, status: str,
) -> None:  # fmt: skip
    """README's exit-code table: "4 failed (below the threshold) or aborted (circuit breaker ...)",
    "the rest stay `pending` and the report says why", and "`critical` = 100 ... `low` = any
    success"."""
    write_csv([blog_row(n) for n in range(1, 21 if case == "breaker" else 11)])
    with WebflowServer(faults=Faults(bad_request_slugs=refused)) as server:
        job = webflow_job(tmp_path, server, batch=batch)
        got, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "out.json",
                       WEBFLOW_TOKEN=token)  # fmt: skip
        written = len(server.items)
    assert got == code, out[-3000:]
    assert "Traceback" not in out
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == status
    assert written == summary["succeeded"]
    if case == "breaker":
        # batch 1 all refused: aborted. The batches already in flight (two at once) finish; the
        # rest are never started: they stay pending, and the report says why
        assert summary["failed"] == 5 and summary["pending"] >= 5
        assert summary["succeeded"] + summary["pending"] == 15
        assert "🛑 BATCH ABORTED" in out and "Reason: circuit breaker: 5/5 items" in out
    else:
        assert written == {"critical": 9, "low": 2}[case]


def test_full_stopped_by_http_401_exits_4(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README's exit-code table: 4 for "a fatal error such as HTTP 401"."""
    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer() as server:
        job = webflow_job(tmp_path, server)
        code, out = run(
            prefect_api, tmp_path, "full", "--job", str(job), WEBFLOW_TOKEN="wrong-token"
        )
        assert server.items == {}
    assert code == 4, out[-3000:]
    assert "Traceback" not in out and "wrong-token" not in out


def test_full_stopped_by_http_401_reports_why_on_the_console_and_in_the_json(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README, "The full run": the final report goes to the console and, with `--json`, to a
    file; the table's exit 4 names "aborted (... a fatal error such as HTTP 401)"."""
    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer() as server:
        job = webflow_job(tmp_path, server)
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "out.json",
                        WEBFLOW_TOKEN="wrong-token")  # fmt: skip
    assert code == 4, out[-3000:]
    assert "HTTP 401" in out  # the person at the terminal learns why
    assert (tmp_path / "out.json").exists(), out  # it said "JSON report: out.json"
    assert json.loads((tmp_path / "out.json").read_text())["status"] == "aborted"


def test_rollback_cli_undoes_a_webflow_run_once_and_the_next_full_writes_it_again_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """README, "Rolling a run back": it reads the run's job from the ledger (the Webflow token
    from WEBFLOW_TOKEN); "It is idempotent: a second call finds nothing left and says so.
    Rolled-back items leave the destination map, so the next full run writes them again, once"."""
    write_csv([blog_row(n) for n in range(1, 6)])
    with WebflowServer() as server:
        job = webflow_job(tmp_path, server)
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "full.json")
        assert code == 0, out[-3000:]
        run_id = json.loads((tmp_path / "full.json").read_text())["run_id"]
        assert len(server.items) == 5
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        code, out = run(prefect_api, tmp_path, "rollback", run_id, "--ledger", ledger_url)
        assert code == 0, out[-3000:]
        assert "↩️  Rollback Complete" in out and f"Run: {run_id}" in out
        assert "Items: 5 rolled back" in out and "0 failed" in out
        assert server.items == {}
        code, again = run(prefect_api, tmp_path, "rollback", run_id, "--ledger", ledger_url)
        assert code == 0, again[-3000:]
        assert f"Run {run_id}: nothing to roll back" in again
        before = len(server.state.requests)
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "rerun.json")
        assert code == 0, out[-3000:]
        created = writes(server, before)
        slugs = Counter(server.state.slugs())
    assert [m for m, _, _ in created] == ["POST"] * 5
    assert len(slugs) == 5 and max(slugs.values()) == 1
    assert json.loads((tmp_path / "rerun.json").read_text())["succeeded"] == 5
