"""The pipeline's stages as plain functions: read files, write files, return small metadata.

Both drivers call these and nothing else: `dvc.yaml` through the `ensgan` CLI, and the Prefect
flow in `flows/` as tasks. Nothing heavy travels between stages in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ensgan.batches import BatchError, publish_batch, verify_batch, write_batch
from ensgan.config import ConfigError, Params
from ensgan.data import DataError, load_prepared, prepare
from ensgan.ensemble import METHODS, Ensemble
from ensgan.files import BusyError, write_json
from ensgan.layout import Layout
from ensgan.metrics import (
    embed,
    evaluate_images,
    pseudo_labels,
    save_feature_net,
    train_feature_net,
)
from ensgan.report import save_grid, write_html
from ensgan.stacking import StackerError, fit_stacker, load_stacker, save_stacker
from ensgan.storage import StorageError, open_store
from ensgan.training import DivergedError, load_member, resolve_device, train_member

log = logging.getLogger(__name__)

# Errors a user causes and can fix (params, data, storage, a diverged member): reported as one
# line by the CLI, and never retried by the flow (trying again would fail the same way).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    StorageError,
    BatchError,
    DivergedError,
    StackerError,
    BusyError,
    FileNotFoundError,
)

# Sections that change what the pipeline produces (not where it is stored or when it runs).
PRODUCT_SECTIONS = ("data", "members", "train", "stack", "ensemble", "evaluate", "generate")


def params_sha256(params: Params) -> str:
    return params.digest(*PRODUCT_SECTIONS)


def prepare_stage(params: Params, layout: Layout) -> dict:
    return prepare(params.data, layout.prepared, layout.root)


def train_stage(
    params: Params,
    layout: Layout,
    name: str,
    *,
    progress: bool | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict:
    if name not in params.members:
        raise ConfigError(f"unknown member {name!r}; params.yaml lists {sorted(params.members)}")
    return train_member(
        params, name, layout.prepared, layout.member(name), progress=progress, callback=callback
    )


def load_ensemble(params: Params, layout: Layout, *, with_stacker: bool = True) -> Ensemble:
    device = resolve_device(params.train.device)
    names = list(params.members)
    stacker = None
    if with_stacker:
        stacker, card = load_stacker(layout.stacker)
        if sorted(card["members"]) != sorted(names):
            raise ConfigError(
                f"the stacker was fitted on members {card['members']}, params list "
                f"{names}: run `ensgan stack` again"
            )
        names = card["members"]  # the stacker's feature columns come in this order
    members = {name: load_member(layout.member(name), device) for name in names}
    return Ensemble(
        members,
        weights=params.mixture_weights(),
        stacker=stacker,
        vote_oversample=params.ensemble.vote_oversample,
    )


def stack_stage(params: Params, layout: Layout) -> dict:
    """Fit the meta-learner: held-out real images (1) against mixture samples (0)."""
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout, with_stacker=False)
    real = ens.features(data.holdout_images)
    n_fake = params.stack.n_fake or len(real)
    fake = ens.features(ens.sample("mixture", n_fake, seed=params.stack.seed + 1).images)
    est, info = fit_stacker(
        real, fake, model=params.stack.model, cv_folds=params.stack.cv_folds, seed=params.stack.seed
    )
    card = {
        **info,
        "members": list(ens.members),
        "data_sha256": data.card["sha256"],
        "member_fingerprints": {n: m.card["fingerprint"] for n, m in ens.members.items()},
    }
    save_stacker(est, layout.stacker, card)
    return card


def evaluate_stage(params: Params, layout: Layout) -> dict:
    """Every member and every combination side by side: metrics.json, grids, plots, HTML."""
    ec = params.evaluate
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout)  # fails before any report file is touched
    out = layout.reports
    (out / "grids").mkdir(parents=True, exist_ok=True)

    # Feature space: a small classifier trained on the real training split (a domain FID).
    if data.labels is not None and len(np.unique(data.labels)) >= 2:
        labels, n_classes = data.labels, data.n_classes
    else:  # no usable labels: classes are k-means clusters of the real images
        n_classes = 10
        labels = pseudo_labels(data.images, n_classes)
    train_mask = ~data.holdout
    net = train_feature_net(
        data.images[train_mask],
        labels[train_mask],
        n_classes=n_classes,
        steps=ec.classifier_steps,
        seed=ec.seed,
    )
    save_feature_net(net, out / "feature_net.safetensors")
    real_feats = embed(net, data.holdout_images)
    real_labels = labels[data.holdout]

    def measure(images: np.ndarray, scores: np.ndarray | None) -> dict:
        m = evaluate_images(net, images, real_feats, real_labels, n_classes)
        m["stacker_score"] = None if scores is None else round(float(np.mean(scores)), 6)
        return m

    rng = np.random.default_rng(ec.seed)
    seeds = rng.integers(0, 2**31 - 1, size=ec.n_samples)  # same latents for every member
    n_grid = ec.grid_size**2
    grids: dict[str, str] = {}

    reference = data.images[train_mask][: ec.n_samples]
    metrics: dict = {"real": measure(reference, ens.score(reference))}
    metrics["members"] = {}
    for name in ens.members:
        images = ens.member_sample(name, seeds)
        metrics["members"][name] = measure(images, ens.score(images))
        grids[name] = _grid(images[:n_grid], out, name, ec.grid_size)
    metrics["ensemble"] = {}
    for method in METHODS:
        s = ens.sample(method, ec.n_samples, seed=ec.seed)
        metrics["ensemble"][method] = measure(s.images, s.scores)
        grid = _grid(s.images[:n_grid], out, f"ensemble-{method}", ec.grid_size)
        grids[f"ensemble: {method}"] = grid

    stack_card = json.loads((layout.stacker / "card.json").read_text())  # the model is in `ens`
    metrics["stacker_model"] = stack_card["model"]
    metrics["stacker_cv_roc_auc"] = stack_card["cv_roc_auc"]
    metrics["data_sha256"] = data.card["sha256"]
    metrics["params_sha256"] = params_sha256(params)
    write_json(out / "metrics.json", metrics)
    _write_plots(params, layout, metrics)
    write_html(
        out / "index.html",
        title="ensgan report",
        metrics=metrics,
        grids=grids,
        extra={
            "data sha256": data.card["sha256"],
            "params sha256": metrics["params_sha256"],
            "stacker": f"{stack_card['model']}, CV ROC AUC {stack_card['cv_roc_auc']:.3f}",
            "real row": "held-in real images vs the hold-out: the floor for every metric",
        },
    )
    return metrics


def _grid(images: np.ndarray, out: Path, name: str, nrow: int) -> str:
    rel = f"grids/{name}.png"
    save_grid(images, out / rel, nrow=nrow)
    return rel


def _write_plots(params: Params, layout: Layout, metrics: dict) -> None:
    plots = layout.reports / "plots"
    losses = plots / "losses"
    shutil.rmtree(losses, ignore_errors=True)
    losses.mkdir(parents=True)
    for name in params.members:
        shutil.copyfile(layout.member(name) / "losses.csv", losses / f"{name}.csv")
    rows = ["model,kind,fd,class_kl"]
    for kind, group in (("member", metrics["members"]), ("ensemble", metrics["ensemble"])):
        for name, m in group.items():
            rows.append(f"{name},{kind},{m['fd']:.6f},{m['class_kl']:.6f}")
    (plots / "fd.csv").write_text("\n".join(rows) + "\n")


# What the generated images depend on: not evaluation settings, storage or the schedule.
BATCH_SECTIONS = ("data", "members", "stack", "ensemble", "generate")


def batch_run_id(params: Params, layout: Layout) -> str:
    """A batch's id is a hash of everything that made its images (the params that shape them,
    the data, each member's weights, the stacker), so an unchanged nightly run produces and
    publishes nothing new, `dvc repro` writes the same path every time, and a retrained member
    whose weights came out different (CUDA is not bit-reproducible) gets a new batch."""
    parts: dict = {"params": params.digest(*BATCH_SECTIONS)}
    parts["data"] = json.loads((layout.prepared / "card.json").read_text())["sha256"]
    for name in params.members:
        card = json.loads((layout.member(name) / "card.json").read_text())
        parts[name] = card["weights_sha256"]
    stack_card = json.loads((layout.stacker / "card.json").read_text())
    parts["stacker"] = {k: v for k, v in stack_card.items() if k != "member_fingerprints"}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return f"{params.ensemble.method}-{digest[:12]}"


def generate_stage(params: Params, layout: Layout) -> dict:
    """N images from the chosen combination -> tar shards + manifest.jsonl (written last)."""
    run_id = batch_run_id(params, layout)
    batch_dir = layout.batches / run_id
    if batch_dir.exists():
        n, status = verify_batch(batch_dir), "exists"
        log.info("batch %s already generated (%d images, checksums verified)", run_id, n)
    else:
        ens = load_ensemble(params, layout)
        gc = params.generate
        s = ens.sample(params.ensemble.method, gc.n_images, seed=gc.seed)
        data_sha = json.loads((layout.prepared / "card.json").read_text())["sha256"]
        extra = {
            "method": params.ensemble.method,
            "data_sha256": data_sha,
            "params_sha256": params_sha256(params),
        }
        write_batch(
            layout.batches, run_id, s.images, s.rows(), shard_size=gc.shard_size, extra=extra
        )
        n, status = len(s.images), "new"
    result = {"run_id": run_id, "path": str(batch_dir), "n_images": n}
    write_json(layout.generated, result)
    return {**result, "status": status}


def publish_stage(params: Params, layout: Layout, run_id: str | None = None) -> dict:
    """Upload a generated batch (manifest last) and write a receipt of where it went.
    Without a run_id, the batch the last `generate` wrote (outputs/generated.json)."""
    if run_id is None:
        if not layout.generated.exists():
            raise FileNotFoundError(f"no {layout.generated}: run `ensgan generate` first")
        run_id = json.loads(layout.generated.read_text())["run_id"]
    batch_dir = layout.batches / run_id
    if not batch_dir.exists():
        raise FileNotFoundError(f"no batch {run_id} under {layout.batches}: run generate first")
    store = open_store(params.storage, layout.root)
    result = {"run_id": run_id, **publish_batch(store, batch_dir)}
    result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(layout.published, result)
    return result
