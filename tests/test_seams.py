"""The training loop's seams: losses over a list of discriminators, real-image samplers with
optional weights, and train_member taking either; fixed-latent grids at every checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ensgan.config import DataConfig, parse_params
from ensgan.data.prepared import load_prepared, prepare
from ensgan.gan import member as member_module
from ensgan.gan.checkpoint import checkpoint_state
from ensgan.gan.losses import NonSaturating, make_loss
from ensgan.gan.member import GRIDS, member_is_finished, train_member
from ensgan.gan.samplers import UniformSampler, WeightedSampler, bootstrap_indices
from ensgan.io.cards import MemberCard

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Losses.


def test_non_saturating_with_one_discriminator_is_the_textbook_loss() -> None:
    real, fake = torch.randn(16), torch.randn(16)
    loss = NonSaturating()
    expected_d = F.softplus(-real).mean() + F.softplus(fake).mean()  # -log D(x) - log(1-D(G(z)))
    torch.testing.assert_close(loss.d_loss([real], [fake]), expected_d)
    torch.testing.assert_close(loss.g_loss([fake]), -F.logsigmoid(fake).mean())  # -log D(G(z))


def test_several_discriminators_are_averaged_and_all_get_gradients() -> None:
    loss = NonSaturating()
    a, b = torch.randn(8, requires_grad=True), torch.randn(8, requires_grad=True)
    r1, r2 = torch.randn(8), torch.randn(8)
    d = loss.d_loss([r1, r2], [a, b])
    torch.testing.assert_close(d, (loss.d_loss([r1], [a]) + loss.d_loss([r2], [b])) / 2)
    g = loss.g_loss([a, b])
    g.backward()
    assert a.grad is not None and b.grad is not None
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        loss.d_loss([r1, r2], [a])  # one fake logit set per discriminator


def test_make_loss_uses_the_registry() -> None:
    assert isinstance(make_loss("non_saturating"), NonSaturating)
    with pytest.raises(ValueError, match="choose from"):
        make_loss("hinge-ish")


# Samplers.


def test_uniform_sampler_draws_only_from_its_pool_and_replays_by_seed() -> None:
    pool = bootstrap_indices(100, seed=3, bootstrap=True)
    s = UniformSampler(pool)
    assert s.n_unique == len(np.unique(pool)) < 100
    draw = s.draw(torch.Generator().manual_seed(5), 500)
    assert draw.dtype == torch.int64 and set(draw.tolist()) <= set(pool.tolist())
    assert torch.equal(draw, s.draw(torch.Generator().manual_seed(5), 500))
    assert UniformSampler(np.arange(7)).n_unique == 7
    with pytest.raises(ValueError):
        UniformSampler(np.array([], dtype=np.int64))


def test_weighted_sampler_follows_its_weights() -> None:
    w = np.array([0.0, 1.0, 3.0, 0.0])
    s = WeightedSampler(w)
    assert s.n_unique == 2
    draw = s.draw(torch.Generator().manual_seed(0), 20_000).numpy()
    counts = np.bincount(draw, minlength=4)
    assert counts[0] == counts[3] == 0  # zero weight: never drawn
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.08)
    for bad in ([], [1.0, -1.0], [0.0, 0.0], [np.nan, 1.0], [[1.0]]):
        with pytest.raises(ValueError):
            WeightedSampler(np.array(bad))


# train_member takes what it trains with.


TRAIN = {"steps": 6, "batch_size": 8, "z_dim": 8, "checkpoint_every": 3, "log_every": 3}
TRAIN |= {"device": "cpu"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seams") / "prepared"
    prepare(DataConfig(image_size=8), out)
    return out


def _params(**train):
    return parse_params(
        {"data": {"image_size": 8}, "members": {"m": {"arch": "mlp", "width": 4, "seed": 2}},
         "train": {**TRAIN, **train}}
    )  # fmt: skip


class RecordingLoss(NonSaturating):
    """The default loss, counting how often each term is asked for."""

    identity = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"d": 0, "g": 0}

    def d_loss(self, real, fake):
        self.calls["d"] += 1
        assert len(real) == len(fake) == 1
        return super().d_loss(real, fake)

    def g_loss(self, fake):
        self.calls["g"] += 1
        return super().g_loss(fake)


class RecordingSampler(WeightedSampler):
    def __init__(self, weights: np.ndarray) -> None:
        super().__init__(weights)
        self.drawn: list[int] = []

    def draw(self, gen, batch_size):
        out = super().draw(gen, batch_size)
        self.drawn += out.tolist()
        return out


def test_train_member_takes_a_loss_and_a_weighted_sampler(tmp_path: Path, data_dir: Path) -> None:
    p = _params()
    n = load_prepared(data_dir).card.n_train
    weights = np.zeros(n)
    weights[:5] = 1.0  # boosting-style: only five images matter
    sampler, loss = RecordingSampler(weights), RecordingLoss()
    card = train_member(
        "m", p.members["m"], p.train, data_dir, tmp_path / "m", sampler=sampler, loss=loss
    )
    assert loss.calls == {"d": 6, "g": 6}
    assert set(sampler.drawn) <= set(range(5)) and len(sampler.drawn) == 6 * 8
    assert card.n_unique_images == 5 and card.loss == "recording"

    # Other weights make another member: it is trained afresh, not found finished.
    weights[:5], weights[5:10] = 0.0, 1.0
    other = RecordingSampler(weights)
    seen: list[int] = []
    again = train_member(
        "m", p.members["m"], p.train, data_dir, tmp_path / "m",
        sampler=other, loss=RecordingLoss(), callback=seen.append,
    )  # fmt: skip
    assert seen[0] == 1 and again.fingerprint != card.fingerprint
    assert set(other.drawn) <= set(range(5, 10))


def test_a_grid_per_checkpoint_from_fixed_latents(tmp_path: Path, data_dir: Path) -> None:
    p = _params()
    out = tmp_path / "m"
    seen: list[int] = []

    def stop_at_4(step: int) -> None:
        seen.append(step)
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_member("m", p.members["m"], p.train, data_dir, out, callback=stop_at_4)
    assert sorted(f.name for f in (out / GRIDS).iterdir()) == ["step-0000003.png"]
    train_member("m", p.members["m"], p.train, data_dir, out)  # resumes from step 3
    assert sorted(f.name for f in (out / GRIDS).iterdir()) == [
        "step-0000003.png",
        "step-0000006.png",
    ]
    ref = tmp_path / "ref"
    train_member("m", p.members["m"], p.train, data_dir, ref)
    for name in ("step-0000003.png", "step-0000006.png"):
        a, b = (np.asarray(Image.open(d / GRIDS / name)) for d in (out, ref))
        assert a.shape == ((8 * 9 + 1) * 4,) * 2  # 8x8 tiles of 8x8 pixels, 1 px apart, x4
        np.testing.assert_array_equal(a, b)  # same latents, same weights: same picture
    first, last = (
        np.asarray(Image.open(ref / GRIDS / n)) for n in ("step-0000003.png", "step-0000006.png")
    )
    assert not np.array_equal(first, last)  # the generator moved between checkpoints


# One check for "finished", and an early return that builds nothing.


def test_finished_member_returns_before_building_anything(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _params()
    out = tmp_path / "m"
    card = train_member("m", p.members["m"], p.train, data_dir, out)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished member built networks or loaded data")

    monkeypatch.setattr(member_module, "member_nets", forbidden)
    monkeypatch.setattr(member_module, "load_prepared", forbidden)
    assert train_member("m", p.members["m"], p.train, data_dir, out) == card


def test_member_is_finished_checks_card_and_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    p = _params()
    out = tmp_path / "m"
    card = train_member("m", p.members["m"], p.train, data_dir, out)
    fp, steps = card.fingerprint, card.steps
    assert member_is_finished(out, fp, steps) == card
    assert member_is_finished(out, fp, steps + 1) is None  # asked for more steps
    assert member_is_finished(out, "other", steps) is None  # other params or code
    assert member_is_finished(tmp_path / "nothing", fp, steps) is None
    # A checkpoint that moved on past the card (a continuation was interrupted).
    state = out / "checkpoint" / "state.json"
    state.write_text(state.read_text().replace(f'"step": {steps}', f'"step": {steps + 3}'))
    assert checkpoint_state(out)["step"] == steps + 3
    assert member_is_finished(out, fp, steps) is None
    assert isinstance(card, MemberCard)
