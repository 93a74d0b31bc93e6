"""Cron strings and time zones judged by the rules `ensgan serve` meets: Prefect's.

`serve` hands the schedule to Prefect's CronSchedule, which reads it with the croniter that
Prefect vendors and refuses random and hashed fields; a looser parser in validation would let
`ensgan validate` pass a schedule that `serve` then refuses. Importing Prefect takes seconds,
so its vendored croniter is loaded from its file alone (it imports only dateutil and pytz);
should a Prefect release move it, CronSchedule itself judges, slower but the same.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from zoneinfo import available_timezones

_VENDORED = ("_vendor", "croniter", "croniter.py")
_MODULE = "ensgan._prefect_croniter"


@cache
def _vendored_croniter() -> ModuleType | None:
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*_VENDORED)
    file_spec = importlib.util.spec_from_file_location(_MODULE, path)
    if not path.is_file() or file_spec is None or file_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_MODULE] = module
    file_spec.loader.exec_module(module)
    return module


def cron_problem(expr: str) -> str | None:
    """Why Prefect's scheduler would refuse `expr`, or None when it reads it."""
    module = _vendored_croniter()
    if module is None:
        from prefect.client.schemas.schedules import CronSchedule
        from pydantic import ValidationError

        try:
            CronSchedule(cron=expr)
        except ValidationError as err:
            return err.errors()[0]["msg"]
        return None
    if not module.croniter.is_valid(expr):
        return "not a cron expression Prefect's scheduler reads (minute hour day month weekday)"
    if any(field.casefold() in ("r", "h") for field in expr.split()):
        return "random (R) and hashed (H) fields are not supported by Prefect"
    try:  # the scheduler asks for the next date: one that never comes is an error there
        module.croniter(expr, datetime.now(UTC)).get_next(datetime)
    except module.CroniterBadDateError:
        return "it never fires (no such date): check the day of the month and the month"
    return None


@cache
def prefect_timezones() -> frozenset[str]:
    """The zone names Prefect's schedules accept: the IANA database's."""
    return frozenset(available_timezones())
