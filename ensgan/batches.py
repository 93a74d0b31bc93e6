"""What a consumer of published batches imports: `read_manifest` as a pandas DataFrame.

    from ensgan.batches import read_manifest
    df = read_manifest("downloads/RUN_ID")        # a pulled batch folder (or its manifest.jsonl)
    df.groupby("member").score.describe()

One row per image: `id`, `shard`, `file`, `member`, `seed`, `score`, `sha256`, plus the fields
every image shares, from batch.json (`run_id`, `method`, `data_sha256`, `params_sha256`), so a
frame of several batches concatenated still says where each row came from. Light: pandas
only, no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ensgan.io.batches import BATCH_JSON, MANIFEST, _read_manifest, read_batch_json

if TYPE_CHECKING:
    import pandas as pd

SHARED = ("run_id", "method", "data_sha256", "params_sha256")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A batch's manifest as a DataFrame, one row per image, in `id` order."""
    import pandas as pd

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    rows = _read_manifest(folder / MANIFEST)
    meta = read_batch_json(folder / BATCH_JSON).model_dump(exclude_unset=True)
    df = pd.DataFrame.from_records(rows)
    for key in SHARED:  # format 1 repeated some on every row; format 2 keeps them once
        if key not in df.columns and key in meta:
            df[key] = meta[key]
    return df.sort_values("id", kind="stable").reset_index(drop=True)
