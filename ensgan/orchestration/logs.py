"""Prefect's run loggers without tracebacks for the errors a user causes.

A flow or task that fails on bad params, unreadable data or an unwritable store is logged by
Prefect with the whole traceback (in the terminal and the UI), above the one line the CLI
prints. The traceback says nothing the line does not, so it is dropped for those errors only,
and for a stop (StopRequested: SIGTERM); a bug or a passing fault keeps it.
"""

from __future__ import annotations

import logging

from ensgan.errors import StopRequested, is_user_error

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


class UserErrorTracebacks(logging.Filter):
    """Strip the traceback from a record whose exception is a user error; keep the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (is_user_error(exc) or isinstance(exc, StopRequested)):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_tracebacks() -> None:
    """Install the filter on Prefect's flow- and task-run loggers (once per process)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorTracebacks) for f in logger.filters):
            logger.addFilter(UserErrorTracebacks())
