"""Blog item -> destination record: Markdown to HTML, reading time, SEO fields, content hash."""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from datetime import date, datetime
from typing import Any

from markdown_it import MarkdownIt

WORDS_PER_MINUTE = 200
SEO_TITLE_MAX = 60
SEO_DESCRIPTION_MAX = 160

# Raw HTML in the Markdown is escaped, never passed through: the destination gets text, not markup.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})
# Compile its rule chains now, in one thread: markdown-it builds each chain's cache on first use
# and an empty one is visible meanwhile, so writer threads starting together in a fresh process
# (a shard) failed items with "none of the block rules matched".
_MARKDOWN.render("# t\n\n- *a* `b` [c](d)\n\n> e")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MARKUP = re.compile(r"[#>*_`~\[\]()!|-]+")


def to_html(markdown: str) -> str:
    return _MARKDOWN.render(markdown)


def plain_text(markdown: str) -> str:
    """Markdown with images, link targets and markup characters removed."""
    text = _IMAGE.sub(" ", markdown)
    text = re.sub(r"\]\([^)]*\)", " ", text)
    return " ".join(_MARKUP.sub(" ", text).split())


def cut_at_word(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary (a single long word is cut hard)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else text[:limit]
    return cut[:limit].rstrip(" ,;:-")


def reading_time(words: int) -> int:
    """Minutes at 200 words per minute, rounded up."""
    return math.ceil(words / WORDS_PER_MINUTE)


def body_text(data: dict[str, Any]) -> str:
    """The text of an item's body (Markdown, or HTML from the source), without rendering it."""
    html_body = data.get("body_html")
    if html_body is None:
        return plain_text(data.get("body_markdown") or "")
    return str(data.get("body_text") or _strip(html_body))


def word_count(data: dict[str, Any]) -> int:
    return len(body_text(data).split())


# The blog preset's record: each field it writes and its type (what a created table gets).
BLOG_RECORD_FIELDS = {
    "source_id": "string", "title": "string", "slug": "string", "status": "string",
    "category": "string", "tags": "list", "featured": "boolean", "publish_date": "string",
    "hero_image_url": "string", "summary": "string", "body_html": "string",
    "seo_title": "string", "seo_description": "string", "reading_time": "integer",
    "word_count": "integer",
}  # fmt: skip


def record_words(record: dict[str, Any]) -> int:
    """How long a record is, in words: a blog record's body, else all of its text."""
    count = record.get("word_count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    return sum(len(v.split()) for k, v in record.items() if isinstance(v, str) and k[:1] != "_")


def image_count(record: dict[str, Any]) -> int:
    """Images in a blog record's body, and its hero image."""
    body = str(record.get("body_html") or "")
    return body.count("<img ") + (1 if record.get("hero_image_url") else 0)


def blog_record(item_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """The fields a destination stores for one blog item."""
    body = data.get("body_markdown") or ""
    html_body = data.get("body_html")  # a source that gives HTML (Notion's blocks) wins
    text = body_text(data)
    words = len(text.split())
    summary = data.get("summary") or ""
    title = data.get("title") or ""
    return {
        "source_id": item_id,
        "title": title,
        "slug": data.get("slug") or "",
        "status": data.get("status"),
        "category": data.get("category"),
        "tags": list(data.get("tags") or []),
        "featured": bool(data.get("featured") or False),
        "publish_date": _iso(data.get("publish_date")),
        "hero_image_url": data.get("hero_image_url"),
        "summary": summary or None,
        "body_html": to_html(body) if html_body is None else html_body,
        "seo_title": cut_at_word(title, SEO_TITLE_MAX),
        "seo_description": cut_at_word(summary or text, SEO_DESCRIPTION_MAX),
        "reading_time": reading_time(words),
        "word_count": words,
    }


def _strip(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def content_hash(record: dict[str, Any]) -> str:
    """Stable hash of what is written: an unchanged item is not written again."""
    blob = json.dumps(record, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value if isinstance(value, str) else None
