"""The pipeline: dry-run, sample, a person's approval, then full. Each phase is its own subflow."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput, create_flow_run_input, read_flow_run_input
from prefect.states import Completed, Failed, State
from prefect.transactions import Transaction, transaction
from pydantic import Field, ValidationError, WithJsonSchema

from batchgate.config import Job
from batchgate.errors import BatchgateError, ConfigError
from batchgate.ledger import Ledger, new_run_id
from blocks.ledger import open_ledger
from flows.dry_run import dry_run
from flows.full import full
from flows.rollback import rollback
from flows.sample import sample
from tasks.events import emit_awaiting_review

DAY_S = 24 * 3600
# In the Run form an optional parameter is a plain input that may stay empty, not a switch
# between its type and "None"; empty ([] or "") means unset, and the flow still takes None (the
# CLI passes it). A default of None would make the form send null, which the schema refuses.
ItemIds = Annotated[
    list[str] | None, WithJsonSchema({"type": "array", "items": {"type": "string"}})
]
OptionalText = Annotated[str | None, WithJsonSchema({"type": "string"})]
REVIEW_POINT = "batchgate-review-point"  # a flow run input: what the attempt before the review did
DEADLINE_GRACE_S = 600  # Prefect's own expiry of a suspended review, should the deadline not fire


class SampleReview(RunInput):
    """The reviewer's decision on the sample drafts."""

    approve: bool = Field(
        description="On: approve the sample and run the full batch. Off: reject it, which rolls "
        "the sample back. Required: set it explicitly."
    )
    notes: str = Field(default="", description="Why, for the record (kept in the ledger).")


@flow(name="pipeline", log_prints=False)
def pipeline(
    job: Job,
    sample_count: int = 3,
    sample_ids: ItemIds = [],  # noqa: B006 - never mutated
    allow_blocked: bool = False,
    approval_timeout_s: int = DAY_S,
    approval_poll_s: int = 5,
    job_ref: str = "JOB.yaml",
    run_id: OptionalText = "",
    console_progress: bool = False,
) -> dict[str, Any] | State:
    """Dry-run, then a sample written as drafts, then wait for approval, then the full run.

    Stops before the sample when items are blocked (unless `allow_blocked`). Reject rolls the
    sample back and ends as `rejected`; no answer within `approval_timeout_s` ends as
    `timed-out` and leaves the drafts for review.
    """
    logger = get_run_logger()
    flow_run_id = str(runtime.flow_run.id or "") or None
    # From a deployment the review suspends the run: its process exits, and an answer starts the
    # flow again from the top on a worker. What the first attempt did is kept on the flow run.
    suspends = _from_deployment()
    resumed = _review_point() if suspends else None
    if resumed:
        run_id, plan_id = resumed["run_id"], resumed["plan_id"]
        try:
            ledger = open_ledger(job.ledger)
        except BatchgateError as exc:
            logger.error(str(exc))
            return Failed(message=str(exc))
        steps = _Steps(ledger, run_id, logger)
        drafts = {"run_id": resumed["sample_run_id"], "total": resumed["sample_total"],
                  "markdown": ""}  # fmt: skip
        logger.info("Resumed after the review of sample %s: the dry-run and the sample are not "
                    "run again; the full run writes plan %s", drafts["run_id"], plan_id)  # fmt: skip
    else:
        run_id = run_id or new_run_id("pipeline")
        try:
            ledger = open_ledger(job.ledger)
            ledger.start_run(
                run_id, job_name=job.name, job_fingerprint=job.fingerprint(), mode="pipeline",
                source=str(getattr(job.source, "path", None) or job.source.type),
                flow_run_id=flow_run_id, job_json=job.model_dump_json(),
            )  # fmt: skip
        except BatchgateError as exc:
            logger.error(str(exc))
            return Failed(message=str(exc))
        steps = _Steps(ledger, run_id, logger)

        dry = dry_run(job, job_ref=job_ref, parent_run_id=run_id, return_state=True)
        if not dry.is_completed():
            return steps.end("failed", f"dry-run failed: {dry.message}")
        checked = dry.result()
        if checked["blocked"] and not allow_blocked:
            return steps.end(
                "blocked",
                f"{checked['blocked']} item(s) are blocked; the sample was not started. Fix them "
                f"(see the dry-run report of {checked['run_id']}), or set allow_blocked to go on "
                "without them.",
            )

        # The dry-run froze the plan: the sample shows items from it, and after an approval the
        # full run writes exactly it, never a newer read of the source.
        plan_id = checked["run_id"]
        tried = sample(job, sample_count=sample_count, sample_ids=sample_ids or None, job_ref=job_ref,
                       parent_run_id=run_id, review_flow_run_id=flow_run_id, plan_id=plan_id,
                       return_state=True)  # fmt: skip
        if not tried.is_completed():
            return steps.end("failed", f"sample failed: {tried.message}")
        drafts = tried.result()
    decided = ""  # the reviewer's decision, for the pipeline's final message
    if drafts["total"]:
        if not resumed:
            ledger.finish_run(run_id, "awaiting-approval", message=drafts["run_id"])
            logger.info("Sample %s written; waiting for approval", drafts["run_id"])
            emit_awaiting_review(job, run_id, drafts)
        timed_out = (
            f"no approval within {approval_timeout_s} s; the sample drafts of {drafts['run_id']} "
            f"are left for review (roll them back with `batchgate rollback {drafts['run_id']}`)"
        )
        key = f"review-{drafts['run_id'].lower()}"
        form = SampleReview.with_initial_data(description=drafts["markdown"])
        if suspends:
            if not resumed:
                _keep_review_point(run_id, plan_id, drafts)
                _review_deadline(approval_timeout_s)
            try:
                # the first attempt ends here (Pause); the resumed one gets the answer at once
                review = suspend_flow_run(wait_for_input=form, key=key,
                                          timeout=approval_timeout_s + DEADLINE_GRACE_S)  # fmt: skip
            except ValidationError:  # resumed with no answer: the review deadline passed
                return steps.end("timed-out", timed_out)
            finally:
                if resumed:
                    _drop_review_deadline()
        else:
            try:
                review = pause_flow_run(wait_for_input=form, timeout=approval_timeout_s,
                                        poll_interval=approval_poll_s, key=key)  # fmt: skip
            except FlowPauseTimeout:  # the drafts stay for review
                return steps.end("timed-out", timed_out)
        decision = f"{'approved' if review.approve else 'rejected'}" + (
            f": {review.notes}" if review.notes else ""
        )
        logger.info("Sample %s", decision)
        # The drafts are kept only if approved: a rejection rolls the transaction back, and
        # keep_sample's on_rollback hook runs the rollback flow on the sample run.
        with transaction() as txn:
            txn.set("job", job)
            txn.set("sample_run_id", drafts["run_id"])
            keep_sample(drafts["run_id"])
            if not review.approve:
                txn.rollback()
        if not review.approve:
            undone = ledger.run(drafts["run_id"]) or {}
            if undone.get("status") != "rolled-back":
                return steps.end("failed", f"sample {decision}, but its rollback did not finish: "
                                 f"see the rollback flow run, then `batchgate rollback "
                                 f"{drafts['run_id']}`")  # fmt: skip
            return steps.end("rejected", f"sample {decision}; rolled back", state_name="Rejected")
        ledger.finish_run(run_id, "running", message=f"sample {decision}")
        decided = f"sample {decision}; "

    done = full(job, job_ref=job_ref, parent_run_id=run_id, console_progress=console_progress,
                plan_id=plan_id, return_state=True)  # fmt: skip
    child = ledger.runs_of(run_id, mode="full")
    outcome = child[0]["outcome"] if child and child[0].get("outcome") else "failed"
    message = f"{decided}full run {child[0]['run_id'] if child else '?'}: {outcome}"
    if not done.is_completed() and outcome not in ("failed", "aborted"):
        outcome, message = "failed", f"full run failed: {done.message}"
    return steps.end(outcome, message)


@task(name="keep-sample", cache_policy=NO_CACHE)
def keep_sample(sample_run_id: str) -> str:
    """Marks the sample's drafts as part of the review transaction (see the rollback hook)."""
    return sample_run_id


@keep_sample.on_rollback
def _roll_back_sample(txn: Transaction) -> None:
    """The reviewer rejected the sample: undo its run with the rollback flow (a subflow)."""
    job: Job = txn.get("job")
    sample_run_id = txn.get("sample_run_id")
    # Its outcome lands in the ledger (the sample run becomes rolled-back), where the pipeline
    # reads it: values set in a transaction are copies, so the hook cannot hand a result back.
    rollback(sample_run_id, ledger=job.ledger, job=job, return_state=True)


class _Steps:
    def __init__(self, ledger: Ledger, run_id: str, logger: Any) -> None:
        self.ledger, self.run_id, self.logger = ledger, run_id, logger

    def end(self, outcome: str, message: str, state_name: str | None = None) -> State:
        self.ledger.finish_run(self.run_id, outcome, message=message, outcome=outcome)
        summary = {"run_id": self.run_id, "outcome": outcome, "message": message}
        if outcome in ("complete", "partial-success", "rejected"):
            self.logger.info("Pipeline %s: %s (%s)", self.run_id, outcome, message)
            return Completed(message=message, name=state_name or "Completed", data=summary)
        self.logger.error("Pipeline %s: %s (%s)", self.run_id, outcome, message)
        return Failed(message=message, name=state_name or "Failed", data=summary)


# --- suspending for the review (runs from a deployment) -------------------------------------------


def _from_deployment() -> bool:
    """A run of a deployment, not a subflow: one that Prefect can suspend and resume on a worker."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return bool(run and run.deployment_id and not run.parent_task_run_id)


def _review_point() -> dict[str, Any] | None:
    """What the attempt before the review recorded on this flow run, if it got that far."""
    return read_flow_run_input(REVIEW_POINT) or None


def _keep_review_point(run_id: str, plan_id: str, drafts: dict[str, Any]) -> None:
    create_flow_run_input(REVIEW_POINT, {
        "run_id": run_id, "plan_id": plan_id, "sample_run_id": drafts["run_id"],
        "sample_total": drafts["total"],
    })  # fmt: skip


def _deadline_name() -> str:
    return f"batchgate-review-deadline-{runtime.flow_run.id}"


def _review_deadline(timeout_s: int) -> None:
    """An automation that resumes the suspended run, with no answer, once the review's time is up:
    the flow then ends as `timed-out` in its own code (the ledger, the message, the commands),
    which Prefect's own expiry of a suspended run (a bare Failed) would not do."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    _sweep_review_deadlines()
    resource = f"prefect.flow-run.{runtime.flow_run.id}"
    left = {f"prefect.flow-run.{name}" for name in ("Resuming", "Running", "Completed", "Failed",
                                                     "Cancelling", "Cancelled", "Crashed")}  # fmt: skip
    try:
        Automation(
            name=_deadline_name(),
            description="Ends the review of a suspended batchgate pipeline as timed-out.",
            trigger=EventTrigger(
                match={"prefect.resource.id": resource}, after={"prefect.flow-run.Suspended"},
                expect=left, posture=Posture.Proactive, threshold=1,
                within=timedelta(seconds=max(timeout_s, 10)),
            ),
            actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="Resuming",
                                        message="the review's time is up")],
        ).create()  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - Prefect's own expiry still ends the run
        get_run_logger().warning("No review deadline automation (%s): Prefect fails the run "
                                 "%s s after its review time instead", exc, DEADLINE_GRACE_S)  # fmt: skip


def _sweep_review_deadlines() -> None:
    """Delete the deadlines of reviews that ended without their run resuming (a suspended run
    cancelled or deleted): only a resumed run drops its own, so these would stay listed."""
    from prefect.client.orchestration import get_client

    prefix = "batchgate-review-deadline-"
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if not automation.name.startswith(prefix):
                continue
            try:
                state = client.read_flow_run(UUID(automation.name[len(prefix):])).state
            except Exception:  # noqa: BLE001 - the run is gone
                state = None
            if state is None or state.is_final():
                client.delete_automation(automation.id)


def _drop_review_deadline() -> None:
    from prefect.automations import Automation

    with contextlib.suppress(Exception):  # already gone, or never made
        Automation.read(name=_deadline_name()).delete()


# --- approving from outside the run: the CLI and tests ---------------------------------------------


def review_state(flow_run_id: str) -> str | None:
    """The flow run's state type (e.g. PAUSED, RUNNING, COMPLETED), or None if it has none.

    A run waiting for its review is PAUSED either way: paused in its process (state name
    "Paused"), or suspended with no process (a Prefect "Suspended" state is of type PAUSED)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(_uuid(flow_run_id))
    return run.state.type.value if run.state else None


def send_review(flow_run_id: str, approve: bool, notes: str = "") -> None:
    """Resume a pipeline paused or suspended for review with the reviewer's decision, through
    the Prefect API (a suspended run then starts again on a worker)."""
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    run_input = {"approve": approve, "notes": notes}
    run_uuid = _uuid(flow_run_id)
    try:
        for wait in (0.2, 0.5, 1, 2, 4, 0):
            try:
                resume_flow_run(run_uuid, run_input=run_input)
                return
            except RuntimeError as exc:
                # Paused a moment before the form's schema is saved: ask again shortly.
                if "schema not found" not in str(exc) or not wait:
                    raise
                time.sleep(wait)
    except ObjectNotFound:
        raise ConfigError(
            f"flow run {flow_run_id} does not exist on the Prefect API. Fix: copy the id from the "
            "sample report or the Prefect UI, and check PREFECT_API_URL."
        ) from None
    except Exception as exc:  # NotPausedError, FlowPauseTimeout, a validation refusal
        raise ConfigError(
            f"flow run {flow_run_id} cannot be resumed: {str(exc).rstrip('.!')}. Fix: only a pipeline run in the "
            "Paused state (waiting for its sample review) can be approved or rejected."
        ) from None


def wait_for_pause(flow_run_id: str, timeout_s: float = 600) -> None:
    """Block until the run waits for its review, Paused or Suspended (tests and scripts)."""
    deadline = time.monotonic() + timeout_s
    while review_state(flow_run_id) != "PAUSED":
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"flow run {flow_run_id} did not pause or suspend within {timeout_s} s"
            )
        time.sleep(0.5)


def _uuid(value: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ConfigError(
            f"{value!r} is not a flow run id. Fix: use the UUID the sample report prints after "
            "`batchgate approve` (it is also in the run's URL in the Prefect UI)."
        ) from None
