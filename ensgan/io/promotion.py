"""The promotion gate: which published batch consumers get as `latest`, and why.

Nightly retraining can get worse (a member diverges, the data changes), so a batch is
published either way but becomes the champion only when its metrics are not worse than the
current champion's beyond `gate` tolerances. In the store, beside `batches/`:

- `gate/RUN_ID.json`: the gate's verdict on a batch (promoted or candidate, the reasons, its
  metrics and the champion it was compared with), written before the pointer;
- `latest.json`: the champion (run_id, key prefix, metrics, how it got there), written last,
  in one put, so a reader sees the old champion or the new one;
- `history/TIME-RUN_ID.json`: one row per publish (the night's metrics for the published
  combination and each member, and the verdict), read back as a pandas DataFrame.

Nothing here deletes anything; `promote` moves the pointer by hand. Light: no torch.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ensgan.errors import BatchError, StorageError
from ensgan.eval.table import GATED, METRICS, PLOTTED
from ensgan.io.batches import _find_one, _published, check_run_id
from ensgan.io.storage import Store

if TYPE_CHECKING:
    import pandas as pd

    from ensgan.config import GateConfig

LATEST = "latest.json"
GATE = "gate/"
HISTORY = "history/"
# What a row keeps: the figures, and the count they were measured on (FD falls with it).
FIGURES = (*PLOTTED, "n_images")  # what a verdict and a history row keep of a metrics row
_LOWER_IS_BETTER = {name: METRICS[name].lower_is_better for name in GATED}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _get_json(store: Store, key: str) -> dict | None:
    """The object at `key` as a dict; None when there is none."""
    if not store.exists(key):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "obj.json"
        store.get_file(key, local)
        try:
            value = json.loads(local.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"{store.url}/{key} is not JSON ({exc}): move it aside") from None
    if not isinstance(value, dict):
        raise StorageError(f"{store.url}/{key} is not a JSON object: move it aside")
    return value


def _put_json(store: Store, key: str, value: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "obj.json"
        local.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        store.put_file(local, key)


def figures(row: dict | None) -> dict[str, float] | None:
    """The compared and charted figures of a metrics row (members' or a combination's)."""
    if not row:
        return None
    return {k: float(row[k]) for k in FIGURES if isinstance(row.get(k), int | float)}


def judge(candidate: dict | None, champion: dict | None, tol: GateConfig) -> list[str]:
    """Why `candidate` must not replace `champion` (empty: it may). Figures are compared
    only where both have them and the tolerance is set."""
    if champion is None:
        return []
    if candidate is None:
        return ["no evaluation of this batch (run `ensgan evaluate` before publishing)"]
    reasons = []
    skip = _uncomparable(candidate, champion)
    for name, lower_is_better in _LOWER_IS_BETTER.items():
        limit, new, old = getattr(tol, name), candidate.get(name), champion.get(name)
        if limit is None or new is None or old is None or name in skip:
            continue
        if name == "fd":
            bound, how = old * (1 + limit), f"{old:.4g} + {limit:.0%}"
        else:
            bound = old + limit if lower_is_better else old - limit
            how = f"{old:.4g} {'+' if lower_is_better else '-'} {limit:g}"
        if (new > bound) if lower_is_better else (new < bound):
            reasons.append(f"{name} {new:.4g} {'>' if lower_is_better else '<'} {how}")
    return reasons


def _uncomparable(candidate: dict | None, champion: dict | None) -> dict[str, str]:
    """Figure -> why the gate cannot compare it: FD measured on different image counts (its
    estimate falls as the count grows: docs/results.md), so a changed `evaluate.n_samples`
    would promote or hold back a night by the count alone."""
    n_new, n_old = (candidate or {}).get("n_images"), (champion or {}).get("n_images")
    if n_new is None or n_old is None or n_new == n_old:
        return {}
    return {"fd": f"measured on {n_new:.0f} images, the champion's on {n_old:.0f}"}


def not_compared(candidate: dict | None, champion: dict | None) -> list[str]:
    """What the verdict records as not compared, one line per figure."""
    return [f"{name}: {why}" for name, why in _uncomparable(candidate, champion).items()]


def latest(store: Store) -> dict | None:
    """The champion's record, or None before the first batch was promoted."""
    return _get_json(store, LATEST)


def verdict(store: Store, run_id: str) -> dict | None:
    """The gate's record on `run_id`, or None (published before there was a gate)."""
    return _get_json(store, GATE + check_run_id(run_id) + ".json")


def _point_latest(store: Store, run_id: str, prefix: str, metrics: dict | None, how: str) -> dict:
    record = {"run_id": run_id, "prefix": prefix, "metrics": metrics, "how": how, "at": _now()}
    record["pointer"] = secrets.token_hex(8)  # tells this write from any other
    _put_json(store, LATEST, record)  # last: the one write consumers see
    return record


def gate(
    store: Store,
    run_id: str,
    prefix: str,
    metrics: dict | None,
    members: dict[str, dict],
    tol: GateConfig,
) -> dict:
    """Judge a just-published batch against the champion, record the verdict and a history
    row, and move `latest.json` to it when it passes. A batch the gate judged before keeps its
    verdict (publishing the same batch again changes nothing)."""
    champion = latest(store)
    before = verdict(store, run_id)
    current = champion and champion.get("run_id")
    if before is not None:
        record = before
        pointer = champion and champion.get("pointer")
        if before["decision"] == "promoted" and before.get("pointer") == pointer:
            # promoted, but killed before the pointer moved (latest.json is still the very
            # record the verdict was made against, not one written since): finish the move
            _point_latest(store, run_id, prefix, before.get("metrics"), "gate")
    else:
        if current == run_id:
            reasons: list[str] = []
        else:
            reasons = judge(metrics, champion and champion.get("metrics"), tol)
        record = {
            "run_id": run_id,
            "prefix": prefix,
            "decision": "candidate" if reasons else "promoted",
            "reasons": reasons,
            "not_compared": not_compared(metrics, champion and champion.get("metrics")),
            "metrics": metrics,
            "champion": current,
            "pointer": champion and champion.get("pointer"),  # which latest.json it saw
            "at": _now(),
        }
        _put_json(store, GATE + run_id + ".json", record)
        if not reasons:
            _point_latest(store, run_id, prefix, metrics, "first" if champion is None else "gate")
    row = {"run_id": run_id, "decision": record["decision"], "at": _now(), "metrics": metrics}
    row["members"] = members
    _put_json(store, f"{HISTORY}{row['at'].replace(':', '')}-{run_id}.json", row)
    now = (latest(store) or {}).get("run_id")
    kept = {k: record.get(k, []) for k in ("decision", "reasons", "champion", "not_compared")}
    return {**kept, "latest": now}


def promote(store: Store, run_id: str) -> dict:
    """Make `run_id` the champion by hand, whatever the gate said; nothing is deleted."""
    prefix = _find_one(store, check_run_id(run_id))
    record = verdict(store, run_id)
    return _point_latest(store, run_id, prefix, record and record.get("metrics"), "by hand")


def resolve(store: Store, run_id: str) -> str:
    """`latest` names the champion's run_id; any other value is returned as it is."""
    if run_id != "latest":
        return run_id
    champion = latest(store)
    if champion is None:
        raise BatchError(f"no batch has been promoted in {store.url} yet (no {LATEST})")
    return check_run_id(str(champion.get("run_id")))


def statuses(store: Store) -> dict[str, str]:
    """For each complete batch, what `batches ls` says of it: champion, or why not."""
    champion = (latest(store) or {}).get("run_id")
    out = {}
    for _, run_id, _ in _published(store):
        record = verdict(store, run_id)
        if run_id == champion:
            out[run_id] = "latest"
        elif record is None:
            out[run_id] = "published before the gate"
        elif record["decision"] == "candidate":
            out[run_id] = "candidate: " + "; ".join(record.get("reasons") or [])
        else:
            out[run_id] = "promoted earlier"
    return out


def history(store: Store) -> pd.DataFrame:
    """One row per publish and model (the published combination as `ensemble`, and each
    member): time, run_id, verdict, model and its figures. Empty before the first publish."""
    import pandas as pd

    rows = []
    for key in store.list_keys(HISTORY):
        rec = _get_json(store, key) or {}
        models = {"ensemble": rec.get("metrics"), **(rec.get("members") or {})}
        for model, figs in models.items():
            rows.append(
                {"at": rec.get("at"), "run_id": rec.get("run_id"),
                 "decision": rec.get("decision"), "model": model, **(figs or {})}
            )  # fmt: skip
    frame = pd.DataFrame(rows, columns=["at", "run_id", "decision", "model", *FIGURES])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame.sort_values("at", kind="stable", ignore_index=True)  # then by key: run, model
