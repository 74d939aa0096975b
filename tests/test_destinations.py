"""One conformance suite over every destination (SQLite, PostgreSQL, Webflow on a real HTTP
server), then Webflow's own behaviour: schema mapping, status table, rate limits, secrets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from batchgate.config import SqlDestinationConfig
from batchgate.errors import FatalError, PermanentError, RetryableError
from batchgate.transform import blog_record
from blocks.sql_destination import SqlDestination
from blocks.webflow import WebflowDestination
from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer, blog_fields


def record(n: int, **overrides: Any) -> dict[str, Any]:
    row = {k: v for k, v in blog_row(n).items()}
    row.update(tags=["a"], featured=False, hero_width=1600, hero_height=900, **overrides)
    return blog_record(row["id"], row)


def webflow(server: WebflowServer, **kwargs: Any) -> WebflowDestination:
    """The connector as the conformance tests use it: group mode (100 per request), the default."""
    return WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                              token=SecretStr("test-token"), rate_per_minute=60_000, **kwargs)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql", "webflow"])
def destination(request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:  # noqa: ANN001
    if request.param == "webflow":
        with WebflowServer() as server:
            yield webflow(server)
        return
    url = (f"sqlite:///{tmp_path / 'cms.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_schema_url"))  # fmt: skip
    yield SqlDestination.from_config(SqlDestinationConfig(type="sql", url=url))


def test_conformance_upsert_find_publish_restore_delete(destination: Any) -> None:
    destination.prepare()
    first = record(1)
    assert destination.find(first) is None
    created = destination.upsert(first, None, draft=True)
    assert created.action == "created"
    assert destination.find(first) == created.dest_id
    assert destination.version(created.dest_id) == created.version

    before = destination.snapshot(created.dest_id)  # what the write-ahead records
    changed = {**first, "title": "A new title", "summary": "Changed."}
    updated = destination.upsert(changed, created.dest_id, draft=True, current=before)
    assert updated.action == "updated" and updated.dest_id == created.dest_id
    assert updated.version == destination.version(created.dest_id) != created.version

    assert destination.publish([created.dest_id]) == {}
    assert destination.restore(created.dest_id, before) is True
    assert destination.version(created.dest_id) == created.version  # the first content is back
    destination.delete(created.dest_id)
    assert destination.find(first) is None
    assert destination.snapshot(created.dest_id) is None
    assert destination.version(created.dest_id) is None
    assert destination.restore(created.dest_id, before) is False  # nothing left to restore
    assert created.dest_id in destination.link(created.dest_id, first)


def test_sql_rows_have_blog_fields_draft_flag_and_times(tmp_path) -> None:  # noqa: ANN001
    dest = SqlDestination.from_config(
        SqlDestinationConfig(type="sql", url=f"sqlite:///{tmp_path / 'c.db'}")
    )
    dest.prepare()
    start = _utc_now()
    dest.upsert(record(1), None, draft=True)
    between = _utc_now()
    dest.upsert(record(1), "p-001", draft=True)  # a rerun updates, never duplicates
    end = _utc_now()
    (row,) = dest.rows()
    assert row["source_id"] == "p-001" and row["draft"] is True
    # the rerun keeps the creation time and moves the update time
    assert start <= _utc(row["created_at"]) <= between <= _utc(row["updated_at"]) <= end
    assert row["body_html"] == "<h1>Title</h1>\n<p>Some text.</p>\n"
    assert row["reading_time"] == 1 and row["word_count"] == 3


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives it back naive, in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_sql_dry_check_creates_nothing(tmp_path) -> None:  # noqa: ANN001
    dest = SqlDestination.from_config(
        SqlDestinationConfig(type="sql", url=f"sqlite:///{tmp_path / 'c.db'}")
    )
    dest.check()
    assert not (tmp_path / "c.db").exists()


# --- Webflow ------------------------------------------------------------------------------------


def test_check_reads_options_unmapped_and_required_fields() -> None:
    fields = blog_fields(
        categories=["Data", "AI"], extra_required=["author"], without=["seo-title"]
    )
    with WebflowServer(fields=fields) as server:
        check = webflow(server).check()
    assert check.categories == ["Data", "AI"]
    assert check.unmapped_fields == ["seo_title -> seo-title"]
    assert check.missing_required == ["author"]


def test_field_data_maps_options_images_and_skips_missing_fields() -> None:
    with WebflowServer(fields=blog_fields(without=["reading-time"])) as server:
        dest = webflow(server)
        result = dest.upsert(record(1, category="AI"), None, draft=True)
        item = server.items[result.dest_id]
    data = item["fieldData"]
    assert data["category"] == "opt-ai"
    assert data["main-image"] == {"url": "https://img.example.com/1.jpg", "alt": "Post number 1"}
    assert data["name"] == "Post number 1" and data["slug"] == "post-number-1"
    assert "reading-time" not in data and item["isDraft"] is True


def test_unknown_option_is_a_permanent_error() -> None:
    with WebflowServer() as server, pytest.raises(PermanentError, match="option 'DevOps'"):
        webflow(server).upsert(record(1, category="DevOps"), None, draft=True)


def test_duplicate_slug_is_a_permanent_validation_error() -> None:
    with WebflowServer() as server:
        dest = webflow(server)
        dest.upsert(record(1), None, draft=True)
        with pytest.raises(PermanentError) as err:
            dest.upsert({**record(2), "slug": "post-number-1"}, None, draft=True)
    assert err.value.status_code == 400 and err.value.error_type == "validation"
    assert "Unique value is already in database: 'post-number-1'" in err.value.message


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [(400, PermanentError, "validation"), (401, FatalError, "auth"), (403, FatalError, "auth"),
     (404, PermanentError, "api-error"), (409, PermanentError, "validation"),
     (418, PermanentError, "validation"), (429, RetryableError, "rate-limit"),
     (500, RetryableError, "api-error"), (502, RetryableError, "api-error"),
     (503, RetryableError, "api-error"), (504, RetryableError, "timeout"),
     (599, RetryableError, "api-error")],
)  # fmt: skip
def test_status_table(status: int, kind: type, error_type: str) -> None:
    dest = WebflowDestination(collection_id="c", token=SecretStr("t"), rate_per_minute=60_000)
    response = httpx.Response(status, json={"code": "x", "message": "m", "details": []},
                              request=httpx.Request("POST", "http://h/v2/collections/c/items"))  # fmt: skip
    error = dest._error("POST", "/collections/c/items", response)
    assert type(error) is kind and error.error_type == error_type and error.status_code == status


def test_429_carries_retry_after_and_holds_the_pacer() -> None:
    with WebflowServer(rate_limit=2, window_s=30) as server:
        dest = webflow(server, items_per_request=1)  # a request per look-up
        dest.find(record(1))
        dest.find(record(2))
        with pytest.raises(RetryableError) as err:
            dest.find(record(3))
    assert err.value.status_code == 429 and err.value.error_type == "rate-limit"
    assert 1 <= err.value.retry_after <= 30
    # the pacer gives no slot until the Retry-After is over
    held_for = dest.pacer._hold_until - dest.pacer._clock()
    assert err.value.retry_after - 5 < held_for <= err.value.retry_after


def test_timeout_and_dropped_connection_are_retryable() -> None:
    faults = Faults(slow_rate=1.0, slow_seconds=1.0)
    with WebflowServer(faults=faults) as server:
        dest = WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                                  token=SecretStr("test-token"), rate_per_minute=60_000, timeout_s=0.3)  # fmt: skip
        with pytest.raises(RetryableError) as err:
            dest.upsert(record(1), None, draft=True)
        assert err.value.error_type == "timeout"
        assert len(server.items) == 1  # the write happened: a retry must look it up first
    with (
        WebflowServer(faults=Faults(drop_rate=1.0)) as server,
        pytest.raises(RetryableError, match="connection failed"),
    ):
        webflow(server).upsert(record(1), None, draft=True)


def test_token_never_appears_in_errors() -> None:
    with WebflowServer(token="the-real-token") as server:
        dest = WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                                  token=SecretStr("s3cret-wrong-token"), rate_per_minute=60_000)  # fmt: skip
        with pytest.raises(FatalError) as err:
            dest.check()
    assert "s3cret" not in str(err.value) and err.value.status_code == 401
    assert "s3cret" not in repr(dest) and "s3cret" not in str(dest.model_dump())
