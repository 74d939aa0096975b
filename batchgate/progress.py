"""Progress of a full run: counts, per-chunk bars, an ETA from the measured rate. On a terminal
rich redraws it live; anywhere else (a pipe, a CI log) it prints plain lines, a chunk a line."""

from __future__ import annotations

import atexit
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 20
RULE = "━" * 46
BREAKER_STATES = {"continue": "closed", "pause": "tripped, paused", "abort": "tripped, aborting"}


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''} {seconds} seconds"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclass
class Progress:
    """Counts for the whole run; `render` gives the pattern document's status block."""

    total: int
    chunks: int
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    in_progress: int = 0
    held: int = 0  # changed since review: held back, not written
    skipped: int = 0  # blocked by validation: never part of `total`
    breaker: str = "continue"  # the circuit breaker's last decision: continue, pause or abort
    paused_until: float = 0.0  # time.monotonic() at which a breaker pause ends
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def queued(self) -> int:
        return max(self.total - self.done - self.in_progress - self.held, 0)

    def rate(self) -> float | None:
        """Items finished per second since the start."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if self.done and elapsed > 0 else None

    def eta_seconds(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done - self.held) / rate if rate else None

    def breaker_state(self) -> str:
        if self.breaker == "pause":
            left = self.paused_until - time.monotonic()
            return f"tripped, paused ({duration(left)} left)" if left > 0 else "closed (resumed)"
        return BREAKER_STATES.get(self.breaker, self.breaker)

    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def chunk_line(self, number: int, first: int, last: int, done: int, size: int, seconds: float,
                   retries: int, failed: int) -> str:  # fmt: skip
        icon = "✅" if failed == 0 and retries == 0 else ("⚠️ " if failed < size else "❌")
        extra = []
        if retries:
            extra.append(f"{retries} retr{'y' if retries == 1 else 'ies'}")
        if failed:
            extra.append(f"{failed} failed")
        detail = ", ".join([f"{seconds:.1f}s", *extra])
        label = f"Batch {number}/{self.chunks} (Items {first}-{last})"
        return f"{label:<28} {bar(done / size if size else 1)} {round(100 * done / size):>3}% {icon} ({detail})"

    def status_block(self) -> str:
        eta = self.eta_seconds()
        lines = [
            "Current Status:",
            f"✅ Successful: {self.succeeded}",
            f"⏳ In Progress: {self.in_progress}",
            f"🔄 Retrying: {self.retrying}",
            f"❌ Failed (DLQ): {self.failed}",
            f"✋ Held: {self.held}",
            f"⏭️  Skipped: {self.skipped}",
            f"⏸️  Queued: {self.queued}",
            f"Circuit Breaker: {self.breaker_state()}",
            "",
            f"Estimated Time Remaining: {duration(eta) if eta is not None else 'measuring...'}",
        ]
        return "\n".join(lines)


class ConsoleProgress:
    """Prints each chunk's line as it completes; on a terminal a live overall bar, rate, ETA,
    counts and breaker state redraw below them, and the status block ends the run."""

    def __init__(self, progress: Progress, stream: TextIO | None = None) -> None:
        self.progress = progress
        self.stream = stream or sys.stdout
        self.tty = _is_terminal(self.stream)
        self._console = Console(
            file=self.stream, force_terminal=self.tty, force_interactive=self.tty,
            highlight=False, markup=False, emoji=False, soft_wrap=True,
        )  # fmt: skip
        self._live: Live | None = None

    def header(self, title: str, batch_size: int, estimate: str) -> None:
        self._write(
            f"🚀 {title}\n\nTotal Items: {self.progress.total}\n"
            f"Batch Size: {batch_size} concurrent items\nEstimated Duration: {estimate}\n\n"
            + RULE
            + "\n\n"
        )
        self._start()

    def chunk_done(self, line: str) -> None:
        self._write(line + "\n")
        self._start()
        if self._live:
            self._live.refresh()

    def breaker(self, decision: str, pause_s: float = 0.0) -> None:
        """The circuit breaker's decision after a chunk: continue, pause (for pause_s) or abort."""
        self.progress.breaker = decision
        self.progress.paused_until = time.monotonic() + pause_s
        if self._live:
            self._live.refresh()

    def finish(self) -> None:
        self._stop()
        self._write("\n" + RULE + "\n\n" + self.progress.status_block() + "\n\n")

    def _start(self) -> None:
        if self.tty and self._live is None:
            self._live = Live(
                _LiveStatus(self.progress), console=self._console, refresh_per_second=4, transient=True,
                redirect_stdout=False, redirect_stderr=False,
            )  # fmt: skip
            self._live.start()
            atexit.register(self._stop)  # a run that raises past finish() still gets its cursor

    def _stop(self) -> None:
        if self._live:
            self._live.stop()  # transient: the live lines go; the final block replaces them
            self._live = None
            atexit.unregister(self._stop)

    def _write(self, text: str) -> None:
        if self.tty:  # through rich, so the lines land above the live area
            self._console.print(Text(text), end="")
        else:
            self.stream.write(text)
            self.stream.flush()


class _LiveStatus:
    """The redrawn part: the overall bar with rate and ETA, the counts, the breaker."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich__(self) -> RenderableType:
        p = self.progress
        rate, eta = p.rate(), p.eta_seconds()
        overall = Table.grid(padding=(0, 1))
        overall.add_row(
            "Overall", ProgressBar(total=max(p.total, 1), completed=p.done, width=30),
            f"{p.done}/{p.total}", f"{round(100 * p.fraction()):>3}%",
            f"{rate:.1f} items/s" if rate else "- items/s",
            f"ETA {duration(eta)}" if eta is not None else "ETA measuring...",
        )  # fmt: skip
        done = f"✅ {p.succeeded} succeeded  ❌ {p.failed} failed (DLQ)  🔄 {p.retrying} retrying"
        rest = (
            f"✋ {p.held} held  ⏭️  {p.skipped} skipped  ⏳ {p.in_progress} in progress  "
            f"⏸️  {p.queued} queued"
        )
        breaker = f"Circuit breaker: {p.breaker_state()}"
        return Group(Text(""), overall, Text(done), Text(rest), Text(breaker))


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that can redraw: a tty, and not TERM=dumb (rich's own check, env aside)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not Console(file=stream, force_terminal=True).is_dumb_terminal
