"""examples/rest-destination end to end: a connector of the user's own, in its own installed
package, through the plain `batchgate` CLI (separate processes) against the example's products
API on 127.0.0.1: dry-run, sample, approve, full, a DLQ retry once the API accepts the refused
item, rollback; the same by `class:` path; and the clear line a broken connector gets."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from batchgate.config import LedgerConfig
from blocks.ledger import open_ledger
from tests.conftest import ROOT
from tests.test_conformance import example_server

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
EXAMPLE = ROOT / "examples" / "rest-destination"
PAUSED = re.compile(r"paused for review: flow run ([0-9a-f-]{36})")
TOKEN = "s3cr3t-products-token"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """The example package, installed as a user would (make setup does it on a fresh clone)."""
    if not any(p.name == "rest-products" for p in entry_points(group="batchgate.destinations")):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(EXAMPLE)],
            check=True,
            timeout=600,
        )


class Api:
    """The example's products API in this process, reached by the CLI over HTTP."""

    def __init__(self, token: str | None = None) -> None:
        self.server, self.shop = example_server().serve(0, token=token)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def skus(self) -> list[str]:
        return sorted(self.shop.products)


@pytest.fixture
def api() -> Iterator[Api]:
    served = Api(token=TOKEN)
    yield served
    served.server.shutdown()
    served.server.server_close()


def run(prefect_api: str, cwd: Path, api: Api, *args: str) -> tuple[int, str]:
    """`batchgate ARGS` in its own process, no terminal, output in a file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PRODUCTS_API=api.url, PRODUCTS_TOKEN=TOKEN)
    with tempfile.NamedTemporaryFile("w+", suffix=".log", dir=cwd, delete=False) as log:
        code = subprocess.run(
            [BATCHGATE, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        ).returncode
    return code, Path(log.name).read_text()


def copy_example(to: Path) -> Path:
    for name in ("job.yaml", "job-class.yaml", "products.csv"):
        shutil.copy(EXAMPLE / name, to / name)
    return to / "job.yaml"


def ledger_of(cwd: Path) -> Any:
    return open_ledger(LedgerConfig(path=str(cwd / ".batchgate" / "ledger.db")))


def approve_when_paused(prefect_api: str, cwd: Path, api: Api, proc: Any, out: Path) -> None:
    deadline = time.monotonic() + 240
    while not (found := PAUSED.search(out.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.3)
    code, said = run(prefect_api, cwd, api, "approve", found.group(1), "--notes", "looks right")
    assert code == 0, said


def test_the_installed_connector_dry_run_sample_approve_full_dlq_retry_and_rollback(
    prefect_api: str, tmp_path: Path, api: Api
) -> None:
    copy_example(tmp_path)
    code, out = run(prefect_api, tmp_path, api, "dry-run", "--job", "job.yaml")
    assert code == 2 and "Ready: 37" in out and "Blocked: 3" in out, out[-3000:]
    assert "Guarantees of this destination: a rollback restores updated items" in out
    assert api.skus == []  # a dry-run writes nothing

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PRODUCTS_API=api.url, PRODUCTS_TOKEN=TOKEN)
    out_file = tmp_path / "pipeline.out"
    proc = subprocess.Popen(
        [
            BATCHGATE,
            "pipeline",
            "--job",
            "job.yaml",
            "--allow-blocked",
            "--sample-ids",
            "P-001",
            "P-002",
            "P-003",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out_file.open("w"),
        stderr=subprocess.STDOUT,
    )
    approve_when_paused(prefect_api, tmp_path, api, proc, out_file)
    assert proc.wait(300) == 3, out_file.read_text()[-3000:]  # 36/37: partial success
    text = out_file.read_text()
    assert "Sample Batch Complete" in text and "Successful: 36/37" in text
    assert "category 'Pets' does not exist" in text and "Traceback" not in text
    assert len(api.skus) == 36 and "P-033" not in api.skus
    ledger = ledger_of(tmp_path)
    (full,) = [r for r in ledger.runs() if r["mode"] == "full"]
    assert TOKEN not in json.dumps(ledger.run(full["run_id"]), default=str)
    assert "${PRODUCTS_TOKEN" in ledger.run(full["run_id"])["job_json"]
    assert TOKEN not in text

    code, out = run(prefect_api, tmp_path, api, "dlq", "list", "--run", full["run_id"])
    assert code == 0 and "P-033" in out and "422" in out, out[-3000:]
    api.shop.categories.append("Pets")  # the refusal is fixed at the API
    code, out = run(prefect_api, tmp_path, api, "dlq", "retry", "--run", full["run_id"])
    assert code == 0 and "P-033: succeeded" in out, out[-3000:]
    assert len(api.skus) == 37

    code, out = run(prefect_api, tmp_path, api, "rollback", full["run_id"])
    assert code == 0 and "Items: 33 rolled back" in out, out[-3000:]
    assert api.skus == ["P-001", "P-002", "P-003", "P-033"]  # the sample's and the retry's stay
    assert TOKEN not in out


def test_the_connector_named_by_its_class_path(prefect_api: str, tmp_path: Path, api: Api) -> None:
    copy_example(tmp_path)
    code, out = run(prefect_api, tmp_path, api, "full", "--job", "job-class.yaml")
    assert code == 3 and "Successful: 36/37" in out, out[-3000:]
    assert len(api.skus) == 36


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "{type: python, class: 'batchgate_rest_products:Prodcts', options: {base_url: x}}",
            "'batchgate_rest_products' has no 'Prodcts'",
        ),
        (
            "{type: python, class: 'no_such_pkg.rest:Products'}",
            "the module 'no_such_pkg' of 'no_such_pkg.rest:Products' cannot be found",
        ),
        ("{type: python, class: 'json:dumps'}", "is a function, not a DestinationBase subclass"),
        ("{type: rest-prodcts}", "Did you mean 'rest-products'?"),
        ("{type: python}", "destination.class is missing"),
    ],
)
def test_a_broken_connector_is_one_clear_line_and_exit_1(
    prefect_api: str, tmp_path: Path, api: Api, destination: str, expected: str
) -> None:
    copy_example(tmp_path)
    job = (tmp_path / "job.yaml").read_text()
    job = job[: job.index("destination:")] + f"destination: {destination}\n"
    (tmp_path / "broken.yaml").write_text(job)
    code, out = run(prefect_api, tmp_path, api, "dry-run", "--job", "broken.yaml")
    assert code == 1 and expected in out, out
    assert "Traceback" not in out and "Fix:" in out
    assert len([line for line in out.splitlines() if line.strip()]) == 1, out


BARE = '''
from batchgate.connectors import Capabilities, DestinationBase
from batchgate_rest_products import Products


class Bare(Products):
    """The example connector without snapshots, versions or restore: the base's answers."""

    capabilities = Capabilities(group_size=50, idempotent_upsert=True)
    snapshot_many = DestinationBase.snapshot_many
    versions = DestinationBase.versions
    restore_many = DestinationBase.restore_many
'''


def test_without_versions_a_rollback_refuses_to_restore_an_update_and_says_why(
    prefect_api: str, tmp_path: Path, api: Api
) -> None:
    """The guarantee the connector cannot give is stated in the dry-run and kept by the
    rollback: a created item is deleted, an updated one is left alone with the reason."""
    copy_example(tmp_path)
    (tmp_path / "bare_products.py").write_text(BARE)  # beside the job file: importable
    job = (
        (tmp_path / "job-class.yaml")
        .read_text()
        .replace("batchgate_rest_products:Products", "bare_products:Bare")
    )
    (tmp_path / "bare.yaml").write_text(job)
    code, out = run(prefect_api, tmp_path, api, "dry-run", "--job", "bare.yaml")
    assert "refuses to restore updated ones (no snapshots, no versions, no restore)" in out, out

    api.shop.categories.append("Pets")
    code, out = run(prefect_api, tmp_path, api, "full", "--job", "bare.yaml")
    assert code == 0, out[-3000:]
    csv = tmp_path / "products.csv"
    csv.write_text(
        csv.read_text().replace("P-002,Mini Stapler 2,113.21", "P-002,Mini Stapler 2,99.00")
    )
    code, out = run(prefect_api, tmp_path, api, "full", "--job", "bare.yaml")
    assert code == 0 and api.shop.products["P-002"]["price"] == 99.0, out[-3000:]
    fulls = [r for r in ledger_of(tmp_path).runs() if r["mode"] == "full"]
    second = max(fulls, key=lambda r: r["started_at"])

    # --job: a class beside its job file is importable once the job file is read
    code, out = run(prefect_api, tmp_path, api, "rollback", second["run_id"], "--job", "bare.yaml")
    assert code == 3, out[-3000:]  # left alone, as a conflict is
    assert "P-002 (P-002): conflict - not restored: the destination declares no versions" in out
    assert api.shop.products["P-002"]["price"] == 99.0


# --- the pipeline deployment on a worker ------------------------------------------------------------

FLOW_RUN = re.compile(r"UUID: ([0-9a-f-]{36})")


def prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def wait_state(api: str, flow_run_id: str, types: set[str], deadline_s: float = 300) -> dict:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in types:
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run {flow_run_id} never reached {types}: {run['state']}")


def test_the_pipeline_deployment_on_a_worker_runs_the_installed_connector(
    prefect_server: str, tmp_path: Path, api: Api
) -> None:
    """The job is plain data in the flow run's parameters (its token as ${PRODUCTS_TOKEN}); the
    worker imports the connector from its own environment and reads the token there."""
    from tests.test_shards import _kill_tree

    shutil.copy(EXAMPLE / "products.csv", tmp_path / "products.csv")
    pool = f"rest-{os.getpid()}-{int(time.time())}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=prefect_server,
        BATCHGATE_HOME=str(ROOT),
        PRODUCTS_TOKEN=TOKEN,
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    prefect(env, "work-pool", "create", pool, "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--name", "pipeline", "--pool", pool)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "worker",
            "start",
            "--pool",
            pool,
            "--name",
            "rest-worker",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        job = yaml.safe_load((EXAMPLE / "job.yaml").read_text())
        job["source"]["path"] = str(tmp_path / "products.csv")
        job["destination"]["options"] = {"base_url": api.url, "token": "${PRODUCTS_TOKEN}"}
        job["ledger"] = {"path": str(tmp_path / "ledger.db")}
        params = {"job": job, "sample_ids": ["P-001", "P-002", "P-003"], "allow_blocked": True}
        started = prefect(
            env, "deployment", "run", "pipeline/pipeline", "--params", json.dumps(params)
        )
        flow_run_id = FLOW_RUN.search(started).group(1)
        wait_state(prefect_server, flow_run_id, {"PAUSED"})
        assert api.skus == ["P-001", "P-002", "P-003"]
        code, said = run(prefect_server, tmp_path, api, "approve", flow_run_id)
        assert code == 0, said
        done = wait_state(prefect_server, flow_run_id, {"COMPLETED", "FAILED", "CRASHED"})
    finally:
        _kill_tree(worker.pid, signal.SIGTERM)
    assert len(api.skus) == 36 and "P-033" not in api.skus, (tmp_path / "worker.log").read_text()
    flow_run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}").json()
    assert TOKEN not in json.dumps(flow_run["parameters"]) and done["state"]["type"] == "COMPLETED"
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))
    (full,) = [r for r in ledger.runs() if r["mode"] == "full"]
    assert full["outcome"] == "partial-success" and full["succeeded"] == 36  # 3 from the sample
