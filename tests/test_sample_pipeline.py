"""The sample flow and the pipeline's approval gate, against a real Prefect API."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchgate.config import LedgerConfig, load_job
from batchgate.errors import ConfigError
from batchgate.sample import pick_sample
from batchgate.writer import WorkItem
from blocks.ledger import open_ledger
from tests.conftest import blog_row, copy_example
from tests.fakes.webflow_server import WebflowServer
from tests.test_full_flow import webflow_job


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def work(n: int) -> WorkItem:
    return WorkItem(seq=n, item_id=f"p-{n:03d}", title=f"Post {n}", source_url=None, data={},
                    content_hash="h")  # fmt: skip


# --- choosing the sample ------------------------------------------------------------------------


def test_sample_spans_short_medium_and_long_deterministically() -> None:
    candidates = [(work(n), words) for n, words in enumerate([900, 120, 3000, 450, 1800, 2500,
                                                               60, 1500, 700], 1)]  # fmt: skip
    picks = pick_sample(candidates, 3)
    assert [(p.work.item_id, p.size, p.words) for p in picks] == [
        ("p-002", "short", 120), ("p-001", "medium", 900), ("p-006", "long", 2500)
    ]  # fmt: skip
    assert [p.work.item_id for p in pick_sample(list(reversed(candidates)), 3)] == [
        p.work.item_id for p in picks
    ]  # the order of the source does not matter
    five = pick_sample(candidates, 5)
    assert len({p.work.item_id for p in five}) == 5
    assert [p.words for p in five] == sorted(p.words for p in five)
    assert {p.size for p in five} == {"short", "medium", "long"}


def test_sample_count_and_explicit_ids_are_checked() -> None:
    candidates = [(work(n), 100 * n) for n in range(1, 10)]
    for count in (2, 6):
        with pytest.raises(ConfigError, match=f"sample_count is {count}.*between 3 and 5"):
            pick_sample(candidates, count)
    picks = pick_sample(candidates, 3, ids=["p-009", "p-001"])
    assert [(p.work.item_id, p.size) for p in picks] == [("p-009", "long"), ("p-001", "short")]
    with pytest.raises(ConfigError, match="p-404 cannot be sampled.*dry-run report"):
        pick_sample(candidates, 3, ids=["p-001", "p-404"])
    assert len(pick_sample(candidates[:2], 3)) == 2  # fewer candidates than asked: all of them


# --- the sample flow ----------------------------------------------------------------------------


def example_job(tmp_path: Path) -> Any:
    copy_example(tmp_path / "blog")
    job = load_job(tmp_path / "blog" / "job.yaml")
    return job.model_copy(update={"ledger": LedgerConfig(path=str(tmp_path / "ledger.db"))})


def cms_rows(tmp_path: Path) -> list[dict[str, Any]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'blog' / 'cms.db'}")
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("posts"):
            return []
        rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM posts"))]
    engine.dispose()
    return rows


@pytest.mark.prefect
def test_sample_writes_three_drafts_and_reports_them(prefect_api: str, tmp_path: Path) -> None:
    from flows.sample import sample

    job = example_job(tmp_path)
    summary = sample(job, json_path=str(tmp_path / "sample.json"))
    assert summary["status"] == "complete" and summary["total"] == 3
    items = summary["items"]
    assert [i["size"] for i in items] == ["short", "medium", "long"]
    assert items[0]["words"] < items[1]["words"] < items[2]["words"]
    rows = {r["source_id"]: r for r in cms_rows(tmp_path)}
    assert set(rows) == {i["item_id"] for i in items}
    assert all(r["draft"] for r in rows.values())  # drafts, not live
    text = summary["report"]
    for expected in ("✅ Sample Batch Complete", "Processed: 3/3 successful",
                     "Mode: Draft (not live)", "[SHORT]", "[MEDIUM]", "[LONG]",
                     "MANUAL REVIEW REQUIRED:", "batchgate full --job",
                     f"batchgate rollback {summary['run_id']}", "min read"):  # fmt: skip
        assert expected in text, expected
    for item in items:  # link, words, reading time, images, duration per item
        assert f"Destination ID: {item['dest_id']}" in text
        assert f"Draft: {item['link']}" in text and "source_id=" in item["link"]
        assert f"{item['words']:,} words, {item['reading_time']} min read" in text
    run = open_ledger(job.ledger).run(summary["run_id"])
    assert run["mode"] == "sample" and run["report"] == text and run["succeeded"] == 3
    again = sample(job)  # the same choice among the items not yet written
    assert {i["item_id"] for i in again["items"]}.isdisjoint(rows)


@pytest.mark.prefect
def test_approved_sample_is_published_in_place_not_written_twice(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.sample import sample

    words = lambda n: " ".join(["word"] * (40 * n))  # noqa: E731 - lengths 40..480 words
    write_csv([blog_row(n, body_markdown=f"# T\n\n{words(n)}") for n in range(1, 13)])
    with WebflowServer() as server:
        job = load_job(webflow_job(tmp_path, server, publish=True))
        drafted = sample(job, sample_ids=["p-002", "p-011"])
        assert [i["size"] for i in drafted["items"]] == ["short", "long"]
        ids = {i["item_id"]: i["dest_id"] for i in drafted["items"]}
        assert all(server.items[d]["isDraft"] for d in ids.values())
        assert not server.state.published
        summary = full(job)
        slugs = Counter(server.state.slugs())
        items = dict(server.items)
    assert summary["succeeded"] == 12 and len(slugs) == 12 and max(slugs.values()) == 1
    for dest_id in ids.values():  # same item, now live and published
        assert items[dest_id]["isDraft"] is False and dest_id in server.state.published


# --- the pipeline ---------------------------------------------------------------------------------


def answer_when_paused(ledger: Any, approve: bool, notes: str = "") -> threading.Thread:
    """A reviewer elsewhere: resumes the paused run through the Prefect API, as the UI does."""
    from flows.pipeline import send_review, wait_for_pause

    def review() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            waiting = [r for r in ledger.runs() if r["status"] == "awaiting-approval"]
            if waiting:
                wait_for_pause(waiting[0]["flow_run_id"])
                send_review(waiting[0]["flow_run_id"], approve, notes)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    return thread


@pytest.mark.prefect
def test_pipeline_approved_through_the_api_runs_full_over_the_rest(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    job = example_job(tmp_path)
    ledger = open_ledger(job.ledger)
    reviewer = answer_when_paused(ledger, approve=True, notes="looks right")
    state = pipeline(job, allow_blocked=True, approval_poll_s=1, return_state=True)
    reviewer.join(60)
    assert not reviewer.is_alive(), "the reviewer never finished"
    assert state.is_completed() and state.name == "Completed"
    (run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert run["outcome"] == "complete"
    children = {r["mode"]: r for r in ledger.runs_of(run["run_id"])}
    assert set(children) == {"dry-run", "sample", "full"}
    full_run = children["full"]
    # 49 written in all: the 3 sample drafts are current, so full writes the other 46 once
    assert (full_run["succeeded"], full_run["unchanged"], full_run["skipped"]) == (49, 3, 3)
    assert len(cms_rows(tmp_path)) == 49


@pytest.mark.prefect
def test_pipeline_rejected_rolls_the_sample_back(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import pipeline

    job = example_job(tmp_path)
    ledger = open_ledger(job.ledger)
    reviewer = answer_when_paused(ledger, approve=False, notes="wrong headings")
    state = pipeline(job, allow_blocked=True, approval_poll_s=1, return_state=True)
    reviewer.join(60)
    assert not reviewer.is_alive(), "the reviewer never finished"
    assert state.is_completed() and state.name == "Rejected"
    (run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert run["outcome"] == "rejected" and "wrong headings" in run["message"]
    (drafts,) = ledger.runs_of(run["run_id"], mode="sample")
    assert drafts["status"] == "rolled-back"
    assert cms_rows(tmp_path) == [] and not ledger.runs_of(run["run_id"], mode="full")


@pytest.mark.prefect
def test_pipeline_times_out_and_leaves_the_drafts(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import pipeline

    job = example_job(tmp_path)
    state = pipeline(job, allow_blocked=True, approval_timeout_s=2, approval_poll_s=1,
                     return_state=True)  # fmt: skip
    assert state.is_failed()  # the server has already failed it: "timedout and never resumed"
    ledger = open_ledger(job.ledger)
    (run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
    assert run["outcome"] == "timed-out" and "left for review" in run["message"]
    assert len(cms_rows(tmp_path)) == 3 and all(r["draft"] for r in cms_rows(tmp_path))


@pytest.mark.prefect
def test_pipeline_stops_before_the_sample_when_items_are_blocked(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    job = example_job(tmp_path)
    state = pipeline(job, return_state=True)
    assert state.is_failed() and "3 item(s) are blocked" in state.message
    assert "allow_blocked" in state.message
    ledger = open_ledger(job.ledger)
    assert [r["mode"] for r in ledger.runs()] == ["dry-run", "pipeline"]
    assert cms_rows(tmp_path) == []


# --- the terminal reviewer (what `batchgate pipeline` runs beside the flow) ------------------------


def run_with_reviewer(tmp_path: Path, read_line: Callable[[], str], **kwargs: Any) -> tuple:
    import io

    from batchgate.ledger import new_run_id
    from batchgate.review import Reviewer
    from flows.pipeline import pipeline, review_state, send_review

    job = example_job(tmp_path)
    ledger = open_ledger(job.ledger)
    run_id, out = new_run_id("pipeline"), io.StringIO()
    reviewer = Reviewer(ledger, run_id, review_state, send_review, out=out, read_line=read_line,
                        **kwargs)  # fmt: skip
    reviewer.start()
    state = pipeline(job, allow_blocked=True, approval_poll_s=1, run_id=run_id,
                     return_state=True)  # fmt: skip
    reviewer.stop()
    reviewer.join(60)
    assert not reviewer.is_alive(), "the terminal reviewer did not stop"
    return state, reviewer, out.getvalue(), ledger.run(run_id)


@pytest.mark.prefect
def test_terminal_answer_y_resumes_the_paused_run(prefect_api: str, tmp_path: Path) -> None:
    state, reviewer, said, run = run_with_reviewer(tmp_path, lambda: "y\n")
    assert reviewer.answer == "approved" and run["outcome"] == "complete"
    assert "✅ Sample Batch Complete" in said and "Approve the sample? [y/N]" in said
    assert "45 ready, 4 with warnings, 3 blocked" in said
    assert len(cms_rows(tmp_path)) == 49


@pytest.mark.prefect
def test_an_approval_elsewhere_ends_the_terminal_question(prefect_api: str, tmp_path: Path) -> None:
    from flows.pipeline import send_review

    asked, never = threading.Event(), threading.Event()
    ledger = open_ledger(LedgerConfig(path=str(tmp_path / "ledger.db")))

    def in_the_ui() -> None:  # answers while the terminal question is open
        assert asked.wait(120)
        (waiting,) = [r for r in ledger.runs() if r["status"] == "awaiting-approval"]
        send_review(waiting["flow_run_id"], True, "approved in the UI")

    ui = threading.Thread(target=in_the_ui, daemon=True)
    ui.start()
    state, reviewer, said, run = run_with_reviewer(
        tmp_path, lambda: (asked.set(), never.wait(), "")[-1]
    )
    never.set()  # the question's reader thread may end now
    ui.join(60)
    assert not ui.is_alive(), "the UI's answer never came"
    assert reviewer.answer == "elsewhere" and "resumed elsewhere" in said
    assert run["outcome"] == "complete"
    assert run["message"].startswith("sample approved: approved in the UI; full run ")


def test_webflow_draft_links_follow_the_link_template(tmp_path: Path) -> None:
    from batchgate.config import WebflowDestinationConfig
    from blocks.webflow import WebflowDestination

    config = WebflowDestinationConfig(
        type="webflow", collection_id="c1", token="t",
        link_template="https://my-site.webflow.io/blog/{slug}?item={id}&c={collection_id}",
    )  # fmt: skip
    destination = WebflowDestination.from_config(config)
    assert destination.link("i9", {"slug": "hello"}) == (
        "https://my-site.webflow.io/blog/hello?item=i9&c=c1"
    )
    plain = WebflowDestination.from_config(config.model_copy(update={"link_template": None}))
    assert plain.link("i9", {"slug": "hello"}).endswith("/collections/c1/items/i9")


@pytest.mark.prefect
def test_pipeline_cli_stops_on_blocked_items_and_shows_them(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from batchgate.cli import main

    monkeypatch.chdir(tmp_path)
    copy_example(tmp_path / "blog")
    assert main(["pipeline", "--job", "blog/job.yaml"]) == 2
    out = capsys.readouterr().out
    assert "blocked. 3 item(s) are blocked" in out and "❌ BLOCKED (must fix" in out
    assert "post-050" in out and "--allow-blocked" in out
    assert not (tmp_path / "blog" / "cms.db").exists()
