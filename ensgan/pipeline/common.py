"""What several stages share: the params hash they record, and the loaded ensemble."""

from __future__ import annotations

from ensgan.config import EnsembleConfig, Params, StackConfig
from ensgan.ensemble.combinations import Ensemble
from ensgan.ensemble.stacking import load_stacker
from ensgan.errors import ConfigError
from ensgan.gan.device import resolve_device
from ensgan.gan.loaded import load_member
from ensgan.layout import Layout

# Sections that change what the pipeline produces (not where it is stored or when it runs).
PRODUCT_SECTIONS = ("data", "members", "train", "stack", "ensemble", "evaluate", "generate")


def params_sha256(params: Params) -> str:
    return params.digest(*PRODUCT_SECTIONS)


def stacker_settings(params: Params) -> dict[str, object]:
    """The params a fitted stacker depends on: a stacker fitted under others is stale."""
    return {
        **params.stack.model_dump(mode="json"),
        "drs_percentile": params.ensemble.drs_percentile,
        "weight_floor": params.ensemble.weight_floor,
    }


def check_stacker_is_current(params: Params, card, members: dict) -> None:
    """A stacker fitted on other members' weights, or under other stack or sampling params,
    would judge with a stale ratio: refuse it rather than publish from it."""
    changed = sorted(
        n for n, m in members.items()
        if m.card is not None and card.member_weights_sha256.get(n) != m.card.weights_sha256
    )  # fmt: skip
    if changed:
        raise ConfigError(
            f"the stacker was fitted before members {changed} were (re)trained: "
            "run `ensgan stack` again"
        )
    settings = stacker_settings(params)
    diff = sorted(k for k in settings if card.settings.get(k) != settings[k])
    if diff:
        raise ConfigError(
            f"the stacker was fitted under other params ({', '.join(diff)}): "
            "run `ensgan stack` again"
        )


def load_ensemble(params: Params, layout: Layout, *, with_stacker: bool = True) -> Ensemble:
    """The finished members (and the stacker, whose feature columns fix their order)."""
    device = resolve_device(params.train.device)
    names = list(params.members)
    stacker = None
    weights = params.mixture_weights()
    if with_stacker:
        stacker = load_stacker(layout.stacker)
        card = stacker.card
        if sorted(card.members) != sorted(names):
            raise ConfigError(
                f"the stacker was fitted on members {card.members}, params list "
                f"{names}: run `ensgan stack` again"
            )
        if any(abs(card.mixture_weights[m] - w) > 1e-9 for m, w in weights.items()):
            raise ConfigError(
                "the stacker was fitted against other mixture weights than "
                "ensemble.weights: run `ensgan stack` again"
            )
        names = card.members
    members = {name: load_member(layout.member(name), device) for name in names}
    if stacker is not None:
        check_stacker_is_current(params, stacker.card, members)
    return Ensemble(
        members, weights=weights, stacker=stacker, **sampling_knobs(params.ensemble, params.stack)
    )


def sampling_knobs(ensemble: EnsembleConfig, stack: StackConfig) -> dict[str, object]:
    """How an Ensemble samples, from its params sections: `ensgan bench modes` builds its
    ensembles with this too, so it measures the combinations as params.yaml sets them."""
    return {
        "vote_oversample": ensemble.vote_oversample,
        "drs_gamma": ensemble.drs_gamma,
        "drs_temperature": ensemble.drs_temperature,
        "mh_chain": ensemble.mh_chain,
        "stack_inputs": stack.features,
    }
