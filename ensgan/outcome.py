"""What each stage command prints when it ends: a line or two a person reads under `dvc repro`
(what was made, from what, the figure that matters, whether it was unchanged), built from what
the stage returned. `--json` prints the returned dict itself, for machines."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ensgan.io.promotion import verdict_line

Result = Mapping[str, Any]


def _unchanged(result: Result) -> str:
    return " (unchanged: its inputs are as before)" if result.get("up_to_date") else ""


def prepare_lines(card: Result) -> list[str]:
    n, c, h, w = card["shape"]
    classes = f"{card['n_classes']} classes" if card["labels"] else "no labels"
    return [
        f"prepared {card['source']}: {n} images, {c}x{h}x{w}, {classes}{_unchanged(card)}",
        f"splits: train {card['n_train']}, stack {card['n_stack']}, "
        f"calibrate {card['n_calibrate']}, evaluate {card['n_evaluate']} -> data/prepared/",
    ]


def train_lines(cards: Result) -> list[str]:
    lines = [
        f"member {name}: {c['arch']} width {c['width']}, {c['steps']} steps on {c['device']}, "
        f"{c['seconds_this_run']:.1f} s this run"
        for name, c in cards.items()
    ]
    return [*lines, f"{len(cards)} member(s) finished in models/members/"]


def stack_lines(card: Result) -> list[str]:
    return [
        f"stacker: {card['model']} over {len(card['members'])} members' discriminators, "
        f"CV ROC AUC {card['cv_roc_auc']:.3f} ± {card['cv_roc_auc_std']:.3f} "
        f"({card['n_real']} real, {card['n_fake']} generated){_unchanged(card)}",
        f"{card['calibration']} calibration: ECE {card['ece_raw']:.3f} -> "
        f"{card['ece_calibrated']:.3f} -> models/stacker/",
    ]


def generate_lines(result: Result) -> list[str]:
    made = "already there" if result.get("status") == "exists" else "generated"
    return [f"{made}: batch {result['run_id']}, {result['n_images']} images in {result['path']}"]


def publish_lines(receipt: Result) -> list[str]:
    status = str(receipt.get("status", "published")).replace("-", " ")
    where = receipt.get("url") or receipt.get("prefix")
    count = f", {receipt['n_images']} images" if "n_images" in receipt else ""  # older receipts
    lines = [f"{status}: batch {receipt['run_id']}{count} at {where}"]
    if receipt.get("gate"):
        lines.append(f"gate: {verdict_line(receipt['run_id'], receipt['gate'])}")
    return lines


LINES: dict[str, Callable[[Result], list[str]]] = {
    "prepare": prepare_lines,
    "train": train_lines,
    "stack": stack_lines,
    "generate": generate_lines,
    "publish": publish_lines,
}


def outcome(stage: str, result: Result) -> str:
    """The lines `ensgan STAGE` prints for what the stage returned."""
    return "\n".join(LINES[stage](result))
