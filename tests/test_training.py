"""Training members: every architecture, exact resume, finished/continued/restarted members,
divergence, bagging, and the loss and sampler train_member is given. Tiny nets on 8x8 digits,
a dozen steps each, on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ensgan.config import DataConfig, MemberConfig, Params, TrainConfig, parse_params
from ensgan.data.prepared import load_prepared, prepare
from ensgan.errors import CardError, DivergedError
from ensgan.gan import member as member_module
from ensgan.gan.checkpoint import WEIGHT_FILES, checkpoint_state
from ensgan.gan.loaded import load_member
from ensgan.gan.losses import NonSaturating
from ensgan.gan.losslog import LOG_FIELDS, read_log
from ensgan.gan.member import GRIDS, fingerprint, member_is_finished, train_member
from ensgan.gan.samplers import WeightedSampler
from ensgan.io.cards import MemberCard

ARCH_WIDTH = {"dcgan": 4, "upsample": 4, "mlp": 8, "resnet": 4}
STEPS = 12
TRAIN = {
    "steps": STEPS,
    "batch_size": 16,
    "z_dim": 8,
    "checkpoint_every": 4,
    "log_every": 2,
    "device": "cpu",
    "ema_halflife_images": 64,  # so the EMA generator visibly moves in a dozen steps
}


def make_params(*, train: dict | None = None, seed: int = 1, bootstrap: bool = True) -> Params:
    members = {
        arch: {"arch": arch, "seed": seed, "width": w, "bootstrap": bootstrap}
        for arch, w in ARCH_WIDTH.items()
    }
    return parse_params(
        {"data": {"image_size": 8}, "members": members, "train": {**TRAIN, **(train or {})}}
    )


def train(params: Params, name: str, data_dir: Path, out: Path, **kw) -> dict:
    """Train member `name` of `params`; its card as the JSON it is written as."""
    card = train_member(name, params.members[name], params.train, data_dir, out, **kw)
    return card.model_dump(mode="json")


def weights(member_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    ck = member_dir / "checkpoint"
    return {f: load_file(str(ck / f"{f}.safetensors")) for f in WEIGHT_FILES}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    for f in WEIGHT_FILES:
        assert wa[f].keys() == wb[f].keys(), f
        for k in wa[f]:
            ta, tb = wa[f][k], wb[f][k]
            assert ta.dtype == tb.dtype and ta.shape == tb.shape, (f, k)
            if ta.is_floating_point():
                assert torch.allclose(ta, tb, rtol=0, atol=0), (f, k, (ta - tb).abs().max())
            else:
                assert torch.equal(ta, tb), (f, k)


def logged_steps(member_dir: Path) -> list[int]:
    return [int(r["step"]) for r in read_log(member_dir / "losses.csv")]


def losses(member_dir: Path) -> list[dict]:
    """The log without its wall-clock column."""
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_log(member_dir / "losses.csv")
    ]


def stop_at(step: int, seen: list[int]) -> Callable[[int], None]:
    def callback(done: int) -> None:
        seen.append(done)
        if done == step:
            raise KeyboardInterrupt

    return callback


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensgan-data") / "prepared"
    prepare(DataConfig(image_size=8), out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """One uninterrupted 12-step member per architecture (read-only for the tests)."""
    root = tmp_path_factory.mktemp("ensgan-members")
    params = make_params()
    for arch in ARCH_WIDTH:
        train(params, arch, data_dir, root / arch, progress=False)
    return {arch: root / arch for arch in ARCH_WIDTH}


def copy_member(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# Every architecture trains, checkpoints and loads.


@pytest.mark.parametrize("arch", list(ARCH_WIDTH))
def test_member_outputs(arch: str, trained: dict[str, Path], data_dir: Path) -> None:
    out = trained[arch]
    ck = out / "checkpoint"
    for f in WEIGHT_FILES:
        assert (ck / f"{f}.safetensors").is_file()
    assert (ck / "optim.pt").is_file()
    assert json.loads((ck / "state.json").read_text())["step"] == STEPS
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json",
        "checkpoint",
        "grids",
        "losses.csv",
    ]
    assert checkpoint_state(out)["step"] == STEPS

    header = (out / "losses.csv").read_text().splitlines()[0]
    assert header.split(",") == LOG_FIELDS
    rows = read_log(out / "losses.csv")
    assert [int(r["step"]) for r in rows] == list(range(2, STEPS + 1, 2))
    for r in rows:
        assert all(np.isfinite(v) for v in r.values())
        assert 0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1
    assert rows[-1]["kimg"] == pytest.approx(STEPS * 16 / 1000)

    params = make_params()
    card = json.loads((out / "card.json").read_text())
    data = load_prepared(data_dir)
    assert card["name"] == arch and card["arch"] == arch and card["width"] == ARCH_WIDTH[arch]
    assert card["steps"] == STEPS and card["image_size"] == 8 and card["channels"] == 1
    assert card["z_dim"] == 8 and card["device"] == "cpu"
    assert card["data_sha256"] == data.card.sha256
    assert card["fingerprint"] == fingerprint(data.card.sha256, params.members[arch], params.train)
    assert card["n_train"] == data.card.n_train
    assert 0 < card["n_unique_images"] < card["n_train"]  # bootstrap: some drawn twice

    # The EMA generator lags the raw one: a separate set of weights.
    w = weights(out)
    assert any(
        not torch.equal(w["generator"][k], w["generator_ema"][k])
        for k in w["generator"]
        if w["generator"][k].is_floating_point()
    )


@pytest.mark.parametrize("arch", list(ARCH_WIDTH))
def test_loaded_member_generates_and_scores(arch: str, trained: dict[str, Path]) -> None:
    m = load_member(trained[arch])
    assert m.name == arch and m.z_dim == 8 and not m.generator.training
    z = torch.randn(5, m.z_dim, generator=torch.Generator().manual_seed(0))
    x = m.generate(z, batch_size=2)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(m.generate(z), x)  # deterministic, batch-size independent
    u8 = m.generate_u8(z)
    assert u8.shape == (5, 1, 8, 8) and u8.dtype == torch.uint8

    images = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    s = m.score(images)
    assert s.shape == (7,) and s.dtype == np.float64 and np.isfinite(s).all()
    one_by_one = np.concatenate([m.score(images[i : i + 1]) for i in range(7)])
    np.testing.assert_allclose(one_by_one, s, rtol=1e-5, atol=1e-6)  # no batch dependence
    assert m.score(images[:0]).shape == (0,)


@pytest.mark.parametrize("weights", ["generator_ema", "discriminator"])
def test_load_member_refuses_weights_its_card_does_not_describe(
    tmp_path: Path, trained: dict[str, Path], weights: str
) -> None:
    out = copy_member(trained["mlp"], tmp_path / "mlp")
    path = out / "checkpoint" / f"{weights}.safetensors"
    tensors = load_file(str(path))
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1e-3  # one number, slightly off
    save_file(tensors, str(path))
    with pytest.raises(CardError, match="member mlp: the weights"):
        load_member(out)


def test_load_member_without_card(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no finished member"):
        load_member(tmp_path)


# Resume after an interruption.


def test_interrupted_member_resumes_exactly(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    params = make_params()
    out = tmp_path / "dcgan"
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        train(params, "dcgan", data_dir, out, callback=stop_at(10, seen), progress=False)
    assert seen == list(range(1, 11))
    assert checkpoint_state(out)["step"] == 8
    assert not (out / "card.json").exists()  # not finished
    assert logged_steps(out) == [2, 4, 6, 8, 10]  # 10 was logged after the last checkpoint

    resumed: list[int] = []
    card = train(params, "dcgan", data_dir, out, callback=resumed.append, progress=False)
    assert resumed == [9, 10, 11, 12]  # from step 8, to the same end as an uninterrupted run
    assert card["steps"] == STEPS and checkpoint_state(out)["step"] == STEPS
    assert logged_steps(out) == [2, 4, 6, 8, 10, 12]  # nothing lost, nothing repeated

    ref = trained["dcgan"]
    assert_same_weights(out, ref)
    assert losses(out) == losses(ref)
    ref_card = json.loads((ref / "card.json").read_text())
    volatile = {"seconds_this_run"}
    assert {k: v for k, v in card.items() if k not in volatile} == {
        k: v for k, v in ref_card.items() if k not in volatile
    }
    opt, ref_opt = (
        torch.load(d / "checkpoint" / "optim.pt", weights_only=True) for d in (out, ref)
    )
    for key in ("opt_g", "opt_d"):
        for p, st in opt[key]["state"].items():
            for name, t in st.items():
                assert torch.equal(t, ref_opt[key]["state"][p][name]), (key, p, name)


def test_a_swapped_optimizer_state_is_refused_before_it_is_unpickled(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """optim.pt is a pickle (read with weights_only=True): it is only opened when its bytes
    are the ones state.json recorded at the checkpoint. One written before the hash was
    recorded is read with a warning (refusing it would throw the member's steps away)."""
    params = make_params()
    out = tmp_path / "mlp"
    with pytest.raises(KeyboardInterrupt):
        train(params, "mlp", data_dir, out, callback=stop_at(6, []), progress=False)
    optim = out / "checkpoint" / "optim.pt"
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and len(state["optim_sha256"]) == 64
    saved = optim.read_bytes()
    opt = torch.load(optim, weights_only=True)
    for st in opt["opt_g"]["state"].values():
        st["exp_avg"].fill_(1e6)  # a valid state, not the one saved
    torch.save(opt, optim)
    loads = []
    real_load = torch.load
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
        with pytest.raises(CardError) as err:
            train(params, "mlp", data_dir, out, progress=False)
    assert loads == []  # refused unread
    msg = str(err.value)
    assert "\n" not in msg and str(optim) in msg and f"delete {optim.parent}" in msg

    optim.write_bytes(saved)  # restored, and from before hashes: resumes at its step
    seen: list[int] = []
    del state["optim_sha256"]  # an older checkpoint: no hash recorded
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    with caplog.at_level("WARNING", logger="ensgan.gan.checkpoint"):
        train(params, "mlp", data_dir, out, callback=seen.append, progress=False)
    assert seen == list(range(5, STEPS + 1))
    assert "no sha256 in state.json (an older checkpoint)" in caplog.text


def test_interrupt_before_first_checkpoint_starts_over(tmp_path: Path, data_dir: Path) -> None:
    params = make_params()
    out = tmp_path / "mlp"
    with pytest.raises(KeyboardInterrupt):
        train(params, "mlp", data_dir, out, callback=stop_at(3, []), progress=False)
    assert checkpoint_state(out) is None and logged_steps(out) == [2]
    seen: list[int] = []
    train(params, "mlp", data_dir, out, callback=seen.append, progress=False)
    assert seen == list(range(1, STEPS + 1))
    assert logged_steps(out) == list(range(2, STEPS + 1, 2))


def test_torn_checkpoint_swap_is_recovered(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    """A crash between `checkpoint -> .checkpoint.old` and `.checkpoint.partial -> checkpoint`."""
    out = copy_member(trained["upsample"], tmp_path / "upsample")
    (out / "checkpoint").rename(out / ".checkpoint.old")
    (out / ".checkpoint.partial").mkdir()  # a half-written next snapshot
    seen: list[int] = []
    card = train(make_params(), "upsample", data_dir, out, callback=seen.append)
    assert seen == [] and card["steps"] == STEPS
    assert checkpoint_state(out)["step"] == STEPS
    assert_same_weights(out, trained["upsample"])


# Finished, continued and restarted members.


def test_finished_member_is_not_retrained(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    out = copy_member(trained["dcgan"], tmp_path / "dcgan")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    card_before = json.loads((out / "card.json").read_text())

    def never(step: int) -> None:
        raise AssertionError(f"callback called at step {step}: the member was retrained")

    card = train(make_params(), "dcgan", data_dir, out, callback=never, progress=False)
    assert card == card_before
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_raising_steps_continues_a_finished_member(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    out = copy_member(trained["mlp"], tmp_path / "mlp")
    more = make_params(train={"steps": 16})
    seen: list[int] = []
    card = train(more, "mlp", data_dir, out, callback=seen.append, progress=False)
    assert seen == [13, 14, 15, 16]
    assert card["steps"] == 16 and checkpoint_state(out)["step"] == 16
    assert logged_steps(out) == list(range(2, 17, 2))
    assert json.loads((out / "card.json").read_text()) == card

    # The same as training 16 steps in one go.
    ref = tmp_path / "ref"
    train(more, "mlp", data_dir, ref, progress=False)
    assert_same_weights(out, ref)
    assert losses(out) == losses(ref)


def test_interrupted_continuation_leaves_no_stale_card(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    """While a finished member is continued its checkpoint is overwritten, so its old card
    (which says `steps: 12`) must not survive: card.json means 'finished, as described'."""
    out = copy_member(trained["mlp"], tmp_path / "mlp")
    more = make_params(train={"steps": 16, "checkpoint_every": 2})
    with pytest.raises(KeyboardInterrupt):
        train(more, "mlp", data_dir, out, callback=stop_at(15, []), progress=False)
    assert checkpoint_state(out)["step"] == 14
    assert not (out / "card.json").exists()
    with pytest.raises(FileNotFoundError, match="no finished member"):
        load_member(out)
    # Going back to 12 steps cannot reuse a step-14 checkpoint: it trains from scratch.
    seen: list[int] = []
    card = train(make_params(), "mlp", data_dir, out, callback=seen.append)
    assert seen[0] == 1 and card["steps"] == STEPS
    assert_same_weights(out, trained["mlp"])


def test_lowering_steps_starts_from_scratch(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    out = copy_member(trained["dcgan"], tmp_path / "dcgan")
    seen: list[int] = []
    card = train(make_params(train={"steps": 4}), "dcgan", data_dir, out, callback=seen.append)
    assert seen == [1, 2, 3, 4] and card["steps"] == 4
    assert logged_steps(out) == [2, 4]


def test_changing_the_seed_starts_from_scratch(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    out = copy_member(trained["dcgan"], tmp_path / "dcgan")
    other = make_params(seed=7, train={"steps": 4})
    seen: list[int] = []
    card = train(other, "dcgan", data_dir, out, callback=seen.append, progress=False)
    assert seen == [1, 2, 3, 4]
    assert card["seed"] == 7 and card["steps"] == 4
    assert logged_steps(out) == [2, 4]
    assert checkpoint_state(out)["step"] == 4
    assert (
        json.loads((out / "card.json").read_text())["fingerprint"]
        != json.loads((trained["dcgan"] / "card.json").read_text())["fingerprint"]
    )


def test_log_and_checkpoint_cadence_do_not_restart(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path
) -> None:
    out = copy_member(trained["dcgan"], tmp_path / "dcgan")
    p = make_params(train={"log_every": 3, "checkpoint_every": 5})
    seen: list[int] = []
    train(p, "dcgan", data_dir, out, callback=seen.append, progress=False)
    assert seen == []


# Divergence.


def test_divergence_names_the_member(tmp_path: Path, data_dir: Path) -> None:
    params = make_params(train={"max_loss": 1e-3})
    with pytest.raises(DivergedError, match="member upsample diverged at step 1"):
        train(params, "upsample", data_dir, tmp_path / "upsample", progress=False)
    assert not (tmp_path / "upsample" / "card.json").exists()


# Bagging.


def test_no_bootstrap_member_sees_every_image(tmp_path: Path, data_dir: Path) -> None:
    params = make_params(bootstrap=False, train={"steps": 2})
    card = train(params, "mlp", data_dir, tmp_path / "mlp", progress=False)
    assert card["bootstrap"] is False
    assert card["n_unique_images"] == card["n_train"]


FINGERPRINT_AFTER_EDITS = """
import sys
from pathlib import Path
import ensgan
from ensgan.config import MemberConfig, TrainConfig
from ensgan.gan.member import fingerprint

pkg = Path(ensgan.__file__).parent
assert pkg == Path(sys.argv[1]), pkg  # the copy, not the installed package
fp = lambda: fingerprint("data", MemberConfig(), TrainConfig())
before = fp()
with open(pkg / "eval" / "report.py", "a") as f:  # not training code
    f.write("# an edit\\n")
untouched = fp()
with open(pkg / "gan" / "loop.py", "a") as f:  # the training loop
    f.write("# an edit\\n")
print(before, untouched, fp())
"""


def test_fingerprint_follows_the_training_code(tmp_path: Path) -> None:
    """Editing the training loop's file (in a copy of the package) changes every member's
    fingerprint, so members retrain; editing the report does not."""
    import ensgan

    copy = tmp_path / "ensgan"
    shutil.copytree(Path(ensgan.__file__).parent, copy, ignore=shutil.ignore_patterns("__py*"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-c", FINGERPRINT_AFTER_EDITS, str(copy)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    before, untouched, edited = res.stdout.split()
    assert before == fingerprint("data", MemberConfig(), TrainConfig())  # same bytes, same fp
    assert untouched == before
    assert edited != before


def test_load_member_with_an_unreadable_weights_file_is_a_clear_error(
    tmp_path: Path, trained: dict[str, Path]
) -> None:
    out = copy_member(trained["dcgan"], tmp_path / "dcgan")
    path = out / "checkpoint" / "discriminator.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CardError, match=r"member dcgan: cannot load .*delete .* and train it"):
        load_member(out)


# train_member takes the loss and the sampler it trains with; a grid per checkpoint.


MLP_TRAIN = {"steps": 6, "batch_size": 8, "z_dim": 8, "checkpoint_every": 3, "log_every": 3}
MLP_TRAIN |= {"device": "cpu"}


def mlp_params(**train) -> Params:
    """One small mlp member `m`, six steps: these tests need a member that trains, not a good
    one."""
    return parse_params(
        {"data": {"image_size": 8}, "members": {"m": {"arch": "mlp", "width": 4, "seed": 2}},
         "train": {**MLP_TRAIN, **train}}
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
    p = mlp_params()
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
    p = mlp_params()
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
    p = mlp_params()
    out = tmp_path / "m"
    card = train_member("m", p.members["m"], p.train, data_dir, out)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished member built networks or loaded data")

    monkeypatch.setattr(member_module, "member_nets", forbidden)
    monkeypatch.setattr(member_module, "load_prepared", forbidden)
    assert train_member("m", p.members["m"], p.train, data_dir, out) == card


def test_member_is_finished_checks_card_and_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    p = mlp_params()
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


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_bf16_member_resumes_exactly_and_is_another_member(
    tmp_path: Path, trained: dict[str, Path], data_dir: Path, arch: str
) -> None:
    """train.precision: bf16 trains under autocast (on the CPU here, as on CUDA): a resumed
    run is the uninterrupted one bit for bit, its weights stay fp32, differ from fp32's, and
    it is a member of its own (its fingerprint), unlike where it runs."""
    params = make_params(train={"precision": "bf16"})
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(params, arch, data_dir, whole, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(params, arch, data_dir, cut, callback=stop_at(10, []), progress=False)
    train(params, arch, data_dir, cut, progress=False)
    assert_same_weights(cut, whole)
    assert losses(cut) == losses(whole)
    w, ref = weights(whole), weights(trained[arch])
    assert {t.dtype for f in w for t in w[f].values() if t.is_floating_point()} == {torch.float32}
    assert any(not torch.equal(w["generator"][k], ref["generator"][k]) for k in w["generator"])

    def fp(p: Params) -> str:
        return fingerprint("data", p.members[arch], p.train)

    assert fp(params) != fp(make_params())
    elsewhere = {"gpus": [1], "members_per_gpu": 3, "cudnn_benchmark": True, "workers": 4}
    assert fp(make_params(train=elsewhere)) == fp(make_params())


def test_the_step_runs_its_forward_passes_in_bf16_and_its_losses_in_fp32() -> None:
    """The same nets, batch and latents through one step in each precision: bf16's losses
    differ from fp32's by bfloat16's rounding (autocast took effect), and the logits, losses
    and gradients are fp32 either way."""
    from ensgan.gan.loop import gan_step
    from ensgan.gan.losses import make_loss
    from ensgan.gan.nets import member_nets

    out = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(**TRAIN, precision=precision)
        loss = make_loss(cfg.loss)
        torch.manual_seed(0)
        nets = member_nets(
            MemberConfig(width=4), cfg, size=8, channels=1, loss=loss, device=torch.device("cpu")
        )
        torch.manual_seed(1)
        real, z = torch.rand(16, 1, 8, 8) * 2 - 1, torch.randn(16, cfg.z_dim)
        gen = torch.Generator().manual_seed(0)
        d_loss, g_loss, d_real, d_fake = gan_step(
            nets.generator, nets.discriminators, nets.opt_g, nets.opt_d, loss, real, z, (), gen,
            precision=precision,
        )  # fmt: skip
        assert {d_loss.dtype, g_loss.dtype, d_real[0].dtype, d_fake[0].dtype} == {torch.float32}
        grads = [p.grad for p in nets.generator.parameters()]
        assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads)
        out[precision] = (d_loss.item(), g_loss.item())
    (d32, g32), (d16, g16) = out["fp32"], out["bf16"]
    assert (d16, g16) != (d32, g32)
    assert abs(d16 - d32) < 0.05 and abs(g16 - g32) < 0.05
