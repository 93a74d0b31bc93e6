"""card.json, typed: what each stage wrote, read back in one place.

Every stage output directory carries a `card.json` that describes it (prepared data, a member,
the stacker). Readers validate the card against its model, so a missing field or a foreign
file is a clear `CardError` naming the file, not a KeyError three calls later. Cards allow
fields they do not know, so a card from a newer version still reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ensgan.errors import CardError
from ensgan.io.files import recover_dir, write_json

CARD = "card.json"


class Card(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    missing_hint: ClassVar[str] = "run the stage that writes it"


class DataCard(Card):
    """data/prepared/card.json: the source, the arrays' shape and their sha256."""

    missing_hint: ClassVar[str] = "run `ensgan prepare` first"
    source: str
    path: str | None
    shape: list[int]
    dtype: str
    labels: bool
    n_classes: int
    n_train: int
    n_stack: int
    n_calibrate: int
    n_evaluate: int
    sha256: str
    class_names: list[str] | None = None  # what each label means (None: the label itself)


class MemberCard(Card):
    """models/members/NAME/card.json: present only once the member is finished, as described."""

    missing_hint: ClassVar[str] = "no finished member there; train it (`ensgan train NAME`)"
    name: str
    arch: str
    seed: int
    width: int
    bootstrap: bool
    discriminators: int = 1  # cards written before GMAN
    gman: str = "mean"
    gman_lambda: float = 1.0
    gman_lambda_final: float | None = None  # GMAN*: the λ it learned
    steps: int
    z_dim: int
    image_size: int
    channels: int
    batch_size: int
    loss: str = "non_saturating"  # cards written before losses were pluggable
    data_sha256: str
    fingerprint: str
    n_train: int
    n_unique_images: int
    device: str
    seconds_this_run: float
    weights_sha256: str
    # train.ensemble: clustered: which cluster of the training split it was trained on
    # ({index, size, sizes, pca, seed}; ensgan/ensemble/clusters.py); None otherwise
    cluster: dict[str, int | list[int]] | None = None


class StackerCard(Card):
    """models/stacker/card.json: the meta-learner's members (its feature columns) and scores."""

    missing_hint: ClassVar[str] = "run `ensgan stack` first"
    model: str
    cv_folds: int
    cv_roc_auc: float
    cv_roc_auc_std: float
    cv_accuracy: float
    cv_log_loss: float
    n_real: int
    n_fake: int
    members: list[str]  # its feature columns, in order
    mixture_weights: dict[str, float]  # π of the mixture it was fitted against
    calibration: str
    calibration_roc_auc: float
    ece_raw: float
    ece_calibrated: float
    brier_raw: float
    brier_calibrated: float
    n_calibrate_real: int
    n_calibrate_fake: int
    log_prior_ratio: float
    burn_in: int  # generated images per member behind drs_log_m and member_weights
    drs_log_m: dict[str, float]  # per member: log M for DRS (a percentile of its burn-in)
    member_weights: dict[str, float]  # the `weighted` combination's π (one EM step, floored)
    data_sha256: str
    member_fingerprints: dict[str, str]
    member_weights_sha256: dict[str, str]  # the exact members it was fitted on
    settings: dict[str, object]  # the params that shaped it (checked against params.yaml)
    inputs_sha256: str | None = None  # what it was fitted from (pipeline/freshness.py)
    # sha256 of each file beside it (stacker.skops, real_log_ratios.npy), checked before either
    # is read: skops's allow-list stops foreign types, not crafted values of allowed ones.
    # Empty in cards written before: such a stacker is refused until fitted again.
    files_sha256: dict[str, str] = {}


C = TypeVar("C", bound=Card)


def read_card(kind: type[C], directory: Path) -> C:
    """The card in `directory`; FileNotFoundError (saying what to run) when there is none."""
    recover_dir(directory)  # a swap torn by a crash: the previous output is still there
    path = Path(directory) / CARD
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {CARD}: {kind.missing_hint}") from None
    except ValueError as exc:
        raise CardError(f"{path} is not valid JSON ({exc})") from None
    try:
        return kind.model_validate(raw)
    except ValidationError as err:
        fields = ", ".join(".".join(map(str, e["loc"])) or "(top level)" for e in err.errors())
        raise CardError(f"{path} is not a {kind.__name__} (bad or missing: {fields})") from None


def read_card_if_any(kind: type[C], directory: Path) -> C | None:
    """The card, or None when there is none yet (a card that exists but is bad still raises)."""
    try:
        return read_card(kind, directory)
    except FileNotFoundError:
        return None


def write_card(directory: Path, card: Card) -> Path:
    return write_json(Path(directory) / CARD, card.model_dump(mode="json"))
