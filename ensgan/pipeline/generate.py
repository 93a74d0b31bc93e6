"""Stage `generate`: N images from the chosen combination -> outputs/batches/RUN_ID/."""

from __future__ import annotations

import hashlib
import json
import logging

from ensgan.config import Params
from ensgan.errors import OutputError
from ensgan.io.batches import verify_batch, write_batch
from ensgan.io.cards import DataCard, MemberCard, StackerCard, read_card
from ensgan.io.files import write_json
from ensgan.layout import Layout
from ensgan.lineage import lineage
from ensgan.pipeline.common import load_ensemble, models_sha256, params_sha256
from ensgan.pipeline.survivors import left_out, survivors
from ensgan.provenance import code_version

log = logging.getLogger(__name__)

# What the generated images depend on: not evaluation settings, storage or the schedule.
BATCH_SECTIONS = ("data", "members", "stack", "combine", "generate")
# Modules in generate's import closure that cannot change a batch's images, manifest or
# scores; everything else it imports (sampling, scoring, writing, the mixture weights in
# config.py) is hashed into the batch id, so an edit there makes a new batch.
NOT_IMAGES_CODE = frozenset(
    {
        "ensgan.errors",
        "ensgan.layout",
        "ensgan.provenance",
        "ensgan.gan.device",
        "ensgan.io.cards",
        "ensgan.io.files",
        "ensgan.io.storage",  # where batches are published, not what is in them
        "ensgan.io.s3",
        "ensgan.lineage",  # where the batch came from, recorded beside it
    }
)


def batch_run_id(params: Params, layout: Layout) -> str:
    """A batch's id is a hash of everything that made its images (the params that shape them,
    the data, each member's weights, the stacker, the sampling code), so an unchanged nightly
    run produces and publishes nothing new, `dvc repro` writes the same path every time, and a
    retrained member whose weights came out different (CUDA is not bit-reproducible) or an
    edited sampler gets a new batch."""
    parts: dict = {
        "params": params.digest(*BATCH_SECTIONS),
        "code": code_version(__name__, NOT_IMAGES_CODE),
    }
    parts["data"] = read_card(DataCard, layout.prepared).sha256
    for name in params.members:
        parts[name] = read_card(MemberCard, layout.member(name)).weights_sha256
    # files_sha256 checks the stacker's files, it does not name what they hold: skops files of
    # one estimator differ byte for byte (zip times), and a refit must not make a new batch
    stack = read_card(StackerCard, layout.stacker).model_dump(
        exclude={"member_fingerprints", "files_sha256"}
    )
    parts["stacker"] = stack
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return f"{params.generate.method}-{digest[:12]}"


def run(params: Params, layout: Layout) -> dict:
    params = survivors(params, layout)  # without the members training left out (in the id)
    run_id = batch_run_id(params, layout)
    batch_dir = layout.batches / run_id
    if batch_dir.exists():
        n, status = verify_batch(batch_dir), "exists"
        log.info("batch %s already generated (%d images, checksums verified)", run_id, n)
    else:
        ens = load_ensemble(params, layout)
        gc = params.generate
        s = ens.sample(params.generate.method, gc.n_images, seed=gc.seed)
        collapsed = s.collapsed()
        if collapsed:
            why = "; ".join(f"{m}: {reason}" for m, reason in collapsed.items())
            raise OutputError(
                f"refusing to write batch {run_id}: collapsed output ({why}); retrain or "
                "remove those members"
            )
        extra = {
            "method": params.generate.method,
            "data_sha256": read_card(DataCard, layout.prepared).sha256,
            "params_sha256": params_sha256(params),
            "models_sha256": models_sha256(params, layout),  # the evaluation that judges it
            "sampling": {k: round(v, 6) for k, v in s.stats.items()},  # accept rate, ESS
            "left_out": left_out(layout),  # members that failed training, and why
            "lineage": lineage(
                layout.root, {n: m.card and m.card.weights_sha256 for n, m in ens.members.items()}
            ),
        }
        write_batch(
            layout.batches, run_id, s.images, s.rows(), shard_size=gc.shard_size, extra=extra
        )
        n, status = len(s.images), "new"
    result = {"run_id": run_id, "path": str(batch_dir), "n_images": n}
    write_json(layout.generated, result)
    return {**result, "status": status} | ({"up_to_date": True} if status == "exists" else {})
