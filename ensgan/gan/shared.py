"""Train the members as MGAN's heads (ensgan/gan/mgan.py): one run, one discriminator, every
head updated at every step, each head then exported as an ordinary member.

The run's own state (the heads with their shared trunk, their EMA, the discriminator with its
which-generator head, both optimisers, the loss log) is a checkpoint under `ROOT/.shared/`, so
it resumes, and stops on a signal, exactly as a member does (the same loop, checkpoint and
stop rules). At every checkpoint each head is written out as a member under `ROOT/NAME/`:
its generator and EMA generator (the head's input layer over the shared trunk), the shared
discriminator (the logit the stacker reads for every head), the run's loss log and the head's
sample grid; its `card.json` once the run is finished. A head's fingerprint is its member's
with the run's own fingerprint as a seam, so it is never mistaken for a member trained alone.

The heads share one architecture and width (the first member's), see the whole training split
(no bootstrap), and the run is seeded by the first member's seed; the total fake batch per
step is train.batch_size, split over the K heads, so a step costs about one member's step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ensgan import stopping
from ensgan.config import MemberConfig, TrainConfig, shared_heads_problem
from ensgan.data.prepared import load_prepared, read_data_card
from ensgan.errors import ConfigError, DivergedError
from ensgan.gan.checkpoint import checkpoint_state, save_checkpoint, save_weights_only
from ensgan.gan.device import configure, resolve_device
from ensgan.gan.loop import training_loop
from ensgan.gan.losses import GANLoss, make_loss
from ensgan.gan.losslog import LossLog
from ensgan.gan.member import (
    GRID_IMAGES,
    GRIDS,
    LOSSES_CSV,
    NOT_WEIGHTS_CODE,
    fingerprint,
    fixed_latents,
    member_card,
    member_is_finished,
    resume_or_reset,
    stop_when_asked,
)
from ensgan.gan.mgan import MultiHeadGenerator, WhichGenerator, WhichTerm
from ensgan.gan.models import build_pair, to_uint8, to_unit
from ensgan.gan.nets import Nets, build_nets
from ensgan.gan.samplers import UniformSampler
from ensgan.io.cards import CARD, MemberCard, write_card
from ensgan.io.images import save_grid
from ensgan.provenance import code_version

SHARED = ".shared"  # ROOT/.shared: the run's own checkpoint and loss log


class HeadedDiscriminator(nn.Module):
    """The shared discriminator and its which-generator head, trained by one optimiser."""

    def __init__(self, d: nn.Module, which: WhichGenerator) -> None:
        super().__init__()
        self.d, self.which = d, which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(x)


def heads_of(members: dict[str, MemberConfig], batch_size: int) -> dict[str, MemberConfig]:
    """The members as heads: one architecture and width, one discriminator, the whole split."""
    problem = shared_heads_problem(members, batch_size)
    if problem:
        raise ConfigError(f"train.ensemble: shared: {problem}")
    return {n: m.model_copy(update={"bootstrap": False}) for n, m in members.items()}


def head_fingerprints(
    members: dict[str, MemberConfig], train: TrainConfig, data_sha: str
) -> dict[str, str]:
    """Each head's fingerprint: its member's, with the run's own as a seam."""
    heads = heads_of(members, train.batch_size)
    fp = shared_fingerprint(data_sha, heads, train)
    return {n: fingerprint(data_sha, m, train, {"shared": fp}) for n, m in heads.items()}


def shared_fingerprint(data_sha: str, heads: dict[str, MemberConfig], train: TrainConfig) -> str:
    """What makes two shared runs the same run (steps excluded, as for a member)."""
    parts = {
        "heads": {n: fingerprint(data_sha, m, train) for n, m in heads.items()},
        "beta": train.mgan_beta,
        "code": code_version("ensgan.gan.shared", NOT_WEIGHTS_CODE),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def train_shared(
    members: dict[str, MemberConfig],
    train: TrainConfig,
    data_dir: Path,
    root: Path,
    *,
    callback: Callable[[int], None] | None = None,
    progress: bool | None = None,
) -> dict[str, MemberCard]:
    """Train (or resume, or find finished) the heads; returns each member's card."""
    heads, root = heads_of(members, train.batch_size), Path(root)
    data_card = read_data_card(data_dir)
    fp = shared_fingerprint(data_card.sha256, heads, train)
    fps = head_fingerprints(members, train, data_card.sha256)
    done = {n: member_is_finished(root / n, fps[n], train.steps) for n in heads}
    if all(card is not None for card in done.values()):
        return done  # type: ignore[return-value]
    device = configure(resolve_device(train.device), train.cudnn_benchmark)
    loss = make_loss(train.loss)
    real = to_unit(torch.from_numpy(load_prepared(data_dir).train_images)).to(device)
    _, c, size, _ = real.shape
    first = next(iter(heads.values()))
    nets = shared_nets(first, len(heads), train, loss, size, c, device)
    g, g_ema, dd = nets.generator, nets.generator_ema, nets.discriminator
    modules, optimizers = (g, g_ema, dd), (nets.opt_g, nets.opt_d)
    state = root / SHARED
    state.mkdir(parents=True, exist_ok=True)
    start = resume_or_reset(state, fp, train.steps, modules, optimizers, device)
    for name in heads:  # a head's folder holding another member: none of its grids or card
        if _exported_at(root / name, fps[name]) is None:
            shutil.rmtree(root / name / GRIDS, ignore_errors=True)
            (root / name / CARD).unlink(missing_ok=True)
    z_grid = fixed_latents(first.seed, GRID_IMAGES, train.z_dim).to(device)

    def export_heads(step: int) -> None:
        for i, name in enumerate(heads):
            export_head(root / name, step, fps[name], (g.head(i), g_ema.head(i), dd.d),
                        state / LOSSES_CSV, z_grid)  # fmt: skip

    def on_checkpoint(step: int) -> None:
        losses.flush()
        save_checkpoint(state, step, fp, modules, optimizers)
        export_heads(step)

    t0 = time.perf_counter()
    which = WhichTerm(dd.which, g.labels(train.batch_size).to(device), train.mgan_beta)
    with LossLog(state / LOSSES_CSV) as losses, stopping.checked():
        try:
            training_loop(
                name="shared", generator=g, generator_ema=g_ema, discriminators=[dd.d],
                opt_g=nets.opt_g, opt_d=nets.opt_d, loss=loss,
                sampler=UniformSampler(np.arange(len(real))), real_images=real,
                seed=first.seed, start_step=start, total_steps=train.steps,
                batch_size=train.batch_size, z_dim=train.z_dim,
                ema_halflife_images=train.ema_halflife_images, max_loss=train.max_loss,
                log_every=train.log_every, checkpoint_every=train.checkpoint_every,
                log_row=losses.append, on_checkpoint=on_checkpoint,
                callback=stop_when_asked("shared", train, on_checkpoint, callback),
                progress=progress, channels_last=train.channels_last,
                augment=first.diffaugment, which=which, precision=train.precision,
            )  # fmt: skip
        except DivergedError as exc:
            raise DivergedError(f"{exc} in {state}") from None
    seconds = round(time.perf_counter() - t0, 2)
    if any(_exported_at(root / n, fps[n]) != train.steps for n in heads):
        export_heads(train.steps)  # the run was finished, a head's folder was not (replaced)
    sampler = UniformSampler(np.arange(len(real)))
    cards = {}
    for i, (name, head) in enumerate(heads.items()):
        trio = (g.head(i), g_ema.head(i), dd.d)
        card = member_card(name, head, train, data_card, fps[name], sampler, loss, trio,
                           device, size, c)  # fmt: skip
        cards[name] = card.model_copy(update={"seconds_this_run": seconds})
        write_card(root / name, cards[name])
    return cards


def shared_nets(
    first: MemberConfig, k: int, train: TrainConfig, loss: GANLoss, size: int, channels: int,
    device: torch.device,
) -> Nets:  # fmt: skip
    """The K heads over one trunk, their EMA, the discriminator with its which-generator head
    and the two optimisers, initialised from the first member's seed."""
    shape = {"z_dim": train.z_dim, "size": size, "channels": channels, "width": first.width}

    def make_pair() -> tuple[nn.Module, nn.Module]:
        g = MultiHeadGenerator(first.arch, k, **shape)
        d = build_pair(first.arch, **shape)[1]
        sample = torch.zeros(2, channels, size, size)
        return g, HeadedDiscriminator(d, WhichGenerator(d, k, sample))

    return build_nets(
        make_pair, loss, seed=first.seed, lr_g=train.lr_g, lr_d=train.lr_d,
        betas=(train.beta1, train.beta2), device=device, channels_last=train.channels_last,
    )  # fmt: skip


def _exported_at(head_dir: Path, fp: str) -> int | None:
    """The step head `fp` was last exported at into `head_dir`, or None (another member's)."""
    state = checkpoint_state(head_dir)
    return int(state["step"]) if state and state["fingerprint"] == fp else None


def export_head(
    out: Path,
    step: int,
    fp: str,
    trio: tuple[nn.Module, nn.Module, nn.Module],
    losses_csv: Path,
    z_grid: torch.Tensor,
) -> None:
    """Head `trio` (generator, EMA generator, shared D) as member `out` at `step` (no card:
    the run writes the cards once it is finished)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / CARD).unlink(missing_ok=True)
    save_weights_only(out, step, fp, trio)
    shutil.copyfile(losses_csv, out / LOSSES_CSV)
    with torch.no_grad():
        images = to_uint8(trio[1](z_grid)).cpu().numpy()
    save_grid(images, out / GRIDS / f"step-{step:07d}.png", nrow=8)
