"""Stage `evaluate`: every member and every combination side by side.

Writes reports/metrics.json (every figure), reports/key/ (the key figures per model: DVC's
metrics), reports/plots/ (DVC plots), reports/grids/*.png, the feature net it measured with, and
reports/index.html.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensgan.config import EvaluateConfig, Params
from ensgan.data.prepared import Prepared, load_prepared
from ensgan.ensemble.combinations import METHODS, Ensemble, Sample, collapse
from ensgan.ensemble.rejection import drs_accept_prob
from ensgan.errors import DataError, StackerError
from ensgan.eval.charts import loss_chart, metrics_chart
from ensgan.eval.features import (
    FeatureNet,
    earlier_feature_net,
    embed,
    predict_classes,
    pseudo_labels,
    save_feature_net,
    train_feature_net,
    training_key,
)
from ensgan.eval.inception import InceptionFeatures
from ensgan.eval.kid import SUBSET_SIZE as KID_SUBSET_SIZE
from ensgan.eval.kid import SUBSETS as KID_SUBSETS
from ensgan.eval.metrics import evaluate_images, frechet_distance
from ensgan.eval.prdc import NEAREST_K
from ensgan.eval.progress import model_bar
from ensgan.eval.report import TERMINAL_COLUMNS, write_html
from ensgan.eval.table import PLOTTED, feature_space
from ensgan.gan.device import resolve_device
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
    Layout().key_figures.name,  # key/: the key figures per model (write_key_figures)
    "index.html",
    "grids",
    "feature_net.safetensors",
    "plots/losses",
    "plots/fd.csv",
)


def run(params: Params, layout: Layout, *, progress: bool | None = None) -> dict:
    """Evaluate, or return the last metrics when nothing they came from changed; `progress`:
    a bar per row (None: on a terminal only)."""
    params = survivors(params, layout)  # without the members training left out
    stamp = inputs_sha256("evaluate", params, layout)
    before = _earlier_metrics(layout)
    if before is not None and up_to_date(
        "evaluate", before.get("inputs_sha256"), stamp, layout.reports
    ):
        return before | {"up_to_date": True}
    rel = layout.reports.relative_to(layout.root).as_posix()
    with staged_outputs(layout.root, "evaluate", [f"{rel}/{o}" for o in OUTPUTS]) as stage:
        return _evaluate(params, layout, stage / rel, stamp, progress)


def _earlier_metrics(layout: Layout) -> dict | None:
    """The last evaluation's metrics, when every output it wrote is still there."""
    if not all((layout.reports / o).exists() for o in OUTPUTS):
        return None
    try:
        metrics = json.loads((layout.reports / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


# Images a combination scores when not evaluate.n_samples: the EvaluateConfig field to read
# (each mh image is the end of a chain of proposals, so it scores fewer).
SAMPLE_COUNTS = {"mh": "n_mh"}
BASELINE = "mixture"  # the plain mixture, which every selection's diversity is compared with


@dataclass
class Judge:
    """What every row is measured against: the feature space and the evaluate split. The
    domain net gives the classes always, and the features unless `inception` is set."""

    net: FeatureNet
    real_images: np.ndarray  # the evaluate split
    real_feats: np.ndarray  # in the evaluation feature space
    real_labels: np.ndarray
    n_classes: int
    inception: InceptionFeatures | None = None  # evaluate.feature_space: inception
    kid_subset_size: int = KID_SUBSET_SIZE
    kid_subsets: int = KID_SUBSETS
    prdc_real: int | None = None  # evaluate.prdc_real
    seed: int = 0  # KID's subsets: the same draws for every row
    trained_on: str = ""  # the feature net's training_key
    labels_from: str = "data"  # what the feature net was trained on: data | k-means clusters
    progress: bool | None = None  # a bar per row (ensgan/eval/progress.py): None = on a terminal

    def features(self, images: np.ndarray) -> np.ndarray:
        """Features in the evaluation feature space."""
        return embed(self.net, images) if self.inception is None else self.inception.embed(images)

    def measure(self, images: np.ndarray, scores: np.ndarray | None) -> dict:
        feats = None if self.inception is None else self.inception.embed(images)
        m = evaluate_images(
            self.net, images, self.real_feats, self.real_labels, self.n_classes, feats=feats,
            kid_subset_size=self.kid_subset_size, kid_subsets=self.kid_subsets, seed=self.seed,
            prdc_real=self.prdc_real,
        )  # fmt: skip
        m["stacker_score"] = None if scores is None else round(float(np.mean(scores)), 6)
        return m | {"n_images": len(images)}  # FD falls with the count: compare equal counts

    def fd(self, images: np.ndarray) -> float:
        return frechet_distance(self.features(images), self.real_feats)


Tiles = dict[str, tuple[str, np.ndarray]]  # grid caption -> (file stem, images)


def _evaluate(params: Params, layout: Layout, out: Path, stamp: str, progress: bool | None) -> dict:
    """Measure, and write every output under `out` (the staging copy of reports/)."""
    ec = params.evaluate
    data = load_prepared(layout.prepared)
    ens = load_ensemble(params, layout)  # fails before any report file is touched
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params.train.device).type
    judge = fit_judge(data, ec, earlier=layout.reports / "feature_net.safetensors", device=device)
    judge.progress = progress
    save_feature_net(judge.net, out / "feature_net.safetensors", judge.trained_on)
    tiles: Tiles = {}
    metrics: dict = {"real": score_real(ens, data, ec, judge)}
    metrics["feature_net"] = feature_net_details(judge)
    metrics["members"] = score_members(ens, ec, judge, tiles)
    metrics["ensemble"], mixture = score_combinations(ens, ec, judge, tiles)
    metrics["stacker"] = stacker_details(ens, judge, mixture)
    metrics["data_sha256"] = data.card.sha256
    metrics["params_sha256"] = params_sha256(params)
    metrics["models_sha256"] = models_sha256(params, layout)  # what publish matches a batch by
    metrics["inputs_sha256"] = stamp  # a rerun on the same inputs rewrites nothing
    metrics["feature_space"] = feature_space(ec.feature_space)  # which figure is in which
    metrics["left_out"] = left_out(layout)  # members that failed training, and why
    metrics["mixture"] = mixture_details(params, ens)
    metrics["class_names"] = data.card.class_names if judge.labels_from == "data" else None
    _write_report(params, layout, out, metrics, tiles)
    write_key_figures(out / layout.key_figures.relative_to(layout.reports), metrics)
    return metrics


SIGNIFICANT = 4  # digits of a key figure in reports/key/ (report.fmt's, the terminal table's)


def write_key_figures(out: Path, metrics: dict) -> None:
    """Each model's key figures (report.TERMINAL_COLUMNS) in a file of its own under `out`:
    member/NAME.json, ensemble/METHOD.json, real.json. These are DVC's metrics: `dvc metrics
    show` prints a row per file, so a row per model in a terminal's width (metrics.json, every
    figure of every model, is one row of hundreds of columns there), and `dvc metrics diff` a
    line per changed figure. Figures to SIGNIFICANT digits, as the terminal table prints them
    (every digit is in metrics.json). A combination that could not draw has no file."""
    files = {f"member/{name}.json": row for name, row in metrics["members"].items()}
    files |= {f"ensemble/{name}.json": row for name, row in metrics["ensemble"].items()}
    files["real.json"] = metrics["real"]
    with atomic_dir(out) as tmp:  # no file of a removed member survives
        for rel, row in files.items():
            if "error" not in row:
                (tmp / rel).parent.mkdir(exist_ok=True)
                key = {c: _significant(row[c]) for c in TERMINAL_COLUMNS if c in row}
                write_json(tmp / rel, key)


def _significant(value: object) -> object:
    return float(f"{value:.{SIGNIFICANT}g}") if isinstance(value, float) else value


def fit_judge(
    data: Prepared, ec: EvaluateConfig, earlier: Path | None = None, device: str = "cpu"
) -> Judge:
    """The feature space: a small classifier trained on the real training split (a domain
    FID), on the data's labels or, without usable ones, on k-means clusters of the images;
    with `feature_space: inception` the FID Inception-v3's features, the classifier's classes
    (loaded first: a missing or altered network fails before anything is trained). `earlier`:
    the last evaluation's net, taken instead of training when it was trained on the same
    images, labels, steps and seed (training gives the same weights for those). `device`:
    where the classifier trains and embeds (the members' device: on a GPU, evaluation runs
    there too, in the batches `features_and_classes` is given)."""
    inception = InceptionFeatures() if ec.feature_space == "inception" else None
    if data.labels is not None and len(np.unique(data.labels)) >= 2:
        labels, n_classes, labels_from = data.labels, data.n_classes, "data"
    else:
        n_classes, labels_from = 10, "k-means clusters"
        labels = pseudo_labels(data.images, n_classes)
    train_mask, eval_mask = data.mask("train"), data.mask("evaluate")
    if eval_mask.sum() <= NEAREST_K:
        raise DataError(
            f"the evaluate split has {int(eval_mask.sum())} images; precision, recall, density "
            f"and coverage need more than {NEAREST_K}: raise data.splits.evaluate or add data"
        )
    images, y = data.images[train_mask], labels[train_mask]
    how = {"n_classes": n_classes, "steps": ec.classifier_steps, "seed": ec.seed}
    key = training_key(images, y, **how, device=device)
    net = earlier_feature_net(earlier, key, device) if earlier is not None else None
    if net is None:
        net = train_feature_net(images, y, **how, device=device)
    real = data.images[eval_mask]
    judge = Judge(
        net, real, np.empty(0), labels[eval_mask], n_classes, inception,
        kid_subset_size=ec.kid_subset_size, kid_subsets=ec.kid_subsets, seed=ec.seed,
        prdc_real=ec.prdc_real, trained_on=key, labels_from=labels_from,
    )  # fmt: skip
    judge.real_feats = judge.features(real)
    return judge


def mixture_details(params: Params, ens: Ensemble) -> dict:
    """How the mixture weighs its members and why (train.ensemble), with each clustered
    member's cluster of the training split."""
    clusters = {
        n: {"index": m.card.cluster["index"], "size": m.card.cluster["size"]}
        for n, m in ens.members.items()
        if m.card is not None and m.card.cluster
    }
    weights = {n: round(float(w), 6) for n, w in ens.weights.items()}
    return {"ensemble": params.train.ensemble, "weights": weights, "clusters": clusters}


def feature_net_details(judge: Judge) -> dict:
    """How far the classes and the domain features can be trusted: the feature net's accuracy
    on the evaluate split, which it never trained on (of its k-means clusters without labels)."""
    pred = predict_classes(judge.net, judge.real_images)
    return {
        "labels": judge.labels_from,
        "evaluate_accuracy": round(float((pred == judge.real_labels).mean()), 4),
        "n_evaluate": len(pred),
    }


def score_real(ens: Ensemble, data: Prepared, ec: EvaluateConfig, judge: Judge) -> dict:
    """Held-in real images against the hold-out: the floor for every metric (a seeded subset,
    as the data may be sorted by class)."""
    held_in = data.images[data.mask("train")]
    pick = np.random.default_rng(ec.seed + 1).choice(
        len(held_in), min(ec.n_samples, len(held_in)), replace=False
    )
    with model_bar("real", len(pick), judge.progress) as phase_done:
        reference = held_in[np.sort(pick)]
        phase_done()
        row = judge.measure(reference, ens.score(reference))
        phase_done()
    return row


def score_members(ens: Ensemble, ec: EvaluateConfig, judge: Judge, tiles: Tiles) -> dict:
    """Each member on the same latents, flagged when its images have collapsed."""
    rows = {}
    for name in ens.members:
        rows[name], images = score_member(ens, name, judge, ec.n_samples, ec.seed)
        tiles[name] = (name, images[: ec.grid_size**2])
    return rows


def score_member(
    ens: Ensemble, name: str, judge: Judge, n: int, seed: int
) -> tuple[dict, np.ndarray]:
    """One member's row on `n` images from `seed`'s latents (every member gets the same
    ones), and the images; benchmarks/eval_count.py scores it at other counts and seeds."""
    with model_bar(name, n, judge.progress) as phase_done:
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n)
        images = ens.member_sample(name, seeds)
        phase_done()
        row = judge.measure(images, ens.score(images))
        phase_done()
    row["collapsed"] = collapse(images) is not None
    return row, images


def sample_count(ec: EvaluateConfig, method: str) -> int:
    """Images a combination scores: evaluate.n_samples, or its own count (mh) up to it."""
    return min(getattr(ec, SAMPLE_COUNTS.get(method, "n_samples")), ec.n_samples)


def score_combination(
    ens: Ensemble, method: str, judge: Judge, n: int, seed: int
) -> tuple[dict, Sample]:
    """One combination's row on `n` of its images drawn with `seed`, and the sample (a
    StackerError when it cannot draw them)."""
    with model_bar(method, n, judge.progress) as phase_done:
        s = ens.sample(method, n, seed=seed)
        phase_done()
        row = judge.measure(s.images, s.scores) | {k: round(v, 6) for k, v in s.stats.items()}
        phase_done()
    return row, s


def score_combinations(
    ens: Ensemble, ec: EvaluateConfig, judge: Judge, tiles: Tiles
) -> tuple[dict, Sample]:
    """Every combination, each on its count of images, and the plain mixture's sample; a
    selection that costs diversity against the plain mixture is marked `narrows`, and a row
    on fewer images than the mixture gets the mixture's FD at its count."""
    rows: dict[str, dict] = {}
    mixture: Sample | None = None
    for method in METHODS:
        try:
            rows[method], sample = score_combination(
                ens, method, judge, sample_count(ec, method), ec.seed
            )
        except StackerError as exc:  # e.g. DRS cannot fill a member's share: report it
            rows[method] = {"error": str(exc)}
            continue
        images = sample.images
        mixture = sample if method == BASELINE else mixture
        stem = f"ensemble-{method}"
        if stem in tiles:  # a member named like a combination's grid file
            tiles[stem] = (f"member-{stem}", tiles[stem][1])
        tiles[f"ensemble: {method}"] = (stem, images[: ec.grid_size**2])
    assert mixture is not None  # the plain mixture needs no stacker: it always draws
    base = rows[BASELINE]
    for row in (r for r in rows.values() if "error" not in r):
        row["narrows"] = any(row[k] < base[k] - NARROWING for k in ("recall", "coverage"))
        if row["n_images"] < base["n_images"]:
            row["mixture_fd_same_count"] = judge.fd(mixture.images[: row["n_images"]])
    return rows, mixture


def stacker_details(ens: Ensemble, judge: Judge, mixture: Sample) -> dict:
    """The stacker's scores, and whether its ratio narrows: held-out real images as DRS
    candidates (a selector that does not narrow accepts every class about equally; 1.0 = the
    class's acceptance equals the average) and the ratio check on the mixture row's sample."""
    card = ens.need_stacker("evaluate").card
    return {
        "model": card.model,
        "cv_roc_auc": card.cv_roc_auc,
        "calibration": card.calibration,
        "ece_raw": card.ece_raw,
        "ece_calibrated": card.ece_calibrated,
        "brier_raw": card.brier_raw,
        "brier_calibrated": card.brier_calibrated,
        "member_weights": card.member_weights,
        "real_acceptance_by_class": real_acceptance_by_class(
            ens, judge.real_images, judge.real_labels, judge.n_classes
        ),
        **ratio_check(ens, judge.features, judge.real_feats, mixture),
    }


def _write_report(params: Params, layout: Layout, out: Path, metrics: dict, tiles: Tiles) -> None:
    """The grids, metrics.json, the plots and the HTML report, under `out`."""
    with atomic_dir(out / "grids") as tmp:  # no grid of a removed member survives
        for stem, images in tiles.values():
            save_grid(images, tmp / f"{stem}.png", nrow=params.evaluate.grid_size)
    grids = {caption: f"grids/{stem}.png" for caption, (stem, _) in tiles.items()}
    write_json(out / "metrics.json", metrics)
    charts = _write_plots(params, layout, metrics, out / "plots")
    st = metrics["stacker"]
    space = metrics["feature_space"]
    extra = {
        "feature space": f"{space['name']}: {space['comparable']}; classes (classes_covered, "
        "class_kl) from the domain classifier",
        "data sha256": metrics["data_sha256"],
        "params sha256": metrics["params_sha256"],
        "stacker": f"{st['model']}, CV ROC AUC {st['cv_roc_auc']:.3f}, "
        f"{st['calibration']} calibration: ECE {st['ece_raw']:.3f} -> "
        f"{st['ece_calibrated']:.3f}, Brier {st['brier_raw']:.3f} -> {st['brier_calibrated']:.3f}",
        "mixture weights": _weights_line(metrics["mixture"]),
        "left out of this run": "; ".join(f"{n}: {why}" for n, why in metrics["left_out"].items())
        or "none",
        "real row": "held-in real images vs the hold-out: the floor for every metric",
        "feature net": "accuracy {evaluate_accuracy:.4f} on the {n_evaluate} evaluate-split "
        "images, trained on the {labels}".format(**metrics["feature_net"]),
        "real images accepted by DRS, per class / mean": st["real_acceptance_by_class"],
        "stacker ratio check (mean shift unweighted, r̂-weighted; ESS fraction)": [
            st[k]
            for k in (
                "ratio_mean_shift_uniform",
                "ratio_mean_shift_reweighted",
                "ratio_ess_fraction",
            )
        ],
    }
    write_html(
        out / "index.html", title="ensgan report", metrics=metrics, grids=grids, charts=charts,
        extra=extra, class_names=metrics["class_names"],
    )  # fmt: skip


def _weights_line(mixture: dict) -> str:
    clusters = mixture["clusters"]
    parts = [
        f"{n} {w:.3f}"
        + (
            f" (cluster {clusters[n]['index']}: {clusters[n]['size']} images)"
            if n in clusters
            else ""
        )
        for n, w in mixture["weights"].items()
    ]
    return f"{mixture['ensemble']}: " + ", ".join(parts)


def ratio_check(
    ens: Ensemble,
    features: Callable[[np.ndarray], np.ndarray],
    real_feats: np.ndarray,
    s: Sample,
) -> dict[str, float]:
    """Is r̂ a density ratio? Reweighting mixture samples `s` (scored by the stacker) by r̂
    should move their mean feature onto the real mean. `ratio_mean_shift_*` are ||mean − real
    mean||² in the evaluation feature space, unweighted and r̂-weighted; a reweighted shift
    above the unweighted one means r̂ pushes samples away from the data, and DRS and MH will
    too. `ratio_ess_fraction` is the Kish ESS of the weights over the sample's size."""
    if s.scores is None:
        raise StackerError("the ratio check needs a fitted stacker: run `ensgan stack` first")
    n = len(s.images)
    feats = features(s.images)
    lr = ens.need_stacker("the ratio check").log_ratio_of(s.scores)
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
    atomic_write(plots / "fd.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    return {
        "loss curves": loss_chart(losses),
        "members and combinations": metrics_chart(models_frame(metrics, real=True)),
    }
