"""One identity per destination, whatever the spelling of its URL.

A SQL destination's key names the table the way the database does, not the way the job file
wrote the URL, so every spelling of one table shares one hold, one destination map and one
rollback history:

- SQLite: `sql:sqlite:<real path>#<table>`. The real path is `os.path.realpath` of the absolute
  path (relative paths against the current directory, where SQLite opens them), so a relative
  path, an absolute one, a symlinked folder and `sqlite+pysqlite://` agree. It is the same before
  the file exists (a dry-run before the first write) and after: the folders exist either way
  (SQLite creates the file, never its folder) and a missing file keeps its name. The inode is
  left out on purpose: it exists only once the file does. Two names of one file that SQLite
  itself keeps apart (hard links, bind mounts: it names the -wal and journal files by path, so
  using both corrupts the database) stay apart. Table names are case-insensitive in SQLite, so
  the table is lowercased. No host name (a container's changes when it restarts): two hosts
  sharing a PostgreSQL ledger with SQLite files at one path would share one key.
- PostgreSQL: `sql:postgresql:<system identifier>/<database>/<schema>#<table>`, what the server
  says it is: `pg_control_system()` (PUBLIC may execute it by default), the current database,
  and the schema the table is in (the one CREATE TABLE would use before it exists). A physical
  copy of a cluster promoted to a server of its own keeps the identifier it was copied with. A
  server that refuses the system identifier is named by its host and port instead, loopback
  spellings (localhost, 127.0.0.1, ::1, a Unix socket) as `localhost`, the default port explicit:
  `sql:postgresql:localhost:5432/<database>/<schema>#<table>`.
- Webflow keeps `webflow:<collection id>` (blocks/webflow.py): an id, no URL.

Keys carry no user or password and fit the ledger's 300-character key columns (a longer one keeps
its head and tail around a hash). Keys written by earlier versions (`sql:<URL as written>#<table>`)
are matched by `old_spellings`, for `Ledger.adopt_key`: a SQLite one when its path, resolved as
above (a relative one against the current directory, as the earlier version's key assumed), is
the file; a PostgreSQL one when it differs from this URL only in the driver name and the spelling
of the host and port (another user or search_path may mean another schema: left alone).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

KEY_LENGTH = 300  # the ledger's destination_key columns (String(300))
PG_PORT = 5432
MEMORY = ":memory:"
_SPELLINGS: dict[str, Callable[[str], bool]] = {}  # key -> does an old-style key name it?
Place = tuple[str, int, str, str, tuple[tuple[str, str], ...]]  # host, port, db, user, settings


def sql_key(engine: Engine, table: str) -> str:
    """The key of `table` behind `engine` (connects once to PostgreSQL; SQLite is path-based).
    Remembers how this destination's old-style keys looked, for `old_spellings`."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        key = sqlite_key(url, table)
        _SPELLINGS[key] = lambda old: _old_sqlite_key(old) == key
    else:
        key = postgresql_key(engine, table)
        place = _pg_place(url)
        _SPELLINGS[key] = lambda old: _old_pg_place(old) == (place, table)
    return key


def old_spellings(key: str) -> Callable[[str], bool] | None:
    """Whether a key an earlier version wrote (`sql:<url>#<table>`) names the destination `key`,
    for a key computed in this process; None when there is nothing to match."""
    return _SPELLINGS.get(key)


def is_old_style(key: str) -> bool:
    """A key written before identities: the URL as written, `sql:<scheme>://...#<table>`."""
    return key.startswith("sql:") and "://" in key


# --- SQLite ------------------------------------------------------------------------------------


def sqlite_key(url: URL, table: str) -> str:
    return fit(f"sql:sqlite:{sqlite_path(url)}#{table.lower().removeprefix('main.')}")


def sqlite_path(url: URL) -> str:
    """The file SQLite opens for this URL, as a real absolute path (`:memory:` for none)."""
    database = url.database or ""
    if str(url.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        parts = urlsplit(database)
        if "mode=memory" in parts.query or not parts.path:
            return MEMORY
        database = unquote(parts.path)
    if database in ("", MEMORY):
        return MEMORY
    return os.path.realpath(os.path.abspath(database))


def _old_sqlite_key(old: str) -> str | None:
    parsed = _parse_old(old)
    if parsed is None or parsed[0].get_backend_name() != "sqlite":
        return None
    return sqlite_key(*parsed)


# --- PostgreSQL --------------------------------------------------------------------------------

SYSTEM_ID = text("SELECT system_identifier FROM pg_control_system()")
_WHERE = text(
    "SELECT current_database(), coalesce((SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(CASE WHEN :schema = '' THEN "
    "quote_ident(:table) ELSE quote_ident(:schema) || '.' || quote_ident(:table) END)), "
    "nullif(:schema, ''), current_schema(), '-')"
)


def postgresql_key(engine: Engine, table: str) -> str:
    """Connects once; a connection failure is raised as SQLAlchemy's error."""
    with engine.connect() as conn:
        try:
            server = str(conn.execute(SYSTEM_ID).scalar_one())
        except OperationalError:
            raise
        except DBAPIError:  # refused (a managed server), or not PostgreSQL's own function
            conn.rollback()
            host, port = _pg_place(engine.url)[:2]
            server = f"{host}:{port}"
        named, _, name = table.rpartition(".")  # schema.table: that schema, whatever the path
        database, schema = conn.execute(_WHERE, {"table": name, "schema": named}).one()
    return fit(f"sql:postgresql:{server}/{database}/{schema}#{name}")


def normal_host(host: str | None) -> str:
    """A host as one spelling: loopback names and addresses, and Unix sockets, are `localhost`."""
    host = (host or "").strip().strip("[]").lower().rstrip(".")
    if not host or host.startswith("/") or host == "localhost" or host.endswith(".localhost"):
        return "localhost"
    try:
        return "localhost" if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host


def _pg_place(url: URL) -> Place:
    """What an old-style PostgreSQL key says apart from its spelling: host, port (the default made
    explicit), database, user and the other connection settings (a search_path, say)."""
    query = {k: str(v) for k, v in url.query.items() if k not in ("host", "port")}
    host = url.host or str(url.query.get("host") or "")
    port = url.port or int(str(url.query.get("port") or PG_PORT))
    return (normal_host(host), port, url.database or "", url.username or "",
            tuple(sorted(query.items())))  # fmt: skip


def _old_pg_place(old: str) -> tuple[Place, str] | None:
    parsed = _parse_old(old)
    if parsed is None or parsed[0].get_backend_name() != "postgresql":
        return None
    try:
        return _pg_place(parsed[0]), parsed[1]
    except ValueError:  # a port that is not a number
        return None


# --- shared ------------------------------------------------------------------------------------


def _parse_old(old: str) -> tuple[URL, str] | None:
    """The URL and table of an old-style key, or None when it is not one."""
    if not is_old_style(old) or "#" not in old:
        return None
    url_text, _, table = old[len("sql:") :].rpartition("#")
    try:
        return make_url(url_text), table
    except (ArgumentError, ValueError):
        return None


def fit(key: str, limit: int = KEY_LENGTH) -> str:
    """The key, or one as long as `limit` that keeps its head and tail around a hash of it."""
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    side = (limit - len(digest) - 2) // 2
    return f"{key[:side]}~{digest}~{key[-side:]}"
