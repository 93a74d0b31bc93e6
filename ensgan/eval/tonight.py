"""The report's first screen, drawn by `publish` once it knows the answer: which batch was
published, the gate's verdict against the champion figure by figure, who was left out, the
night's time, and real images beside the published batch's own (read back from its shards).

An SVG beside the report (reports/tonight.svg), as the history chart is: evaluate writes the
report before the batch exists, so the page shows the card publish draws later."""

from __future__ import annotations

import tarfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ensgan.eval.charts import STYLE, plt, svg_of
from ensgan.io.batches import manifest_rows
from ensgan.io.images import grid_image, png_image

GREEN, RED = "#1a7f37", "#b42318"
WRAP = 88  # characters per line of the card's text: it must not run into the grids


def batch_images(batch_dir: Path, n: int) -> np.ndarray:
    """The first `n` images of a local, verified batch, from its shards (its manifest names
    each image's shard and member: nothing is extracted to disk)."""
    rows = manifest_rows(batch_dir)[:n]
    images = []
    for shard in dict.fromkeys(r["shard"] for r in rows):
        with tarfile.open(batch_dir / shard) as tar:
            for row in (r for r in rows if r["shard"] == shard):
                member = tar.extractfile(row["file"])
                if member is None:
                    raise ValueError(f"{shard} has no image {row['file']}")
                images.append(png_image(member.read()))
    return np.stack(images)


def _cell(value: object) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def figure_rows(figures: Sequence[dict]) -> list[list[str]]:
    """The gate's comparison as table rows: figure, this batch, champion, bound, verdict."""
    rows = []
    for f in figures:
        verdict = "not compared" if "bound" not in f else "within" if f["passed"] else "worse"
        better = "lower" if f["lower_is_better"] else "higher"
        rows.append([f"{f['figure']} ({better} better)", _cell(f["batch"]),
                     _cell(f["champion"]), f.get("how", "—"), verdict])  # fmt: skip
    return rows


def tonight_card(
    lines: Sequence[str],
    figures: Sequence[dict],
    promoted: bool,
    real: np.ndarray | None,
    batch: np.ndarray | None,
) -> str:
    """The card as an `<svg>`: `lines` (night_summary's), the figure-by-figure table when the
    gate compared with a champion, and the two grids of uint8 (N, C, H, W) images."""
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(11, 4.2))
        text = fig.add_axes((0.0, 0.0, 0.6, 1.0))
        text.axis("off")
        y = 0.97
        for i, line in enumerate(lines):
            color = (GREEN if promoted else RED) if i < 2 else "#222"
            for part in textwrap.wrap(
                line, WRAP, subsequent_indent=" " * 11, break_on_hyphens=False
            ):  # night_summary's
                text.text(0.0, y, part, fontsize=8, va="top", color=color,  # label width
                          weight="bold" if i < 2 else "normal", family="monospace")  # fmt: skip
                y -= 0.055
        if figures:
            rows = figure_rows(figures)
            height = min(y - 0.04, 0.08 * (len(rows) + 1))
            table = text.table(
                cellText=rows, colLabels=["figure", "this batch", "champion", "bound", "verdict"],
                loc="lower left", cellLoc="left", bbox=(0.0, 0.0, 1.0, height),
                colWidths=[0.27, 0.12, 0.12, 0.34, 0.15],
            )  # fmt: skip
            table.auto_set_font_size(False)
            table.set_fontsize(8)
            for (r, c), cell in table.get_celld().items():
                if r > 0 and c == 4:
                    cell.get_text().set_color(GREEN if rows[r - 1][4] == "within" else RED)
        elif y > 0.1:
            text.text(0.0, y - 0.02, "no champion compared: the gate's line above says why",
                      fontsize=8, va="top", color="#666")  # fmt: skip
        for k, (images, caption) in enumerate(((real, "real images"), (batch, "published batch"))):
            ax = fig.add_axes((0.62 + k * 0.195, 0.08, 0.18, 0.84))
            ax.axis("off")
            ax.set_title(caption, fontsize=9)
            if images is not None and len(images):
                grid = np.asarray(grid_image(images, scale=1))
                ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255,
                          interpolation="nearest")  # fmt: skip
        return svg_of(fig)
