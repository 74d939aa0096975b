"""The `batchgate` command line.

Exit codes: 0 ok, 1 usage or configuration error, 2 dry-run found blocked items,
3 full run partial success, 4 full run failed or aborted.
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
OUTCOME_EXIT = {
    "complete": EXIT_OK,
    "partial-success": EXIT_PARTIAL,
    "failed": EXIT_FAILED,
    "aborted": EXIT_FAILED,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    _quiet_prefect(args.verbose)
    try:
        return int(args.handler(args))
    except BatchgateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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

    dry = commands.add_parser("dry-run", help="validate every item; write nothing")
    dry.add_argument("--job", required=True, help="job file (YAML)")
    dry.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    dry.add_argument("--ledger", metavar="URL", help="ledger database URL (overrides the job)")
    dry.set_defaults(handler=cmd_dry_run)

    full = commands.add_parser("full", help="write every item that passed validation")
    full.add_argument("--job", required=True, help="job file (YAML)")
    full.add_argument("--json", metavar="OUT", help="also write the final report as JSON to OUT")
    full.add_argument("--ledger", metavar="URL", help="ledger database URL (overrides the job)")
    full.set_defaults(handler=cmd_full)

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
    return parser


def _quiet_prefect(verbose: bool) -> None:
    """The terminal shows batchgate's report; Prefect's own logs still reach its API and UI."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def _ledger_config(url: str | None, job_ledger: LedgerConfig | None = None) -> LedgerConfig:
    url = url or os.environ.get("BATCHGATE_LEDGER_URL")
    if url:
        return LedgerConfig(url=url)
    return job_ledger or LedgerConfig()


def cmd_dry_run(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    job = job.model_copy(update={"ledger": _ledger_config(args.ledger, job.ledger)})
    from batchgate.validation import build_rules

    build_rules(job.validation)  # a rule mistake is a config error: report it before starting
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
    job = load_job(args.job)
    job = job.model_copy(update={"ledger": _ledger_config(args.ledger, job.ledger)})
    from batchgate.validation import build_rules

    build_rules(job.validation)
    from batchgate.ledger import new_run_id
    from blocks.ledger import open_ledger
    from flows.full import full

    run_id = new_run_id("full")
    json_path = str(Path(args.json).resolve()) if args.json else None
    state = full(job, json_path=json_path, job_ref=args.job, run_id=run_id, console_progress=True,
                 return_state=True)  # fmt: skip
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
    from flows.rollback import rollback

    state = rollback(args.run_id, ledger=ledger, job=job, return_state=True)
    if not state.is_completed():
        return _failed(state)
    print(state.result()["report"], end="")
    return EXIT_OK


def _failed(state: Any) -> int:
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException) and not isinstance(error, BatchgateError):
        traceback.print_exception(error, file=sys.stderr)
    print(f"error: {state.message or state.name}", file=sys.stderr)
    return EXIT_ERROR


def cmd_runs(args: argparse.Namespace) -> int:
    job_ledger = load_job(args.job).ledger if args.job else None
    from blocks.ledger import open_ledger

    ledger = open_ledger(_ledger_config(args.ledger, job_ledger))
    rows = ledger.runs(limit=args.limit)
    if not rows:
        print(f"No runs recorded in {ledger.where}.")
        return EXIT_OK
    print(f"{'RUN ID':<34} {'MODE':<8} {'STATUS':<16} {'JOB':<16} {'TOTAL':>6}  RESULT")
    for row in rows:
        started = row["started_at"].strftime("%Y-%m-%d %H:%M:%S") if row["started_at"] else ""
        if row["mode"] == "full":
            result = (f"{row.get('succeeded') or 0} ok, {row.get('failed') or 0} failed, "
                      f"{row.get('skipped') or 0} skipped, {row.get('pending') or 0} pending")  # fmt: skip
        else:
            result = f"{row['ready']} ready, {row['warnings']} warnings, {row['blocked']} blocked"
        print(f"{row['run_id']:<34} {row['mode']:<8} {row['status']:<16} {row['job_name'][:16]:<16} "
              f"{row['total']:>6}  {result}  ({started})")  # fmt: skip
        if row["status"] in ("failed", "aborted", "interrupted") and row.get("message"):
            print(f"    └ {row['message'][:200]}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
