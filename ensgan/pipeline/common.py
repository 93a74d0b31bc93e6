"""What several stages share: the params each reads, the hashes they record, the loaded ensemble."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from ensgan.config import CombineConfig, Params, StackConfig
from ensgan.errors import ConfigError
from ensgan.io.cards import DataCard, MemberCard, StackerCard, read_card
from ensgan.layout import Layout

if TYPE_CHECKING:  # torch, scikit-learn and skops load only where an ensemble is loaded
    from ensgan.ensemble.combinations import Ensemble

# Sections that change what the pipeline produces (not where it is stored or when it runs).
PRODUCT_SECTIONS = ("data", "members", "train", "stack", "combine", "evaluate", "generate")
# The mixture weights: combine.weights, or AdaGAN's under boosting (Params.mixture_weights),
# or the clusters' sizes under clustered (in the member cards: `mixture_weights` below).
MIXTURE = ("combine.weights", "train.ensemble", "train.boosting_beta")
# The params each stage reads, as dvc.yaml lists them (tests/test_stage_contract.py checks it),
# so that changing a knob reruns only the stages that read it.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "train": ("members", "train"),
    "stack": ("members", "stack", *MIXTURE),
    "evaluate": ("members", "evaluate", "combine", *MIXTURE[1:]),
    "generate": ("members", "generate", "combine", *MIXTURE[1:]),
    "publish": ("storage.url", "storage.endpoint_url", "storage.region", "gate"),
}


def params_sha256(params: Params) -> str:
    return params.digest(*PRODUCT_SECTIONS)


def stage_params(params: Params, stage: str) -> dict[str, object]:
    """The values of the params `stage` reads, by dotted key (STAGE_PARAMS)."""
    dump = params.model_dump(mode="json")
    out: dict[str, object] = {}
    for key in STAGE_PARAMS[stage]:
        value: object = dump
        for part in key.split("."):
            value = value[part]  # type: ignore[index]
        out[key] = value
    return out


def stage_params_sha256(params: Params, stage: str) -> str:
    blob = json.dumps(stage_params(params, stage), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def models_sha256(params: Params, layout: Layout) -> str:
    """What every combination samples from: the data, each member's weights, the stacker, the
    mixture weights and the samplers' knobs. evaluate records it in metrics.json and generate
    in batch.json, so publish judges a batch by an evaluation of the very models it came from
    (publishing another combination of them needs no new evaluation)."""
    stacker = read_card(StackerCard, layout.stacker)
    members = {n: read_card(MemberCard, layout.member(n)) for n in params.members}
    parts = {
        "data": read_card(DataCard, layout.prepared).sha256,
        "members": {n: card.weights_sha256 for n, card in members.items()},
        "stacker": stacker.model_dump(  # files_sha256: see generate.batch_run_id
            mode="json", exclude={"member_fingerprints", "inputs_sha256", "files_sha256"}
        ),
        "mixture": mixture_weights(params, members),
        "combine": params.combine.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def mixture_weights(params: Params, cards: dict[str, MemberCard]) -> dict[str, float]:
    """The mixture's weights over the members: Params.mixture_weights(), except under
    train.ensemble: clustered, where each member weighs its cluster's share of the training
    images (over the members present: one left out takes its cluster's share with it)."""
    if params.train.ensemble != "clustered":
        return params.mixture_weights()
    sizes = {}
    for name in params.members:
        cluster = cards[name].cluster
        if not cluster:
            raise ConfigError(
                f"member {name} was not trained on a cluster (train.ensemble: clustered): "
                f"train it again (`ensgan train {name}`)"
            )
        sizes[name] = float(cluster["size"])  # type: ignore[arg-type]
    total = sum(sizes.values())
    return {n: s / total for n, s in sizes.items()}


def stacker_settings(params: Params) -> dict[str, object]:
    """The params a fitted stacker depends on: a stacker fitted under others is stale."""
    return params.stack.model_dump(mode="json")


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
    from ensgan.ensemble.combinations import Ensemble
    from ensgan.ensemble.stacking import load_stacker
    from ensgan.gan.device import resolve_device
    from ensgan.gan.loaded import load_member

    device = resolve_device(params.train.device)
    names = list(params.members)
    stacker = None
    cards = {n: read_card(MemberCard, layout.member(n)) for n in names}
    weights = mixture_weights(params, cards)
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
                "combine.weights: run `ensgan stack` again"
            )
        names = card.members
    members = {name: load_member(layout.member(name), device) for name in names}
    if stacker is not None:
        check_stacker_is_current(params, stacker.card, members)
    return Ensemble(
        members, weights=weights, stacker=stacker, **sampling_knobs(params.combine, params.stack)
    )


def sampling_knobs(combine: CombineConfig, stack: StackConfig) -> dict[str, object]:
    """How an Ensemble samples, from its params sections: `ensgan bench modes` builds its
    ensembles with this too, so it measures the combinations as params.yaml sets them."""
    return {
        "vote_oversample": combine.vote_oversample,
        "drs_gamma": combine.drs_gamma,
        "drs_temperature": combine.drs_temperature,
        "mh_chain": combine.mh_chain,
        "stack_inputs": stack.features,
    }
