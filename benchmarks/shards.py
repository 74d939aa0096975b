"""One rate across processes: the ledger's bucket against Prefect's global concurrency limit.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python benchmarks/shards.py [--rate 50]

K processes (4, as 4 shards) each want to send requests as fast as the shared rate R allows.
- bucket: batchgate/bucket.py, slots taken in blocks from a row of a PostgreSQL ledger
  (BATCHGATE_TEST_PG_URL, a scratch schema dropped afterwards);
- gcl: a Prefect global concurrency limit with slot_decay_per_second = R, taken in blocks of B
  slots with prefect.concurrency.sync.rate_limit(occupy=B), each block spent 1/R apart.
Prints each one's aggregate rate as a fraction of R, the busiest second, and the cost of one
acquisition (a round trip to the ledger or to the Prefect server).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = os.environ.get(
    "BATCHGATE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
PROCESSES = 4


def _bucket(url: str, rate: float, count: int, block: int, start_at: float, out: list) -> None:
    from batchgate.bucket import SharedPacer
    from batchgate.ledger import Ledger

    pacer = SharedPacer(Ledger(sa.create_engine(url)), "bench:shared", rate, block=block)
    time.sleep(max(0.0, start_at - time.time()))
    stamps = []
    for _ in range(count):
        pacer.acquire()
        stamps.append(time.time())
    out.append((stamps, [], pacer.taken))


def _gcl(name: str, rate: float, count: int, block: int, start_at: float, out: list) -> None:
    from prefect.concurrency.sync import rate_limit

    time.sleep(max(0.0, start_at - time.time()))
    stamps, costs, left, next_at = [], [], 0, 0.0
    while len(stamps) < count:
        if left == 0:
            began = time.perf_counter()
            rate_limit(name, occupy=block, strict=True)
            costs.append(time.perf_counter() - began)
            left, next_at = block, time.time()
        time.sleep(max(0.0, next_at - time.time()))
        stamps.append(time.time())
        left -= 1
        next_at = stamps[-1] + 1.0 / rate
    out.append((stamps, costs, len(costs)))


def _run(target, args: tuple, count: int, block: int) -> tuple[list[float], list[float], int]:
    manager = multiprocessing.get_context("spawn").Manager()
    out = manager.list()
    start_at = time.time() + 4.0
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=(*args, count, block, start_at, out))
             for _ in range(PROCESSES)]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(600)
    stamps = sorted(s for stamps, _, _ in out for s in stamps)
    costs = [c for _, costs, _ in out for c in costs]
    return stamps, costs, sum(n for _, _, n in out)


def _take_costs(url: str, block: int) -> list[float]:
    """One block's round trip to the ledger, alone (the bucket's acquisition cost)."""
    from batchgate.bucket import ensure_tables, take_slots
    from batchgate.ledger import Ledger

    ledger = Ledger(sa.create_engine(url))
    ensure_tables(ledger)
    costs = []
    for _ in range(50):
        began = time.perf_counter()
        take_slots(ledger, "bench:cost", 1e-6, block, 0.0)
        costs.append(time.perf_counter() - began)
    return costs


def _report(name: str, rate: float, stamps: list[float], costs: list[float], blocks: int) -> None:
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - 1) / span
    busiest = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    cost = f", {statistics.median(costs) * 1000:.0f} ms per acquisition (median)" if costs else ""
    print(f"{name:7} {len(stamps)} requests in {span:.1f} s: {achieved:.1f}/s = "
          f"{achieved / rate:.0%} of R, busiest second {busiest} (R = {rate:g}), "
          f"{blocks} acquisitions{cost}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rate, count = args.rate, int(args.rate * args.seconds / PROCESSES)
    block = max(1, int(rate * 0.5 / 1))  # half a second of the rate, as a shard takes

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        stamps, _, blocks = _run(_bucket, (url, rate), count, block)
        _report("bucket", rate, stamps, _take_costs(url, block), blocks)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))

    if not os.environ.get("PREFECT_API_URL"):
        print("gcl     skipped: set PREFECT_API_URL to a Prefect server (make serve)")
        return
    from prefect.client.orchestration import get_client

    name = f"bench-rate-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, limit=block, slot_decay_per_second=rate
        )
    try:
        stamps, costs, blocks = _run(_gcl, (name, rate), count, block)
        _report("gcl", rate, stamps, costs, blocks)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


if __name__ == "__main__":
    main()
