"""Why `drs` narrows, and whether a better ratio stops it: DRS at several γ, within pixel cells,
on a ratio without the members' discriminators, and after each member's D is trained further.

    .venv/bin/python benchmarks/drs_ratio.py [--root .] [--seeds 2] [--gammas 0 -1 -2 -3]
                                             [--strata 40] [--finetune-steps 500]

Run after `make run` (or `dvc repro`): it reads the trained members, the stacker and the
evaluation feature net from ROOT and writes nothing. DRS (Azadi et al., ICLR 2019) assumes
the discriminator is close to the optimal D* for the generator it filters; after adversarial
training it is not (it was last trained against the raw generator, and the EMA generator is
what is sampled), so DRS first keeps training D with G fixed. Rows:

- `mixture`, and `drs γ` for each --gammas with the stacker `ensgan stack` fitted (γ < 0
  accepts more: the same ratio, applied more gently);
- `drs per cell`: DRS that keeps each member's share of each of --strata pixel k-means cells
  (γ 0 and −2), so it cannot change the mix, only choose within a cell (a probe, not a
  published method);
- `drs on a pixel-PCA ratio`: DRS on a ratio with no member discriminator in it (gradient
  boosting on 30 pixel principal components, Platt-calibrated);
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import cross_val_score

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import Ensemble
from ensgan.ensemble.rejection import drs_accept_prob
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.gan.models import to_unit
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.evaluate import real_acceptance_by_class
from ensgan.pipeline.stack import fit_stage_stacker

SHOWN = ["fd", "precision", "recall", "density", "coverage", "class_kl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, -1.0, -2.0, -3.0])
    ap.add_argument("--finetune-steps", type=int, default=500)
    ap.add_argument(
        "--strata", type=int, default=40, help="pixel k-means cells of `drs per cell` (0: skip)"
    )
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
    if a.strata:
        cells = PixelCells.fit(ens, data.train_images, a.strata, seed=params.stack.seed)
        for gamma in (0.0, -2.0):
            for seed in range(a.seeds):
                images, rate = cells.sample(ens, a.n, gamma, np.random.default_rng(1000 + seed))
                m = evaluate_images(net, images, real_feats, real_labels, data.n_classes)
                label = f"drs per cell ({a.strata} cells) γ={gamma:g}"
                rows.append({"row": label, **{k: m[k] for k in SHOWN}, "accept_rate": rate})
    evenness = {
        "stacker of `ensgan stack`": real_acceptance_by_class(
            ens, real, real_labels, data.n_classes
        )
    }
    card = ens.stacker.card
    fits = {"stacker of `ensgan stack`": (card.cv_roc_auc, card.ece_calibrated)}

    # A ratio not made from the members' discriminators: gradient boosting on 30 pixel
    # principal components, the train split's real images against as many mixture samples,
    # Platt-calibrated on the calibrate split; DRS as above on it.
    pixel = PixelRatio.fit(ens, data)
    card_before = ens.stacker.card
    with pixel.in_use(ens):
        evenness["pixel-PCA ratio"] = real_acceptance_by_class(
            ens, real, real_labels, data.n_classes
        )
        fits["pixel-PCA ratio"] = (pixel.cv_roc_auc, float("nan"))
        measure("drs on a pixel-PCA ratio", "drs")
    ens.stacker.card = card_before

    if a.finetune_steps:
        keep_training(ens, data.train_images, a.finetune_steps, seed=params.stack.seed)
        st = fit_stage_stacker(ens, data, params)
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
        fit = f"CV ROC AUC {auc:.3f}" + ("" if np.isnan(ece) else f", calibrated ECE {ece:.3f}")
        print(f"- {label} ({fit}): " + " ".join(f"{v:.2f}" for v in per_class))


@dataclass
class PixelCells:
    """DRS that cannot change the mix: each member's proposals are binned by k-means cells of
    the real training images' pixels (no labels, not the evaluation's features), each cell
    keeps the share it has in the member's burn-in, and rejection (with a per-cell M, the
    95th percentile of the cell's burn-in log r̂) only chooses within a cell. Not a published
    method: a probe of whether DRS narrows only by shifting the class mix."""

    kmeans: KMeans
    share: dict[str, np.ndarray]  # member -> each cell's share of its burn-in
    log_m: dict[str, np.ndarray]  # member -> each cell's log M

    @staticmethod
    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) / 255.0

    @classmethod
    def fit(cls, ens: Ensemble, train: np.ndarray, k: int, seed: int) -> PixelCells:
        km = KMeans(k, n_init=4, random_state=seed).fit(cls.flat(train))
        rng = np.random.default_rng(seed + 3)
        share, log_m = {}, {}
        for name in ens.members:
            images = ens.member_sample(name, rng.integers(0, 2**31 - 1, 2000))
            lr, cell = ens.log_ratio(images), km.predict(cls.flat(images))
            share[name] = np.bincount(cell, minlength=k) / len(cell)
            log_m[name] = np.array(
                [
                    np.percentile(lr[cell == j] if (cell == j).sum() >= 5 else lr, 95)
                    for j in range(k)
                ]
            )
        return cls(km, share, log_m)

    def sample(
        self, ens: Ensemble, n: int, gamma: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        """n images (uniform member quotas, then cell quotas) and the acceptance rate."""
        names = list(ens.members)
        out, proposed = [], 0
        for name, quota in zip(
            names, rng.multinomial(n, np.full(len(names), 1 / len(names))), strict=True
        ):
            need = rng.multinomial(quota, self.share[name])
            while need.sum() > 0:
                images = ens.member_sample(name, rng.integers(0, 2**31 - 1, 512))
                proposed += len(images)
                cell = self.kmeans.predict(self.flat(images))
                lr, p = ens.log_ratio(images), np.empty(len(images))
                for j in np.unique(cell):
                    p[cell == j] = drs_accept_prob(lr[cell == j], self.log_m[name][j], gamma)
                for i in np.flatnonzero(rng.random(len(images)) <= p):
                    if need[cell[i]] > 0:
                        need[cell[i]] -= 1
                        out.append(images[i])
        return np.stack(out), n / proposed


@dataclass
class PixelRatio:
    """log r̂ from a classifier on pixel principal components (a probe: no member D in it)."""

    pca: PCA
    calibrated: CalibratedClassifierCV
    cv_roc_auc: float

    @classmethod
    def fit(cls, ens: Ensemble, data) -> PixelRatio:
        flat = PixelCells.flat
        pca = PCA(30, random_state=0).fit(flat(data.train_images))
        real, cal = data.train_images, data.images_of("calibrate")
        x = pca.transform(flat(np.concatenate([real, ens.sample("mixture", len(real), 1).images])))
        y = np.r_[np.ones(len(real)), np.zeros(len(real))]
        est = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=8, l2_regularization=1.0
        )
        auc = float(cross_val_score(est, x, y, cv=5, scoring="roc_auc").mean())
        est.fit(x, y)
        xc = pca.transform(flat(np.concatenate([cal, ens.sample("mixture", len(cal), 2).images])))
        yc = np.r_[np.ones(len(cal)), np.zeros(len(cal))]
        calibrated = CalibratedClassifierCV(FrozenEstimator(est), method="sigmoid").fit(xc, yc)
        return cls(pca, calibrated, auc)

    def log_ratio(self, images: np.ndarray) -> np.ndarray:
        x = self.pca.transform(PixelCells.flat(images))
        p = np.clip(self.calibrated.predict_proba(x)[:, 1], 1e-7, 1 - 1e-7)
        return np.log(p) - np.log1p(-p)

    @contextmanager
    def in_use(self, ens: Ensemble) -> Iterator[None]:
        """The ensemble samples by this ratio (and a burn-in's M per member) inside."""
        rng = np.random.default_rng(3)
        log_m = {
            n: float(
                np.percentile(
                    self.log_ratio(ens.member_sample(n, rng.integers(0, 2**31 - 1, 2000))), 95
                )
            )
            for n in ens.members
        }
        ens.stacker.card = ens.stacker.card.model_copy(update={"drs_log_m": log_m})
        ens.log_ratio = self.log_ratio  # an instance attribute shadows the method
        try:
            yield
        finally:
            del ens.log_ratio


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
