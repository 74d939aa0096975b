"""One writer per destination: a hold kept in the ledger, under a lease the holder renews.

Every run that writes to a destination (full, sample, sync, dlq retry, rollback, the pipeline's
phases) plans and writes only while it holds the destination. The hold is a ledger row, decided
in one exclusive transaction (see `Ledger.acquire_hold`), not a lease in one Prefect server's
memory: a holder that died stops blocking the destination when its lease lapses, whatever Prefect
server the next run talks to, and at once when it was a process on this host.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from batchgate.errors import BatchgateError
from batchgate.ledger import Ledger

LEASE_S = 60.0
RENEW_S = LEASE_S / 4
POLL_S = 1.0


def holder_id() -> str:
    """This process, as `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_is_dead(holder: str) -> bool:
    """True only for a process on this host that no longer exists; elsewhere the lease decides."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class DestinationHold:
    """Take the destination for a run (waiting, and saying so, while another run has it), renew
    the lease in the background, and give it back on exit. `lost` turns true if a renewal finds
    the hold taken over (the run was stalled for longer than a lease): the run must stop."""

    def __init__(
        self,
        ledger: Ledger,
        destination_key: str,
        run_id: str,
        on_wait: Callable[[str], None] | None = None,
        lease_s: float = LEASE_S,
        timeout_s: float | None = None,
    ) -> None:
        self.ledger, self.key, self.run_id = ledger, destination_key, run_id
        self.on_wait = on_wait or (lambda message: None)
        self.lease_s, self.timeout_s = lease_s, timeout_s
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> DestinationHold:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        started, told = time.monotonic(), None
        while True:
            other = self.ledger.acquire_hold(
                self.key, self.run_id, holder_id(), self.lease_s, holder_is_dead
            )
            if other is None:
                break
            if told != other["run_id"]:
                left = max(0, int(other["expires_at"] - other["now"]))  # the ledger's clock
                self.on_wait(
                    f"waiting for the destination {self.key}: run {other['run_id']} holds it "
                    f"(process {other['holder']}; its lease runs {left} s more unless renewed)"
                )
                told = other["run_id"]
            if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                raise BatchgateError(
                    f"the destination {self.key} is still held by run {other['run_id']} after "
                    f"{self.timeout_s:g} s. Fix: wait for that run to finish, or stop it."
                )
            time.sleep(POLL_S)
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="batchgate-hold")
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                if not self.ledger.renew_hold(self.key, self.run_id, self.lease_s):
                    self.lost = True
                    return
            except BatchgateError:
                continue  # a missed renewal is tried again; the lease outlasts several periods

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        if not self.lost:
            self.ledger.release_hold(self.key, self.run_id)
