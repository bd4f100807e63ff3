"""Exceptions whose message is what the user reads: each names the file, column or field."""

from __future__ import annotations


class TracerError(Exception):
    """Base of every error tracer reports to a user (CLI exit code 2, HTTP 4xx).

    `status` is the HTTP answer, by the team's convention: 400 a malformed request (a bad
    parameter, an unparseable body, a forged pagination token), 404 nothing of that name,
    409 a conflict with what is stored, 422 a well-formed but invalid manifest or dataset.
    """

    status = 400

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or [message]


class ManifestError(TracerError):
    """The run manifest is invalid; `errors` lists every field at fault."""

    status = 422  # the request was understood; what it says cannot be accepted


class IngestError(TracerError):
    """A dataset could not be read or loaded; nothing of it was stored."""

    status = 422

    def __init__(self, dataset: str, path: str, message: str, column: str | None = None) -> None:
        where = f"dataset {dataset!r} ({path})"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.dataset = dataset
        self.path = path
        self.column = column


class NotFoundError(TracerError):
    """A run, client or pipeline asked for does not exist."""

    status = 404


class ConflictError(TracerError):
    """The request contradicts what is stored (e.g. a run id reused with another pipeline)."""

    status = 409


def summary(exc: BaseException) -> str:
    """An exception as one sentence for a log line or a health report: a TracerError's
    message (what the user reads), else the first line of the driver's, never a repr."""
    if isinstance(exc, TracerError):
        return exc.message
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
