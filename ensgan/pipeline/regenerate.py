"""`ensgan regenerate RUN_ID ID`: make one image of a batch again from its manifest row.

Not a stage: a check anyone with the project can run. A manifest row names the member and
the latent seed of its image; with the same members (the batch id says whether they are),
the image comes out again, and the command says whether it is byte-identical to the one in
the batch. `mean` images are the pixel mean of every member on that latent.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ensgan.config import Params
from ensgan.errors import BatchError
from ensgan.io.batches import MANIFEST, check_run_id, manifest_rows, verify_batch
from ensgan.io.files import atomic_write
from ensgan.io.images import png_bytes
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.generate import batch_run_id
from ensgan.pipeline.survivors import survivors


def run(params: Params, layout: Layout, run_id: str, image_id: int, out: Path) -> dict:
    check_run_id(run_id)
    params = survivors(params, layout)  # the members the batch was made from
    if Path(out).exists():
        raise BatchError(f"{out} exists; refusing to overwrite it: name another --out")
    batch = layout.batches / run_id
    if not (batch / MANIFEST).is_file():
        raise BatchError(
            f"no batch {run_id} in {layout.batches}: pull it into that folder "
            f"(`ensgan batches pull {run_id} {layout.batches}`) or regenerate in its project"
        )
    verify_batch(batch)  # the row compared against is the published one
    current = batch_run_id(params, layout)
    if current != run_id:
        raise BatchError(
            f"this project's members and params make batch {current}, not {run_id}: check out "
            "the commit that made it, `dvc pull`, and run this again"
        )
    row = _row(batch, run_id, image_id)
    ens = load_ensemble(params, layout, with_stacker=False)
    image = ens.regenerate(row["member"], int(row["seed"]))
    png = png_bytes(image)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(png))
    sha = hashlib.sha256(png).hexdigest()
    return {
        "run_id": run_id,
        "id": image_id,
        "file": row["file"],
        "member": row["member"],
        "seed": row["seed"],
        "path": str(out),
        "sha256": sha,
        "identical": sha == row["sha256"],
        "pixels_differing": 0 if sha == row["sha256"] else _differing(batch, row, image),
    }


def _row(batch: Path, run_id: str, image_id: int) -> dict:
    """The manifest row whose `id` is `image_id` (ids are unique, verify_batch checked): an
    image is named by its id, in its file name and sidecar, not by its line in the manifest."""
    rows = {row["id"]: row for row in manifest_rows(batch)}
    if image_id not in rows:
        ids = sorted(rows)
        span = f"images {ids[0]} to {ids[-1]}" if ids else "no images"
        raise BatchError(f"batch {run_id} has {span}, not {image_id}")
    return rows[image_id]


def _differing(batch: Path, row: dict, image: np.ndarray) -> int:
    """How many pixels differ from the published image (float rounding, another device)."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(batch / row["shard"]) as tar:
        published = np.asarray(Image.open(io.BytesIO(tar.extractfile(row["file"]).read())))
    mine = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    return int(
        (published != mine).any(axis=-1).sum() if mine.ndim == 3 else (published != mine).sum()
    )
