"""The ledger's database connection: prefect-sqlalchemy's SqlAlchemyConnector."""

from __future__ import annotations

from pathlib import Path

from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from batchgate.config import LedgerConfig
from batchgate.errors import ConfigError
from batchgate.ledger import Ledger
from batchgate.secrets import SecretUrl


def parse_url(url: SecretUrl, field: str) -> URL:
    """The SQLAlchemy URL of a job setting; a mistake is a ConfigError showing it without password."""
    try:
        parsed = make_url(url.get_secret_value())
    except ArgumentError:
        raise ConfigError(
            f"{field} {str(url)!r} is not a SQLAlchemy URL. Fix: use e.g. "
            "postgresql+psycopg2://user@host:5432/db or sqlite:///path/file.db."
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def connector_for(url: URL) -> SqlAlchemyConnector:
    """A connector whose password stays a SecretStr until prefect-sqlalchemy builds the engine."""
    query = dict(url.query)
    if url.password is None or any(not isinstance(v, str) for v in query.values()):
        return SqlAlchemyConnector(connection_info=url.render_as_string(hide_password=False))
    return SqlAlchemyConnector(connection_info=ConnectionComponents(
        driver=url.drivername, username=url.username, password=url.password, host=url.host,
        port=url.port, database=url.database, query=query or None,
    ))  # fmt: skip


def ledger_connector(config: LedgerConfig) -> SqlAlchemyConnector:
    """A connector for ledger.url when set, else for the SQLite file at ledger.path."""
    if config.url:
        return connector_for(parse_url(config.url, "ledger.url"))
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
