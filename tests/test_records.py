"""The store's records, read as untrusted: each bad one is an error naming its key, the field
and what to do, and the readers that list many (ls, the history) name or skip it and go on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.config import GateConfig
from ensgan.errors import BatchError, RecordError
from ensgan.io import records
from ensgan.io.batches import BATCH_JSON, list_batches, publish_batch, verify_batch
from ensgan.io.promotion import gate, history, statuses
from ensgan.io.records import Champion, HistoryRow, Verdict, parse_record
from ensgan.io.storage import LocalStore
from tests.helpers import make_batch

runner = CliRunner()
GOOD = {"fd": 100.0, "recall": 0.95, "coverage": 0.80, "class_kl": 0.02}
AT = "2026-03-14T02:00:00+00:00"
DEEP = "[" * 100_000 + "]" * 100_000  # past any parser's recursion


def _night(store: LocalStore, tmp: Path, run_id: str, seed: int, metrics: dict = GOOD) -> dict:
    batch, _ = make_batch(tmp / "out", run_id, seed=seed)
    prefix = publish_batch(store, batch)["prefix"]
    return gate(store, run_id, prefix, metrics, {"a": {"fd": 120.0}}, GateConfig())


@pytest.mark.parametrize(
    ("kind", "text", "says"),
    [
        (Verdict, {"run_id": "r", "prefix": "batches/2026-03-14/r/", "at": AT}, "decision: Field"),
        (HistoryRow, {"run_id": "r", "decision": "promoted", "at": "soon"}, "at: Input should"),
        (HistoryRow, {"run_id": "r", "decision": "promoted", "at": AT, "members": []}, "members"),
        (Champion, {"run_id": "r", "prefix": "batches/2026-03-14/r/", "how": "gate", "at": AT,
                    "metrics": "excellent"}, "metrics: Input should be an object"),
        (Champion, {"run_id": "r", "prefix": "batches/2026-03-14/r/", "how": "gate", "at": AT,
                    "metrics": {"fd": "good"}}, "metrics: 'fd' must be a number"),
        (Verdict, {"run_id": "r", "prefix": "batches/2026-03-14/r/", "decision": "promoted",
                   "at": AT, "metrics": {"feature_space": 1.0}}, "'feature_space' must be a name"),
        (Champion, {"run_id": "r;id", "prefix": "../../x/", "how": "gate", "at": AT},
         "run_id: not a run_id, got 'r;id'; prefix: not a batch's key prefix"),
        (Verdict, DEEP, "recursion limit"),
        (Verdict, "[1, 2]", "Input should be an object"),
        (Verdict, b"\xff\xfe", "Invalid JSON"),
    ],
)  # fmt: skip
def test_a_bad_record_names_its_key_the_field_and_the_fix(
    kind: type[records.Record], text: object, says: str
) -> None:
    if not isinstance(text, bytes):
        text = (text if isinstance(text, str) else json.dumps(text)).encode()
    with pytest.raises(RecordError) as err:
        parse_record(kind, text, "s3://bucket/gate/r.json")
    message = str(err.value)
    assert message.startswith(f"s3://bucket/gate/r.json is not a valid {kind.label} (")
    assert says in message and message.endswith(kind.fix)
    assert len(message) < 600  # one line, however big the input


def test_an_enormous_record_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"run_id": "r", "padding": "x" * records.MIB}))
    with pytest.raises(RecordError, match=r"latest.json is \d+ bytes, more than a champion"):
        records.read_record(Champion, path)


def test_ls_names_each_bad_record_and_lists_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile records beside good batches: a nested batch.json, an enormous one, a verdict
    without its decision, a champion whose metrics are a string. `ls` lists every batch,
    each line naming what is wrong and where."""
    store = LocalStore(tmp_path / "store")
    for i, run_id in enumerate(["good", "nested", "huge", "no-decision"]):
        _night(store, tmp_path, run_id, seed=i, metrics={**GOOD, "fd": 100.0 - i})
    root = tmp_path / "store"
    nested = "[" * 4000 + "]" * 4000  # past the parser's depth bound, within the size bound
    (root / list_batches(store)[2].prefix / BATCH_JSON).write_text(nested)
    monkeypatch.setattr(records.BatchRecord, "max_bytes", 10_000)  # a tiny store's bound
    (root / list_batches(store)[1].prefix / BATCH_JSON).write_text(" " * 10_001)
    record = json.loads((root / "gate" / "no-decision.json").read_text())
    del record["decision"]
    (root / "gate" / "no-decision.json").write_text(json.dumps(record))
    champion = json.loads((root / "latest.json").read_text())
    (root / "latest.json").write_text(json.dumps({**champion, "metrics": "excellent"}))

    res = runner.invoke(app, ["batches", "ls", "--store", str(root)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("warning: no batch is latest: ")
    assert f"{root}/latest.json is not a valid champion record (metrics:" in lines[0]
    by_run = {line.split()[1]: line for line in lines[1:]}
    assert set(by_run) == {"good", "nested", "huge", "no-decision"}
    assert "good  7 images" in by_run["good"] and by_run["good"].endswith("promoted earlier")
    assert "batch.json is not a valid batch.json (Invalid JSON: recursion" in by_run["nested"]
    assert "is 10001 bytes, more than a batch.json may be (10000)" in by_run["huge"]
    assert "unreadable gate verdict" in by_run["no-decision"]
    assert (
        "gate/no-decision.json is not a valid gate verdict (decision: Field required"
        in (by_run["no-decision"])
    )


def test_the_history_leaves_a_bad_row_out_and_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "store")
    _night(store, tmp_path, "night-1", seed=1)
    _night(store, tmp_path, "night-2", seed=2)
    rows = sorted((tmp_path / "store" / "history").iterdir())
    row = json.loads(rows[0].read_text())
    rows[0].write_text(json.dumps({**row, "at": "last Tuesday", "members": ["a", "b"]}))
    (tmp_path / "store" / "history" / "nested.json").write_text(DEEP)
    with caplog.at_level(logging.WARNING, "ensgan.io.promotion"):
        frame = history(store)
    assert list(frame["run_id"].unique()) == ["night-2"]
    assert str(frame["at"].dtype).startswith("datetime64")
    named = [r.getMessage() for r in caplog.records]
    assert any(f"{rows[0].name} is not a valid history row (at:" in m for m in named)
    assert any("nested.json is not a valid history row (Invalid JSON" in m for m in named)


def test_a_batch_json_that_lies_about_its_types_is_named(tmp_path: Path) -> None:
    """Written with matching checksums, as an attacker would: the types still give it away."""
    store = LocalStore(tmp_path / "store")
    _night(store, tmp_path, "night-1", seed=1)
    batch, _ = make_batch(tmp_path / "local", "run-9", seed=9)
    meta = json.loads((batch / BATCH_JSON).read_text())
    meta["n_images"] = "7"
    meta["shards"][0]["n_images"] = True
    (batch / BATCH_JSON).write_text(json.dumps(meta))
    with pytest.raises(BatchError) as err:
        verify_batch(batch)
    assert "n_images: Input should be a valid integer, got '7'" in str(err.value)
    assert "shards.0.n_images: Input should be a valid integer, got True" in str(err.value)
    assert statuses(store) == {"night-1": "latest"}  # the store's batches are unaffected
