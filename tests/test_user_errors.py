"""Every error a user can cause is one line and exit status 2, never a traceback,
and what the user's files hold is validated as strictly as params.yaml.

Each row of the table makes the fault for real (a folder where a file goes, a file where a
folder goes, an AWS profile that does not exist, bytes that are not UTF-8) and runs the
command a user would; the message must name the file or setting.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ensgan.cli import app
from ensgan.errors import DataError, is_user_error, user_message
from tests.helpers import write_tiny_project

runner = CliRunner()


def _published_store(tmp: Path) -> Path:
    from ensgan.io.batches import publish_batch
    from ensgan.io.storage import LocalStore
    from tests.helpers import make_batch

    publish_batch(
        LocalStore(tmp / "store"), make_batch(tmp / "out", "run-1")[0], dt.date(2026, 3, 1)
    )
    return tmp / "store"


def _params_dir(tmp: Path) -> list[str]:
    (tmp / "params.yaml").mkdir()
    return ["validate"]


def _params_not_utf8(tmp: Path) -> list[str]:
    (tmp / "params.yaml").write_bytes(b"\xff\xfe data: 1")
    return ["validate"]


def _count_as_bool(tmp: Path) -> list[str]:
    write_tiny_project(tmp, generate={"n_images": True})
    return ["validate"]


def _region_with_space(tmp: Path) -> list[str]:
    write_tiny_project(tmp, storage={"url": "s3://bucket-x/p", "region": "us east"})
    return ["batches", "ls"]


def _store_is_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["batches", "ls", "--store", str(tmp / "afile")]


def _store_under_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["batches", "ls", "--store", str(tmp / "afile" / "store")]


def _pull_onto_a_file(tmp: Path) -> list[str]:
    store = _published_store(tmp)
    (tmp / "dest").mkdir()
    (tmp / "dest" / "run-1").write_text("not a folder")
    return ["batches", "pull", "run-1", str(tmp / "dest"), "--store", str(store)]


def _pull_into_a_file(tmp: Path) -> list[str]:
    store = _published_store(tmp)
    (tmp / "dest").write_text("a file, not a folder")
    return ["batches", "pull", "run-1", str(tmp / "dest"), "--store", str(store)]


def _params_alias_bomb(tmp: Path) -> list[str]:
    bomb = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp / "params.yaml").write_text("\n".join(bomb) + "\nmembers: {a: {}}\n")
    return ["validate"]


def _params_duplicate_key(tmp: Path) -> list[str]:
    (tmp / "params.yaml").write_text("members: {a: {}}\nmembers: {b: {}}\n")
    return ["validate"]


def _params_fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "params.yaml")
    return ["validate"]


def _image_bomb(tmp: Path) -> list[str]:
    from tests.helpers import png_header_only, write_image

    for i in range(12):
        write_image(tmp / "imgs" / f"{i}.png", i)
    png_header_only(tmp / "imgs" / "zz.png", 100_000, 100_000)
    write_tiny_project(tmp, data={"source": "folder", "path": "imgs"})
    return ["prepare"]


def _npz_absurd_shape(tmp: Path) -> list[str]:
    from tests.helpers import lying_npy

    with zipfile.ZipFile(tmp / "data.npz", "w") as zf:
        zf.writestr("images.npy", lying_npy((10**12, 8, 8)))
    write_tiny_project(tmp, data={"source": "npz", "path": "data.npz"})
    return ["prepare"]


def _aws(tmp: Path, monkeypatch, config: str) -> None:
    (tmp / "aws-config").write_text(config)
    (tmp / "aws-credentials").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials"))


S3_LS = ["batches", "ls", "--store", "s3://bucket-x/p", "--endpoint-url", "http://127.0.0.1:9"]

# (what the user did, set-up returning the command, what the line must say)
CASES: list[tuple[str, Callable[..., list[str]], str]] = [
    ("params path is a folder", _params_dir, "is a directory"),
    ("params file is not UTF-8", _params_not_utf8, "not UTF-8"),
    ("a count given as a boolean", _count_as_bool, "generate.n_images"),
    ("a region with a space", _region_with_space, "storage.region"),
    ("store path is a file", _store_is_a_file, "not a folder"),
    ("store path under a file", _store_under_a_file, "not a folder"),
    ("pull where RUN_ID is a file", _pull_onto_a_file, "run-1 exists and is not a folder"),
    ("pull into a file", _pull_into_a_file, "dest"),
    ("params file is an alias bomb", _params_alias_bomb, "expands to more than"),
    ("params file repeats a key", _params_duplicate_key, "duplicate key 'members'"),
    ("params path is a FIFO", _params_fifo, "FIFO"),
    ("an image folder holds a decompression bomb", _image_bomb, "zz.png"),
    ("an npz declares an absurd shape", _npz_absurd_shape, "data.npz: `images`"),
]


@pytest.mark.timeout(120)  # a FIFO read that blocked would hang here
@pytest.mark.parametrize(("what", "setup", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line_and_exit_2(
    what: str, setup, says: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, f"{what}: {res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert says in res.output
    assert "Traceback" not in res.output
    assert [line for line in res.output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("config", "env", "says"),
    [
        ("", {"AWS_PROFILE": "nope"}, "AWS profile 'nope'"),
        ("[default\nregion = x\n", {}, "cannot parse the AWS config file"),
    ],
    ids=["AWS_PROFILE names no profile", "AWS config file does not parse"],
)
def test_an_aws_setup_error_is_one_line(
    config: str, env: dict, says: str, tmp_path: Path, monkeypatch
) -> None:
    _aws(tmp_path, monkeypatch, config)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = runner.invoke(app, S3_LS)
    assert res.exit_code == 2 and says in res.output, res.output
    assert "Traceback" not in res.output


SECRET_URLS = [
    "s3://AKIAHIDDENKEY:hidden-s3cr3t@bucket-x/p",
    "https://AKIAHIDDENKEY:hidden-s3cr3t@minio.example:9000/bucket-x",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_credentials_in_store_urls_are_never_printed(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--store and params' storage.url both: the line says what to do, not what was given."""
    monkeypatch.chdir(tmp_path)
    write_tiny_project(tmp_path, storage={"url": url})
    for args in (["batches", "ls", "--store", url], ["batches", "ls"], ["validate"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "must not contain credentials" in res.output, res.output
        assert "hidden-s3cr3t" not in res.output and "AKIAHIDDENKEY" not in res.output


def test_pull_onto_a_file_leaves_it_as_it_was(tmp_path: Path) -> None:
    store = _published_store(tmp_path)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "run-1").write_text("mine")
    runner.invoke(app, ["batches", "pull", "run-1", str(tmp_path / "dest"), "--store", str(store)])
    assert (tmp_path / "dest" / "run-1").read_text() == "mine"
    # nothing else but the pull's lock file, which stays by design (ensgan/io/batches.py)
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [".run-1.pull.lock", "run-1"]


def test_os_errors_on_a_named_path_are_user_errors_others_are_not(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError) as under_file:
        (tmp_path / "f" / "sub").mkdir(parents=True)
    with pytest.raises(OSError) as read_dir:
        tmp_path.read_text()  # type: ignore[attr-defined]
    for exc in (under_file.value, read_dir.value):
        assert is_user_error(exc) and str(tmp_path) in user_message(exc)
    denied = PermissionError(errno.EACCES, "Permission denied", "/srv/store")
    assert is_user_error(denied)
    assert user_message(denied).startswith("Permission denied: /srv/store (check its permissions")
    assert not is_user_error(OSError(errno.ENOSPC, "No space left on device", "/x"))  # may pass
    assert not is_user_error(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not is_user_error(OSError("no filename"))


def test_prefect_run_logs_keep_the_line_and_drop_the_traceback() -> None:
    from ensgan.orchestration.logs import UserErrorTracebacks

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            import sys

            return logging.LogRecord(
                "prefect.flow_runs", 40, "f", 1, "boom: %r", (exc,), sys.exc_info()
            )

    f = UserErrorTracebacks()
    user = record(DataError("image folder not found: /x"))
    assert f.filter(user) and user.exc_info is None and "/x" in user.getMessage()
    bug = record(KeyError("a bug"))
    assert f.filter(bug) and bug.exc_info is not None  # a bug keeps its traceback
    formatted = logging.Formatter().format(bug)
    assert "Traceback" in formatted


# ---- the user's data, validated as strictly as params.yaml ----


def _npz(tmp: Path, images: np.ndarray, **extra: np.ndarray) -> Path:
    path = tmp / "data.npz"
    np.savez(path, images=images, **extra)
    return path


@pytest.mark.parametrize(
    ("images", "says"),
    [
        (np.full((4, 8, 8), 200.0), "float `images` must be in [0, 1] or [-1, 1]"),
        (np.full((4, 8, 8), 300, dtype=np.int64), "must be in [0, 255]"),
        (np.full((4, 8, 8), -1, dtype=np.int16), "must be in [0, 255]"),
        (np.zeros((4, 8, 8), dtype=bool), "must be uint8, integers or floats"),
        (np.zeros((4, 3, 8, 8), dtype=np.uint8), "channels-first"),
        (np.zeros((4, 8, 8, 5), dtype=np.uint8), "1, 3 or 4 channels, got 5"),
        (np.zeros((4, 8), dtype=np.uint8), "(N, H, W) or (N, H, W, C)"),
        (np.zeros((4, 0, 8), dtype=np.uint8), "(N, H, W) or (N, H, W, C)"),
        (np.full((4, 8, 8), np.nan), "NaN"),
    ],
    ids=[
        "floats 0-255",
        "ints over 255",
        "negative ints",
        "booleans",
        "channels first",
        "5 channels",
        "2-D",
        "empty side",
        "NaN",
    ],  # fmt: skip
)
def test_npz_images_outside_the_documented_forms_are_refused(
    images: np.ndarray, says: str, tmp_path: Path
) -> None:
    from ensgan.data.sources import read_npz

    with pytest.raises(DataError) as err:
        read_npz(_npz(tmp_path, images))
    assert says in str(err.value) and "data.npz" in str(err.value)


@pytest.mark.parametrize(
    ("images", "expect"),
    [
        (np.full((2, 4, 4), 255, dtype=np.int64), 255),
        (np.full((2, 4, 4), 1.0, dtype=np.float32), 255),
        (np.full((2, 4, 4), -1.0), 0),
        (np.full((2, 4, 4, 4), 7, dtype=np.uint8), 7),
    ],
    ids=["int64 0-255", "float 0-1", "float -1..1", "RGBA"],
)
def test_npz_images_in_documented_forms_are_read(
    images: np.ndarray, expect: int, tmp_path: Path
) -> None:
    from ensgan.data.shaping import to_array
    from ensgan.data.sources import read_npz

    raw, _ = read_npz(_npz(tmp_path, images))
    assert raw.dtype == np.uint8 and int(raw.max()) == expect
    assert to_array(raw, 8, 3).shape == (2, 3, 8, 8)


def test_boolean_labels_are_refused(tmp_path: Path) -> None:
    from ensgan.data.sources import read_npz

    path = _npz(tmp_path, np.zeros((3, 8, 8), np.uint8), labels=np.array([True, False, True]))
    with pytest.raises(DataError, match="labels"):
        read_npz(path)


def test_a_16_bit_png_is_refused_naming_the_file(tmp_path: Path) -> None:
    from ensgan.data.sources import read_folder

    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(
            tmp_path / "imgs" / f"{i}.png"
        )
    with pytest.raises(DataError, match=r"0\.png.*16-bit"):
        read_folder(tmp_path / "imgs", 8, 1)


def test_prepare_on_bad_data_is_one_line(tmp_path: Path, monkeypatch) -> None:
    _npz(tmp_path, np.full((40, 8, 8), 100.0))
    write_tiny_project(tmp_path, data={"source": "npz", "path": "data.npz"})
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["prepare"])
    assert res.exit_code == 2 and "data.npz" in res.output and "[0, 1]" in res.output
    assert not (tmp_path / "data").exists()


# ---- no pickle: result records other than plain JSON are refused ----


def _record(serializer: dict, result: str = '{"name": "a"}') -> bytes:
    import json

    return json.dumps({"metadata": {"serializer": serializer}, "result": result}).encode()


@pytest.mark.parametrize(
    "serializer",
    [
        {"type": "pickle", "picklelib": "cloudpickle"},
        {"type": "json", "jsonlib": "pickle"},  # Prefect imports the jsonlib a record names
        {"type": "json", "jsonlib": "json", "object_decoder": "prefect.serializers.x"},
        {"type": "json", "jsonlib": "json", "loads_kwargs": {"object_hook": "x"}},
        {"type": "compressed/pickle"},
    ],
    ids=["pickle", "jsonlib pickle", "object decoder", "loads kwargs", "compressed pickle"],
)
def test_result_records_naming_code_are_refused(serializer: dict) -> None:
    from ensgan.orchestration.results import RefusedRecord, check_plain_json

    with pytest.raises(RefusedRecord):
        check_plain_json(_record(serializer), "rec")


def test_a_plain_json_record_is_read() -> None:
    from ensgan.orchestration.results import PLAIN_JSON, RefusedRecord, check_plain_json

    good = _record(PLAIN_JSON.model_dump(mode="json"))
    assert check_plain_json(good, "rec") == good
    with pytest.raises(RefusedRecord):
        check_plain_json(b"\x80\x04pickle", "rec")


def test_a_refused_local_record_is_moved_aside_not_read(tmp_path: Path) -> None:
    from ensgan.orchestration.results import PLAIN_JSON, guard_local_record

    (tmp_path / "ok").write_bytes(_record(PLAIN_JSON.model_dump(mode="json")))
    (tmp_path / "bad").write_bytes(_record({"type": "pickle"}))
    for name in ("ok", "bad", "absent"):
        guard_local_record(tmp_path / name)
    assert (tmp_path / "ok").is_file() and not (tmp_path / "bad").exists()
    (aside,) = tmp_path.glob("bad.refused-*")
    assert b"pickle" in aside.read_bytes()  # kept for whoever wants to look, never read
