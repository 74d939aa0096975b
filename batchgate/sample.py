"""The sample phase: pick a few items that span short, medium and long content, and report them."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchgate.errors import ConfigError
from batchgate.escaping import md_code, md_link, md_text, one_line
from batchgate.report import RULE
from batchgate.writer import WorkItem

SAMPLE_MIN, SAMPLE_MAX = 3, 5
SIZES = ("short", "medium", "long")


@dataclass(slots=True)
class Pick:
    work: WorkItem
    size: str  # short | medium | long, by the item's place among the candidates' word counts
    words: int


@dataclass(frozen=True, slots=True)
class Choice:
    """A chosen item, by its seq: the sample fetches its WorkItem afterwards."""

    seq: int
    size: str
    words: int


class SampleKeys:
    """What the sample keeps of each writable item while it reads the plan a slice at a time:
    its seq, word count and whether it is new (never written), in arrays (17 bytes an item, so
    a million items take 17 MB, not the items), and the items asked for by id (at most 5)."""

    __slots__ = ("seqs", "words", "new", "asked", "_ids")

    def __init__(self, ids: Iterable[str] | None = None) -> None:
        self.seqs, self.words, self.new = array("q"), array("q"), array("B")
        self._ids = set(ids or ())
        self.asked: dict[str, tuple[int, int, WorkItem]] = {}  # item id -> (words, seq, item)

    def add(self, work: WorkItem, words: int) -> None:
        self.seqs.append(work.seq)
        self.words.append(words)
        self.new.append(work.dest_id is None and not work.intent)
        if work.item_id in self._ids:
            known = self.asked.get(work.item_id)
            if known is None or (words, work.seq) > known[:2]:  # an id twice: the later-ranked
                self.asked[work.item_id] = (words, work.seq, work)

    def __len__(self) -> int:
        return len(self.seqs)


def check_request(count: int, ids: list[str] | None) -> None:
    """The sample's size or its ids, checked before any item is read."""
    if not ids and not SAMPLE_MIN <= count <= SAMPLE_MAX:
        raise ConfigError(
            f"sample_count is {count}. Fix: choose between {SAMPLE_MIN} and {SAMPLE_MAX}."
        )
    if ids and len(ids) > SAMPLE_MAX:
        raise ConfigError(f"{len(ids)} sample ids given. Fix: name at most {SAMPLE_MAX}.")


def choose(
    keys: SampleKeys, count: int = SAMPLE_MIN, ids: list[str] | None = None, new_first: bool = True
) -> list[Choice]:
    """`count` items spread evenly over the candidates ranked by (word count, seq): the middle
    of each of `count` equal slices (deterministic). With `new_first`, only the new items are
    candidates when there are at least `count` of them: a sample of updates would change items
    that may already be live. Explicit `ids` override the choice (ranked among every item);
    each must be a writable item of this job (`keys` made with those ids)."""
    check_request(count, ids)
    seqs = np.frombuffer(keys.seqs, dtype=np.int64)
    words = np.frombuffer(keys.words, dtype=np.int64)
    if new_first and not ids:
        new = np.frombuffer(keys.new, dtype=np.uint8).astype(bool)
        if int(new.sum()) >= count:
            seqs, words = seqs[new], words[new]
    n = len(seqs)

    def size(position: int) -> str:
        return SIZES[min(3 * position // n, 2)] if n else "short"

    if ids:
        unknown = [i for i in ids if i not in keys.asked]
        if unknown:
            raise ConfigError(
                f"sample item(s) {', '.join(unknown)} cannot be sampled: not in the source, blocked "
                "by validation, or already written with the same content. Fix: pick ids from the "
                "dry-run report's Ready or Warnings list, or leave sample_ids empty."
            )
        out = []
        for item_id in dict.fromkeys(ids):
            w, s, _ = keys.asked[item_id]
            position = int(np.count_nonzero((words < w) | ((words == w) & (seqs < s))))
            out.append(Choice(s, size(position), w))
        return out
    order = np.lexsort((seqs, words))  # by words, then seq
    if n <= count:
        chosen = list(range(n))
    else:
        # the middle of each of `count` equal slices: 3 of 49 -> positions 8, 24, 40
        chosen = [int((2 * k + 1) * n / (2 * count)) for k in range(count)]
    return [Choice(int(seqs[order[i]]), size(i), int(words[order[i]])) for i in chosen]


def pick_sample(
    candidates: list[tuple[WorkItem, int]], count: int = SAMPLE_MIN, ids: list[str] | None = None
) -> list[Pick]:
    """`choose` over a list that pairs each writable item with its word count, every item a
    candidate (no preference for new ones)."""
    keys = SampleKeys(ids)
    by_seq = {}
    for work, words in candidates:
        keys.add(work, words)
        by_seq[work.seq] = work
    return [Pick(by_seq[c.seq], c.size, c.words) for c in choose(keys, count, ids, new_first=False)]


@dataclass
class SampleEntry:
    title: str
    item_id: str
    size: str
    words: int | None  # None: the records have no body (no words, reading time or images)
    reading_time: int | None
    images: int | None
    status: str  # succeeded | failed
    dest_id: str | None = None
    link: str | None = None
    action: str | None = None
    duration_s: float = 0.0
    attempts: int = 1
    error: str | None = None


@dataclass
class SampleReport:
    run_id: str
    destination: str
    entries: list[SampleEntry] = field(default_factory=list)
    duration_s: float = 0.0
    approve_hint: list[str] = field(default_factory=list)  # the commands after review
    note: str | None = None
    drafts: bool = True  # the destination keeps the sample out of sight (drafts)
    body: bool = True  # the items have a body (words, images, formatting to look at)

    @property
    def succeeded(self) -> int:
        return sum(1 for e in self.entries if e.status == "succeeded")

    @property
    def status(self) -> str:
        if not self.entries:
            return "empty"
        return "complete" if self.succeeded == len(self.entries) else (
            "failed" if self.succeeded == 0 else "partial-success"
        )  # fmt: skip

    def _lines(self, md: bool) -> list[str]:
        head = {"complete": "✅ Sample Batch Complete", "partial-success": "⚠️  Sample Batch "
                "Partly Failed", "failed": "❌ Sample Batch Failed",
                "empty": "ℹ️  Nothing to Sample"}[self.status]  # fmt: skip
        lines = [f"## {head}" if md else head, ""]
        if not self.entries:
            lines.append(self.note or "Every ready item is already written with the same content.")
            return lines
        bullet = "- " if md else ""
        lines += [
            f"{bullet}Processed: {self.succeeded}/{len(self.entries)} successful",
            f"{bullet}Duration: {self.duration_s:.1f} seconds",
            f"{bullet}Mode: Draft (not live)" if self.drafts else f"{bullet}Mode: Written as they "
            "are (this destination keeps no drafts: a rejection rolls them back)",
            f"{bullet}Run: {self.run_id}",
            f"{bullet}Destination: {self.destination}",
            "",
            "" if md else RULE,
            "",
            ("PUBLISHED ITEMS (drafts for review):" if self.drafts else "ITEMS WRITTEN FOR REVIEW:")
            if not md else ("**Drafts for review:**" if self.drafts else "**Items for review:**"),
            "",
        ]
        # item text is escaped: a title cannot add a heading to the approval form or a line here
        code, text = (md_code, md_text) if md else (one_line, one_line)
        for n, e in enumerate(self.entries, 1):
            images = f"{e.images} image{'s' if e.images != 1 else ''}"
            title = f"**{md_text(e.title)}**" if md else f'"{one_line(e.title)}"'
            size = f" [{e.size.upper()}]" if self.body else ""
            lines.append(f"{n}. {title}{size} ({code(e.item_id)})")
            if e.status == "succeeded":
                link = md_link(e.link) if md and e.link else code(e.link)
                details = [
                    f"✅ Destination ID: {code(e.dest_id)} ({e.action})",
                    f"📝 Draft: {link}" if self.drafts else f"🔗 Written: {link}",
                ]
            else:
                details = [f"❌ Failed after {e.attempts} attempt(s): {text(e.error)}"]
            if e.words is not None:
                details.append(f"📊 {e.words:,} words, {e.reading_time} min read, {images}")
            details.append(f"⏱️  Duration: {e.duration_s:.2f} seconds")
            lines += [f"   {'- ' if md else ''}{line}" for line in details] + [""]
        if self.note:
            lines += [self.note, ""]
        lines += [
            "" if md else RULE,
            "",
            "**MANUAL REVIEW REQUIRED:**" if md else "MANUAL REVIEW REQUIRED:",
            "",
            *(self._checklist()),
            "",
            "After review:",
        ]
        lines += [f"- {hint}" if md else hint for hint in self.approve_hint]
        return lines

    def _checklist(self) -> list[str]:
        if self.body:
            return ["Please verify the draft items before the full batch:",
                    "1. Content formatting (headings, images, structure)",
                    "2. Data accuracy (fields mapped correctly)",
                    "3. Visual quality (images render correctly)"]  # fmt: skip
        return ["Please verify the items written before the full batch:",
                "1. Data accuracy: every field in its column, with the value the source holds",
                "2. Types and formats: numbers, dates and lists as the destination expects them"]  # fmt: skip

    def as_text(self) -> str:
        return "\n".join(self._lines(md=False)).rstrip() + "\n"

    def as_markdown(self) -> str:
        return "\n".join(self._lines(md=True)).rstrip() + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "destination": self.destination,
            "succeeded": self.succeeded,
            "total": len(self.entries),
            "duration_s": round(self.duration_s, 2),
            "items": [vars(e) for e in self.entries],
        }
