"""The `batchgate` command line.

Exit codes: 0 ok, 1 usage or configuration error, 2 dry-run found blocked items (or the
pipeline stopped for them), 3 partial success, 4 failed or aborted, 5 the sample was rejected,
6 nobody reviewed the sample in time.
Prefect is imported only inside the commands that run a flow, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchgate.config import LedgerConfig, load_job
from batchgate.errors import BatchgateError

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2, 3, 4
EXIT_REJECTED, EXIT_TIMED_OUT = 5, 6
OUTCOME_EXIT = {
    "complete": EXIT_OK,
    "partial-success": EXIT_PARTIAL,
    "failed": EXIT_FAILED,
    "aborted": EXIT_FAILED,
    "blocked": EXIT_BLOCKED,
    "rejected": EXIT_REJECTED,
    "timed-out": EXIT_TIMED_OUT,
    "empty": EXIT_OK,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    _quiet_prefect(args.verbose)
    args.local_server = argv is None  # the command itself; a caller of main() owns its settings
    try:
        return int(args.handler(args))
    except BatchgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `batchgate runs | head`: the reader has gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """Usage mistakes exit 1, like config errors: exit 2 means "blocked items" here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="batchgate",
        description="Validate, sample, approve and run large batch operations on Prefect.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def job_command(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("--job", required=True, help="job file (YAML)")
        sub.add_argument("--ledger", metavar="URL", help="ledger database URL (overrides the job)")
        sub.set_defaults(handler=handler)
        return sub

    dry = job_command("dry-run", "validate every item; write nothing", cmd_dry_run)
    dry.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    full = job_command("full", "write every item that passed validation", cmd_full)
    full.add_argument("--json", metavar="OUT", help="also write the final report as JSON to OUT")
    smp = job_command("sample", "write 3-5 items spanning short/medium/long as drafts", cmd_sample)
    smp.add_argument("--count", type=int, default=3, help="how many items, 3-5 (default 3)")
    smp.add_argument("--ids", nargs="+", metavar="ID", help="sample these item ids instead")
    smp.add_argument("--json", metavar="OUT", help="also write the sample report as JSON to OUT")
    pipe = job_command("pipeline", "dry-run, sample, ask for approval, then full (one Prefect "
                       "flow)", cmd_pipeline)  # fmt: skip
    pipe.add_argument("--sample-count", type=int, default=3, help="sample size, 3-5 (default 3)")
    pipe.add_argument("--sample-ids", nargs="+", metavar="ID", help="sample these item ids")
    pipe.add_argument("--allow-blocked", action="store_true",
                      help="go on without the blocked items instead of stopping")  # fmt: skip
    pipe.add_argument("--timeout", type=int, default=24 * 3600, metavar="SECONDS",
                      help="how long to wait for the review (default 24 h)")  # fmt: skip
    pipe.add_argument("--yes", action="store_true", help="approve the sample unattended")
    syn = job_command("sync", "write only the items edited since the last successful sync",
                      cmd_sync)  # fmt: skip
    syn.add_argument("--overlap", type=int, default=120, metavar="SECONDS",
                     help="re-read edits this long before the watermark (default 120)")  # fmt: skip

    for name, verdict in (("approve", "approve"), ("reject", "reject (rolls the sample back)")):
        gate = commands.add_parser(name, help=f"{verdict} a pipeline paused for sample review")
        gate.add_argument("flow_run_id", metavar="FLOW_RUN_ID")
        gate.add_argument("--notes", default="", help="why, for the record")
        gate.set_defaults(handler=cmd_review, approve=name == "approve")

    _dlq_parser(commands)

    back = commands.add_parser(
        "rollback", help="undo a run: delete what it created, restore what it updated"
    )
    back.add_argument("run_id", metavar="RUN_ID")
    back.add_argument("--ledger", metavar="URL", help="ledger database URL")
    back.add_argument("--job", help="job file (default: the settings recorded with the run)")
    back.set_defaults(handler=cmd_rollback)

    runs = commands.add_parser("runs", help="list past runs from the ledger")
    runs.add_argument("--ledger", metavar="URL", help="ledger database URL")
    runs.add_argument("--job", help="job file whose ledger to read")
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.set_defaults(handler=cmd_runs)

    server = commands.add_parser("server", help="the local Prefect server that commands reuse "
                                 "when PREFECT_API_URL is not set")  # fmt: skip
    server.add_argument("action", choices=["status", "start", "stop"], help="status, start or stop")
    server.set_defaults(handler=cmd_server)
    return parser


def _dlq_parser(commands: Any) -> None:
    dlq = commands.add_parser(
        "dlq", help="the dead-letter queue: list, inspect, retry, skip, export"
    )
    ops = dlq.add_subparsers(dest="dlq_command", metavar="OPERATION", required=True)

    def op(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        sub = ops.add_parser(name, help=help)
        sub.add_argument("--ledger", metavar="URL", help="ledger database URL")
        sub.add_argument("--job", help="job file whose ledger (and settings) to use")
        sub.set_defaults(handler=handler)
        return sub

    listing = op("list", "error patterns and failed items needing review", cmd_dlq_list)
    listing.add_argument("--run", metavar="RUN_ID", help="only this run's dead letters")
    listing.add_argument("--all", action="store_true", help="include retried and skipped ones")
    inspect = op("inspect", "one item's full details and attempt history", cmd_dlq_inspect)
    inspect.add_argument("item_id", metavar="ITEM_ID")
    inspect.add_argument("--run", metavar="RUN_ID", help="the run (default: its latest entry)")
    retry = op("retry", "retry dead letters through a new linked run (a Prefect flow)",
               cmd_dlq_retry)  # fmt: skip
    retry.add_argument("--run", metavar="RUN_ID", help="the run whose dead letters to retry "
                       "(default with --item: the run holding the item's open entry)")  # fmt: skip
    retry.add_argument("--item", nargs="+", metavar="ID", help="only these items")
    retry.add_argument("--error-type", help="only this error type (e.g. timeout, api-error)")
    skip = op("skip", "mark an item as deliberately skipped", cmd_dlq_skip)
    skip.add_argument("item_id", metavar="ITEM_ID")
    skip.add_argument("--reason", required=True, help="why it is skipped, for the record")
    skip.add_argument("--run", metavar="RUN_ID", help="the run (default: every open entry)")
    export = op("export", "write a run's dead letters to CSV, JSON or Parquet", cmd_dlq_export)
    export.add_argument("--run", required=True, metavar="RUN_ID")
    export.add_argument("--format", choices=["csv", "json", "parquet"], default="csv")
    export.add_argument("-o", "--output", required=True, metavar="PATH")
    export.add_argument("--all", action="store_true", help="include retried and skipped ones")


def _quiet_prefect(verbose: bool) -> None:
    """The terminal shows batchgate's report; Prefect's own logs still reach its API and UI."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def _use_prefect(args: argparse.Namespace) -> None:
    """No PREFECT_API_URL: start (first command) or reuse the local background Prefect server."""
    if getattr(args, "local_server", False):
        from batchgate.localserver import ensure

        ensure()


def cmd_server(args: argparse.Namespace) -> int:
    from batchgate import localserver

    where = localserver.paths()
    if args.action == "stop":
        stopped = localserver.stop(where) if where.state.exists() else None
        print(f"stopped the local Prefect server ({stopped.url}, pid {stopped.pid})" if stopped
              else "no local Prefect server is running")  # fmt: skip
        return EXIT_OK
    user = localserver.user_api_url()
    if args.action == "start":
        localserver.ensure()
    print(localserver.describe(where, user))
    return EXIT_OK


def _ledger_config(url: str | None, job_ledger: LedgerConfig | None = None) -> LedgerConfig:
    if url:
        return LedgerConfig(url=url)
    if os.environ.get("BATCHGATE_LEDGER_URL"):  # records name the variable, not its password
        from batchgate.secrets import SecretUrl

        url = SecretUrl(os.environ["BATCHGATE_LEDGER_URL"], "${BATCHGATE_LEDGER_URL}")
        return LedgerConfig(url=url)
    return job_ledger or LedgerConfig()


def cmd_dry_run(args: argparse.Namespace) -> int:
    job = _job_with_ledger(args)
    _use_prefect(args)
    from flows.dry_run import dry_run

    json_path = str(Path(args.json).resolve()) if args.json else None
    state = dry_run(job, json_path=json_path, job_ref=args.job, return_state=True)
    if not state.is_completed():
        return _failed(state)
    summary: dict[str, Any] = state.result()
    print(summary["report"], end="")
    if json_path:
        print(f"\nJSON report: {args.json}")
    return EXIT_BLOCKED if summary["blocked"] else EXIT_OK


def cmd_full(args: argparse.Namespace) -> int:
    job = _job_with_ledger(args)
    _use_prefect(args)  # before any Prefect import: its settings are read once
    from batchgate.ledger import new_run_id
    from blocks.ledger import open_ledger
    from flows.full import full

    run_id = new_run_id("full")
    json_path = str(Path(args.json).resolve()) if args.json else None
    state = full(job, json_path=json_path, job_ref=args.job, run_id=run_id, console_progress=True,
                 return_state=True)  # fmt: skip
    if state.is_failed() and (state.message or "").startswith("error: "):
        print(state.message, file=sys.stderr)  # the job's error, found before anything was sent
        return EXIT_ERROR
    run = open_ledger(job.ledger).run(run_id)
    outcome = run.get("outcome") if run else None
    if outcome not in OUTCOME_EXIT:
        return _failed(state)
    if json_path:
        print(f"JSON report: {args.json}")
    return OUTCOME_EXIT[outcome]


def cmd_rollback(args: argparse.Namespace) -> int:
    job = load_job(args.job) if args.job else None
    ledger = _ledger_config(args.ledger, job.ledger if job else None)
    _use_prefect(args)
    from flows.rollback import rollback

    state = rollback(args.run_id, ledger=ledger, job=job, return_state=True)
    if not state.is_completed():
        return _failed(state)
    result = state.result()
    print(result["report"], end="")
    # 3: items left alone because newer work changed them (conflicts), as for a partial run
    return EXIT_PARTIAL if result.get("conflicts") else EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from batchgate.sample import SAMPLE_MAX, SAMPLE_MIN

    if not args.ids and not SAMPLE_MIN <= args.count <= SAMPLE_MAX:
        raise BatchgateError(f"--count is {args.count}. Fix: choose between {SAMPLE_MIN} and "
                             f"{SAMPLE_MAX}, or name the items with --ids.")  # fmt: skip
    job = _job_with_ledger(args)
    _use_prefect(args)
    from flows.sample import sample

    json_path = str(Path(args.json).resolve()) if args.json else None
    state = sample(job, sample_count=args.count, sample_ids=args.ids, json_path=json_path,
                   job_ref=args.job, return_state=True)  # fmt: skip
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    if not isinstance(result, dict):
        return _failed(state)
    print(result["report"], end="")
    return OUTCOME_EXIT.get(result["status"], EXIT_FAILED)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from batchgate.sample import SAMPLE_MAX, SAMPLE_MIN

    if not args.sample_ids and not SAMPLE_MIN <= args.sample_count <= SAMPLE_MAX:
        raise BatchgateError(f"--sample-count is {args.sample_count}. Fix: choose between "
                             f"{SAMPLE_MIN} and {SAMPLE_MAX}.")  # fmt: skip
    job = _job_with_ledger(args)
    _use_prefect(args)
    from batchgate.ledger import new_run_id
    from batchgate.review import Reviewer
    from blocks.ledger import open_ledger
    from flows.pipeline import pipeline, review_state, send_review

    ledger = open_ledger(job.ledger)
    run_id = new_run_id("pipeline")
    print(f"▶️  Pipeline {run_id}: dry-run, sample, review, full ({job.name})", flush=True)
    reviewer = Reviewer(ledger, run_id, review_state, send_review, yes=args.yes,
                        ask=sys.stdin.isatty())  # fmt: skip
    reviewer.start()
    try:
        state = pipeline(
            job, sample_count=args.sample_count, sample_ids=args.sample_ids,
            allow_blocked=args.allow_blocked, approval_timeout_s=args.timeout,
            approval_poll_s=2, job_ref=args.job, run_id=run_id, console_progress=True,
            return_state=True,
        )  # fmt: skip
    finally:
        reviewer.stop()
    run = ledger.run(run_id)
    outcome = run.get("outcome") if run else None
    if outcome not in OUTCOME_EXIT:
        return _failed(state)
    print(f"\n{'✅' if outcome == 'complete' else '⏹️ '} Pipeline {run_id}: {outcome}. "
          f"{run.get('message') or ''}")  # fmt: skip
    if outcome == "blocked":
        for dry in ledger.runs_of(run_id, mode="dry-run")[:1]:
            print("\n" + (dry.get("report") or ""), end="")
        print(f"\nFix the blocked items and run again, or go on without them: batchgate pipeline "
              f"--job {args.job} --allow-blocked")  # fmt: skip
    return OUTCOME_EXIT[outcome]


def cmd_sync(args: argparse.Namespace) -> int:
    job = _job_with_ledger(args)
    _use_prefect(args)
    from flows.sync import sync

    state = sync(job, overlap_s=args.overlap, job_ref=args.job, console_progress=True,
                 return_state=True)  # fmt: skip
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    if not isinstance(result, dict):
        print(f"error: {state.message}", file=sys.stderr)
        return EXIT_FAILED if "failed" in (state.message or "") else EXIT_ERROR
    print(f"\n🔄 Sync {result['run_id']}: {result['outcome']}, {result['message']}")
    return OUTCOME_EXIT.get(result["outcome"], EXIT_FAILED)


def cmd_review(args: argparse.Namespace) -> int:
    _use_prefect(args)
    from flows.pipeline import send_review

    send_review(args.flow_run_id, args.approve, args.notes)
    verdict = (
        "approved: the full run starts" if args.approve else "rejected: the sample is rolled back"
    )
    print(f"Flow run {args.flow_run_id} resumed; sample {verdict}.")
    return EXIT_OK


def _job_with_ledger(args: argparse.Namespace) -> Any:
    job = load_job(args.job)
    job = job.model_copy(update={"ledger": _ledger_config(args.ledger, job.ledger)})
    from batchgate.items import model_for
    from batchgate.validation import build_rules

    # a rule mistake or a transform that cannot be imported is a config error: said before starting
    build_rules(job.validation, id_field=job.id_field)
    model_for(job)
    from batchgate.registry import check_classes

    check_classes(job)  # a connector class that cannot be imported: exit 1 before any flow
    return job


def _open_ledger(args: argparse.Namespace) -> tuple[Any, str]:
    """The ledger to read, and the flags to repeat in the commands a report suggests."""
    job_ledger = load_job(args.job).ledger if args.job else None
    from batchgate.secrets import hide_password
    from blocks.ledger import open_ledger

    flags = (f" --ledger {hide_password(args.ledger)}" if args.ledger else "") + (
        f" --job {args.job}" if args.job else ""
    )
    return open_ledger(_ledger_config(args.ledger, job_ledger)), flags


def _dlq_secrets(args: argparse.Namespace, ledger: Any, entries: list[dict[str, Any]]) -> list[str]:
    """What the DLQ views mask: the secrets of --job, of each run's recorded job (its ${VAR}s
    read from the environment, whatever they are named), of the ledger URL, and *TOKEN etc."""
    from batchgate.dlq import env_secrets, recorded_secrets
    from batchgate.secrets import secret_values

    found = env_secrets(os.environ) + secret_values(_ledger_config(args.ledger))
    if args.job:
        found += secret_values(load_job(args.job))
    for run_id in sorted({e["run_id"] for e in entries}):
        found += recorded_secrets((ledger.run(run_id) or {}).get("job_json"), os.environ)
    return found


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from batchgate.dlq import mask_entries, render_queue

    ledger, flags = _open_ledger(args)
    states = None if args.all else ("open",)
    entries = ledger.dlq_entries(args.run, states=states)
    entries = mask_entries(entries, _dlq_secrets(args, ledger, entries))
    print(render_queue(entries, args.run, flags), end="")
    return EXIT_OK


def cmd_dlq_inspect(args: argparse.Namespace) -> int:
    from batchgate.dlq import mask_entries, render_entry

    ledger, flags = _open_ledger(args)
    entries = ledger.dlq_entries(args.run, [args.item_id], states=None)
    entries = mask_entries(entries, _dlq_secrets(args, ledger, entries))
    if not entries:
        where = f" in run {args.run}" if args.run else ""
        raise BatchgateError(f"item {args.item_id} has no dead letter{where} in {ledger.where}. "
                             "Fix: see `batchgate dlq list` for the items in the queue.")  # fmt: skip
    entry = entries[-1]
    print("🔍 DEAD LETTER\n")
    print("\n".join(render_entry(None, entry, flags)))
    rows = [r for r in ledger.item_rows(entry["run_id"]) if r["item_id"] == args.item_id]
    if rows:
        print(f"\nLedger row: status {rows[0]['status']}, location {rows[0]['location'] or '-'}")
    if len(entries) > 1:
        others = ", ".join(f"{e['run_id']} ({e['state']})" for e in entries[:-1])
        print(f"Earlier dead letters of this item: {others}")
    return EXIT_OK


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    job = load_job(args.job) if args.job else None
    ledger_config = _ledger_config(args.ledger, job.ledger if job else None)
    run_id = args.run
    if run_id is None:
        if not args.item:
            raise BatchgateError("name the run: batchgate dlq retry --run RUN_ID "
                                 "(or --item ID to retry one item from its latest run)")  # fmt: skip
        _use_prefect(args)
        from blocks.ledger import open_ledger

        open_entries = open_ledger(ledger_config).dlq_entries(None, args.item)
        runs = sorted({e["run_id"] for e in open_entries})
        if len(runs) != 1:
            raise BatchgateError(
                f"item(s) {', '.join(args.item)} have open dead letters in "
                f"{len(runs)} runs ({', '.join(runs) or 'none'}). Fix: add --run RUN_ID."
            )
        run_id = runs[0]
    _use_prefect(args)
    from flows.dlq_retry import dlq_retry

    state = dlq_retry(run_id, item_ids=args.item, error_type=args.error_type,
                      ledger=ledger_config, job=job, console_progress=True,
                      return_state=True)  # fmt: skip
    result = state.result(raise_on_failure=False) if state.is_completed() else None
    if not isinstance(result, dict):
        return _failed(state)
    if not result["retried"]:
        print(result["report"], end="")
        return EXIT_OK
    print(f"\nRetried {result['retried']} item(s) of {run_id} as run {result['run_id']}:")
    for item_id, status in result["outcomes"].items():
        print(f"  {item_id}: {status}")
    return OUTCOME_EXIT.get(result.get("status", "complete"), EXIT_FAILED)


def cmd_dlq_skip(args: argparse.Namespace) -> int:
    ledger, _ = _open_ledger(args)
    entries = ledger.dlq_entries(args.run, [args.item_id])
    if not entries:
        raise BatchgateError(f"item {args.item_id} has no open dead letter"
                             f"{f' in run {args.run}' if args.run else ''}. Fix: see "
                             "`batchgate dlq list`.")  # fmt: skip
    for entry in entries:
        ledger.set_dlq_state(entry["run_id"], [args.item_id], "skipped", args.reason)
        print(f"⚠️  Skipped {args.item_id} in run {entry['run_id']}: {args.reason}")
    print("It stays unwritten; a later full run tries it again unless the source changes.")
    return EXIT_OK


def cmd_dlq_export(args: argparse.Namespace) -> int:
    import pandas as pd

    from batchgate.dlq import export_rows

    ledger, _ = _open_ledger(args)
    entries = ledger.dlq_entries(args.run, states=None if args.all else ("open",))
    if ledger.run(args.run) is None:
        raise BatchgateError(f"run {args.run} is not in the ledger at {ledger.where}. Fix: pick "
                             "one from `batchgate runs`.")  # fmt: skip
    secrets = _dlq_secrets(args, ledger, entries)
    from batchgate.dlq import EXPORT_COLUMNS

    rows = export_rows(entries, secrets, neutralise=args.format == "csv")  # formulas: CSV only
    frame = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "csv":
        frame.to_csv(out, index=False)
    elif args.format == "json":
        frame.to_json(out, orient="records", indent=2, force_ascii=False)
    else:
        frame.to_parquet(out, index=False)
    print(f"Exported {len(frame)} dead letter(s) of {args.run} to {out} ({args.format}).")
    return EXIT_OK


def _failed(state: Any) -> int:
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException) and not isinstance(error, BatchgateError):
        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {state.message or state.name}", file=sys.stderr)
    return EXIT_ERROR


def cmd_runs(args: argparse.Namespace) -> int:
    ledger, _ = _open_ledger(args)
    rows = ledger.runs(limit=args.limit)
    if not rows:
        print(f"No runs recorded in {ledger.where}.")
        return EXIT_OK
    print(f"{'RUN ID':<34} {'MODE':<8} {'STATUS':<16} {'JOB':<16} {'TOTAL':>6}  RESULT")
    for row in rows:
        started = row["started_at"].strftime("%Y-%m-%d %H:%M:%S") if row["started_at"] else ""
        if row["mode"] in ("full", "retry", "sample"):
            result = (f"{row.get('succeeded') or 0} ok, {row.get('failed') or 0} failed, "
                      f"{row.get('skipped') or 0} skipped, {row.get('pending') or 0} pending")  # fmt: skip
            if row.get("parent_run_id"):
                result += f", from {row['parent_run_id']}"
        elif row["mode"] == "pipeline":
            result = (row.get("message") or "")[:70]
        else:
            result = f"{row['ready']} ready, {row['warnings']} warnings, {row['blocked']} blocked"
        print(f"{row['run_id']:<34} {row['mode']:<8} {row['status']:<16} {row['job_name'][:16]:<16} "
              f"{row['total']:>6}  {result}  ({started})")  # fmt: skip
        if row["status"] in ("failed", "aborted", "interrupted") and row.get("message"):
            print(f"    └ {row['message'][:200]}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
