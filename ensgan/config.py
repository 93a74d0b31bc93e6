"""params.yaml, validated once: every stage and both drivers read the same typed config.

Unknown keys, wrong types and impossible values stop the run before any work, with a message
that names the offending key (pydantic's error location, joined with dots).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ensgan.cron import cron_problem, prefect_timezones
from ensgan.errors import ConfigError, redact_url, short
from ensgan.io.bounded_yaml import describe, load_yaml
from ensgan.io.reading import read_bounded
from ensgan.registry import ARCHS, COMBINATIONS, LOSSES, META_LEARNERS, SOURCES

__all__ = ["ConfigError", "Params", "load_params", "parse_params"]

MAX_PARAMS_BYTES = 1024 * 1024  # a params.yaml is a few KiB
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

# Names validated against their registry (ensgan/registry.py), the one list of what exists.
Arch = Annotated[str, AfterValidator(ARCHS.check)]
Loss = Annotated[str, AfterValidator(LOSSES.check)]
Combination = Annotated[str, AfterValidator(COMBINATIONS.check)]
MetaLearner = Annotated[str, AfterValidator(META_LEARNERS.check)]


class _Strict(BaseModel):
    # No inf or nan anywhere: `.inf` for a weight or a loss limit would pass `ge`/`gt`, then
    # turn a normalisation or a comparison into nan far from the params that caused it. No
    # input in pydantic's own messages: a URL may carry a secret, a value may be huge.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, hide_input_in_errors=True
    )


Fraction = Annotated[float, Field(gt=0.0, lt=0.9)]
# numpy refuses negative seeds, scikit-learn seeds past 2**32 - 1; stages add small offsets.
Seed = Annotated[int, Field(ge=0, lt=2**31)]
# Counts of generated or evaluated images: each is held in memory at once, so a typo such as
# 10**12 is refused here rather than ending in a MemoryError hours into a run.
ImageCount = Annotated[int, Field(ge=10, le=1_000_000)]
Steps = Annotated[int, Field(gt=0, le=100_000_000)]


class SplitConfig(_Strict):
    """Real images held out of member training, a split per use, so that no step judges with
    images a step before it learned from (the members' discriminators saw the training split)."""

    stack: Fraction = 0.1  # fits the stacker (real against fresh fakes)
    calibrate: Fraction = 0.1  # calibrates its probabilities (Platt / isotonic)
    evaluate: Fraction = 0.2  # the reference for every metric

    @model_validator(mode="after")
    def _leave_training_data(self) -> SplitConfig:
        total = self.stack + self.calibrate + self.evaluate
        if total > 0.9:
            raise ValueError(
                f"the splits take {total:.2f} of the data; leave at least 0.1 to train"
            )
        return self


PATH_SOURCES = ("folder", "npz")  # sources that have no place of their own to look


class DataConfig(_Strict):
    source: Annotated[str, AfterValidator(SOURCES.check)] = "digits"
    path: str | None = None  # folder of PNG/JPEG, a .npz, or where (fashion_)mnist's files are
    max_images: Annotated[int, Field(ge=10, le=100_000_000)] | None = None  # a seeded subset
    image_size: Annotated[int, Field(ge=8, le=64)] = 16  # pixels per side, a power of two
    channels: Literal[1, 3] = 1  # 1 = grayscale, 3 = RGB; inputs are converted
    splits: SplitConfig = SplitConfig()  # real images kept out of member training
    seed: Seed = 0

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "holdout_fraction" in data:
            raise ValueError(
                "holdout_fraction was replaced by splits: {stack: F, calibrate: F, evaluate: F}"
                " (fractions of the data kept out of member training, one per use)"
            )
        return data

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (8, 16, 32 or 64), got {v}")
        return v

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.source in PATH_SOURCES and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


class MemberConfig(_Strict):
    arch: Arch = "dcgan"
    seed: Seed = 0
    width: Annotated[int, Field(ge=4, le=512)] = 32  # base channel count of G and D
    bootstrap: bool = True  # bagging: train on a bootstrap resample of the training split
    discriminators: Annotated[int, Field(ge=1, le=8)] = 1  # GMAN: several, one generator
    gman: Literal["mean", "max", "softmax", "learned"] = "mean"  # how G combines their losses
    gman_lambda: Annotated[float, Field(ge=0)] = 1.0  # softmax temperature λ (gman: softmax)
    # DiffAugment policies applied to all D sees, real and generated (ensgan/gan/augment.py)
    diffaugment: list[Literal["color", "translation", "cutout"]] = []

    @field_validator("diffaugment")
    @classmethod
    def _each_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"names a policy twice: {v}")
        return v


class TrainConfig(_Strict):
    steps: Steps = 2000  # optimizer steps per member
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 64
    z_dim: Annotated[int, Field(gt=0, le=1024)] = 64
    lr_g: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    lr_d: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    ema_halflife_images: Annotated[int, Field(gt=0, le=10**12)] = 10_000  # EMA half-life in images
    checkpoint_every: Steps = 500  # steps between resumable snapshots
    log_every: Steps = 25  # steps between loss-log rows
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # members trained at once, at most; 0 = one per core (CPU), gpus x members_per_gpu (CUDA)
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    # CUDA: which devices the members train on: None = every visible one, N = the first N,
    # [i, ...] = those (indices among the visible ones); ensgan/gan/placement.py
    gpus: Annotated[int, Field(ge=1, le=64)] | list[Annotated[int, Field(ge=0, le=63)]] | None = (
        None
    )
    members_per_gpu: Annotated[int, Field(ge=1, le=64)] = 1  # CUDA: members on one GPU at once
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast's bfloat16 (weights stay fp32)
    cudnn_benchmark: bool = False  # CUDA: autotune convolutions (a resume is then not bit-exact)
    max_loss: Annotated[float, Field(gt=0)] = 50.0  # a member whose loss passes this has diverged
    loss: Loss = "non_saturating"  # the GAN loss (ensgan/registry.py LOSSES)
    runner: Literal["process", "ray"] = "process"  # the flow's member tasks: local or Ray
    ray_address: str | None = None  # a Ray cluster (host:port); None: RAY_ADDRESS, or local
    ray_cpus: Annotated[float, Field(gt=0)] = 1.0  # CPUs each member task asks Ray for
    ray_gpus: Annotated[float, Field(ge=0)] = 0.0  # GPUs each member task asks Ray for
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    # bagging: members in parallel; boosting: AdaGAN rounds; shared: MGAN heads, one run;
    # clustered: members in parallel, one per k-means cluster of the training split
    ensemble: Literal["bagging", "boosting", "shared", "clustered"] = "bagging"
    mgan_beta: Annotated[float, Field(ge=0, le=100)] = 0.01  # shared: the which-generator weight
    cluster_pca: Annotated[int, Field(ge=1, le=4096)] = 50  # clustered: pixel PCA components
    cluster_seed: Annotated[int, Field(ge=0)] = 0  # clustered: PCA's and k-means' seed
    boosting_beta: Annotated[float, Field(gt=0, lt=1)] | None = None  # None: β_t = 1/t
    boosting_epochs: Annotated[int, Field(ge=1, le=100)] = 5  # the mixture classifier's passes
    min_members: Annotated[int, Field(ge=1)] | None = None  # None: every member must finish

    @field_validator("gpus")
    @classmethod
    def _gpus_once(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"must name each device once, and at least one: {v}")
        return v


class StackConfig(_Strict):
    model: MetaLearner = "logistic"
    # logits: each member's discriminator logit (and the mixture's analytic log-ratio);
    # hidden: also each discriminator's last hidden layer (use with model logistic_pca)
    features: Literal["logits", "hidden"] = "logits"
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 5
    n_fake: Annotated[int, Field(gt=0, le=1_000_000)] | None = (
        None  # generated negatives per split; None =
    )
    # as many as the split's real images (the positives)
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"  # Platt scaling, or isotonic
    burn_in: ImageCount = 2000  # generated images per member: DRS's M, weights
    drs_percentile: Annotated[float, Field(gt=0, le=100)] = 95.0  # DRS's M: this percentile of r̂
    weight_floor: Annotated[float, Field(ge=0, le=1)] = 0.5  # `weighted`: no member below this
    # share of its prior weight
    seed: Seed = 0


class CombineConfig(_Strict):
    """How the members are combined: the mixture weights (which the stacker is fitted against)
    and the samplers' knobs (read by evaluate, which scores every combination, and generate)."""

    weights: dict[str, Annotated[float, Field(ge=0)]] | None = None  # mixture weights; uniform
    vote_oversample: Annotated[int, Field(ge=1, le=64)] = 4  # candidates drawn per kept image
    drs_gamma: float = 0.0  # DRS's γ: 0 = plain rejection sampling; > 0 accepts less
    # DRS filters by r̂^T: 1 = the paper; below 1 flattens a ratio too steep in its tails
    drs_temperature: Annotated[float, Field(gt=0)] = 1.0
    mh_chain: Annotated[int, Field(ge=1, le=10_000)] = 64  # MH proposals per output image


class EvaluateConfig(_Strict):
    # Generated images per member and per combination that draws each image once (FD's
    # estimate depends on the count: rows compare only at equal counts).
    n_samples: ImageCount = 60000
    # Images for `mh`, whose every image is the end of a chain of mh_chain proposals.
    n_mh: Annotated[int, Field(ge=10, le=100_000)] = 2000
    classifier_steps: Annotated[int, Field(gt=0, le=1_000_000)] = (
        600  # training steps of the feature net
    )
    # KID (ensgan/eval/kid.py): subsets of this many images of each side (capped at the
    # smaller count), averaged over `kid_subsets` of them (the authors' defaults)
    kid_subset_size: Annotated[int, Field(ge=2, le=100_000)] = 1000
    kid_subsets: Annotated[int, Field(ge=1, le=10_000)] = 100
    # PRDC's real reference: at most this many images of the evaluate split (a seeded subset;
    # Naeem et al. use 10,000): its k-NN matrices grow with its square
    prdc_real: Annotated[int, Field(ge=10, le=100_000)] = 10000
    grid_size: Annotated[int, Field(ge=1, le=32)] = 8  # sample grids are grid_size^2 images
    # The space FD, KID, PRDC and the stacker's ratio check are computed in: domain = the project's
    # feature net; inception = the FID Inception-v3 (the `fid` extra; for a GPU: see
    # ensgan/eval/inception.py). Classes always come from the feature net.
    feature_space: Literal["domain", "inception"] = "domain"
    seed: Seed = 0


class GenerateConfig(_Strict):
    method: Combination = "mixture"  # the combination `generate` publishes
    n_images: Annotated[int, Field(gt=0, le=1_000_000)] = 1000
    shard_size: Annotated[int, Field(gt=0, le=100_000)] = 256  # images per tar shard
    seed: Seed = 0


# Where each key of the old `ensemble:` section went (params grouped by the stage that reads them).
MOVED_KEYS = {
    "method": "generate.method",
    "training": "train.ensemble",
    "boosting_beta": "train.boosting_beta",
    "boosting_epochs": "train.boosting_epochs",
    "min_members": "train.min_members",
    "drs_percentile": "stack.drs_percentile",
    "weight_floor": "stack.weight_floor",
    **{k: f"combine.{k}" for k in ("weights", "vote_oversample", "drs_gamma", "drs_temperature",
                                    "mh_chain")},
}  # fmt: skip

Tolerance = Annotated[float, Field(ge=0.0)] | None  # None: that figure is not compared


class GateConfig(_Strict):
    """How much worse than the champion a night's batch may be and still become `latest`.

    FD is compared relatively (its scale depends on the dataset and feature net), KID in
    units of its own noise (√2 × the champion's kid_std: the sd of the difference of two
    one-subset estimates that noisy; the means compared are less noisy), the others as
    absolute differences; a figure set to null is not compared. Figures in the evaluation
    feature space are compared only with a champion's measured in the same space."""

    # Set from each figure's measured noise at evaluate.n_samples (benchmarks/eval_count.py;
    # docs/results.md): two sds of the difference of two nights that changed only their seed.
    fd: Tolerance = 0.13  # FD may rise by this fraction
    kid: Tolerance = 0.44  # KID may rise by this many of those sds
    recall: Tolerance = 0.007  # may fall by this much
    coverage: Tolerance = 0.007  # may fall by this much
    class_kl: Tolerance = 0.016  # may rise by this much


def _store_url(v: str) -> str:
    """A store's url (storage.url, storage.work_url): a directory or s3://bucket[/prefix],
    never with credentials (echoed, they would end up in logs)."""
    if not v.strip():
        raise ValueError("must not be empty")
    if "://" in v and "@" in urlsplit(v).netloc:
        raise ValueError(
            "must not contain credentials (user:password@): use the AWS environment "
            "variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile"
        )
    if v.startswith("s3://"):
        bucket = v[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"invalid bucket name {short(bucket)} (3-63 lowercase, digits, . -)")
    elif "://" in v:
        raise ValueError(
            f"unsupported scheme in {short(redact_url(v))}: use a directory or s3://bucket"
        )
    return v


def _url_parts(url: str) -> tuple[str, list[str]]:
    """("s3", [bucket, folders...]) or ("local", [folders...]) of a store url; a relative
    local url starts with "." (relative to the project root), so it never equals an
    absolute one's parts."""
    if url.startswith("s3://"):
        return "s3", [p for p in url[5:].split("/") if p]
    path = posixpath.normpath(url)
    head = "/" if path.startswith("/") else "."
    return "local", [head, *(p for p in path.split("/") if p and p != ".")]


def stores_overlap(a: str, b: str) -> bool:
    """Whether one store url is the other or lies inside it (then one store's files would be
    listed as the other's). Local urls are compared as written: resolve them first to compare
    a relative one with an absolute one."""
    (kind_a, parts_a), (kind_b, parts_b) = _url_parts(a), _url_parts(b)
    n = min(len(parts_a), len(parts_b))
    return kind_a == kind_b and parts_a[:n] == parts_b[:n]


WORK_SUFFIX = "-work"  # the default work store: storage.url's sibling, STORE-work


class StorageConfig(_Strict):
    """Where batches go, and where `train.runner: ray` stages its working files (the prepared
    data, members in flight, stop requests): never inside the published store, which consumers
    list and may read whole. The S3 waits are bounded: a stalled endpoint (connected, sending
    nothing) fails after max_attempts tries of read_timeout each rather than hang the night;
    ENSGAN_S3_CONNECT_TIMEOUT, ENSGAN_S3_READ_TIMEOUT and ENSGAN_S3_MAX_ATTEMPTS override
    them for one run (ensgan/io/storage.py). work_url shares the endpoint and credentials."""

    url: str = "store"  # a local directory, or s3://bucket[/prefix]
    # train.runner: ray's staging: a directory or s3://bucket[/prefix] outside url; None: url's
    # sibling (store -> store-work, s3://b/p -> s3://b/p-work)
    work_url: str | None = None
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, Ceph, R2, SeaweedFS)
    region: str | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0  # seconds to connect
    read_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0  # seconds of silence per read
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 4  # tries per request, with backoff

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s):// URL")
        if parts.username or parts.password:  # would end up in logs and the Prefect UI
            raise ValueError("must not contain credentials: use the AWS environment variables")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", v):
            raise ValueError(f"invalid region {v!r}: lowercase words and dashes, e.g. us-east-1")
        return v

    @field_validator("url", "work_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return v if v is None else _store_url(v)

    @model_validator(mode="after")
    def _work_apart(self) -> StorageConfig:
        if self.work_url is not None and stores_overlap(self.url, self.work_url):
            raise ValueError(
                f"storage.work_url {short(redact_url(self.work_url))} overlaps storage.url "
                f"{short(redact_url(self.url))} (one is, or lies inside, the other): consumers "
                "would list the staged files as published; name a prefix or bucket of its own"
            )
        return self

    def work_location(self) -> str | None:
        """Where train.runner: ray stages its files: work_url, else url's sibling STORE-work
        (beside the published store, never in it); None when url has no sibling to name (a
        whole bucket, a root folder): work_url must then be set."""
        if self.work_url is not None:
            return self.work_url
        kind, parts = _url_parts(self.url)
        if len(parts) < 2 or parts[-1] == "..":
            return None
        if kind == "s3":
            return "s3://" + "/".join(parts) + WORK_SUFFIX
        return posixpath.normpath(self.url) + WORK_SUFFIX


class ScheduleConfig(_Strict):
    cron: str = "0 2 * * *"  # nightly at 02:00
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        problem = cron_problem(v)
        if problem:
            raise ValueError(f"invalid cron expression {short(v)}: {problem}")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        if v not in prefect_timezones():
            raise ValueError(f"unknown time zone {short(v)} (an IANA name such as UTC)")
        return v


def shared_heads_problem(members: dict[str, MemberConfig], batch_size: int) -> str | None:
    """Why these members cannot be MGAN's heads (ensgan/gan/shared.py), or None."""
    first = next(iter(members.values()))
    odd = [n for n, m in members.items() if (m.arch, m.width) != (first.arch, first.width)]
    if len(members) < 2 or odd:
        return (
            "the heads of one generator need at least 2 members of one arch and width "
            f"({', '.join(odd) or 'one member'} differ)"
        )
    if any(m.discriminators != 1 for m in members.values()):
        return "the heads share one discriminator: drop `discriminators`"
    if batch_size % len(members):
        return f"train.batch_size {batch_size} does not split evenly over {len(members)} heads"
    return None


class Params(_Strict):
    data: DataConfig = DataConfig()
    members: dict[str, MemberConfig]
    train: TrainConfig = TrainConfig()
    stack: StackConfig = StackConfig()
    combine: CombineConfig = CombineConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    generate: GenerateConfig = GenerateConfig()
    storage: StorageConfig = StorageConfig()
    gate: GateConfig = GateConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="before")
    @classmethod
    def _ensemble_was_split(cls, data: object) -> object:
        if isinstance(data, dict) and "ensemble" in data:
            old = data["ensemble"] if isinstance(data["ensemble"], dict) else {}
            moves = [f"ensemble.{k} -> {MOVED_KEYS[k]}" for k in old if k in MOVED_KEYS]
            raise ValueError(
                "the ensemble: section was split by the stage that reads it: "
                + "; ".join(moves or [f"{k} -> {v}" for k, v in MOVED_KEYS.items()])
            )
        return data

    @field_validator("members")
    @classmethod
    def _members(cls, v: dict[str, MemberConfig]) -> dict[str, MemberConfig]:
        if not v:
            raise ValueError("at least one member is required")
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"member name {name!r} must match {NAME_RE.pattern}")
        return v

    @model_validator(mode="after")
    def _ray_bags(self) -> Params:
        if self.train.runner == "ray" and self.train.ensemble != "bagging":
            why = {
                "shared": "trains them as one run",
                "boosting": "trains them as a chain",
                "clustered": "reads clusters computed beside the members, not staged to Ray",
            }[self.train.ensemble]
            raise ValueError(
                "train.runner: ray trains bagged members (independent tasks); "
                f"train.ensemble: {self.train.ensemble} {why}: use train.runner: process"
            )
        return self

    @model_validator(mode="after")
    def _ray_work_store(self) -> Params:
        if self.train.runner == "ray" and self.storage.work_location() is None:
            raise ValueError(
                f"train.runner: ray needs storage.work_url: storage.url "
                f"{short(redact_url(self.storage.url))} has no sibling to stage in; name a "
                "prefix or bucket of its own, outside storage.url"
            )
        return self

    @model_validator(mode="after")
    def _shared_heads(self) -> Params:
        if self.train.ensemble == "shared":
            problem = shared_heads_problem(self.members, self.train.batch_size)
            if problem:
                raise ValueError(f"train.ensemble: shared: {problem}")
        return self

    @model_validator(mode="after")
    def _min_members(self) -> Params:
        k = self.train.min_members
        if k is not None and k > len(self.members):
            raise ValueError(
                f"train.min_members is {k}, but params.yaml lists {len(self.members)} members"
            )
        return self

    @model_validator(mode="after")
    def _weights_name_members(self) -> Params:
        w = self.combine.weights
        if w is not None:
            unknown = sorted(set(w) - set(self.members))
            if unknown:
                raise ValueError(f"combine.weights names unknown members: {unknown}")
            total = sum(w.get(m, 0.0) for m in self.members)
            if total <= 0:
                raise ValueError("combine.weights must give some member a positive weight")
            if not math.isfinite(total):
                raise ValueError("combine.weights sum past the largest float: use smaller ones")
            if self.train.ensemble in ("boosting", "clustered"):
                who = {"boosting": "AdaGAN sets", "clustered": "the clusters' sizes set"}
                raise ValueError(
                    f"combine.weights cannot be set with train.ensemble: {self.train.ensemble} "
                    f"({who[self.train.ensemble]} the mixture weights); remove one of them"
                )
        return self

    def digest(self, *sections: str) -> str:
        """sha256 of the named sections (all when none), for cache keys and provenance."""
        dump = self.model_dump(mode="json")
        if sections:
            dump = {s: dump[s] for s in sections}
        return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()

    def mixture_weights(self) -> dict[str, float]:
        """Normalised mixture weights over the members: AdaGAN's when boosting, else uniform
        unless params say otherwise."""
        if self.train.ensemble == "boosting":
            w = adagan_weights(len(self.members), self.train.boosting_beta)
            return dict(zip(self.members, w, strict=True))
        raw = self.combine.weights or {}
        w = {m: float(raw.get(m, 0.0 if raw else 1.0)) for m in self.members}
        total = sum(w.values())
        return {m: x / total for m, x in w.items()}


def adagan_weights(n_rounds: int, beta: float | None) -> list[float]:
    """AdaGAN's mixture weights after n rounds (ensgan/ensemble/boosting.py has the rule):
    β_1 = 1, then β_t = 1/t or a constant; w <- (1 - β) w + [β]. Here so that params resolve
    without importing torch."""
    w: list[float] = []
    for t in range(1, n_rounds + 1):
        b = 1.0 if t == 1 else (1.0 / t if beta is None else beta)
        w = [x * (1.0 - b) for x in w] + [b]
    return w


def _format(err: ValidationError) -> str:
    """One line per error, each cut short: a value may be huge, so none is printed whole."""
    lines = []
    for e in err.errors(include_url=False):
        key = ".".join(str(p)[:40] for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"].endswith("_type"):  # strict: say what was given instead
            given = e.get("input")
            msg += f", got {type(given).__name__} {short(given, 60)}"
        lines.append(f"  {key}: {msg}"[:300])
    return "invalid params:\n" + "\n".join(lines)


def parse_params(raw: object) -> Params:
    """Validate an already-loaded mapping; raises ConfigError naming each bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("invalid params: the top level must be a mapping")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (a regular file of at most MAX_PARAMS_BYTES)."""
    path = Path(path)
    try:
        text = read_bounded(path, MAX_PARAMS_BYTES, "params file", ConfigError).decode()
        raw = load_yaml(text)
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"params file {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read params file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file {path} is not valid YAML: {describe(exc)}") from None
    return parse_params(raw)
