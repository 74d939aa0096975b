"""The README's story, run as written: examples/blog/story.sh against a real Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.prefect


def test_the_whole_story_runs_on_examples_blog(prefect_api: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SANDBOX_PORT": str(free_port()),
           "BATCHGATE": str(Path(sys.executable).with_name("batchgate")),
           "PYTHON": sys.executable}  # fmt: skip
    story = subprocess.run([str(ROOT / "examples" / "blog" / "story.sh"), str(tmp_path)], env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    out = story.stdout
    assert story.returncode == 0, out[-4000:] + story.stderr[-4000:]
    for expected in (
        "❌ Blocked: 3", "❌ Blocked: 0", "✅ Sample Batch Complete", "↩️  Rollback Complete",
        "--yes given: approving the sample.", "❌ DEAD LETTER QUEUE - Manual Review Required",
        "API Errors (500): 2 items (67%)", "post-012: succeeded", "post-027: succeeded",
        "post-033: failed", "Skipped post-033", "Exported 3 dead letter(s)", "Story complete",
    ):  # fmt: skip
        assert expected in out, expected
    assert "Traceback" not in out + story.stderr
    assert (tmp_path / "dlq.csv").read_text().count("post-0") >= 3
