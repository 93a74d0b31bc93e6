"""What a night did, in the first lines `ensgan run` prints: which batch was published, whether
the gate made it `latest` and why, where it went, who was left out, and how long each stage
took; in a DVC project, how to commit the baseline `dvc metrics diff` compares with. The flow's
summary dict is the input, so the lines say what the run returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ensgan.io.promotion import verdict_line
from ensgan.layout import Layout

# The run's key figures and the lock that names their inputs: what `dvc metrics diff` needs
# committed (until then HEAD has no metrics to compare with: DVC fails to load them there).
BASELINE = (
    f"baseline:  git add dvc.lock {Layout().key_figures.as_posix()} && git commit -m baseline;"
    " then dvc metrics diff"
)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def night_summary(summary: Mapping[str, Any]) -> list[str]:
    """The lines, in the order a person asks: what was published, is it what consumers get
    (the gate's word as the report's first screen gives it), where, who was missing, how
    long; last, when the run was recorded in dvc.lock, how to make it the baseline."""
    batch, receipt = summary["batch"], summary["published"]
    took: Mapping[str, float] = summary.get("stage_seconds") or {}
    status = receipt.get("status")
    if status == "already-published":
        status = "already published: an unchanged night"
    lines = [
        f"published: {batch['run_id']} ({summary.get('method', '?')}, "
        f"{batch['n_images']} images; {status})",
        f"gate:      {verdict_line(batch['run_id'], receipt['gate'])}",
        f"where:     {receipt.get('url') or receipt.get('prefix')}",
        f"report:    {summary['report']}",
    ]
    for name, why in (summary.get("left_out") or {}).items():
        lines.append(f"left out:  member {name}: {why}")
    if summary.get("up_to_date"):
        lines.append(f"unchanged: {', '.join(summary['up_to_date'])} (inputs unchanged)")
    if took:
        stages = ", ".join(f"{k} {_duration(v)}" for k, v in took.items())
        lines.append(f"time:      {_duration(sum(took.values()))} ({stages})")
    if (summary.get("dvc") or {}).get("recorded"):
        lines.append(BASELINE)
    return lines
