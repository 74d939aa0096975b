"""The README's story, run as written: examples/blog/story.sh against a real Prefect API."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.prefect


def test_the_whole_story_runs_on_examples_blog(prefect_api: str, tmp_path: Path) -> None:
    # port 0: the sandbox binds a free port and the story reads which, so no port can be taken
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "SANDBOX_PORT": "0",
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
    assert re.search(r"Webflow sandbox on http://127\.0\.0\.1:[1-9]\d*/v2\n", out)  # the port it got
    with (tmp_path / "dlq.csv").open(encoding="utf-8") as handle:
        exported = {r["item_id"]: r for r in csv.DictReader(handle)}
    # the full run's queue: all three retried; post-033 failed again, and its skip closed the
    # retry run's entry, not this one
    notes = {item: (r["error_type"], r["state"], r["note"]) for item, r in exported.items()}
    assert notes.keys() == {"post-012", "post-027", "post-033"}
    for item, (error_type, after) in {"post-012": ("api-error", "succeeded"),
                                      "post-027": ("api-error", "succeeded"),
                                      "post-033": ("validation", "failed again")}.items():  # fmt: skip
        assert notes[item][:2] == (error_type, "retried"), notes[item]
        assert re.fullmatch(rf"retried in \S+-retry-\S+: {after}.*", notes[item][2]), notes[item]
    # the last step rolls back every item the Webflow run wrote: its 49, none left or failed
    final = out.split("== 9. Roll the Webflow run back", 1)[1]
    assert "↩️  Rollback Complete" in final
    assert "Items: 49 rolled back, 0 left alone (changed since), 0 failed" in final
