"""prefect.yaml, read by `ensgan validate`, gets the same bounded reading as params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ensgan.config import ScheduleConfig
from ensgan.errors import ConfigError
from ensgan.orchestration.deployment import check_prefect_yaml

NIGHTLY = 'deployments:\n  - name: nightly\n    schedules:\n      - cron: "0 2 * * *"\n'


def test_the_schedule_check_reads_a_plain_prefect_yaml(tmp_path: Path) -> None:
    (tmp_path / "prefect.yaml").write_text(NIGHTLY + "        timezone: UTC\n")
    assert check_prefect_yaml(tmp_path / "prefect.yaml", ScheduleConfig()) is not None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (NIGHTLY.replace("deployments:", "deployments: []\ndeployments:"), "duplicate key"),
        ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
         + "".join(f"b{i}: &b{i} [{', '.join(['*' + ('a' if i == 0 else f'b{i - 1}')] * 10)}]\n"
                   for i in range(6)),
         "expands to more than"),
    ],
)  # fmt: skip
def test_a_hostile_prefect_yaml_is_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "prefect.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        check_prefect_yaml(tmp_path / "prefect.yaml", ScheduleConfig())


@pytest.mark.timeout(60)
def test_a_fifo_as_prefect_yaml_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "prefect.yaml")
    with pytest.raises(ConfigError, match="FIFO"):
        check_prefect_yaml(tmp_path / "prefect.yaml", ScheduleConfig())
