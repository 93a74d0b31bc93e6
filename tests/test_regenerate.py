"""`ensgan regenerate` (ensgan/pipeline/regenerate.py): an image of a batch made again from its
manifest row's member and seed, byte for byte, picked by its id whatever line of the manifest
holds it, and the refusals that keep the user's files and name what is wrong. The id tests
stand the members in by a function of (member, seed): what they test is which row is
regenerated and compared."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.errors import BatchError
from ensgan.io.batches import MANIFEST, verify_batch, write_batch
from ensgan.layout import Layout
from ensgan.pipeline import regenerate

RUN_ID = "vote-0123456789ab"


def _image(member: str, seed: int) -> np.ndarray:
    """The image a member makes from a latent seed: (C, H, W) uint8."""
    rng = np.random.default_rng([seed, int(member[1:])])
    return rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)


class _Members:
    def __init__(self, off_by: int = 0) -> None:
        self.off_by = off_by  # a member that makes another image than it did

    def regenerate(self, member: str, seed: int) -> np.ndarray:
        return _image(member, seed + self.off_by)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    """A batch of six images in two shards, its manifest listing the second shard's rows
    first (each shard's own rows still in order, so it verifies)."""
    layout = Layout(tmp_path)
    rows = [{"member": f"g{i % 2}", "seed": 100 + i} for i in range(6)]
    images = np.stack([_image(r["member"], r["seed"]) for r in rows])
    batch = write_batch(layout.batches, RUN_ID, images, rows, shard_size=3, extra={})
    lines = (batch / MANIFEST).read_text().splitlines(keepends=True)
    (batch / MANIFEST).write_text("".join(lines[3:] + lines[:3]))
    assert verify_batch(batch) == 6
    monkeypatch.setattr(regenerate, "survivors", lambda params, layout: params)
    monkeypatch.setattr(regenerate, "batch_run_id", lambda params, layout: RUN_ID)
    return layout


def _published(layout: Layout, shard: str, name: str) -> bytes:
    with tarfile.open(layout.batches / RUN_ID / shard) as tar:
        return tar.extractfile(name).read()


def test_regenerate_picks_the_row_by_its_id_not_its_line(project: Layout, monkeypatch) -> None:
    monkeypatch.setattr(regenerate, "load_ensemble", lambda *a, **k: _Members())
    out = project.root / "0.png"
    got = regenerate.run(None, project, RUN_ID, 0, out)  # line 0 of the manifest is id 3
    assert (got["id"], got["file"], got["seed"], got["identical"]) == (0, "000000.png", 100, True)
    assert out.read_bytes() == _published(project, "shard-00000.tar", "000000.png")
    got = regenerate.run(None, project, RUN_ID, 3, project.root / "3.png")
    assert (got["file"], got["seed"]) == ("000003.png", 103)


def test_a_different_image_is_not_called_identical(project: Layout, monkeypatch) -> None:
    monkeypatch.setattr(regenerate, "load_ensemble", lambda *a, **k: _Members(off_by=1))
    got = regenerate.run(None, project, RUN_ID, 0, project.root / "0.png")
    assert got["identical"] is False and got["pixels_differing"] > 0
    published = _published(project, "shard-00000.tar", "000000.png")
    from PIL import Image

    mine = np.asarray(Image.open(io.BytesIO((project.root / "0.png").read_bytes())))
    assert (np.asarray(Image.open(io.BytesIO(published))) != mine).any()


def test_an_id_no_row_has_is_refused(project: Layout, monkeypatch) -> None:
    monkeypatch.setattr(regenerate, "load_ensemble", lambda *a, **k: _Members())
    with pytest.raises(BatchError, match="has images 0 to 5, not 6"):
        regenerate.run(None, project, RUN_ID, 6, project.root / "6.png")
    assert not (project.root / "6.png").exists()


def test_regenerate_remakes_published_images_byte_identical(
    staged_project: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ensgan regenerate RUN_ID ID` from the manifest row's member and seed."""
    root, run_id = staged_project["root"], staged_project["generate"]["run_id"]
    monkeypatch.chdir(root)
    runner = CliRunner()
    for image_id in (0, 17, 39):
        out = tmp_path / f"{image_id}.png"
        res = runner.invoke(app, ["regenerate", run_id, str(image_id), "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert "byte-identical" in res.output and out.is_file()
    res = runner.invoke(app, ["regenerate", run_id, "0", "--out", str(tmp_path / "0.png")])
    assert res.exit_code == 2 and "refusing to overwrite" in res.output  # nothing lost
    res = runner.invoke(app, ["regenerate", run_id, "40"])
    assert res.exit_code == 2 and "images 0 to 39" in res.output
    other = tmp_path / "other.yaml"
    other.write_text((root / "params.yaml").read_text().replace("seed: 0", "seed: 5"))
    res = runner.invoke(app, ["regenerate", run_id, "0", "-p", str(other)])
    assert res.exit_code == 2 and "not " + run_id in res.output
