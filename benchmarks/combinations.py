"""Every member, every combination and one member trained for the ensemble's total steps,
side by side on one trained project: does the ensemble earn its keep?

    .venv/bin/python benchmarks/combinations.py [--root .] [--n 1000] [--seeds 3] [--no-single]

Run after `make run` (or `dvc repro`): it reads the trained members, the stacker and the
evaluation feature net from ROOT. The equal-compute alternative (what a user would do instead
of training K members: one member with the first member's settings, for K x train.steps)
is trained once into ROOT/bench/single-long/ and reused. Precision, recall, density and
coverage are measured at equal counts against the evaluate split (k = 5); every figure is the
mean over --seeds sampling seeds, and the last columns are ratios to the plain mixture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import METHODS, latents
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.gan.loaded import load_member
from ensgan.gan.member import train_member
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble

SHOWN = ["fd", "precision", "recall", "density", "coverage", "class_kl", "classes_covered"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-single", action="store_true", help="skip the equal-compute member")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (2 on a busy 2-core machine ran 25x slower than 1, measured)",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    layout = Layout(a.root)
    params = load_params(a.root / "params.yaml")
    data = load_prepared(layout.prepared)
    net = load_feature_net(layout.reports / "feature_net.safetensors")
    real = data.images_of("evaluate")
    real_feats, real_labels = embed(net, real), data.labels_of("evaluate")
    ens = load_ensemble(params, layout)

    samplers: dict[str, object] = {
        "real (train split)": lambda n, seed: data.train_images[:n],
    }
    for name in ens.members:
        samplers[f"member {name}"] = lambda n, seed, name=name: ens.member_sample(
            name, np.random.default_rng(seed).integers(0, 2**31 - 1, n)
        )
    for method in METHODS:
        samplers[method] = lambda n, seed, m=method: ens.sample(m, n, seed=seed).images
    for k in (2, 8):

        def vote_k(n: int, seed: int, k: int = k) -> np.ndarray:
            ens.vote_oversample = k
            return ens.sample("vote", n, seed=seed).images

        samplers[f"vote x{k}"] = vote_k
    if not a.no_single:
        single = single_long_member(params, layout)
        samplers[f"single {single.card.arch}, {single.card.steps:,} steps"] = lambda n, seed: (
            single.generate_u8(
                latents(np.random.default_rng(seed).integers(0, 2**31 - 1, n), single.z_dim)
            ).numpy()
        )

    rows = []
    for label, sample in samplers.items():
        for seed in range(a.seeds):
            m = evaluate_images(
                net, sample(a.n, 1000 + seed), real_feats, real_labels, data.n_classes
            )
            rows.append({"model": label, **{k: m[k] for k in SHOWN}})
    df = pd.DataFrame(rows).groupby("model", sort=False)[SHOWN].mean()
    base = df.loc["mixture"]
    for k in ("fd", "recall", "coverage"):
        df[f"{k} / mixture"] = df[k] / base[k]
    print(
        f"{a.n} images per row, mean of {a.seeds} seeds; {len(ens.members)} members of "
        f"{params.train.steps} steps; reference: the evaluate split ({len(real)} images)"
    )
    print(df.to_markdown(floatfmt=".3f"))


def single_long_member(params, layout: Layout):
    """The first member's settings (architecture, width, seed) for the ensemble's total
    generator steps, trained once, then reused: what a user would train instead of K members."""
    first = next(iter(params.members.values()))
    member = first.model_copy(update={"discriminators": 1})
    steps = params.train.steps * len(params.members)
    train = params.train.model_copy(update={"steps": steps, "checkpoint_every": 2000})
    out = layout.root / "bench" / "single-long"
    train_member("single-long", member, train, layout.prepared, out, progress=True)
    return load_member(out)


if __name__ == "__main__":
    main()
