"""Train one ensemble member: a linear loop you can read top to bottom (after NVlabs/edm).

A member is a (generator, EMA generator, discriminator) triple trained with the non-saturating
GAN loss and Adam on its own bootstrap resample of the training split (bagging). Every
`checkpoint_every` steps the whole state is written to `checkpoint/` (safetensors weights,
optimizer state loaded back with `weights_only=True`), swapped in atomically, so an
interrupted member resumes from its last checkpoint and its loss log loses and repeats no row.
Batches and latents for step t come from a generator seeded by (member seed, t), so a resumed
run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm

from ensgan import models
from ensgan.config import ConfigError, MemberConfig, Params, TrainConfig
from ensgan.data import load_prepared
from ensgan.files import write_json
from ensgan.models import build_pair, to_uint8, to_unit

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "kimg", "d_loss", "g_loss", "d_real", "d_fake", "seconds"]
WEIGHT_FILES = ("generator", "generator_ema", "discriminator")


class DivergedError(RuntimeError):
    """A member's loss became non-finite or passed `train.max_loss`."""


def resolve_device(pref: str) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def _code_version() -> str:
    """The training code itself: editing the models or the loop makes members retrain, as the
    stage's code deps in dvc.yaml tell DVC to."""
    h = hashlib.sha256()
    for path in (Path(__file__), Path(models.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


CODE_VERSION = _code_version()


def fingerprint(data_sha: str, member: MemberConfig, train: TrainConfig) -> str:
    """What makes two runs the same member. Steps are left out on purpose: raising
    `train.steps` continues a finished member instead of starting it again."""
    t = train.model_dump(
        exclude={"steps", "device", "workers", "checkpoint_every", "log_every", "max_loss"}
    )
    blob = json.dumps(
        {"data": data_sha, "member": member.model_dump(), "train": t, "code": CODE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def weights_sha256(*modules: nn.Module) -> str:
    """A hash of the tensors themselves (safetensors files order their metadata at random, so
    two identical saves need not be identical files)."""
    h = hashlib.sha256()
    for m in modules:
        for key, t in sorted(m.state_dict().items()):
            h.update(key.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def bootstrap_indices(n: int, member: MemberConfig) -> np.ndarray:
    if not member.bootstrap:
        return np.arange(n)
    return np.random.default_rng(member.seed).integers(0, n, size=n)


# Checkpoints.


def _save_checkpoint(out_dir: Path, step: int, fp: str, g, g_ema, d, opt_g, opt_d) -> None:
    new, cur, old = out_dir / "checkpoint.new", out_dir / "checkpoint", out_dir / "checkpoint.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    meta = {"step": str(step), "fingerprint": fp}
    for name, module in zip(WEIGHT_FILES, (g, g_ema, d), strict=True):
        save_model(module, str(new / f"{name}.safetensors"), metadata=meta)
    torch.save({"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}, new / "optim.pt")
    (new / "state.json").write_text(json.dumps({"step": step, "fingerprint": fp}) + "\n")
    shutil.rmtree(old, ignore_errors=True)
    if cur.exists():
        os.replace(cur, old)
    os.replace(new, cur)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_state(out_dir: Path) -> dict | None:
    """The last complete checkpoint's {step, fingerprint}, recovering from a torn swap."""
    cur, old = out_dir / "checkpoint", out_dir / "checkpoint.old"
    if not cur.exists() and old.exists():
        os.replace(old, cur)
    state = cur / "state.json"
    return json.loads(state.read_text()) if state.exists() else None


# The loss log: append-only CSV, flushed every row, cut back to the checkpoint on resume.


def _trim_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_log(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def train_member(
    params: Params,
    name: str,
    data_dir: Path,
    out_dir: Path,
    *,
    callback: Callable[[int], None] | None = None,
    progress: bool | None = None,
) -> dict:
    """Train (or resume, or find already finished) member `name`; returns its card."""
    member, tc = params.members[name], params.train
    device = resolve_device(tc.device)

    # Load dataset: this member's bootstrap resample of the training split.
    data = load_prepared(data_dir)
    train_u8 = torch.from_numpy(data.train_images)
    real_all = to_unit(train_u8).to(device)
    idx = torch.from_numpy(bootstrap_indices(len(real_all), member))
    _, c, size, _ = real_all.shape
    fp = fingerprint(data.card["sha256"], member, tc)

    # Construct networks and optimizers.
    torch.manual_seed(member.seed)
    g, d = build_pair(member.arch, z_dim=tc.z_dim, size=size, channels=c, width=member.width)
    g, d = g.to(device), d.to(device)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=tc.lr_g, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=tc.lr_d, betas=(tc.beta1, tc.beta2))
    ema_beta = 0.5 ** (tc.batch_size / tc.ema_halflife_images)

    # Resume from the last checkpoint when it belongs to this member and these params.
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "losses.csv"
    start = 0
    state = checkpoint_state(out_dir)
    if state and state["fingerprint"] == fp and state["step"] <= tc.steps:
        ck = out_dir / "checkpoint"
        for fname, module in zip(WEIGHT_FILES, (g, g_ema, d), strict=True):
            load_model(module, str(ck / f"{fname}.safetensors"), device=str(device))
        opt = torch.load(ck / "optim.pt", map_location=device, weights_only=True)
        opt_g.load_state_dict(opt["opt_g"])
        opt_d.load_state_dict(opt["opt_d"])
        start = state["step"]
        _trim_log(log_path, start)
        if start < tc.steps:
            log.info("member %s: resuming from step %d of %d", name, start, tc.steps)
            # A finished member being continued (steps raised): its checkpoint is about to be
            # overwritten, so its card no longer describes what is on disk.
            (out_dir / "card.json").unlink(missing_ok=True)
    else:
        if state:
            why = "params or data changed" if state["fingerprint"] != fp else "steps lowered"
            log.warning("member %s: %s since its checkpoint; training from scratch", name, why)
            shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
        (out_dir / "card.json").unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)

    if not log_path.exists():
        with log_path.open("w", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writeheader()

    # Main training loop.
    t0 = time.perf_counter()
    acc = np.zeros(4)
    n_acc = 0
    g.train()
    d.train()
    disable = None if progress is None else not progress  # None: only on a terminal
    bar = tqdm(total=tc.steps, initial=start, desc=name, unit="step", disable=disable)
    with log_path.open("a", newline="") as log_file:
        writer = csv.DictWriter(log_file, LOG_FIELDS)
        for step in range(start, tc.steps):
            gen = step_generator(member.seed, step)
            real = real_all[idx[torch.randint(len(idx), (tc.batch_size,), generator=gen)]]
            z = torch.randn(tc.batch_size, tc.z_dim, generator=gen).to(device)

            # D step: real -> 1, fake -> 0.
            fake = g(z)
            d_real, d_fake = d(real), d(fake.detach())
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            # G step: non-saturating loss, -log D(G(z)).
            g_loss = F.softplus(-d(fake)).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

            # Update EMA.
            _ema_update(g_ema, g, ema_beta)

            dl, gl = d_loss.item(), g_loss.item()
            if not (np.isfinite(dl) and np.isfinite(gl)) or max(dl, gl) > tc.max_loss:
                raise DivergedError(
                    f"member {name} diverged at step {step + 1} (d_loss={dl:.3g}, "
                    f"g_loss={gl:.3g}); its last checkpoint is kept in {out_dir}"
                )
            acc += (
                dl,
                gl,
                torch.sigmoid(d_real).mean().item(),
                torch.sigmoid(d_fake).mean().item(),
            )
            n_acc += 1
            done = step + 1

            # Append stats.
            if done % tc.log_every == 0 or done == tc.steps:
                m = acc / n_acc
                writer.writerow(
                    {
                        "step": done,
                        "kimg": round(done * tc.batch_size / 1000, 3),
                        "d_loss": round(m[0], 5),
                        "g_loss": round(m[1], 5),
                        "d_real": round(m[2], 5),
                        "d_fake": round(m[3], 5),
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                log_file.flush()
                acc[:] = 0
                n_acc = 0
                bar.set_postfix(d=f"{m[0]:.3f}", g=f"{m[1]:.3f}")

            # Save network snapshot.
            if done % tc.checkpoint_every == 0 or done == tc.steps:
                log_file.flush()
                _save_checkpoint(out_dir, done, fp, g, g_ema, d, opt_g, opt_d)
            bar.update(1)
            if callback is not None:
                callback(done)
    bar.close()

    card = {
        "name": name,
        **member.model_dump(),
        "steps": tc.steps,
        "z_dim": tc.z_dim,
        "image_size": size,
        "channels": c,
        "batch_size": tc.batch_size,
        "data_sha256": data.card["sha256"],
        "fingerprint": fp,
        "n_train": len(real_all),
        "n_unique_images": int(torch.unique(idx).numel()),
        "device": str(device),
        "seconds_this_run": round(time.perf_counter() - t0, 2),
        "weights_sha256": weights_sha256(g_ema, d),
    }
    prior = out_dir / "card.json"
    if start == tc.steps and prior.exists():
        return json.loads(prior.read_text())  # already finished: nothing retrained
    write_json(out_dir / "card.json", card)
    return card


@torch.no_grad()
def _ema_update(g_ema: nn.Module, g: nn.Module, beta: float) -> None:
    for p_ema, p in zip(g_ema.parameters(), g.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(g_ema.buffers(), g.buffers(), strict=True):
        b_ema.copy_(b)


@dataclass
class LoadedMember:
    """A finished member, ready to sample and score (EMA generator, discriminator)."""

    name: str
    card: dict
    generator: nn.Module
    discriminator: nn.Module
    device: torch.device

    @property
    def z_dim(self) -> int:
        return int(self.card["z_dim"])

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Float images in [-1, 1] for latents z (N, z_dim), on the CPU."""
        out = [self.generator(zb.to(self.device)).cpu() for zb in z.split(batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def score(self, images_u8: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """The discriminator's logit for each uint8 image: higher means more real."""
        out = [
            self.discriminator(to_unit(b).to(self.device)).cpu()
            for b in images_u8.split(batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64) if out else np.empty(0)

    def generate_u8(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.generate(z))


def load_member(member_dir: Path, device: str | torch.device = "cpu") -> LoadedMember:
    card_path = member_dir / "card.json"
    if not card_path.exists():
        raise FileNotFoundError(f"{member_dir} holds no finished member (no card.json): train it")
    card = json.loads(card_path.read_text())
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    g, d = build_pair(
        card["arch"],
        z_dim=card["z_dim"],
        size=card["image_size"],
        channels=card["channels"],
        width=card["width"],
    )
    ck = member_dir / "checkpoint"
    load_model(g, str(ck / "generator_ema.safetensors"), device=str(dev))
    load_model(d, str(ck / "discriminator.safetensors"), device=str(dev))
    return LoadedMember(card["name"], card, g.to(dev).eval(), d.to(dev).eval(), dev)
