"""Plain-Python pieces of the full run: transform, backoff, Retry-After, pacer, breaker, thresholds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from batchgate.backoff import backoff_delays, jittered, parse_retry_after
from batchgate.breaker import CircuitBreaker, evaluate
from batchgate.destinations import WriteResult
from batchgate.dlq import aggregate, recommendations
from batchgate.errors import PermanentError, RetryableError
from batchgate.pacer import Pacer
from batchgate.transform import blog_record, cut_at_word, reading_time, to_html
from batchgate.writer import RetryPolicy, RunContext, WorkItem, write_with_retries


def test_markdown_to_html_escapes_raw_html() -> None:
    html = to_html("# Title\n\nHello **world** <script>alert(1)</script>\n\n```py\nx = 1\n```")
    assert "<h1>Title</h1>" in html and "<strong>world</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<pre><code class="language-py">x = 1' in html


@pytest.mark.parametrize(("words", "minutes"), [(0, 0), (1, 1), (200, 1), (201, 2), (3200, 16)])
def test_reading_time_rounds_up(words: int, minutes: int) -> None:
    assert reading_time(words) == minutes


def test_seo_fields_cut_at_a_word_boundary() -> None:
    title = "An Unusually Long Title About Data Pipelines That Keeps Going On and On"
    record = blog_record("p1", {"title": title, "summary": None, "body_markdown": "word " * 100})
    assert len(record["seo_title"]) <= 60 and title.startswith(record["seo_title"])
    assert record["seo_title"] == "An Unusually Long Title About Data Pipelines That Keeps"
    assert len(record["seo_description"]) <= 160 and not record["seo_description"].endswith(" ")
    assert record["seo_description"].split()[-1] == "word"  # from the body, whole words only
    assert record["reading_time"] == 1 and record["word_count"] == 100
    assert cut_at_word("x" * 80, 60) == "x" * 60  # one long word is cut hard


def test_backoff_doubles_and_jitter_spreads() -> None:
    assert backoff_delays(2, 3) == [2, 4, 8]
    rng = random.Random(1)
    spread = {round(jittered(4, 0.5, rng), 6) for _ in range(50)}
    assert len(spread) > 40 and min(spread) >= 2 and max(spread) <= 6


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2025, 10, 28, 10, 0, tzinfo=UTC)
    assert parse_retry_after("60") == 60
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("100000") == 600  # clamped
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_pacer_spaces_requests_and_honours_holds() -> None:
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    pacer = Pacer(rate_per_s=10, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        pacer.acquire()
    assert waits == pytest.approx([0.1, 0.1])
    pacer.hold(5)
    pacer.acquire()
    assert waits[-1] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("failed", "size", "decision"),
    [(0, 5, "continue"), (2, 5, "continue"), (3, 5, "pause"), (3, 6, "pause"), (4, 5, "abort"),
     (5, 5, "abort"), (1, 2, "pause"), (0, 0, "continue")],
)  # fmt: skip
def test_circuit_breaker(failed: int, size: int, decision: str) -> None:
    assert CircuitBreaker(0.5, 0.8).decide(failed, size) == decision


@pytest.mark.parametrize(
    ("succeeded", "attempted", "threshold", "outcome"),
    [(10, 10, 90, "complete"), (9, 10, 90, "partial-success"), (8, 10, 90, "failed"),
     (9, 10, "critical", "failed"), (9, 10, "standard", "partial-success"),
     (1, 10, "low", "partial-success"), (0, 10, "low", "failed"), (0, 0, 90, "complete")],
)  # fmt: skip
def test_thresholds(succeeded: int, attempted: int, threshold, outcome: str) -> None:
    assert evaluate(succeeded, attempted, threshold) == outcome


def test_dlq_recommendations_and_stats() -> None:
    assert "Retry-After" not in " ".join(recommendations("rate-limit"))
    assert recommendations("nonsense") == recommendations("unknown")
    stats = aggregate(
        [{"error_type": "timeout"}, {"error_type": "timeout"}, {"error_type": "api-error"}]
    )
    assert stats == {"total_failed": 3, "errors_by_type": {"timeout": 2, "api-error": 1},
                     "most_common_error": "timeout"}  # fmt: skip


class FlakyDestination:
    """A destination whose first answers fail as scripted (no HTTP: this tests the retry loop)."""

    key, idempotent, needs_publish, rate_per_s = "flaky", True, False, None

    def __init__(self, script: list[Exception | None]) -> None:
        self.script, self.calls = list(script), 0

    def find(self, record):  # noqa: ANN001, ANN201
        return None

    def find_many(self, keys):  # noqa: ANN001, ANN201
        return {}

    def snapshot_many(self, dest_ids):  # noqa: ANN001, ANN201
        return dict.fromkeys(dest_ids)

    def upsert_many(self, entries, draft):  # noqa: ANN001, ANN201
        results = []
        for record, dest_id, current in entries:
            try:
                results.append(self.upsert(record, dest_id, draft, current))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def upsert(self, record, dest_id, draft, current=None):  # noqa: ANN001, ANN201
        self.calls += 1
        error = self.script.pop(0) if self.script else None
        if error:
            raise error
        return WriteResult(record["source_id"], "created")


class MemoryLedger:
    def __init__(self) -> None:
        self.attempts: list[tuple] = []

    def record_attempt(self, *args) -> None:  # noqa: ANN002
        self.attempts.append(args)

    def mark_intents(self, key, run_id, entries):  # noqa: ANN001, ANN201
        return {item_id: ahead for item_id, _, ahead in entries}


def work() -> WorkItem:
    return WorkItem(0, "p1", "T", None, {"source_id": "p1", "title": "T", "slug": "t"}, "h")


def test_multi_item_retry_loop_retries_transient_and_waits_retry_after() -> None:
    sleeps: list[float] = []
    dest = FlakyDestination([RetryableError("500", status_code=500),
                             RetryableError("429", status_code=429, error_type="rate-limit",
                                            retry_after=30)])  # fmt: skip
    ledger = MemoryLedger()
    ctx = RunContext("run", dest, ledger, draft=True)  # type: ignore[arg-type]
    (outcome,) = write_with_retries([work()], ctx, RetryPolicy(3, 2.0, 0.5), sleep=sleeps.append)
    assert outcome.status == "succeeded" and outcome.attempts == 3
    assert 1.0 <= sleeps[0] <= 3.0 and sleeps[1] >= 30  # backoff, then at least Retry-After
    assert [a[2] for a in ledger.attempts] == [1, 2]


def test_multi_item_retry_loop_never_retries_permanent_or_unknown() -> None:
    for error in (PermanentError("400", status_code=400), KeyError("bug")):
        dest = FlakyDestination([error])
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        (outcome,) = write_with_retries([work()], ctx, RetryPolicy(3, 0, 0), sleep=lambda s: None)
        assert outcome.status == "failed" and outcome.attempts == 1 and dest.calls == 1
    assert outcome.error_type == "unknown"
