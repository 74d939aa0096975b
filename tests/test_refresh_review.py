"""A frozen Notion record whose file URLs expire is read again just before its write: only the
URLs are swapped in, and a page whose content changed since review is held, never written."""

from __future__ import annotations

from typing import Any

from batchgate.destinations import WriteResult
from batchgate.errors import ChangedSinceReview
from batchgate.records import META
from batchgate.writer import RunContext, WorkItem, write_group


class Recording:
    """A destination that keeps what it was sent (no HTTP: this tests the writer)."""

    key, idempotent, needs_publish, rate_per_s = "recording", False, False, None

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def find(self, record: dict[str, Any]) -> None:
        return None

    def snapshot_many(self, dest_ids: list[str]) -> dict[str, None]:
        return dict.fromkeys(dest_ids)

    def upsert_many(self, entries: list[Any], draft: bool) -> list[WriteResult]:
        self.sent += [record for record, _, _ in entries]
        return [WriteResult(f"w-{r['source_id']}", "created") for r, _, _ in entries]


class Ledger:
    def mark_intents(self, key: str, run_id: str, entries: list[Any]) -> dict[str, Any]:
        return {item_id: ahead for item_id, _, ahead in entries}


def frozen(expires: str) -> WorkItem:
    record = {"source_id": "p1", "title": "Reviewed", "body_html": '<img src="https://s3/old">',
              "hero_image_url": "https://s3/old-hero",
              META: {"media_expires_at": expires, "content_key": "k-reviewed"}}  # fmt: skip
    return WorkItem(0, "p1", "Reviewed", None, record, "k-reviewed")


def reread(content_key: str) -> Any:
    def refresh(item_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        return {**meta, "media_expires_at": "2099-01-01T00:00:00Z", "content_key": content_key,
                "body_html": '<img src="https://s3/new">', "hero_image_url": "https://s3/new-hero",
                "title": "edited in Notion since"}  # fmt: skip

    return refresh


def test_a_page_whose_content_changed_since_review_is_held_and_not_written() -> None:
    destination = Recording()
    ctx = RunContext("run", destination, Ledger(), draft=True, refresh=reread("k-edited"))  # type: ignore[arg-type]
    result = write_group([frozen("2020-01-01T00:00:00Z")], ctx, attempt=1)[0]
    assert isinstance(result, ChangedSinceReview) and "changed after the plan was frozen" in str(result)
    assert destination.sent == []


def test_an_unchanged_page_gets_only_its_new_file_urls() -> None:
    destination = Recording()
    ctx = RunContext("run", destination, Ledger(), draft=True, refresh=reread("k-reviewed"))  # type: ignore[arg-type]
    write_group([frozen("2020-01-01T00:00:00Z")], ctx, attempt=1)
    (sent,) = destination.sent
    assert sent["body_html"] == '<img src="https://s3/new">'
    assert sent["hero_image_url"] == "https://s3/new-hero"
    assert sent["title"] == "Reviewed"  # the reviewed record, not the page as it is now
    assert META not in sent


def test_a_record_whose_urls_do_not_expire_is_written_as_frozen() -> None:
    destination = Recording()
    calls: list[str] = []

    def refresh(item_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        calls.append(item_id)
        return meta

    ctx = RunContext("run", destination, Ledger(), draft=True, refresh=refresh)  # type: ignore[arg-type]
    write_group([frozen("2099-01-01T00:00:00Z")], ctx, attempt=1)
    assert destination.sent[0]["body_html"] == '<img src="https://s3/old">'
