"""How long does `batchgate dry-run` on examples/blog take, the first time and the second?

No PREFECT_API_URL in either mode, each on a fresh copy of examples/blog and a fresh state:

- local server (today): the first command starts a local Prefect server in the background, the
  second reuses it (the state dir in a temporary folder; the server is stopped at the end).
- temporary server (before): BATCHGATE_LOCAL_SERVER=0, so every command starts Prefect's own
  temporary server inside itself, as batchgate did before. Its start-up limit is raised to 120 s so
  a loaded machine measures slowness instead of failing with Prefect's 20 s default.

Reported: wall time of each run and the ratio before / today. The target: the second run < 5 s.
Run: python benchmarks/cli_startup.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))


def timed(cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([BATCHGATE, "dry-run", "--job", "blog/job.yaml"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    elapsed = time.perf_counter() - started
    if result.returncode != 2 or "Dry-Run Validation Report" not in result.stdout:  # 3 blocked
        sys.exit(f"dry-run exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return elapsed


def measure(tmp: Path, name: str, **extra: str) -> tuple[float, float]:
    work = tmp / name
    shutil.copytree(ROOT / "examples" / "blog", work / "blog",
                    ignore=shutil.ignore_patterns("cms.db*", ".batchgate"))  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BATCHGATE_"))}
    env = {**base, "PREFECT_HOME": str(work / "prefect-home"), **extra}
    return timed(work, env), timed(work, env)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as folder:
        tmp = Path(folder)
        state = tmp / "state"
        try:
            today = measure(tmp, "local", BATCHGATE_STATE_DIR=str(state))
        finally:
            subprocess.run([BATCHGATE, "server", "stop"], capture_output=True,
                           env={**os.environ, "BATCHGATE_STATE_DIR": str(state)})  # fmt: skip
        before = measure(tmp, "temporary", BATCHGATE_LOCAL_SERVER="0",
                         PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")  # fmt: skip
    print("batchgate dry-run --job examples/blog/job.yaml, wall time (no PREFECT_API_URL)")
    print(f"{'':34}{'first run':>12}{'second run':>12}")
    print(f"{'temporary server per command':34}{before[0]:>11.1f}s{before[1]:>11.1f}s")
    print(f"{'local background server (reused)':34}{today[0]:>11.1f}s{today[1]:>11.1f}s")
    print(f"second run: {before[1] / today[1]:.1f}x faster; target < 5 s: "
          f"{'met' if today[1] < 5 else 'NOT met'} ({today[1]:.1f} s)")  # fmt: skip
    print(f"figure: dry_run_second_s {today[1]:.2f}")


if __name__ == "__main__":
    main()
