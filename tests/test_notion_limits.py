"""Notion's documented limits (issue 20, points 7 and 8): the fixed-window budget, 429 with its
rate_limit_reason, 5xx faults held by every reader, a blocked integration, pages whose blocks the
integration may not read, the 10,000-result query cap, result_type and several data sources.
Sources: developers.notion.com request-limits and query-large-data-sources (see
../shared/reference/apis.md)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchgate.errors import SourceError
from batchgate.notion import RETRY_AFTER_MAX_S, NotionReader, retry_after_s
from batchgate.schema import BLOG
from batchgate.window_pacer import WindowPacer
from blocks.notion_source import NotionSource
from tests.fakes.notion_server import NotionFaults, NotionServer, NotionState

TOKEN = "notion-test-token"
FAST = {"rate_per_s": 1000.0}  # the fake's limit is raised to match where pace is not the point


def reader(server: NotionServer, **kwargs: Any) -> NotionReader:
    return NotionReader(server.base_url, TOKEN, **{**FAST, **kwargs})


def source(server: NotionServer, **kwargs: Any) -> NotionSource:
    return NotionSource(base_url=server.base_url, database_id=server.state.database_id,
                        token=TOKEN, requests_per_second=1000, **kwargs)  # fmt: skip


def roomy(**kwargs: Any) -> NotionState:
    """A fake whose window budget no test here reaches unless it means to."""
    return NotionState(window_requests=100_000, **kwargs)


# --- the pacer: a budget per window, spent at any pace ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_pacer_keeps_the_budget_in_every_window_and_bursts_within_it() -> None:
    clock = Clock()
    pacer = WindowPacer(5, 10.0, min_interval=0.1, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(12):
        pacer.acquire()
        sent.append(round(clock.now, 6))
    assert sent[:5] == [0.0, 0.1, 0.2, 0.3, 0.4]  # a burst, a short interval apart
    assert sent[5:10] == [10.0, 10.1, 10.2, 10.3, 10.4]  # then the window's oldest must leave
    for start in sent:  # no 10-second window, wherever it starts, holds more than 5
        assert sum(start <= t < start + 10.0 for t in sent) <= 5


def test_a_hold_stops_every_caller_and_a_429_shrinks_the_budget() -> None:
    clock = Clock()
    pacer = WindowPacer(8, 1.0, clock=clock, sleep=clock.sleep)
    pacer.acquire()
    pacer.hold(3.0)
    assert pacer.held_for() == 3.0
    pacer.acquire()
    assert clock.now == 3.0
    pacer.slow_down()
    assert pacer.budget == 5
    for _ in range(10):
        pacer.recover()
    assert pacer.budget == 8


def test_one_pacer_per_token_whatever_reads_with_it() -> None:
    """The limit is per connection: the source's reader and a refresh's share one budget."""
    url = "https://api.notion.test/v1"
    first, again = NotionReader(url, "secret-a"), NotionReader(url, "secret-a")
    other = NotionReader(url, "secret-b")
    assert first.pacer is again.pacer and first.pacer is not other.pacer
    assert first.pacer.budget == 176 and first.pacer.window_s == 60.0  # 98% of 180 per 60 s
    for reader_ in (first, again, other):
        reader_.close()


@pytest.mark.parametrize("header, expected", [
    (None, 7.0), ("", 7.0), ("2", 2.0), ("0.5", 0.5), ("-3", 0.0),
    ("nan", 7.0), ("NaN", 7.0), ("soon", 7.0), ("1e12", RETRY_AFTER_MAX_S),
    ("inf", RETRY_AFTER_MAX_S), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date passed
])  # fmt: skip
def test_retry_after_is_parsed_safely(header: str | None, expected: float) -> None:
    assert retry_after_s(header, 7.0) == expected


def test_retry_after_as_an_http_date() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s(soon, 7.0) <= 30


# --- the fake's fixed window and the reader's pace ------------------------------------------------


def test_the_fake_counts_requests_per_fixed_window_and_names_the_reason() -> None:
    with NotionServer(NotionState(window_requests=3, window_s=30)) as server:
        url = f"{server.base_url}/databases/{server.state.database_id}"
        headers = {"Authorization": f"Bearer {TOKEN}", "Notion-Version": "2025-09-03"}
        answers = [httpx.get(url, headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.json()["code"] == "rate_limited"
    reason = limited.json()["additional_data"]["rate_limit_reason"]
    assert reason == "public_api_request_rate_limit"
    assert 1 <= int(limited.headers["Retry-After"]) <= 30  # the time until the window resets


def test_the_reader_spends_the_window_budget_without_a_429() -> None:
    """A window of 1 s and 20 requests stands for Notion's 60 s and 180: the reader paced for it
    (at 98% of the budget) is never refused over several windows."""
    state = NotionState(window_requests=20, window_s=1.0)
    with NotionServer(state) as server:
        server.add_pages(3, bodies=False)
        notion = reader(server, rate_per_s=20.0, window_s=1.0)
        for _ in range(50):
            notion.page(next(iter(server.state.pages)))
    statuses = Counter(status for _, _, _, status in state.requests)
    assert statuses == {200: 50}


def test_a_reader_over_the_budget_waits_out_every_429_with_every_thread() -> None:
    state = NotionState(window_requests=15, window_s=1.0)
    sent: list[float] = []
    throttled: list[tuple[float, float]] = []
    with NotionServer(state) as server:
        server.add_pages(12)
        notion = reader(server, rate_per_s=200.0, window_s=1.0)  # 13x the fake's budget
        notion._client.event_hooks = {
            "request": [lambda request: sent.append(time.monotonic())],
            "response": [lambda answer: answer.status_code == 429 and throttled.append(
                (time.monotonic(), float(answer.headers["Retry-After"])))],
        }  # fmt: skip
        pages = list(notion.query(server.state.data_source_id, None))
        bodies = notion.bodies([p["id"] for p in pages])
    assert len(pages) == 12 and all(bodies.values())
    assert throttled and notion.throttled == len(throttled)
    for came_back, retry_after in throttled:  # every reader waited: none left within it
        early = [t - came_back for t in sent if came_back + 0.1 < t < came_back + retry_after]
        assert not early, f"sent {early} s after a 429 with Retry-After {retry_after}"


# --- faults ----------------------------------------------------------------------------------------


def test_502_503_504_529_are_retried_with_every_reader_held() -> None:
    faults = NotionFaults(error_rate=0.2, statuses=(502, 503, 504, 529), seed=5)
    state = roomy(faults=faults)
    sent: list[float] = []
    failed: list[float] = []
    with NotionServer(state) as server:
        server.add_pages(12)
        notion = reader(server, backoff_base_s=0.4)
        notion._client.event_hooks = {
            "request": [lambda request: sent.append(time.monotonic())],
            "response": [lambda answer: answer.status_code >= 500 and failed.append(
                time.monotonic())],
        }  # fmt: skip
        pages = list(notion.query(server.state.data_source_id, None))
        bodies = notion.bodies([p["id"] for p in pages])
    statuses = Counter(status for _, _, _, status in state.requests)
    assert len(pages) == 12 and all(bodies.values())
    assert {502, 503, 504, 529} <= set(statuses), statuses  # each fault seen, each retried
    assert notion.faults == len(failed) == sum(statuses[s] for s in (502, 503, 504, 529))
    for came_back in failed:  # a shared backoff (0.4 s at least): no reader left within it
        early = [t - came_back for t in sent if came_back + 0.1 < t < came_back + 0.4]
        assert not early, f"sent {early} s after a 5xx"


def test_a_blocked_integration_stops_at_once_with_one_clear_line() -> None:
    state = NotionState(faults=NotionFaults(blocked=True))
    with NotionServer(state) as server, pytest.raises(SourceError) as caught:
        source(server).read(BLOG)
    message = str(caught.value)
    assert "\n" not in message and "blocked this integration" in message
    assert "public_api_request_blocked" in message and "Fix:" in message and TOKEN not in message
    assert len(state.requests) == 1  # never retried


def test_a_page_whose_blocks_cannot_be_read_fails_alone() -> None:
    with NotionServer(roomy()) as server:
        ids = server.add_pages(5)
        nested = next(b for b in server.state.children[ids[3]] if b["has_children"])
        server.state.faults.forbidden = {ids[1]: 404, nested["id"]: 403}
        batch = source(server).read(BLOG)
    by_id = {item.id: item for item in batch.items}
    assert len(batch.items) == 5
    assert [bool(by_id[p].type_errors) for p in ids] == [False, True, False, True, False]
    (missing,), (forbidden,) = by_id[ids[1]].type_errors, by_id[ids[3]].type_errors
    assert missing[0] == "body_html" and "HTTP 404 object_not_found" in missing[1]
    assert "HTTP 403 restricted_resource" in forbidden[1] and nested["id"] in forbidden[1]
    assert "Connections" in missing[2]
    assert by_id[ids[0]].data["body_html"].startswith("<h1>Part one of post 1</h1>")


def test_a_database_or_data_source_not_shared_still_stops_the_read() -> None:
    shared = "share the database with the integration"
    with NotionServer(roomy()) as server, pytest.raises(SourceError, match=shared):
        NotionSource(base_url=server.base_url, database_id="0" * 32, token=TOKEN,
                     requests_per_second=1000).read(BLOG)  # fmt: skip


# --- the 10,000-result cap, result_type, several data sources -------------------------------------


def test_a_12000_page_data_source_is_read_whole() -> None:
    state = roomy()
    with NotionServer(state) as server:
        server.add_pages(12_000, bodies=False)
        pages = list(reader(server).query(server.state.data_source_id, None))
    assert len(pages) == 12_000 and len({p["id"] for p in pages}) == 12_000
    # the first query stopped at the cap; the next asked from the last created_time read
    windows = [q.get("filter") for q in state.queries if "start_cursor" not in q]
    assert windows[0] is None and len(windows) == 2
    assert windows[1] == {"timestamp": "created_time",
                          "created_time": {"on_or_after": pages[9_999]["created_time"]}}  # fmt: skip


def test_the_cap_is_split_under_the_job_filter_through_the_source() -> None:
    """A cap of 25 stands for 10,000: 70 published pages (and drafts) read whole, each once,
    the job's filter kept in every window."""
    state = roomy(result_limit=25)
    with NotionServer(state) as server:
        published = server.add_pages(70)
        server.add_pages(10, start=71, status="Draft")
        batch = NotionSource(base_url=server.base_url, database_id=server.state.database_id,
                             token=TOKEN, requests_per_second=1000,
                             filter={"Status": "Published"}).read(BLOG)  # fmt: skip
    assert [item.id for item in batch.items] == published  # oldest first, none twice
    assert [item.seq for item in batch.items] == list(range(70))
    status = {"property": "Status", "status": {"equals": "Published"}}
    firsts = [q.get("filter") for q in state.queries if "start_cursor" not in q]
    assert firsts[0] == status and len(firsts) == 3
    assert all(f["and"][0] == status for f in firsts[1:])


def test_result_type_page_is_sent_and_a_wiki_s_data_sources_are_never_items() -> None:
    state = roomy(wiki=True)
    with NotionServer(state) as server:
        server.add_pages(4, bodies=False)
        url = f"{server.base_url}/data_sources/{state.data_source_id}/query"
        headers = {"Authorization": f"Bearer {TOKEN}", "Notion-Version": "2025-09-03"}
        default = httpx.post(url, headers=headers, json={}).json()["results"]
        pages = list(reader(server).query(state.data_source_id, None))
    assert Counter(r["object"] for r in default) == {"data_source": 1, "page": 4}  # by default
    assert len(pages) == 4 and all(p["object"] == "page" for p in pages)
    assert all(q["result_type"] == "page" for q in state.queries[1:])


def test_several_data_sources_are_a_warning_naming_them() -> None:
    archive = {"id": "5b2c6a43-5f4e-4d1a-9b8e-3f1f0f6c2a11", "name": "Archive"}
    with NotionServer(roomy(extra_data_sources=[archive])) as server:
        server.add_pages(2)
        batch = source(server).read(BLOG)
        named = NotionSource(base_url=server.base_url, database_id=server.state.database_id,
                             data_source_id=server.state.data_source_id, token=TOKEN,
                             requests_per_second=1000).read(BLOG)  # fmt: skip
    (note,) = batch.notes
    assert "2 data sources" in note and "'Posts'" in note and "'Archive'" in note
    assert archive["id"] in note and "source.data_source_id" in note
    assert len(batch.items) == 2 and named.notes == []  # the one named: nothing to say


# --- through the dry-run ----------------------------------------------------------------------------


@pytest.mark.prefect
def test_the_dry_run_blocks_the_unreadable_page_and_names_the_data_sources(
    tmp_path: Path, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchgate.config import load_job
    from flows.dry_run import dry_run
    from tests.fakes.webflow_server import WebflowServer
    from tests.test_notion_migration import migration_job, report_items

    monkeypatch.setenv("NOTION_TOKEN", TOKEN)
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")
    archive = {"id": "5b2c6a43-5f4e-4d1a-9b8e-3f1f0f6c2a11", "name": "Archive"}
    state = roomy(extra_data_sources=[archive], faults=NotionFaults(error_rate=0.05, seed=3,
                                                                    statuses=(502, 504)))  # fmt: skip
    with NotionServer(state) as notion, WebflowServer() as webflow:
        ids = notion.add_pages(6)
        state.faults.forbidden = {ids[2]: 404}
        report = dry_run(load_job(migration_job(tmp_path, notion, webflow)))
    assert (report["total"], report["blocked"]) == (6, 1)  # the 502/504s retried, not the end
    statuses = Counter(status for _, _, _, status in state.requests)
    assert statuses[502] + statuses[504] > 0, statuses
    (blocked,) = [i for i in report_items(tmp_path) if i["status"] == "blocked"]
    assert blocked["id"] == ids[2]
    (issue,) = [i for i in blocked["issues"] if i["field"] == "body_html"]
    assert "Notion refused reading its blocks" in issue["message"] and "404" in issue["message"]
    assert "Connections" in issue["fix"]
    assert "2 data sources" in report["report"] and "'Archive'" in report["report"]


def test_a_re_read_before_the_write_fails_its_item_or_stops_the_run_as_notion_answers() -> None:
    """A page re-read for its expiring file URLs: no longer shared fails that item for good (the
    DLQ), a blocked integration stops the run; neither is retried."""
    from batchgate.errors import FatalError, PermanentError

    state = roomy()
    with NotionServer(state) as server:
        (page_id,) = server.add_pages(1, hosted=True)
        stale = {"media_expires_at": "2020-01-01T00:00:00.000Z"}
        state.faults.forbidden = {page_id: 403}
        with pytest.raises(PermanentError, match="403 restricted_resource") as gone:
            source(server).refresh(page_id, stale)
        state.faults.blocked = True
        with pytest.raises(FatalError, match="public_api_request_blocked") as blocked:
            source(server).refresh(page_id, stale)
    assert gone.value.status_code == 403 and blocked.value.status_code == 429


@pytest.mark.prefect
def test_the_cli_stops_a_blocked_integration_with_one_line(
    tmp_path: Path, prefect_api: str
) -> None:
    import os
    import subprocess
    import sys

    from tests.fakes.webflow_server import WebflowServer
    from tests.test_notion_migration import migration_job

    state = NotionState(faults=NotionFaults(blocked=True))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "NOTION_TOKEN": TOKEN,
           "WEBFLOW_TOKEN": "test-token"}  # fmt: skip
    batchgate = str(Path(sys.executable).with_name("batchgate"))
    with NotionServer(state) as notion, WebflowServer() as webflow:
        job = migration_job(tmp_path, notion, webflow)
        result = subprocess.run([batchgate, "dry-run", "--job", str(job)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
    said = [line for line in result.stderr.splitlines() if "blocked this integration" in line]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(said) == 1, result.stderr
    assert "public_api_request_blocked" in said[0] and "Fix:" in said[0]
    assert len(state.requests) == 1  # asked once, never retried
