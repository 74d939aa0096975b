"""Notifications (issue 14, point 2): the automations `make serve` creates send a sample awaiting
review, a circuit breaker that tripped and a run that ended partial to a webhook, each naming the
flow run, the job and the event. A real Prefect server (its triggers and actions services run in
the test server too), a real pipeline in its own process, and a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batchgate.config import load_job
from blocks.ledger import open_ledger
from deployments import automations
from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer
from tests.test_full_flow import webflow_job

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
TOKEN = "notify-test-token-5ecret"  # must never reach a notification


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.arrived:
                    receiver.bodies.append(body)
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def wait_for(self, ready: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: ready(self.bodies), timeout):
                pytest.fail(f"within {timeout} s the webhook received only: {self.bodies}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """The receiver, with the automations `make serve` creates pointing at it (removed after)."""
    hook = Receiver()
    monkeypatch.setenv("NOTIFY_URL", hook.url)
    assert automations.main([]) == 0
    yield hook
    automations.remove_automations()
    hook.close()


def by_subject(bodies: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    return [b for b in bodies if words in b["subject"]]


def test_automations_are_kept_by_name_and_need_a_notify_url(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.client.orchestration import get_client

    monkeypatch.delenv("NOTIFY_URL", raising=False)
    assert automations.main([]) == 2
    assert "NOTIFY_URL is not set" in capsys.readouterr().err
    names = [n.name for n in automations.NOTICES]
    with get_client(sync_client=True) as client:
        assert not any(client.read_automations_by_name(name) for name in names)
    url = "http://127.0.0.1:9/hook?token=hook-secret"
    monkeypatch.setenv("NOTIFY_URL", url)
    try:
        assert automations.main([]) == 0
        assert automations.main([]) == 0  # again: updated in place, never a second copy
        out = capsys.readouterr().out
        assert "updated" in out and "hook-secret" not in out
        with get_client(sync_client=True) as client:
            found = [client.read_automations_by_name(name) for name in names]
            block = client.read_block_document_by_name(
                automations.BLOCK_NAME, automations.WEBHOOK_SLUG, include_secrets=False
            )
        assert [len(f) for f in found] == [1, 1, 1]
        assert all(f[0].actions[0].block_document_id == block.id for f in found)
        assert "hook-secret" not in json.dumps(block.data)  # the URL is one of its secrets
    finally:
        automations.remove_automations()


def test_review_breaker_and_partial_run_notify_the_webhook_naming_the_run(
    receiver: Receiver,
    prefect_api: str,
    tmp_path: Path,
    write_csv: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", TOKEN)
    write_csv([blog_row(n) for n in range(1, 21)])
    # the sample takes 18-20; the full run's first batch (1-5) has 3 of 5 refused: the breaker
    # pauses it (60% >= pause_at 50%, < abort_at 80%), and 3 of 20 failed ends it partial
    failing = {f"post-number-{n}" for n in (1, 2, 3)}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
           "PREFECT_API_URL": prefect_api, "WEBFLOW_TOKEN": TOKEN}  # fmt: skip
    with WebflowServer(token=TOKEN, faults=Faults(bad_request_slugs=failing)) as server:
        job = webflow_job(tmp_path, server, batch=", retries: 0, pause_at: 0.5, abort_at: 0.8, "
                          "success_threshold: 80")  # fmt: skip
        done = subprocess.run(
            [BATCHGATE, "pipeline", "--job", str(job), "--yes", "--sample-ids", "p-018", "p-019",
             "p-020"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode in (0, 3), done.stdout[-3000:] + done.stderr[-3000:]
    loaded = load_job(job)
    ledger = open_ledger(loaded.ledger)
    pipeline = next(r for r in ledger.runs(20) if r["mode"] == "pipeline")
    full = ledger.runs_of(pipeline["run_id"], mode="full")[0]
    assert full["outcome"] == "partial-success", full

    runs = (pipeline["flow_run_id"], full["flow_run_id"])

    def ours(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The notifications about this test's runs (the server is shared by the session)."""
        return [b for b in got if any(f"Flow run: {r}" in b["body"] for r in runs)]

    receiver.wait_for(lambda got: len(ours(got)) >= 3, timeout=60)
    time.sleep(2)  # anything more (a second breaker, a completed run) would follow at once
    bodies = ours(receiver.bodies)
    review = by_subject(bodies, "awaiting review")
    breaker = by_subject(bodies, "circuit breaker paused the run")
    partial = by_subject(bodies, "run ended partial-success")
    assert (len(review), len(breaker), len(partial), len(bodies)) == (1, 1, 1, 3), bodies
    # each names the flow run to open, the job and the event; never the token
    for body, flow_run_id, event in ((review[0], pipeline["flow_run_id"], "awaiting review"),
                                     (breaker[0], full["flow_run_id"], "circuit breaker"),
                                     (partial[0], full["flow_run_id"], "partial")):  # fmt: skip
        assert f"Flow run: {flow_run_id}" in body["body"], body
        assert f"Job: {loaded.name}" in body["body"] and event in body["body"], body
        assert TOKEN not in json.dumps(body)
    assert f"batchgate approve {pipeline['flow_run_id']}" in review[0]["body"]
    assert "Batch 1: 3 of 5 items failed" in breaker[0]["body"]
    assert "failed 3" in partial[0]["body"] and "dead letters: 3" in partial[0]["body"]
    assert f"batchgate dlq list --run {full['run_id']}" in partial[0]["body"]
    assert_dlq_event(loaded.name, full["run_id"], {"p-001", "p-002", "p-003"})


def assert_dlq_event(job_name: str, run_id: str, item_ids: set[str]) -> None:
    """The dead letters were announced too (no automation notifies of them by default)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    flt = EventFilter(event=EventNameFilter(name=["batchgate.dlq.added"]))
    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            events = [e for e in client.read_events(flt, limit=50).events
                      if e.payload.get("run_id") == run_id]  # fmt: skip
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {i for e in events for i in e.payload["item_ids"]} == item_ids, events
    event = events[0]
    assert event.resource.id == f"batchgate.job.{job_name}"
    roles = {r.role: r.id for r in event.related}
    assert roles["destination"].startswith("batchgate.destination.webflow:")
    assert roles["batchgate-run"] == f"batchgate.run.{run_id}"
    assert roles["flow-run"].startswith("prefect.flow-run.")
