"""How close to Notion's limit (180 requests per 60-second window) does reading a workspace get?

Both readers read the same blog workspace from the fake Notion API, which enforces Notion's limit
as a fixed window (180 requests per 60 s, developers.notion.com request-limits) and answers after
50-250 ms:

- batchgate's NotionReader: one pacer per token keeping 98% of the budget in every 60 s, shared by
  4 page readers; a 429 holds every reader for its Retry-After and shrinks the budget.
- a plain script: one request after another as fast as answers come, sleeping Retry-After on a
  429 (what a hand-written migration usually does).

Reported: pages, requests, wall time, requests/s sustained (all requests / wall time) as a share
of 3/s, and the 429s. Run: python benchmarks/notion_read.py [--pages 300] [--plain-pages 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchgate import window_pacer  # noqa: E402
from batchgate.notion import NotionReader  # noqa: E402
from tests.fakes.notion_server import NotionFaults, NotionServer, NotionState  # noqa: E402

TOKEN = "notion-test-token"
LIMIT = 3.0


def workspace(pages: int) -> NotionServer:
    state = NotionState(token=TOKEN, window_requests=int(LIMIT * 60), window_s=60.0,
                        faults=NotionFaults(latency=(0.05, 0.25)))  # fmt: skip
    server = NotionServer(state)
    server.add_pages(pages, seed=9)
    return server


def api_requests(server: NotionServer) -> list[tuple[float, str, str, int]]:
    return [r for r in server.state.requests if r[2].startswith("/v1/")]


def with_batchgate(server: NotionServer) -> int:
    window_pacer._PACERS.clear()
    reader = NotionReader(server.base_url, TOKEN)
    source = reader.data_source(server.state.database_id)
    pages = list(reader.query(str(source["id"]), None))
    bodies = reader.bodies([str(p["id"]) for p in pages])
    reader.close()
    return len(bodies)


def plain_script(server: NotionServer) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}", "Notion-Version": "2025-09-03"}
    client = httpx.Client(base_url=server.base_url, headers=headers, timeout=30)

    def call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        while True:
            answer = client.request(method, path, **kwargs)
            if answer.status_code == 429:
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            answer.raise_for_status()
            return dict(answer.json())

    def children(block_id: str) -> list[dict[str, Any]]:
        out, cursor = [], None
        while True:
            params = {"page_size": 100, **({"start_cursor": cursor} if cursor else {})}
            answer = call("GET", f"/blocks/{block_id}/children", params=params)
            out += answer["results"]
            cursor = answer.get("next_cursor")
            if not answer.get("has_more"):
                break
        for block in out:
            if block.get("has_children"):
                block["children"] = children(block["id"])
        return out

    database = call("GET", f"/databases/{server.state.database_id}")
    source_id = database["data_sources"][0]["id"]
    pages, body = [], {"page_size": 100}
    while True:
        answer = call("POST", f"/data_sources/{source_id}/query", json=body)
        pages += answer["results"]
        if not answer.get("has_more"):
            break
        body["start_cursor"] = answer["next_cursor"]
    for page in pages:
        children(page["id"])
    client.close()
    return len(pages)


def measure(name: str, pages: int, read: Any) -> dict[str, Any]:
    server = workspace(pages)
    started = time.monotonic()
    read_pages = read(server)
    seconds = time.monotonic() - started
    requests = api_requests(server)
    server.close()
    statuses = Counter(status for *_, status in requests)
    ok = statuses[200]
    row = {"reader": name, "pages": read_pages, "requests": len(requests), "ok": ok,
           "throttled": statuses[429], "seconds": seconds, "rate": ok / seconds}  # fmt: skip
    print(f"{name:<16} {read_pages:>5} pages {len(requests):>6} requests ({ok} ok, "
          f"{statuses[429]} x 429) in {seconds:7.1f} s: {ok / seconds:.2f} ok requests/s = "
          f"{100 * ok / seconds / LIMIT:.1f}% of {LIMIT:g}/s", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--plain-pages", type=int, default=300)
    args = parser.parse_args()
    ours = measure("batchgate", args.pages, with_batchgate)
    plain = measure("plain script", args.plain_pages, plain_script)
    print(f"\nbatchgate reads {ours['rate'] / plain['rate']:.2f}x as fast as the plain script, "
          f"with {ours['throttled']} 429s against {plain['throttled']}.")  # fmt: skip


if __name__ == "__main__":
    main()
