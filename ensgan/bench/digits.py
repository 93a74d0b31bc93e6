"""Stacked digits: three of the package's built-in digits as the three channels of one image.

The analogue of PacGAN's stacked MNIST (official code stacked_MNIST_experiments/
VEEGAN_experiment/model.py `load_mnist`: each training image stacks three digits drawn
uniformly with replacement, 128,000 of them; `log_metrics` reads each channel of 26,000
samples with an MNIST classifier). Here the digits are scikit-learn's 8x8 `digits`, upscaled
to 16x16 as `data.source: digits` does (ensgan.data.sources), so there are 10^3 = 1,000 modes,
and the reader is an RBF support-vector classifier fitted on real digits, its accuracy measured
on digits it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

SIZE = 16
N_CLASSES = 10


@cache
def real_digits(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Every built-in digit, uint8 (1797, size, size), and its label."""
    from ensgan.data.shaping import to_array
    from ensgan.data.sources import read_digits

    raw, labels = read_digits()
    return to_array(raw, size, 1)[:, 0], labels


def stack_digits(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n stacked images, uint8 (n, 3, H, W), each channel a digit drawn uniformly with
    replacement, and their (n, 3) labels."""
    ids = rng.integers(len(images), size=(n, 3))
    return images[ids], labels[ids]


@dataclass
class DigitReader:
    """Reads the digit in each channel of stacked images."""

    model: object  # a fitted scikit-learn classifier over pixels / 255
    heldout_accuracy: float  # on real digits it was not fitted on
    n_heldout: int

    def predict(self, digits: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) single digits -> (N,) labels."""
        flat = np.asarray(digits, dtype=np.float32).reshape(len(digits), -1) / 255.0
        return self.model.predict(flat).astype(np.int64)

    def read(self, stacked: np.ndarray) -> np.ndarray:
        """uint8 (N, 3, H, W) -> (N, 3) digit labels, one per channel."""
        n, c, h, w = stacked.shape
        return self.predict(stacked.reshape(n * c, h, w)).reshape(n, c)


@cache
def digit_reader(size: int = SIZE, heldout: float = 0.25, seed: int = 0) -> DigitReader:
    """An RBF SVC (C=10) fitted on (1 - heldout) of the real digits, scored on the rest."""
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    images, labels = real_digits(size)
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        flat, labels, test_size=heldout, random_state=seed, stratify=labels
    )
    model = SVC(C=10.0).fit(x_tr, y_tr)
    acc = float((model.predict(x_te) == y_te).mean())
    return DigitReader(model, acc, len(y_te))
