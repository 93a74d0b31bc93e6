"""Sampling by a density ratio: discriminator rejection sampling and independence MH.

Both use r̂(x) = p_data(x)/p_mix(x), the calibrated stacker's estimate, in log space (`lr`).

- DRS (Azadi et al., ICLR 2019), as in the reference implementation in uber-research/
  metropolis-hastings-gans (`mhgan/mh.py::rejection_sample`): Δ = lr − log M,
  F = Δ − log(1 − exp(Δ − ε)) − γ, accept when u ≤ sigmoid(F). With γ = 0 this is plain
  rejection sampling, u < min(1, r̂/M). Deviation, by design: M is a high percentile of a
  burn-in rather than a running maximum, so a few outliers cannot drive the acceptance rate to
  zero; ratios above M are accepted with probability ~1.
- MH-GAN (Turner et al., ICML 2019), as in `mhgan/mh.py::mh_sample` and `demo_mhgan.py`: one
  independent chain per output, started at a held-out real image (no burn-in), proposals from
  the generator, accept x' with α = min(1, r̂(x')/r̂(x_k)); the output is the final state. A
  chain that never leaves the real image is run again over its own proposals starting at the
  first one, so an output is always generated, never real.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ensgan.errors import StackerError

EPS = 1e-6  # mhgan/mh.py's epsilon: keeps log(1 - exp(Δ - ε)) finite at Δ = 0


def drs_accept_prob(
    lr: np.ndarray, log_m: float, gamma: float = 0.0, eps: float = EPS
) -> np.ndarray:
    """P(accept) per proposal: sigmoid(F − γ) with Δ = min(lr − log M, 0)."""
    delta = np.minimum(np.asarray(lr, np.float64) - log_m, 0.0)
    f = delta - np.log(-np.expm1(delta - eps))
    return 1.0 / (1.0 + np.exp(-(f - gamma)))


def kish_ess(log_w: np.ndarray) -> float:
    """Effective sample size of importance weights exp(log_w): (Σw)² / Σw²."""
    log_w = np.asarray(log_w, np.float64)
    if log_w.size == 0:
        return 0.0
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum())


def mh_final_states(
    lr_init: np.ndarray, lr_props: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one independence-MH chain per row of `lr_props` (n chains × K proposals).

    Returns (index of each chain's final state, accepted moves per chain, which chains fell
    back to starting at their first proposal because they never left the real image)."""
    lr_props = np.asarray(lr_props, np.float64)
    n, k = lr_props.shape

    def scan(start_idx: np.ndarray, start_lr: np.ndarray, first: int) -> tuple[np.ndarray, ...]:
        cur, cur_lr, moves = start_idx.copy(), start_lr.copy(), np.zeros(n, dtype=np.int64)
        log_u = np.log(rng.random((n, k)))
        for j in range(first, k):
            take = log_u[:, j] <= np.minimum(0.0, lr_props[:, j] - cur_lr)
            cur[take], cur_lr[take] = j, lr_props[take, j]
            moves += take
        return cur, moves

    cur, moves = scan(np.full(n, -1), np.asarray(lr_init, np.float64), 0)
    stuck = cur < 0
    if stuck.any():  # never left the real image: restart at the first proposal (mh-gan's rule)
        cur2, moves2 = scan(np.zeros(n, dtype=np.int64), lr_props[:, 0], 1)
        cur, moves = np.where(stuck, cur2, cur), np.where(stuck, moves2, moves)
    return cur, moves, stuck


def rejection_fill(
    want: int,
    propose: Callable[[int], tuple[tuple[np.ndarray, ...], np.ndarray]],
    log_m: float,
    gamma: float,
    rng: np.random.Generator,
    *,
    max_proposals: int,
    who: str,
) -> tuple[list[np.ndarray], int, np.ndarray]:
    """DRS for one proposal source until `want` are accepted. `propose(b)` returns b
    candidates (a tuple of aligned arrays: images, seeds, ...) and their log r̂. Returns the
    accepted arrays, the proposals consumed (those after the last needed acceptance are not
    counted), and the consumed proposals' log-weights min(log r̂, log M), for the ESS."""
    parts: list[tuple[np.ndarray, ...]] = []
    log_w: list[np.ndarray] = []
    got, used_total, rate = 0, 0, 0.5
    while got < want:
        if used_total > max_proposals:
            raise StackerError(
                f"DRS accepted too few proposals of {who} ({got} of {want} after {used_total} "
                "proposals): lower stack.drs_percentile or combine.drs_gamma"
            )
        need = want - got
        batch = int(min(4096, max(64, np.ceil(1.2 * need / max(rate, 1e-3)))))
        items, lr = propose(batch)
        keep = np.flatnonzero(rng.random(batch) <= drs_accept_prob(lr, log_m, gamma))
        used = batch if len(keep) <= need else int(keep[need - 1]) + 1  # proposals consumed
        keep = keep[:need]
        used_total += used
        rate = max(len(keep) / used, 1e-3)
        log_w.append(np.minimum(lr[:used], log_m))
        parts.append(tuple(item[keep] for item in items))
        got += len(keep)
    columns = [np.concatenate(col) for col in zip(*parts, strict=True)] if parts else []
    return columns, used_total, np.concatenate(log_w) if log_w else np.empty(0)
