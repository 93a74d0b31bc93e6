"""Stage `evaluate`: every member and every combination side by side.

Writes reports/metrics.json (DVC metrics), reports/plots/ (DVC plots), reports/grids/*.png, the
feature net it measured with, and reports/index.html.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ensgan.config import Params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import METHODS, collapse
from ensgan.eval.features import embed, pseudo_labels, save_feature_net, train_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.eval.report import write_html
from ensgan.io.cards import StackerCard, read_card
from ensgan.io.files import atomic_dir, atomic_write, write_json
from ensgan.io.images import save_grid
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble, params_sha256


def run(params: Params, layout: Layout) -> dict:
    ec = params.evaluate
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout)  # fails before any report file is touched
    out = layout.reports
    out.mkdir(parents=True, exist_ok=True)

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
    tiles: dict[str, tuple[str, np.ndarray]] = {}  # caption -> (file stem, images)

    reference = data.images[train_mask][: ec.n_samples]
    metrics: dict = {"real": measure(reference, ens.score(reference))}
    metrics["members"] = {}
    for name in ens.members:
        images = ens.member_sample(name, seeds)
        metrics["members"][name] = measure(images, ens.score(images))
        metrics["members"][name]["collapsed"] = collapse(images) is not None
        tiles[name] = (name, images[:n_grid])
    metrics["ensemble"] = {}
    for method in METHODS:
        s = ens.sample(method, ec.n_samples, seed=ec.seed)
        metrics["ensemble"][method] = measure(s.images, s.scores)
        stem = f"ensemble-{method}"
        if stem in params.members:  # a member named like a combination's grid file
            tiles[stem] = (f"member-{stem}", tiles[stem][1])
        tiles[f"ensemble: {method}"] = (stem, s.images[:n_grid])

    stack_card = read_card(StackerCard, layout.stacker)  # the model itself is in `ens`
    metrics["stacker_model"] = stack_card.model
    metrics["stacker_cv_roc_auc"] = stack_card.cv_roc_auc
    metrics["data_sha256"] = data.card.sha256
    metrics["params_sha256"] = params_sha256(params)
    with atomic_dir(out / "grids") as tmp:  # no grid of a removed member survives
        for stem, images in tiles.values():
            save_grid(images, tmp / f"{stem}.png", nrow=ec.grid_size)
    grids = {caption: f"grids/{stem}.png" for caption, (stem, _) in tiles.items()}
    write_json(out / "metrics.json", metrics)
    _write_plots(params, layout, metrics)
    write_html(
        out / "index.html",
        title="ensgan report",
        metrics=metrics,
        grids=grids,
        extra={
            "data sha256": data.card.sha256,
            "params sha256": metrics["params_sha256"],
            "stacker": f"{stack_card.model}, CV ROC AUC {stack_card.cv_roc_auc:.3f}",
            "real row": "held-in real images vs the hold-out: the floor for every metric",
        },
    )
    return metrics


def _write_plots(params: Params, layout: Layout, metrics: dict) -> None:
    plots = layout.reports / "plots"
    with atomic_dir(plots / "losses") as losses:
        for name in params.members:
            shutil.copyfile(layout.member(name) / "losses.csv", losses / f"{name}.csv")
    rows = ["model,kind,fd,class_kl"]
    for kind, group in (("member", metrics["members"]), ("ensemble", metrics["ensemble"])):
        for name, m in group.items():
            rows.append(f"{name},{kind},{m['fd']:.6f},{m['class_kl']:.6f}")
    text = "\n".join(rows) + "\n"
    atomic_write(plots / "fd.csv", lambda tmp: Path(tmp).write_text(text))
