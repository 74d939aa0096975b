"""A local Prefect server in the background: the first command starts it, later ones reuse it.

With no PREFECT_API_URL, Prefect would start a temporary server inside every command (15-25 s, and
on a loaded machine it times out with a traceback). Instead the first command starts a detached
`prefect server start` on 127.0.0.1 and a free port, its PREFECT_HOME under the state dir
(BATCHGATE_STATE_DIR, default ~/.batchgate), and records its URL and PID in server.json; later
commands check that it answers and reuse it. A lock file makes commands started together start one.
No Prefect import here: the server is a subprocess, its health one HTTP request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from batchgate.errors import BatchgateError

STATE_DIR_ENV = "BATCHGATE_STATE_DIR"  # where server.json, its log and its PREFECT_HOME live
SWITCH_ENV = "BATCHGATE_LOCAL_SERVER"  # "0": Prefect's own temporary server in every command
PREFECT_ENV = "BATCHGATE_PREFECT"  # the `prefect` executable (default: the one beside python)
TIMEOUT_ENV = "BATCHGATE_SERVER_START_TIMEOUT"  # seconds to wait for a first start (default 180)
FIX = "or use a Prefect server of yours: export PREFECT_API_URL=http://127.0.0.1:4200/api"

Say = Callable[[str], None]


class LocalServerError(BatchgateError):
    """The local Prefect server cannot be started; the message names the log and the fix."""


class _PortTaken(Exception):
    """The chosen port was taken between choosing it and the server binding it."""


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def lock(self) -> Path:
        return self.root / "server.lock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def home(self) -> Path:
        return self.root / "prefect"


def paths() -> Paths:
    return Paths(Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".batchgate").expanduser())


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def user_api_url() -> str | None:
    """The user's own PREFECT_API_URL: the environment's, else the active Prefect profile's."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def ensure(say: Say = _stderr) -> str | None:
    """Point this process at the local server (started if need be); None if the user has one."""
    if user_api_url() or not enabled():
        return None
    where = paths()
    try:
        where.root.mkdir(parents=True, exist_ok=True)
        with _locked(where, say):
            server = running(where, say) or _start(where, say)
    except OSError as exc:
        raise LocalServerError(f"cannot use the state dir {where.root} for the local Prefect "
                               f"server ({exc.strerror or exc}). Fix: set {STATE_DIR_ENV} to a "
                               f"writable folder, {FIX}") from None  # fmt: skip
    os.environ["PREFECT_API_URL"] = server.url
    return server.url


def running(where: Paths, say: Say = _stderr, patience_s: float = 30) -> Server | None:
    """The recorded server if it answers; a stale record (dead PID, no answer) is cleared."""
    server = _recorded(where)
    if server is None:
        return None
    if _ours(server.pid):
        if _healthy(server.url, 3):
            return server
        say(f"the local Prefect server ({server.url}, pid {server.pid}) does not answer; "
            f"waiting up to {patience_s:.0f} s")  # fmt: skip
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline and _ours(server.pid):
            if _healthy(server.url, 3):
                return server
            time.sleep(1)
        _kill(server.pid)
    where.state.unlink(missing_ok=True)
    return None


def describe(where: Paths, user_url: str | None) -> str:
    """What `batchgate server status` prints; it changes nothing."""
    server = _recorded(where)
    if server and _ours(server.pid):
        state = "running" if _healthy(server.url, 5) else "recorded but not answering"
        text = (f"local Prefect server: {state} at {server.url} (pid {server.pid}; UI "
                f"{server.url.removesuffix('/api')}; log {where.log})")  # fmt: skip
    else:
        text = f"local Prefect server: not running (state dir {where.root})"
    if user_url:
        text += f"\nPREFECT_API_URL is set ({user_url}): commands use that server, not this one"
    elif not enabled():
        text += f"\n{SWITCH_ENV}=0: each command starts Prefect's own temporary server instead"
    return text


def stop(where: Paths) -> Server | None:
    """Stop the recorded server; the one stopped, or None if none was running."""
    with _locked(where, _stderr):
        server = _recorded(where)
        if server is not None and _ours(server.pid):
            _kill(server.pid)
        else:
            server = None
        where.state.unlink(missing_ok=True)
    return server


def _recorded(where: Paths) -> Server | None:
    try:
        data = json.loads(where.state.read_text())
        return Server(url=str(data["url"]), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(where: Paths, say: Say) -> Iterator[None]:
    """One command at a time starts or stops the server; the others wait, then reuse it."""
    with where.lock.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another batchgate command that is starting the local Prefect server")
            deadline = time.monotonic() + _timeout() + 60
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LocalServerError(
                            f"another batchgate command has been starting the local Prefect "
                            f"server for too long (lock {where.lock}); see {where.log}. Fix: "
                            f"batchgate server stop, {FIX}"
                        ) from None
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV) or 180)
    except ValueError:
        return 180.0


def _prefect() -> str:
    if os.environ.get(PREFECT_ENV):
        return os.environ[PREFECT_ENV]
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def _start(where: Paths, say: Say) -> Server:
    timeout = _timeout()
    say(f"batchgate: starting a local Prefect server in the background (PREFECT_API_URL is not "
        f"set; first command only, later commands reuse it; `batchgate server stop` stops it; "
        f"log: {where.log}; up to {timeout:.0f} s)")  # fmt: skip
    for attempt in range(3):
        try:
            server = _launch(where, timeout, say)
        except _PortTaken:
            if attempt == 2:
                raise LocalServerError(f"the local Prefect server could not get a free port "
                                       f"(3 tries); see {where.log}. Fix: try again, {FIX}") from None  # fmt: skip
            continue
        record = {"url": server.url, "pid": server.pid, "home": str(where.home),
                  "log": str(where.log), "started_at": time.time()}  # fmt: skip
        part = where.state.with_suffix(".part")
        part.write_text(json.dumps(record))
        part.replace(where.state)
        say(f"batchgate: the local Prefect server answers at {server.url} (UI: "
            f"{server.url.removesuffix('/api')})")  # fmt: skip
        return server
    raise AssertionError("unreachable")


def _launch(where: Paths, timeout: float, say: Say) -> Server:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    where.home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"}
    env.update(PREFECT_HOME=str(where.home), PREFECT_API_URL=url, PREFECT_SERVER_API_HOST="127.0.0.1",
               PREFECT_SERVER_API_PORT=str(port), PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    command = [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with where.log.open("w") as log:
        try:  # its own session: it outlives this command and a Ctrl-C in this terminal
            process = subprocess.Popen(command, env=env, cwd=where.root, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        except OSError as exc:
            raise LocalServerError(f"the local Prefect server could not start: {command[0]}: "
                                   f"{exc.strerror or exc}. Fix: set {PREFECT_ENV} to the prefect "
                                   f"executable, {FIX}") from None  # fmt: skip
    try:
        return _await(process, Server(url, process.pid), where, timeout, say)
    except BaseException:  # a failed or interrupted start leaves no server behind
        _kill(process.pid)
        raise


def _await(
    process: subprocess.Popen[bytes], server: Server, where: Paths, timeout: float, say: Say
) -> Server:
    started = time.monotonic()
    told = started
    while True:
        if _healthy(server.url, 2):
            if _home_of(server.url) == where.home.resolve():
                return server
            _kill(process.pid)
            raise _PortTaken
        code = process.poll()
        if code is not None:
            text = _read(where.log)
            if "already in use" in text.lower():
                raise _PortTaken
            last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
            raise LocalServerError(
                f"the local Prefect server could not start (prefect exited with code {code}"
                f"{f': {last[:200]}' if last else ''}); see {where.log}. Fix what the log says, "
                f"{FIX}"
            )
        now = time.monotonic()
        if now - started > timeout:
            _kill(process.pid)
            raise LocalServerError(
                f"the local Prefect server did not answer within {timeout:.0f} s; see {where.log}."
                f" Fix: retry when the machine is less busy, raise {TIMEOUT_ENV}, {FIX}"
            )
        if now - told > 30:
            say(f"batchgate: still starting the local Prefect server ({now - started:.0f} s)")
            told = now
        time.sleep(0.5)


def _home_of(url: str) -> Path | None:
    try:
        home = httpx.get(f"{url}/admin/settings", timeout=10, trust_env=False).json().get("home")
        return Path(str(home)).resolve()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, AttributeError):
        return None


def _healthy(url: str, timeout: float) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout, trust_env=False).status_code == 200
    except (httpx.HTTPError, httpx.InvalidURL):
        return False


def _free_port() -> int:
    """A port free a moment ago: `prefect server start` cannot bind 0 and report its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's init may not reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _ours(pid: int) -> bool:
    """Alive and still a `prefect server start` (not another process that got its PID)."""
    if not _alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the PID
    return b"server" in command and b"start" in command


def _kill(pid: int, grace_s: float = 20) -> None:
    """SIGTERM the server's process group (it leads its own session), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
