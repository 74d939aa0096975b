"""`batchgate full` as a real subprocess: exit codes, and SIGKILL at any point then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer
from tests.test_full_flow import webflow_job

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))


def env(prefect_api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "WEBFLOW_TOKEN": "test-token"}


def run(prefect_api: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BATCHGATE, *args], cwd=cwd, env=env(prefect_api), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("failing", "code", "status"),
    [(set(), 0, "complete"), ({"post-number-3"}, 3, "partial-success"),
     ({f"post-number-{n}" for n in (1, 2, 3)}, 4, "failed")],
)  # fmt: skip
def test_exit_codes_follow_the_outcome(prefect_api: str, tmp_path: Path, write_csv, failing: set[str],
                                       code: int, status: str) -> None:  # fmt: skip
    write_csv([blog_row(n) for n in range(1, 11)])
    with WebflowServer(faults=Faults(bad_request_slugs=failing)) as server:
        job = webflow_job(tmp_path, server, batch=", pause_at: 1.0, abort_at: 1.0")
        result = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "out.json")
    assert result.returncode == code, result.stderr
    assert json.loads((tmp_path / "out.json").read_text())["status"] == status
    assert "Traceback" not in result.stdout + result.stderr
    assert "Full Batch Processing in Progress" in result.stdout and "NEXT STEPS:" in result.stdout


def test_config_error_exits_1(prefect_api: str, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: x.csv}\ndestination: {type: sql}\n"
    )
    result = run(prefect_api, tmp_path, "full", "--job", "job.yaml")
    assert result.returncode == 1 and "destination.url" in result.stderr


@pytest.mark.parametrize("kill_after", [3, 17])
def test_sigkill_then_resume_leaves_exactly_one_copy_of_every_item(
    prefect_api: str, tmp_path: Path, write_csv, kill_after: int
) -> None:
    write_csv([blog_row(n) for n in range(1, 31)])
    # answers are slow and some come after the write was applied: a kill lands mid-request
    faults = Faults(latency=(0.05, 0.15), slow_rate=0.3, slow_seconds=0.6)
    with WebflowServer(faults=faults) as server:
        job = webflow_job(tmp_path, server)
        first = subprocess.Popen([BATCHGATE, "full", "--job", str(job)], cwd=tmp_path,
                                 env=env(prefect_api), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while (
            len(server.items) < kill_after and time.monotonic() < deadline and first.poll() is None
        ):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        created_before = len(server.items)
        assert 0 < created_before < 30  # killed half-way

        result = run(prefect_api, tmp_path, "full", "--job", str(job), "--json", "out.json")
        slugs = Counter(server.state.slugs())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(slugs) == 30 and max(slugs.values()) == 1  # every item, exactly once
    assert max(server.state.creates.values()) == 1  # one create each, from the fake's log
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["succeeded"] == 30 and summary["pending"] == 0
