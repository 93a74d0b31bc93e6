"""The errors a user can cause and fix, in one light module (no torch, sklearn or Prefect).

The CLI turns each into one line on stderr and exit status 2; the Prefect flow never retries
them, since trying again would fail the same way. Anything else is a bug or a passing fault
(a dropped connection, a full disk) and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the key."""


class DataError(ValueError):
    """A dataset that cannot be read; the message names the file."""


class StorageError(RuntimeError):
    """A storage operation failed; the message says what to fix and never holds credentials."""


class BatchError(RuntimeError):
    """A batch is invalid, incomplete, tampered with, or would overwrite another one."""


class DivergedError(RuntimeError):
    """A member's loss became non-finite or passed `train.max_loss`."""


class OutputError(RuntimeError):
    """A member's output is unusable (non-finite values, or collapsed to one image): retrain
    it rather than publish what it makes."""


class StackerError(ValueError):
    """The meta-learner cannot be fitted or loaded as asked; the message says why."""


class BusyError(RuntimeError):
    """Another ensgan run is writing to the same project directory."""


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
    BusyError,
    CardError,
    FileNotFoundError,
)
