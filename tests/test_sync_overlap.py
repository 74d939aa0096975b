"""Syncs never overlap (issue 14, point 3). The `sync` deployment of prefect.yaml, deployed with
`prefect deploy` and run by a real process worker: of two runs started together the server
cancels one (concurrency_limit 1, CANCEL_NEW), and a manual `batchgate sync` started while the
other writes waits for the destination's hold, saying so. Each item is written once."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchgate.config import load_job
from blocks.ledger import open_ledger
from tests.conftest import ROOT, blog_row
from tests.fakes.webflow_server import Faults, WebflowServer

pytestmark = pytest.mark.prefect
BIN = Path(sys.executable).parent
ITEMS = 36  # at 120 requests/min the deployment's sync writes for about 18 s


def job_dict(tmp_path: Path, server: WebflowServer, token: str) -> dict[str, Any]:
    return {
        "name": "overlap",
        "source": {"type": "file", "path": str(tmp_path / "posts.csv")},
        "destination": {"type": "webflow", "base_url": server.base_url, "token": token,
                        "collection_id": server.state.collection_id, "rate_per_minute": 120,
                        "items_per_request": 1},
        "validation": {"preset": "blog",
                       "allowed_categories": ["Engineering", "Data", "Cloud", "Security", "AI"]},
        "batch": {"retries": 0},
        "ledger": {"path": str(tmp_path / "ledger.db")},
    }  # fmt: skip


def prefect_env(prefect_api: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**base, "PREFECT_API_URL": prefect_api, **extra}


def spawn(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """A process whose output goes to a file (a worker's children may outlive a pipe's reader)."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", dir=cwd, delete=False)  # noqa: SIM115
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               text=True)  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    return process


def output(process: subprocess.Popen[str]) -> str:
    return Path(process.log.name).read_text()  # type: ignore[attr-defined]


def stop(process: subprocess.Popen[str]) -> None:
    for signal_it in (process.terminate, process.terminate, process.kill):
        if process.poll() is not None:
            return
        signal_it()  # a worker may ignore its first SIGTERM
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            continue


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.3)
    return found


def test_two_syncs_started_together_one_writes_one_is_cancelled_and_a_manual_sync_waits(
    prefect_api: str,
    tmp_path: Path,
    write_csv: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.workers.process import ProcessWorker

    write_csv([blog_row(n) for n in range(1, ITEMS + 1)])
    pool = f"overlap-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(
            name=pool, type="process",
            base_job_template=ProcessWorker.get_default_base_job_template(),
        ))  # fmt: skip
    # the sync entry of prefect.yaml, as `make serve` deploys it (only the pool differs)
    deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "sync",
                             "--pool", pool], cwd=ROOT, env=prefect_env(prefect_api),
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("sync/sync")
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW

    token = "overlap-token"
    monkeypatch.setenv("WEBFLOW_TOKEN", token)
    env = prefect_env(prefect_api, WEBFLOW_TOKEN=token, BATCHGATE_HOME=str(ROOT),
                      PREFECT_WORKER_QUERY_SECONDS="1")  # fmt: skip
    # the deployment's sync writes slowly until the manual sync has said it waits for the hold:
    # on a loaded machine the manual one's start-up alone could outlast the whole sync
    slow = tmp_path / "writes-slow"
    slow.touch()
    faults = Faults(latency=(0.05, 0.1), slow_while=str(slow), slow_while_s=3.0)
    with WebflowServer(token=token, faults=faults) as server:
        params = {"job": job_dict(tmp_path, server, token), "overlap_s": 0}
        with get_client(sync_client=True) as client:  # two runs at once, as two schedules would
            runs = [client.create_flow_run_from_deployment(deployment.id, parameters=params)
                    for _ in "ab"]  # fmt: skip
        worker = spawn([str(BIN / "prefect"), "worker", "start", "--pool", pool], env, tmp_path)
        manual = None
        try:
            ledger_db = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
            holder = wait_until(lambda: _holder(ledger_db), 120, "a sync holds the destination")
            # a person runs a sync by hand while the deployment's sync writes
            job_file = tmp_path / "job.yaml"
            job_file.write_text(_yaml(job_dict(tmp_path, server, "${WEBFLOW_TOKEN}")))
            manual = spawn([str(BIN / "batchgate"), "sync", "--job", str(job_file)], env, tmp_path)
            wait_until(lambda: "waiting for the destination" in output(manual)
                       or manual.poll() is not None, 180, "the manual sync waits")  # fmt: skip
            slow.unlink()
            assert manual.wait(180) == 0, output(manual)[-3000:]
            states = wait_until(lambda: _final_states(runs), 120, "both deployment runs end")
        finally:
            stop(worker)
            if manual is not None:
                stop(manual)
        posts = [r for r in server.state.requests if r[1] == "POST"]
        slugs = Counter(server.state.slugs())

    # one deployment run wrote, the other was cancelled by the server and never started
    assert sorted(s.type.value for s in states) == ["CANCELLED", "COMPLETED"], states
    cancelled = next(s for s in states if s.type.value == "CANCELLED")
    assert "concurrency limit" in (cancelled.message or "").lower()
    # the manual sync waited for the deployment sync's hold, named it, then wrote nothing again
    said = output(manual)
    assert f"run {holder} holds it" in said and "waiting for the destination webflow:" in said
    assert f"0 written, {ITEMS} unchanged" in said, said[-2000:]
    # the destination has each item once, created by one request each
    assert len(slugs) == ITEMS and max(slugs.values()) == 1 and len(posts) == ITEMS
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log
    # the ledger: two syncs (the deployment's and the manual one), each item written once
    ledger = open_ledger(load_job(job_file).ledger)
    syncs = [r for r in ledger.runs(20) if r["mode"] == "sync"]
    assert len(syncs) == 2 and {r["outcome"] for r in syncs} == {"complete"}
    fulls = [row for s in syncs for row in ledger.runs_of(s["run_id"], mode="full")]
    written = Counter(row["item_id"] for f in fulls for row in ledger.item_rows(f["run_id"])
                      if row["status"] == "succeeded")  # fmt: skip
    assert len(written) == ITEMS and set(written.values()) == {1}, written.most_common(3)


def _holder(engine: sa.Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT run_id FROM batchgate_holds")).scalar()
    except sa.exc.OperationalError:  # not created yet
        return None


def _final_states(run_ids: list[Any]) -> list[Any] | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = [client.read_flow_run(run.id).state for run in run_ids]
    return states if all(s is not None and s.is_final() for s in states) else None


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
