"""Dead-letter operations on a real run against the fake Webflow server: list, inspect, retry,
skip and export, through the `batchgate dlq` commands."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import update

from batchgate.cli import main
from batchgate.config import load_job
from batchgate.dlq import redact
from batchgate.ledger import dlq
from batchgate.secrets import MASKED
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer
from tests.test_full_flow import webflow_job

pytestmark = pytest.mark.prefect
TOKEN = "test-token-4f9c2a"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", TOKEN)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def failed_run(prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]) -> Any:
    """A run with 2 validation (400) and 2 api-error (500) dead letters, and its live server."""
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 13)])
    faults = Faults(bad_request_slugs={"post-number-7", "post-number-8"},
                    error_slugs={"post-number-3", "post-number-9"})  # fmt: skip
    with WebflowServer(token=TOKEN, faults=faults) as server:
        job_path = webflow_job(tmp_path, server)
        full(load_job(job_path), return_state=True)
        ledger = open_ledger(load_job(job_path).ledger)
        yield server, job_path, ledger, ledger.runs()[0]["run_id"]


def test_list_and_inspect_show_patterns_history_and_actions(
    failed_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, job_path, _, run_id = failed_run
    code, out = cli(capsys, "dlq", "list", "--run", run_id, "--job", str(job_path))
    assert code == 0
    for expected in (
        "❌ DEAD LETTER QUEUE - Manual Review Required", f"Batch ID: {run_id}", "Total Failed: 4",
        "API Errors (500): 2 items (50%)", "Validation Errors (400): 2 items (50%)",
        "Recommendation: Verify destination API health", "FAILED ITEMS DETAILS:",
        '"Post number 9"', "Retry Attempts: 4", "Attempt 4 (", "BULK ACTIONS:",
        f"batchgate dlq retry --run {run_id} --item p-009", f"batchgate dlq inspect p-007 --run {run_id}",
        f"batchgate dlq retry --run {run_id} --error-type api-error",
        f"batchgate dlq export --run {run_id} --format csv",
    ):  # fmt: skip
        assert expected in out, expected
    code, out = cli(capsys, "dlq", "inspect", "p-007", "--job", str(job_path))
    assert code == 0
    assert "Error Type: validation" in out and "Status Code: 400" in out
    assert "Retry Attempts: 1" in out and "Attempt 1 (" in out  # permanent: one attempt
    assert "Fix the item in the source system" in out
    code, out = cli(capsys, "dlq", "inspect", "p-001", "--job", str(job_path))
    assert code == 1 and "p-001 has no dead letter" in out and "Traceback" not in out


def test_retry_by_error_type_touches_only_that_type(
    failed_run: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server, job_path, ledger, run_id = failed_run
    server.state.faults = Faults(bad_request_slugs={"post-number-7", "post-number-8"})  # 500s over
    before = len(server.state.requests)
    code, out = cli(capsys, "dlq", "retry", "--run", run_id, "--error-type", "api-error",
                    "--job", str(job_path))  # fmt: skip
    assert code == 0, out
    retry = next(r for r in ledger.runs() if r["mode"] == "retry")
    assert retry["parent_run_id"] == run_id and retry["outcome"] == "complete"
    assert {r["item_id"]: r["status"] for r in ledger.item_rows(retry["run_id"])} == {
        "p-003": "succeeded", "p-009": "succeeded"
    }  # fmt: skip
    writes = [path for _, method, path, _ in server.state.requests[before:] if method != "GET"]
    assert len(writes) == 2  # two writes, nothing else was sent
    states = {e["item_id"]: e["state"] for e in ledger.dlq_entries(run_id, states=None)}
    assert states == {"p-003": "retried", "p-009": "retried", "p-007": "open", "p-008": "open"}
    assert max(Counter(server.state.slugs()).values()) == 1
    code, out = cli(capsys, "dlq", "list", "--run", run_id, "--job", str(job_path))
    assert "Total Failed: 2" in out and "p-003" not in out
    # one item, no run named: found in its latest open entry; it fails again (still invalid)
    code, out = cli(capsys, "dlq", "retry", "--item", "p-007", "--job", str(job_path))
    assert code == 4 and "p-007: failed" in out and "circuit breaker" not in out
    (entry,) = ledger.dlq_entries(run_id, ["p-007"], states=None)
    assert entry["state"] == "retried" and "failed again" in entry["note"]
    code, out = cli(capsys, "dlq", "retry", "--run", run_id, "--error-type", "timeout",
                    "--job", str(job_path))  # fmt: skip
    assert code == 0 and "Nothing to retry" in out


def test_skip_closes_the_entry_and_export_writes_three_formats_without_secrets(
    failed_run: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, job_path, ledger, run_id = failed_run
    # a reviewer pastes the token into the skip reason: the raw ledger then holds it
    reason = f"duplicate of p-007 (checked with {TOKEN})"
    code, out = cli(capsys, "dlq", "skip", "p-008", "--reason", reason, "--job", str(job_path))
    assert code == 0 and "Skipped p-008" in out
    (entry,) = ledger.dlq_entries(run_id, ["p-008"], states=None)
    assert entry["state"] == "skipped" and entry["note"] == reason
    # and a message holding it, as a ledger written before batchgate redacted at the source has
    with ledger.engine.begin() as conn:
        conn.execute(update(dlq).where(dlq.c.run_id == run_id, dlq.c.item_id == "p-009")
                     .values(message=f"500 for key {TOKEN}"))  # fmt: skip
    raw = {e["item_id"]: e for e in ledger.dlq_entries(run_id, states=None)}
    assert TOKEN in raw["p-008"]["note"] and TOKEN in raw["p-009"]["message"]  # really there
    frames = {}
    for fmt in ("csv", "json", "parquet"):
        path = tmp_path / f"dlq.{fmt}"
        code, out = cli(capsys, "dlq", "export", "--run", run_id, "--format", fmt, "-o", str(path),
                        "--all", "--job", str(job_path))  # fmt: skip
        assert code == 0 and "Exported 4 dead letter(s)" in out
        assert TOKEN.encode() not in path.read_bytes()
        frames[fmt] = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](
            path
        )
    for frame in frames.values():  # read back: a compressed file may hide the bytes, not the text
        assert TOKEN not in frame.to_json()
        assert sorted(frame["item_id"]) == ["p-003", "p-007", "p-008", "p-009"]
        row = frame.set_index("item_id").loc["p-009"]
        assert row["error_type"] == "api-error" and int(row["status_code"]) == 500
        assert len(json.loads(row["history"])) == 4
        assert row["message"] == f"500 for key {MASKED}"
        note = frame.set_index("item_id").loc["p-008", "note"]
        assert note == f"duplicate of p-007 (checked with {MASKED})"
    code, out = cli(capsys, "dlq", "export", "--run", run_id, "-o", str(tmp_path / "open.csv"),
                    "--job", str(job_path))  # fmt: skip
    assert "Exported 3 dead letter(s)" in out  # without --all: the open ones


def test_redaction_of_secrets_in_exported_text() -> None:
    assert redact("401 for Authorization: Bearer abc.def-123", []) == (
        "401 for Authorization: Bearer **********"
    )
    assert redact("token s3cr3t-value leaked", ["s3cr3t-value"]) == "token ********** leaked"
    assert redact(None, ["x"]) is None
