"""The promotion gate: which published batch consumers get as `latest`, and why.

Nightly retraining can get worse (a member diverges, the data changes), so a batch is
published either way but becomes the champion only when its metrics are not worse than the
current champion's beyond `gate` tolerances, and only when they can be compared: the gate
fails closed (a figure it cannot compare holds the batch back, with the command that
re-baselines). In the store, beside `batches/`:

- `gate/RUN_ID.json`: the gate's verdict on a batch (promoted or candidate, the reasons, its
  metrics, the champion it was compared with, the manifest's sha256), written before the
  pointer;
- `latest.json`: the champion (run_id, key prefix, metrics, the manifest's sha256, how it got
  there), written last, in one put, so a reader sees the old champion or the new one;
- `history/TIME-RUN_ID.json`: one row per publish (the night's metrics for the published
  combination and each member, and the verdict), read back as a pandas DataFrame.

Each is read through its typed record (ensgan/io/records.py): one that is not what it should
be never stops a publish, whose upload is already done. Nothing here deletes anything;
`promote` moves the pointer by hand. Light: no torch.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ensgan.errors import BatchError, RecordError
from ensgan.eval.table import DEFAULT_SPACE, GATED, IN_FEATURE_SPACE, METRICS, PLOTTED
from ensgan.io.batches import _check_pin, _find_one, _published, check_run_id, manifest_sha256
from ensgan.io.records import (
    SPACE_KEY,
    Champion,
    HistoryRow,
    Verdict,
    fetch_record,
    store_url,
)
from ensgan.io.storage import Store
from ensgan.terminal import printable

if TYPE_CHECKING:
    import pandas as pd

    from ensgan.config import GateConfig

log = logging.getLogger(__name__)

LATEST = "latest.json"
GATE = "gate/"
HISTORY = "history/"
# What a row keeps: the figures, and the count they were measured on (FD falls with it).
FIGURES = (*PLOTTED, "n_images")  # what a verdict and a history row keep of a metrics row
_LOWER_IS_BETTER = {name: METRICS[name].lower_is_better for name in GATED}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _put_json(store: Store, key: str, value: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "obj.json"
        local.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        store.put_file(local, key)


def _set_aside(store: Store, key: str) -> str:
    """Copy an unreadable record to KEY.unreadable-TIME before it is replaced: kept, not lost."""
    aside = f"{key}.unreadable-{_now().replace(':', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        store.get_file(key, Path(tmp) / "obj")
        store.put_file(Path(tmp) / "obj", aside)
    return aside


def figures(row: dict | None, space: str | None = None) -> dict[str, float | str] | None:
    """The compared and charted figures of a metrics row (members' or a combination's), and
    the feature space they were measured in (metrics.json's feature_space name), if known."""
    if not row:
        return None
    out: dict[str, float | str] = {
        k: float(row[k]) for k in FIGURES if isinstance(row.get(k), int | float)
    }
    return out if space is None else out | {SPACE_KEY: space}


def compare(candidate: dict, champion: dict, tol: GateConfig) -> list[dict]:
    """The gate figure by figure: for each figure with a tolerance, this batch's value, the
    champion's, the bound it may not cross (and how it was set), whether it passed, or why it
    could not be compared. What `judge` gives its reasons from, and the report shows."""
    skip = _uncomparable(candidate, champion, tol)
    rows = []
    for name, lower_is_better in _LOWER_IS_BETTER.items():
        limit, new, old = getattr(tol, name), candidate.get(name), champion.get(name)
        row = {"figure": name, "batch": new, "champion": old, "lower_is_better": lower_is_better}
        if name in skip:
            rows.append(row | {"passed": False, "not_compared": skip[name]})
            continue
        if limit is None or new is None or old is None:
            continue  # not gated, or measured on neither side
        if name == "fd":
            bound, how = old * (1 + limit), f"{old:.4g} + {limit:.0%}"
        elif name == "kid":  # in sds of the difference of two estimates as noisy as the
            # champion's: a noisy night's own kid_std does not widen its own tolerance
            spread = math.sqrt(2) * float(champion["kid_std"])
            bound, how = old + limit * spread, f"{old:.4g} + {limit:g} × {spread:.3g} (sd)"
        else:
            bound = old + limit if lower_is_better else old - limit
            how = f"{old:.4g} {'+' if lower_is_better else '-'} {limit:g}"
        passed = new <= bound if lower_is_better else new >= bound
        rows.append(row | {"bound": bound, "how": how, "passed": passed})
    return rows


def judge(candidate: dict | None, champion: dict | None, tol: GateConfig) -> list[str]:
    """Why `candidate` must not replace `champion` (empty: it may). A figure with a tolerance
    that cannot be compared (`not_compared`) is a reason too: the gate fails closed."""
    if champion is None:
        return []
    if candidate is None:
        return ["no evaluation of this batch (run `ensgan evaluate` before publishing)"]
    rows = compare(candidate, champion, tol)
    reasons = [f"{r['figure']} not compared: {r['not_compared']}" for r in rows if "bound" not in r]
    for r in (r for r in rows if "bound" in r and not r["passed"]):
        sign = ">" if r["lower_is_better"] else "<"
        reasons.append(f"{r['figure']} {r['batch']:.4g} {sign} {r['how']}")
    return reasons


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _uncomparable(candidate: dict, champion: dict, tol: GateConfig) -> dict[str, str]:
    """Figure -> why the gate cannot compare it: it was measured in another feature space
    than the champion's (`_space`; figures by the domain classifier still compare), one side
    lacks it or it is not finite (NaN passes every comparison), the champion has no kid_std
    to scale KID's tolerance by, or FD was measured on different image counts (its estimate
    falls as the count grows: docs/results.md), so a changed `evaluate.n_samples` would
    promote or hold back a night by the count alone (KID is unbiased: it is compared across
    counts). A champion recorded before counts were kept is compared as before."""
    out = {}
    gated = [n for n in _LOWER_IS_BETTER if getattr(tol, n) is not None]
    new_space, old_space = _space(candidate), _space(champion)
    if new_space != old_space:
        why = f"measured in {new_space} features, the champion's in {old_space}"
        if SPACE_KEY not in champion:
            why += " (its record names none: it predates evaluate.feature_space)"
        out |= {n: why for n in gated if n in IN_FEATURE_SPACE}
    for name in (n for n in gated if n not in out):
        new, old = candidate.get(name), champion.get(name)
        if new is None and old is None:
            continue  # neither measured it (class_kl without labels)
        if not _finite(new):
            out[name] = "not measured on this batch" if new is None else f"{new} on this batch"
        elif not _finite(old):
            out[name] = "the champion has none" if old is None else f"the champion's is {old}"
        elif name == "kid" and not _finite(champion.get("kid_std")):
            out[name] = "the champion has no kid_std to measure its tolerance in"
    n_new, n_old = candidate.get("n_images"), champion.get("n_images")
    counted = n_new is not None and n_old is not None and n_new != n_old
    if counted and "fd" not in out and candidate.get("fd") is not None and tol.fd is not None:
        out["fd"] = f"measured on {n_new:.0f} images, the champion's on {n_old:.0f}"
    return out


def _space(figs: dict) -> str:
    """The feature space a gate row's figures were measured in; a row from before the choice
    existed was measured in the default one."""
    space = figs.get(SPACE_KEY, DEFAULT_SPACE)
    return space if isinstance(space, str) else repr(space)


def not_compared(candidate: dict | None, champion: dict | None, tol: GateConfig) -> list[str]:
    """What the verdict records as not compared, one line per figure."""
    if candidate is None or champion is None:
        return []
    return [f"{name}: {why}" for name, why in _uncomparable(candidate, champion, tol).items()]


def rebaseline_hint(run_id: str) -> str:
    """What to do when the evaluation changed on purpose: the reason `ls` shows says it."""
    return (
        f"if the evaluation changed on purpose, `ensgan batches promote {run_id}` makes this "
        "batch the champion, the baseline later nights are judged against"
    )


def latest(store: Store) -> Champion | None:
    """The champion's record, or None before the first batch was promoted; a record that is
    not one is a StorageError naming latest.json and what to do."""
    return fetch_record(store, Champion, LATEST)


def verdict(store: Store, run_id: str) -> Verdict | None:
    """The gate's record on `run_id`, or None (published before there was a gate)."""
    return fetch_record(store, Verdict, GATE + check_run_id(run_id) + ".json")


def read_champion(store: Store) -> tuple[Champion | None, str | None]:
    """The champion's record and None, or None and why latest.json is not one (then no batch
    is `latest` until one is promoted by hand)."""
    try:
        return latest(store), None
    except RecordError as exc:
        return None, str(exc)


def _point_latest(
    store: Store, run_id: str, prefix: str, metrics: dict | None, how: str, digest: str | None
) -> dict:
    record = {"run_id": run_id, "prefix": prefix, "metrics": metrics, "how": how, "at": _now()}
    record["manifest_sha256"] = digest  # `pull latest` checks the manifest against it
    record["pointer"] = secrets.token_hex(8)  # tells this write from any other
    _put_json(store, LATEST, record)  # last: the one write consumers see
    return record


def _earlier_verdict(store: Store, run_id: str) -> Verdict | None:
    """The verdict a publish of this batch left; an unreadable one is set aside (and the
    batch judged afresh) rather than blocking every later publish of it."""
    try:
        return verdict(store, run_id)
    except RecordError as exc:
        aside = _set_aside(store, GATE + run_id + ".json")
        log.warning("%s; kept as %s, judging the batch afresh", printable(exc), aside)
        return None


def _reasons(
    run_id: str, metrics: dict | None, champion: Champion | None, problem: str | None,
    tol: GateConfig,
) -> list[str]:  # fmt: skip
    """Why this batch must not become the champion; a champion that cannot be read or has
    nothing to compare with holds it back too, with the command that re-baselines."""
    if problem is not None:
        return [f"no champion to compare with: {problem}", rebaseline_hint(run_id)]
    if champion is None or champion.run_id == run_id:
        return []
    if champion.metrics is None and metrics is not None:
        why = f"not compared: the champion {champion.run_id} has no recorded metrics"
        return [why, rebaseline_hint(run_id)]
    reasons = judge(metrics, champion.metrics, tol)
    if not_compared(metrics, champion.metrics, tol):
        reasons.append(rebaseline_hint(run_id))
    return reasons


def gate(
    store: Store,
    run_id: str,
    prefix: str,
    metrics: dict | None,
    members: dict[str, dict],
    tol: GateConfig,
    *,
    manifest: str | None = None,
) -> dict:
    """Judge a just-published batch against the champion, record the verdict and a history
    row, and move `latest.json` to it when it passes. A batch the gate judged before keeps its
    verdict (publishing the same batch again changes nothing). `manifest`: the sha256 of the
    manifest published (default: the store's), which the verdict and latest.json pin. Bad
    records in the store never stop it: the batch is published, so it ends as a candidate."""
    champion, problem = read_champion(store)
    before = _earlier_verdict(store, run_id)
    current = champion.run_id if champion else None
    figures: list[dict] = []  # figure by figure, when this very verdict compared them
    if before is None and metrics and champion and champion.metrics and current != run_id:
        figures = compare(metrics, champion.metrics, tol)
    digest = manifest or manifest_sha256(store, prefix)
    if before is not None:
        record = before.model_dump(mode="json")
        pointer = champion.pointer if champion else None
        if before.decision == "promoted" and before.pointer == pointer and problem is None:
            # promoted, but killed before the pointer moved (latest.json is still the very
            # record the verdict was made against, not one written since): finish the move
            pin = before.manifest_sha256 or digest
            _point_latest(store, run_id, prefix, before.metrics, "gate", pin)
    else:
        reasons = _reasons(run_id, metrics, champion, problem, tol)
        record = {
            "run_id": run_id,
            "prefix": prefix,
            "decision": "candidate" if reasons else "promoted",
            "reasons": reasons,
            "not_compared": not_compared(metrics, champion and champion.metrics, tol),
            "metrics": metrics,
            "champion": current,
            "pointer": champion.pointer if champion else None,  # which latest.json it saw
            "manifest_sha256": digest,
            "at": _now(),
        }
        _put_json(store, GATE + run_id + ".json", record)
        if not reasons:
            how = "first" if champion is None else "gate"
            _point_latest(store, run_id, prefix, metrics, how, digest)
    row = {"run_id": run_id, "decision": record["decision"], "at": _now(), "metrics": metrics}
    row["members"] = members
    _put_json(store, f"{HISTORY}{row['at'].replace(':', '')}-{run_id}.json", row)
    now = read_champion(store)[0]
    kept = {k: record.get(k, []) for k in ("decision", "reasons", "champion", "not_compared")}
    return {**kept, "latest": now and now.run_id, "figures": figures}


def promote(store: Store, run_id: str) -> dict:
    """Make `run_id` the champion by hand, whatever the gate said; nothing is deleted. The
    manifest it has now is pinned, unless its verdict pins another (it was replaced)."""
    prefix = _find_one(store, check_run_id(run_id))
    try:
        record = verdict(store, run_id)
    except RecordError as exc:
        log.warning("%s; promoting without its metrics", printable(exc))
        record = None
    digest = manifest_sha256(store, prefix)
    _check_pin(digest, record and record.manifest_sha256, store_url(store, prefix))
    metrics = record.metrics if record else None
    return _point_latest(store, run_id, prefix, metrics, "by hand", digest)


def resolve(store: Store, run_id: str) -> str:
    """`latest` names the champion's run_id; any other value is returned as it is."""
    if run_id != "latest":
        return run_id
    champion = latest(store)
    if champion is None:
        raise BatchError(f"no batch has been promoted in {store.url} yet (no {LATEST})")
    return champion.run_id


def pinned(store: Store, run_id: str) -> str | None:
    """The manifest sha256 the store's gate records pin for `run_id` (latest.json's when it
    is the champion, else its verdict's), or None where none does (records from before)."""
    champion, _ = read_champion(store)
    if champion is not None and champion.run_id == run_id and champion.manifest_sha256:
        return champion.manifest_sha256
    try:
        record = verdict(store, run_id)
    except RecordError:
        return None  # `ls` names it; the batch's own checksums are still verified
    return record.manifest_sha256 if record else None


def statuses(store: Store) -> dict[str, str]:
    """For each complete batch, what `batches ls` says of it: champion, or why not. A record
    that cannot be read is named in its batch's line; it never hides the others."""
    champion, _ = read_champion(store)
    out = {}
    for _, run_id, _ in _published(store):
        try:
            record = verdict(store, run_id)
        except RecordError as exc:
            out[run_id] = f"unreadable gate verdict: {exc}"
            continue
        if champion is not None and run_id == champion.run_id:
            out[run_id] = "latest"
        elif record is None:
            out[run_id] = "published before the gate"
        elif record.decision == "candidate":
            out[run_id] = "candidate: " + "; ".join(record.reasons)
        else:
            out[run_id] = "promoted earlier"
    return out


def _history_rows(store: Store) -> list[HistoryRow]:
    rows = []
    for key in store.list_keys(HISTORY):
        try:
            row = fetch_record(store, HistoryRow, key)
        except RecordError as exc:
            log.warning("%s", printable(exc))  # the chart is drawn from the others
            continue
        if row is not None:
            rows.append(row)
    return rows


def history(store: Store) -> pd.DataFrame:
    """One row per publish and model (the published combination as `ensemble`, and each
    member): time, run_id, verdict, model and its figures. Empty before the first publish;
    a row that is not one is left out, with a warning naming its key."""
    import pandas as pd

    rows = []
    for rec in _history_rows(store):
        for model, figs in {"ensemble": rec.metrics, **rec.members}.items():
            rows.append(
                {"at": rec.at, "run_id": rec.run_id, "decision": rec.decision, "model": model,
                 **{k: v for k, v in (figs or {}).items() if k in FIGURES}}
            )  # fmt: skip
    frame = pd.DataFrame(rows, columns=["at", "run_id", "decision", "model", *FIGURES])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame.sort_values("at", kind="stable", ignore_index=True)  # then by key: run, model


def verdict_line(run_id: str, verdict: dict) -> str:
    """The gate's word on this batch, for the report's first screen: promoted, or why not
    (a figure it could not compare is among the reasons, with the command to re-baseline)."""
    if verdict["decision"] == "promoted":
        return f"{run_id}: promoted; latest is {verdict['latest']}"
    why = "; ".join(verdict["reasons"])
    return f"{run_id}: not promoted ({why}); latest stays {verdict['latest']}"
