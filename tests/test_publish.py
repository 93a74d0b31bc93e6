"""Stage `publish` against a store whose records someone else wrote: the upload is done before
the gate reads them, so a bad one must never fail the stage (nor every later night)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ensgan.config import load_params
from ensgan.io.storage import LocalStore
from ensgan.layout import Layout
from ensgan.pipeline import publish
from tests.helpers import make_batch, write_tiny_project


def _night(root: Path, run_id: str, seed: int) -> dict:
    layout = Layout(root)
    make_batch(layout.batches, run_id, seed=seed)
    return publish.run(load_params(root / "params.yaml"), layout, run_id)


def test_bad_records_in_the_store_never_fail_a_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_tiny_project(tmp_path / "project")
    first = _night(root, "night-1", seed=1)
    assert first["gate"]["decision"] == "promoted"
    store = root / "store"
    (store / "latest.json").write_text('{"run_id": "night-1", "metrics": "all good"}')
    (store / "history" / "forged.json").write_text('{"at": "never", "members": [1, 2]}')
    (store / "gate" / "night-2.json").write_text("[" * 100_000)

    with caplog.at_level(logging.WARNING):
        second = _night(root, "night-2", seed=2)
    assert second["status"] == "published" and second["gate"]["decision"] == "candidate"
    assert "latest.json is not a valid champion record" in second["gate"]["reasons"][0]
    assert "`ensgan batches promote night-2`" in second["gate"]["reasons"][1]
    receipt = json.loads((root / "outputs" / "published.json").read_text())
    assert receipt["gate"] == second["gate"]  # the receipt is written
    assert (root / "reports" / "history.svg").is_file()  # drawn from the rows that read
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "forged.json is not a valid history row" in said
    assert "gate/night-2.json is not a valid gate verdict" in said  # set aside, judged afresh
    aside = [p.name for p in (store / "gate").iterdir() if ".unreadable-" in p.name]
    assert len(aside) == 1 and (store / "gate" / aside[0]).read_text() == "[" * 100_000

    from ensgan.io.promotion import promote

    promote(LocalStore(store), "night-2")  # what the reason says to do
    third = _night(root, "night-3", seed=3)
    assert third["status"] == "published" and third["gate"]["champion"] == "night-2"
