"""prefect.yaml's `nightly` deployment must run on params.yaml's schedule.

prefect.yaml is Prefect's file and cannot read params.yaml, so the two hold the same cron and
time zone; `ensgan validate` checks that they agree, and says what to change when they do
not. Light (yaml only): the CLI imports it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ensgan.config import MAX_PARAMS_BYTES, ScheduleConfig
from ensgan.errors import ConfigError
from ensgan.io.bounded_yaml import describe, load_yaml
from ensgan.io.reading import read_bounded

DEPLOYMENT = "nightly"


def check_prefect_yaml(path: Path, schedule: ScheduleConfig) -> str | None:
    """None when `path` is absent or its nightly deployment runs on `schedule`; else raise."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        doc = (
            load_yaml(read_bounded(path, MAX_PARAMS_BYTES, "prefect file", ConfigError).decode())
            or {}
        )
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {describe(exc)}") from None
    deployments = doc.get("deployments") if isinstance(doc, dict) else None
    found = [d for d in deployments or [] if isinstance(d, dict) and d.get("name") == DEPLOYMENT]
    if not found:
        raise ConfigError(f"{path} has no `{DEPLOYMENT}` deployment")
    schedules = found[0].get("schedules") or []
    want = {"cron": schedule.cron, "timezone": schedule.timezone}
    got = [{k: s.get(k) for k in want} for s in schedules if isinstance(s, dict)]
    if got != [want]:
        raise ConfigError(
            f"{path}: the `{DEPLOYMENT}` deployment's schedules are {got}, params.yaml's "
            f'schedule is {want}: set prefect.yaml\'s schedules to `- cron: "{schedule.cron}"` '
            f"with `timezone: {schedule.timezone}` (prefect.yaml cannot read params.yaml)"
        )
    return f"{path}: `{DEPLOYMENT}` runs on params.yaml's schedule"
