"""Stage `prepare`: the configured dataset -> data/prepared/."""

from __future__ import annotations

from ensgan.config import Params
from ensgan.data.prepared import prepare
from ensgan.layout import Layout


def run(params: Params, layout: Layout) -> dict:
    return prepare(params.data, layout.prepared, layout.root).model_dump(mode="json")
