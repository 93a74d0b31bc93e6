"""Stage `train NAME`: one member -> models/members/NAME/ (resumed, or found finished)."""

from __future__ import annotations

from collections.abc import Callable

from ensgan.config import Params
from ensgan.errors import ConfigError
from ensgan.gan.member import train_member
from ensgan.layout import Layout


def run(
    params: Params,
    layout: Layout,
    name: str,
    *,
    progress: bool | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict:
    if name not in params.members:
        raise ConfigError(f"unknown member {name!r}; params.yaml lists {sorted(params.members)}")
    card = train_member(
        name,
        params.members[name],
        params.train,
        layout.prepared,
        layout.member(name),
        progress=progress,
        callback=callback,
    )
    return card.model_dump(mode="json")
