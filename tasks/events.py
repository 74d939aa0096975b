"""Prefect events for what an operator must hear of: a sample awaiting review, a circuit breaker
that paused or aborted a run, a run's outcome with its counts, dead letters added.

The primary resource is the job (`batchgate.job.<name>`); related resources name the batchgate
run, the Prefect flow run and the destination by the key its hold uses (a URL's password is
hidden in it). Every text is redacted of the job's secrets before it leaves. Automations
(deployments/automations.py) turn these events into notifications. Emitting never fails a run:
an event that cannot be sent is logged and dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from prefect import runtime
from prefect.events import emit_event

from batchgate.config import Job
from batchgate.dlq import redact
from batchgate.secrets import mask_credentials, secret_values

AWAITING_REVIEW = "batchgate.sample.awaiting-review"
BREAKER = {"pause": "batchgate.breaker.paused", "abort": "batchgate.breaker.aborted"}
OUTCOMES = {
    "complete": "batchgate.run.completed",
    "partial-success": "batchgate.run.partial",
    "failed": "batchgate.run.failed",
    "aborted": "batchgate.run.aborted",
}
DLQ_ADDED = "batchgate.dlq.added"
MAX_IDS = 20  # item ids listed in a dead-letter event; the count is always whole

logger = logging.getLogger("batchgate.events")


def emit_awaiting_review(job: Job, run_id: str, sample: dict[str, Any]) -> None:
    """The sample of pipeline `run_id` is written as drafts and waits for a person's decision."""
    flow_run_id = _flow_run_id()
    items = sample.get("items") or []
    _emit(job, AWAITING_REVIEW, run_id, sample.get("destination"), {
        "what": "awaiting review",
        "sample_run_id": sample.get("run_id"),
        "review_url": runtime.flow_run.ui_url,  # the run page: the report and the Resume form
        "drafts": [{"title": i.get("title"), "link": i.get("link")} for i in items],
        "succeeded": sample.get("succeeded"),
        "total": sample.get("total"),
        "approve": f"batchgate approve {flow_run_id}" if flow_run_id else None,
        "reject": f"batchgate reject {flow_run_id}" if flow_run_id else None,
    })  # fmt: skip


def emit_breaker(
    job: Job, run_id: str, destination_key: str, decision: str, message: str | None, **counts: Any
) -> None:
    """The circuit breaker paused (`pause`) or aborted (`abort`) run `run_id`."""
    if decision not in BREAKER:
        return
    what = "circuit breaker paused the run" if decision == "pause" else "circuit breaker aborted the run"  # fmt: skip
    _emit(job, BREAKER[decision], run_id, destination_key,
          {"what": what, "message": message, **counts})  # fmt: skip


def emit_outcome(
    job: Job,
    run_id: str,
    destination_key: str | None,
    status: str,
    report: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Run `run_id` ended `status` (complete, partial-success, failed, aborted) with its counts."""
    report = report or {}
    counts = {k: report.get(k, 0) for k in ("total", "succeeded", "failed", "skipped", "pending",
                                            "unchanged")}  # fmt: skip
    _emit(job, OUTCOMES.get(status, OUTCOMES["failed"]), run_id, destination_key, {
        "what": f"run ended {status}", "status": status, **counts,
        "success_rate": report.get("success_rate"), "dead_letters": len(report.get("dlq") or []),
        "message": message or report.get("reason"),
    })  # fmt: skip


def emit_dlq_added(job: Job, run_id: str, destination_key: str | None, failed: list[Any]) -> None:
    """Items of run `run_id` went to the dead-letter queue (nothing is emitted for none)."""
    if not failed:
        return
    ids = [o.item_id for o in failed]
    _emit(job, DLQ_ADDED, run_id, destination_key, {
        "what": f"{len(ids)} dead letter(s) added", "count": len(ids), "item_ids": ids[:MAX_IDS],
        "error_types": dict(Counter(o.error_type or "unknown" for o in failed)),
    })  # fmt: skip


# --- the event ---------------------------------------------------------------------------------


def _emit(
    job: Job, event: str, run_id: str, destination_key: str | None, payload: dict[str, Any]
) -> None:
    try:
        flow_run_id = _flow_run_id()
        secrets = secret_values(job)
        resource, related = _resources(job, run_id, destination_key, flow_run_id)
        body = {"job": job.name, "run_id": run_id, "flow_run_id": flow_run_id,
                "destination": destination_key, **payload}  # fmt: skip
        emit_event(event=event, resource=_clean(resource, secrets),
                   related=_clean(related, secrets), payload=_clean(body, secrets))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - an event is news, never a reason to fail a run
        logger.warning("could not emit %s for run %s: %s", event, run_id, type(exc).__name__)


def _resources(
    job: Job, run_id: str, destination_key: str | None, flow_run_id: str | None
) -> tuple[dict[str, str], list[dict[str, str]]]:
    resource = {"prefect.resource.id": f"batchgate.job.{job.name}",
                "prefect.resource.name": job.name, "batchgate.job": job.name,
                "batchgate.run-id": run_id}  # fmt: skip
    related = [{"prefect.resource.id": f"batchgate.run.{run_id}",
                "prefect.resource.role": "batchgate-run", "prefect.resource.name": run_id}]  # fmt: skip
    if flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                        "prefect.resource.role": "flow-run"})  # fmt: skip
    if destination_key:
        related.append({"prefect.resource.id": f"batchgate.destination.{destination_key}",
                        "prefect.resource.role": "destination",
                        "batchgate.destination.kind": destination_key.split(":", 1)[0]})  # fmt: skip
    return resource, related


def _flow_run_id() -> str | None:
    return str(runtime.flow_run.id or "") or None


def _clean(value: Any, secrets: list[str]) -> Any:
    """The value with every secret of the job, and any URL password, masked."""
    if isinstance(value, str):
        return redact(mask_credentials(value), secrets)
    if isinstance(value, dict):
        return {k: _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, secrets) for v in value]
    return value
