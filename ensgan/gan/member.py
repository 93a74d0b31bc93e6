"""Train one ensemble member: find it finished, or resume or reset it, run the loop, write its card.

A member is a (generator, EMA generator, discriminator) triple trained with Adam on what its
sampler draws from the training split (bagging by default). Its fingerprint says what makes two
runs the same member (data, member and train params, the training code); `steps` is left out,
so raising `train.steps` continues a finished member instead of starting it again. `card.json`
exists only while the member is finished as it describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ensgan import stopping
from ensgan.config import MemberConfig, TrainConfig
from ensgan.data.prepared import load_prepared, read_data_card
from ensgan.errors import DivergedError
from ensgan.gan.checkpoint import (
    CHECKPOINT,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
    weights_sha256,
)
from ensgan.gan.device import configure, resolve_device
from ensgan.gan.loop import training_loop
from ensgan.gan.losses import GANLoss, make_loss
from ensgan.gan.losslog import LossLog, trim_log
from ensgan.gan.models import to_uint8, to_unit
from ensgan.gan.nets import member_nets
from ensgan.gan.samplers import RealSampler, UniformSampler, bootstrap_indices
from ensgan.io.cards import CARD, DataCard, MemberCard, read_card_if_any, write_card
from ensgan.io.images import save_grid
from ensgan.provenance import code_version
from ensgan.registry import ARCHS, LOSSES

log = logging.getLogger(__name__)

LOSSES_CSV = "losses.csv"
GRIDS = "grids"  # a fixed-latent sample grid per checkpoint: watch a long run
GRID_IMAGES = 64

# Modules in the training code's import closure that cannot change a member's weights, or
# whose effect is hashed another way (param values, the data's sha256). Everything else the
# training code imports is hashed into the fingerprint: editing it makes members retrain, and
# a module added later is hashed unless it is named here.
NOT_WEIGHTS_CODE = frozenset(
    {
        "ensgan.config",  # validates params; their values are in the fingerprint
        "ensgan.data.sources",  # what it reads is in the data's sha256, in the fingerprint
        "ensgan.data.mnist",  # the same: readers of data sources
        "ensgan.data.shaping",
        "ensgan.errors",
        "ensgan.provenance",
        "ensgan.registry",  # all kinds of names; the two entries a member uses are hashed
        "ensgan.gan.device",
        "ensgan.gan.losslog",  # what is logged, not what is learned
        "ensgan.io.cards",
        "ensgan.io.files",
        "ensgan.io.images",  # the checkpoint grids
        "ensgan.stopping",  # when a run stops; a stopped member resumes to the same weights
    }
)
# Train params that change how a run is carried out or watched, not the member it makes (a
# boosted member's data weights are in its fingerprint as its sampler's identity).
_NOT_IDENTITY = {
    "steps",
    "device",
    "workers",
    "gpus",
    "members_per_gpu",
    "cudnn_benchmark",
    "checkpoint_every",
    "log_every",
    "max_loss",
    "channels_last",
    "runner",
    "ray_address",
    "ray_cpus",
    "ray_gpus",
    "ensemble",
    "mgan_beta",  # a shared run's identity holds it (ensgan/gan/shared.py)
    "cluster_pca",  # a clustered member's images are in its fingerprint (its sampler's)
    "cluster_seed",
    "boosting_beta",
    "boosting_epochs",
    "min_members",
}


def fingerprint(
    data_sha: str,
    member: MemberConfig,
    train: TrainConfig,
    seams: dict[str, str] | None = None,
) -> str:
    """What makes two runs the same member (steps excluded: raising them continues it).
    `seams` names a sampler or loss passed in instead of the ones the params imply."""
    parts = {
        "data": data_sha,
        "member": member.model_dump(),
        "train": train.model_dump(exclude=_NOT_IDENTITY),
        "code": code_version("ensgan.gan.member", NOT_WEIGHTS_CODE),
        "implementations": [ARCHS[member.arch], LOSSES[train.loss]],
    }
    if seams:
        parts["seams"] = seams
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def member_is_finished(out_dir: Path, fp: str, steps: int) -> MemberCard | None:
    """The member's card when `out_dir` holds it finished at `steps` with fingerprint `fp`:
    the one check both the flow's cache and training trust."""
    state = checkpoint_state(out_dir)  # also recovers a torn checkpoint swap
    card = read_card_if_any(MemberCard, out_dir)
    if card is None or state is None:
        return None
    at = (state["step"], state["fingerprint"])
    if (card.fingerprint, card.steps) != (fp, steps) or at != (steps, fp):
        return None
    return card


def resumable_step(out_dir: Path, fp: str, steps: int) -> int | None:
    """The last checkpoint's step when it is this member's (`fp`) and not past `steps`: where
    training resumes, and what the flow's scheduler counts as done."""
    state = checkpoint_state(out_dir)
    if state and state["fingerprint"] == fp and state["step"] <= steps:
        return int(state["step"])
    return None


def resume_or_reset(
    out_dir: Path,
    fp: str,
    steps: int,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    device: torch.device,
    loss: nn.Module | None = None,
) -> int:
    """Load the last checkpoint when it is this member's and not past `steps`; otherwise
    clear the member's files. Returns the step to start from."""
    start = resumable_step(out_dir, fp, steps)
    if start is not None:
        load_checkpoint(out_dir, modules, optimizers, device, loss)
        trim_log(out_dir / LOSSES_CSV, start)
        # Continuing (steps raised, or interrupted): the checkpoint is about to move on, so a
        # card would no longer describe what is on disk.
        (out_dir / CARD).unlink(missing_ok=True)
        if start < steps:
            log.info("member %s: resuming from step %d of %d", out_dir.name, start, steps)
        return start
    state = checkpoint_state(out_dir)
    if state:
        why = "params, data or code changed" if state["fingerprint"] != fp else "steps lowered"
        log.warning("member %s: %s since its checkpoint; training from scratch", out_dir.name, why)
    shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)
    shutil.rmtree(out_dir / GRIDS, ignore_errors=True)
    (out_dir / CARD).unlink(missing_ok=True)
    (out_dir / LOSSES_CSV).unlink(missing_ok=True)
    return 0


def fixed_latents(seed: int, n: int, z_dim: int) -> torch.Tensor:
    """The same latents at every checkpoint (own generator: the steps' draws are untouched)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def train_member(
    name: str,
    member: MemberConfig,
    train: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    sampler: RealSampler | None = None,  # default: uniform over the member's bootstrap
    loss: GANLoss | None = None,  # default: train.loss from the registry
    callback: Callable[[int], None] | None = None,
    progress: bool | None = None,
) -> MemberCard:
    """Train (or resume, or find already finished) member `name`; returns its card."""
    out_dir = Path(out_dir)
    data_card = read_data_card(data_dir)
    seams = {k: v.identity for k, v in (("sampler", sampler), ("loss", loss)) if v is not None}
    fp = fingerprint(data_card.sha256, member, train, seams)  # a seam is part of the member
    finished = member_is_finished(out_dir, fp, train.steps)
    if finished is not None:
        return finished  # nothing to do: no networks built, no data loaded

    # Load dataset.
    device = configure(resolve_device(train.device), train.cudnn_benchmark)
    loss = loss or make_loss(train.loss, member.gman, member.gman_lambda)
    real = to_unit(torch.from_numpy(load_prepared(data_dir).train_images)).to(device)
    _, c, size, _ = real.shape
    if sampler is None:
        sampler = UniformSampler(bootstrap_indices(len(real), member.seed, member.bootstrap))
    nets = member_nets(member, train, size=size, channels=c, loss=loss, device=device)
    g, g_ema = nets.generator, nets.generator_ema
    modules, optimizers = (g, g_ema, nets.discriminator), (nets.opt_g, nets.opt_d)

    out_dir.mkdir(parents=True, exist_ok=True)  # resume a checkpoint of this very member
    loss_module = loss if isinstance(loss, nn.Module) else None
    start = resume_or_reset(out_dir, fp, train.steps, modules, optimizers, device, loss_module)
    z_grid = fixed_latents(member.seed, GRID_IMAGES, train.z_dim).to(device)

    def on_checkpoint(step: int) -> None:
        losses.flush()
        save_checkpoint(out_dir, step, fp, modules, optimizers, loss_module)
        with torch.no_grad():
            images = to_uint8(g_ema(z_grid)).cpu().numpy()
        save_grid(images, out_dir / GRIDS / f"step-{step:07d}.png", nrow=8)

    t0 = time.perf_counter()  # the main training loop
    with LossLog(out_dir / LOSSES_CSV) as losses, stopping.checked():
        try:
            training_loop(
                name=name, generator=g, generator_ema=g_ema, discriminators=nets.discriminators,
                opt_g=nets.opt_g, opt_d=nets.opt_d, loss=loss, sampler=sampler, real_images=real,
                seed=member.seed, start_step=start, total_steps=train.steps,
                batch_size=train.batch_size, z_dim=train.z_dim,
                ema_halflife_images=train.ema_halflife_images, max_loss=train.max_loss,
                log_every=train.log_every, checkpoint_every=train.checkpoint_every,
                log_row=losses.append, on_checkpoint=on_checkpoint,
                callback=stop_when_asked(name, train, on_checkpoint, callback),
                progress=progress, channels_last=train.channels_last,
                augment=member.diffaugment, precision=train.precision,
            )  # fmt: skip
        except DivergedError as exc:
            raise DivergedError(f"{exc} in {out_dir}") from None

    card = member_card(name, member, train, data_card, fp, sampler, loss, modules, device, size, c)
    card = card.model_copy(update={"seconds_this_run": round(time.perf_counter() - t0, 2)})
    write_card(out_dir, card)
    return card


def stop_when_asked(
    name: str,
    train: TrainConfig,
    on_checkpoint: Callable[[int], None],
    callback: Callable[[int], None] | None,
) -> Callable[[int], None]:
    """The loop's after-step callback: `callback`, then, when the run is asked to stop
    (ensgan/stopping.py), a checkpoint at the step reached and StopRequested, so the next run
    resumes without losing a step (the rows of the loss log so far are flushed)."""

    def after(done: int) -> None:
        if callback is not None:
            callback(done)
        if stopping.requested() and done < train.steps:
            if done % train.checkpoint_every:  # else the loop has just saved this step
                on_checkpoint(done)
            raise stopping.stopped(f"member {name} stopped at step {done} of {train.steps}")

    return after


def member_card(
    name: str,
    member: MemberConfig,
    train: TrainConfig,
    data: DataCard,
    fp: str,
    sampler: RealSampler,
    loss: GANLoss,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    device: torch.device,
    size: int,
    channels: int,
) -> MemberCard:
    """What a finished member is: written last, read by every later stage."""
    _, g_ema, d = modules
    return MemberCard(
        name=name,
        **member.model_dump(),
        steps=train.steps,
        z_dim=train.z_dim,
        image_size=size,
        channels=channels,
        batch_size=train.batch_size,
        loss=loss.identity,
        data_sha256=data.sha256,
        fingerprint=fp,
        n_train=data.n_train,
        n_unique_images=sampler.n_unique,
        device=str(device),
        seconds_this_run=0.0,
        weights_sha256=weights_sha256(g_ema, d),
        gman_lambda_final=_learned_lambda(loss),
        **getattr(sampler, "card_fields", {}),  # e.g. a clustered member's cluster
    )


def _learned_lambda(loss: GANLoss) -> float | None:
    agg = getattr(loss, "aggregate", None)
    return agg.current_lambda() if agg is not None and agg.kind == "learned" else None
