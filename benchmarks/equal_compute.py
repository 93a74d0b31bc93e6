"""Does an ensemble beat one long member at equal compute? Each training method trained from
scratch with several training seeds, its mixture scored side by side (issue 21 §3).

    .venv/bin/python benchmarks/equal_compute.py [--params params.yaml] [--out bench/equal]
        [--seeds 3] [--steps N] [--n 2000] [--methods single bagging shared boosting clustered]
        [--table-only]

Each method gets the same total generator updates: K members x train.steps for the ensembles
(bagging, boosting, clustered: the params' members; shared: K heads of the first member's
architecture and width, K x steps updates of all heads at once, the fakes split over them, the
batch rounded to the nearest multiple of K), and
one member (the first, the params' best architecture) for K x steps. Every project is trained by
the pipeline's own `train` stage into OUT/METHOD/seed-S/ (prepared data shared), one member
after another on one thread, so its CPU time is the method's; a rerun reuses what is trained
and scored (OUT/results/). Training seed S adds 100 x S to every member's seed (and S to
train.cluster_seed). The mixture of each project (the published default; weights as the method
sets them) is scored on --n images against the evaluate split by the evaluation's own judge.
Each figure is the mean over the training seeds ± its standard error; below the table, each
method against the single member, with the target's verdict (FD, KID, recall and coverage
better beyond two standard errors at once).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ensgan.config import Params, load_params
from ensgan.data.prepared import load_prepared
from ensgan.eval.features import save_feature_net
from ensgan.eval.table import METRICS
from ensgan.layout import Layout
from ensgan.pipeline import prepare, train
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.evaluate import fit_judge

METHODS = ("single", "bagging", "shared", "boosting", "clustered", "clustered-da")
SHOWN = ["fd", "kid", "precision", "recall", "density", "coverage", "class_kl"]
TARGET = ["fd", "kid", "recall", "coverage"]  # the issue's: all better at once
DIFFAUGMENT = ["translation", "cutout"]  # clustered-da: for the smaller data each member sees


def method_params(base: Params, method: str, seed: int) -> Params:
    """The params of one method and training seed, at the base's total generator updates."""
    k, steps = len(base.members), base.train.steps
    members = {
        n: m.model_copy(update={"seed": m.seed + 100 * seed}) for n, m in base.members.items()
    }
    first_name, first = next(iter(members.items()))
    tr = base.train.model_copy(update={"workers": 1, "min_members": None})
    if method == "single":
        members, tr = {first_name: first}, tr.model_copy(update={"steps": k * steps})
    elif method == "shared":
        members = {
            f"head{i}": first.model_copy(update={"seed": first.seed + i, "bootstrap": False})
            for i in range(k)
        }
        batch = k * max(1, round(tr.batch_size / k))  # the nearest that splits over the heads
        tr = tr.model_copy(update={"ensemble": "shared", "steps": k * steps, "batch_size": batch})
    elif method in ("boosting", "clustered", "clustered-da"):
        update = {"ensemble": method.removesuffix("-da"), "cluster_seed": seed}
        tr = tr.model_copy(update=update)
        if method == "clustered-da":
            members = {
                n: m.model_copy(update={"diffaugment": DIFFAUGMENT}) for n, m in members.items()
            }
    elif method != "bagging":
        raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    raw = base.model_dump(mode="json")
    raw["members"] = {n: m.model_dump(mode="json") for n, m in members.items()}
    raw["train"] = tr.model_dump(mode="json")
    raw["combine"]["weights"] = None
    return Params.model_validate(raw)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_one(params: Params, root: Path, prepared: Path, judge, n: int) -> dict:
    """Train one project with the pipeline's train stage, then score its mixture."""
    layout = Layout(root)
    layout.prepared.parent.mkdir(parents=True, exist_ok=True)
    if not layout.prepared.exists():
        layout.prepared.symlink_to(prepared.resolve(), target_is_directory=True)
    cpu, wall = cpu_seconds(), time.perf_counter()
    cards = train.run(params, layout, progress=False)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    ens = load_ensemble(params, layout, with_stacker=False)
    images = ens.sample("mixture", n, seed=1000).images
    m = judge.measure(images, None)
    k = len(params.members)
    updates = params.train.steps * (1 if params.train.ensemble == "shared" else k)
    return {
        **{key: m[key] for key in SHOWN},
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "g_updates": updates,
        "images_generated": updates * params.train.batch_size,
        "weights": {n: round(w, 4) for n, w in ens.weights.items()},
        "members": len(cards),
    }


def table(results: dict[tuple[str, int], dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame([{"method": m, "seed": s, **r} for (m, s), r in results.items()])
    cols = [*SHOWN, "cpu_s"]
    g = runs.groupby("method", sort=False)
    mean, se = g[cols].mean(), g[cols].sem(ddof=1)
    out = pd.DataFrame(index=mean.index)
    for c in cols:
        out[c] = [f"{a:.3f} ± {b:.3f}" if c != "cpu_s" else f"{a:.0f}" for a, b in
                  zip(mean[c], se[c].fillna(np.nan), strict=True)]  # fmt: skip
    out["G updates"] = g["g_updates"].first().map("{:,}".format)
    out["seeds"] = g.size()
    return out, runs


def verdict(runs: pd.DataFrame) -> str:
    """Each method against the single member: the difference of the means over the training
    seeds (independent runs: the standard errors add in quadrature) and the target's verdict."""
    if "single" not in set(runs.method):
        return ""
    single = runs[runs.method == "single"]
    lines = ["", "Against the single member (better by mean ± se; beats = beyond 2 se):"]
    for method in runs.method.unique():
        if method == "single":
            continue
        mine = runs[runs.method == method]
        parts, wins = [], 0
        for k in TARGET:
            sign = -1 if METRICS[k].lower_is_better else 1
            diff = sign * (mine[k].mean() - single[k].mean())
            se = float(np.hypot(mine[k].sem(ddof=1), single[k].sem(ddof=1)))
            word = "beats" if diff > 2 * se else "loses" if diff < -2 * se else "ties"
            wins += word == "beats"
            parts.append(f"{k} {word} ({diff:+.3f} ± {se:.3f})")
        met = "MEETS the target" if wins == len(TARGET) else "misses the target"
        lines.append(f"- {method}: {'; '.join(parts)}: {met}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=Path("bench/equal-compute"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, help="train.steps per member (default: the params')")
    ap.add_argument("--n", type=int, default=2000, help="images scored per row")
    ap.add_argument("--methods", nargs="+", default=list(METHODS[:5]), choices=METHODS)
    ap.add_argument("--table-only", action="store_true", help="train nothing: what is scored")
    a = ap.parse_args()
    torch.set_num_threads(1)
    base = load_params(a.params)
    if a.steps:
        base = base.model_copy(update={"train": base.train.model_copy(update={"steps": a.steps})})
    data_root = Layout(a.out / "data")
    prepare.run(base, data_root)
    net_file = a.out / "feature_net.safetensors"  # the judge's net, fitted once
    judge = fit_judge(load_prepared(data_root.prepared), base.evaluate, earlier=net_file)
    save_feature_net(judge.net, net_file, judge.trained_on)
    results: dict[tuple[str, int], dict] = {}
    for seed in range(a.seeds):  # seeds outer: a run cut short has every method's first seeds
        for method in a.methods:
            params = method_params(base, method, seed)
            key = params.digest("data", "members", "train", "evaluate")[:12]
            done = a.out / "results" / f"{method}-seed{seed}-{key}.json"
            if a.table_only and not done.exists():
                continue
            if not done.exists():
                root = a.out / method / f"seed-{seed}"
                r = run_one(params, root, data_root.prepared, judge, a.n)
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(r, indent=1))
                print(f"{method} seed {seed}: {json.dumps(r)}", flush=True)
            results[(method, seed)] = json.loads(done.read_text())
    df, runs = table(results)
    print(
        f"\n{a.params}: {len(base.members)} members x {base.train.steps:,} steps "
        f"(batch {base.train.batch_size}); {a.n:,} images per row from each project's "
        f"mixture; mean ± se over the training seeds; CPU seconds of training"
    )
    print(df.to_markdown())
    print(verdict(runs))


if __name__ == "__main__":
    main()
