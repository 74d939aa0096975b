"""End to end: `batchgate pipeline` against a real `prefect server`, resumed from another process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from batchgate.config import LedgerConfig
from blocks.ledger import open_ledger
from tests.conftest import copy_example
from tests.test_sample_pipeline import cms_rows

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
PAUSED = re.compile(r"paused for review: flow run ([0-9a-f-]{36})")


def start_pipeline(api: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path, dict[str, str]]:
    copy_example(tmp_path / "blog")
    env = {**os.environ, "PREFECT_API_URL": api}
    out = tmp_path / "pipeline.out"
    proc = subprocess.Popen(
        [BATCHGATE, "pipeline", "--job", "blog/job.yaml", "--allow-blocked"], cwd=tmp_path,
        env=env, stdin=subprocess.DEVNULL, stdout=out.open("w"), stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    return proc, out, env


def wait_paused(api: str, proc: subprocess.Popen[str], out: Path) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = PAUSED.search(out.read_text())
        if found:
            run = httpx.get(f"{api}/flow_runs/{found.group(1)}").json()
            if run["state"]["type"] == "PAUSED":
                return found.group(1)
        assert proc.poll() is None, out.read_text()
        time.sleep(0.3)
    raise AssertionError(f"the pipeline never paused:\n{out.read_text()}")


def review(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BATCHGATE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_pipeline_pauses_and_batchgate_approve_resumes_it(
    prefect_server: str, tmp_path: Path
) -> None:
    proc, out, env = start_pipeline(prefect_server, tmp_path)
    flow_run_id = wait_paused(prefect_server, proc, out)
    assert len(cms_rows(tmp_path)) == 3  # the sample drafts, waiting for review
    text = out.read_text()
    assert "✅ Sample Batch Complete" in text and f"batchgate approve {flow_run_id}" in text
    assert "No terminal to ask in" in text  # stdin is not a terminal: it says how to answer

    answer = review(env, tmp_path, "approve", flow_run_id, "--notes", "drafts look right")
    assert answer.returncode == 0, answer.stderr
    assert proc.wait(180) == 0, out.read_text()
    run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}").json()
    assert run["state"]["type"] == "COMPLETED" and run["state"]["name"] == "Completed"
    rows = cms_rows(tmp_path)
    assert len(rows) == 49 and len({r["source_id"] for r in rows}) == 49
    assert "✅ BATCH COMPLETE" in out.read_text()
    again = review(env, tmp_path, "approve", flow_run_id)  # a second answer is refused, clearly
    assert (
        again.returncode == 1 and "isn't paused" in again.stderr and "Traceback" not in again.stderr
    )


def test_pipeline_rejected_with_batchgate_reject_rolls_the_sample_back(
    prefect_server: str, tmp_path: Path
) -> None:
    proc, out, env = start_pipeline(prefect_server, tmp_path)
    flow_run_id = wait_paused(prefect_server, proc, out)
    drafts = {r["source_id"] for r in cms_rows(tmp_path)}
    assert len(drafts) == 3

    answer = review(env, tmp_path, "reject", flow_run_id, "--notes", "wrong hero images")
    assert answer.returncode == 0, answer.stderr
    assert proc.wait(180) == 5, out.read_text()  # 5: rejected
    run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}").json()
    assert run["state"]["type"] == "COMPLETED" and run["state"]["name"] == "Rejected"
    assert cms_rows(tmp_path) == []  # the sample was rolled back
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / ".batchgate" / "ledger.db")))
    (pipeline_run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert pipeline_run["outcome"] == "rejected" and "wrong hero images" in pipeline_run["message"]
    (sample_run,) = ledger.runs_of(pipeline_run["run_id"], mode="sample")
    assert sample_run["status"] == "rolled-back"
    assert {r["item_id"] for r in ledger.item_rows(sample_run["run_id"])} == drafts
