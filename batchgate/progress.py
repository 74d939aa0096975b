"""Progress of a full run: counts, per-chunk bars, an ETA from the measured rate."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

BAR_WIDTH = 20


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
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def queued(self) -> int:
        return max(self.total - self.done - self.in_progress, 0)

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.done == 0 or elapsed <= 0:
            return None
        return (self.total - self.done) / (self.done / elapsed)

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
            f"❌ Failed: {self.failed}",
            f"⏸️  Queued: {self.queued}",
            "",
            f"Estimated Time Remaining: {duration(eta) if eta is not None else 'measuring...'}",
        ]
        return "\n".join(lines)


class ConsoleProgress:
    """Prints each chunk's bar as it completes, and the status block (redrawn on a terminal)."""

    def __init__(self, progress: Progress, stream: TextIO | None = None) -> None:
        self.progress = progress
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._status_lines = 0

    def header(self, title: str, batch_size: int, estimate: str) -> None:
        self._write(
            f"🚀 {title}\n\nTotal Items: {self.progress.total}\n"
            f"Batch Size: {batch_size} concurrent items\nEstimated Duration: {estimate}\n\n"
            + "━" * 46
            + "\n\n"
        )

    def chunk_done(self, line: str) -> None:
        self._clear_status()
        self._write(line + "\n")
        if self.tty:
            block = "\n" + self.progress.status_block() + "\n"
            self._status_lines = block.count("\n")
            self._write(block)

    def finish(self) -> None:
        self._clear_status()
        self._write("\n" + "━" * 46 + "\n\n" + self.progress.status_block() + "\n\n")

    def _clear_status(self) -> None:
        if self.tty and self._status_lines:
            self._write(f"\x1b[{self._status_lines}F\x1b[J")
            self._status_lines = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
