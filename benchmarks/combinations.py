"""Every member, every combination and one member trained for the ensemble's total steps,
side by side on one trained project: does the ensemble earn its keep?

    .venv/bin/python benchmarks/combinations.py [--root .] [--n 2000] [--seeds 5] [--no-single]
                                               [--only member mixture weighted]

Run after `make run` (or `dvc repro`): it reads the trained members, the stacker and the
evaluation feature net from ROOT. The equal-compute alternative (what a user would do instead
of training K members: one member with the first member's settings, for K x train.steps)
is trained once into ROOT/bench/single-long/ and reused; the EMA generator of its last 5
checkpoints (every 2,000 steps) is kept, and their plain mixture is one more row: a
self-ensemble (snapshots of one run) costs no more than that one member. Precision, recall,
density and coverage are measured at equal counts against the evaluate split (k = 5); every
figure is the mean over --seeds sampling seeds, and the last columns are ratios to the plain
mixture. Below the table, the verdict the issue asks for: the published combination
(generate.method) against the best member (lowest FD) and against the best member on each
figure, with each difference and its standard error over the seeds; "beats" needs the
difference to exceed two standard errors, "ties" is anything within them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model

from ensgan.config import load_params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import METHODS, Ensemble, latents
from ensgan.eval.features import embed, load_feature_net
from ensgan.eval.metrics import evaluate_images
from ensgan.eval.table import CHARTED, METRICS
from ensgan.gan.loaded import LoadedMember, load_member
from ensgan.gan.member import train_member
from ensgan.gan.models import build_pair
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble

SHOWN = ["fd", "kid", "precision", "recall", "density", "coverage", "class_kl", "classes_covered"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--only", nargs="+", help="rows whose name starts with one of these (default: all)"
    )
    ap.add_argument("--no-single", action="store_true", help="skip the equal-compute member")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (more than 1 can be far slower on a busy machine: docs/results.md)",
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
        snaps = snapshot_ensemble(single, layout.root / "bench" / "single-long-snapshots")
        if snaps is None:
            print("no snapshots of the single member: delete bench/single-long to train it again")
        else:
            label = f"its snapshots at {', '.join(m[5:] for m in snaps.members)} (mixture)"
            samplers[label] = lambda n, seed: snaps.sample("mixture", n, seed=seed).images

    published, ec = params.generate.method, params.evaluate
    if a.only:
        keep = (*a.only, "mixture", published)
        samplers = {k: v for k, v in samplers.items() if k.startswith(keep)}
    rows = []
    for label, sample in samplers.items():
        for seed in range(a.seeds):
            m = evaluate_images(
                net, sample(a.n, 1000 + seed), real_feats, real_labels, data.n_classes,
                kid_subset_size=ec.kid_subset_size, kid_subsets=ec.kid_subsets,
                seed=ec.seed, prdc_real=ec.prdc_real,
            )  # fmt: skip
            rows.append({"model": label, "seed": seed, **{k: m[k] for k in SHOWN}})
    runs = pd.DataFrame(rows)
    df = runs.groupby("model", sort=False)[SHOWN].mean()
    base = df.loc["mixture"]
    for k in ("fd", "recall", "coverage"):
        df[f"{k} / mixture"] = df[k] / base[k]
    spread = runs.groupby("model", sort=False)[["fd", "coverage"]].std(ddof=1)
    df["fd sd %"] = 100 * spread.fd / df.fd  # one seed's sampling noise: what a gate must allow
    df["coverage sd"] = spread.coverage
    print(
        f"{a.n} images per row, mean of {a.seeds} seeds; {len(ens.members)} members of "
        f"{params.train.steps} steps ({params.train.ensemble}); reference: the evaluate "
        f"split ({len(real)} images)"
    )
    print(df.to_markdown(floatfmt=".3f"))
    print(verdict(runs, published))


# The target's figures (the charted ones), each with the sign of "better".
VERDICT = {name: -1 if METRICS[name].lower_is_better else 1 for name in CHARTED}


def verdict(runs: pd.DataFrame, published: str) -> str:
    """The published combination against the best member (lowest mean FD) and against the best
    member on each figure: the difference at each sampling seed, its mean and standard error."""
    members = runs[runs.model.str.startswith("member ")]
    if members.empty or published not in set(runs.model):
        return ""
    means = members.groupby("model")[list(VERDICT)].mean()
    lines = [f"\nThe published combination `{published}` against:"]
    best_fd = means.fd.idxmin()
    targets = [("the best member by FD", {k: best_fd for k in VERDICT})]
    per_figure = {
        k: (means[k].idxmin() if sign < 0 else means[k].idxmax()) for k, sign in VERDICT.items()
    }
    targets.append(("the best member on each figure", per_figure))
    pub = runs[runs.model == published].set_index("seed")
    for title, who in targets:
        parts = []
        for k, sign in VERDICT.items():
            other = runs[runs.model == who[k]].set_index("seed")[k]
            diff = sign * (pub[k] - other)  # > 0: the combination is better
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            word = (
                "beats" if diff.mean() > 2 * se else "loses to" if diff.mean() < -2 * se else "ties"
            )
            parts.append(
                f"{k} {pub[k].mean():.3f} vs {other.mean():.3f} ({who[k][7:]}): {word} "
                f"(better by {diff.mean():+.3f} ± {se:.3f})"
            )
        lines.append(f"- {title}: " + "; ".join(parts))
    return "\n".join(lines)


def single_long_member(params, layout: Layout):
    """The first member's settings (architecture, width, seed) for the ensemble's total
    generator steps, trained once, then reused: what a user would train instead of K members."""
    first = next(iter(params.members.values()))
    member = first.model_copy(update={"discriminators": 1})
    steps = params.train.steps * len(params.members)
    train = params.train.model_copy(update={"steps": steps, "checkpoint_every": 2000})
    out = layout.root / "bench" / "single-long"
    snaps = out.parent / "single-long-snapshots"
    keep_from = steps - (SNAPSHOTS - 1) * train.checkpoint_every

    def snapshot(step: int) -> None:  # told after each checkpoint is written
        if step % train.checkpoint_every == 0 and step >= keep_from:
            dest = snaps / f"step-{step}"
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("generator_ema.safetensors", "discriminator.safetensors"):
                shutil.copy2(out / "checkpoint" / f, dest / f)

    train_member(
        "single-long", member, train, layout.prepared, out, callback=snapshot, progress=True
    )
    return load_member(out)


SNAPSHOTS = 5


def snapshot_ensemble(single: LoadedMember, snaps: Path) -> Ensemble | None:
    """The single member's kept EMA snapshots as an ensemble, or None when there are not
    SNAPSHOTS of them (it was trained before snapshots were kept)."""
    dirs = sorted(snaps.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if len(dirs) < SNAPSHOTS:
        return None
    card = single.card
    members = {}
    for d in dirs[-SNAPSHOTS:]:
        g, disc = build_pair(
            card.arch, z_dim=card.z_dim, size=card.image_size, channels=card.channels,
            width=card.width,
        )  # fmt: skip
        load_model(g, str(d / "generator_ema.safetensors"))
        load_model(disc, str(d / "discriminator.safetensors"))
        name = f"step {int(d.name.split('-')[1]):,}"
        members[name] = LoadedMember(name, card.z_dim, g.eval(), disc.eval(), single.device)
    return Ensemble(members)


if __name__ == "__main__":
    main()
