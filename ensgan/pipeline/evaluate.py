"""Stage `evaluate`: every member and every combination side by side.

Writes reports/metrics.json (DVC metrics), reports/plots/ (DVC plots), reports/grids/*.png, the
feature net it measured with, and reports/index.html.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ensgan.config import Params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import METHODS, Ensemble, collapse
from ensgan.ensemble.rejection import drs_accept_prob
from ensgan.errors import DataError, StackerError
from ensgan.eval.charts import loss_chart, metrics_chart
from ensgan.eval.features import (
    FeatureNet,
    embed,
    pseudo_labels,
    save_feature_net,
    train_feature_net,
)
from ensgan.eval.metrics import evaluate_images, frechet_distance
from ensgan.eval.prdc import NEAREST_K
from ensgan.eval.report import write_html
from ensgan.eval.table import PLOTTED
from ensgan.io.files import atomic_dir, atomic_write, staged_outputs, write_json
from ensgan.io.images import save_grid
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble, models_sha256, params_sha256
from ensgan.pipeline.freshness import inputs_sha256, up_to_date
from ensgan.pipeline.survivors import left_out, survivors

# What evaluate writes under reports/, switched from the old run's to the new as one
# (io.files.staged_outputs): a kill at any instant leaves a report of one run, never a mix.
OUTPUTS = (
    "metrics.json",
    "index.html",
    "grids",
    "feature_net.safetensors",
    "plots/losses",
    "plots/fd.csv",
)


def run(params: Params, layout: Layout) -> dict:
    params = survivors(params, layout)  # without the members training left out
    stamp = inputs_sha256("evaluate", params, layout)
    before = _earlier_metrics(layout)
    if before is not None and up_to_date(
        "evaluate", before.get("inputs_sha256"), stamp, layout.reports
    ):
        return before | {"up_to_date": True}
    rel = layout.reports.relative_to(layout.root).as_posix()
    with staged_outputs(layout.root, "evaluate", [f"{rel}/{o}" for o in OUTPUTS]) as stage:
        return _evaluate(params, layout, stage / rel, stamp)


def _earlier_metrics(layout: Layout) -> dict | None:
    """The last evaluation's metrics, when every output it wrote is still there."""
    if not all((layout.reports / o).exists() for o in OUTPUTS):
        return None
    try:
        metrics = json.loads((layout.reports / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _evaluate(params: Params, layout: Layout, out: Path, stamp: str) -> dict:
    """Measure, and write every output under `out` (the staging copy of reports/)."""
    ec = params.evaluate
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout)  # fails before any report file is touched
    out.mkdir(parents=True, exist_ok=True)

    # Feature space: a small classifier trained on the real training split (a domain FID).
    if data.labels is not None and len(np.unique(data.labels)) >= 2:
        labels, n_classes = data.labels, data.n_classes
    else:  # no usable labels: classes are k-means clusters of the real images
        n_classes = 10
        labels = pseudo_labels(data.images, n_classes)
    train_mask = data.mask("train")
    eval_mask = data.mask("evaluate")
    net = train_feature_net(
        data.images[train_mask],
        labels[train_mask],
        n_classes=n_classes,
        steps=ec.classifier_steps,
        seed=ec.seed,
    )
    save_feature_net(net, out / "feature_net.safetensors")
    if eval_mask.sum() <= NEAREST_K:
        raise DataError(
            f"the evaluate split has {int(eval_mask.sum())} images; precision, recall, density "
            f"and coverage need more than {NEAREST_K}: raise data.splits.evaluate or add data"
        )
    real_feats = embed(net, data.images[eval_mask])
    real_labels = labels[eval_mask]

    def measure(images: np.ndarray, scores: np.ndarray | None) -> dict:
        m = evaluate_images(net, images, real_feats, real_labels, n_classes)
        m["stacker_score"] = None if scores is None else round(float(np.mean(scores)), 6)
        return m | {"n_images": len(images)}  # FD falls with the count: compare equal counts

    rng = np.random.default_rng(ec.seed)
    seeds = rng.integers(0, 2**31 - 1, size=ec.n_samples)  # same latents for every member
    n_grid = ec.grid_size**2
    tiles: dict[str, tuple[str, np.ndarray]] = {}  # caption -> (file stem, images)

    held_in = data.images[train_mask]  # a seeded subset: the data may be sorted by class
    pick = np.random.default_rng(ec.seed + 1).choice(
        len(held_in), min(ec.n_samples, len(held_in)), replace=False
    )
    reference = held_in[np.sort(pick)]
    metrics: dict = {"real": measure(reference, ens.score(reference))}
    metrics["members"] = {}
    for name in ens.members:
        images = ens.member_sample(name, seeds)
        metrics["members"][name] = measure(images, ens.score(images))
        metrics["members"][name]["collapsed"] = collapse(images) is not None
        tiles[name] = (name, images[:n_grid])
    metrics["ensemble"] = {}
    for method in METHODS:  # MH's images cost a chain each: it scores fewer
        n = min(ec.n_mh, ec.n_samples) if method == "mh" else ec.n_samples
        try:
            s = ens.sample(method, n, seed=ec.seed)
        except StackerError as exc:  # e.g. DRS cannot fill a member's share: report it
            metrics["ensemble"][method] = {"error": str(exc)}
            continue
        metrics["ensemble"][method] = measure(s.images, s.scores) | {
            k: round(v, 6) for k, v in s.stats.items()
        }
        if method == "mixture":
            mixture_images = s.images
        stem = f"ensemble-{method}"
        if stem in params.members:  # a member named like a combination's grid file
            tiles[stem] = (f"member-{stem}", tiles[stem][1])
        tiles[f"ensemble: {method}"] = (stem, s.images[:n_grid])
    mix = metrics["ensemble"]["mixture"]
    for row in metrics["ensemble"].values():  # a selection that costs diversity says so
        if "error" in row:
            continue
        row["narrows"] = any(row[k] < mix[k] - NARROWING for k in ("recall", "coverage"))
        if row["n_images"] < mix["n_images"]:  # the mixture's FD at this row's count
            row["mixture_fd_same_count"] = frechet_distance(
                embed(net, mixture_images[: row["n_images"]]), real_feats
            )

    stack_card = ens.need_stacker("evaluate").card
    metrics["stacker"] = {
        "model": stack_card.model,
        "cv_roc_auc": stack_card.cv_roc_auc,
        "calibration": stack_card.calibration,
        "ece_raw": stack_card.ece_raw,
        "ece_calibrated": stack_card.ece_calibrated,
        "brier_raw": stack_card.brier_raw,
        "brier_calibrated": stack_card.brier_calibrated,
        "member_weights": stack_card.member_weights,
        # Held-out real images as DRS candidates: a selector that does not narrow accepts
        # every class about equally (1.0 = the class's acceptance equals the average).
        "real_acceptance_by_class": real_acceptance_by_class(
            ens, data.images[eval_mask], real_labels, n_classes
        ),
        **ratio_check(ens, net, real_feats, ec.n_samples, ec.seed),
    }
    metrics["data_sha256"] = data.card.sha256
    metrics["params_sha256"] = params_sha256(params)
    metrics["models_sha256"] = models_sha256(params, layout)  # what publish matches a batch by
    metrics["inputs_sha256"] = stamp  # a rerun on the same inputs rewrites nothing
    metrics["left_out"] = left_out(layout)  # members that failed training, and why
    with atomic_dir(out / "grids") as tmp:  # no grid of a removed member survives
        for stem, images in tiles.values():
            save_grid(images, tmp / f"{stem}.png", nrow=ec.grid_size)
    grids = {caption: f"grids/{stem}.png" for caption, (stem, _) in tiles.items()}
    write_json(out / "metrics.json", metrics)
    charts = _write_plots(params, layout, metrics, out / "plots")
    write_html(
        out / "index.html",
        title="ensgan report",
        metrics=metrics,
        grids=grids,
        charts=charts,
        extra={
            "data sha256": data.card.sha256,
            "params sha256": metrics["params_sha256"],
            "stacker": f"{stack_card.model}, CV ROC AUC {stack_card.cv_roc_auc:.3f}, "
            f"{stack_card.calibration} calibration: ECE {stack_card.ece_raw:.3f} -> "
            f"{stack_card.ece_calibrated:.3f}, Brier {stack_card.brier_raw:.3f} -> "
            f"{stack_card.brier_calibrated:.3f}",
            "left out of this run": "; ".join(
                f"{n}: {why}" for n, why in metrics["left_out"].items()
            )
            or "none",
            "real row": "held-in real images vs the hold-out: the floor for every metric",
            "real images accepted by DRS, per class / mean": metrics["stacker"][
                "real_acceptance_by_class"
            ],
            "stacker ratio check (mean shift unweighted, r̂-weighted; ESS fraction)": [
                metrics["stacker"][k]
                for k in (
                    "ratio_mean_shift_uniform",
                    "ratio_mean_shift_reweighted",
                    "ratio_ess_fraction",
                )
            ],
        },
    )
    return metrics


def ratio_check(
    ens: Ensemble, net: FeatureNet, real_feats: np.ndarray, n: int, seed: int
) -> dict[str, float]:
    """Is r̂ a density ratio? Reweighting mixture samples by r̂ should move their mean feature
    onto the real mean. `ratio_mean_shift_*` are ||mean − real mean||² in the evaluation
    feature space, unweighted and r̂-weighted; a reweighted shift above the unweighted one
    means r̂ pushes samples away from the data, and DRS and MH will too. `ratio_ess_fraction`
    is the Kish ESS of the weights over n."""
    s = ens.sample("mixture", n, seed=seed + 17)
    feats = embed(net, s.images)
    lr = ens.log_ratio(s.images)
    w = np.exp(lr - lr.max())
    w /= w.sum()
    target = real_feats.mean(0)
    return {
        "ratio_mean_shift_uniform": round(float(((feats.mean(0) - target) ** 2).sum()), 4),
        "ratio_mean_shift_reweighted": round(float(((w @ feats - target) ** 2).sum()), 4),
        "ratio_ess_fraction": round(float(1.0 / (w**2).sum() / n), 4),
    }


def real_acceptance_by_class(
    ens: Ensemble, images: np.ndarray, labels: np.ndarray, n_classes: int
) -> list[float | None]:
    """Mean DRS acceptance probability of real images per class, over the mean of all of them
    (M: the highest member M, as for a mixture proposal). A class well below 1 is one the
    selector would thin out: narrowing."""
    st = ens.need_stacker("the real-acceptance check")
    t = ens.drs_temperature
    p = drs_accept_prob(
        t * ens.log_ratio(images), t * max(st.card.drs_log_m.values()), ens.drs_gamma
    )
    overall = max(float(p.mean()), 1e-12)
    return [
        round(float(p[labels == c].mean()) / overall, 4) if (labels == c).any() else None
        for c in range(n_classes)
    ]


NARROWING = 0.01  # recall or coverage this far below the plain mixture's: the method narrows


def models_frame(metrics: dict, *, real: bool = False) -> pd.DataFrame:
    """One row per member and combination (and the real row when asked), with the plotted
    figures: the DVC plot's table and the report's chart."""
    groups = [("member", metrics["members"]), ("ensemble", metrics["ensemble"])]
    if real:
        groups.append(("real", {"real": metrics["real"]}))
    rows = [
        {"model": name, "kind": kind, **{k: m[k] for k in PLOTTED}}
        for kind, group in groups
        for name, m in group.items()
        if "error" not in m
    ]
    return pd.DataFrame(rows, columns=["model", "kind", *PLOTTED])


def _write_plots(params: Params, layout: Layout, metrics: dict, plots: Path) -> dict[str, str]:
    """The DVC plots (loss logs, the figures per model) and the report's charts drawn from
    the same tables."""
    losses = {}
    with atomic_dir(plots / "losses") as out:
        for name in params.members:
            shutil.copyfile(layout.member(name) / "losses.csv", out / f"{name}.csv")
            losses[name] = pd.read_csv(out / f"{name}.csv")
    table = models_frame(metrics)
    atomic_write(plots / "fd.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))
    return {
        "loss curves": loss_chart(losses),
        "members and combinations": metrics_chart(models_frame(metrics, real=True)),
    }
