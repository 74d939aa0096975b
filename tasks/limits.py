"""The destination's Prefect global concurrency limit, held by a run from start to end.

Slots are taken with a lease the run keeps renewing. A run killed with SIGKILL cannot give its
slots back, so the ledger records each lease with its holder (host:pid): the next run on the same
host frees the slots of a holder that is no longer alive; elsewhere they return when the lease
lapses on the server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from batchgate.ledger import Ledger

LEASE_S = 60.0  # the server's minimum
_GONE = (PrefectHTTPStatusError, ObjectNotFound)  # a lease that already lapsed


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: only its lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DestinationSlots:
    """Acquire, renew and release a run's slots of the destination's concurrency limit."""

    def __init__(self, name: str, slots: int, ledger: Ledger, run_id: str, destination_key: str,
                 on_wait: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.name, self.slots, self.ledger = name, slots, ledger
        self.run_id, self.destination_key = run_id, destination_key
        self.on_wait = on_wait or (lambda message: None)
        self.lease_id: UUID | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> DestinationSlots:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        told = False
        while True:
            with get_client(sync_client=True) as client:
                try:
                    response = client.increment_concurrency_slots_with_lease(
                        [self.name], self.slots, "concurrency", LEASE_S
                    )
                except PrefectHTTPStatusError as exc:
                    if exc.response.status_code != 423:
                        raise
                    wait = float(exc.response.headers.get("Retry-After", 2))
                else:
                    self.lease_id = UUID(response.json()["lease_id"])
                    break
            if self._free_dead_holders():
                continue
            if not told:
                self.on_wait(f"waiting for the destination's concurrency slots ({self.name}): "
                             "another run holds them")  # fmt: skip
                told = True
            time.sleep(min(max(wait, 0.5), 10))
        self.ledger.set_lease(self.run_id, holder_id(), str(self.lease_id))
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="batchgate-lease")
        self._renewer.start()

    def _free_dead_holders(self) -> bool:
        freed = False
        for held in self.ledger.leases_held(self.destination_key):
            if held["run_id"] == self.run_id or not held["holder"] or _alive(held["holder"]):
                continue
            with get_client(sync_client=True) as client, contextlib.suppress(*_GONE):
                client.release_concurrency_slots_with_lease(UUID(held["lease_id"]))
            self.ledger.set_lease(held["run_id"], held["holder"], None)
            self.ledger.mark_interrupted(held["run_id"])
            self.on_wait(f"freed the slots of run {held['run_id']}, whose process is gone")
            freed = True
        return freed

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(self.lease_id, LEASE_S)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a missed renewal is retried next period
                continue

    def release(self) -> None:
        self._stop.set()
        if self.lease_id is None:
            return
        with get_client(sync_client=True) as client, contextlib.suppress(*_GONE):
            client.release_concurrency_slots_with_lease(self.lease_id)
        self.ledger.set_lease(self.run_id, holder_id(), None)
        self.lease_id = None
