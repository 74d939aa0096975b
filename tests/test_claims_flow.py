"""README claims of the full run, each shown by a real flow run against the fake Webflow API and a
real Prefect API: rate pacing, a 429's Retry-After holding every writer, the circuit breaker's
pause and abort, the run's artifacts, and restoring updated items on rollback."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchgate.config import load_job
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.fakes.base import ThreadedServer
from tests.fakes.webflow_server import Faults, WebflowServer, WebflowState, _Handler, blog_fields

pytestmark = pytest.mark.prefect

WRITES = ("POST", "PATCH")


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def job_file(tmp_path: Path, server: WebflowServer, rate: int = 60000, batch: str = "") -> Path:
    """A Webflow job like test_full_flow's, with the destination's rate and batch keys chosen."""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        "destination:\n"
        "  type: webflow\n"
        f"  base_url: {server.base_url}\n"
        f"  collection_id: {server.state.collection_id}\n"
        "  token: ${WEBFLOW_TOKEN}\n"
        f"  rate_per_minute: {rate}\n"
        "  items_per_request: 1  # these claims count one request per item\n"
        "  publish: false\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
        f"batch: {{items_per_chunk: 5, backoff_base_s: 0.05, attempt_timeout_s: 5.0{batch}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


def item_writes(server: WebflowServer) -> list[tuple[float, str, str, int]]:
    """The server's log of item writes (creates and updates), in arrival order."""
    with server.state.lock:
        log = list(server.state.requests)
    return [r for r in log if r[1] in WRITES and "/items" in r[2] and "/publish" not in r[2]]


def flow_run_records(flow_run_id: Any) -> tuple[dict[str, Any], list[str]]:
    """The flow run's artifacts by key (the progress one under "progress") and its log messages,
    read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key: dict[str, Any] = {}
    for artifact in artifacts:
        key = artifact.key or artifact.type
        assert key not in by_key, f"two {key} artifacts in one run"
        by_key[key] = artifact
    return by_key, [log.message for log in logs]


# --- 1. rate pacing inside a real flow run ------------------------------------------------------


def test_a_full_run_paces_its_writes_to_the_destination_rate_with_no_429(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    rate, window = 120, 10.0  # per minute; the server allows rate * window / 60 per window
    write_csv([blog_row(n) for n in range(1, 51)])
    with WebflowServer(rate_limit=int(rate * window / 60), window_s=window) as server:
        summary = full(load_job(job_file(tmp_path, server, rate=rate)))
        with server.state.lock:
            log = list(server.state.requests)
        slugs = server.state.slugs()
    assert summary["status"] == "complete" and summary["succeeded"] == 50
    assert sorted(slugs) == sorted(f"post-number-{n}" for n in range(1, 51))
    assert [r for r in log if r[3] == 429] == []  # never over the server's limit
    writes = [r[0] for r in log if r[1] == "POST"]
    assert len(writes) == 50
    # every request (reads included) between the first write and the last counts against the limit
    during = [r for r in log if writes[0] <= r[0] <= writes[-1]]
    measured = (len(during) - 1) / (writes[-1] - writes[0]) * 60
    fraction = measured / rate
    print(f"pacing: {measured:.1f} requests/min of {rate} ({fraction:.3f})")
    assert 0.6 <= fraction <= 1.0, f"{measured:.1f} requests/min against a limit of {rate}"


# --- 2. a 429's Retry-After holds every writer -------------------------------------------------


class _ThrottleOnce(_Handler):
    """The fake Webflow API, answering one write (the Nth) with 429 and Retry-After."""

    nth_write = 0
    retry_after = 2
    _count_lock = threading.Lock()

    def _write_faults(self, method: str, slug: str | None) -> bool:
        with self._count_lock:
            self.state.writes_seen = getattr(self.state, "writes_seen", 0) + 1  # type: ignore[attr-defined]
            throttle = self.state.writes_seen == self.nth_write  # type: ignore[attr-defined]
        if throttle:
            self.state.throttled_slug = slug  # type: ignore[attr-defined]
            self._send(429, {"message": "Too Many Requests", "code": "too_many_requests",
                             "externalReference": None, "details": []}, method,
                       {"Retry-After": str(self.retry_after)})  # fmt: skip
            return True
        return super()._write_faults(method, slug)


class ThrottlingWebflow(WebflowServer):
    def __init__(self, nth_write: int, retry_after: int) -> None:
        state = WebflowState(uuid.uuid4().hex[:24], "test-token", blog_fields(), 100000, 60.0,
                             Faults())  # fmt: skip
        handler = type("ThrottleOnce", (_ThrottleOnce,),
                       {"nth_write": nth_write, "retry_after": retry_after})  # fmt: skip
        ThreadedServer.__init__(self, handler, state)


def test_a_429_retry_after_holds_every_writer_of_the_destination(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 21)])
    hold = 2
    # 300/min: writes 0.2 s apart, 15 items in flight, so many writers wait for a slot at the 429
    with ThrottlingWebflow(nth_write=6, retry_after=hold) as server:
        job = load_job(job_file(tmp_path, server, rate=300))
        summary = full(job)
        writes = item_writes(server)
        throttled_slug = server.state.throttled_slug
        slugs = server.state.slugs()
    assert summary["status"] == "complete" and summary["succeeded"] == 20
    assert sorted(slugs) == sorted(f"post-number-{n}" for n in range(1, 21))
    (at,) = [t for t, _, _, status in writes if status == 429]
    after = [t - at for t, _, _, status in writes if t > at]
    # a write whose slot was given before the 429 reached the client may still arrive just after
    in_flight = [d for d in after if d < 0.15]
    held = [d for d in after if 0.15 <= d < hold]
    assert held == [], f"writes {held} s after a 429 with Retry-After: {hold}"
    assert len(in_flight) <= 1
    # the run went on after the hold, with more writers than the one that got the 429
    assert len([d for d in after if d >= hold]) >= 20 - 6
    ledger = open_ledger(job.ledger)
    (row,) = [r for r in ledger.item_rows(summary["run_id"])
              if r["item_id"] == f"p-{int(throttled_slug.rsplit('-', 1)[1]):03d}"]  # fmt: skip
    assert row["status"] == "succeeded"


# --- 3. the circuit breaker -------------------------------------------------------------------


def test_circuit_breaker_pauses_between_chunks_warns_and_goes_on(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from flows.full import full

    pause = 3
    write_csv([blog_row(n) for n in range(1, 31)])
    # batch 2 (items 6-10): 3 of 5 fail = 60%, at or over pause_at 0.5, under abort_at 0.8
    faults = Faults(bad_request_slugs={f"post-number-{n}" for n in (6, 7, 8)})
    with WebflowServer(faults=faults) as server:
        job = load_job(job_file(tmp_path, server, batch=f", pause_seconds: {pause}"))
        state = full(job, console_progress=True, return_state=True)
        writes = item_writes(server)
        slugs = set(server.state.slugs())
    summary = state.result()
    assert state.is_completed() and summary["status"] == "partial-success"
    assert (summary["succeeded"], summary["failed"], summary["pending"]) == (27, 3, 0)
    failing = {f"post-number-{n}" for n in (6, 7, 8)}
    assert slugs == {f"post-number-{n}" for n in range(1, 31)} - failing
    # one write per item (the 400s are never retried); chunks 1-4 are written before the pause
    # ends, and chunk 5 starts only after it, which began once chunk 2's writes were all answered
    assert len(writes) == 30
    times = [t for t, *_ in writes]
    assert times[20] - times[9] >= pause, [
        round(b - a, 2) for a, b in zip(times, times[1:], strict=False)
    ]
    message = f"Circuit breaker triggered - 60% of batch 2 failed; pausing for {pause} seconds"
    assert message in capsys.readouterr().out
    _, logs = flow_run_records(state.state_details.flow_run_id)
    assert sum(message in m for m in logs) == 1  # only batch 2 paused the run


def test_circuit_breaker_abort_leaves_the_rest_pending_with_the_reason(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 41)])
    # batch 2 (items 6-10): all fail, at or over abort_at 0.8
    faults = Faults(bad_request_slugs={f"post-number-{n}" for n in range(6, 11)})
    out = tmp_path / "full.json"
    with WebflowServer(faults=faults) as server:
        job = load_job(job_file(tmp_path, server))
        state = full(job, json_path=str(out), return_state=True)
        slugs = set(server.state.slugs())
        writes = item_writes(server)
    reason = ("circuit breaker: 5/5 items (100%) of batch 2 failed (validation), at or over the "
              "abort threshold of 80%")  # fmt: skip
    assert state.is_failed() and reason in state.message
    # batches 3 and 4 were in flight when batch 2 was judged; 5-8 never started
    assert slugs == {f"post-number-{n}" for n in (*range(1, 6), *range(11, 21))}
    assert len(writes) == 20
    payload = json.loads(out.read_text())
    assert (payload["status"], payload["succeeded"], payload["failed"], payload["pending"]) == (
        "aborted", 15, 5, 20)  # fmt: skip
    ledger = open_ledger(job.ledger)
    run = ledger.run(payload["run_id"])
    assert run["outcome"] == "aborted" and run["message"] == reason
    pending = sorted(r["item_id"] for r in ledger.item_rows(payload["run_id"])
                     if r["status"] == "pending")  # fmt: skip
    assert pending == [f"p-{n:03d}" for n in range(21, 41)]
    artifacts, _ = flow_run_records(state.state_details.flow_run_id)
    assert f"**Reason:** {reason}" in artifacts["full-report"].data
    assert "| Pending | 20 |" in artifacts["full-report"].data
    assert float(artifacts["progress"].data) == 50.0  # 20 of 40 items done when it stopped


# --- 4. the full run's artifacts ----------------------------------------------------------------


def test_full_run_progress_report_and_dead_letter_artifacts_read_back_from_prefect(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 21)])
    faults = Faults(bad_request_slugs={"post-number-3"}, error_slugs={"post-number-12"})
    with WebflowServer(faults=faults) as server:
        job = load_job(job_file(tmp_path, server))
        state = full(job, return_state=True)
    summary = state.result()
    assert summary["status"] == "partial-success"  # 18/20 = 90%
    artifacts, _ = flow_run_records(state.state_details.flow_run_id)
    assert set(artifacts) == {"progress", "full-report", "dead-letter-queue"}

    progress = artifacts["progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert summary["run_id"] in progress.description

    report = artifacts["full-report"]
    assert report.type == "markdown" and summary["run_id"] in report.data
    for row in ("| Status | **partial-success** |", "| Total items | 20 |",
                "| Succeeded | 18 (0 unchanged) |", "| Failed (DLQ) | 2 |", "| Pending | 0 |",
                "| Success rate | 90.0% (threshold 90%) |"):  # fmt: skip
        assert row in report.data, (row, report.data)
    dlq_lines = [line for line in report.data.splitlines() if "p-003" in line or "p-012" in line]
    assert len(dlq_lines) == 2
    assert "| validation | 400 | 1 |" in dlq_lines[0] and "| api-error | 500 | 4 |" in dlq_lines[1]

    table = artifacts["dead-letter-queue"]
    assert table.type == "table"
    rows = {r["item_id"]: r for r in json.loads(table.data)}
    assert set(rows) == {"p-003", "p-012"}
    assert {k: rows["p-003"][k] for k in ("item_name", "error_type", "status_code", "attempts")} == {
        "item_name": "Post number 3", "error_type": "validation", "status_code": 400, "attempts": 1}  # fmt: skip
    assert {k: rows["p-012"][k] for k in ("item_name", "error_type", "status_code", "attempts")} == {
        "item_name": "Post number 12", "error_type": "api-error", "status_code": 500, "attempts": 4}  # fmt: skip
    assert "HTTP 400" in rows["p-003"]["message"] and "HTTP 500" in rows["p-012"]["message"]


# --- 5. restoring updated Webflow items on rollback ---------------------------------------------


def test_rollback_restores_updated_webflow_items_exactly_and_keeps_the_first_runs_creates(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer() as server:
        job = load_job(job_file(tmp_path, server))
        first = full(job)
        assert first["succeeded"] == 10
        before = copy.deepcopy({i: item["fieldData"] for i, item in server.items.items()})
        edited = {n: blog_row(n, title=f"Post number {n}, revised", summary="Revised.",
                              category="Cloud", body_markdown="# New\n\nRewritten text, longer.",
                              last_edited="2025-11-02T09:00:00Z")
                  for n in (2, 4, 6, 8)}  # fmt: skip
        write_csv([edited.get(n, blog_row(n)) for n in range(1, 13)])  # and two new items
        second = full(job)
        assert (second["succeeded"], second["unchanged"]) == (12, 6)
        middle = copy.deepcopy({i: item["fieldData"] for i, item in server.items.items()})
        changed = {i for i in before if middle[i] != before[i]}
        assert len(changed) == 4 and len(middle) == 12  # updated in place, two created
        assert {middle[i]["slug"] for i in changed} == {f"post-number-{n}" for n in (2, 4, 6, 8)}
        result = rollback(second["run_id"], job=job)
        after = {i: item["fieldData"] for i, item in server.items.items()}
    assert result["failed"] == 0 and result["conflicts"] == 0
    assert after == before  # updates restored field for field, creates of the second run deleted


@pytest.mark.prefect
def test_rollback_restores_a_field_the_update_added_to_its_absence(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    write_csv([blog_row(1, summary=""), blog_row(2)])  # no summary: no post-summary field
    with WebflowServer() as server:
        job = load_job(job_file(tmp_path, server))
        assert full(job)["succeeded"] == 2
        before = copy.deepcopy({i: item["fieldData"] for i, item in server.items.items()})
        assert sorted("post-summary" in f for f in before.values()) == [False, True]
        write_csv([blog_row(1, summary="Now with a summary."), blog_row(2)])
        second = full(job)
        result = rollback(second["run_id"], job=job)
        after = {i: item["fieldData"] for i, item in server.items.items()}
    assert result["failed"] == 0 and result["conflicts"] == 0
    assert after == before
