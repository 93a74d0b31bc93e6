"""The one table of metrics: each figure's name, direction, note, and where it is shown.

The report (notes, the best value per column), its charts, the DVC plot table, the promotion
gate, the history rows and the benchmarks all read this table, so a new metric is one entry
here plus its computation (ensgan/eval/metrics.py); tests/test_metrics.py checks that
`evaluate` returns exactly these keys per row. Plain Python: the gate and the CLI import it
without numpy or torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool | None  # None: no better direction (a count, a flag, a target of 1)
    note: str  # what it measures, for the report
    plotted: bool = False  # in the DVC plot table (reports/plots/fd.csv) and history rows
    charted: bool = False  # in the report's charts: what a night is judged on at a glance
    gated: bool = False  # compared by the promotion gate (its tolerance: gate.<name>)
    rows: str = "all"  # all | members | combinations: which rows of metrics.json carry it

    @property
    def lower_is_better(self) -> bool:
        return self.higher_is_better is False


_ENTRIES = (
    Metric(
        "fd", False, "Fréchet distance in the evaluation feature space (see `feature space` "
        "above); lower is better. Comparable only at equal image counts, and in the domain "
        "space only between runs sharing its net.", plotted=True, charted=True, gated=True,
    ),
    Metric(
        "kid", False, "kernel inception distance (Bińkowski et al. 2018) in the evaluation "
        "feature space: the unbiased MMD² under the cubic kernel (xᵀy/d + 1)³, the mean over "
        "evaluate.kid_subsets random subsets of up to evaluate.kid_subset_size images of each "
        "side; lower is better. Unbiased: about 0 (slightly negative is possible) for matching "
        "distributions, and comparable across image counts.", plotted=True, charted=True,
        gated=True,
    ),
    Metric(
        "kid_std", None, "the standard deviation of KID's estimate over its subsets (the noise "
        "of one subset's figure, as the authors report it): the unit gate.kid counts in.",
        plotted=True,
    ),
    Metric(
        "precision", True, "share of generated images inside some real image's k-NN ball "
        "(k=5; Kynkäänniemi et al. 2019): fidelity; higher is better.", plotted=True,
    ),
    Metric(
        "recall", True, "share of real images inside some generated image's k-NN ball: "
        "diversity; higher is better.", plotted=True, charted=True, gated=True,
    ),
    Metric(
        "density", None, "mean number of real k-NN balls holding a generated image, over k "
        "(Naeem et al. 2020): fidelity robust to outliers; about 1 for matching "
        "distributions.", plotted=True,
    ),
    Metric(
        "coverage", True, "share of real images whose k-NN ball holds a generated image: "
        "diversity robust to outliers; higher is better. A selection that narrows lowers it.",
        plotted=True, charted=True, gated=True,
    ),
    Metric(
        "coverage_per_class", None, "coverage over each class's real images: a dropped mode "
        "is a class near 0.",
    ),
    Metric(
        "classes_covered", True, "classes (or k-means clusters) holding a minimum share of the "
        "samples; higher is better.",
    ),
    Metric(
        "class_kl", False, "KL(generated || real) between class histograms, in nats; lower "
        "is better.", plotted=True, gated=True,
    ),
    Metric(
        "stacker_score", None, "the stacker's mean calibrated P(real) over the row's images.",
    ),
    Metric(
        "n_images", None, "images scored: FD falls as the count grows, so rows compare only "
        "at equal counts.",
    ),
    Metric(
        "collapsed", None, "yes when every one of a member's samples is the same picture or "
        "blank; `generate` refuses to publish from such a member.", rows="members",
    ),
    Metric(
        "accept_rate", None, "share of the proposals a combination kept (1 for direct draws).",
        rows="combinations",
    ),
    Metric(
        "ess", None, "effective sample size (Σw)²/Σw² of the density-ratio weights over the "
        "proposals (the number of images for direct draws).", rows="combinations",
    ),
    Metric(
        "restarted_chains", None, "mh: share of chains that never left their real start.",
        rows="combinations",
    ),
    Metric(
        "narrows", None, "yes when a combination's recall or coverage is more than 0.01 below "
        "the plain mixture's: it trades diversity for fidelity, and is never the default.",
        rows="combinations",
    ),
    Metric(
        "mixture_fd_same_count", None, "the mixture's FD on as many images as this row, for "
        "a row scored on fewer images (mh).", rows="combinations",
    ),
)  # fmt: skip

METRICS: dict[str, Metric] = {m.name: m for m in _ENTRIES}
PLOTTED = tuple(m.name for m in _ENTRIES if m.plotted)
CHARTED = tuple(m.name for m in _ENTRIES if m.charted)
GATED = tuple(m.name for m in _ENTRIES if m.gated)
# Combinations whose images are no model's samples: never crowned best in the report, and why.
NOT_A_SAMPLE = {"mean": "a pixel blend of the members, not a sample of any"}
# Details about the stacker, shown beside the table (not a model's figure).
NOTES = {m.name: m.note for m in _ENTRIES} | {
    "ratio_mean_shift_reweighted": "||mean feature − real mean||² of mixture samples "
    "weighted by the stacker's r̂ (ratio_mean_shift_uniform: unweighted). Above the unweighted "
    "figure, r̂ pushes samples away from the data, and drs and mh will too.",
}


def row_keys(kind: str) -> set[str]:
    """The keys a metrics.json row of this kind carries: real, members or combinations."""
    wanted = {"real": {"all"}, "members": {"all", "members"}}.get(kind, {"all", "combinations"})
    return {m.name for m in _ENTRIES if m.rows in wanted}


# The space each figure is measured in (metrics.json's `feature_space`): the feature figures in
# `evaluate.feature_space`; the class figures by the domain classifier, which Inception's pool
# features cannot replace (they know no classes of this data); counts and flags in none.
IN_FEATURE_SPACE = (
    "fd", "kid", "kid_std", "precision", "recall", "density", "coverage", "coverage_per_class",
    "mixture_fd_same_count", "ratio_mean_shift_uniform", "ratio_mean_shift_reweighted",
)  # fmt: skip
BY_CLASSIFIER = ("classes_covered", "class_kl")
DEFAULT_SPACE = "domain"  # evaluate.feature_space's default: the space of every older record
SPACES = {
    "domain": "the project's feature net (reports/feature_net.safetensors): its figures compare "
    "only between runs sharing that net, at equal image counts (KID at any); its FD is not an "
    "FID",
    "inception": "the FID Inception-v3's 2,048 pool features (ensgan/eval/inception.py): FD is "
    "the FID, comparable with published FIDs only at the published protocol (the same image "
    "count and reference set)",
}


def feature_space(space: str) -> dict:
    """metrics.json's record of the feature space: its name, what its figures compare with,
    and the space of each figure."""
    if space not in SPACES:
        raise ValueError(f"unknown feature space {space!r}: one of {', '.join(SPACES)}")
    figures = dict.fromkeys(IN_FEATURE_SPACE, space)
    figures |= dict.fromkeys(BY_CLASSIFIER, "domain classifier")
    return {"name": space, "comparable": SPACES[space], "figures": figures}
