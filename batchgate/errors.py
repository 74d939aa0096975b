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


# --- item writes ------------------------------------------------------------------------------
# Three ways a write fails (as in the Singer SDK and dlt): fatal stops the run, retryable is tried
# again, permanent sends the item to the dead-letter queue. `error_type` is the DLQ's category.

ErrorType = str  # timeout | rate-limit | api-error | validation | auth | unknown


class WriteError(Exception):
    """A destination refused or failed one write; the message never holds a credential."""

    error_type: ErrorType = "unknown"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: ErrorType | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        if error_type:
            self.error_type = error_type


class RetryableError(WriteError):
    """Worth another attempt: 429, 5xx, timeouts, dropped connections."""

    error_type = "api-error"


class PermanentError(WriteError):
    """This item will fail the same way again (400 validation, 404, 409): to the DLQ."""

    error_type = "validation"


class AlreadyExists(PermanentError):
    """The destination already holds an item with this item's unique key (a slug). When an
    earlier attempt at this create went unanswered, that item is most likely this write's own,
    landed late: the writer looks it up again rather than failing the item."""


class ChangedSinceReview(WriteError):
    """The source item changed after its plan was frozen and reviewed: held, never written."""

    error_type = "changed-since-review"


class FatalError(WriteError, BatchgateError):
    """Nothing will succeed until a person acts (401, 403, missing collection): stop the run."""

    error_type = "auth"
