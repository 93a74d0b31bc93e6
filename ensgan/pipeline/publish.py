"""Stage `publish`: upload a generated batch (manifest last), pass it through the promotion
gate against the store's champion, and write a receipt of where it went and what the gate said.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ensgan.config import Params
from ensgan.errors import DataError
from ensgan.io.batches import BATCH_JSON, publish_batch
from ensgan.io.files import atomic_write, write_json
from ensgan.io.promotion import figures, gate, history, verdict_line
from ensgan.io.storage import open_store
from ensgan.layout import Layout
from ensgan.pipeline.freshness import inputs_sha256, up_to_date

log = logging.getLogger(__name__)

HISTORY_CHART = "history.svg"  # under reports/: the report's <img> names it
TONIGHT_CARD = "tonight.svg"  # under reports/: the report's first screen


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


def run(
    params: Params,
    layout: Layout,
    run_id: str | None = None,
    *,
    took: Mapping[str, float] | None = None,
) -> dict:
    """Without a run_id, the batch the last `generate` wrote (outputs/generated.json).
    `took`: each earlier stage's seconds, for the report's first screen (the flow knows them;
    `dvc repro` does not)."""
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
    if "n_images" not in result:  # already in the store (a rerun after a kill): the count
        result["n_images"] = json.loads((batch_dir / BATCH_JSON).read_text())["n_images"]
    result["gate"] = gate(
        store, run_id, result["prefix"], metrics, members, params.gate,
        manifest=uploaded["manifest_sha256"],
    )  # fmt: skip
    if result["gate"]["decision"] == "candidate":
        why = "; ".join(result["gate"]["reasons"])
        log.warning("batch %s published as a candidate, not promoted: %s", run_id, why)
    write_history_chart(layout, history(store), verdict_line(run_id, result["gate"]))
    write_tonight_card(params, layout, result, took or {})
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(layout.published, result)
    return result


def _earlier_receipt(layout: Layout) -> dict:
    try:
        receipt = json.loads(layout.published.read_text())
    except (OSError, ValueError):
        return {}
    return receipt if isinstance(receipt, dict) else {}


def write_history_chart(layout: Layout, frame: pd.DataFrame, verdict: str | None = None) -> Path:
    """reports/history.svg, the report's history chart, from the store's rows (every night
    published there, whichever machine ran it)."""
    from ensgan.eval.charts import history_chart  # matplotlib: only where a chart is drawn

    svg = history_chart(frame, verdict)
    path = layout.reports / HISTORY_CHART
    return atomic_write(path, lambda tmp: Path(tmp).write_text(svg, encoding="utf-8"))


def write_tonight_card(
    params: Params, layout: Layout, result: dict, took: Mapping[str, float]
) -> Path | None:
    """reports/tonight.svg, the report's first screen: the night's lines (as `ensgan run`
    prints them, less the report's own path), the gate figure by figure, and real images of
    the evaluate split beside the published batch's first ones. The batch is published and
    judged by now: a card that cannot be drawn is a warning, and no earlier night's card is
    left to be read as tonight's."""
    from ensgan.eval.tonight import batch_images, tonight_card
    from ensgan.orchestration.summary import night_summary
    from ensgan.pipeline.survivors import left_out

    path = layout.reports / TONIGHT_CARD
    batch_dir = layout.batches / result["run_id"]
    try:
        meta = json.loads((batch_dir / BATCH_JSON).read_text())
        summary = {
            "batch": {"run_id": result["run_id"], "n_images": meta["n_images"]},
            "published": result, "method": meta.get("method"), "report": "",
            "left_out": left_out(layout), "stage_seconds": dict(took),
        }  # fmt: skip
        lines = [line for line in night_summary(summary) if not line.startswith("report:")]
        n = params.evaluate.grid_size**2
        svg = tonight_card(
            lines, result["gate"].get("figures") or [], result["gate"]["decision"] == "promoted",
            _real_images(params, layout, n), batch_images(batch_dir, n),
        )  # fmt: skip
    except (OSError, ValueError, KeyError) as exc:  # DataError, CardError: ValueErrors
        log.warning("the report's first screen (%s) was not drawn: %s", path, exc)
        path.unlink(missing_ok=True)
        return None
    return atomic_write(path, lambda tmp: Path(tmp).write_text(svg, encoding="utf-8"))


def _real_images(params: Params, layout: Layout, n: int) -> np.ndarray | None:
    """`n` seeded images of the evaluate split, or None where no data is prepared here."""
    from ensgan.data.prepared import load_prepared

    try:
        real = load_prepared(layout.prepared).images_of("evaluate")
    except (DataError, FileNotFoundError) as exc:
        log.info("no real images beside the batch on the report's first screen: %s", exc)
        return None
    pick = np.random.default_rng(params.evaluate.seed).permutation(len(real))[:n]
    return real[np.sort(pick)]
