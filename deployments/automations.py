"""The automations that tell people what needs them, through one Prefect notification block.

Three automations, kept by name (creating them again updates them, never duplicates them):
a sample awaiting review, a circuit breaker that paused or aborted a run, and a run that ended
failed, aborted or partial. Each reacts to the events of tasks/events.py and sends a
notification whose body names the flow run, the job and the event.

The block is by default a webhook block (`custom-webhook/batchgate-notify`) posting
`{"subject", "body", "text"}` as JSON to the URL in NOTIFY_URL; the URL is kept among the
block's secrets, since a webhook URL often holds a token. Any other notification block (Slack,
email, Microsoft Teams...) saved in Prefect can be used instead: `--block TYPE-SLUG/NAME`.

    NOTIFY_URL=https://hooks.example.com/... python -m deployments.automations
    python -m deployments.automations --block slack-webhook/team-alerts
    python -m deployments.automations --remove
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from uuid import UUID

from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client

from tasks.events import AWAITING_REVIEW, BREAKER, OUTCOMES

BLOCK_NAME = "batchgate-notify"
WEBHOOK_SLUG = "custom-webhook"

_HEAD = (
    "Job: {{ event.payload.job }}\n"
    "Flow run: {{ event.payload.flow_run_id }}\n"
    "batchgate run: {{ event.payload.run_id }}\n"
    "Destination: {{ event.payload.destination }}\n"
)


@dataclass(frozen=True)
class Notice:
    """One automation: the events it reacts to and the notification it sends."""

    name: str
    description: str
    events: frozenset[str]
    subject: str
    body: str


NOTICES = (
    Notice(
        name="batchgate: sample awaiting review",
        description="A pipeline wrote its sample as drafts and waits for a person's decision.",
        events=frozenset({AWAITING_REVIEW}),
        subject="batchgate: {{ event.payload.job }} awaiting review",
        body="batchgate: sample awaiting review\n" + _HEAD
        + "Sample run: {{ event.payload.sample_run_id }} ({{ event.payload.succeeded }} of "
        "{{ event.payload.total }} drafts written)\n"
        "Review: {{ event.payload.review_url }}\n"
        "Approve: {{ event.payload.approve }}\nReject: {{ event.payload.reject }}\n",
    ),
    Notice(
        name="batchgate: circuit breaker tripped",
        description="Too many items of one batch failed: the run paused, or it was aborted.",
        events=frozenset(BREAKER.values()),
        subject="batchgate: {{ event.payload.job }}: {{ event.payload.what }}",
        body="batchgate: {{ event.payload.what }}\n" + _HEAD
        + "Batch {{ event.payload.chunk }}: {{ event.payload.failed }} of "
        "{{ event.payload.size }} items failed\n{{ event.payload.message }}\n",
    ),
    Notice(
        name="batchgate: run failed or partial",
        description="A run ended failed, aborted or partial-success: see its dead-letter queue.",
        events=frozenset(OUTCOMES[s] for s in ("failed", "aborted", "partial-success")),
        subject="batchgate: {{ event.payload.job }}: {{ event.payload.what }}",
        body="batchgate: {{ event.payload.what }}\n" + _HEAD
        + "Items: {{ event.payload.total }}, succeeded {{ event.payload.succeeded }}, failed "
        "{{ event.payload.failed }}, pending {{ event.payload.pending }} (success rate "
        "{{ event.payload.success_rate }}%); dead letters: {{ event.payload.dead_letters }}\n"
        "{{ event.payload.message or '' }}\n"
        "Dead letters: batchgate dlq list --run {{ event.payload.run_id }}\n",
    ),
)  # fmt: skip


def save_webhook_block(url: str, name: str = BLOCK_NAME) -> UUID:
    """The default block: a POST of the notification as JSON to `url` (kept as a secret)."""
    block = CustomWebhookNotificationBlock(
        name="batchgate",
        url="{{webhook_url}}",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
        secrets={"webhook_url": url},
    )
    return block.save(name, overwrite=True)


def block_document_id(ref: str) -> UUID:
    """The id of a saved block named `TYPE-SLUG/NAME`, e.g. `slack-webhook/team-alerts`."""
    slug, _, name = ref.partition("/")
    if not slug or not name:
        raise ValueError(f"--block {ref!r}: write it as TYPE-SLUG/NAME, e.g. slack-webhook/alerts")
    with get_client(sync_client=True) as client:
        return client.read_block_document_by_name(name, slug, include_secrets=False).id


def automation_for(notice: Notice, block_id: UUID) -> Automation:
    return Automation(
        name=notice.name,
        description=notice.description,
        trigger=EventTrigger(
            expect=set(notice.events),
            match={"prefect.resource.id": "batchgate.job.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(block_document_id=block_id, subject=notice.subject, body=notice.body)
        ],  # fmt: skip
    )


def ensure_automations(block_id: UUID) -> dict[str, str]:
    """Create or update each automation by name (a duplicate of the name is removed)."""
    done: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for notice in NOTICES:
            wanted = automation_for(notice, block_id)
            found = client.read_automations_by_name(notice.name)
            for extra in found[1:]:
                client.delete_automation(extra.id)
            if found:
                wanted.id = found[0].id
                wanted.update()
                done[notice.name] = "updated"
            else:
                wanted.create()
                done[notice.name] = "created"
    return done


def remove_automations() -> int:
    """Delete the automations of NOTICES; how many there were."""
    removed = 0
    with get_client(sync_client=True) as client:
        for notice in NOTICES:
            for found in client.read_automations_by_name(notice.name):
                client.delete_automation(found.id)
                removed += 1
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.automations",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--block", help="a saved notification block, TYPE-SLUG/NAME (default: "
                        f"the webhook block {WEBHOOK_SLUG}/{BLOCK_NAME} on NOTIFY_URL)")  # fmt: skip
    parser.add_argument("--remove", action="store_true", help="delete the automations")
    args = parser.parse_args(argv)
    if args.remove:
        print(f"notifications: removed {remove_automations()} automation(s)")
        return 0
    if args.block:
        ref, block_id = args.block, block_document_id(args.block)
    elif os.environ.get("NOTIFY_URL"):
        ref, block_id = f"{WEBHOOK_SLUG}/{BLOCK_NAME}", save_webhook_block(os.environ["NOTIFY_URL"])
    else:
        print("notifications: NOTIFY_URL is not set (nor --block): no automations created",
              file=sys.stderr)  # fmt: skip
        return 2
    done = ensure_automations(block_id)
    print(f"notifications: {len(done)} automations through the block {ref} ("
          + ", ".join(f"{name}: {how}" for name, how in done.items()) + ")")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
