"""Does `drs` meet its target with a better ratio? DRS against the plain mixture, at equal
counts, for each stacker (its features, model and generated negatives) and temperature.

    .venv/bin/python benchmarks/drs_temperature.py [--root .] [--n 4000] [--seeds 8]
                                                   [--temperatures 1 0.5 0.4 0.3]

Run after `make run` (or `dvc repro`): it reads the trained members and the evaluation
feature net from ROOT, fits each stacker in memory the way `ensgan stack` does (the stack and
calibrate splits; nothing is written), and samples DRS with `combine.drs_temperature` T
(r̂^T: T = 1 is the paper's rule, below 1 flattens the ratio). Stackers:

- `logits`: the default, logistic regression (C = 0.01) on the members' logits and the
  mixture's analytic log-ratio, as many generated negatives as real images;
- `hidden`: `stack.features: hidden`, `stack.model: logistic_pca`, `stack.n_fake: 2000`: the
  members' discriminators' last hidden layers as well, standardised, 64 principal components,
  logistic regression with C = 0.0003, balanced.

Each seed draws --n images from the mixture and --n from DRS; the figures are their
differences (DRS minus mixture), mean ± standard error over the seeds. The issue's target:
precision up and FD down (beyond 2 SE), recall and coverage not down by more than 0.01.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.stack import fit_stage_stacker

FIGURES = ["fd", "precision", "recall", "coverage", "class_kl"]
STACKERS = {
    "logits": {"features": "logits", "model": "logistic", "n_fake": None},
    "hidden": {"features": "hidden", "model": "logistic_pca", "n_fake": 2000},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.4, 0.3])
    ap.add_argument("--stackers", nargs="+", choices=list(STACKERS), default=list(STACKERS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    layout = Layout(a.root)
    params = load_params(a.root / "params.yaml")
    data = load_prepared(layout.prepared)
    net = load_feature_net(layout.reports / "feature_net.safetensors")
    real_feats, real_labels = embed(net, data.images_of("evaluate")), data.labels_of("evaluate")
    ens = load_ensemble(params, layout, with_stacker=False)

    def measure(images: np.ndarray) -> dict:
        m = evaluate_images(net, images, real_feats, real_labels, data.n_classes)
        return {k: m[k] for k in FIGURES}

    mixture = [measure(ens.sample("mixture", a.n, seed=s).images) for s in range(a.seeds)]
    rows = []
    for name in a.stackers:
        stack = params.stack.model_copy(update=STACKERS[name])
        stacker = fit_stage_stacker(ens, data, params.model_copy(update={"stack": stack}))
        card = stacker.card
        print(f"stacker {name}: CV ROC AUC {card.cv_roc_auc:.3f}, ECE {card.ece_raw:.3f} -> "
              f"{card.ece_calibrated:.3f}", flush=True)  # fmt: skip
        for t in a.temperatures:
            ens.drs_temperature = t
            for s in range(a.seeds):
                out = ens.sample("drs", a.n, seed=s)
                m = measure(out.images)
                rows.append({"stacker": name, "T": t, "seed": s, **m,
                             "accept": out.stats["accept_rate"],
                             **{f"d_{k}": m[k] - mixture[s][k] for k in FIGURES}})  # fmt: skip
    df = pd.DataFrame(rows)
    mix = pd.DataFrame(mixture).mean()
    print(f"\nmixture ({a.n} images, {a.seeds} seeds): "
          + ", ".join(f"{k} {mix[k]:.4g}" for k in FIGURES))  # fmt: skip
    g = df.groupby(["stacker", "T"], sort=False)
    table = g[["accept", *FIGURES]].mean()
    for k in FIGURES:
        d = g[f"d_{k}"]
        table[f"Δ{k}"] = [f"{m:+.4g} ± {e:.2g}" for m, e in zip(d.mean(), d.sem(), strict=True)]
    met = []
    for _, grp in g:
        mean, se = grp[[f"d_{k}" for k in FIGURES]].mean(), grp[[f"d_{k}" for k in FIGURES]].sem()
        met.append(
            "met" if mean["d_precision"] > 2 * se["d_precision"]
            and mean["d_fd"] < -2 * se["d_fd"]
            and mean["d_recall"] > -0.01 and mean["d_coverage"] > -0.01 else "not met"
        )  # fmt: skip
    table["target"] = met
    print(table.to_markdown(floatfmt=".4g"))


if __name__ == "__main__":
    main()
