"""A folder of 64x64 RGB PNGs, end to end through every stage (prepare, train, stack, evaluate,
generate, publish) with the SNGAN ResNet and DiffAugment: what a user with their own photos
runs, at a handful of steps."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_stages, write_tiny_project

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photos(folder: Path, n: int = 24) -> None:
    """Two classes of 64x64 RGB images: reddish and bluish blobs on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for label, channel in (("red", 0), ("blue", 2)):
        (folder / label).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
            cy, cx = rng.integers(16, 48, 2)
            img[..., channel][(yy - cy) ** 2 + (xx - cx) ** 2 < 150] = 230
            Image.fromarray(img).save(folder / label / f"{i:03d}.png")


def test_a_folder_of_64px_rgb_pngs_runs_every_stage(tmp_path: Path) -> None:
    root = tmp_path / "p"
    _photos(root / "photos")
    write_tiny_project(
        root,
        data={"source": "folder", "path": "photos", "image_size": 64, "channels": 3},
        members={
            "r": {"arch": "resnet", "seed": 1, "width": 4, "diffaugment": ["color", "cutout"]},
            "d": {"arch": "dcgan", "seed": 2, "width": 4},
        },
        train={"steps": 4, "batch_size": 8, "checkpoint_every": 4, "log_every": 2, "workers": 1},
        stack={"cv_folds": 2, "burn_in": 50, "n_fake": 20},
        evaluate={"n_samples": 40, "n_mh": 20, "classifier_steps": 5, "grid_size": 2},
        generate={"n_images": 12, "shard_size": 6},
    )
    done = run_stages(root)
    assert done["prepare"]["shape"] == [48, 3, 64, 64] and done["prepare"]["n_classes"] == 2
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics["members"]) == {"r", "d"}
    assert done["prepare"]["class_names"] == metrics["class_names"] == ["blue", "red"]
    html = (root / "reports/index.html").read_text()
    assert "<th>blue</th><th>red</th>" in html  # coverage per class, by folder name
    assert all(np.isfinite(row["fd"]) for row in metrics["members"].values())
    assert (root / "reports/grids/r.png").is_file()
    shards = sorted(root.glob("outputs/batches/*/*.tar"))
    assert shards, sorted(p.relative_to(root).as_posix() for p in root.rglob("outputs/**/*"))
    with tarfile.open(shards[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        png = Image.open(io.BytesIO(tar.extractfile(member).read()))
    assert png.size == (64, 64) and png.mode == "RGB"
    assert done["publish"]["status"] == "published"
    stored = Path(done["publish"]["url"])  # the store: a local folder here
    assert sorted(p.name for p in stored.glob("*.tar")) == [s.name for s in shards]
