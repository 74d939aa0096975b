"""The project's exception hierarchy.

User errors (a bad job file, an unreadable source) derive from `BatchgateError`; the CLI and the
flows print their message as one paragraph, never a traceback. Everything else is a bug.
"""

from __future__ import annotations


class BatchgateError(Exception):
    """An error the user can fix; its message says what and how."""


class ConfigError(BatchgateError):
    """The job file or a setting is wrong."""


class SourceError(BatchgateError):
    """The source cannot be read as a whole (missing file, bad encoding, missing columns)."""


class LedgerError(BatchgateError):
    """The ledger database cannot be reached or used."""
