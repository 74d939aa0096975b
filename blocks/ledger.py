"""The ledger's database connection: prefect-sqlalchemy's SqlAlchemyConnector."""

from __future__ import annotations

from pathlib import Path

from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from batchgate.config import LedgerConfig
from batchgate.errors import ConfigError
from batchgate.ledger import Ledger


def ledger_connector(config: LedgerConfig) -> SqlAlchemyConnector:
    """A connector for ledger.url when set, else for the SQLite file at ledger.path."""
    if config.url:
        try:
            url = make_url(config.url)
        except ArgumentError:
            raise ConfigError(
                f"ledger.url {config.url!r} is not a SQLAlchemy URL. Fix: use e.g. "
                "postgresql+psycopg2://user@host:5432/db or sqlite:///path/ledger.db."
            ) from None
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg2")
        return SqlAlchemyConnector(connection_info=url.render_as_string(hide_password=False))
    path = Path(config.path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqlAlchemyConnector(
        connection_info=ConnectionComponents(driver=SyncDriver.SQLITE_PYSQLITE, database=str(path))
    )


def open_ledger(config: LedgerConfig) -> Ledger:
    """A ready-to-use ledger: connected, with its schema created or upgraded."""
    ledger = Ledger(ledger_connector(config).get_engine(pool_pre_ping=True))
    ledger.ensure_schema()
    return ledger
