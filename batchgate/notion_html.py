"""Notion blocks to HTML for a Webflow RichText field, and Notion rich text to plain text.

Every piece of text is HTML-escaped: a `<script>` in a paragraph arrives as text, never as
markup. Code blocks become `<pre><code>`, which Webflow's RichText keeps.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

LIST_TAGS = {"bulleted_list_item": "ul", "numbered_list_item": "ol"}
TEXT_BLOCKS = {"paragraph": "p", "heading_1": "h1", "heading_2": "h2", "heading_3": "h3",
               "quote": "blockquote"}  # fmt: skip
_SAFE_SCHEMES = {"http", "https", "mailto", ""}


def plain_text(rich: Iterable[dict[str, Any]] | None) -> str:
    """A rich-text array's text, its parts joined back together."""
    return "".join(part.get("plain_text") or _text_content(part) for part in rich or [])


def _text_content(part: dict[str, Any]) -> str:
    return str((part.get(part.get("type") or "text") or {}).get("content") or "")


def rich_html(rich: Iterable[dict[str, Any]] | None) -> str:
    """A rich-text array as inline HTML: annotations and links, all text escaped."""
    out = []
    for part in rich or []:
        text = html.escape(part.get("plain_text") or _text_content(part)).replace("\n", "<br>")
        notes = part.get("annotations") or {}
        if notes.get("code"):
            text = f"<code>{text}</code>"
        for flag, tag in (("bold", "strong"), ("italic", "em"), ("strikethrough", "s"),
                          ("underline", "u")):  # fmt: skip
            if notes.get(flag):
                text = f"<{tag}>{text}</{tag}>"
        href = part.get("href") or ((part.get("text") or {}).get("link") or {}).get("url")
        if href and urlparse(href).scheme.lower() in _SAFE_SCHEMES:
            text = f'<a href="{html.escape(href, quote=True)}">{text}</a>'
        out.append(text)
    return "".join(out)


def blocks_html(blocks: list[dict[str, Any]]) -> str:
    """Blocks (each with its `children` already read) as HTML; consecutive list items are grouped."""
    out: list[str] = []
    index = 0
    while index < len(blocks):
        block = blocks[index]
        kind = block.get("type", "")
        if kind in LIST_TAGS:
            tag = LIST_TAGS[kind]
            items = []
            while index < len(blocks) and blocks[index].get("type") == kind:
                item = blocks[index]
                inner = rich_html((item.get(kind) or {}).get("rich_text"))
                nested = blocks_html(item.get("children") or [])
                items.append(f"<li>{inner}{nested}</li>")
                index += 1
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
            continue
        out.append(_block_html(block))
        index += 1
    return "".join(out)


def _block_html(block: dict[str, Any]) -> str:
    kind = block.get("type", "")
    body = block.get(kind) or {}
    children = blocks_html(block.get("children") or [])
    if kind in TEXT_BLOCKS:
        tag = TEXT_BLOCKS[kind]
        return f"<{tag}>{rich_html(body.get('rich_text'))}</{tag}>{children}"
    if kind == "code":
        language = re.sub(r"[^a-z0-9+#-]", "", str(body.get("language") or "").lower())
        cls = f' class="language-{language}"' if language and language != "plain-text" else ""
        code = html.escape(plain_text(body.get("rich_text")))
        caption = plain_text(body.get("caption"))
        note = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
        return f"<pre><code{cls}>{code}</code></pre>{note}"
    if kind == "image":
        url = file_url(body)
        if not url:
            return children
        caption = plain_text(body.get("caption"))
        alt = html.escape(caption, quote=True)
        figcaption = f"<figcaption>{rich_html(body.get('caption'))}</figcaption>" if caption else ""
        src = html.escape(url, quote=True)
        return f'<figure><img src="{src}" alt="{alt}">{figcaption}</figure>{children}'
    if kind == "divider":
        return "<hr>"
    rich = body.get("rich_text") if isinstance(body, dict) else None
    if rich:  # callouts, toggles, to-dos...: their text as a paragraph, never dropped silently
        return f"<p>{rich_html(rich)}</p>{children}"
    return children


def file_url(value: dict[str, Any] | None) -> str | None:
    """The URL of a Notion file object: `file` (hosted, expires) or `external`."""
    if not value:
        return None
    kind = value.get("type") or ("file" if "file" in value else "external")
    return (value.get(kind) or {}).get("url")


def file_expiry(value: dict[str, Any] | None) -> str | None:
    """When a Notion-hosted file's URL stops working (None for an external one)."""
    if not value or (value.get("type") or "") != "file":
        return None
    return (value.get("file") or {}).get("expiry_time")


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    """All the text of the blocks, for word counts and content checks."""
    parts = []
    for block in blocks:
        body = block.get(block.get("type", "")) or {}
        if isinstance(body, dict) and block.get("type") != "image":
            parts.append(plain_text(body.get("rich_text")))
        parts.append(blocks_text(block.get("children") or []))
    return " ".join(p for p in parts if p)


def hosted_expiries(blocks: list[dict[str, Any]]) -> list[str]:
    """Expiry times of the Notion-hosted files among the blocks (images inside the body)."""
    found = []
    for block in blocks:
        if block.get("type") == "image":
            expiry = file_expiry(block.get("image"))
            if expiry:
                found.append(expiry)
        found += hosted_expiries(block.get("children") or [])
    return found
