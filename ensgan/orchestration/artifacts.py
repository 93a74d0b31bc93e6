"""What a night leaves in the Prefect UI, as Prefect's artifacts are meant to be used: a
markdown summary (the lines `ensgan run` prints first, one wording), a table artifact of the
key figures per model, and links to the published batch and the report. Each has a key, so
the Artifacts page keeps one history per kind across nights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from ensgan.eval.report import TERMINAL_COLUMNS, fmt, metrics_frame
from ensgan.orchestration.summary import night_summary

KEYS = {  # lowercase letters, numbers and dashes, as Prefect's keys must be
    "summary": "ensgan-nightly",
    "metrics": "ensgan-metrics",
    "batch": "ensgan-batch",
    "report": "ensgan-report",
}


def metrics_rows(metrics: Mapping[str, object]) -> list[dict[str, str]]:
    """The key figures per model (members, combinations, the real row), as the terminal's
    table shows them: a table artifact's rows."""
    frame = metrics_frame(metrics)
    frame = frame[["model", "kind", *(c for c in TERMINAL_COLUMNS if c in frame.columns)]]
    return [{k: fmt(v) for k, v in row.items()} for row in frame.to_dict("records")]


def batch_link(receipt: Mapping[str, Any], endpoint_url: str | None) -> str:
    """Where the published batch can be opened: its folder as a file:// URI, or for S3 the
    endpoint's path-style URL (the bare s3:// URL where no endpoint is set)."""
    url = str(receipt.get("url") or receipt.get("prefix"))
    if url.startswith("s3://"):
        if not endpoint_url:
            return url
        return f"{endpoint_url.rstrip('/')}/{quote(url.removeprefix('s3://'))}"
    return Path(url).resolve().as_uri()


def summary_markdown(summary: Mapping[str, Any], dvc_line: str) -> str:
    """The night in markdown: the lines `ensgan run` prints first, as a list."""
    items = []
    for line in night_summary(summary):
        label, _, text = line.partition(":")
        items.append(f"- **{label}**: {text.strip()}")
    return (
        "# ensgan nightly\n\n" + "\n".join(items) + "\n\n"
        f"- **data** `{summary['data_sha256'][:12]}`, **params** "
        f"`{summary['params_sha256'][:12]}`, stacker CV ROC AUC "
        f"{summary['stacker_cv_roc_auc']:.3f}\n- **DVC**: {dvc_line}\n\n"
        f"The key figures per model are the `{KEYS['metrics']}` table artifact; every figure "
        "is in the report.\n"
    )


def publish_artifacts(summary: Mapping[str, Any], dvc_line: str, endpoint_url: str | None) -> None:
    """Create the night's four artifacts (inside a flow run: they attach to it)."""
    run_id = summary["batch"]["run_id"]
    create_markdown_artifact(
        key=KEYS["summary"], markdown=summary_markdown(summary, dvc_line),
        description="what was published, the gate's word, who was left out, the time",
    )  # fmt: skip
    create_table_artifact(
        key=KEYS["metrics"], table=metrics_rows(summary["metrics"]),
        description="members and combinations side by side (the key figures)",
    )  # fmt: skip
    create_link_artifact(
        key=KEYS["batch"], link=batch_link(summary["published"], endpoint_url),
        link_text=f"batch {run_id}", description="the published batch",
    )  # fmt: skip
    create_link_artifact(
        key=KEYS["report"], link=Path(summary["report"]).as_uri(), link_text="report",
        description="the night's HTML report (on the machine that ran it)",
    )  # fmt: skip
