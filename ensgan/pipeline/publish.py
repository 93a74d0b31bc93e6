"""Stage `publish`: upload a generated batch (manifest last) and write a receipt of where."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ensgan.config import Params
from ensgan.io.batches import publish_batch
from ensgan.io.files import write_json
from ensgan.io.storage import open_store
from ensgan.layout import Layout


def run(params: Params, layout: Layout, run_id: str | None = None) -> dict:
    """Without a run_id, the batch the last `generate` wrote (outputs/generated.json)."""
    if run_id is None:
        if not layout.generated.exists():
            raise FileNotFoundError(f"no {layout.generated}: run `ensgan generate` first")
        run_id = json.loads(layout.generated.read_text())["run_id"]
    batch_dir = layout.batches / run_id
    if not batch_dir.exists():
        raise FileNotFoundError(f"no batch {run_id} under {layout.batches}: run generate first")
    store = open_store(params.storage, layout.root)
    result = {"run_id": run_id, **publish_batch(store, batch_dir)}
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(layout.published, result)
    return result
