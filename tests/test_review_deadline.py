"""A suspended review's deadline automation never outlives its run (a cancelled one included)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

pytestmark = pytest.mark.prefect


def test_deadlines_of_runs_that_ended_without_resuming_are_swept(prefect_api: str) -> None:
    from prefect import flow
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.states import Cancelled, Scheduled

    from flows.pipeline import _sweep_review_deadlines

    @flow
    def ended() -> None:
        return None

    finished = ended(return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run(ended, state=Scheduled()).id
        cancelled = client.create_flow_run(ended, state=Scheduled()).id
        client.set_flow_run_state(cancelled, Cancelled(), force=True)

    def deadline(run_id: object) -> str:
        name = f"batchgate-review-deadline-{run_id}"
        Automation(
            name=name,
            trigger=EventTrigger(match={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
                                 after={"prefect.flow-run.Suspended"},
                                 expect={"prefect.flow-run.Running"}, posture=Posture.Proactive,
                                 threshold=1, within=timedelta(hours=1)),
            actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="Resuming")],
        ).create()  # fmt: skip
        return name

    names = {run: deadline(run) for run in (finished, waiting, cancelled, uuid4())}
    _sweep_review_deadlines()
    with get_client(sync_client=True) as client:
        left = {a.name for a in client.read_automations()}
    assert names[waiting] in left  # its review may still be answered
    assert not {names[r] for r in names if r != waiting} & left  # ended, cancelled or gone
