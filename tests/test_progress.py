"""Terminal progress of a full run: live redraws under a real pseudo-terminal, plain lines (a
chunk a line, no escape codes) into a pipe or a StringIO. No Prefect server: fast."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from typing import TextIO

import pytest

from batchgate.progress import ConsoleProgress, Progress

HEADER = (
    "🚀 Full Batch Processing in Progress\n\nTotal Items: 20\nBatch Size: 10 concurrent items\n"
    "Estimated Duration: about 2 seconds\n\n" + "━" * 46 + "\n\n"
)
LINE_1 = "Batch 1/2 (Items 1-10)       ████████████████████ 100% ⚠️  (0.2s, 1 failed)"
LINE_2 = "Batch 2/2 (Items 11-20)      ████████████████████ 100% ✅ (0.1s)"


def run(stream: TextIO, between: Callable[[], None] = lambda: None) -> Progress:
    """What flows/full.py does with a 20-item run in two chunks, one item failing."""
    progress = Progress(total=20, chunks=2, skipped=3)
    console = ConsoleProgress(progress, stream)
    console.header("Full Batch Processing in Progress", 10, "about 2 seconds")
    progress.in_progress = 10
    between()
    progress.in_progress, progress.succeeded, progress.failed = 0, 9, 1
    progress.started = time.monotonic() - 5  # 10 items in 5 s: 2.0 items/s, 5 s to go
    console.chunk_done(progress.chunk_line(1, 1, 10, 10, 10, 0.2, 0, 1))
    console.breaker("pause", 30)
    between()
    progress.succeeded = 19
    console.chunk_done(progress.chunk_line(2, 11, 20, 10, 10, 0.1, 0, 0))
    console.breaker("continue")
    console.finish()
    return progress


def test_without_a_terminal_it_prints_plain_lines_a_chunk_a_line() -> None:
    stream = io.StringIO()
    run(stream)
    out = stream.getvalue()
    assert out.startswith(
        HEADER + LINE_1 + "\n" + LINE_2 + "\n\n" + "━" * 46 + "\n\nCurrent Status:\n"
    )
    assert "\x1b" not in out  # no cursor moves, no colours: a log stays readable
    assert "Overall" not in out  # no live area
    block = out.split("Current Status:\n")[1]
    for line in ["✅ Successful: 19", "❌ Failed (DLQ): 1", "⏭️  Skipped: 3", "✋ Held: 0",
                 "⏸️  Queued: 0", "Circuit Breaker: closed"]:  # fmt: skip
        assert line + "\n" in block


def test_into_a_pipe_it_prints_the_same_plain_lines() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w", encoding="utf-8") as stream:
        run(stream)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        out = pipe.read()
    assert out.startswith(HEADER + LINE_1 + "\n" + LINE_2 + "\n")
    assert "\x1b" not in out


class Terminal:
    """A real pseudo-terminal: the progress writes to its slave end, a thread drains the master."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.stream = os.fdopen(slave, "w", encoding="utf-8")
        self.received = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the slave end closed
                return
            if not chunk:
                return
            self.received.extend(chunk)

    def output(self) -> str:
        self.stream.close()
        self._reader.join(timeout=5)
        os.close(self.master)
        return self.received.decode("utf-8").replace("\r\n", "\n")


def test_under_a_terminal_it_redraws_bars_rate_eta_counts_and_the_breaker() -> None:
    terminal = Terminal()
    run(terminal.stream, between=lambda: time.sleep(0.3))  # the live area refreshes meanwhile
    out = terminal.output()
    assert out.startswith(HEADER)
    assert "\x1b[?25l" in out and out.count("\x1b[1A\x1b[2K") >= 3  # cursor hidden, lines redrawn
    assert out.count("Batch 1/2 (Items 1-10)") == 1 and out.count("Batch 2/2 (Items 11-20)") == 1
    live = out[out.index(LINE_1) : out.index(LINE_2)]  # what was drawn between the two chunks
    assert "Overall " in live and " 10/20  50% " in live and "━" in live
    assert "2.0 items/s" in live and "ETA 5 seconds" in live
    assert "✅ 9 succeeded  ❌ 1 failed (DLQ)  🔄 0 retrying" in live
    assert "✋ 0 held  ⏭️  3 skipped  ⏳ 0 in progress  ⏸️  10 queued" in live
    assert (
        "Circuit breaker: closed" in live and "Circuit breaker: tripped, paused (30 seconds" in live
    )
    end = out[out.rindex("\x1b[?25h") :]  # the cursor is back; the live area's 5 lines erased
    assert "\x1b[1A\x1b[2K" * 5 in end.split("Current Status")[0]
    assert "Overall" not in end and "\nCurrent Status:\n✅ Successful: 19\n" in end
    assert end.rstrip().endswith("Estimated Time Remaining: 0 seconds")


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    terminal = Terminal()
    run(terminal.stream)
    out = terminal.output()
    assert out.startswith(HEADER + LINE_1 + "\n" + LINE_2 + "\n")
    assert "\x1b" not in out


@pytest.mark.parametrize(
    "decision, pause_left, shown",
    [
        ("continue", 0, "closed"),
        ("pause", 30, "tripped, paused (30 seconds left)"),
        ("pause", -1, "closed (resumed)"),
        ("abort", 0, "tripped, aborting"),
    ],
)
def test_breaker_states(decision: str, pause_left: float, shown: str) -> None:
    progress = Progress(total=10, chunks=1, breaker=decision)
    progress.paused_until = time.monotonic() + pause_left + 0.4
    assert progress.breaker_state() == shown


def test_held_items_are_neither_queued_nor_waited_for() -> None:
    progress = Progress(total=100, chunks=10, succeeded=40, held=20)
    progress.started = time.monotonic() - 20  # 2 items/s
    assert progress.queued == 40
    assert round(progress.eta_seconds() or 0) == 20  # the 40 left, not the 60 unwritten
