"""The training loop alone, read top to bottom (after NVlabs/edm `training_loop`).

It never names a concrete class: networks, optimizers, the loss and the real-image sampler are
passed in, and what happens at a checkpoint (files) is the caller's `on_checkpoint`. Step t's
batch and latents come from a generator seeded by (seed, t), so a resumed run draws exactly
what an uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ensgan.errors import DivergedError
from ensgan.gan.augment import diff_augment
from ensgan.gan.losses import GANLoss
from ensgan.gan.mgan import WhichTerm
from ensgan.gan.samplers import RealSampler

Precision = Literal["fp32", "bf16"]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def ema_beta(batch_size: int, halflife_images: int) -> float:
    """Per-step EMA decay from a half-life counted in images (independent of batch size)."""
    return 0.5 ** (batch_size / halflife_images)


@torch.no_grad()
def ema_update(g_ema: nn.Module, g: nn.Module, beta: float) -> None:
    for p_ema, p in zip(g_ema.parameters(), g.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(g_ema.buffers(), g.buffers(), strict=True):
        b_ema.copy_(b)


def mean_sigmoid(logits: list[torch.Tensor]) -> float:
    """The mean D(x) over every discriminator's logits."""
    return torch.stack([torch.sigmoid(x).mean() for x in logits]).mean().item()


def check_finite(name: str, step: int, d_loss: float, g_loss: float, max_loss: float) -> None:
    """Divergence: a non-finite loss, or one above `max_loss`."""
    if not (math.isfinite(d_loss) and math.isfinite(g_loss)) or max(d_loss, g_loss) > max_loss:
        raise DivergedError(
            f"member {name} diverged at step {step} (d_loss={d_loss:.3g}, "
            f"g_loss={g_loss:.3g}); its last checkpoint is kept"
        )


def stats_row(done: int, batch_size: int, mean: np.ndarray, seconds: float) -> dict:
    """One loss-log row: the means (d_loss, g_loss, D(real), D(fake)) since the last row."""
    return {
        "step": done,
        "kimg": round(done * batch_size / 1000, 3),
        "d_loss": round(mean[0], 5),
        "g_loss": round(mean[1], 5),
        "d_real": round(mean[2], 5),
        "d_fake": round(mean[3], 5),
        "seconds": round(seconds, 2),
    }


def seen_by_d(x: torch.Tensor, augment: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """What the discriminator sees of `x`: its DiffAugment policies applied, drawn from this
    step's generator (no policy: `x` itself, and nothing drawn)."""
    return diff_augment(x, augment, gen) if augment else x


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The forward passes' autocast: bfloat16 for bf16, off (fp32) otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def gan_step(
    generator: nn.Module,
    discriminators: list[nn.Module],
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    loss: GANLoss,
    real: torch.Tensor,
    z: torch.Tensor,
    augment: Sequence[str],
    gen: torch.Generator,
    which: WhichTerm | None = None,
    precision: Precision = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """One D step, then one G step against the updated D: (d_loss, g_loss, D's real logits,
    D's fake logits). With `which` (MGAN), D also learns which generator made each fake and
    G's loss adds beta times that cross-entropy (one pass of D gives both). bf16: the forward
    passes under autocast, the logits and losses in fp32 (the weights, gradients and optimizer
    state stay fp32; no loss scaling: bf16 has fp32's range)."""
    # D step: real -> 1, fake -> 0; each of D's inputs augmented afresh (none: as is).
    with autocast(real.device, precision):
        fake = generator(z)
        d_real = [d(seen_by_d(real, augment, gen)).float() for d in discriminators]
        if which is None:
            d_fake = [d(seen_by_d(fake.detach(), augment, gen)).float() for d in discriminators]
            ce = 0.0
        else:
            d_fake, ce = which.logits_and_ce(
                discriminators[0], seen_by_d(fake.detach(), augment, gen)
            )
        d_loss = loss.d_loss(d_real, d_fake) + ce
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()

    # G step.
    with autocast(real.device, precision):
        if which is None:
            g_loss = loss.g_loss([d(seen_by_d(fake, augment, gen)).float() for d in discriminators])
        else:
            g_fake, ce = which.logits_and_ce(discriminators[0], seen_by_d(fake, augment, gen))
            g_loss = loss.g_loss(g_fake) + which.beta * ce
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return d_loss, g_loss, d_real, d_fake


def training_loop(
    *,
    name: str,  # the member, for messages and the progress bar
    generator: nn.Module,
    generator_ema: nn.Module,
    discriminators: list[nn.Module],  # one, or several sharing the loss (GMAN)
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,  # over every discriminator's parameters
    loss: GANLoss,
    sampler: RealSampler,
    real_images: torch.Tensor,  # the training split, float in [-1, 1], on the device
    seed: int,  # seeds step t's batch and latents
    start_step: int,  # steps already done (resume)
    total_steps: int,  # optimizer steps in all
    batch_size: int,  # images per step
    z_dim: int,  # latent size
    ema_halflife_images: int,  # EMA half-life, counted in images
    max_loss: float,  # a loss above this (or non-finite) is divergence
    log_every: int,  # steps between loss-log rows
    checkpoint_every: int,  # steps between checkpoints
    log_row: Callable[[dict], None],  # appends one loss-log row
    on_checkpoint: Callable[[int], None],  # saves state after this many steps
    callback: Callable[[int], None] | None = None,  # told each finished step
    progress: bool | None = None,  # a progress bar: None = only on a terminal
    channels_last: bool = False,  # NHWC batches (the modules are converted by the caller)
    augment: Sequence[str] = (),  # DiffAugment policies for what D sees (ensgan/gan/augment.py)
    which: WhichTerm | None = None,  # MGAN: the which-generator terms (ensgan/gan/mgan.py)
    precision: Precision = "fp32",  # bf16: the forward passes under autocast
) -> None:
    device = real_images.device
    beta = ema_beta(batch_size, ema_halflife_images)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    t0 = time.perf_counter()
    acc, n_acc = np.zeros(4), 0
    for module in (generator, *discriminators):
        module.train()
    disable = None if progress is None else not progress
    bar = tqdm(total=total_steps, initial=start_step, desc=name, unit="step", disable=disable)
    for step in range(start_step, total_steps):
        # Draw this step's real images and latents.
        gen = step_generator(seed, step)
        real = real_images[sampler.draw(gen, batch_size)].contiguous(memory_format=memory_format)
        z = torch.randn(batch_size, z_dim, generator=gen).to(device)
        d_loss, g_loss, d_real, d_fake = gan_step(
            generator, discriminators, opt_g, opt_d, loss, real, z, augment, gen, which, precision
        )
        ema_update(generator_ema, generator, beta)  # update the EMA

        # Check for divergence.
        dl, gl = d_loss.item(), g_loss.item()
        check_finite(name, step + 1, dl, gl, max_loss)
        acc += (dl, gl, mean_sigmoid(d_real), mean_sigmoid(d_fake))
        n_acc += 1
        done = step + 1

        # Append stats.
        if done % log_every == 0 or done == total_steps:
            m = acc / n_acc
            log_row(stats_row(done, batch_size, m, time.perf_counter() - t0))
            acc[:], n_acc = 0, 0
            bar.set_postfix(d=f"{m[0]:.3f}", g=f"{m[1]:.3f}")

        # Save network snapshot.
        if done % checkpoint_every == 0 or done == total_steps:
            on_checkpoint(done)
        bar.update(1)
        if callback is not None:
            callback(done)
    bar.close()
