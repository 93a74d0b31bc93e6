"""What the stages share (ensgan/pipeline/common.py): a stacker is used only while it was fitted
on the members' current weights and under the current stack params, else its ratio is stale."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from ensgan.config import ConfigError, parse_params
from ensgan.pipeline.common import check_stacker_is_current, stacker_settings
from tests.helpers import tiny_params


def _members(**shas: str) -> dict:
    return {n: SimpleNamespace(card=SimpleNamespace(weights_sha256=s)) for n, s in shas.items()}


def test_a_stacker_fitted_on_other_weights_or_params_is_refused() -> None:
    params = parse_params(yaml.safe_load(tiny_params()))
    card = SimpleNamespace(
        member_weights_sha256={"a": "1", "b": "2"}, settings=stacker_settings(params)
    )
    check_stacker_is_current(params, card, _members(a="1", b="2"))  # current: no error
    with pytest.raises(ConfigError, match=r"members \['b'\] were \(re\)trained"):
        check_stacker_is_current(params, card, _members(a="1", b="3"))
    changed = parse_params(yaml.safe_load(tiny_params(stack={"drs_percentile": 99})))
    with pytest.raises(ConfigError, match="drs_percentile"):
        check_stacker_is_current(changed, card, _members(a="1", b="2"))
