"""Why `drs` narrows, and whether a better ratio stops it: DRS at several γ, and DRS after each
member's discriminator is trained further against the generator that is sampled (G fixed).

    .venv/bin/python benchmarks/drs_ratio.py [--root .] [--seeds 2] [--gammas 0 -1 -2 -3]
                                             [--finetune-steps 500]

Run after `make run` (or `dvc repro`): it reads the trained members, the stacker and the
evaluation feature net from ROOT and writes nothing. DRS (Azadi et al., ICLR 2019) assumes
the discriminator is close to the optimal D* for the generator it filters; after adversarial
training it is not (it was last trained against the raw generator, and the EMA generator is
what is sampled), so DRS first keeps training D with G fixed. Rows:

- `mixture`, and `drs γ` for each --gammas with the stacker `ensgan stack` fitted (γ < 0
  accepts more: the same ratio, applied more gently);
- `drs, D +N steps`: each member's D trained N more steps (real: the train split, as in
  training; fake: its EMA generator), then the stacker fitted again the way `ensgan stack`
  does (the stack and calibrate splits), then DRS at γ = 0.

Precision, recall, density and coverage at equal counts against the evaluate split (k = 5),
the mean over --seeds sampling seeds. Per stacker it also prints how evenly DRS would accept
the evaluate split's real images, class by class (1.0 = the mean acceptance), the check
`evaluate` records as the stacker's `real_acceptance_by_class`.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import Ensemble
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.gan.models import to_unit
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.evaluate import real_acceptance_by_class
from ensgan.pipeline.stack import fit_ensemble_stacker

SHOWN = ["fd", "precision", "recall", "density", "coverage", "class_kl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, -1.0, -2.0, -3.0])
    ap.add_argument("--finetune-steps", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(1)
    params = load_params(a.root / "params.yaml")
    layout = Layout(a.root)
    data = load_prepared(layout.prepared)
    net = load_feature_net(layout.reports / "feature_net.safetensors")
    real = data.images_of("evaluate")
    real_feats, real_labels = embed(net, real), data.labels_of("evaluate")
    ens = load_ensemble(params, layout)

    rows: list[dict] = []

    def measure(label: str, method: str) -> None:
        for seed in range(a.seeds):
            s = ens.sample(method, a.n, seed=1000 + seed)
            m = evaluate_images(net, s.images, real_feats, real_labels, data.n_classes)
            rows.append({"row": label, **{k: m[k] for k in SHOWN}, **s.stats})

    measure("mixture", "mixture")
    for gamma in a.gammas:
        ens.drs_gamma = gamma
        measure(f"drs γ={gamma:g}", "drs")
    ens.drs_gamma = 0.0
    evenness = {
        "stacker of `ensgan stack`": real_acceptance_by_class(
            ens, real, real_labels, data.n_classes
        )
    }
    card = ens.stacker.card
    fits = {"stacker of `ensgan stack`": (card.cv_roc_auc, card.ece_calibrated)}

    if a.finetune_steps:
        keep_training(ens, data.train_images, a.finetune_steps, seed=params.stack.seed)
        st = fit_ensemble_stacker(ens, data, params)
        label = f"drs, D +{a.finetune_steps} steps"
        measure(label, "drs")
        evenness[label] = real_acceptance_by_class(ens, real, real_labels, data.n_classes)
        fits[label] = (st.card.cv_roc_auc, st.card.ece_calibrated)

    df = pd.DataFrame(rows).groupby("row", sort=False)[[*SHOWN, "accept_rate", "ess"]].mean()
    print(
        f"{a.n} images per row, mean of {a.seeds} seeds; {len(ens.members)} members of "
        f"{params.train.steps} steps; reference: the evaluate split ({len(real)} images)"
    )
    print(df.to_markdown(floatfmt=".3f"))
    print("\nHow evenly DRS accepts held-out real images, per class (mean = 1):")
    for label, per_class in evenness.items():
        auc, ece = fits[label]
        print(
            f"- {label} (CV ROC AUC {auc:.3f}, calibrated ECE {ece:.3f}): "
            + " ".join(f"{v:.2f}" for v in per_class)
        )


def keep_training(ens: Ensemble, real_u8: np.ndarray, steps: int, seed: int) -> None:
    """Train each member's discriminator `steps` more steps against its EMA generator, with the
    generator fixed (Adam 2e-4, β1 0.5, batch 64, the non-saturating loss's D side)."""
    rng = np.random.default_rng(seed)
    real_all = torch.from_numpy(real_u8)
    for name, member in ens.members.items():
        d = copy.deepcopy(member.discriminator).train().requires_grad_(True)
        opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for _ in range(steps):
            real = to_unit(real_all[rng.integers(0, len(real_all), 64)])
            fake = to_unit(
                torch.from_numpy(ens.member_sample(name, rng.integers(0, 2**31 - 1, 64)))
            )
            lr, lf = d(real).flatten(), d(fake).flatten()
            loss = F.binary_cross_entropy_with_logits(
                lr, torch.ones_like(lr)
            ) + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
            opt.zero_grad()
            loss.backward()
            opt.step()
        member.discriminator = d.eval().requires_grad_(False)


if __name__ == "__main__":
    main()
