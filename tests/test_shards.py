"""Shards (issue 13, points 2-4): one rate across processes, and a full run split over workers."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import sqlalchemy as sa

from batchgate.bucket import SharedPacer
from batchgate.ledger import Ledger

RATE = 20.0  # slots per second, shared
TAKERS = 4
EACH = 15


def _take(url: str, key: str, count: int, start_at: float, out: str) -> None:
    ledger = Ledger(sa.create_engine(url))
    pacer = SharedPacer(ledger, key, RATE, block=3)
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        pacer.acquire()
        stamps.append(time.time())
    Path(out).write_text("\n".join(repr(s) for s in stamps) + f"\n#{pacer.taken}")


def test_processes_taking_from_one_bucket_keep_its_rate_together(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """Four OS processes take slots at once: together they never beat the bucket's rate (in
    any one-second window, and overall), each took blocks rather than one slot a round trip."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # all begin together, after their imports
    outs = [tmp_path / f"taker-{n}.txt" for n in range(TAKERS)]
    procs = [
        context.Process(
            target=_take, args=(pg_schema_url, "webflow:shared", EACH, start_at, str(o))
        )
        for o in outs
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    stamps, blocks = [], 0
    for out in outs:
        lines = out.read_text().splitlines()
        blocks += int(lines[-1][1:])
        stamps += [float(x) for x in lines[:-1]]
    stamps.sort()
    total = TAKERS * EACH
    assert len(stamps) == total
    span = stamps[-1] - stamps[0]
    # n slots spaced 1/R apart span (n-1)/R; a little slack for wake-up jitter only
    assert span >= (total - 1) / RATE * 0.97, span
    assert span <= (total - 1) / RATE * 1.6, span  # and they did not starve each other
    busiest = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    assert busiest <= RATE + 1, busiest
    assert blocks <= total // 3 + TAKERS, blocks
