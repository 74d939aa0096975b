"""How long a 100-item Webflow create with bodies and images takes under the fake's latency model
(tests/fakes/webflow_server.py WRITE_MODEL), against the write timeout blocks/webflow.py gives it.

    .venv/bin/python -m benchmarks.webflow_write_timeout [--items 100] [--body-kb 12] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from pydantic import SecretStr

from blocks.webflow import WebflowDestination
from tests.fakes.webflow_server import WRITE_MODEL, Faults, WebflowServer


def records(count: int, body_kb: int, run: int) -> list[tuple[dict, None, None]]:
    """Posts with a body of about body_kb KB and a hero image each."""
    body = "<p>" + "word " * (body_kb * 1024 // 5) + "</p>"
    return [({"title": f"Post {n}", "slug": f"r{run}-post-{n}", "body_html": body,
              "hero_image_url": f"https://img.example.com/{n}.jpg"}, None, None)
            for n in range(count)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--body-kb", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with WebflowServer(faults=Faults(**WRITE_MODEL)) as server:  # type: ignore[arg-type]
        dest = WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                                  token=SecretStr(server.state.token), rate_per_minute=60_000)  # fmt: skip
        dest.check()
        timeout = dest._write_timeout(args.items)
        for run in range(args.runs):
            started = time.monotonic()
            results = dest.upsert_many(records(args.items, args.body_kb, run), draft=True)  # type: ignore[arg-type]
            took = time.monotonic() - started
            failed = [r for r in results if isinstance(r, Exception)]
            print(f"run {run + 1}: {args.items} items ({args.body_kb} KB bodies, 1 image each) "
                  f"in {took:.1f} s, timeout {timeout:.0f} s ({timeout / took:.2f}x), "
                  f"{len(failed)} failed")  # fmt: skip
        dest.close()


if __name__ == "__main__":
    main()
