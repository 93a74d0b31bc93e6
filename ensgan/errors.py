"""The errors a user can cause and fix, in one light module (no torch, sklearn or Prefect).

The CLI turns each into one line on stderr and exit status 2; the Prefect flow never retries
them, since trying again would fail the same way. Anything else is a bug or a passing fault
(a dropped connection, a full disk) and keeps its traceback.
"""

from __future__ import annotations

import errno
import reprlib
from urllib.parse import urlsplit, urlunsplit


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the key."""


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file."""


class StorageError(RuntimeError):
    """A storage operation failed; the message says what to fix and never holds credentials."""


class RecordError(StorageError):
    """A record in the store (a gate verdict, latest.json, a history row) that is too big, not
    JSON, or not what it should be; the message names its key and what to do."""


class BatchError(RuntimeError):
    """A batch is invalid, incomplete, tampered with, or would overwrite another one."""


class DivergedError(RuntimeError):
    """A member's loss became non-finite or passed `train.max_loss`."""


class OutputError(RuntimeError):
    """A member's output is unusable (non-finite values, or collapsed to one image): retrain
    it rather than publish what it makes."""


class StackerError(ValueError):
    """The meta-learner cannot be fitted or loaded as asked; the message says why."""


class TooFewMembersError(RuntimeError):
    """Fewer members finished than `train.min_members`; the message names who failed."""


class BusyError(RuntimeError):
    """Another ensgan run is writing to the same project directory."""


class StopRequested(BaseException):
    """The run was asked to stop (SIGTERM, its parent gone, its Prefect server gone): each
    member in training saved a checkpoint at the step it reached, and the next run resumes it.
    A BaseException, as KeyboardInterrupt is: no `except Exception` takes it for a member's
    failure (which would be recorded as left out, or retried)."""


class CardError(ValueError):
    """A card.json that is missing a field or holds a wrong type (the output is not ensgan's,
    or was written by an incompatible version), or that does not describe what is on disk."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    StorageError,
    BatchError,
    DivergedError,
    OutputError,
    StackerError,
    TooFewMembersError,
    BusyError,
    CardError,
    FileNotFoundError,
)


# Operating-system errors on a path the user named (a params file that is a folder, a store
# that cannot be written, a file where a folder should be): the user fixes these, so they are
# one line too. A full disk or a dropped connection is not here: those may pass.
_USER_ERRNOS = {
    errno.EACCES: "check its permissions, or name a place ensgan may use",
    errno.EPERM: "check its permissions, or name a place ensgan may use",
    errno.EROFS: "it is on a read-only file system: name a writable place",
    errno.EISDIR: "it is a folder where a file was expected",
    errno.ENOTDIR: "part of the path is a file where a folder was expected",
    errno.ENOENT: "check the path",
    errno.EEXIST: "something is already there: move it away or name another place",
    errno.ENOTEMPTY: "the folder is not empty: move it away or name another place",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "the path has a symbolic link loop",
}


def is_user_error(exc: BaseException) -> bool:
    """One of USER_ERRORS, or an OSError on a named path that the user can fix."""
    if isinstance(exc, USER_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.filename is not None and exc.errno in _USER_ERRNOS


def user_message(exc: BaseException) -> str:
    """The one line for a user error: ours say what to do; an OSError names the path."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.errno in _USER_ERRNOS:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{exc.strerror}: {where} ({_USER_ERRNOS[exc.errno]})"
    return str(exc)


def short(value: object, limit: int = 80) -> str:
    """repr(value) for a message, cut to `limit` characters without ever formatting it whole
    (a value read from a hostile file may be huge)."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 4
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact_url(url: str) -> str:
    """`url` with any user:password@ left out, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))
