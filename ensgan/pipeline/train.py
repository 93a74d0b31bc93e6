"""Stage `train`: the members -> models/members/NAME/ (each resumed, or found finished).

Bagging (the default) trains the members independently, several at once in worker processes;
boosting (AdaGAN, ensgan/ensemble/boosting.py) trains them one after another in params order,
each on the data reweighted toward what the mixture of the ones before it misses; shared
(MGAN, ensgan/gan/shared.py) trains them as the heads of one generator in one run;
clustered (ensgan/pipeline/clustered.py) trains them as bagging does, each on its own cluster
of the training split.
`ensgan train NAME` trains one member (under boosting, the members before it first; shared:
the whole run, which cannot be split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from ensgan import stopping
from ensgan.children import init_member_process
from ensgan.config import Params
from ensgan.data.prepared import load_prepared, read_data_card
from ensgan.errors import ConfigError
from ensgan.gan.member import train_member
from ensgan.gan.placement import claim_first_gpu, here, worker_slots
from ensgan.gan.samplers import RealSampler, UniformSampler, WeightedSampler
from ensgan.gan.schedule import plan
from ensgan.io.files import atomic_write
from ensgan.layout import Layout
from ensgan.pipeline.clustered import assign_clusters, cluster_sampler
from ensgan.pipeline.survivors import finished_again, settle
from ensgan.provenance import code_version

log = logging.getLogger(__name__)

BOOST_FILE = "boost_weights.npz"  # a boosted member's data weights, and what they came from
WEIGHTS_CODE = ("ensgan.ensemble.boosting", "ensgan.ensemble.combinations")  # make the weights


def run(
    params: Params,
    layout: Layout,
    name: str | None = None,
    *,
    progress: bool | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict:
    """Train member `name`, or every member when None; returns {name: card} of those that
    finished. Training every member goes on past one that fails while `train.min_members`
    can still finish (survivors.py); one named member must finish."""
    names = list(params.members)
    if name is not None and name not in params.members:
        raise ConfigError(f"unknown member {name!r}; params.yaml lists {sorted(names)}")
    if params.train.ensemble in ("shared", "boosting") or name is not None:
        claim_first_gpu(params.train)  # trained in this process
    if params.train.ensemble == "shared":
        return train_heads(params, layout, progress=progress, callback=callback)
    if name is not None:
        upto = names[: names.index(name)] if params.train.ensemble == "boosting" else []
        cards = {n: train_one(params, layout, n, progress=progress) for n in upto}
        cards[name] = train_one(params, layout, name, progress=progress, callback=callback)
        finished_again(layout, name)
        return cards
    if params.train.ensemble == "boosting":
        cards, failures = train_chain(params, layout, names, progress)
    else:
        if params.train.ensemble == "clustered":  # once, before the member processes read it
            assign_clusters(params, layout)
        cards, failures = train_parallel(params, layout, names)
    settle(params, layout, failures)
    return cards


def train_heads(
    params: Params,
    layout: Layout,
    *,
    progress: bool | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict:
    """Shared: every member as a head of one run; a run that fails leaves every one out."""
    from ensgan.gan.shared import train_shared

    cards = train_shared(
        dict(params.members), params.train, layout.prepared, layout.members,
        callback=callback, progress=progress,
    )  # fmt: skip
    return {n: c.model_dump(mode="json") for n, c in cards.items()}


def failure(exc: BaseException) -> str:
    """What a left-out member's record says: the error's type and message, on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]


def train_chain(
    params: Params, layout: Layout, names: list[str], progress: bool | None
) -> tuple[dict, dict[str, str]]:
    """Boosting: rounds in order; a round that fails ends the chain (each round is trained
    on what the members before it miss, so the rounds after it cannot run)."""
    cards: dict = {}
    for i, n in enumerate(names):
        try:
            cards[n] = train_one(params, layout, n, progress=progress)
        except Exception as exc:  # recorded; settle() stops if too few finish
            log.exception("member %s failed", n)
            failures = {n: failure(exc)}
            failures |= {
                m: f"not trained: boosting round {n} before it failed" for m in names[i + 1 :]
            }
            return cards, failures
    return cards, {}


def train_one(
    params: Params,
    layout: Layout,
    name: str,
    *,
    progress: bool | None = None,
    callback: Callable[[int], None] | None = None,
) -> dict:
    """One member; under boosting, on the weights its round gives (members before it must be
    finished: `run` trains them in order)."""
    sampler: RealSampler | None = None  # bagging: the member's bootstrap
    if params.train.ensemble == "boosting":
        sampler = boosting_sampler(params, layout, name)
    elif params.train.ensemble == "clustered":
        sampler = cluster_sampler(params, layout, name)
    card = train_member(
        name,
        params.members[name],
        params.train,
        layout.prepared,
        layout.member(name),
        sampler=sampler,
        progress=progress,
        callback=callback,
    )
    return card.model_dump(mode="json")


def _worker(params: Params, root: str, name: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    return train_one(params, Layout(Path(root)), name, progress=False)


def train_parallel(params: Params, layout: Layout, names: list[str]) -> tuple[dict, dict[str, str]]:
    """Bagging: independent members, as many at once as the placement has workers
    (ensgan/gan/placement.py: `train.workers`, 0 = one per core; on CUDA each sees its GPU),
    each with its share of the cores (benchmarks/parallel_members.py measures the gain). Returns the
    cards of those that finished and why the others did not. The member processes end with
    this one (ensgan/children.py); a stop (SIGTERM) ends each at its next step, checkpointed."""
    placement = here(params.train, len(names))
    cards: dict = {}
    failures: dict[str, str] = {}
    if placement.in_process:
        for n in names:
            try:
                cards[n] = train_one(params, layout, n)
            except Exception as exc:  # recorded; settle() stops if too few finish
                log.exception("member %s failed", n)
                failures[n] = failure(exc)
        return cards, failures
    threads = placement.threads
    root = str(layout.root.resolve())
    order, _ = plan(params, layout, placement.workers)  # the flow's order: the earliest end
    names = [n for n in order if n in names]
    pool = ProcessPoolExecutor(
        placement.workers,
        mp_context=get_context("spawn"),
        initializer=init_member_process,
        initargs=(os.getpid(), root, stopping.shared_event(), placement, worker_slots()),
    )
    try:
        with stopping.spreading():
            futures = {n: pool.submit(_worker, params, root, n, threads) for n in names}
            for n, f in futures.items():
                try:
                    cards[n] = f.result()
                except Exception as exc:  # recorded; settle() stops if too few finish
                    if stopping.requested():  # not the member's failure: the run stops
                        raise stopping.stopped("stopped") from None
                    log.error("member %s failed: %s", n, failure(exc))
                    failures[n] = failure(exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stop: the running ones checkpoint
    return cards, failures


def boosting_sampler(params: Params, layout: Layout, name: str) -> RealSampler:
    """Round t's sampler: uniform over the training split for the first member; AdaGAN's data
    weights against the mixture of the members before it for the others (cached in the
    member's folder while the data, those members' weights and the settings are unchanged)."""
    from ensgan.ensemble.boosting import adagan_data_weights, beta_for_round, image_classifier
    from ensgan.ensemble.combinations import Ensemble
    from ensgan.gan.loaded import load_member
    from ensgan.gan.models import to_unit

    names = list(params.members)
    t = names.index(name) + 1
    data_card = read_data_card(layout.prepared)
    if t == 1:
        return UniformSampler(np.arange(data_card.n_train))
    ec, member = params.train, params.members[name]
    before = {n: load_member(layout.member(n)) for n in names[: t - 1]}
    key = hashlib.sha256(
        json.dumps(
            {
                "data": data_card.sha256,
                "before": [
                    [n, m.card.weights_sha256 if m.card else None] for n, m in before.items()
                ],
                "prior": params.mixture_weights(),
                "batch_size": params.train.batch_size,
                "member": member.model_dump(),
                "beta": ec.boosting_beta,
                "epochs": ec.boosting_epochs,
                "code": [code_version(m) for m in WEIGHTS_CODE],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    cache = layout.member(name) / BOOST_FILE
    weights = _cached_weights(cache, key, data_card.n_train)
    if weights is None:
        data = load_prepared(layout.prepared)
        real = data.train_images
        prior = params.mixture_weights()
        mix = Ensemble(before, weights={n: prior[n] for n in before})
        fakes = mix.sample("mixture", len(real), seed=member.seed).images
        clf = image_classifier(
            member.arch, width=member.width, size=real.shape[-1], channels=real.shape[1],
            seed=member.seed,
        )  # fmt: skip
        weights, lam = adagan_data_weights(
            clf, to_unit(torch.from_numpy(real)), to_unit(torch.from_numpy(fakes)), round_=t,
            beta=ec.boosting_beta, seed=member.seed, epochs=ec.boosting_epochs,
            batch_size=params.train.batch_size,
        )  # fmt: skip
        beta = beta_for_round(t, ec.boosting_beta)
        ess = float(weights.sum() ** 2 / (weights**2).sum())
        log.info(
            "boosting %s (round %d, β=%.3f): λ*=%s, %d of %d images weighted, ESS %.0f",
            name, t, beta, lam, int((weights > 0).sum()), len(weights), ess,
        )  # fmt: skip
        cache.parent.mkdir(parents=True, exist_ok=True)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would add ".npz" to a path
                np.savez(fh, weights=weights, key=np.array(key))

        atomic_write(cache, save)
    return WeightedSampler(weights)


def _cached_weights(path: Path, key: str, n: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) == key and f["weights"].shape == (n,):
                return f["weights"]
    except (OSError, KeyError, ValueError):
        return None
    return None
