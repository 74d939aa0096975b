"""The destination's hold and its Prefect global concurrency limit, for the length of a run.

The hold (batchgate/hold.py, in the ledger) makes a run the destination's one writer. The run
also takes the slots of the destination's Prefect global concurrency limit, under a lease it
renews, so the Prefect UI shows who writes where and how much is in flight. Slots a killed run
left counted (its lease died with a temporary Prefect server, which keeps leases in memory) can
only belong to a run that no longer holds the destination: the holder resets them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from batchgate.hold import DestinationHold
from batchgate.ledger import Ledger

LEASE_S = 60.0  # the server's minimum
_GONE = (PrefectHTTPStatusError, ObjectNotFound)  # a lease that already lapsed


class DestinationSlots:
    """Acquire, renew and release a run's slots of the destination's concurrency limit.

    Only the destination's holder takes them, so a full limit means leaked slots: reset them.
    """

    def __init__(self, name: str, slots: int, on_wait: Callable[[str], None] | None = None) -> None:
        self.name, self.slots = name, slots
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
        with get_client(sync_client=True) as client:
            for _ in range(2):
                try:
                    response = client.increment_concurrency_slots_with_lease(
                        [self.name], self.slots, "concurrency", LEASE_S
                    )
                except PrefectHTTPStatusError as exc:
                    if exc.response.status_code != 423:
                        raise
                    client.update_global_concurrency_limit(
                        self.name, GlobalConcurrencyLimitUpdate(active_slots=0)
                    )
                    self.on_wait(f"reset the slots of {self.name} that a stopped run left taken")
                    continue
                self.lease_id = UUID(response.json()["lease_id"])
                break
        if self.lease_id is not None:
            self._renewer = threading.Thread(target=self._renew, daemon=True, name="batchgate-lease")
            self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(self.lease_id, LEASE_S)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a missed renewal is retried next period
                continue

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        if self.lease_id is None:
            return
        with get_client(sync_client=True) as client, contextlib.suppress(*_GONE):
            client.release_concurrency_slots_with_lease(self.lease_id)
        self.lease_id = None


@contextlib.contextmanager
def holding(
    ledger: Ledger,
    destination_key: str,
    run_id: str,
    on_wait: Callable[[str], None],
    limit: Callable[[], tuple[str, int]] | None = None,
) -> Iterator[DestinationHold]:
    """Hold the destination (and, given `limit`, the slots of the Prefect limit it names, looked
    up or created once the hold is ours) for the block's length."""
    with DestinationHold(ledger, destination_key, run_id, on_wait=on_wait) as hold:
        if limit is None:
            yield hold
            return
        with DestinationSlots(*limit(), on_wait=on_wait):
            yield hold
