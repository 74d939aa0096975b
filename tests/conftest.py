"""Shared fixtures: a real Prefect API, real databases, a real HTTP server, and file builders."""

from __future__ import annotations

import csv
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchgate.schema import BLOG

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_JOB = ROOT / "examples" / "blog" / "job.yaml"
BLOG_COLUMNS = list(BLOG.columns)
PG_URL = os.environ.get(
    "BATCHGATE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def _fresh_pacers() -> Iterator[None]:
    """Pacers are process-wide per destination; a test's 429 hold must not slow the next test."""
    from batchgate import pacer

    pacer._PACERS.clear()
    yield
    pacer._PACERS.clear()


# --- Prefect -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One throwaway Prefect server for the whole session (starting one costs 10-15 s)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


# --- databases -----------------------------------------------------------------------------------


def _postgres_reachable() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL; skipped only when unreachable and CI is unset."""
    if not _postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}, and CI requires it")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    return PG_URL


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh PostgreSQL schema, dropped afterwards."""
    schema = f"bg_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger test runs on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_schema_url")


# --- files ---------------------------------------------------------------------------------------


def blog_row(n: int, **overrides: Any) -> dict[str, Any]:
    """A valid blog row; override any column."""
    row = {
        "id": f"p-{n:03d}",
        "title": f"Post number {n}",
        "slug": f"post-number-{n}",
        "status": "Published",
        "category": "Data",
        "tags": "a, b",
        "featured": "false",
        "publish_date": "2025-10-28",
        "hero_image_url": f"https://img.example.com/{n}.jpg",
        "hero_width": "1600",
        "hero_height": "900",
        "summary": "A summary.",
        "body_markdown": "# Title\n\nSome text.",
        "last_edited": "2025-10-28T10:00:00Z",
    }
    row.update(overrides)
    return row


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(
        rows: list[dict[str, Any]], name: str = "posts.csv", columns: list[str] | None = None
    ) -> Path:
        path = tmp_path / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=columns or BLOG_COLUMNS, extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(rows)
        return path

    return write


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a job file next to the data; `extra` is appended YAML."""

    def write(source: str = "posts.csv", extra: str = "", name: str = "job.yaml") -> Path:
        path = tmp_path / name
        path.write_text(
            "source:\n"
            "  type: file\n"
            f"  path: {source}\n"
            "validation:\n"
            "  preset: blog\n"
            "  allowed_categories: [Engineering, Data, Cloud, Security, AI]\n"
            f"ledger:\n  path: {tmp_path / 'ledger.db'}\n" + extra,
            encoding="utf-8",
        )
        return path

    return write


# --- HTTP ----------------------------------------------------------------------------------------


class Route:
    """What the test server answers for one path."""

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        delay: float = 0.0,
        honour_range: bool = True,
        content_type: str = "application/octet-stream",
    ):
        self.body, self.status, self.delay = body, status, delay
        self.honour_range, self.content_type = honour_range, content_type
        self.requests: list[dict[str, str]] = []


class HttpServer:
    """A real HTTP server on 127.0.0.1 serving configured routes, in a thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.requests.append(dict(self.headers))
                if route.delay:
                    threading.Event().wait(route.delay)
                body, status = route.body, route.status
                header_range = self.headers.get("Range", "")
                if route.honour_range and status == 200 and header_range.startswith("bytes="):
                    start, _, end = header_range[6:].partition("-")
                    last = min(int(end) if end else len(body) - 1, len(body) - 1)
                    body, status = body[int(start) : last + 1], 206
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.close()


# --- a real `prefect server`, for end-to-end tests of separate processes --------------------------


def free_port() -> int:
    """A port free a moment ago. Only for a server that cannot bind port 0 and report the port it
    got (`prefect server start`): the caller must detect that the port was taken meanwhile."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(Exception):
    """The chosen port was taken between choosing it and the server binding it."""


def _start_prefect_server(home: Path, log: Path, deadline_s: float = 120) -> tuple[Any, str]:
    """`prefect server start` on a port chosen just before; (process, API URL) once it answers.
    Raises PortTaken if the port was taken meanwhile (the server exits with "address already in
    use", or another server answers there: its settings name another PREFECT_HOME)."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_API_URL": api}  # fmt: skip
    prefect = str(Path(sys.executable).with_name("prefect"))
    with log.open("w") as out:
        server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                home_there = httpx.get(f"{api}/admin/settings", timeout=10).json().get("home")
                if Path(str(home_there)).resolve() == home.resolve():
                    return server, api
                _stop(server)
                raise PortTaken(f"port {port}: another Prefect server (home {home_there}) answers")
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            text = log.read_text()
            if "already in use" in text.lower():  # prefect checks first; uvicorn: errno 98
                raise PortTaken(f"port {port} was taken before the server bound it")
            raise RuntimeError(f"prefect server exited ({server.returncode}): {text}")
        if time.monotonic() > deadline:
            _stop(server)
            raise RuntimeError(f"prefect server silent for {deadline_s} s: {log.read_text()}")
        time.sleep(0.5)


def _stop(server: Any) -> None:
    import subprocess

    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(20)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` with its own SQLite database; yields the API URL. Prefect cannot bind
    port 0 and report the port it got, so a port is chosen just before, and if another process
    takes it meanwhile the server is started again on another (three tries)."""
    for attempt in range(3):
        home = tmp_path_factory.mktemp("prefect-home")
        try:
            server, api = _start_prefect_server(home, home / "server.log")
            break
        except PortTaken:
            if attempt == 2:
                raise
    try:
        yield api
    finally:
        _stop(server)


def copy_example(to: Path) -> Path:
    """A copy of examples/blog without the demo's output (cms.db), whatever `make demo` left."""
    import shutil

    shutil.copytree(EXAMPLE_JOB.parent, to, ignore=shutil.ignore_patterns("cms.db*", ".batchgate"))
    return to / "job.yaml"
