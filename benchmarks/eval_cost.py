"""What `evaluate` costs, row by row and part by part, at image sizes 16 / 32 / 64 px, so that a
user can size a night.

    .venv/bin/python benchmarks/eval_cost.py [--project PATH] [--sizes 16 32 64] [--count 2000]
        [--steps 20] [--work DIR] [--against REV]

For each size, PATH's params.yaml (the default project's) with data.image_size set to it and
train.steps to STEPS (cost does not depend on how well members are trained) is prepared,
trained and stacked by the pipeline's own stages into WORK/size-S, and then `evaluate.run`
itself runs there with evaluate.n_samples = COUNT, timed from the inside: the functions it
calls are wrapped with timers for that run only (nothing is re-implemented), each row's share
read from its score_member / score_combination call. Parts: the judge's feature net fit;
per row, the generators, the discriminators and stacker (its scores, and DRS's and MH's
ratios), the rest of sampling, then each function Judge.measure's evaluate_images calls
(features and classes, PRDC's sets and figures, FD, KID when measured, the class figures);
"rest of evaluate" is the real row, the stacker's checks and the report. evaluate costs the
feature net fit + the sum over rows + the rest; a member adds one row, and its generator or
discriminator to every combination's sampling.

`--against REV` measures the same at another commit too, in the same run: that commit's own
`cost_at`, from `git archive` of it, in a process of its own (so its package is the one
imported), on its own params.yaml when PATH is this repository (each commit's default
project: an older commit cannot read keys added since) and on PATH's otherwise; each row's
total is printed beside this tree's.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from time import perf_counter

import pandas as pd
import torch
import yaml

import ensgan.eval.metrics as metrics_module
from ensgan.config import Params, load_params
from ensgan.ensemble.combinations import Ensemble
from ensgan.eval.inception import InceptionFeatures
from ensgan.layout import Layout
from ensgan.pipeline import evaluate, prepare, stack, train

REPO = Path(__file__).resolve().parents[1]
SIZES = (16, 32, 64)
# Where a row's sampling goes: the generators, and the discriminators and stacker.
SAMPLING = {
    "generators": [(Ensemble, "member_sample"), (Ensemble, "pixel_mean")],
    "discriminators and stacker": [(Ensemble, "_by_chunk")],
}
ROWS = {"member": "score_member", "combination": "score_combination"}


def measure_parts() -> dict[str, list[tuple[object, str]]]:
    """The functions evaluate_images calls, by name (KID appears once it calls it)."""
    names = evaluate.evaluate_images.__code__.co_names
    found = [n for n in names if callable(getattr(metrics_module, n, None))]
    return {n: [(metrics_module, n)] for n in found} | {
        "inception features": [(InceptionFeatures, "embed")]
    }


@contextmanager
def timers(parts: dict[str, list[tuple[object, str]]]) -> Iterator[dict[str, float]]:
    """Seconds spent in each part's functions while the block runs; restored after it."""
    spent = dict.fromkeys(parts, 0.0)
    saved = []
    for label, spots in parts.items():
        for owner, attr in spots:
            raw = vars(owner)[attr]
            saved.append((owner, attr, raw))
            setattr(owner, attr, _timed(getattr(owner, attr), spent, label))
    try:
        yield spent
    finally:
        for owner, attr, raw in reversed(saved):
            setattr(owner, attr, raw)


def _timed(fn, spent: dict[str, float], label: str):
    @wraps(fn)
    def call(*args, **kwargs):
        t0 = perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += perf_counter() - t0

    return call


@contextmanager
def per_row(spent: dict[str, float]) -> Iterator[dict[str, dict[str, float]]]:
    """Each row's seconds in total and in each part of `spent`, from its scoring call."""
    rows: dict[str, dict[str, float]] = {}
    saved = {kind: getattr(evaluate, fn) for kind, fn in ROWS.items()}

    def wrap(kind: str):
        def call(ens, name, *args, **kwargs):
            before, t0 = dict(spent), perf_counter()
            try:
                return saved[kind](ens, name, *args, **kwargs)
            finally:
                label = f"member {name}" if kind == "member" else name
                rows[label] = {"total": perf_counter() - t0}
                rows[label] |= {k: spent[k] - before[k] for k in spent}

        return call

    for kind, fn in ROWS.items():
        setattr(evaluate, fn, wrap(kind))
    try:
        yield rows
    finally:
        for kind, fn in ROWS.items():
            setattr(evaluate, fn, saved[kind])


def project_at(base: Params, size: int, steps: int, count: int, root: Path) -> Params:
    """The base params at `size` px, with `steps` training steps, written to root."""
    raw = base.model_dump(mode="json")
    raw["data"]["image_size"] = size
    raw["train"] |= {"steps": steps, "checkpoint_every": steps, "log_every": max(steps // 4, 1)}
    raw["evaluate"]["n_samples"] = count
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(root / "params.yaml")


def cost_at(base: Params, size: int, steps: int, count: int, root: Path) -> pd.DataFrame:
    """One size: the stages before evaluate, then evaluate timed from the inside."""
    params, layout = project_at(base, size, steps, count, root), Layout(root)
    prepare.run(params, layout)
    train.run(params, layout, progress=False)
    stack.run(params, layout)
    parts = {"feature net fit": [(evaluate, "fit_judge")], **SAMPLING, **measure_parts()}
    t0 = perf_counter()
    with timers(parts) as spent, per_row(spent) as rows:
        evaluate.run(params, layout)
    total = perf_counter() - t0
    table = pd.DataFrame(rows).T.fillna(0.0)
    measured = [k for k in parts if k not in ("feature net fit", *SAMPLING)]
    table["rest of sampling"] = table["total"] - table[[*SAMPLING, *measured]].sum(axis=1)
    fit, in_rows = spent["feature net fit"], table["total"].sum()
    table.loc["feature net fit"] = 0.0
    table.loc["feature net fit", ["total", "feature net fit"]] = fit
    table.loc["rest of evaluate"] = 0.0
    table.loc["rest of evaluate", "total"] = total - fit - in_rows
    table.loc["evaluate"] = table.sum()
    cols = ["total", "feature net fit", *SAMPLING, "rest of sampling", *measured]
    return table[[c for c in cols if table[c].any() or c == "total"]]


# Run in a copy of another commit's tree: its own cost_at, the table back as JSON on stdout.
AT_COMMIT = """
import sys
from pathlib import Path
import torch
from benchmarks.eval_cost import cost_at
from ensgan.config import load_params
params, size, steps, count, threads, root = sys.argv[1:]
torch.set_num_threads(int(threads))
table = cost_at(load_params(Path(params)), int(size), int(steps), int(count), Path(root))
print(table.to_json(orient="split"))
"""


def cost_at_commit(
    rev: str, params: Path, size: int, steps: int, count: int, threads: int, work: Path
) -> pd.DataFrame:
    """`cost_at` as commit `rev` has it, on the same params, from `git archive` of it (the
    repository itself is only read)."""
    tree = work / f"tree-{rev}"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev], capture_output=True
    )
    if archive.returncode != 0:
        raise SystemExit(f"no commit {rev!r}: {archive.stderr.decode()[-500:]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    if params.resolve() == (REPO / "params.yaml").resolve():
        params = tree / "params.yaml"  # its own defaults: it may not know keys added since
    env = {**os.environ, "PYTHONPATH": str(tree)}  # its ensgan, not this tree's
    args = [str(params.resolve()), str(size), str(steps), str(count), str(threads)]
    run = [sys.executable, "-c", AT_COMMIT, *args, str(work / f"at-{rev}-size-{size}")]
    out = subprocess.run(run, cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"eval_cost at {rev} failed:\n{out.stderr[-3000:]}")
    return pd.read_json(io.StringIO(out.stdout.splitlines()[-1]), orient="split")


def main(argv: Sequence[str] | None = None) -> dict[int, pd.DataFrame]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="whose params.yaml to use")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--count", type=int, default=2000, help="evaluate.n_samples for every row")
    ap.add_argument("--steps", type=int, default=20, help="training steps of each member")
    ap.add_argument("--work", type=Path, help="where the projects go (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--against", metavar="REV", help="measure at this commit too, side by side")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    base = load_params(a.project / "params.yaml")
    before: dict[int, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        if a.against:
            for s in a.sizes:
                before[s] = cost_at_commit(
                    a.against, a.project / "params.yaml", s, a.steps, a.count, a.threads, work
                )
        out = {s: cost_at(base, s, a.steps, a.count, work / f"size-{s}") for s in a.sizes}
    print(
        f"evaluate at {a.count} images per row (mh: min(n_mh = {base.evaluate.n_mh}, count)), "
        f"{len(base.members)} members trained {a.steps} steps, {a.threads} torch thread(s); "
        "seconds"
    )
    runs = {f"{s} px @{a.against}": t for s, t in before.items()}
    runs |= {f"{s} px": t for s, t in out.items()}
    side = pd.DataFrame({label: t["total"] for label, t in runs.items()})
    print("\nper row, side by side:")
    print(side.to_markdown(floatfmt=".2f"))
    parts = pd.DataFrame({label: t.loc["evaluate"] for label, t in runs.items()})
    print("\nwhere evaluate's time goes (all rows):")
    print(parts.to_markdown(floatfmt=".2f"))
    for s, t in out.items():
        print(f"\n{s} px, each row's parts:")
        print(t.to_markdown(floatfmt=".2f"))
    return out


if __name__ == "__main__":
    main()
