"""Notion blocks to what Webflow's RichText keeps: every block type rendered or reported lost,
no code block Webflow's API would empty, links to migrated pages as their URL on the site, word
counts of what is published, and the dry-run's warning (or block) for what is lost."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from batchgate.config import NOTION_PROPERTIES, ValidationConfig
from batchgate.models import Item
from batchgate.notion import page_row
from batchgate.notion_html import html_text, render, video_player
from batchgate.notion_links import PageLinks
from batchgate.schema import BLOG
from batchgate.transform import blog_record
from batchgate.validation import build_rules, validate_items
from batchgate.validation.rules import Context
from blocks.notion_source import NotionSource
from tests.fakes.notion_blocks import LOST_TYPES, attached, every_block_type, external, raw, table
from tests.fakes.notion_server import NotionServer, NotionState, block, blog_page, hosted_file, text

OTHER = "1429989f-e8ac-4eff-bc8f-57f56486db54"  # a migrated page the body links to


def links(page_id: str) -> tuple[str, str] | None:
    return ("/post/the-other-post", "The other post") if page_id == OTHER.replace("-", "") else None


def rendered(*blocks: dict[str, Any]) -> Any:
    return render(attached(list(blocks)), links)


# Every block type of Notion's API (apis.md, "Blocks"), and what becomes of it: HTML Webflow's
# RichText keeps (the substrings), or a loss the dry-run reports (its type).
CASES = [
    (block("paragraph", [text("plain")]), ["<p>plain</p>"], []),
    (block("heading_1", [text("H")]), ["<h1>H</h1>"], []),
    (block("heading_2", [text("H")]), ["<h2>H</h2>"], []),
    (
        block(
            "heading_3",
            [text("H")],
            is_toggleable=True,
            children=[block("paragraph", [text("in")])],
        ),
        ["<h3>H</h3><p>in</p>"],
        [],
    ),
    (block("bulleted_list_item", [text("b")]), ["<ul><li>b</li></ul>"], []),
    (block("numbered_list_item", [text("n")]), ["<ol><li>n</li></ol>"], []),
    (block("quote", [text("q")]), ["<blockquote>q</blockquote>"], []),
    (
        block("code", [text("if a < b:\n\tpass\n")], language="python"),
        ["<p><code>if a &lt; b:</code><br><code>&nbsp;&nbsp;&nbsp;&nbsp;pass</code></p>"],
        [],
    ),
    (
        raw("image", external("https://img.test/a.png", "A cat")),
        [
            '<figure class="w-richtext-figure-type-image w-richtext-align-fullwidth"><div>'
            '<img src="https://img.test/a.png" alt="A cat"></div>'
            "<figcaption>A cat</figcaption></figure>"
        ],
        [],
    ),
    (raw("divider"), ["<hr>"], []),
    (raw("to_do", {"rich_text": [text("t")], "checked": True}), ["<ul><li>☑ t</li></ul>"], []),
    (
        raw("toggle", {"rich_text": [text("More")]}, [block("paragraph", [text("in")])]),
        ["<p>More</p><p>in</p>"],
        [],
    ),
    (
        raw("callout", {"rich_text": [text("Note")], "icon": {"type": "emoji", "emoji": "💡"}}),
        ["<blockquote>💡 Note</blockquote>"],
        [],
    ),
    (
        raw("synced_block", {"synced_from": None}, [block("paragraph", [text("s")])]),
        ["<p>s</p>"],
        [],
    ),
    (
        raw(
            "synced_block",
            {"synced_from": {"type": "block_id", "block_id": "b1"}},
            [block("paragraph", [text("copy")])],
        ),
        ["<p>copy</p>"],
        [],
    ),
    (
        raw("synced_block", {"synced_from": {"type": "block_id", "block_id": "b1"}}),
        [],
        ["synced_block"],
    ),  # a copy whose original the reader could not read
    (
        raw("child_page", {"title": "Other"}, id=OTHER),
        ['<p><a href="/post/the-other-post">Other</a></p>'],
        [],
    ),
    (raw("child_page", {"title": "Private"}), ["<p>Private</p>"], ["child_page"]),
    (raw("child_database", {"title": "Tasks"}), [], ["child_database"]),
    (
        raw("equation", {"expression": "a^2 + b^2 < c^2"}),
        ["<p><code>a^2 + b^2 &lt; c^2</code></p>"],
        [],
    ),
    (
        raw(
            "column_list",
            {},
            [
                raw("column", {}, [block("paragraph", [text("L")])]),
                raw("column", {}, [block("paragraph", [text("R")])]),
            ],
        ),
        ["<p>L</p><p>R</p>"],
        [],
    ),
    (
        raw("link_to_page", {"type": "page_id", "page_id": OTHER}),
        ['<p><a href="/post/the-other-post">The other post</a></p>'],
        [],
    ),
    (raw("link_to_page", {"type": "page_id", "page_id": "0" * 32}), [], ["link_to_page"]),
    (
        table([["Key", "Value"], ["a", "1"]]),
        ["<ul><li><strong>Key</strong>: a; <strong>Value</strong>: 1</li></ul>"],
        [],
    ),
    (table([["a", "1"], ["b", ""]], header=False), ["<ul><li>a · 1</li><li>b</li></ul>"], []),
    (
        raw("embed", {"url": "https://codepen.io/x/pen/1", "caption": []}),
        ['<p><a href="https://codepen.io/x/pen/1">https://codepen.io/x/pen/1</a></p>'],
        [],
    ),
    (
        raw("embed", {"url": "https://youtu.be/abcdefgh", "caption": []}),
        ['src="https://www.youtube.com/embed/abcdefgh"'],
        [],
    ),
    (
        raw("bookmark", {"url": "https://b.test/", "caption": [text("B")]}),
        ['<p><a href="https://b.test/">B</a></p>'],
        [],
    ),
    (
        raw("video", external("https://vimeo.com/12345", "Talk")),
        [
            '<figure class="w-richtext-figure-type-video w-richtext-align-fullwidth"',
            '<iframe allowfullscreen="true" frameborder="0" scrolling="no" '
            'src="https://player.vimeo.com/video/12345" title="Talk"></iframe>',
            "<figcaption>Talk</figcaption>",
        ],
        [],
    ),
    (
        raw("video", external("https://cdn.test/clip.mp4")),
        ['<a href="https://cdn.test/clip.mp4">'],
        [],
    ),
    (raw("video", {**hosted_file("https://files.test/clip.mp4"), "caption": []}), [], ["video"]),
    (
        raw("pdf", external("https://d.test/spec.pdf", "Spec")),
        ['<p><a href="https://d.test/spec.pdf">Spec</a></p>'],
        [],
    ),
    (
        raw("file", external("https://d.test/data.csv")),
        ['<a href="https://d.test/data.csv">data.csv</a>'],
        [],
    ),
    (
        raw("file", {**hosted_file("https://files.test/x.zip"), "caption": [], "name": "x.zip"}),
        [],
        ["file"],
    ),
    (
        raw("audio", external("https://a.test/ep.mp3")),
        ['<a href="https://a.test/ep.mp3">ep.mp3</a>'],
        [],
    ),
    (
        raw("link_preview", {"url": "https://github.com/o/r/pull/1"}),
        ['<a href="https://github.com/o/r/pull/1">'],
        [],
    ),
    (raw("breadcrumb"), [], ["breadcrumb"]),
    (raw("table_of_contents", {"color": "default"}), [], ["table_of_contents"]),
    (raw("template", {"rich_text": [text("New")]}), [], ["template"]),
    (raw("unsupported"), [], ["unsupported"]),
    (raw("a_type_from_2030", {}), [], ["a_type_from_2030"]),
]


@pytest.mark.parametrize(("one", "html", "lost"), CASES, ids=[c[0]["type"] for c in CASES])
def test_every_block_type_is_rendered_or_reported(
    one: dict, html: list[str], lost: list[str]
) -> None:
    out = rendered(one)
    for part in html:
        assert part in out.html
    assert [entry["type"] for entry in out.lost] == lost
    assert out.html or out.lost  # nothing vanishes silently
    assert all(entry["reason"] for entry in out.lost)


def test_nothing_is_written_as_a_code_block_webflow_would_empty() -> None:
    blocks, kept = every_block_type(3, OTHER)
    out = render(attached(blocks), links)
    assert "<pre" not in out.html
    # inline code only: every <code> sits in a paragraph or a list item, never on its own
    for code in re.finditer(r"<code>", out.html):
        opened = out.html.rfind("<p>", 0, code.start()), out.html.rfind("<li>", 0, code.start())
        closed = out.html.rfind("</p>", 0, code.start()), out.html.rfind("</li>", 0, code.start())
        assert max(opened) > max(closed)
    for part in kept:
        assert part in out.html, part
    assert {entry["type"] for entry in out.lost} == LOST_TYPES


def test_code_keeps_its_lines_and_indentation() -> None:
    code = block(
        "code",
        [text("def f():\n"), text("    if x:  # two\n\t\treturn '<a>'\n\n    pass")],
        caption=[text("f.py")],
    )
    out = rendered(code)
    assert out.html == (
        "<p><code>def f():</code><br>"
        "<code>&nbsp;&nbsp;&nbsp;&nbsp;if x:&nbsp;&nbsp;# two</code><br>"
        f"<code>{'&nbsp;' * 8}return &#x27;&lt;a&gt;&#x27;</code><br><code>&nbsp;</code><br>"
        "<code>&nbsp;&nbsp;&nbsp;&nbsp;pass</code></p><p><em>f.py</em></p>"
    )
    assert out.text == "def f(): if x: # two return '<a>' pass f.py"


def test_links_to_migrated_pages_become_their_url_on_the_site() -> None:
    para = block(
        "paragraph",
        [
            text("one", link=f"/{OTHER.replace('-', '')}"),
            text(" two", link=f"/{OTHER}#heading"),
            text(" gone", link="/" + "a" * 32),
            {
                "type": "mention",
                "mention": {"type": "page", "page": {"id": OTHER}},
                "plain_text": " it",
                "href": f"https://www.notion.so/{OTHER.replace('-', '')}",
                "annotations": {},
            },
            {
                "type": "mention",
                "mention": {"type": "page", "page": {"id": "b" * 32}},
                "plain_text": " private",
                "href": f"https://www.notion.so/{'b' * 32}",
                "annotations": {},
            },
            text(" x", link="https://www.notion.so/Some-title-" + OTHER.replace("-", "")),
        ],
    )
    out = rendered(para)
    assert out.html == (
        '<p><a href="/post/the-other-post">one</a><a href="/post/the-other-post"> two</a> gone'
        '<a href="/post/the-other-post"> it</a>'
        f'<a href="https://www.notion.so/{"b" * 32}"> private</a>'
        '<a href="/post/the-other-post"> x</a></p>'
    )
    assert out.lost == [
        {
            "type": "link",
            "reason": f"' gone' links to a Notion page that is not migrated ({'a' * 32})",
        }
    ]


def test_page_links_come_from_the_query_or_one_look_up_per_page() -> None:
    source = "7d5f-" + "1" * 27
    fetched: list[str] = []
    pages = {
        "a" * 32: {
            "id": "a" * 32,
            "parent": {"type": "data_source_id", "data_source_id": source},
            "properties": {
                "Slug": {"type": "rich_text", "rich_text": [text("later")]},
                "Name": {"type": "title", "title": [text("Later")]},
            },
        },
        "b" * 32: {
            "id": "b" * 32,
            "parent": {"type": "data_source_id", "data_source_id": "other"},
            "properties": {"Slug": {"type": "rich_text", "rich_text": [text("elsewhere")]}},
        },
    }

    def fetch(key: str) -> dict:
        fetched.append(key)
        return pages[key]

    def slug_of(page: dict) -> str | None:
        return "".join(t["plain_text"] for t in page["properties"]["Slug"]["rich_text"]) or None

    resolve = PageLinks("/blog/{slug}", slug_of, source.replace("-", ""), fetch)
    resolve.add(
        {
            "id": OTHER,
            "properties": {
                "Slug": {"type": "rich_text", "rich_text": [text("first")]},
                "Name": {"type": "title", "title": [text("First")]},
            },
        }
    )
    assert resolve(OTHER.replace("-", "")) == ("/blog/first", "First")
    assert resolve("a" * 32) == ("/blog/later", "Later")  # in the data source: migrated
    assert resolve("b" * 32) is None  # another database's page
    assert resolve("a" * 32) and fetched == ["a" * 32, "b" * 32]  # each looked up once


def test_word_counts_count_what_is_published() -> None:
    blocks = attached(
        [
            block(
                "paragraph", [text("one "), text("two", bold=True), text("three")]
            ),  # 'twothree' is one
            raw("child_database", {"title": "never published words"}),
            block("code", [text("x = 1\n")]),
            raw("image", external("https://img.test/a.png", "alt words")),
        ]
    )
    out = render(blocks)
    assert out.text == "one twothree x = 1 alt words"  # the caption is shown; the database is not
    record = blog_record("p1", {"title": "T", "body_html": out.html, "body_text": out.text})
    assert record["word_count"] == 7 and record["reading_time"] == 1
    assert html_text("<p>a<br>b</p><ul><li>c</li></ul>") == "a b c"


def test_video_players() -> None:
    assert video_player("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=1") == (
        "https://www.youtube.com/embed/dQw4w9WgXcQ"
    )
    assert (
        video_player("https://youtu.be/dQw4w9WgXcQ") == "https://www.youtube.com/embed/dQw4w9WgXcQ"
    )
    assert video_player("https://vimeo.com/channels/staff/76979871") == (
        "https://player.vimeo.com/video/76979871"
    )
    assert video_player("https://example.com/v.mp4") is None


# --- the dry-run's rule --------------------------------------------------------------------------


def lost_item(lost: list[dict[str, str]]) -> Item:
    data = {
        "id": "p1",
        "title": "Post one",
        "slug": "post-one",
        "category": "Data",
        "hero_image_url": None,
        "lost_blocks": lost,
    }
    return Item("p1", 0, "https://www.notion.so/post-one", data)


def lost_issues(config: dict[str, Any], lost: list[dict[str, str]]) -> list[Any]:
    rules = [
        r
        for r in build_rules(ValidationConfig.model_validate(config))
        if r.name == "notion_lost_content"
    ]
    (result,) = validate_items([lost_item(lost)], rules, Context())
    return result.issues


def test_what_is_lost_is_a_warning_naming_the_page_and_the_block_type() -> None:
    lost = render(attached([raw("child_database", {"title": "Tasks"}), raw("breadcrumb")])).lost
    (issue,) = lost_issues({"preset": "blog"}, lost)
    assert issue.severity == "warning" and issue.field == "lost_blocks"
    assert "Post one" in issue.message and "2 Notion blocks" in issue.message
    assert "child_database (a database inside the page" in issue.message
    assert "breadcrumb" in issue.message
    assert "severity: blocked" in issue.fix and issue.impact
    assert lost_issues({"preset": "blog"}, []) == []


def test_a_strict_job_blocks_a_page_that_would_lose_content() -> None:
    lost = [{"type": "file", "reason": "x.zip: a file hosted by Notion"}]
    config = {"preset": "blog", "rules": {"notion_lost_content": {"severity": "blocked"}}}
    (issue,) = lost_issues(config, lost)
    assert issue.severity == "blocked" and "file (x.zip" in issue.message


def test_a_page_read_again_before_its_write_keeps_its_links() -> None:
    """A page whose file URLs expire soon is read again before its write (NotionSource.refresh):
    its links to migrated pages are resolved again, by one look-up of the linked page."""
    state = NotionState(rate_per_s=1000, burst=1000)
    with NotionServer(state) as server:
        files = server.base_url.removesuffix("/v1")
        soon = timedelta(minutes=5)
        pages = [blog_page(n, state, hosted=True, files=files, expires_in=soon) for n in (1, 2)]
        for page, other in zip(pages, reversed(pages), strict=True):
            page["parent"] = {"type": "data_source_id", "data_source_id": state.data_source_id}
            link = text("see", link=f"/{other['id'].replace('-', '')}")
            image = raw("image", {**hosted_file(f"{files}/files/b.png", soon), "caption": []})
            server.add(page, [block("paragraph", [link]), image])
        source = NotionSource(
            base_url=server.base_url,
            database_id=state.database_id,
            token=state.token,
            requests_per_second=1000,
        )
        first = source.read(BLOG).items[0]
        assert '<p><a href="/post/post-2">see</a></p>' in first.data["body_html"]
        fresh = source.refresh(first.id, first.data)
    assert fresh["body_html"] != first.data["body_html"]  # signed again
    assert '<p><a href="/post/post-2">see</a></p>' in fresh["body_html"]


def test_the_warning_names_each_block_type_once() -> None:
    lost = [{"type": "file", "reason": f"f{n}.zip: hosted by Notion"} for n in range(3)]
    (issue,) = lost_issues({"preset": "blog"}, [*lost, {"type": "breadcrumb", "reason": "nav"}])
    assert issue.message.endswith(
        "4 Notion blocks cannot be kept by the destination and will be missing: "
        "file (f0.zip: hosted by Notion; 3 blocks); breadcrumb (nav)"
    )


def test_inline_equations_and_code_stay_inline() -> None:
    equation = {
        "type": "equation",
        "equation": {"expression": "x < 2"},
        "plain_text": "x < 2",
        "annotations": {},
        "href": None,
    }
    out = rendered(
        block("paragraph", [text("if "), equation, text(" run "), text("f()", code=True)])
    )
    assert out.html == "<p>if <code>x &lt; 2</code> run <code>f()</code></p>"
    assert out.text == "if x < 2 run f()" and out.lost == []


def test_a_notion_pages_word_count_is_the_published_texts() -> None:
    state = NotionState()
    page = blog_page(1, state)
    blocks, _ = every_block_type(1, OTHER)
    row = page_row(page, attached(blocks), dict(NOTION_PROPERTIES), links)
    record = blog_record(row["id"], row)
    assert record["word_count"] == len(html_text(row["body_html"]).split()) > 50
    assert "Tasks 1" not in row["body_text"]  # the child database is not published
    assert {entry["type"] for entry in row["lost_blocks"]} == LOST_TYPES
