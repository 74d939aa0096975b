"""The Notion source: block-by-block HTML, the reader against the fake Notion API, the mapping."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from batchgate.errors import SourceError
from batchgate.notion import NotionReader, build_filter, check_properties, page_row
from batchgate.notion_html import blocks_html, rich_html
from batchgate.schema import BLOG
from tests.fakes.notion_server import NotionFaults, NotionServer, NotionState, block, text

TOKEN = "notion-test-token"


# --- HTML, block type by block type -------------------------------------------------------------


def html_of(*blocks: dict[str, Any]) -> str:
    def attach(b: dict[str, Any]) -> dict[str, Any]:
        kids = b.pop("_children", None)
        if kids:
            b["children"] = [attach(k) for k in kids]
        return b

    return blocks_html([attach(b) for b in blocks])


def test_text_blocks_and_annotations() -> None:
    assert html_of(block("paragraph", [text("a "), text("b", bold=True), text(" c")])) == (
        "<p>a <strong>b</strong> c</p>"
    )  # text split over several rich-text items joined back
    for kind, tag in (("heading_1", "h1"), ("heading_2", "h2"), ("heading_3", "h3"),
                      ("quote", "blockquote")):  # fmt: skip
        assert html_of(block(kind, [text("T")])) == f"<{tag}>T</{tag}>"
    parts = [text("i", italic=True), text("s", strike=True), text("u", underline=True),
             text("c", code=True), text("l", link="https://x.test/?a=1&b=2"),
             text("all", bold=True, italic=True)]  # fmt: skip
    assert rich_html(parts) == (
        '<em>i</em><s>s</s><u>u</u><code>c</code><a href="https://x.test/?a=1&amp;b=2">l</a>'
        "<em><strong>all</strong></em>"
    )
    assert rich_html([text("x", link="javascript:alert(1)")]) == "x"  # no script links


def test_everything_is_escaped() -> None:
    evil = "<script>alert('x')</script> & \"q\""
    out = html_of(block("paragraph", [text(evil)]), block("heading_1", [text(evil)]),
                  block("code", [text(evil)], language="html"))  # fmt: skip
    assert "<script>" not in out
    assert out.count("&lt;script&gt;") == 3 and "&amp;" in out


def test_lists_group_and_nest() -> None:
    out = html_of(
        block("bulleted_list_item", [text("a")], children=[
            block("bulleted_list_item", [text("a1")]),
            block("numbered_list_item", [text("n1")]),
        ]),
        block("bulleted_list_item", [text("b")]),
        block("numbered_list_item", [text("one")]),
        block("numbered_list_item", [text("two")]),
        block("paragraph", [text("after")]),
    )  # fmt: skip
    assert out == ("<ul><li>a<ul><li>a1</li></ul><ol><li>n1</li></ol></li><li>b</li></ul>"
                   "<ol><li>one</li><li>two</li></ol><p>after</p>")  # fmt: skip


def test_code_image_divider_and_unknown_blocks() -> None:
    code = block("code", [text("if a < b:\n"), text("    pass")], language="python",
                 caption=[text("cap")])  # fmt: skip
    assert html_of(code) == (  # Webflow's API empties <pre>: inline code, a line each
        "<p><code>if a &lt; b:</code><br><code>&nbsp;&nbsp;&nbsp;&nbsp;pass</code></p><p><em>cap</em></p>"
    )
    image = block("image", [], type="file",
                  file={"url": "https://f.test/x.png?sig=1&t=2", "expiry_time": "2030-01-01"},
                  caption=[text("A <cat>")])  # fmt: skip
    assert html_of(image) == ('<figure class="w-richtext-figure-type-image w-richtext-align-fullwidth">'
                              '<div><img src="https://f.test/x.png?sig=1&amp;t=2" alt="A &lt;cat&gt;"></div>'
                              '<figcaption>A &lt;cat&gt;</figcaption></figure>')  # fmt: skip
    assert html_of(block("divider")) == "<hr>"
    toggle = block("toggle", [text("More")], children=[block("paragraph", [text("in")])])
    assert html_of(toggle) == "<p>More</p><p>in</p>"  # unknown kinds keep their text


# --- the reader against the fake Notion API -----------------------------------------------------


def reader(server: NotionServer, **kwargs: Any) -> NotionReader:
    return NotionReader(server.base_url, TOKEN, rate_per_s=kwargs.pop("rate", 500), **kwargs)


def test_notion_version_is_required_and_errors_have_notion_bodies() -> None:
    with NotionServer() as server:
        answer = httpx.get(f"{server.base_url}/databases/{server.state.database_id}",
                           headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert answer.status_code == 400 and answer.json()["code"] == "missing_version"
        with pytest.raises(SourceError, match="share the database with the integration"):
            reader(server).data_source("0" * 32)
        bad = NotionReader(server.base_url, "wrong", rate_per_s=500)
        with pytest.raises(SourceError, match="refused the token.*NOTION_TOKEN"):
            bad.data_source(server.state.database_id)


def test_query_and_blocks_paginate_and_nest() -> None:
    with NotionServer(NotionState(rate_per_s=1000, burst=1000)) as server:
        server.add_pages(230, seed=5)
        server.add_pages(20, start=231, status="Draft")
        notion = reader(server)
        source = notion.data_source(server.state.database_id)
        query = build_filter({"Status": "Published"}, source)
        assert query == {"property": "Status", "status": {"equals": "Published"}}
        pages = list(notion.query(source["id"], query))
        assert len(pages) == 230 and len({p["id"] for p in pages}) == 230
        calls = Counter(path.split("?")[0].rsplit("/", 1)[-1]
                        for _, _, path, _ in server.state.requests)  # fmt: skip
        assert calls["query"] == 3  # 100 + 100 + 30
        long = max(pages, key=lambda p: len(server.state.children[p["id"]]))
        blocks = notion.blocks(long["id"])
        assert len(blocks) == len(server.state.children[long["id"]]) > 100  # two pages of children
        nested = next(b for b in blocks if b["type"] == "bulleted_list_item" and b["has_children"])
        assert [c["type"] for c in nested["children"]] == ["bulleted_list_item"] * 2


def test_429_retry_after_holds_every_reader() -> None:
    """Against a token bucket (an average with bursts, the limit's older description); the fixed
    window, 5xx faults and a blocked integration: tests/test_notion_limits.py."""
    state = NotionState(rate_per_s=20, burst=2)
    sent: list[float] = []  # when each request left
    throttled: list[tuple[float, float]] = []  # when each 429 came back, and its Retry-After
    with NotionServer(state) as server:
        server.add_pages(12)
        notion = reader(server, rate=60)  # 3x what the server allows
        notion._client.event_hooks = {
            "request": [lambda request: sent.append(time.monotonic())],
            "response": [lambda answer: answer.status_code == 429 and throttled.append(
                (time.monotonic(), float(answer.headers["Retry-After"])))],
        }  # fmt: skip
        pages = list(notion.query(server.state.data_source_id, None))
        bodies = notion.bodies([p["id"] for p in pages])
    statuses = Counter(status for _, _, _, status in state.requests)
    assert len(pages) == 12 and all(bodies.values())
    assert statuses[429] > 0 and notion.throttled == statuses[429] == len(throttled)
    # every 429 waited out, by every reader: nothing left within its Retry-After (a request
    # given its slot just before the 429 came back may still leave in the first moments)
    for came_back, retry_after in throttled:
        early = [t - came_back for t in sent if came_back + 0.3 < t < came_back + retry_after]
        assert not early, f"sent {early} s after a 429 with Retry-After {retry_after}"


def test_a_repeated_cursor_is_an_error_not_a_loop() -> None:
    state = NotionState(rate_per_s=1000, burst=1000, faults=NotionFaults(repeat_cursor=True))
    with NotionServer(state) as server:
        server.add_pages(250)
        with pytest.raises(SourceError, match="cursor .* twice.*stopping instead of looping"):
            list(reader(server).query(server.state.data_source_id, None))
        assert len(state.requests) < 10


def test_pace_stays_under_the_limit_without_429() -> None:
    """At the default pace (180 requests per 60 s window), Notion's default limit never says 429
    (over several windows, scaled down: tests/test_notion_limits.py)."""
    state = NotionState()
    with NotionServer(state) as server:
        server.add_pages(2)
        notion = NotionReader(server.base_url, TOKEN)
        for _ in range(8):
            notion.data_source(server.state.database_id)
    assert all(status == 200 for _, _, _, status in state.requests)


# --- mapping pages to items ---------------------------------------------------------------------


def test_page_properties_map_to_blog_fields() -> None:
    with NotionServer(NotionState(rate_per_s=1000, burst=1000)) as server:
        (page_id,) = server.add_pages(1, hosted=True)
        notion = reader(server)
        page = notion.page(page_id)
        row = page_row(page, notion.blocks(page_id), dict(_mapping()))
        files = server.base_url.removesuffix("/v1")
    assert row["title"] == "Post 1: notes on <things>"  # title parts joined
    assert (row["slug"], row["status"], row["category"]) == ("post-1", "Published", "Data")
    assert row["tags"] == ["notion", "t1"] and row["featured"] is False
    assert row["publish_date"] == "2025-02-02"
    assert row["hero_image_url"].startswith(f"{files}/files/cover-1.png?X-Amz-Signature=")
    assert row["media_expires_at"]  # a Notion-hosted file: its URL expires
    assert row["source_url"].startswith("https://www.notion.so/")
    assert "<h1>Part one of post 1</h1>" in row["body_html"]
    again = page_row(notion.page(page_id), notion.blocks(page_id), dict(_mapping()))
    assert again["hero_image_url"] != row["hero_image_url"]  # signed anew on every read
    assert again["content_key"] == row["content_key"]  # yet the content is the same


def _mapping() -> dict[str, str]:
    from batchgate.config import NOTION_PROPERTIES

    return NOTION_PROPERTIES


def test_an_unexpected_property_type_names_the_property_and_type() -> None:
    schema = {"properties": {"Name": {"type": "title"}, "Slug": {"type": "rich_text"},
                             "Category": {"type": "people"}, "Cover image": {"type": "files"}}}  # fmt: skip
    with pytest.raises(SourceError, match="'Category' \\(mapped to category\\) is of type people"):
        check_properties(_mapping(), schema)
    with pytest.raises(SourceError, match="no property 'Slug'.*source.properties.slug"):
        check_properties(_mapping(), {"properties": {"Name": {"type": "title"}}})
    with pytest.raises(SourceError, match="'Cover image', of type files"):
        build_filter({"Cover image": "x"}, schema)
    assert set(BLOG.required) - {"id"} <= set(_mapping())  # the id is the page id


def test_expiring_file_urls_are_read_again_just_before_the_write() -> None:
    from blocks.notion_source import NotionSource

    with NotionServer(NotionState(rate_per_s=1000, burst=1000)) as server:
        (page_id,) = server.add_pages(1, hosted=True)
        source = NotionSource(base_url=server.base_url, database_id=server.state.database_id,
                              token=TOKEN, requests_per_second=1000)  # fmt: skip
        row = page_row(reader(server).page(page_id), [], dict(_mapping()))
        fresh = source.refresh(page_id, row)  # an hour left: used as it is
        assert fresh is row
        stale = {**row, "media_expires_at": "2020-01-01T00:00:00.000Z", "title": "kept"}
        before = len(server.state.requests)
        renewed = source.refresh(page_id, stale)
    assert renewed["hero_image_url"] != row["hero_image_url"]  # signed anew
    assert renewed["media_expires_at"] > "2020" and renewed["title"] == "kept"
    assert [r[2].split("?")[0] for r in server.state.requests[before:]][:2] == [
        f"/v1/pages/{page_id}", f"/v1/blocks/{page_id}/children"
    ]  # fmt: skip
