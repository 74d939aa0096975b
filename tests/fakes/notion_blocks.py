"""Notion blocks of every type the API documents, shaped as GET /blocks/{id}/children gives them.

Builders for tests: `every_block_type` gives a page body holding each one, and the texts of it
that must reach the published post (code, table cells, links, equations...). A block's children
are under `_children` (what NotionServer.add stores); `attached` puts them under `children`, as
the reader hands blocks to the renderer.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.fakes.notion_server import block, hosted_file, text


def raw(
    kind: str,
    body: dict[str, Any] | None = None,
    children: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A block of `kind` with exactly `body` as its content (block() adds rich_text to all)."""
    out = {
        "object": "block",
        "id": str(uuid.uuid4()),
        "type": kind,
        kind: body or {},
        "has_children": bool(children),
        "archived": False,
        "in_trash": False,
        **extra,
    }
    if children:
        out["_children"] = children
    return out


def attached(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the blocks with `_children` as `children`, as the reader returns them."""
    out = []
    for b in copy.deepcopy(blocks):
        kids = b.pop("_children", None)
        if kids:
            b["children"] = attached(kids)
        out.append(b)
    return out


def table(rows: list[list[str]], header: bool = True) -> dict[str, Any]:
    cells = [raw("table_row", {"cells": [[text(c)] if c else [] for c in row]}) for row in rows]
    return raw(
        "table",
        {"table_width": len(rows[0]), "has_column_header": header, "has_row_header": False},
        cells,
    )


def external(url: str, caption: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "type": "external",
        "external": {"url": url},
        "caption": [text(caption)] if caption else [],
        **extra,
    }


def every_block_type(
    n: int, linked_page: str, files: str = "https://files.notion.test"
) -> tuple[list[dict[str, Any]], list[str]]:
    """A body with every block type, and the texts of it the published HTML must hold (as the
    HTML escapes them). `linked_page` is the id of another migrated page it links to."""
    original = raw(
        "synced_block", {"synced_from": None}, [block("paragraph", [text(f"Synced words {n}")])]
    )
    blocks = [
        block(
            "paragraph",
            [
                text("See "),
                text("the other post", link=f"/{linked_page.replace('-', '')}"),
                text(" and "),
                text("a draft", link="/" + "f" * 32),
                text("."),
            ],
        ),
        block(
            "code",
            [text("def area(r):\n"), text(f"    return {n} * r ** 2  # pi-ish\n")],
            language="python",
            caption=[text("area.py")],
        ),
        table([["Option", "Default"], [f"timeout-{n}", "30 s"], ["retries", "6"]]),
        raw("bookmark", {"url": f"https://bookmarks.example.com/{n}", "caption": []}),
        raw("embed", {"url": f"https://codepen.io/team/pen/{n}", "caption": []}),
        raw("video", external(f"https://www.youtube.com/watch?v=vid{n:06d}", "A talk")),
        raw("video", {"type": "file", **hosted_file(f"{files}/files/clip-{n}.mp4"), "caption": []}),
        raw("equation", {"expression": f"e^{{i\\pi}} + {n} = {n - 1}"}),
        raw("pdf", external(f"https://docs.example.com/spec-{n}.pdf", f"Spec {n}")),
        raw(
            "file",
            {
                **hosted_file(f"{files}/files/notes-{n}.txt"),
                "caption": [],
                "name": f"notes-{n}.txt",
            },
        ),
        raw("audio", external(f"https://audio.example.com/ep-{n}.mp3")),
        raw(
            "callout",
            {
                "rich_text": [text(f"Heads up {n}")],
                "icon": {"type": "emoji", "emoji": "💡"},
                "color": "gray_background",
            },
        ),
        raw("to_do", {"rich_text": [text(f"Done task {n}")], "checked": True}),
        raw("to_do", {"rich_text": [text(f"Open task {n}")], "checked": False}),
        raw(
            "toggle", {"rich_text": [text("Details")]}, [block("paragraph", [text(f"Folded {n}")])]
        ),
        raw(
            "column_list",
            {},
            [
                raw("column", {}, [block("paragraph", [text(f"Left {n}")])]),
                raw("column", {}, [block("paragraph", [text(f"Right {n}")])]),
            ],
        ),
        original,
        raw(
            "synced_block",
            {"synced_from": {"type": "block_id", "block_id": original["id"]}},
            [block("paragraph", [text(f"Synced words {n}")])],
        ),
        raw("child_page", {"title": f"Appendix {n}"}),
        raw("child_database", {"title": f"Tasks {n}"}),
        raw("link_to_page", {"type": "page_id", "page_id": linked_page}),
        raw("link_preview", {"url": f"https://github.com/example/repo/pull/{n}"}),
        raw("table_of_contents", {"color": "default"}),
        raw("breadcrumb", {}),
        raw("unsupported", {}),
        block("heading_2", [text(f"Last words {n}")]),
    ]
    kept = [
        "<code>def area(r):</code>",
        f"&nbsp;&nbsp;&nbsp;&nbsp;return {n} * r ** 2&nbsp;&nbsp;# pi-ish",
        f"timeout-{n}",
        "30 s",
        "retries",
        "Option",
        f"https://bookmarks.example.com/{n}",
        f"https://codepen.io/team/pen/{n}",
        f"https://www.youtube.com/embed/vid{n:06d}",
        f"e^{{i\\pi}} + {n} = {n - 1}",
        f"https://docs.example.com/spec-{n}.pdf",
        f"https://audio.example.com/ep-{n}.mp3",
        f"Heads up {n}",
        f"☑ Done task {n}",
        f"☐ Open task {n}",
        f"Folded {n}",
        f"Left {n}",
        f"Right {n}",
        f"Synced words {n}",
        f"https://github.com/example/repo/pull/{n}",
        f"Last words {n}",
    ]
    return blocks, kept


# The block types of every_block_type that cannot be kept, as Rendered.lost names them.
LOST_TYPES = {
    "link",
    "video",
    "file",
    "child_page",
    "child_database",
    "table_of_contents",
    "breadcrumb",
    "unsupported",
}
