"""How many generated images evaluate needs: every member and combination of a trained
project scored at several image counts and sampling seeds, side by side.

    .venv/bin/python benchmarks/eval_count.py --project PATH [--counts 1000 2000 5000 10000 60000]
        [--seeds 3] [--reference-seeds N] [--methods mixture drs ...] [--runs runs.jsonl]

Run after `make run` (or `dvc repro`) in PATH; nothing there is written. Each row is scored
as `evaluate` scores it (ensgan/pipeline/evaluate.py: its judge, fitted with params'
evaluate section, and its score_member / score_combination), at count N in place of
evaluate.n_samples (so mh scores min(n_mh, N)) and sampling seed evaluate.seed + i in place
of evaluate.seed (the judge's own seeds stay). The largest count is the reference. Printed:

- per figure (the plotted and gated ones Judge.measure returns), the mean ± sd over seeds of
  each row at each count, and the seconds a row takes;
- the ranking "published combination (generate.method) vs the best member (lowest FD at that
  count and seed)" by each distance figure (FD, and KID when measured), at each seed, against
  the reference's (its seeds' majority);
- the promotion gate's verdicts (ensgan/io/promotion.py `judge`, params' `gate`) on pairs at
  the same count: each row at one seed as the candidate, the same row at another seed as the
  champion (a night that changed nothing but its sampling seed), and the published
  combination against the best member of the reference, at every pair of seeds; each
  against the reference's verdict on the same kind of pair;
- the smallest count whose rankings and verdicts agree with the reference's at least as often
  as the reference's own seeds do (each count's verdicts under the tolerances its own noise
  sets), and each gated figure's noise there (sd over seeds), from which the gate's
  tolerances are set.

--runs PATH appends every scored row to a JSON-lines file and skips those already in it, so a
run that was stopped resumes, and `--runs PATH` with the same options prints the tables again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import permutations, product
from pathlib import Path
from time import perf_counter

import pandas as pd
import torch

from ensgan.config import EvaluateConfig, GateConfig, Params, load_params
from ensgan.data.prepared import load_prepared
from ensgan.ensemble.combinations import METHODS, Ensemble
from ensgan.errors import StackerError
from ensgan.eval.table import GATED, METRICS, PLOTTED
from ensgan.io.promotion import figures, judge
from ensgan.layout import Layout
from ensgan.pipeline.common import load_ensemble
from ensgan.pipeline.evaluate import (
    Judge,
    fit_judge,
    sample_count,
    score_combination,
    score_member,
)
from ensgan.pipeline.survivors import survivors

COUNTS = (1000, 2000, 5000, 10000, 60000)
DISTANCES = ("fd", "kid")  # the figures a ranking is read from, when measured (lower is better)
KEYS = ["row", "kind", "count", "seed"]
MEMBER = "member "  # a member's row label: "member NAME" (a member may be named like a method)


@dataclass
class Project:
    """A trained project; the ensemble and the judge are loaded when a row is first scored
    (printing the tables of rows already scored needs neither)."""

    root: Path
    params: Params
    rows: dict[str, tuple[str, str]]  # label -> (kind, member name or method)

    @cached_property
    def ens(self) -> Ensemble:
        return load_ensemble(self.params, Layout(self.root))

    @cached_property
    def judge(self) -> Judge:
        return fit_judge(load_prepared(Layout(self.root).prepared), self.params.evaluate)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="a trained project's root")
    ap.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    ap.add_argument("--seeds", type=int, default=3, help="sampling seeds per count")
    ap.add_argument(
        "--reference-seeds", type=int, default=None, help="seeds at the largest count "
        "(default: --seeds): fewer when the reference would not finish in time",
    )  # fmt: skip
    ap.add_argument(
        "--methods", nargs="+", help="combinations to score besides the published one (default: "
        "all); every member is scored",
    )  # fmt: skip
    ap.add_argument("--runs", type=Path, help="JSON lines of scored rows: appended to, and resumed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args(argv)
    if min(a.counts) < 2 or a.seeds < 1:
        ap.error("counts must be at least 2 and seeds at least 1")
    if a.reference_seeds is not None and a.reference_seeds < min(2, a.seeds):
        ap.error("--reference-seeds: at least 2 (the gate's verdicts compare pairs of seeds)")
    a.counts = sorted(set(a.counts))
    return a


def main(argv: Sequence[str] | None = None) -> dict:
    """Score, print the tables and the conclusion; return them (tests read them)."""
    a = parse(argv)
    torch.set_num_threads(a.threads)
    project = load_project(a.project, a.methods)
    ref_seeds = a.reference_seeds or a.seeds
    plan = [(n, s) for n in a.counts for s in range(ref_seeds if n == a.counts[-1] else a.seeds)]
    runs = score_runs(project, plan, a.runs)
    out = summarise(runs, project.params, a.counts[-1])
    print_report(out, project, runs)
    return out


def load_project(root: Path, methods: Sequence[str] | None) -> Project:
    """The project's params and rows; its ensemble and judge load exactly as `evaluate` loads
    them (nothing is written)."""
    params = survivors(load_params(root / "params.yaml"), Layout(root))
    rows = {f"{MEMBER}{m}": ("member", m) for m in params.members}
    rows |= {m: ("combination", m) for m in METHODS}
    if methods:
        wanted = {*methods, params.generate.method}
        if wanted - set(METHODS):
            raise SystemExit(f"no such method: {', '.join(sorted(wanted - set(METHODS)))}")
        rows = {k: v for k, v in rows.items() if v[0] == "member" or v[1] in wanted}
    return Project(root, params, rows)


def score_one(project: Project, kind: str, name: str, n: int, seed: int) -> dict:
    """One row at count n and sampling seed evaluate.seed + seed, as evaluate scores it."""
    ec: EvaluateConfig = project.params.evaluate.model_copy(update={"n_samples": n})
    s = ec.seed + seed
    if kind == "member":
        row, _ = score_member(project.ens, name, project.judge, n, s)
    else:
        row, _ = score_combination(project.ens, name, project.judge, sample_count(ec, name), s)
    return row


def score_runs(project: Project, plan: list[tuple[int, int]], path: Path | None) -> pd.DataFrame:
    """Every row at every (count, seed) of `plan`; with `path`, rows already there are read
    back, and each new one is appended as soon as it is scored."""
    done = pd.read_json(path, lines=True) if path is not None and path.exists() else None
    done = pd.DataFrame() if done is None or done.empty else done
    have = set(map(tuple, done[KEYS].values.tolist())) if len(done) else set()
    new = []
    for (n, seed), (label, (kind, name)) in product(plan, project.rows.items()):
        if (label, kind, n, seed) in have:
            continue
        t0 = perf_counter()
        try:
            row = score_one(project, kind, name, n, seed)
        except StackerError as exc:  # e.g. DRS cannot fill a member's share: evaluate says so
            print(f"{label} at {n}, seed {seed}: {exc}", file=sys.stderr)
            continue
        scalars = {k: v for k, v in row.items() if isinstance(v, int | float) and v is not None}
        record = {"row": label, "kind": kind, "count": n, "seed": seed} | scalars
        record["seconds"] = perf_counter() - t0
        print(f"{label} {n} {seed}: fd {row['fd']:.4g}, {record['seconds']:.1f} s", file=sys.stderr)
        new.append(record)
        if path is not None:
            with path.open("a", encoding="utf-8") as f:  # one JSON row a line: rows differ
                f.write(json.dumps(record) + "\n")
    runs = pd.concat([done, pd.DataFrame(new)], ignore_index=True)
    wanted = {(label, n, s) for (n, s) in plan for label in project.rows}
    keep = [(r, c, s) in wanted for r, c, s in runs[["row", "count", "seed"]].values.tolist()]
    return runs[keep].reset_index(drop=True)


def shown(runs: pd.DataFrame) -> list[str]:
    """The figures of the tables: the plotted and gated ones the rows carry, in table order."""
    return [k for k in METRICS if (k in PLOTTED or k in GATED) and k in runs.columns]


def mean_sd_table(runs: pd.DataFrame, figure: str) -> pd.DataFrame:
    """Rows x counts: `mean ± sd` of `figure` over the seeds (sd blank for one seed)."""
    g = runs.groupby(["row", "count"], sort=False)[figure]
    cells = {
        key: f"{m:.4g}" + ("" if math.isnan(sd) else f" ± {sd:.2g}")
        for key, m, sd in zip(g.mean().index, g.mean(), g.std(ddof=1), strict=True)
    }
    table = pd.Series(cells).unstack()
    return table.reindex(index=runs.row.unique(), columns=sorted(runs["count"].unique()))


def ranking(at: pd.DataFrame, published: str) -> dict[str, str]:
    """At one count and seed: for each distance figure, is the published combination ahead of
    or behind the best member (lowest on that figure)."""
    members = at[at.kind == "member"].set_index("row")
    pub = at[at.row == published]
    out = {}
    for k in (d for d in DISTANCES if d in at.columns):
        if pub.empty or members.empty:
            continue
        best = members[k].idxmin()
        out[k] = f"{'ahead of' if pub[k].iloc[0] < members[k].min() else 'behind'} {best[7:]}"
    return out


def rankings(runs: pd.DataFrame, published: str) -> pd.DataFrame:
    """(count, seed) -> the ranking by each distance figure."""
    rows = [
        {"count": n, "seed": s, **ranking(at, published)}
        for (n, s), at in runs.groupby(["count", "seed"], sort=True)
    ]
    return pd.DataFrame(rows)


def _side(ranked: str) -> str:
    return ranked.split(" ")[0]  # "ahead" or "behind": the ranking, whoever the best member is


def pairs(
    runs: pd.DataFrame, n: int, published: str, best: str
) -> Iterator[tuple[str, dict, dict]]:
    """At count n: (kind of pair, candidate row, champion row) for every ordered pair of
    seeds: the same row at two seeds, and the published combination against `best`."""
    at = runs[runs["count"] == n]
    by = {(r["row"], r["seed"]): r for r in at.to_dict("records")}
    seeds = sorted(at.seed.unique())
    for label in at.row.unique():
        for s, t in permutations(seeds, 2):
            if (label, s) in by and (label, t) in by:
                yield f"same row: {label}", by[label, s], by[label, t]
    for s, t in product(seeds, seeds):
        if (published, s) in by and (best, t) in by:
            yield "published vs best member", by[published, s], by[best, t]


def verdicts(
    runs: pd.DataFrame, n: int, published: str, best: str, tol: GateConfig
) -> pd.DataFrame:
    """The gate's verdict on every pair at count n: held back or promoted, and by which figure."""
    rows = []
    for kind, cand, champ in pairs(runs, n, published, best):
        reasons = judge(figures(_clean(cand)), figures(_clean(champ)), tol)
        held_by = sorted({r.split(" ")[0] for r in reasons})
        rows.append({"pair": kind, "held": bool(reasons), "held_by": ",".join(held_by)})
    return pd.DataFrame(rows, columns=["pair", "held", "held_by"])


def _clean(row: dict) -> dict:
    """A scored row as metrics.json holds it: figures the row did not carry are absent."""
    return {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}


def summarise(runs: pd.DataFrame, params: Params, reference: int) -> dict:
    """Tables, agreement with the reference count per count, the chosen count and its noise.

    "At the same confidence": the reference's own seeds disagree with their majority at
    times (a near tie), so a count agrees when its rankings agree with the reference's
    majority at least as often as the reference's seeds do, and its verdicts with the
    reference's at least as often as the reference's own; each count's verdicts use the
    tolerances its own noise sets (those the gate would get were evaluate run at it)."""
    published = params.generate.method
    ref = runs[runs["count"] == reference]
    ref_members = ref[ref.kind == "member"].groupby("row").fd.mean()
    best = ref_members.idxmin() if len(ref_members) else ""
    ranks = rankings(runs, published)
    figs = [k for k in DISTANCES if k in ranks.columns]
    ref_rank = {k: ranks[ranks["count"] == reference][k].map(_side).mode().iloc[0] for k in figs}
    ref_tol = tolerances(noise(runs, reference), params.gate)
    ref_verdicts = verdicts(runs, reference, published, best, ref_tol)
    expected = ref_verdicts.groupby("pair").held.agg(lambda h: h.mean() > 0.5)
    rows = []
    for n in sorted(runs["count"].unique()):
        at = ranks[ranks["count"] == n]
        ranked = [all(_side(r[k]) == ref_rank[k] for k in figs) for _, r in at.iterrows()]
        tol = tolerances(noise(runs, n), params.gate)
        v = verdicts(runs, n, published, best, tol)
        agree = v.pair.map(expected) == v.held
        held_by = v[v.held].held_by.str.split(",").explode().value_counts().to_dict()
        rows.append({
            "count": n,
            "ranking agrees (seeds)": f"{sum(ranked)}/{len(ranked)}",
            "verdicts agree (pairs)": f"{int(agree.sum())}/{len(v)}",
            "pairs held back, by figure": ", ".join(f"{k} {c}" for k, c in held_by.items()) or "-",
            "gate there": ", ".join(f"{k} {getattr(tol, k):.3g}" for k in GATED
                                    if getattr(tol, k) is not None),
            "_ranked": sum(ranked) / max(len(ranked), 1),
            "_verdicts": float(agree.mean()) if len(v) else 1.0,
        })  # fmt: skip
    agreement = pd.DataFrame(rows)
    at_ref = agreement[agreement["count"] == reference].iloc[0]
    agreement["agrees"] = (agreement._ranked >= at_ref._ranked) & (
        agreement._verdicts >= at_ref._verdicts
    )
    agreement = agreement.drop(columns=["_ranked", "_verdicts"])
    chosen = reference  # the smallest count from which every count below the reference agrees
    for n, agrees in zip(agreement["count"][::-1], agreement.agrees[::-1], strict=True):
        if n < reference and not agrees:
            break
        chosen = int(n)
    return {
        "published": published,
        "best_member": best,
        "reference": reference,
        "tables": {k: mean_sd_table(runs, k) for k in [*shown(runs), "seconds"]},
        "rankings": ranks,
        "reference_ranking": ref_rank,
        "agreement": agreement,
        "chosen": chosen,
        "noise": noise(runs, chosen),
    }


def tolerances(measured: pd.DataFrame, gate: GateConfig) -> GateConfig:
    """The gate with each measured figure's tolerance set from its noise (the others as
    params has them)."""
    found = {r.figure: float(r.tolerance) for r in measured.itertuples()}
    return gate.model_copy(update={k: v for k, v in found.items() if getattr(gate, k) is not None})


def noise(runs: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each gated figure's noise at count n: the sd over seeds per row (FD as a fraction of
    its mean, as its tolerance is), its median and largest over rows, and the tolerance that
    holds back a night that changed nothing but its seed about 2% of the time (two sds of
    the difference of two nights: 2·√2·the largest sd; KID's in the gate's unit, √2 × the
    champion's kid_std). Only rows scored on n images count (mh's is on its own n_mh)."""
    at = runs[(runs["count"] == n) & (runs.n_images == n)]  # mh's row is at its own count
    out = []
    for k in (g for g in GATED if g in at.columns and at[g].notna().any()):
        g = at.groupby("row")[k]
        sd = g.std(ddof=1)
        if sd.isna().all():
            continue  # one seed: no spread to measure
        unit = "absolute"
        if k == "fd":
            sd, unit = sd / g.mean(), "fraction of FD"
        elif k == "kid" and "kid_std" in at.columns:
            sd, unit = sd / at.groupby("row").kid_std.mean(), "kid_std"
        tolerance = 2 * sd.max() if k == "kid" else 2 * math.sqrt(2) * sd.max()
        out.append({"figure": k, "unit": unit, "sd median": sd.median(), "sd max": sd.max(),
                    "worst row": sd.idxmax(), "tolerance": tolerance})  # fmt: skip
    return pd.DataFrame(out)


def print_report(out: dict, project: Project, runs: pd.DataFrame) -> None:
    p, say = project.params, print
    seeds = runs.groupby("count").seed.nunique().to_dict()
    say(
        f"{len(p.members)} members of {p.train.steps} steps; reference: the evaluate split "
        f"({p.data.splits.evaluate:.0%} of the data); seeds per count {seeds}; mh scores "
        f"min(n_mh = {p.evaluate.n_mh}, count); published: {out['published']}"
    )
    for k, table in out["tables"].items():
        title = "seconds per row (sampling, stacker scores and every figure)"
        say(f"\n{k if k != 'seconds' else title}, mean ± sd over seeds:")
        say(table.to_markdown())
    say(f"\nranking: {out['published']} vs the best member, by count and seed")
    say(out["rankings"].to_markdown(index=False))
    ref = ", ".join(f"{k}: {v}" for k, v in out["reference_ranking"].items())
    say(f"reference ({out['reference']} images, majority of its seeds): {ref}")
    say(f"\nagreement with {out['reference']} images (gate: {p.gate.model_dump()}; best member "
        f"for the gate's published pairs: {out['best_member']}):")  # fmt: skip
    say(out["agreement"].to_markdown(index=False))
    say(
        f"\nsmallest count from which every count agrees with {out['reference']}: "
        f"{out['chosen']}" + (" (none below it does)" if out["chosen"] == out["reference"] else "")
    )
    say(f"noise of the gated figures at {out['chosen']} images (sd over seeds):")
    say(out["noise"].to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
