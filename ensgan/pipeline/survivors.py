"""Members left out of a night: one that diverged or failed does not sink the run.

When at least `train.min_members` members finished, training records the others in
`models/members/left_out.json` (name -> why), and stack, evaluate and generate work on the
survivors; below that, the run stops with a message naming the members. The file is part of
train's output, so under DVC a change in who was left out reruns the stages after it, and a
later run that trains every member removes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ensgan.config import Params
from ensgan.errors import CardError, TooFewMembersError
from ensgan.io.files import atomic_write
from ensgan.layout import Layout

log = logging.getLogger(__name__)

LEFT_OUT = "left_out.json"


def _path(layout: Layout) -> Path:
    return layout.members / LEFT_OUT


def left_out(layout: Layout) -> dict[str, str]:
    """Members the last training left out, with the reason; empty when none was."""
    path = _path(layout)
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path} is not JSON ({exc}): run `ensgan train` again") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CardError(f"{path} must map member names to reasons: run `ensgan train` again")
    return value


def settle(params: Params, layout: Layout, failures: dict[str, str]) -> dict[str, str]:
    """After training every member: record who failed, or stop when too few finished.

    `failures` maps each member that did not finish to why. Returns what was recorded."""
    needed = params.train.min_members or len(params.members)
    finished = [n for n in params.members if n not in failures]
    if len(finished) < needed:
        why = "; ".join(f"{n}: {r}" for n, r in failures.items())
        raise TooFewMembersError(
            f"only {len(finished)} of {len(params.members)} members finished "
            f"({', '.join(finished) or 'none'}), and train.min_members is {needed}: {why}"
        )
    record(layout, failures)
    for name, why in failures.items():
        log.warning("member %s left out of this run: %s", name, why)
    return failures


def record(layout: Layout, failures: dict[str, str]) -> None:
    """Write left_out.json (atomically), or remove it when every member finished."""
    path = _path(layout)
    if failures:
        text = json.dumps(dict(sorted(failures.items())), indent=2) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    else:
        path.unlink(missing_ok=True)


def finished_again(layout: Layout, name: str) -> None:
    """`ensgan train NAME` finished a member that was left out: it is back in."""
    out = left_out(layout)
    if name in out:
        del out[name]
        record(layout, out)


def survivors(params: Params, layout: Layout) -> Params:
    """The params with the left-out members removed (mixture weights renormalise over the
    rest): what stack, evaluate and generate work on."""
    out = left_out(layout)
    if not out:
        return params
    unknown = sorted(set(out) - set(params.members))
    if unknown:
        raise CardError(
            f"{_path(layout)} leaves out {unknown}, which params.yaml does not list: "
            "run `ensgan train` again"
        )
    members = {n: m for n, m in params.members.items() if n not in out}
    combine = params.combine
    if combine.weights:
        combine = combine.model_copy(
            update={"weights": {n: w for n, w in combine.weights.items() if n in members}}
        )
    return params.model_copy(update={"members": members, "combine": combine})
