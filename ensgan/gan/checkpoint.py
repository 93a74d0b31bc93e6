"""A member's resumable state: `checkpoint/` holds the generator, its EMA copy and the
discriminator as safetensors, the optimizers' state (`optim.pt`, a pickle: loaded back with
`weights_only=True`, and only once its sha256 matches) and `state.json` ({step, fingerprint,
optim_sha256}). The whole directory is swapped in at once."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ensgan.errors import CardError
from ensgan.io.files import atomic_dir, file_sha256, recover_dir

WEIGHT_FILES = ("generator", "generator_ema", "discriminator")
CHECKPOINT = "checkpoint"
OPTIM = "optim.pt"
log = logging.getLogger(__name__)


def save_checkpoint(
    out_dir: Path,
    step: int,
    fingerprint: str,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    loss: nn.Module | None = None,
) -> None:
    """Write (g, g_ema, d), (opt_g, opt_d) and a loss's own parameters (GMAN*'s θ) at `step`,
    replacing the last checkpoint."""
    meta = {"step": str(step), "fingerprint": fingerprint}
    opt_g, opt_d = optimizers
    with atomic_dir(Path(out_dir) / CHECKPOINT) as new:
        _save_weights(new, modules, meta)
        state = {"opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}
        if loss is not None:
            state["loss"] = loss.state_dict()
        torch.save(state, new / OPTIM)
        record = {
            "step": step,
            "fingerprint": fingerprint,
            "optim_sha256": file_sha256(new / OPTIM),
        }
        (new / "state.json").write_text(json.dumps(record))


def save_weights_only(
    out_dir: Path, step: int, fingerprint: str, modules: tuple[nn.Module, nn.Module, nn.Module]
) -> None:
    """A checkpoint of (g, g_ema, d) without optimiser state: what sampling reads, for a member
    whose training state lives elsewhere (an MGAN head: ensgan/gan/shared.py). It cannot be
    resumed from, and its fingerprint is never a plainly trained member's."""
    meta = {"step": str(step), "fingerprint": fingerprint}
    with atomic_dir(Path(out_dir) / CHECKPOINT) as new:
        _save_weights(new, modules, meta)
        (new / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint}))


def _save_weights(new: Path, modules: tuple[nn.Module, ...], meta: dict[str, str]) -> None:
    """Each module as safetensors in standard layout (safetensors stores no strides:
    channels-last weights are written as the same values in NCHW order and loaded back into
    any layout); a tensor two names share (MGAN's tied trunk) is written once, under its first
    name (`load_weights_into` fills both)."""
    for name, module in zip(WEIGHT_FILES, modules, strict=True):
        save_file(_tensors(module), str(new / f"{name}.safetensors"), metadata=meta)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in standard layout, each tensor once: a name whose tensor an earlier
    name already holds (an alias) is left out."""
    aliases = _aliases(module)
    return {k: t.detach().contiguous() for k, t in module.state_dict().items() if k not in aliases}


def _aliases(module: nn.Module) -> set[str]:
    """State-dict names whose tensor is an earlier name's (the same storage, offset, shape)."""
    seen, aliases = set(), set()
    for key, t in module.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.nelement() and ident in seen:
            aliases.add(key)
        seen.add(ident)
    return aliases


def load_weights_into(module: nn.Module, path: Path, device: torch.device | str) -> None:
    """A safetensors file written by this module into `module`: every name but its aliases
    must be there, and nothing else (safetensors' load_model, which cannot take aliased
    channels-last tensors)."""
    missing, unexpected = module.load_state_dict(load_file(str(path), device=str(device)),
                                                 strict=False)  # fmt: skip
    missing = sorted(set(missing) - _aliases(module))
    if missing or unexpected:
        raise RuntimeError(
            f"{path} does not hold {type(module).__name__}'s weights: missing {missing[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def _checked_optim(ck: Path) -> Path:
    """optim.pt when it is the file its checkpoint's state.json records; a pickle, however
    restricted its reader, is only opened once its bytes are known."""
    path = ck / OPTIM
    expected = json.loads((ck / "state.json").read_text()).get("optim_sha256")
    if expected is None:  # written before the hash was recorded
        log.warning("%s has no sha256 in state.json (an older checkpoint): read unchecked", path)
    elif file_sha256(path) != expected:
        raise CardError(
            f"{path} is not the file its checkpoint recorded (sha256 differs from state.json): "
            f"delete {ck} to train the member from scratch, or restore it as it was saved"
        )
    return path


def checkpoint_state(out_dir: Path) -> dict | None:
    """The last complete checkpoint's {step, fingerprint}, recovering from a torn swap."""
    ck = Path(out_dir) / CHECKPOINT
    recover_dir(ck)
    state = ck / "state.json"
    return json.loads(state.read_text()) if state.exists() else None


def load_checkpoint(
    out_dir: Path,
    modules: tuple[nn.Module, nn.Module, nn.Module],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    device: torch.device,
    loss: nn.Module | None = None,
) -> None:
    """Load the last checkpoint into freshly built modules, optimizers and loss."""
    ck = Path(out_dir) / CHECKPOINT
    for name, module in zip(WEIGHT_FILES, modules, strict=True):
        load_weights_into(module, ck / f"{name}.safetensors", device)
    opt = torch.load(_checked_optim(ck), map_location=device, weights_only=True)
    optimizers[0].load_state_dict(opt["opt_g"])
    optimizers[1].load_state_dict(opt["opt_d"])
    if loss is not None:
        loss.load_state_dict(opt.get("loss", {}))


def weights_sha256(*modules: nn.Module) -> str:
    """A hash of the tensors themselves (safetensors files order their metadata at random, so
    two identical saves need not be identical files)."""
    h = hashlib.sha256()
    for m in modules:
        for key, t in sorted(m.state_dict().items()):
            h.update(key.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_weights(out_dir: Path, generator: nn.Module, discriminator: nn.Module, device) -> None:
    """What sampling needs: the EMA generator and the discriminator."""
    ck = Path(out_dir) / CHECKPOINT
    load_weights_into(generator, ck / "generator_ema.safetensors", device)
    load_weights_into(discriminator, ck / "discriminator.safetensors", device)
