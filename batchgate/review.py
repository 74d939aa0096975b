"""The terminal side of the approval gate: wait for the pause, show the sample, ask, resume.

The pipeline runs in the main thread; this reviewer runs beside it. It answers through the same
Prefect API the UI uses, so whichever answer comes first (terminal, UI, `batchgate approve`) wins.
The Prefect calls are passed in, so this module stays plain Python.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from batchgate.escaping import terminal
from batchgate.ledger import Ledger

POLL_S = 0.5


class Reviewer(threading.Thread):
    """Watches one pipeline run; when its sample waits for review, asks (or approves with --yes)."""

    def __init__(
        self,
        ledger: Ledger,
        run_id: str,
        state_of: Callable[[str], str | None],
        send: Callable[[str, bool, str], None],
        *,
        yes: bool = False,
        ask: bool = True,
        out: TextIO = sys.stdout,
        read_line: Callable[[], str] = sys.stdin.readline,
    ) -> None:
        super().__init__(name="batchgate-reviewer", daemon=True)
        self.ledger, self.run_id = ledger, run_id
        self.state_of, self.send = state_of, send
        self.yes, self.ask, self.out, self.read_line = yes, ask, out, read_line
        self.answer: str | None = None  # approved | rejected | elsewhere
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()

    def run(self) -> None:
        try:
            self._review()
        except Exception as exc:  # noqa: BLE001 - the run goes on; the person can still use the UI
            self._say(f"\n⚠️  Could not ask for approval here ({exc}). Approve in the Prefect UI "
                      "or with `batchgate approve FLOW_RUN_ID`.")  # fmt: skip

    def _review(self) -> None:
        run = self._wait(self._awaiting)
        if run is None:
            return
        flow_run_id = run["flow_run_id"]
        paused = self._wait(lambda: self._paused_or_gone(flow_run_id))
        if paused != "paused":
            if paused == "gone":
                self._say(
                    "\nThe sample was reviewed elsewhere (Prefect UI or `batchgate approve`)."
                )
                self.answer = "elsewhere"
            return
        for dry in self.ledger.runs_of(self.run_id, mode="dry-run")[:1]:
            self._say(f"🔍 Dry-run {dry['run_id']}: {dry['total']} items, {dry['ready']} ready, "
                      f"{dry['warnings']} with warnings, {dry['blocked']} blocked")  # fmt: skip
        sample = self.ledger.run(run["message"]) or {}
        report = sample.get("report") or f"Sample {run['message']} is ready for review."
        self._say("\n" + terminal(report))  # item text in it: no escape sequence reaches the tty
        self._say(f"\n⏸️  The pipeline is paused for review: flow run {flow_run_id}")
        if self.yes:
            self._say("--yes given: approving the sample.")
            self.send(flow_run_id, True, "approved with --yes")
            self.answer = "approved"
            return
        if not self.ask:
            self._say(f"No terminal to ask in. Approve or reject in the Prefect UI, or run:\n"
                      f"  batchgate approve {flow_run_id}\n  batchgate reject {flow_run_id}")  # fmt: skip
            return
        self._say("Approve the sample? [y/N] ", end="")
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(self.read_line()), daemon=True)
        reader.start()
        while not reply:
            reader.join(POLL_S)
            if self._done.is_set():
                return
            if not reply and self.state_of(flow_run_id) != "PAUSED":
                self._say("\nThe run was resumed elsewhere (Prefect UI or `batchgate approve`).")
                self.answer = "elsewhere"
                return
        approve = reply[0].strip().lower() in ("y", "yes")
        if self.state_of(flow_run_id) != "PAUSED":
            self._say("The run was resumed elsewhere meanwhile; your answer was not sent.")
            self.answer = "elsewhere"
            return
        self.send(flow_run_id, approve, "answered in the terminal")
        self.answer = "approved" if approve else "rejected"
        self._say("Approved: the full run starts." if approve else
                  "Rejected: the sample will be rolled back.")  # fmt: skip

    def _paused_or_gone(self, flow_run_id: str) -> str | None:
        if self.state_of(flow_run_id) == "PAUSED":
            return "paused"
        if self._awaiting() is None:  # answered before we saw the pause
            return "gone"
        return None

    def _awaiting(self) -> dict[str, Any] | None:
        run = self.ledger.run(self.run_id)
        if run and run["status"] == "awaiting-approval" and run.get("flow_run_id"):
            return run
        return None

    def _wait(self, probe: Callable[[], Any]) -> Any:
        while not self._done.is_set():
            found = probe()
            if found:
                return found
            self._done.wait(POLL_S)
        return None

    def _say(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)
