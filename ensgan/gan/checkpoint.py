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
from safetensors.torch import load_model, save_file
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
        for name, module in zip(WEIGHT_FILES, modules, strict=True):
            save_file(_tensors(module), str(new / f"{name}.safetensors"), metadata=meta)
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


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in standard layout (safetensors stores no strides: channels-last
    weights are written as the same values in NCHW order and loaded back into any layout)."""
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}


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
        load_model(module, str(ck / f"{name}.safetensors"), device=str(device))
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
    load_model(generator, str(ck / "generator_ema.safetensors"), device=str(device))
    load_model(discriminator, str(ck / "discriminator.safetensors"), device=str(device))
