"""How each way of combining the members scores, on one trained project, side by side.

    .venv/bin/python benchmarks/combinations.py [--root .] [--n 1000]

Run after `make run` (or `dvc repro`): it reads the trained members, the stacker and the
evaluation feature net from ROOT, and prints the domain FD, class coverage and class KL of the
mixture, the pixel mean, and the stacker vote at several oversampling factors, with each FD as a
ratio to the mixture's (lower is better). The members' own rows are in reports/metrics.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tabulate import tabulate

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=123)
    a = ap.parse_args()
    layout = Layout(a.root)
    params = load_params(a.root / "params.yaml")
    data = load_prepared(layout.prepared)
    net = load_feature_net(layout.reports / "feature_net.safetensors")
    real_feats = embed(net, data.holdout_images)
    real_labels = data.labels[data.holdout]
    n_classes = data.n_classes
    ens = load_ensemble(params, layout)

    rows = []
    ref = evaluate_images(net, data.train_images[: a.n], real_feats, real_labels, n_classes)
    rows.append(("real (held-in)", ref))
    for method, oversample in [("mixture", 1), ("mean", 1), ("vote", 2), ("vote", 4), ("vote", 8)]:
        ens.vote_oversample = oversample
        s = ens.sample(method, a.n, seed=a.seed)
        label = method if method != "vote" else f"vote x{oversample}"
        m = evaluate_images(net, s.images, real_feats, real_labels, n_classes)
        m["stacker_score"] = float(np.mean(s.scores))
        rows.append((label, m))
    base = dict(rows)["mixture"]["fd"]
    table = [
        (name, m["fd"], m["fd"] / base, m["classes_covered"], m["class_kl"], m.get("stacker_score"))
        for name, m in rows
    ]
    headers = ["combination", "fd", "fd / mixture", "classes", "class_kl", "stacker P(real)"]
    print(f"{a.n} images each, {len(ens.members)} members, root {a.root.resolve()}")
    print(tabulate(table, headers=headers, floatfmt=".3f"))


if __name__ == "__main__":
    main()
