"""params.yaml validation: defaults, every kind of bad key, digest and mixture weights."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ensgan.config import ConfigError, MemberConfig, Params, load_params, parse_params
from ensgan.registry import ARCHS, COMBINATIONS, LOSSES, META_LEARNERS
from tests.helpers import committed_params

MINIMAL = {"members": {"a": {}}}


def with_(extra: dict, base: dict | None = None) -> dict:
    """MINIMAL deep-merged with `extra` (a fresh copy every time)."""
    out = copy.deepcopy(base if base is not None else MINIMAL)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = with_(v, out[k])
        else:
            out[k] = v
    return out


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members:\n  a: {}\n")
    p = load_params(path)
    assert isinstance(p, Params)
    assert list(p.members) == ["a"]
    m = p.members["a"]
    assert (m.arch, m.seed, m.width, m.bootstrap) == ("dcgan", 0, 32, True)
    assert p.data.source == "digits" and p.data.image_size == 16 and p.data.channels == 1
    assert p.train.steps == 2000 and p.train.device == "auto"
    assert p.storage.url == "store"
    assert p.schedule.cron == "0 2 * * *"
    assert p.combine.weights is None


def test_repository_params_yaml_shows_every_knob() -> None:
    """params.yaml is the documented config: every field of every section is written out,
    so a new setting cannot hide behind a default nobody sees (the committed file: the working
    copy may hold a user's `dvc exp run -S` edits)."""
    raw = yaml.safe_load(committed_params())
    p = parse_params(raw)
    for section, model in Params.model_fields.items():
        if section == "members":
            continue
        fields = set(model.annotation.model_fields)
        assert set(raw[section]) == fields, f"params.yaml section {section!r}"
    for name, member in raw["members"].items():
        assert set(member) <= set(MemberConfig.model_fields), name
    assert {m.arch for m in p.members.values()} <= set(ARCHS)


@pytest.mark.parametrize(
    ("key", "registry"),
    [("arch", ARCHS), ("loss", LOSSES), ("method", COMBINATIONS), ("model", META_LEARNERS)],
)
def test_params_yaml_comments_list_exactly_the_registered_names(key: str, registry) -> None:
    """params.yaml shows the choices beside each name; they must be the registry's."""
    for line in committed_params().splitlines():
        setting, _, comment = line.partition("#")
        if setting.strip().startswith(f"{key}:"):  # `key: value  # a | b | c: why`
            listed = comment.split(":")[0]
            break
        if not setting.strip() and comment.strip().startswith(f"{key}:"):  # `# key: a | b`
            listed = comment.strip()[len(key) + 1 :]
            break
    else:
        pytest.fail(f"params.yaml shows no choices for `{key}`")
    names = [n.strip() for n in listed.split("|")]
    assert names == list(registry), line


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_({"bogus": 1}), "bogus"),
        (with_({"train": {"stepz": 10}}), "train.stepz"),
        (with_({"members": {"a": {"widht": 8}}}), "members.a.widht"),
        (with_({"train": {"steps": "many"}}), "train.steps"),
        (with_({"train": {"steps": 0}}), "train.steps"),
        (with_({"train": {"steps": -5}}), "train.steps"),
        ({"members": {}}, "members"),
        ({"train": {"steps": 1}}, "members"),  # members is required
        (with_({"members": {"a": {"arch": "resnet9000"}}}), "members.a.arch"),
        ({"members": {"9bad name": {}}}, "members"),
        (with_({"data": {"image_size": 12}}), "data.image_size"),
        (with_({"data": {"image_size": 128}}), "data.image_size"),
        (with_({"data": {"source": "folder"}}), "data.path"),
        (with_({"data": {"source": "npz"}}), "data.path"),
        (with_({"combine": {"weights": {"a": 1.0, "ghost": 2.0}}}), "combine.weights"),
        (with_({"combine": {"weights": {"a": 0.0}}}), "combine.weights"),
        (with_({"combine": {"weights": {"a": -1.0}}}), "combine.weights.a"),
        (with_({"schedule": {"cron": "not a cron"}}), "schedule.cron"),
        (with_({"schedule": {"cron": "61 * * * *"}}), "schedule.cron"),
        (with_({"storage": {"url": "s3://AB"}}), "storage.url"),
        (with_({"storage": {"url": "s3://Upper-Case"}}), "storage.url"),
        (with_({"storage": {"url": "gs://x"}}), "storage.url"),
        (with_({"storage": {"url": "  "}}), "storage.url"),
        (
            with_({"storage": {"endpoint_url": "http://AKIA:secret@host:9000"}}),
            "storage.endpoint_url",
        ),
        (with_({"storage": {"endpoint_url": "minio:9000"}}), "storage.endpoint_url"),
        (with_({"schedule": {"timezone": "Mars/Base"}}), "schedule.timezone"),
        (with_({"evaluate": {"feature_space": "imagenet"}}), "evaluate.feature_space"),
    ],
)
def test_invalid_params_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert key in str(info.value)


def test_error_messages_are_specific() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_params(with_({"train": {"stepz": 1}}))
    with pytest.raises(ConfigError, match="power of two"):
        parse_params(with_({"data": {"image_size": 24}}))
    with pytest.raises(ConfigError, match="ghost"):
        parse_params(with_({"combine": {"weights": {"ghost": 1.0}}}))
    with pytest.raises(ConfigError, match="invalid bucket name 'AB'"):
        parse_params(with_({"storage": {"url": "s3://AB"}}))
    with pytest.raises(ConfigError, match="unsupported scheme"):
        parse_params(with_({"storage": {"url": "gs://x"}}))
    with pytest.raises(ConfigError, match="at least one member"):
        parse_params({"members": {}})


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(with_({"train": {"steps": 0, "stepz": 1}, "data": {"channels": 2}}))
    msg = str(info.value)
    assert "train.steps" in msg and "train.stepz" in msg and "data.channels" in msg


@pytest.mark.parametrize(
    "url", ["store", "/tmp/some/dir", "s3://my-bucket", "s3://my.bucket-01/a/prefix"]
)
def test_valid_storage_urls(url: str) -> None:
    assert parse_params(with_({"storage": {"url": url}})).storage.url == url


@pytest.mark.parametrize(
    ("url", "work_url"),
    [
        ("store", "store"),
        ("store", "./store/work"),  # inside the published store
        ("store/published", "store"),  # the published store inside it
        ("/srv/store", "/srv/store/"),
        ("s3://my-bucket/ensgan", "s3://my-bucket/ensgan/work"),
        ("s3://my-bucket/ensgan", "s3://my-bucket"),
        ("s3://my-bucket", "s3://my-bucket/work"),  # a whole bucket is all published
    ],
)
def test_a_work_url_overlapping_the_published_store_is_refused(url: str, work_url: str) -> None:
    raw = with_({"storage": {"url": url, "work_url": work_url}})
    with pytest.raises(ConfigError, match=r"storage.work_url .* overlaps storage.url") as info:
        parse_params(raw)
    assert len(str(info.value).splitlines()) == 2  # "invalid params:" and the one error


@pytest.mark.parametrize(
    ("work_url", "why"),
    [
        ("gs://my-bucket/work", "unsupported scheme"),
        ("s3://AB/work", "invalid bucket name"),
        ("s3://AKIA:secret@my-bucket/work", "must not contain credentials"),
        (" ", "must not be empty"),
    ],
)
def test_a_bad_work_url_is_refused_by_name(work_url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"storage.work_url: .*{why}") as info:
        parse_params(with_({"storage": {"work_url": work_url}}))
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "work_url", "where"),
    [
        ("store", None, "store-work"),  # the default: a sibling, never read as published
        ("./store/", None, "store-work"),
        ("/srv/store", None, "/srv/store-work"),
        ("s3://my-bucket/ensgan/", None, "s3://my-bucket/ensgan-work"),
        ("s3://my-bucket/ensgan", "s3://other-bucket", "s3://other-bucket"),
        ("s3://my-bucket/ensgan", "s3://my-bucket/ensgan-staging", "s3://my-bucket/ensgan-staging"),
        ("store", "/scratch/ensgan", "/scratch/ensgan"),
        ("s3://my-bucket", None, None),  # no sibling: ray needs work_url
        (".", None, None),
    ],
)
def test_where_the_ray_runner_stages(url: str, work_url: str | None, where: str | None) -> None:
    storage = {"url": url} if work_url is None else {"url": url, "work_url": work_url}
    p = parse_params(with_({"storage": storage}))
    assert p.storage.work_location() == where


def test_the_ray_runner_needs_a_work_url_beside_a_whole_bucket() -> None:
    raw = with_({"storage": {"url": "s3://my-bucket"}, "train": {"runner": "ray"}})
    with pytest.raises(ConfigError, match="train.runner: ray needs storage.work_url"):
        parse_params(raw)
    raw["storage"]["work_url"] = "s3://my-bucket-work"
    assert parse_params(raw).storage.work_location() == "s3://my-bucket-work"


def test_folder_source_with_path_is_valid() -> None:
    p = parse_params(with_({"data": {"source": "folder", "path": "imgs", "image_size": 32}}))
    assert p.data.path == "imgs" and p.data.image_size == 32


@pytest.mark.parametrize("raw", [None, [], "members", 3])
def test_top_level_must_be_a_mapping(raw: object) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_params(raw)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_params(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members: {a: [unclosed\n  : : :\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(ConfigError):
        load_params(path)


def test_params_are_frozen() -> None:
    p = parse_params(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        p.train = p.train  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        p.train.steps = 5  # type: ignore[misc]
    assert p.train.steps == 2000


def test_digest_ignores_order_and_tracks_changes() -> None:
    a = parse_params(with_({"train": {"steps": 10, "lr_g": 1e-3}, "members": {"b": {}}}))
    reordered = {  # the same settings, written in another order
        "train": {"lr_g": 1e-3, "steps": 10},
        "members": {"b": {}, "a": {}},
    }
    assert parse_params(reordered).digest() == a.digest()
    assert len(a.digest()) == 64
    # Explicitly spelling out a default is the same config.
    assert (
        parse_params(with_({"train": {"steps": 2000}})).digest() == parse_params(MINIMAL).digest()
    )
    c = parse_params(with_({"train": {"steps": 11, "lr_g": 1e-3}, "members": {"b": {}}}))
    assert c.digest() != a.digest()
    assert c.digest("train") != a.digest("train")
    assert c.digest("data", "members") == a.digest("data", "members")  # untouched sections
    d = parse_params(
        with_({"members": {"a": {"seed": 1}, "b": {}}, "train": {"steps": 10, "lr_g": 1e-3}})
    )
    assert d.digest() != a.digest() and d.digest("members") != a.digest("members")
    assert d.digest("train") == a.digest("train")


def test_names_are_validated_against_their_registries() -> None:
    for key, raw in [
        ("members.a.arch", with_({"members": {"a": {"arch": "biggan"}}})),
        ("train.loss", with_({"train": {"loss": "wasserstein"}})),
        ("generate.method", with_({"generate": {"method": "median"}})),
        ("stack.model", with_({"stack": {"model": "svm"}})),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_params(raw)
        assert key in str(info.value) and "choose from" in str(info.value)
    ok = with_(
        {
            "members": {"a": {"arch": next(iter(ARCHS))}},
            "train": {"loss": next(iter(LOSSES))},
            "generate": {"method": list(COMBINATIONS)[-1]},
            "stack": {"model": list(META_LEARNERS)[-1]},
        }
    )
    assert parse_params(ok).generate.method == list(COMBINATIONS)[-1]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"stack": {"features": "pixels"}}, "stack.features"),
        ({"combine": {"drs_temperature": 0}}, "combine.drs_temperature"),
        ({"evaluate": {"n_mh": 5}}, "evaluate.n_mh"),
    ],
)
def test_stacker_inputs_drs_temperature_and_counts_are_checked(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(with_(raw))
    assert key in str(info.value)


def test_mixture_weights_uniform_by_default() -> None:
    p = parse_params({"members": {"a": {}, "b": {}, "c": {}, "d": {}}})
    w = p.mixture_weights()
    assert list(w) == ["a", "b", "c", "d"]
    assert w == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25})


def test_mixture_weights_normalised_when_given() -> None:
    p = parse_params(
        {"members": {"a": {}, "b": {}, "c": {}}, "combine": {"weights": {"a": 3, "b": 1}}}
    )
    w = p.mixture_weights()
    assert w == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})  # unnamed members get 0
    assert sum(w.values()) == pytest.approx(1.0)


def test_credentials_in_endpoint_are_refused_without_echoing_them() -> None:
    raw = with_({"storage": {"endpoint_url": "http://AKIAEXAMPLE:s3cr3t@minio:9000"}})
    with pytest.raises(ConfigError) as exc:
        parse_params(raw)
    assert "s3cr3t" not in str(exc.value) and "AKIAEXAMPLE" not in str(exc.value)


def test_exponent_floats_read_as_yaml_1_2_does_and_strings_are_not_coerced(tmp_path) -> None:
    """Strict params would refuse `2e-4` if PyYAML's YAML 1.1 read it as a string; DVC (YAML
    1.2) reads it as a float, and so does load_params. A quoted number stays refused."""
    text = committed_params()
    (tmp_path / "p.yaml").write_text(text.replace("lr_g: 0.0002", "lr_g: 2e-4"))
    assert load_params(tmp_path / "p.yaml").train.lr_g == 2e-4
    (tmp_path / "q.yaml").write_text(text.replace("steps: 4000", 'steps: "4000"'))
    with pytest.raises(ConfigError, match=r"train.steps: .*got str '4000'"):
        load_params(tmp_path / "q.yaml")


def test_the_old_ensemble_section_names_where_each_key_went() -> None:
    """params grouped by stage: an old params.yaml gets one error naming each new key."""
    old = {"members": {"a": {}}, "ensemble": {"method": "drs", "training": "boosting"}}
    with pytest.raises(ConfigError) as err:
        parse_params(old)
    msg = str(err.value)
    assert "ensemble.method -> generate.method" in msg
    assert "ensemble.training -> train.ensemble" in msg
    assert "drs_temperature" not in msg  # only the keys the file has


# --- hostile params files: bounded reads, alias bombs, duplicate keys, FIFOs -----------------


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Nine levels of nine aliases expand to 9^9 values where a number belongs: refused as
    read, and the message stays one short line."""
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\nmembers: {a: {}}\ntrain: {steps: *a9}\n")
    with pytest.raises(ConfigError, match="expands to more than") as err:
        load_params(path)
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_a_few_aliases_still_read(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members:\n  a: &m {width: 8}\n  b: *m\n  c: {<<: *m, seed: 3}\n")
    p = load_params(path)
    assert [m.width for m in p.members.values()] == [8, 8, 8] and p.members["c"].seed == 3


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members: {a: {}}\ntrain: &t {steps: [*t]}\n")
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        load_params(path)


def test_a_huge_value_where_a_number_belongs_is_cut_short_in_the_message() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(with_({"train": {"steps": "9" * 100_000}}))
    assert "train.steps" in str(err.value) and len(str(err.value)) < 300


def test_nesting_too_deep_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members: {a: {}}\ntrain: {steps: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_params(path)


def test_a_params_file_too_large_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    with path.open("w") as f:
        f.write("members: {a: {}}\n")
        f.write("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=f"params file {path} is larger than 1024 KiB"):
        load_params(path)


def test_a_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members: {a: {}}\ntrain:\n  steps: 10\n  lr_g: 0.001\n  steps: 20\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'steps' \(first on line 3\).*line 5"):
        load_params(path)
    path.write_text("members: {a: {}}\ntrain: {steps: 10}\ntrain: {steps: 20}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'train' \(first on line 2\)"):
        load_params(path)


@pytest.mark.timeout(60)
def test_a_fifo_as_params_path_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: nobody writes, so that would be forever
    (the suite's timeout turns a regression into a failure)."""
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"is a FIFO \(named pipe\), not a regular file"):
        load_params(fifo)


# --- values that would pass validation and crash a stage later --------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (with_({"data": {"seed": -1}}), "data.seed"),
        (with_({"members": {"a": {"seed": -7}}}), "members.a.seed"),
        (with_({"stack": {"seed": 2**32}}), "stack.seed"),
        (with_({"evaluate": {"seed": -1}}), "evaluate.seed"),
        (with_({"generate": {"seed": -1}}), "generate.seed"),
        (with_({"train": {"max_loss": float("inf")}}), "train.max_loss"),
        (with_({"train": {"ray_cpus": float("inf")}}), "train.ray_cpus"),
        (with_({"combine": {"drs_gamma": float("nan")}}), "combine.drs_gamma"),
        (with_({"combine": {"weights": {"a": float("inf")}}}), "combine.weights.a"),
        (
            {"members": {"a": {}, "b": {}}, "combine": {"weights": {"a": 1e308, "b": 1e308}}},
            "combine.weights sum past the largest float",
        ),
        (with_({"gate": {"fd": float("inf")}}), "gate.fd"),
        (with_({"generate": {"n_images": 10**12}}), "generate.n_images"),
        (with_({"evaluate": {"n_samples": 10**12}}), "evaluate.n_samples"),
        (with_({"stack": {"burn_in": 10**12}}), "stack.burn_in"),
        (with_({"train": {"steps": 10**12}}), "train.steps"),
    ],
)
def test_values_a_stage_would_crash_on_are_refused(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert key in str(info.value)


def test_inf_written_in_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("members: {a: {}}\ntrain: {max_loss: .inf}\n")
    with pytest.raises(ConfigError, match="train.max_loss: Input should be a finite number"):
        load_params(path)


def test_the_largest_accepted_seeds_and_counts_still_validate() -> None:
    raw = with_({"members": {"a": {"seed": 2**31 - 1}}, "generate": {"n_images": 10**6}})
    p = parse_params(raw)
    assert p.members["a"].seed == 2**31 - 1 and p.generate.n_images == 10**6


# Schedules that validation and Prefect's CronSchedule (what `serve` builds) judge alike:
# cronsim, which validation used before, accepted the first three and Prefect refuses them.
CRONS = [
    ("0 2 LW * *", False),
    ("0 2 * * 5L", False),
    ("H 2 * * *", False),
    ("61 * * * *", False),
    ("not a cron", False),
    ("0 2 * * *", True),
    ("@daily", True),
    ("0 2 * * MON-FRI", True),
    ("*/15 0-6 * * 1#2", True),
]


@pytest.mark.parametrize(("cron", "ok"), CRONS)
def test_validation_reads_cron_strings_as_prefect_serve_does(cron: str, ok: bool) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone="Europe/Paris")
        prefect_ok = True
    except ValidationError:
        prefect_ok = False
    assert prefect_ok == ok, "Prefect changed its rules: update CRONS"
    raw = with_({"schedule": {"cron": cron, "timezone": "Europe/Paris"}})
    if ok:
        assert parse_params(raw).schedule.cron == cron
    else:
        with pytest.raises(ConfigError, match="schedule.cron: .*invalid cron expression"):
            parse_params(raw)


@pytest.mark.parametrize(("cron", "ok"), CRONS)
def test_without_the_vendored_croniter_prefects_cronschedule_judges(
    monkeypatch: pytest.MonkeyPatch, cron: str, ok: bool
) -> None:
    """Should a Prefect release move its croniter, validation asks CronSchedule itself."""
    import ensgan.cron

    monkeypatch.setattr(ensgan.cron, "_vendored_croniter", lambda: None)
    assert (ensgan.cron.cron_problem(cron) is None) == ok


def test_a_cron_that_never_fires_is_refused() -> None:
    """Prefect accepts `30 2` (30 February) as written, then its scheduler finds no date."""
    with pytest.raises(ConfigError, match="never fires"):
        parse_params(with_({"schedule": {"cron": "0 0 30 2 *"}}))


def test_validation_does_not_import_prefect() -> None:
    """`ensgan validate` starts at once: the cron rules come without Prefect's import."""
    import subprocess
    import sys

    code = (
        "import sys; from ensgan.config import parse_params; "
        "parse_params({'members': {'a': {}}, 'schedule': {'cron': '0 3 * * 1'}}); "
        "assert 'prefect' not in sys.modules, 'prefect imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("zone", ["right/UTC", "posix/UTC"])
def test_a_zone_file_prefect_does_not_list_is_refused(zone: str) -> None:
    """zoneinfo opens these files, but Prefect's schedules accept only the listed names."""
    from prefect.client.schemas.schedules import CronSchedule

    with pytest.raises(ValidationError):
        CronSchedule(cron="0 2 * * *", timezone=zone)
    with pytest.raises(ConfigError, match="schedule.timezone"):
        parse_params(with_({"schedule": {"timezone": zone}}))


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAHIDDENKEY:hidden-s3cr3t@my-bucket/prefix",
        "s3://hidden-s3cr3t@my-bucket",
        "https://AKIAHIDDENKEY:hidden-s3cr3t@minio.example:9000/bucket",
        "gs://AKIAHIDDENKEY:hidden-s3cr3t@bucket",
    ],
)
def test_credentials_in_the_storage_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError, match="storage.url: .*must not contain credentials") as err:
        parse_params(with_({"storage": {"url": url}}))
    assert "hidden-s3cr3t" not in str(err.value) and "AKIAHIDDENKEY" not in str(err.value)
    with pytest.raises(ValidationError) as raw:  # nor pydantic's own message, when printed
        Params.model_validate(with_({"storage": {"url": url}}))
    assert "hidden-s3cr3t" not in str(raw.value) and "AKIAHIDDENKEY" not in str(raw.value)
