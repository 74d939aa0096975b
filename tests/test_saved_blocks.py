"""A job can name connectors saved as Prefect blocks instead of writing them inline."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgate.config import LedgerConfig, SqlDestinationConfig, load_job
from blocks.file_source import FileSource
from blocks.sql_destination import SqlDestination
from tests.conftest import copy_example

pytestmark = pytest.mark.prefect


def test_a_job_names_saved_blocks_for_its_source_and_destination(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.dry_run import dry_run
    from flows.full import full

    copy_example(tmp_path / "blog")
    FileSource(path=str(tmp_path / "blog" / "posts.csv"), filter={"status": "Published"}).save(
        "example-posts", overwrite=True
    )
    cms = SqlDestinationConfig(type="sql", url=f"sqlite:///{tmp_path / 'saved-cms.db'}")
    SqlDestination.from_config(cms).save("example-cms", overwrite=True)
    job_file = tmp_path / "saved.yaml"
    job_file.write_text(
        "source: {type: block, name: batchgate-file-source/example-posts}\n"
        "destination: {type: block, name: batchgate-sql-destination/example-cms}\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
    )
    job = load_job(job_file).model_copy(
        update={"ledger": LedgerConfig(path=str(tmp_path / "ledger.db"))}
    )
    checked = dry_run(job)
    assert (checked["ready"], checked["warnings"], checked["blocked"]) == (45, 4, 3)
    written = full(job)
    assert written["succeeded"] == 49
    assert len(SqlDestination.load("example-cms").rows()) == 49


def test_an_unknown_or_wrong_block_is_a_clear_error(prefect_api: str, tmp_path: Path) -> None:
    from flows.dry_run import dry_run

    FileSource(path=str(tmp_path / "posts.csv")).save("some-file", overwrite=True)
    for destination, message in (
        ("batchgate-sql-destination/nope", "no such block is saved on the Prefect API"),
        ("batchgate-file-source/some-file", "is a FileSource, not a destination"),
    ):
        job_file = tmp_path / "job.yaml"
        job_file.write_text(
            f"source: {{type: file, path: {tmp_path / 'posts.csv'}}}\n"
            f"destination: {{type: block, name: {destination}}}\n"
            "validation: {preset: none}\n"
            f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
        )
        (tmp_path / "posts.csv").write_text("id,title\n1,a\n")
        state = dry_run(load_job(job_file), return_state=True)
        assert state.is_failed() and message in state.message
