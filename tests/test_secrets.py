"""Secrets stay secret: database passwords, API tokens, and where a token may be sent.

A password in `destination.url` or `ledger.url` must not reach the ledger, Prefect (flow-run
parameters, logs, artifacts, its whole database), the reports, the CLI output or a DLQ export.
A token goes only to https or loopback http. The DLQ views mask every secret the job holds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from batchgate.cli import main
from batchgate.config import LedgerConfig, load_job, parse_job
from batchgate.dlq import mask_entries, recorded_secrets
from batchgate.errors import ConfigError, FatalError, LedgerError
from batchgate.secrets import SecretUrl, mask_credentials, token_url_problem
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.fakes.base import ThreadedServer
from tests.fakes.webflow_server import Faults, WebflowState, _Handler, blog_fields

BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
DEST_PW = "DestPw7f3a9c"
LEDGER_PW = "LedgerPw2b8e41"
CMS_KEY = "cmskey-9d4e1f7a2b"


def with_password(url: str, password: str) -> str:
    assert "://postgres@" in url
    return url.replace("://postgres@", f"://postgres:{password}@", 1)


# --- the secret types ---------------------------------------------------------------------------


def test_a_url_password_is_masked_in_every_dump_and_the_rest_kept() -> None:
    job = parse_job({
        "source": {"type": "file", "path": "p.csv"},
        "destination": {"type": "sql", "url": f"postgresql://u:{DEST_PW}@db.internal:5432/cms"},
        "ledger": {"url": f"postgresql+psycopg2://u:{LEDGER_PW}@db.internal/ledger"},
    })  # fmt: skip
    assert job.destination.url.get_secret_value().endswith("@db.internal:5432/cms")
    for text in (job.model_dump_json(), json.dumps(job.model_dump(mode="json")), repr(job),
                 str(job.destination.url), json.dumps(job.model_json_schema())):  # fmt: skip
        assert DEST_PW not in text and LEDGER_PW not in text
    recorded = json.loads(job.model_dump_json())
    assert recorded["destination"]["url"] == "postgresql://u:***@db.internal:5432/cms"
    assert recorded["ledger"]["url"] == "postgresql+psycopg2://u:***@db.internal/ledger"


def test_a_url_without_password_is_recorded_as_written_and_keeps_its_key(tmp_path: Path) -> None:
    from blocks.sql_destination import SqlDestination

    url = f"sqlite:///{tmp_path / 'cms.db'}"
    job = parse_job({"source": {"type": "file", "path": "p.csv"},
                     "destination": {"type": "sql", "url": url}})  # fmt: skip
    assert json.loads(job.model_dump_json())["destination"]["url"] == url  # existing ledgers match
    key = SqlDestination.from_config(job.destination).key  # the file by its real path
    assert key == f"sql:sqlite:{os.path.realpath(tmp_path / 'cms.db')}#posts"


def test_the_destination_key_hides_the_password() -> None:
    from blocks.sql_destination import SqlDestination

    config = parse_job({"source": {"type": "file", "path": "p.csv"}, "destination": {
        "type": "sql", "url": f"postgresql://postgres:{DEST_PW}@127.0.0.1:5432/test"}})  # fmt: skip
    destination = SqlDestination.from_config(config.destination)
    assert re.fullmatch(r"sql:postgresql:\d+/test/public#posts", destination.key)  # the server's id
    assert DEST_PW not in destination.key
    assert DEST_PW not in repr(destination.connector) and DEST_PW not in destination.link("x", {})
    assert destination.engine.url.password == DEST_PW  # only the engine has it


def test_a_url_written_as_a_variable_is_recorded_as_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_CMS_URL", f"postgresql://u:{DEST_PW}@h/db")
    monkeypatch.setenv("MY_CMS_KEY", CMS_KEY)
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: p.csv}\n"
        "destination: {type: sql, url: '${PG_CMS_URL}'}\n"
        "ledger: {url: 'postgresql://u:${PG_PASS:-" + LEDGER_PW + "}@h/ledger'}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    assert job.destination.url.get_secret_value() == f"postgresql://u:{DEST_PW}@h/db"
    recorded = json.loads(job.model_dump_json())
    assert recorded["destination"]["url"] == "${PG_CMS_URL}"
    # a default that holds the password is not a safe reference: masked instead
    assert recorded["ledger"]["url"] == "postgresql://u:***@h/ledger"
    assert recorded_secrets(job.model_dump_json(), os.environ) == [DEST_PW]


def test_connection_failures_name_the_url_without_its_password(tmp_path: Path) -> None:
    from blocks.sql_destination import SqlDestination

    url = f"postgresql+psycopg2://postgres:{DEST_PW}@127.0.0.1:1/nothing"  # a closed local port
    config = parse_job({"source": {"type": "file", "path": "p.csv"},
                        "destination": {"type": "sql", "url": url}})  # fmt: skip
    with pytest.raises(FatalError) as caught:
        SqlDestination.from_config(config.destination).check()
    assert DEST_PW not in str(caught.value) and "postgres:***@127.0.0.1:1" in str(caught.value)
    with pytest.raises(LedgerError) as failed:
        open_ledger(LedgerConfig(url=url.replace(DEST_PW, LEDGER_PW)))
    assert LEDGER_PW not in str(failed.value) and "postgres:***@127.0.0.1:1" in str(failed.value)
    with pytest.raises(ConfigError) as bad:
        open_ledger(LedgerConfig(url=f"not a url://u:{LEDGER_PW}@h"))
    assert LEDGER_PW not in str(bad.value) and "ledger.url" in str(bad.value)


def test_driver_messages_are_scrubbed_of_credentials() -> None:
    text = f'connect to postgresql://u:{DEST_PW}@h/db failed; dsn "host=h password={LEDGER_PW}"'
    masked = mask_credentials(text)
    assert DEST_PW not in masked and LEDGER_PW not in masked and "postgresql://u:***@h/db" in masked


# --- where a token may be sent ------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://api.webflow.com/v2", "https://api.notion.com/v1", "http://127.0.0.1:8099/v2",
    "http://127.45.6.7", "http://localhost:3000", "http://LOCALHOST", "http://[::1]:8080/v1",
])  # fmt: skip
def test_https_and_loopback_http_may_receive_a_token(url: str) -> None:
    assert token_url_problem(url) is None


@pytest.mark.parametrize("url", [
    "http://example.test/v2", "http://10.0.0.5/v1", "http://0.0.0.0:80", "http://192.168.1.2",
    "http://127.0.0.1.nip.io/v2", "http://user@127.0.0.1@example.test/", "ftp://127.0.0.1/",
    "api.webflow.com/v2", "https://",
])  # fmt: skip
def test_any_other_base_url_is_refused(url: str) -> None:
    assert token_url_problem(url) is not None


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request httpx would send, recorded and never sent."""
    sent: list[str] = []

    def refuse(self: Any, request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        raise AssertionError(f"a request was sent to {request.url}")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", refuse)
    return sent


def test_a_job_with_a_plain_http_base_url_is_refused_naming_the_field_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_network: list[str]
) -> None:
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: p.csv}\n"
        "destination: {type: webflow, base_url: 'http://example.test/v2', collection_id: c,"
        " token: t0ken-abcdef}\n"
    )
    assert main(["dry-run", "--job", str(tmp_path / "job.yaml")]) == 1
    err = capsys.readouterr().err
    assert "destination.base_url 'http://example.test/v2' is refused" in err
    assert "Fix: set destination.base_url to the API's https:// URL" in err
    assert "t0ken-abcdef" not in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="source.base_url"):
        parse_job({"source": {"type": "notion", "database_id": "d",
                              "base_url": "http://10.0.0.5/v1"}})  # fmt: skip
    assert no_network == []


def test_connectors_refuse_before_any_request(no_network: list[str]) -> None:
    """Saved blocks skip the job's validation: the connectors check again before sending."""
    from pydantic import SecretStr

    from batchgate.notion import NotionReader
    from batchgate.schema import BLOG
    from blocks.notion_source import NotionSource
    from blocks.webflow import WebflowDestination

    webflow = WebflowDestination(base_url="http://example.test/v2", collection_id="c",
                                 token=SecretStr("t0ken-abcdef"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"destination.base_url .*Fix:"):
        webflow.check()
    notion = NotionSource(base_url="http://10.0.0.5/v1", database_id="d",
                          token=SecretStr("secret_abcdef"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"source.base_url .*Fix:"):
        notion.read(BLOG)
    with pytest.raises(ConfigError):
        NotionReader("http://example.test/v1", "secret_abcdef")
    assert no_network == []
    NotionReader("http://127.0.0.1:9/v1", "secret_abcdef").close()  # loopback http is fine
    NotionReader("https://api.notion.com/v1", "secret_abcdef").close()


# --- the DLQ views mask the job's secrets, whatever their variable is called ------------------


class _EchoHandler(_Handler):
    """The fake Webflow API, with its 400 answers repeating the caller's key (as a careless API
    or proxy might): the token really reaches the dead-letter queue."""

    def _error(self, status: int, code: str, message: str, method: str,
               details: list[dict[str, str]] | None = None) -> None:  # fmt: skip
        key = str(self.headers.get("Authorization", "")).removeprefix("Bearer ")
        super()._error(status, code, f"{message} for key {key}", method, details)


@pytest.mark.prefect
def test_dlq_views_and_exports_mask_a_token_whatever_its_variable_is_named(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from flows.full import full

    monkeypatch.setenv("MY_CMS_KEY", CMS_KEY)
    monkeypatch.delenv("WEBFLOW_TOKEN", raising=False)
    write_csv([blog_row(n) for n in range(1, 7)])
    state = WebflowState("c0ffee0000000000000000aa", CMS_KEY, blog_fields(), 1000, 60.0,
                         Faults(bad_request_slugs={"post-number-2", "post-number-5"}))  # fmt: skip
    with ThreadedServer(_EchoHandler, state) as server:
        job_path = tmp_path / "wf.yaml"
        job_path.write_text(
            "source: {type: file, path: posts.csv}\n"
            f"destination: {{type: webflow, base_url: '{server.base_url}/v2', "
            f"collection_id: {state.collection_id}, token: '${{MY_CMS_KEY}}', "
            "rate_per_minute: 60000, items_per_request: 1}\n"
            "validation: {preset: blog, allowed_categories: [Data]}\n"
            "batch: {items_per_chunk: 5, backoff_base_s: 0.05, success_threshold: low}\n"
            f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
        )
        full(load_job(job_path), return_state=True)
    ledger = open_ledger(load_job(job_path).ledger)
    run = ledger.runs()[0]
    stored = ledger.dlq_entries(run["run_id"], states=None)
    assert sorted(e["item_id"] for e in stored) == ["p-002", "p-005"]
    # the API echoed the key in its errors: it was masked before it reached the ledger at all
    assert all("for key **********" in e["message"] for e in stored)
    assert CMS_KEY not in json.dumps([*stored, *ledger.attempt_history(run["run_id"], "p-002")],
                                     default=str)  # fmt: skip
    assert CMS_KEY not in run["job_json"] and "${MY_CMS_KEY}" in run["job_json"]
    # a ledger written before that masking holds the key raw: the views and exports mask it too
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE batchgate_dlq SET message = replace(message, '**********', "
                             ":key)"), {"key": CMS_KEY})  # fmt: skip
    raw = ledger.dlq_entries(run["run_id"], states=None)
    assert all(CMS_KEY in e["message"] for e in raw)  # the secret IS in the raw data now

    ledger_flag = ["--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"]  # no --job: the recorded job
    for extra in (ledger_flag, ["--job", str(job_path)]):
        assert main(["dlq", "list", "--run", run["run_id"], *extra]) == 0
        out = capsys.readouterr().out
        assert "p-002" in out and "for key **********" in out and CMS_KEY not in out
        assert main(["dlq", "inspect", "p-005", "--run", run["run_id"], *extra]) == 0
        out = capsys.readouterr().out
        assert "Attempt 1 (" in out and "for key **********" in out and CMS_KEY not in out
        for fmt in ("csv", "json", "parquet"):
            out_file = tmp_path / f"dlq.{fmt}"
            assert main(["dlq", "export", "--run", run["run_id"], "--format", fmt,
                         "-o", str(out_file), *extra]) == 0  # fmt: skip
            frame = getattr(pd, f"read_{fmt}")(out_file)
            assert sorted(frame["item_id"]) == ["p-002", "p-005"]
            text = frame.to_json() + out_file.read_bytes().decode("latin-1")
            assert CMS_KEY not in text and "for key **********" in frame.to_json()
    capsys.readouterr()
    assert all(CMS_KEY not in json.dumps(e, default=str) for e in mask_entries(raw, [CMS_KEY]))


# --- end to end: PostgreSQL destination and ledger with passwords, through the real Prefect API --


def _cli(prefect_api: str, cwd: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([BATCHGATE, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PREFECT_API_URL": prefect_api, **env})  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    command = mask_credentials(" ".join(args))  # the command line itself is ours, not batchgate's
    return f"$ batchgate {command} -> {result.returncode}\n{result.stdout}{result.stderr}"


def _ledger_dump(url: str) -> tuple[str, dict[str, int]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("batchgate_")]
            rows = {t: [[str(v) for v in row] for row in conn.execute(sa.text(f'SELECT * FROM "{t}"'))]
                    for t in tables}  # fmt: skip
    finally:
        engine.dispose()
    return json.dumps(rows, ensure_ascii=False), {t: len(r) for t, r in rows.items()}  # in full


def _prefect_records(marker: str) -> tuple[list[Any], str]:
    """The flow runs whose parameters mention `marker`, and everything Prefect keeps of them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if marker in json.dumps(r.parameters)]
        ids = [r.id for r in runs]
        read_back = [client.read_flow_run(i) for i in ids]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
        )
    text = "\n".join(
        [json.dumps(r.parameters) for r in read_back]
        + [f"{log.name} {log.message}" for log in logs]
        + [f"{a.key} {a.description} {json.dumps(a.data, default=str)}" for a in artifacts]
    )
    assert logs and artifacts, "nothing to check: Prefect recorded no logs or artifacts"
    return read_back, text


def _prefect_database() -> bytes:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = sa.engine.make_url(str(PREFECT_API_DATABASE_CONNECTION_URL.value()))
    if url.get_backend_name() != "sqlite" or not url.database:
        return b""
    files = [Path(url.database), Path(url.database + "-wal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


@pytest.mark.prefect
def _posts_refusing(url: str, category: str) -> None:
    """The blog's posts table, with a CHECK constraint that refuses one category at write time
    (a refusal the dry-run cannot foresee)."""
    from batchgate.sqltable import layout_for
    from blocks.sql_destination import DEFAULT_SPEC

    engine = sa.create_engine(url)
    layout_for(None, DEFAULT_SPEC, "posts", None, {}, [], "if-missing").table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE posts ADD CONSTRAINT category_ok CHECK (category <> '{category}')"))
    engine.dispose()


def test_passwords_never_reach_the_ledger_prefect_logs_artifacts_reports_or_exports(
    prefect_api: str, pg_schema_url: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    long_category = "Refused"  # the table's CHECK constraint refuses it: two items fail in PostgreSQL
    write_csv([blog_row(n, category=long_category if n in (2, 4) else "Data") for n in range(1, 7)])
    _posts_refusing(pg_schema_url, long_category)
    dest_url, ledger_url = (
        with_password(pg_schema_url, DEST_PW),
        with_password(pg_schema_url, LEDGER_PW),
    )
    schema = pg_schema_url.rsplit("%3D", 1)[1]
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: posts.csv}\n"
        "destination: {type: sql, url: '${BG_DEST_URL}', table: posts}\n"
        f"validation: {{preset: blog, allowed_categories: [Data, {long_category}]}}\n"
        "batch: {items_per_chunk: 5, backoff_base_s: 0.05, success_threshold: low}\n"
        f"ledger: {{url: '{ledger_url}'}}\n"
    )
    env = {"BG_DEST_URL": dest_url}
    out = _cli(prefect_api, tmp_path, env, "dry-run", "--job", "job.yaml", "--json", "dry.json")
    out += _cli(prefect_api, tmp_path, env, "full", "--job", "job.yaml", "--json", "full.json")
    assert "-> 0" in out and "Successful: 4/6" in out

    book = open_ledger(LedgerConfig(url=ledger_url))
    full_run = next(r for r in book.runs() if r["mode"] == "full")
    run_id = full_run["run_id"]
    assert sorted(e["item_id"] for e in book.dlq_entries(run_id)) == ["p-002", "p-004"]
    flags = ["--ledger", ledger_url]
    out += _cli(prefect_api, tmp_path, env, "runs", *flags)
    out += _cli(prefect_api, tmp_path, env, "dlq", "list", "--run", run_id, *flags)
    out += _cli(prefect_api, tmp_path, env, "dlq", "inspect", "p-002", "--run", run_id, *flags)
    exports = []
    for fmt in ("csv", "json", "parquet"):
        exports.append(tmp_path / f"dlq.{fmt}")
        out += _cli(prefect_api, tmp_path, env, "dlq", "export", "--run", run_id, "--format", fmt,
                    "-o", str(exports[-1]), *flags)  # fmt: skip
    # the rollback rebuilds the job from the ledger: the URL from ${BG_DEST_URL}, never stored
    out += _cli(prefect_api, tmp_path, env, "rollback", run_id, *flags)
    assert "Items: 4 rolled back" in out and "--ledger postgresql+psycopg2://postgres:***@" in out

    ledger_rows, counts = _ledger_dump(pg_schema_url)
    assert counts["batchgate_runs"] >= 2 and counts["batchgate_items"] >= 12
    assert counts["batchgate_dlq"] == 2
    assert "${BG_DEST_URL}" in ledger_rows and "postgres:***@127.0.0.1" in ledger_rows
    flow_runs, prefect_text = _prefect_records(schema)
    assert len(flow_runs) >= 3  # dry-run, full, rollback
    assert "postgres:***@127.0.0.1" in prefect_text and "${BG_DEST_URL}" in prefect_text
    reports = "".join((tmp_path / f).read_text() for f in ("dry.json", "full.json"))
    export_text = "".join(p.read_bytes().decode("latin-1") for p in exports) + "".join(
        getattr(pd, f"read_{p.suffix[1:]}")(p).to_json() for p in exports
    )
    assert "p-002" in export_text and "category_ok" in export_text
    everything = {"cli": out, "ledger": ledger_rows, "prefect": prefect_text,
                  "reports": reports, "exports": export_text}  # fmt: skip
    prefect_db = _prefect_database()
    assert schema.encode() in prefect_db  # the runs' parameters are in it
    for password in (DEST_PW, LEDGER_PW):
        for where, text in everything.items():
            assert password not in text, f"{password} leaked into {where}"
        assert password.encode() not in prefect_db, f"{password} is in Prefect's database"


@pytest.mark.prefect
def test_rollback_of_a_run_whose_url_had_a_literal_password_asks_for_the_job(
    prefect_api: str, pg_schema_url: str, tmp_path: Path, write_csv: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 4)])
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: posts.csv}\n"
        f"destination: {{type: sql, url: '{with_password(pg_schema_url, DEST_PW)}'}}\n"
        "validation: {preset: blog, allowed_categories: [Data]}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    full(job, return_state=True)
    run_id = open_ledger(job.ledger).runs()[0]["run_id"]
    ledger = ["--ledger", f"sqlite:///{tmp_path / 'ledger.db'}"]
    assert main(["rollback", run_id, *ledger]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error: "))  # one line, no traceback
    assert "a database URL with a password, which the ledger does not keep" in line
    assert "Fix: pass --job JOB.yaml" in line and DEST_PW not in err
    assert main(["rollback", run_id, *ledger, "--job", str(tmp_path / "job.yaml")]) == 0
    assert "Items: 3 rolled back" in capsys.readouterr().out


def test_a_ledger_url_from_the_environment_is_recorded_as_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batchgate.cli import _ledger_config

    monkeypatch.setenv("BATCHGATE_LEDGER_URL", f"postgresql://u:{LEDGER_PW}@h/ledger")
    config = _ledger_config(None)
    assert isinstance(config.url, SecretUrl)
    assert config.url.get_secret_value().endswith(f"{LEDGER_PW}@h/ledger")
    assert config.model_dump(mode="json")["url"] == "${BATCHGATE_LEDGER_URL}"
    literal = _ledger_config(f"postgresql://u:{LEDGER_PW}@h/ledger")
    assert literal.model_dump(mode="json")["url"] == "postgresql://u:***@h/ledger"
