"""With no PREFECT_API_URL, the first command starts a local Prefect server in the background and
later commands reuse it. Real `batchgate` subprocesses, the state dir in tmp_path; every test stops
the servers it started (found by their working directory, the state dir, even when unrecorded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import blog_row

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
STARTING = "starting a local Prefect server in the background"
Run = Callable[..., subprocess.CompletedProcess[str]]


def servers_in(state: Path) -> list[int]:
    """PIDs of the processes working in the state dir: the servers started there."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == state.resolve():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def kill_all(state: Path) -> None:
    for pid in servers_in(state):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not gone(pid):
                time.sleep(0.1)
            if gone(pid):
                break


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_all(path)


@pytest.fixture
def env(tmp_path: Path, state: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BATCHGATE_"))}
    # a client PREFECT_HOME of its own: no profile of the user's names an API URL
    return {**base, "BATCHGATE_STATE_DIR": str(state), "PREFECT_HOME": str(tmp_path / "client")}


@pytest.fixture
def cli(tmp_path: Path, env: dict[str, str]) -> Run:
    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BATCHGATE, *args], cwd=tmp_path, env={**env, **extra},
                              capture_output=True, text=True, timeout=400)  # fmt: skip

    return run


def recorded(state: Path) -> dict[str, object]:
    return json.loads((state / "server.json").read_text())


def answers(url: object) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_first_command_starts_the_server_and_says_so_the_second_reuses_it(
    cli: Run, state: Path, write_csv: Callable[..., Path], write_job: Callable[..., Path]
) -> None:
    write_csv([blog_row(1), blog_row(2)])
    job = str(write_job())
    first = cli("dry-run", "--job", job)
    assert first.returncode == 0, first.stderr
    assert STARTING in first.stderr and "batchgate server stop" in first.stderr
    assert "Traceback" not in first.stderr
    server = recorded(state)
    assert answers(server["url"]) and servers_in(state) == [server["pid"]]

    second = cli("dry-run", "--job", job)
    assert second.returncode == 0, second.stderr
    assert "starting" not in second.stderr  # reused: nothing started, nothing said
    assert recorded(state) == server and servers_in(state) == [server["pid"]]
    assert "Dry-Run Validation Report" in second.stdout

    status = cli("server", "status")
    assert f"running at {server['url']} (pid {server['pid']}" in status.stdout


def test_two_commands_started_at_once_start_one_server(
    tmp_path: Path, env: dict[str, str], state: Path
) -> None:
    both = [subprocess.Popen([BATCHGATE, "server", "start"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]  # fmt: skip
    outs = [p.communicate(timeout=400) for p in both]
    assert [p.returncode for p in both] == [0, 0], outs
    assert sum(err.count(STARTING) for _, err in outs) == 1
    server = recorded(state)
    assert all(f"running at {server['url']}" in out for out, _ in outs)
    assert servers_in(state) == [server["pid"]]


def test_a_stale_state_file_is_replaced_and_server_stop_stops_it(cli: Run, state: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    state.mkdir()
    (state / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:9/api", "pid": dead}))
    started = cli("server", "start")
    assert started.returncode == 0 and STARTING in started.stderr, started.stderr
    server = recorded(state)
    assert server["pid"] != int(dead) and answers(server["url"])

    stopped = cli("server", "stop")
    assert stopped.returncode == 0
    assert f"stopped the local Prefect server ({server['url']}, pid {server['pid']})" in (
        stopped.stdout
    )
    assert gone(int(str(server["pid"]))) and not (state / "server.json").exists()
    assert not answers(server["url"]) and servers_in(state) == []
    assert "not running" in cli("server", "status").stdout
    assert "no local Prefect server is running" in cli("server", "stop").stdout


def test_a_server_that_cannot_start_is_one_clear_line_and_exit_1(
    cli: Run, tmp_path: Path, state: Path, write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
) -> None:  # fmt: skip
    write_csv([blog_row(1)])
    job = str(write_job())
    bogus = tmp_path / "prefect"
    bogus.write_text("#!/bin/sh\necho 'PermissionError: cannot write the database' >&2\nexit 3\n")
    bogus.chmod(0o755)
    result = cli("dry-run", "--job", job, BATCHGATE_PREFECT=str(bogus))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout
    assert "could not start (prefect exited with code 3: PermissionError" in lines[0]
    assert str(state / "server.log") in lines[0] and "PREFECT_API_URL" in lines[0]
    assert not (state / "server.json").exists()

    missing = cli("dry-run", "--job", job, BATCHGATE_PREFECT=str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "error: the local Prefect server could not start" in missing.stderr

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = cli("dry-run", "--job", job, BATCHGATE_STATE_DIR=str(blocked / "state"))
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr
    assert f"error: cannot use the state dir {blocked / 'state'}" in unwritable.stderr
    assert "BATCHGATE_STATE_DIR" in unwritable.stderr


def test_a_users_own_prefect_api_url_wins_and_nothing_starts(cli: Run, state: Path) -> None:
    result = cli("server", "start", PREFECT_API_URL="http://127.0.0.1:9/api")
    assert result.returncode == 0 and STARTING not in result.stderr
    assert "PREFECT_API_URL is set (http://127.0.0.1:9/api)" in result.stdout
    assert not (state / "server.json").exists() and servers_in(state) == []
