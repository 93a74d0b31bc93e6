"""`ensgan regenerate`: an image of a batch made again from its manifest row's member and seed,
byte for byte, and the refusals that keep the user's files and name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ensgan.cli import app


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
