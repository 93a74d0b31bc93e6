"""prefect.yaml's `nightly` deployment must run on params.yaml's schedule.

prefect.yaml is Prefect's file and cannot read params.yaml, so the two hold the same cron and
time zone; `ensgan validate` checks that they agree, and says what to change when they do
not. Light (yaml only): the CLI imports it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ensgan.config import ScheduleConfig
from ensgan.errors import ConfigError

DEPLOYMENT = "nightly"


def check_prefect_yaml(path: Path, schedule: ScheduleConfig) -> str | None:
    """None when `path` is absent or its nightly deployment runs on `schedule`; else raise."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
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
