"""The `batchgate` console script, run as a real subprocess against a real Prefect API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_JOB, blog_row, copy_example

pytestmark = pytest.mark.prefect
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))


@pytest.fixture
def cli(prefect_api: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    env.pop("BATCHGATE_LEDGER_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BATCHGATE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    return run


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_example_dry_run_exits_2_with_report_and_json(cli, tmp_path: Path) -> None:
    copy_example(tmp_path / "blog")
    result = cli("dry-run", "--job", "blog/job.yaml", "--json", "out.json")
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("🔍 Dry-Run Validation Report")
    assert "❌ BLOCKED (must fix before proceeding):" in result.stdout
    assert "NEXT STEPS:" in result.stdout
    counts = json.loads((tmp_path / "out.json").read_text())
    assert (counts["total"], counts["ready"], counts["warnings"], counts["blocked"]) == (
        52,
        45,
        4,
        3,
    )
    assert_no_traceback(result)

    listed = cli("runs")
    assert listed.returncode == 0
    assert counts["run_id"] in listed.stdout and "completed" in listed.stdout


def test_nothing_blocked_exits_0(cli, write_csv, write_job) -> None:
    write_csv([blog_row(1), blog_row(2, title="t" * 120)])
    result = cli("dry-run", "--job", str(write_job()))
    assert result.returncode == 0, result.stderr
    assert "⚠️  Warnings: 1 (50%)" in result.stdout


@pytest.mark.parametrize(
    ("job_text", "expected"),
    [
        ("source: {type: file, path: posts.csv}\nbatch: {sise: 5}\n", "batch.sise"),
        (
            "source: {type: file, path: posts.csv}\nvalidation: {rules: {titel_length: {max: 3}}}\n",
            "validation.rules.titel_length: unknown rule",
        ),
        ("source: {type: file, path: nowhere.csv}\n", "nowhere.csv does not exist"),
    ],
)
def test_config_and_source_errors_exit_1_in_one_paragraph(
    cli, tmp_path: Path, job_text: str, expected: str
) -> None:
    (tmp_path / "job.yaml").write_text(job_text + f"ledger: {{path: {tmp_path / 'l.db'}}}\n")
    result = cli("dry-run", "--job", "job.yaml")
    assert result.returncode == 1
    assert expected in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert_no_traceback(result)


def test_bad_file_content_exits_1_naming_row_and_column(cli, write_csv, write_job) -> None:
    path = write_csv([blog_row(1), blog_row(2, summary="naïve")])
    path.write_bytes(path.read_bytes().replace("ï".encode(), b"\xef"))
    result = cli("dry-run", "--job", str(write_job()))
    assert result.returncode == 1
    assert "(row 2), column 'summary'" in result.stderr
    assert_no_traceback(result)


def test_usage_errors_exit_1(cli) -> None:
    assert cli("dry-run").returncode == 1
    assert cli("no-such-command").returncode == 1
    assert cli().returncode == 1


def test_runs_on_an_empty_ledger(cli) -> None:
    result = cli("runs")
    assert result.returncode == 0 and "No runs recorded" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "nonsense"], "'nonsense' is not a flow run id. Fix:"),
        (["sample", "--job", "JOB", "--count", "7"], "--count is 7. Fix: choose between 3 and 5"),
        (["pipeline", "--job", "JOB", "--sample-count", "2"], "--sample-count is 2. Fix:"),
        (["dlq", "retry"], "name the run: batchgate dlq retry --run RUN_ID"),
        (["dlq", "inspect", "p-1", "--ledger", "LEDGER"], "p-1 has no dead letter"),
    ],
)  # fmt: skip
def test_review_sample_and_dlq_mistakes_are_one_clear_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchgate.cli import main

    args = [a.replace("JOB", str(EXAMPLE_JOB)).replace("LEDGER", f"sqlite:///{tmp_path}/l.db")
            for a in args]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
