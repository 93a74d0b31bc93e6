"""The evaluation feature space: a small CNN classifier trained on the project's real data.

No Inception weights can be downloaded here, and Inception features mean little on 16x16
digits anyway, so the Fréchet distance is computed on the penultimate layer of `FeatureNet`.
Datasets without labels get k-means clusters as pseudo-labels (`pseudo_labels`): the net then
learns to tell clusters apart, and "classes covered" counts clusters covered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.cluster import KMeans
from torch import nn

from ensgan.io.files import atomic_write

FORMAT = "ensgan.featurenet/2"  # /2: the config in one metadata key; /1 files still load
_FORMAT_1 = "ensgan.featurenet/1"
_META_KEYS = ("channels", "image_size", "n_classes", "feature_dim")


def _check_images(images: np.ndarray, channels: int | None = None) -> None:
    """Fail early with a readable message instead of a shape error deep inside a conv."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError("images must be a uint8 numpy array shaped (N, C, H, W)")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"images have {images.shape[1]} channels, the net expects {channels}")


def to_input(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 tensor in [-1, 1], the scale every model here uses."""
    _check_images(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    return x / 127.5 - 1.0


class FeatureNet(nn.Module):
    """Small CNN classifier whose penultimate layer is the embedding for the Fréchet distance.

    Stride-2 convolutions halve the image down to 4x4 whatever its size (8..64), so one class
    serves every configured resolution; the feature layer is `feature_dim` ReLU units.
    """

    def __init__(
        self, channels: int = 1, image_size: int = 16, n_classes: int = 10, feature_dim: int = 64
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.config = {
            "channels": channels,
            "image_size": image_size,
            "n_classes": n_classes,
            "feature_dim": feature_dim,
        }
        layers: list[nn.Module] = [nn.Conv2d(channels, 32, 3, padding=1), nn.LeakyReLU(0.2)]
        width, size = 32, image_size
        while size > 4:
            out = min(width * 2, 128)
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width, size = out, size // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(width * 16, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, (N, feature_dim)."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, (N, n_classes)."""
        return self.head(self.features(x))


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def train_feature_net(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    steps: int,
    seed: int,
    batch_size: int = 128,
    device: str = "cpu",
) -> FeatureNet:
    """Fit a FeatureNet with Adam; the same inputs and seed give the same weights."""
    _check_images(images)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
    torch.manual_seed(seed)
    net = FeatureNet(images.shape[1], images.shape[2], n_classes).to(device)
    x, y = to_input(images, device), torch.from_numpy(labels).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen).to(device)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def pseudo_labels(images: np.ndarray, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    """k-means cluster ids on raw pixels, standing in for classes when the data has no labels.

    Crude but deterministic: clusters of pixel space roughly track visual modes, which is what
    coverage is meant to detect (a GAN that collapses onto a few clusters).
    """
    _check_images(images)
    if len(images) < n_classes:
        raise ValueError(f"need at least {n_classes} images to form {n_classes} clusters")
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    km = KMeans(n_clusters=n_classes, n_init=4, random_state=seed)
    return km.fit_predict(flat).astype(np.int64)


def training_key(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    steps: int,
    seed: int,
    device: str = "cpu",
) -> str:
    """What `train_feature_net` makes a net from, as a sha256: the same key, the same net.
    A device other than the CPU is part of it (its kernels give other weights); the CPU's
    keys stay what they were before nets trained anywhere else."""
    h = hashlib.sha256(FORMAT.encode())
    for part in (images, np.asarray(labels, np.int64)):
        h.update(repr((part.dtype.str, part.shape)).encode())
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(json.dumps([n_classes, steps, seed]).encode())
    if device != "cpu":
        h.update(device.encode())
    return h.hexdigest()


def save_feature_net(net: FeatureNet, path: str | Path, trained_on: str = "") -> Path:
    """Write weights plus constructor args (safetensors metadata) atomically, with the
    `training_key` it was trained on, when given.

    The args go in a single metadata key: safetensors writes its metadata map in random order,
    so with several keys the same net gave different bytes each time, and DVC saw a changed
    output after every evaluate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    config = {"format": FORMAT, **{k: int(v) for k, v in net.config.items()}}
    if trained_on:
        config["trained_on"] = trained_on
    meta = {"ensgan": json.dumps(config, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def earlier_feature_net(path: Path, trained_on: str, device: str = "cpu") -> FeatureNet | None:
    """The net saved at `path` when it was trained on exactly `trained_on` (a
    `training_key`), else None: evaluate then trains it again. Only safetensors is read."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get("ensgan", "{}"))
        if not isinstance(meta, dict) or meta.get("trained_on") != trained_on:
            return None
        return load_feature_net(path, device)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError):  # not one
        return None


def load_feature_net(path: str | Path, device: str = "cpu") -> FeatureNet:
    """Rebuild a FeatureNet from its safetensors file alone (no pickle involved)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if "ensgan" in meta:
            meta = json.loads(meta["ensgan"])
        if meta.get("format") not in (FORMAT, _FORMAT_1):
            raise ValueError(f"{path} is not a feature net ({FORMAT}) file")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    net = FeatureNet(**{k: int(meta[k]) for k in _META_KEYS})
    net.load_state_dict(tensors, strict=True)
    return net.to(device).eval()


@torch.no_grad()
def features_and_classes(
    net: FeatureNet, images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pass giving features (float64) and predicted classes, batched to bound memory."""
    _check_images(images, net.config["channels"])
    was_training = net.training
    net.eval()
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = net.features(to_input(images[i : i + batch_size], _device(net)))
        feats.append(f.double().cpu().numpy())
        preds.append(net.head(f).argmax(1).cpu().numpy())
    net.train(was_training)
    dim, empty = net.config["feature_dim"], np.empty(0, dtype=np.int64)
    if not feats:
        return np.empty((0, dim)), empty
    return np.concatenate(feats), np.concatenate(preds).astype(np.int64)


def embed(net: FeatureNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Penultimate features of `images`, (N, feature_dim) float64."""
    return features_and_classes(net, images, batch_size)[0]


def predict_classes(net: FeatureNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Arg-max class of each image, (N,) int64."""
    return features_and_classes(net, images, batch_size)[1]
