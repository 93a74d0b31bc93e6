"""Stage `prepare`: the configured dataset -> data/prepared/."""

from __future__ import annotations

from contextlib import suppress

from ensgan.config import Params
from ensgan.data.prepared import prepare, read_data_card
from ensgan.errors import CardError, DataError
from ensgan.layout import Layout


def run(params: Params, layout: Layout) -> dict:
    """Prepare the data; the same data already prepared is left as it is (`up_to_date`)."""
    before = None
    with suppress(DataError, CardError):
        before = read_data_card(layout.prepared)
    card = prepare(params.data, layout.prepared, layout.root)
    return card.model_dump(mode="json") | ({"up_to_date": True} if card == before else {})
