"""Evaluate's progress: a bar per model (the real row, each member, each combination), as
training has one per member, so a long evaluation says which row it is on and how long each
took. Shown on a terminal only, unless asked (tqdm's rule, as the training bars)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

PHASES = ("drawing", "scoring")  # what a row does: draw its images, then measure them
BAR_FORMAT = "{desc}: {bar:20} {n}/{total}{postfix} [{elapsed}]"  # postfix: ", PHASE"


@contextmanager
def model_bar(name: str, n_images: int, progress: bool | None) -> Iterator[Callable[[], None]]:
    """A bar for one row; the caller calls the yielded function when a phase ends."""
    disable = None if progress is None else not progress
    with tqdm(
        total=len(PHASES), desc=f"evaluate {name}", bar_format=BAR_FORMAT, disable=disable
    ) as bar:
        bar.set_postfix_str(f"{PHASES[0]} {n_images:,} images")

        def phase_done() -> None:
            bar.update(1)
            if bar.n < len(PHASES):
                bar.set_postfix_str(PHASES[bar.n])
            else:
                bar.set_postfix_str(f"{n_images:,} images scored")

        yield phase_done
