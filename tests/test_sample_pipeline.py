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
from batchgate.sample import SampleKeys, choose, pick_sample
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


def reference_choice(
    work: list[WorkItem], words: dict[int, int], count: int, ids: list[str] | None
) -> list[tuple[str, str, int]]:
    """The sample's choice as it was made over the whole plan in memory (before it was read in
    slices): new items first, ranked by (words, seq), the middle of each of `count` slices."""
    new = [w for w in work if w.dest_id is None and not w.intent]
    pool = new if len(new) >= count and not ids else work
    ranked = sorted(pool, key=lambda w: (words[w.seq], w.seq))
    n = len(ranked)
    if ids:
        position = {w.item_id: i for i, w in enumerate(ranked)}
        chosen = [position[i] for i in dict.fromkeys(ids)]
    elif n <= count:
        chosen = list(range(n))
    else:
        chosen = [int((2 * k + 1) * n / (2 * count)) for k in range(count)]
    sizes = ("short", "medium", "long")
    return [(ranked[i].item_id, sizes[min(3 * i // n, 2)], words[ranked[i].seq]) for i in chosen]


def test_compact_choice_equals_the_whole_plan_choice() -> None:
    """Seq, words and newness in arrays choose exactly what the whole list of items chose: new
    items first when there are enough, updates (a dest id or a write in flight) otherwise."""
    import random

    rng = random.Random(7)
    for trial in range(300):
        n = rng.randint(0, 60)
        work = []
        for seq in rng.sample(range(1000), n):
            w = WorkItem(seq=seq, item_id=f"p-{seq:04d}", title="", source_url=None, data={},
                         content_hash="h")  # fmt: skip
            kind = rng.random()
            w.dest_id, w.intent = ("d", False) if kind < 0.3 else (None, kind < 0.4)
            work.append(w)
        words = {w.seq: rng.randint(0, 30) for w in work}  # many ties: the seq decides
        count = rng.randint(3, 5)
        ids = [w.item_id for w in rng.sample(work, min(n, rng.randint(1, 5)))] if (
            work and trial % 4 == 0) else None  # fmt: skip
        keys = SampleKeys(ids)
        for w in work:
            keys.add(w, words[w.seq])
        got = choose(keys, count, ids)
        by_seq = {w.seq: w for w in work}
        assert [(by_seq[c.seq].item_id, c.size, c.words) for c in got] == reference_choice(
            work, words, count, ids
        ), (trial, count, ids)
    assert keys.seqs.typecode == keys.words.typecode == "q"  # arrays, not lists of items


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
    from flows.full import own_plan_id
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
    # given no reviewed plan, the sample made one of its own, read it in slices and dropped it
    assert open_ledger(job.ledger).item_rows(own_plan_id(summary["run_id"])) == []
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


@pytest.mark.prefect
def test_sample_from_a_plan_reads_it_a_slice_at_a_time_and_picks_as_the_whole_plan_did(
    prefect_api: str,
    write_csv: Callable[..., Path],
    write_job: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """3,000 items read 100 at a time: the whole frozen plan is never read, at most about two
    slices of items are alive while it is read and none but the picks when they are recorded,
    and the picks are those of the whole-plan choice on the same plan."""
    import gc

    import batchgate.planner
    import tasks.validate
    from batchgate.ledger import Ledger
    from batchgate.planner import Candidate, from_frozen, plan_run
    from batchgate.transform import word_count
    from flows.dry_run import dry_run
    from flows.sample import sample

    items, size = 3000, 100
    rows = [blog_row(n, id=f"p-{n:05d}", slug=f"post-{n}",
                     body_markdown="# T\n\n" + " ".join(["word"] * ((n * 37) % 211)))
            for n in range(items)]  # fmt: skip
    for n in range(5, items, 250):
        rows[n]["category"] = "DevOps"  # 12 blocked
    write_csv(rows)
    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = load_job(write_job(extra=f"destination: {{type: sql, url: '{url}'}}\n"))
    monkeypatch.setattr(tasks.validate, "CHUNK_SIZE", 500)
    plan_id = dry_run(job)["run_id"]

    ledger = open_ledger(job.ledger)  # the reference: the whole plan, as the sample read it before
    plan = plan_run(from_frozen(ledger.frozen_plan(plan_id)), {}, draft=True)
    words = {w.seq: word_count(w.data) for w in plan.work}
    assert len(plan.work) == items - 12
    expected = reference_choice(plan.work, words, 3, None)
    del plan
    gc.collect()

    def alive() -> int:  # the plan's items alive in this process
        gc.collect()
        return sum(type(o) in (WorkItem, Candidate) for o in gc.get_objects())

    def whole(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole plan or destination map was read")

    per_slice: list[int] = []
    at_record: list[int] = []
    plan_slice, plan_items = Ledger.frozen_plan_slice, Ledger.plan_items

    def spy_slice(self: Ledger, plan: str, after: int, limit: int) -> list[dict[str, Any]]:
        per_slice.append(alive())
        return plan_slice(self, plan, after, limit)

    def spy_record(self: Ledger, run_id: str, rows: Any) -> int:
        at_record.append(alive())
        return plan_items(self, run_id, rows)

    monkeypatch.setattr(batchgate.planner, "SLICE", size)
    monkeypatch.setattr(Ledger, "frozen_plan", whole)
    monkeypatch.setattr(Ledger, "targets_for", whole)
    monkeypatch.setattr(Ledger, "frozen_plan_slice", spy_slice)
    monkeypatch.setattr(Ledger, "plan_items", spy_record)
    summary = sample(job, plan_id=plan_id)

    assert summary["status"] == "complete"
    assert [(i["item_id"], i["size"], i["words"]) for i in summary["items"]] == expected
    assert len(per_slice) == items // size + 1  # every slice read once, then the empty end
    assert max(per_slice) <= 3 * size, f"items alive per slice: {per_slice}"
    assert at_record and max(at_record) <= size, f"items alive at the picks: {at_record}"
    written = {r["source_id"] for r in _sql_rows(url)}
    assert written == {item_id for item_id, _, _ in expected}


def _sql_rows(url: str) -> list[dict[str, Any]]:
    from batchgate.config import SqlDestinationConfig
    from blocks.sql_destination import SqlDestination

    return SqlDestination.from_config(SqlDestinationConfig(type="sql", url=url)).rows()
