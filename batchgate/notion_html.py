"""Notion blocks to HTML that a Webflow RichText field keeps, and what it cannot keep.

Every piece of text is HTML-escaped: a `<script>` in a paragraph arrives as text, never as
markup. Webflow's API empties code blocks (`<pre>`), so a code block becomes one paragraph of
inline `<code>`, a line each, its indentation kept as non-breaking spaces. Tables become a list,
a row per item. Whatever Webflow cannot hold (a child database, a Notion-hosted file whose link
expires, a link to a page that is not migrated...) is rendered as far as it can be and listed in
`Rendered.lost`, so the dry-run can say what each page loses.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

LIST_TAGS = {"bulleted_list_item": "ul", "numbered_list_item": "ol", "to_do": "ul"}
TEXT_BLOCKS = {
    "paragraph": "p",
    "heading_1": "h1",
    "heading_2": "h2",
    "heading_3": "h3",
    "quote": "blockquote",
}
_SAFE_SCHEMES = {"http", "https", "mailto", ""}
_ID = r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"
_RELATIVE_PAGE = re.compile(rf"/{_ID}", re.IGNORECASE)  # how Notion gives a link to its pages
_ID_AT_END = re.compile(rf"({_ID})$", re.IGNORECASE)
_NOTION_HOSTS = ("notion.so", "notion.site")
_NBSP = "&nbsp;"
TAB = "    "
# why a Notion-hosted file (other than an image) cannot be linked, and the fix
EXPIRES = "a file hosted by Notion: its link expires an hour after the read"
HOST_FIX = "host it elsewhere and add it to the page by its link"

# A Notion page id (32 hex characters, no dashes) -> (its URL on the site, its title), or None
# when that page is not migrated.
PageLinks = Callable[[str], tuple[str, str] | None]


@dataclass
class Rendered:
    """A page body as HTML, its published text (for word counts) and what it loses."""

    html: str
    text: str
    lost: list[dict[str, str]] = field(default_factory=list)  # {"type", "reason"}


def render(blocks: list[dict[str, Any]], links: PageLinks | None = None) -> Rendered:
    """Blocks (each with its `children` already read) as Webflow-safe HTML, with what is lost."""
    renderer = _Renderer(links)
    markup = renderer.blocks(blocks)
    return Rendered(markup, html_text(markup), renderer.lost)


def blocks_html(blocks: list[dict[str, Any]], links: PageLinks | None = None) -> str:
    """Blocks as HTML; consecutive list items are grouped."""
    return render(blocks, links).html


def plain_text(rich: Iterable[dict[str, Any]] | None) -> str:
    """A rich-text array's text, its parts joined back together."""
    return "".join(part.get("plain_text") or _text_content(part) for part in rich or [])


def rich_html(rich: Iterable[dict[str, Any]] | None, links: PageLinks | None = None) -> str:
    """A rich-text array as inline HTML: annotations and links, all text escaped."""
    return _Renderer(links).rich(rich)


# Block-level tags: their edges separate words; inline tags (strong, a, code...) do not.
_BLOCK_TAG = re.compile(
    r"</?(?:p|h[1-6]|li|ul|ol|blockquote|figure|figcaption|div|br|hr|iframe|"
    r"img)\b[^>]*>",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[^>]+>")


def html_text(markup: str) -> str:
    """The words HTML shows: tags taken out (a block's edge separates words), entities decoded."""
    spaced = _ANY_TAG.sub("", _BLOCK_TAG.sub(" ", markup))
    return " ".join(html.unescape(spaced).split())


class _Renderer:
    def __init__(self, links: PageLinks | None) -> None:
        self.links = links
        self.lost: list[dict[str, str]] = []

    def lose(self, kind: str, reason: str) -> str:
        self.lost.append({"type": kind, "reason": reason})
        return ""

    # --- rich text ------------------------------------------------------------------------------

    def rich(self, rich: Iterable[dict[str, Any]] | None) -> str:
        return "".join(self.part(part) for part in rich or [])

    def part(self, part: dict[str, Any]) -> str:
        source = part.get("plain_text") or _text_content(part)
        if part.get("type") == "equation":
            source = source or str((part.get("equation") or {}).get("expression") or "")
        text = html.escape(source).replace("\n", "<br>")
        notes = part.get("annotations") or {}
        if notes.get("code") or part.get("type") == "equation":
            text = f"<code>{text}</code>"
        for flag, tag in (
            ("bold", "strong"),
            ("italic", "em"),
            ("strikethrough", "s"),
            ("underline", "u"),
        ):
            if notes.get(flag):
                text = f"<{tag}>{text}</{tag}>"
        href = self.href(part, source)
        return f'<a href="{html.escape(href, quote=True)}">{text}</a>' if href else text

    def href(self, part: dict[str, Any], label: str) -> str | None:
        """A part's link as the site needs it. A link to a Notion page becomes that page's URL
        on the site when it is migrated; else a relative one (`/<page-id>`, which would 404 on
        the site) is dropped, its text kept, and listed; a notion.so link stays as it is."""
        href = str(
            part.get("href") or ((part.get("text") or {}).get("link") or {}).get("url") or ""
        )
        mention = part.get("mention") or {}
        page_id = str((mention.get("page") or {}).get("id") or "")
        relative = bool(_RELATIVE_PAGE.fullmatch(href.split("#")[0].split("?")[0]))
        if page_id or relative or _is_notion(href):
            page = self.page(page_id or href)
            if page:
                return page[0]
            if relative:
                key = _page_key(href)
                self.lose(
                    "link", f"{label[:60]!r} links to a Notion page that is not migrated ({key})"
                )
                return None
        if href and urlparse(href).scheme.lower() in _SAFE_SCHEMES:
            return href
        return None

    def page(self, ident: str) -> tuple[str, str] | None:
        key = _page_key(ident)
        return self.links(key) if self.links and key else None

    # --- blocks ---------------------------------------------------------------------------------

    def blocks(self, blocks: list[dict[str, Any]]) -> str:
        out: list[str] = []
        index = 0
        while index < len(blocks):
            kind = blocks[index].get("type", "")
            if kind in LIST_TAGS:
                start = index
                while index < len(blocks) and blocks[index].get("type") == kind:
                    index += 1
                items = "".join(self.list_item(b) for b in blocks[start:index])
                out.append(f"<{LIST_TAGS[kind]}>{items}</{LIST_TAGS[kind]}>")
                continue
            out.append(self.block(blocks[index]))
            index += 1
        return "".join(out)

    def list_item(self, item: dict[str, Any]) -> str:
        body = item.get(item.get("type", "")) or {}
        box = ("☑ " if body.get("checked") else "☐ ") if item.get("type") == "to_do" else ""
        nested = self.blocks(item.get("children") or [])
        return f"<li>{box}{self.rich(body.get('rich_text'))}{nested}</li>"

    def block(self, block: dict[str, Any]) -> str:
        kind = block.get("type", "")
        body = block.get(kind) or {}
        body = body if isinstance(body, dict) else {}
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return str(handler(self, block, body))
        if kind in TEXT_BLOCKS:
            tag = TEXT_BLOCKS[kind]
            return f"<{tag}>{self.rich(body.get('rich_text'))}</{tag}>{self.children(block)}"
        if kind in _LOST:
            return self.lose(kind, _LOST[kind]) + self.children(block)
        if body.get("rich_text"):  # a kind batchgate does not know: its text, as a paragraph
            return f"<p>{self.rich(body['rich_text'])}</p>{self.children(block)}"
        children = self.children(block)
        return children or self.lose(kind or "unknown", "a block type batchgate cannot render")

    def children(self, block: dict[str, Any]) -> str:
        return self.blocks(block.get("children") or [])

    def code(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A code block as one paragraph of inline code, a line each: Webflow's API empties
        `<pre>` blocks, and keeps paragraphs, line breaks and inline `<code>`."""
        lines = plain_text(body.get("rich_text")).expandtabs(len(TAB)).split("\n")
        if lines and not lines[-1].strip():
            lines.pop()  # the newline that ends the last line
        shown = "<br>".join(f"<code>{_keep_spaces(line)}</code>" for line in lines)
        caption = self.rich(body.get("caption"))
        note = f"<p><em>{caption}</em></p>" if caption else ""
        return (f"<p>{shown}</p>" if lines else "") + note

    def image(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """Webflow's own image figure (without it, an image vanishes in the Designer)."""
        url = file_url(body)
        if not url:
            return self.lose("image", "an image without a URL") + self.children(block)
        alt = html.escape(plain_text(body.get("caption")), quote=True)
        caption = self.rich(body.get("caption"))
        figcaption = f"<figcaption>{caption}</figcaption>" if caption else ""
        src = html.escape(url, quote=True)
        return (
            f'<figure class="w-richtext-figure-type-image w-richtext-align-fullwidth"><div>'
            f'<img src="{src}" alt="{alt}"></div>{figcaption}</figure>{self.children(block)}'
        )

    def video(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A YouTube or Vimeo video as Webflow's video figure; another one as its link."""
        url = file_url(body)
        if not url or (body.get("type") == "file"):
            return self.lose("video", f"{EXPIRES}; {HOST_FIX}" if url else "a video without a URL")
        player = video_player(url)
        caption = self.rich(body.get("caption"))
        if player is None:
            return self.link(url, caption)
        title = html.escape(plain_text(body.get("caption")) or "Video", quote=True)
        figcaption = f"<figcaption>{caption}</figcaption>" if caption else ""
        return (
            '<figure class="w-richtext-figure-type-video w-richtext-align-fullwidth" '
            'style="padding-bottom:56.25%"><div><iframe allowfullscreen="true" frameborder="0" '
            f'scrolling="no" src="{html.escape(player, quote=True)}" title="{title}"></iframe>'
            f"</div>{figcaption}</figure>"
        )

    def embed(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """An embed of a video host as its video; any other embed, bookmark or preview as a link
        (Webflow's RichText runs no third-party embeds written by the API)."""
        url = str(body.get("url") or "")
        if not url:
            return self.lose(block.get("type", "embed"), "an embed without a URL")
        if block.get("type") == "embed" and video_player(url):
            return self.video(block, {"type": "external", "external": {"url": url}, **body})
        return self.link(url, self.rich(body.get("caption")))

    def file(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A file, PDF or audio clip as a link to it; a Notion-hosted one cannot be linked."""
        kind = block.get("type", "file")
        url = file_url(body)
        name = str(body.get("name") or "") or plain_text(body.get("caption"))
        if not url:
            return self.lose(kind, f"{name or 'a file'} without a URL")
        if body.get("type") == "file":
            return self.lose(kind, f"{name or 'the file'}: {EXPIRES}; {HOST_FIX}")
        label = self.rich(body.get("caption")) or html.escape(name or _file_name(url))
        return self.link(url, label)

    def link(self, url: str, label: str) -> str:
        if urlparse(url).scheme.lower() not in ("http", "https"):
            return f"<p>{label}</p>" if label else ""
        shown = label or html.escape(url)
        return f'<p><a href="{html.escape(url, quote=True)}">{shown}</a></p>'

    def equation(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A block equation as its LaTeX, in inline code (Webflow renders no math)."""
        expression = str(body.get("expression") or "")
        return f"<p><code>{html.escape(expression)}</code></p>" if expression else ""

    def callout(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        icon = body.get("icon") or {}
        emoji = f"{html.escape(str(icon['emoji']))} " if icon.get("type") == "emoji" else ""
        return f"<blockquote>{emoji}{self.rich(body.get('rich_text'))}</blockquote>" + (
            self.children(block)
        )

    def toggle(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A toggle's summary as a paragraph, its content shown after it (Webflow has none)."""
        return f"<p>{self.rich(body.get('rich_text'))}</p>{self.children(block)}"

    def table(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A table as a list, a row per item: Webflow's RichText has no tables (the Designer
        drops a `<table>`); with a header row, each cell is named by its column."""
        rows = [
            [self.rich(cell) for cell in (r.get("table_row") or {}).get("cells") or []]
            for r in block.get("children") or []
            if r.get("type") == "table_row"
        ]
        if not rows:
            return self.lose("table", "a table without rows")
        header = rows.pop(0) if body.get("has_column_header") and len(rows) > 1 else None
        items = [_row(cells, header, bool(body.get("has_row_header"))) for cells in rows]
        return "<ul>" + "".join(f"<li>{row}</li>" for row in items if row) + "</ul>"

    def synced(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A synced block's content; a copy shows its original's, when the reader could read it."""
        children = self.children(block)
        original = (body.get("synced_from") or {}).get("block_id")
        if original and not block.get("children"):
            return self.lose(
                "synced_block",
                f"a copy of the synced block {original}, whose "
                "original the integration cannot read",
            )
        return children

    def child_page(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """A sub-page as a link to it on the site; one that is not migrated is named only."""
        title = str(body.get("title") or "")
        page = self.page(str(block.get("id") or ""))
        if page:
            return _page_link(page[0], title or page[1])
        self.lose("child_page", f"the sub-page {title!r} is not migrated (only its title is kept)")
        return f"<p>{html.escape(title)}</p>" if title else ""

    def link_to_page(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        target = body.get("page_id") or body.get("database_id") or ""
        page = self.page(str(target))
        if page:
            return _page_link(*page)
        return self.lose(
            "link_to_page",
            f"links to a Notion page that is not migrated ({_page_key(str(target)) or '?'})",
        )

    def columns(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        """Columns one after the other (Webflow's RichText is one column)."""
        return self.children(block)

    def divider(self, block: dict[str, Any], body: dict[str, Any]) -> str:
        return "<hr>"


_HANDLERS: dict[str, Callable[[_Renderer, dict[str, Any], dict[str, Any]], str]] = {
    "code": _Renderer.code,
    "image": _Renderer.image,
    "video": _Renderer.video,
    "embed": _Renderer.embed,
    "bookmark": _Renderer.embed,
    "link_preview": _Renderer.embed,
    "file": _Renderer.file,
    "pdf": _Renderer.file,
    "audio": _Renderer.file,
    "equation": _Renderer.equation,
    "callout": _Renderer.callout,
    "toggle": _Renderer.toggle,
    "table": _Renderer.table,
    "synced_block": _Renderer.synced,
    "child_page": _Renderer.child_page,
    "link_to_page": _Renderer.link_to_page,
    "column_list": _Renderer.columns,
    "column": _Renderer.columns,
    "divider": _Renderer.divider,
}

# Blocks with nothing Webflow can show; their children (if any) are still rendered.
_LOST = {
    "child_database": "a database inside the page: Webflow's RichText holds no databases "
    "(migrate it as its own collection)",
    "table_of_contents": "Notion's table of contents: Webflow's RichText makes none",
    "breadcrumb": "Notion's breadcrumb navigation",
    "template": "a template button (Notion's editor only)",
    "unsupported": "a block Notion's API does not return the content of",
}


def _page_link(href: str, title: str) -> str:
    return f'<p><a href="{html.escape(href, quote=True)}">{html.escape(title)}</a></p>'


def _row(cells: list[str], header: list[str] | None, row_header: bool) -> str:
    if row_header and cells and cells[0]:
        cells = [f"<strong>{cells[0]}</strong>", *cells[1:]]
    if header is None:
        return " · ".join(c for c in cells if c)
    named = [
        f"<strong>{name}</strong>: {cell}" if name else cell
        for name, cell in zip(header, cells, strict=False)
        if cell
    ]
    return "; ".join(named)


def _keep_spaces(line: str) -> str:
    """A code line escaped, its leading spaces and runs of spaces as non-breaking ones (HTML
    collapses spaces; indentation is part of the code)."""
    text = html.escape(line)
    indent = len(text) - len(text.lstrip(" "))
    rest = re.sub(r" {2,}", lambda m: _NBSP * len(m.group()), text[indent:])
    return _NBSP * indent + rest if text else _NBSP


def video_player(url: str) -> str | None:
    """The embeddable player of a YouTube or Vimeo URL (None for any other host)."""
    parts = urlparse(url)
    host = (parts.hostname or "").lower().removeprefix("www.").removeprefix("m.")
    path = parts.path.strip("/")
    if host in ("youtube.com", "youtube-nocookie.com"):
        video = (parse_qs(parts.query).get("v") or [""])[0]
        if not video and path.startswith(("embed/", "shorts/", "live/")):
            video = path.split("/")[1]
    elif host == "youtu.be":
        video = path.split("/")[0]
    elif host in ("vimeo.com", "player.vimeo.com"):
        found = re.search(r"(?:^|/)(\d+)(?:/|$)", path)
        return f"https://player.vimeo.com/video/{found.group(1)}" if found else None
    else:
        return None
    return f"https://www.youtube.com/embed/{video}" if re.fullmatch(r"[\w-]{6,20}", video) else None


def _page_key(ident: str) -> str:
    """A Notion page id in one form, 32 lowercase hex characters, from an id or a link to the
    page ('' if it holds none)."""
    last = ident.split("#")[0].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    found = _ID_AT_END.search(last)
    return found.group(1).replace("-", "").lower() if found else ""


def _is_notion(href: str) -> bool:
    host = (urlparse(href).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _NOTION_HOSTS)


def _file_name(url: str) -> str:
    return urlparse(url).path.rsplit("/", 1)[-1] or url


def _text_content(part: dict[str, Any]) -> str:
    return str((part.get(part.get("type") or "text") or {}).get("content") or "")


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
