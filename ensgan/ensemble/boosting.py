"""AdaGAN boosting (Tolstikhin, Gelly, Bousquet, Simon-Gabriel, Schölkopf, NeurIPS 2017).

Members are trained one after another. Before round t > 1, a classifier (the discriminator's
architecture, fresh weights) separates the training images from samples of the mixture so
far, P_(t-1); its output D gives h_i = (1 − D_i)/(D_i + 1e-8) ≈ dP_(t-1)/dP_data at each
training image, and the new member trains on the data reweighted by
w_i ∝ (λ* − (1 − β) h_i)₊ (the paper's "theory_star" weights): images the mixture already
covers (large h) are drawn less, ones it misses more. The mixture then becomes
P_t = (1 − β_t) P_(t−1) + β_t G_t. Rules as in the official code, tolstikhin/adagan:
`adagan.py::_next_mixture_weight` (β_1 = 1; β_t = 1/t, "uniform", by default, or a constant),
`_compute_data_weights_theory_star` (λ* by an exact scan over the sorted h, renormalised,
uniform if no λ* is found), `_get_prob_real_data` (the classifier, 5 epochs of N/batch steps
on uniform batches of real and mixture images). Deviation: batches are drawn with
replacement (ensgan/gan/samplers.py WeightedSampler), so a weight vector with fewer non-zero
entries than a batch is still usable.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ensgan.gan.models import build_pair, to_unit

H_EPS = 1e-8  # adagan.py: h = (1 - D) / (D + 1e-8)


def beta_for_round(t: int, constant: float | None = None) -> float:
    """β_t: 1 for the first member; then 1/t ("uniform", the code's default) or a constant."""
    if t < 1:
        raise ValueError(f"rounds count from 1, got {t}")
    if t == 1:
        return 1.0
    return 1.0 / t if constant is None else float(constant)


def mixture_weights(n_rounds: int, constant: float | None = None) -> list[float]:
    """The mixture's weights after n rounds: w <- (1 − β) w, then β appended."""
    w: list[float] = []
    for t in range(1, n_rounds + 1):
        beta = beta_for_round(t, constant)
        w = [x * (1.0 - beta) for x in w] + [beta]
    return w


def theory_star_weights(h: np.ndarray, beta: float) -> tuple[np.ndarray, float | None]:
    """Data weights w_i = (λ* − (1 − β) h_i)₊ / (N β), renormalised, with λ* the first λ of
    the sorted scan that brackets itself; (uniform, None) when none does."""
    h = np.asarray(h, np.float64)
    n = len(h)
    if n == 0 or not 0.0 < beta <= 1.0:
        raise ValueError(f"need ratios and 0 < β <= 1, got {n} ratios and β={beta}")
    if beta == 1.0:  # the mixture so far has no weight: nothing to correct
        return np.full(n, 1.0 / n), None
    hs = np.sort(h)
    lam = (beta * n + (1.0 - beta) * np.cumsum(hs)) / np.arange(1, n + 1)
    upper = np.append((1.0 - beta) * hs[1:], np.inf)
    ok = np.flatnonzero(((1.0 - beta) * hs <= lam) & (lam <= upper))
    if len(ok) == 0:
        return np.full(n, 1.0 / n), None
    lam_star = float(lam[ok[0]])
    w = np.maximum(lam_star - (1.0 - beta) * h, 0.0) / (n * beta)
    return w / w.sum(), lam_star


def ratio_from_classifier(p_real: np.ndarray) -> np.ndarray:
    """h = (1 − D)/(D + 1e-8): the mixture-to-data density ratio at each real image."""
    p = np.asarray(p_real, np.float64)
    return (1.0 - p) / (p + H_EPS)


def image_classifier(arch: str, *, width: int, size: int, channels: int, seed: int) -> nn.Module:
    """A fresh discriminator of `arch`, seeded: the classifier of a round of image members."""
    torch.manual_seed(seed)
    return build_pair(arch, z_dim=1, size=size, channels=channels, width=width)[1]


def classifier_p_real(
    real_u8: np.ndarray,
    mixture_u8: np.ndarray,
    *,
    arch: str,
    width: int,
    seed: int,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-4,
) -> np.ndarray:
    """For images: a fresh discriminator of `arch` as the classifier (see `train_classifier`)."""
    clf = image_classifier(
        arch, width=width, size=real_u8.shape[-1], channels=real_u8.shape[1], seed=seed
    )
    real, fake = to_unit(torch.from_numpy(real_u8)), to_unit(torch.from_numpy(mixture_u8))
    return train_classifier(clf, real, fake, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)


def train_classifier(
    clf: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    seed: int,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-4,
) -> np.ndarray:
    """Train `clf` (logits), real (1) against mixture samples (0), for `epochs` passes of
    N // batch steps on uniform batches; return its P(real) on every real input."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, betas=(0.5, 0.999))
    clf.train()
    steps = epochs * max(1, len(real) // batch_size)
    for _ in range(steps):
        r = real[torch.randint(len(real), (batch_size,), generator=gen)]
        f = fake[torch.randint(len(fake), (batch_size,), generator=gen)]
        loss = F.softplus(-clf(r)).mean() + F.softplus(clf(f)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return p_real(clf, real)


@torch.no_grad()
def p_real(clf: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The classifier's P(real) for every input, in eval mode."""
    clf.eval()
    logits = torch.cat([clf(b).flatten() for b in x.split(512)])
    return torch.sigmoid(logits).double().cpu().numpy()


def adagan_data_weights(
    clf: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    round_: int,
    beta: float | None,
    seed: int,
    epochs: int,
    batch_size: int,
    fit_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """Round t's data weights over every row of `real` and their λ*: `clf` trained to tell
    `real` (or only its `fit_rows`, when the whole set would take too long) from the mixture's
    samples `fake` (both network inputs), then h at every real row, as AdaGAN weighs them all,
    and the theory_star weights at β_t (`beta`: a constant, or None for 1/t)."""
    if fit_rows is None:
        p = train_classifier(clf, real, fake, seed=seed, epochs=epochs, batch_size=batch_size)
    else:
        rows = torch.from_numpy(np.asarray(fit_rows)).to(real.device)
        train_classifier(clf, real[rows], fake, seed=seed, epochs=epochs, batch_size=batch_size)
        p = p_real(clf, real)
    return theory_star_weights(ratio_from_classifier(p), beta_for_round(round_, beta))
