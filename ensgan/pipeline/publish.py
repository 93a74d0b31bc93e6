"""Stage `publish`: upload a generated batch (manifest last), pass it through the promotion
gate against the store's champion, and write a receipt of where it went and what the gate said.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ensgan.config import Params
from ensgan.io.batches import BATCH_JSON, publish_batch
from ensgan.io.files import atomic_write, write_json
from ensgan.io.promotion import figures, gate, history
from ensgan.io.storage import open_store
from ensgan.layout import Layout
from ensgan.pipeline.freshness import inputs_sha256, up_to_date

log = logging.getLogger(__name__)

HISTORY_CHART = "history.svg"  # under reports/: the report's <img> names it


def batch_metrics(layout: Layout, run_id: str) -> tuple[dict | None, dict[str, dict]]:
    """The evaluation of the batch's combination and of each member, from reports/metrics.json
    when it evaluated the very models the batch came from (else None: nothing to judge by),
    each with the feature space its figures were measured in."""
    path = layout.reports / "metrics.json"
    if not path.is_file():
        return None, {}
    metrics = json.loads(path.read_text())
    meta = json.loads((layout.batches / run_id / BATCH_JSON).read_text())
    if any(metrics.get(k) != meta.get(k) for k in ("data_sha256", "models_sha256")):
        log.warning("reports/metrics.json evaluates other models than batch %s", run_id)
        return None, {}
    space = (metrics.get("feature_space") or {}).get("name")  # None: from before the choice
    rows = (metrics.get("members") or {}).items()
    members = {n: figures(row, space) or {} for n, row in rows}
    return figures((metrics.get("ensemble") or {}).get(meta.get("method")), space), members


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
    metrics, members = batch_metrics(layout, run_id)
    stamp = inputs_sha256("publish", params, layout, run_id=run_id, judged=[metrics, members])
    uploaded = publish_batch(store, batch_dir)
    before = _earlier_receipt(layout)
    if (
        uploaded["status"] == "already-published"
        and before.get("prefix") == uploaded["prefix"]
        and up_to_date("publish", before.get("inputs_sha256"), stamp, layout.published)
    ):
        # the store has it, judged on the same figures: no new history row, nothing rewritten
        return {**before, "status": "already-published", "up_to_date": True}
    result = {"run_id": run_id, **uploaded, "inputs_sha256": stamp}
    result["gate"] = gate(
        store, run_id, result["prefix"], metrics, members, params.gate,
        manifest=uploaded["manifest_sha256"],
    )  # fmt: skip
    if result["gate"]["decision"] == "candidate":
        why = "; ".join(result["gate"]["reasons"])
        log.warning("batch %s published as a candidate, not promoted: %s", run_id, why)
    write_history_chart(layout, history(store), verdict_line(run_id, result["gate"]))
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(layout.published, result)
    return result


def _earlier_receipt(layout: Layout) -> dict:
    try:
        receipt = json.loads(layout.published.read_text())
    except (OSError, ValueError):
        return {}
    return receipt if isinstance(receipt, dict) else {}


def verdict_line(run_id: str, verdict: dict) -> str:
    """The gate's word on this batch, for the report's first screen: promoted, or why not
    (a figure it could not compare is among the reasons, with the command to re-baseline)."""
    if verdict["decision"] == "promoted":
        return f"{run_id}: promoted; latest is {verdict['latest']}"
    why = "; ".join(verdict["reasons"])
    return f"{run_id}: not promoted ({why}); latest stays {verdict['latest']}"


def write_history_chart(layout: Layout, frame: pd.DataFrame, verdict: str | None = None) -> Path:
    """reports/history.svg, the report's history chart, from the store's rows (every night
    published there, whichever machine ran it)."""
    from ensgan.eval.charts import history_chart  # matplotlib: only where a chart is drawn

    svg = history_chart(frame, verdict)
    path = layout.reports / HISTORY_CHART
    return atomic_write(path, lambda tmp: Path(tmp).write_text(svg, encoding="utf-8"))
