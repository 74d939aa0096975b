"""Links between migrated Notion pages: a page id becomes that page's URL on the site.

Notion writes a link to one of its pages as `/<page-id>` (and a mention as a notion.so URL);
on the site that 404s. The source knows every page it migrates (the query's pages, with their
slugs), so it resolves each link while it renders the body: the page's URL is the job's
`source.page_url` with its slug, e.g. `/post/{slug}` for a Webflow collection whose template
pages live under /post/. A page the query has not given (yet) is looked up once: it is
migrated when it belongs to the same data source and has a slug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from batchgate.errors import SourceError
from batchgate.notion_html import plain_text

DEFAULT_PAGE_URL = "/post/{slug}"


class PageLinks:
    """Notion page id -> (its URL on the site, its title), for the pages the job migrates."""

    def __init__(
        self,
        template: str,
        slug_of: Callable[[dict[str, Any]], str | None],
        data_source_id: str,
        fetch: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.template, self.slug_of, self.fetch = template, slug_of, fetch
        self.data_source_id = _key(data_source_id)
        self.known: dict[str, tuple[str, str] | None] = {}

    def add(self, page: dict[str, Any]) -> None:
        """A page the query gave: it is migrated."""
        self.known[_key(str(page.get("id") or ""))] = self._link(page)

    def __call__(self, page_id: str) -> tuple[str, str] | None:
        key = _key(page_id)
        if key not in self.known:
            self.known[key] = self._look_up(key)
        return self.known[key]

    def _look_up(self, key: str) -> tuple[str, str] | None:
        if self.fetch is None:
            return None
        try:
            page = self.fetch(key)
        except SourceError:  # not shared with the integration, or gone: not migrated
            return None
        parent = _key(str((page.get("parent") or {}).get("data_source_id") or ""))
        if not self.data_source_id or parent != self.data_source_id:
            return None
        if page.get("archived") or page.get("in_trash"):
            return None
        return self._link(page)

    def _link(self, page: dict[str, Any]) -> tuple[str, str] | None:
        slug = self.slug_of(page)
        if not slug:
            return None
        return self.template.replace("{slug}", quote(slug, safe="-_.~")), page_title(page)


def page_title(page: dict[str, Any]) -> str:
    """A page's title: the text of its title property."""
    for prop in (page.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return plain_text(prop.get("title"))
    return ""


def _key(ident: str) -> str:
    return ident.replace("-", "").lower()
