"""The Prefect UI in a real browser (Debian's chromium, driven by Playwright), against the local
stack `make serve` starts: trigger the pipeline from its deployment's Run form (its choices named
File/Notion and SQL/Webflow), see it suspend for review with no process left running it, approve or
reject the sample from the run page (a worker runs it again from the frozen plan), and check the
destination. Screenshots of every step go to docs/screenshots/, where the README shows them."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.prefect
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SKIP = shutil.ignore_patterns(".git", ".venv", ".serve", ".batchgate", "cms.db*", "__pycache__",
                              ".pytest_cache", ".ruff_cache", "docs", "*.egg-info", "data")  # fmt: skip


class Stack:
    def __init__(self, home: Path, port: int, database: str) -> None:
        self.home, self.ui, self.database = home, f"http://127.0.0.1:{port}", database
        self.api = f"{self.ui}/api"

    def deployment(self, name: str) -> dict[str, Any]:
        found = httpx.post(f"{self.api}/deployments/filter", json={}).json()
        return next(d for d in found if d["name"] == name)

    def runs(self, deployment_id: str) -> list[dict[str, Any]]:
        query = {"deployments": {"id": {"any_": [deployment_id]}}}
        return list(httpx.post(f"{self.api}/flow_runs/filter", json=query).json())

    def state(self, flow_run_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}/flow_runs/{flow_run_id}").json()["state"])

    def wait(
        self, flow_run_id: str, kind: str, page: Any = None, timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(flow_run_id)
            if state["type"] == kind:
                return state
            assert state["type"] not in ("FAILED", "CRASHED", "CANCELLED"), state
            idle(page, 0.5)
        raise AssertionError(
            f"flow run {flow_run_id} never reached {kind}: {self.state(flow_run_id)}"
        )

    def ledger_runs(self) -> list[dict[str, Any]]:
        db = self.home / ".batchgate" / "ledger.db"
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM batchgate_runs")]

    def posts(self) -> list[tuple[str, int]]:
        db = self.home / "examples" / "blog" / "cms.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            if not conn.execute("SELECT name FROM sqlite_master WHERE name='posts'").fetchall():
                return []
            return conn.execute("SELECT source_id, draft FROM posts").fetchall()


class _Hook(BaseHTTPRequestHandler):
    """Where the stack's notifications go: it takes each POST and answers 204."""

    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        self.received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/batchgate"
    server.shutdown()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, hook: str, postgres_url: str
) -> Iterator[Stack]:
    """`DB=postgres WORKERS=2 scripts/serve.sh` on a copy of the project: server, pool, blocks,
    deployments, two workers. The server is on PostgreSQL, as the README advises beyond light
    use: on SQLite, Prefect's server answers 503 to a request that finds its database locked
    (SQLITE_BUSY), and the UI's Run form, unlike Prefect's client, does not retry (CI saw it:
    "Unknown error while creating flow run"). Its own database is created by serve.sh and
    dropped afterwards."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; scripts/ensure-browser.sh installs it")
        pytest.skip(f"{CHROMIUM} is not installed")
    pg = sa.engine.make_url(postgres_url)
    database = f"prefect_ui_{os.getpid()}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # one a killed run left under the same pid is dropped first
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    home = tmp_path_factory.mktemp("stack") / "batchgate"
    shutil.copytree(ROOT, home, ignore=SKIP)
    # serve.sh starts `prefect server start`, which cannot bind port 0 and report the port it got:
    # a port is chosen just before, and if it is taken meanwhile the stack is served again on
    # another (three tries)
    for attempt in range(3):
        port = free_port()
        env = {**os.environ, "PORT": str(port), "BIN": str(Path(sys.executable).parent),
               "SERVE_DIR": str(home / ".serve"), "DB": "postgres", "PREFECT_DB": database,
               "WORKERS": "2",
               "PG_URL": f"{pg.username}@{pg.host}:{pg.port or 5432}",
               # the notification automations, as a user sets them up, posting to a receiver
               # here (tests/test_notifications.py checks what they deliver)
               "NOTIFY_URL": hook}  # fmt: skip
        env.pop("NOTIFY_BLOCK", None)
        env.pop("SERVE_HOST", None)
        env.pop("PREFECT_API_URL", None)
        served = subprocess.run([str(home / "scripts" / "serve.sh")], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        if _serves_our_stack(home, port, served):
            break
        subprocess.run([str(home / "scripts" / "stop.sh")], env=env, timeout=60)
        assert attempt < 2, served.stdout + served.stderr
    try:
        yield Stack(home, port, database)
    finally:
        subprocess.run([str(home / "scripts" / "stop.sh")], env=env, timeout=60)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def _serves_our_stack(home: Path, port: int, served: subprocess.CompletedProcess[str]) -> bool:
    """serve.sh succeeded with our own server on `port`, not another process that took it (a
    "port already in use" server log, or another Prefect server answering with its own home)."""
    if served.returncode != 0:
        log = home / ".serve" / "server.log"
        text = log.read_text().lower() if log.exists() else ""
        assert "already in use" in text, served.stdout + served.stderr
        return False
    there = httpx.get(f"http://127.0.0.1:{port}/api/admin/settings", timeout=10).json()["home"]
    return Path(there).resolve() == (home / ".serve" / "prefect-home").resolve()


@pytest.fixture
def browser_page(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(stack.home / ".batchgate", ignore_errors=True)  # a fresh example each time
    for leftover in stack.home.glob("examples/blog/cms.db*"):
        leftover.unlink()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def idle(page: Any, seconds: float) -> None:
    """Wait while the browser goes on: Playwright's sync API handles the page's events only inside
    its own calls, so a test that waits with time.sleep while the page works (a Submit, a Resume)
    can hold the page up; seen as a click whose request went out only at the test's end."""
    if page is None:
        time.sleep(seconds)
    else:
        page.wait_for_timeout(seconds * 1000)


def processes_running(flow_run_id: str) -> list[int]:
    """PIDs of the processes on this machine that run the flow run (a process worker gives its
    child PREFECT__FLOW_RUN_ID)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            found.append(int(proc.name))
    return found


def assert_nothing_runs(stack: Stack, flow_run_id: str, page: Any, timeout: float = 60) -> None:
    """Suspended: the worker's child process that ran the flow has exited, and none other runs it."""
    run = httpx.get(f"{stack.api}/flow_runs/{flow_run_id}").json()
    pid = int(str(run["infrastructure_pid"]).rpartition(":")[2])  # host:pid, set by the worker
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() or processes_running(flow_run_id):
        assert time.monotonic() < deadline, (pid, processes_running(flow_run_id))
        idle(page, 0.5)
    assert stack.state(flow_run_id)["name"] == "Suspended"  # and still waiting for the review


def check_run_form(page: Any) -> None:
    """The Run form reads like a form: choices by their names, no "None" type switch."""
    form = page.locator("form").first
    for choice in ("File", "Notion", "Saved block", "SQL", "Webflow"):
        form.get_by_role("tab", name=choice, exact=True).first.wait_for()
    text = form.inner_text()
    assert 'Property is type "None"' not in text
    for class_name in ("FileSourceConfig", "NotionSourceConfig", "SqlDestinationConfig",
                       "WebflowDestinationConfig", "BlockRefConfig"):  # fmt: skip
        assert class_name not in text


def submit_run_form(stack: Stack, page: Any, deployment_id: str, timeout: float = 90) -> str:
    """Click the Run form's Submit and return the flow run it created (the toast's link is not
    always there). If none is created, fail with what the page showed: its toasts, the API calls
    the server refused, the console's errors."""
    before = {r["id"] for r in stack.runs(deployment_id)}
    refused: list[str] = []
    console: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.request.method} {r.url}: {r.status}")
            if r.status >= 400 else None)  # fmt: skip
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.get_by_role("button", name="Submit").click()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r["id"] for r in stack.runs(deployment_id) if r["id"] not in before]
        if new:
            return str(new[0])
        idle(page, 0.3)
    page.screenshot(path=SHOTS / "submit-failed.png", full_page=True)
    toasts = page.locator("[data-sonner-toast]").all_inner_texts()
    raise AssertionError(
        f"submitting the Run form created no flow run; toasts: {toasts}; refused: {refused}; "
        f"console errors: {console}; url: {page.url}"
    )


def trigger_pipeline(stack: Stack, page: Any, shot: str) -> str:
    """Steps 1-3: open the UI, run the pipeline deployment from its Run form, wait until it is
    suspended for review with no process running it."""
    deployment = stack.deployment("pipeline")
    page.goto(f"{stack.ui}/v2/deployments/deployment/{deployment['id']}")
    page.get_by_role("button", name="Run").first.wait_for()
    page.screenshot(path=SHOTS / f"{shot}-1-deployment.png")
    page.get_by_role("button", name="Run").first.click()
    page.get_by_role("menuitem", name="Custom run").click()
    page.get_by_text("Job name, used in run ids and reports.").wait_for()  # the job model's form
    check_run_form(page)
    page.screenshot(path=SHOTS / f"{shot}-2-run-form.png", full_page=True)
    flow_run_id = submit_run_form(stack, page, deployment["id"])
    page.goto(f"{stack.ui}/v2/runs/flow-run/{flow_run_id}")
    assert stack.wait(flow_run_id, "PAUSED", page)["name"] == "Suspended"  # suspended
    assert_nothing_runs(stack, flow_run_id, page)
    page.reload()
    page.locator('[data-slot="badge"]', has_text="Suspended").first.wait_for()
    page.screenshot(path=SHOTS / f"{shot}-3-suspended.png")
    return flow_run_id


def assert_ran_once(stack: Stack, flow_run_id: str) -> None:
    """The run resumed from the frozen plan: one pipeline, one dry-run, one sample in the ledger."""
    runs = stack.ledger_runs()
    (pipeline,) = [r for r in runs if r["mode"] == "pipeline"]
    assert pipeline["flow_run_id"] == flow_run_id
    children = sorted(r["mode"] for r in runs if r["parent_run_id"] == pipeline["run_id"])
    assert children.count("dry-run") == 1 and children.count("sample") == 1, children


def open_review(page: Any, shot: str) -> Any:
    """Step 4: the run page's menu, Resume, and the review form with the sample report."""
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Sample Batch Complete").wait_for()
    dialog.get_by_role("switch").first.wait_for()
    return dialog


def test_make_serve_sets_up_the_notifications_shown_in_the_automations_page(
    stack: Stack, browser_page: Any
) -> None:
    page = browser_page
    page.goto(f"{stack.ui}/v2/automations")
    for name in ("batchgate: sample awaiting review", "batchgate: circuit breaker tripped",
                 "batchgate: run failed or partial"):  # fmt: skip
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=SHOTS / "notify-1-automations.png", full_page=True)
    automations = httpx.post(f"{stack.api}/automations/filter", json={}).json()
    assert {a["name"] for a in automations} >= {"batchgate: sample awaiting review",
                                                 "batchgate: circuit breaker tripped",
                                                 "batchgate: run failed or partial"}  # fmt: skip


def test_pipeline_approved_in_the_browser(stack: Stack, browser_page: Any) -> None:
    page = browser_page
    flow_run_id = trigger_pipeline(stack, page, "approve")
    assert len(stack.posts()) == 3 and all(draft for _, draft in stack.posts())  # the sample
    dialog = open_review(page, "approve")
    dialog.get_by_role("switch").first.click()  # approve: on
    dialog.get_by_role("textbox").last.fill("Looks right in the browser")
    page.screenshot(path=SHOTS / "approve-4-review-form.png")
    dialog.get_by_role("button", name="Resume").click()
    state = stack.wait(flow_run_id, "COMPLETED", page)
    assert (
        state["name"] == "Completed" and "approved: Looks right in the browser" in state["message"]
    )
    page.reload()
    page.locator('[data-slot="badge"]', has_text="Completed").first.wait_for()
    page.screenshot(path=SHOTS / "approve-5-completed.png")
    posts = stack.posts()
    assert len(posts) == 49 and len({source_id for source_id, _ in posts}) == 49
    assert_ran_once(stack, flow_run_id)


def test_pipeline_rejected_in_the_browser(stack: Stack, browser_page: Any) -> None:
    page = browser_page
    flow_run_id = trigger_pipeline(stack, page, "reject")
    assert len(stack.posts()) == 3
    dialog = open_review(page, "reject")
    switch = dialog.get_by_role("switch").first
    switch.click()
    switch.click()  # a decision, explicitly off: reject (left untouched, the form is refused)
    dialog.get_by_role("textbox").last.fill("Headings are wrong")
    page.screenshot(path=SHOTS / "reject-4-review-form.png")
    dialog.get_by_role("button", name="Resume").click()
    state = stack.wait(flow_run_id, "COMPLETED", page)
    assert state["name"] == "Rejected" and "rolled back" in state["message"]
    page.reload()
    page.locator('[data-slot="badge"]', has_text="Rejected").first.wait_for()
    page.screenshot(path=SHOTS / "reject-5-rejected.png")
    assert stack.posts() == []  # the sample was rolled back
    assert_ran_once(stack, flow_run_id)


def test_the_sync_deployment_has_its_schedule_paused(stack: Stack) -> None:
    deployment = stack.deployment("sync")
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "*/30 * * * *" and schedule["active"] is False
    names = {d["name"] for d in httpx.post(f"{stack.api}/deployments/filter", json={}).json()}
    assert names == {"dry-run", "sample", "full", "pipeline", "dlq-retry", "rollback", "sync",
                     "full-shard"}  # fmt: skip
    # the Run form's schema is the job model, with its descriptions
    job = stack.deployment("pipeline")["parameter_openapi_schema"]["properties"]["job"]
    assert job["$ref"].endswith("/Job") or "allOf" in job or "properties" in job


def test_the_connector_blocks_are_registered_with_descriptions(stack: Stack) -> None:
    for slug in ("batchgate-file-source", "batchgate-notion-source", "batchgate-sql-destination",
                 "batchgate-webflow-destination"):  # fmt: skip
        block_type = httpx.get(f"{stack.api}/block_types/slug/{slug}").json()
        assert block_type["description"], slug
        schemas = httpx.post(f"{stack.api}/block_schemas/filter", json={
            "block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}).json()  # fmt: skip
        fields = schemas[0]["fields"]["properties"]
        assert all(field.get("description") for field in fields.values()), (slug, fields)
    notion = httpx.get(f"{stack.api}/block_types/slug/batchgate-notion-source").json()
    schema = httpx.post(f"{stack.api}/block_schemas/filter", json={
        "block_schemas": {"block_type_id": {"any_": [notion["id"]]}}}).json()[0]  # fmt: skip
    assert schema["fields"]["properties"]["token"]["format"] == "password"  # a SecretStr


def test_a_suspended_review_that_times_out_ends_timed_out_with_the_drafts_left(
    stack: Stack,
) -> None:
    """No answer within approval_timeout_s: the review deadline resumes the suspended run with no
    answer, and the pipeline's own code ends it as timed-out, naming the rollback command."""
    shutil.rmtree(stack.home / ".batchgate", ignore_errors=True)
    for leftover in stack.home.glob("examples/blog/cms.db*"):
        leftover.unlink()
    deployment = stack.deployment("pipeline")
    flow_run_id = httpx.post(
        f"{stack.api}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"approval_timeout_s": 10}},
    ).json()["id"]
    assert stack.wait(flow_run_id, "PAUSED")["name"] == "Suspended"
    # the deadline automation fires about 10 s after the suspension, then a worker (polling
    # every 10 s) starts the run again: on a loaded machine that takes minutes
    deadline = time.monotonic() + 300
    while (state := stack.state(flow_run_id))["type"] not in ("FAILED", "COMPLETED", "CRASHED"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["type"] == "FAILED" and "no approval within 10 s" in state["message"], state
    sample_run_id = state["message"].partition("batchgate rollback ")[2].rstrip("`)")
    assert sample_run_id and len(stack.posts()) == 3  # the drafts are left for review
    (pipeline,) = [r for r in stack.ledger_runs() if r["mode"] == "pipeline"]
    assert pipeline["outcome"] == "timed-out"


def _alive(pid: int) -> bool:
    try:  # a process stopped but not yet reaped by its parent (init) is a zombie: not running
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_serve_put_the_server_on_postgresql_with_two_workers_and_stop_stops_them_all(
    stack: Stack, postgres_url: str
) -> None:
    """DB=postgres: the server's tables are in the PostgreSQL database serve.sh created, holding
    this file's runs; WORKERS=2: two workers poll the pool, each with SERVE_DIR/worker-<n>.pid;
    scripts/stop.sh stops both and the server. (Last in the file: it stops the stack.)"""
    engine = sa.create_engine(sa.engine.make_url(postgres_url).set(database=stack.database))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM flow_run")).scalar_one() >= 3
    engine.dispose()
    state = stack.home / ".serve"
    pids = {name: int((state / f"{name}.pid").read_text())
            for name in ("worker-1", "worker-2", "server")}  # fmt: skip
    assert all(_alive(pid) for pid in pids.values()), pids
    # with no SERVE_HOST, the server listens on 127.0.0.1 only
    port = int(stack.ui.rpartition(":")[2])
    listening = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"}  # fmt: skip
    assert f"0100007F:{port:04X}" in listening and f"00000000:{port:04X}" not in listening
    polling = httpx.post(f"{stack.api}/work_pools/batchgate/workers/filter", json={}).json()
    assert {"batchgate-local", "batchgate-local-2"} <= {w["name"] for w in polling}
    stopped = subprocess.run([str(stack.home / "scripts" / "stop.sh")], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, pid in pids.items():
        assert f"stopped the {name}" in stopped.stdout
        assert not _alive(pid), f"{name} (pid {pid}) still runs after stop.sh"
    assert not list(state.glob("*.pid"))
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.api}/health", timeout=2)
