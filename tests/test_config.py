"""params.yaml validation: defaults, every kind of bad key, digest and mixture weights."""

from __future__ import annotations

import copy
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
        ("members.a.arch", with_({"members": {"a": {"arch": "resnet"}}})),
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
