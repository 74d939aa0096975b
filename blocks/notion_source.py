"""Notion source: the pages of a Notion database, their properties and their bodies as HTML."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from batchgate.config import NOTION_PROPERTIES, NotionSourceConfig
from batchgate.connectors import SourceBase, SourceCapabilities
from batchgate.errors import (
    ConfigError,
    FatalError,
    PermanentError,
    RetryableError,
    SourceError,
    WriteError,
)
from batchgate.notion import (
    NotionReader,
    NotionRefused,
    build_filter,
    check_properties,
    page_row,
    property_value,
)
from batchgate.notion_links import DEFAULT_PAGE_URL, PageLinks
from batchgate.schema import Schema, build_items
from batchgate.sources import SourceBatch

REFRESH_MARGIN = timedelta(minutes=10)  # re-read a page whose hosted files expire sooner than this
UNREADABLE_FIX = (
    "Share the page (and the page of any synced block it copies) with the integration: in "
    "Notion, ••• > Connections > your integration; then run again"
)


class NotionSource(SourceBase, Block):
    """Reads the pages of a Notion database through the API (version 2025-09-03)."""

    # expiring file URLs are read again before a write; a sync reads the pages edited since
    capabilities: ClassVar[SourceCapabilities] = SourceCapabilities(refresh=True, since=True)

    _block_type_name = "Batchgate Notion Source"
    _block_type_slug = "batchgate-notion-source"
    _description = (
        "Items for a batchgate job from a Notion database: its data source is queried with a "
        "filter and every page's blocks are read (paginated, nested), at Notion's 3 requests/s."
    )

    base_url: str = Field(default="https://api.notion.com/v1", description="API base URL.")
    database_id: str = Field(description="The database whose pages are the items.")
    data_source_id: str | None = Field(
        default=None, description="Its data source (default: first)."
    )
    token: SecretStr = Field(description="The integration's internal secret.")
    filter: dict[str, Any] = Field(default_factory=dict, description="Property -> value to keep.")
    properties: dict[str, str] = Field(
        default_factory=lambda: dict(NOTION_PROPERTIES),
        description="Item field -> Notion property name.",
    )
    page_url: str = Field(default=DEFAULT_PAGE_URL,
                          description="A migrated page's URL on the site ({slug}: its slug).")
    timeout_s: float = Field(default=30.0, description="Per-request timeout in seconds.")
    requests_per_second: float = Field(default=3.0, description="Average request rate allowed.")
    workers: int = Field(default=4, description="Pages read at once.")

    @classmethod
    def from_config(cls, config: NotionSourceConfig) -> NotionSource:
        token = config.token or _env_token()
        return cls(
            base_url=config.base_url, database_id=config.database_id,
            data_source_id=config.data_source_id, token=token, filter=dict(config.filter),
            properties=dict(config.properties), timeout_s=config.timeout_s, workers=config.workers,
            page_url=config.page_url,
            requests_per_second=config.requests_per_second,
        )  # fmt: skip

    @property
    def path(self) -> str:
        """Where the items come from, for the ledger and reports (no secret in it)."""
        return f"notion:{self.database_id}"

    def reader(self) -> NotionReader:
        return NotionReader(self.base_url, self.token.get_secret_value(), timeout_s=self.timeout_s,
                            workers=self.workers, rate_per_s=self.requests_per_second)  # fmt: skip

    def read(self, schema: Schema, since: datetime | None = None) -> SourceBatch:
        """Every page the filter keeps (edited since `since`, if given), typed by the schema."""
        batch = SourceBatch([], 0, 0, "")
        for chunk in self.iter_chunks(schema, since):
            batch.items += chunk.items
            batch.total_rows += chunk.total_rows
            batch.description = chunk.description
            batch.notes += chunk.notes
        if not batch.description:
            batch.description = self._describe(since)
        return batch

    def iter_chunks(
        self, schema: Schema, since: datetime | None = None, chunk_size: int = 500
    ) -> Iterator[SourceBatch]:
        """The pages of `read`, `chunk_size` at a time as the query's pages arrive (their bodies
        read a chunk at a time), numbered across chunks."""
        reader = self.reader()
        try:
            source = reader.data_source(self.database_id, self.data_source_id)
            check_properties(self.properties, source)
            query = build_filter(self.filter, source, since)
            links = self.links(reader, str(source["id"]))
            pages: list[dict[str, Any]] = []
            seq = 0
            for page in reader.query(str(source["id"]), query):
                if not page.get("archived") and not page.get("in_trash"):
                    pages.append(page)
                    links.add(page)
                if len(pages) >= chunk_size:
                    yield self._chunk(reader, pages, schema, seq, since, links)
                    seq, pages = seq + len(pages), []
            if pages or reader.notes:
                yield self._chunk(reader, pages, schema, seq, since, links)
        finally:
            reader.close()

    def _chunk(self, reader: NotionReader, pages: list[dict[str, Any]], schema: Schema,
               seq: int, since: datetime | None, links: PageLinks) -> SourceBatch:  # fmt: skip
        """A chunk of items; a page whose blocks Notion refuses (403, 404) is an item blocked
        with the reason, not the end of the read."""
        bodies, unreadable = reader.readable_bodies([str(p["id"]) for p in pages])
        rows = [(p.get("url") or str(p["id"]), page_row(p, bodies.get(str(p["id"]), []),
                                                        self.properties, links)) for p in pages]  # fmt: skip
        items = build_items(rows, schema)
        for page, item in zip(pages, items, strict=True):
            reason = unreadable.get(str(page["id"]))
            if reason:
                item.type_errors.append(("body_html", reason, UNREADABLE_FIX))
            if seq:  # numbered across chunks, as one read numbers them
                item.seq += seq
                if not item.data.get(schema.id_field):
                    item.id = f"row-{item.seq + 1}"
        notes, reader.notes = list(reader.notes), []  # said once, by the first chunk
        return SourceBatch(items, len(items), 0, self._describe(since), notes=notes)

    def links(self, reader: NotionReader, data_source_id: str) -> PageLinks:
        """Links to the pages this job migrates, as their URL on the site (`page_url`)."""
        return PageLinks(self.page_url, self._slug_of, data_source_id, reader.page)

    def _slug_of(self, page: dict[str, Any]) -> str | None:
        name = self.properties.get("slug", "")
        prop = (page.get("properties") or {}).get(name)
        value = property_value(name, prop) if prop else None
        return str(value) if value else None

    def _describe(self, since: datetime | None) -> str:
        edited = f", edited since {since:%Y-%m-%d %H:%M:%S}" if since else ""
        return f"Notion database {self.database_id}{edited}"

    def refresh(self, item_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """The item again, read just before its write when its Notion-hosted file URLs (valid one
        hour) expire soon; otherwise `data` unchanged."""
        expires = data.get("media_expires_at")
        if not expires:
            return data
        when = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        if when - datetime.now(UTC) > REFRESH_MARGIN:
            return data
        reader = self.reader()
        try:
            page = reader.page(item_id)
            parent = (page.get("parent") or {}).get("data_source_id") or self.data_source_id or ""
            row = page_row(page, reader.blocks(item_id), self.properties,
                           self.links(reader, parent))  # fmt: skip
        except SourceError as exc:
            raise _refresh_error(item_id, exc) from None
        finally:
            reader.close()
        return {**data, **{k: v for k, v in row.items() if k in _REFRESHED}}


def _refresh_error(item_id: str, exc: SourceError) -> WriteError:
    """A failed re-read as a write error: a blocked integration stops the run, a page no longer
    shared (403, 404) fails its item for good, anything else can be tried again."""
    message = f"re-reading Notion page {item_id} before the write (its file URLs expire): {exc}"
    if isinstance(exc, NotionRefused) and exc.status == 429:  # public_api_request_blocked
        return FatalError(message, status_code=429)
    if isinstance(exc, NotionRefused) and exc.status in (403, 404):
        return PermanentError(message, status_code=exc.status, error_type="api-error")
    return RetryableError(message, error_type="api-error")


_REFRESHED = ("hero_image_url", "body_html", "media_expires_at", "content_key")


def _env_token() -> SecretStr:
    token = os.environ.get("NOTION_TOKEN")
    if not token:
        raise ConfigError(
            "source.token is not set and NOTION_TOKEN is not in the environment. Fix: export "
            "NOTION_TOKEN=... (the integration's secret) and write token: ${NOTION_TOKEN}."
        )
    return SecretStr(token)
