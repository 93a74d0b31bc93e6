"""The stages as Prefect tasks, with retries only for errors that may pass.

Each task imports its stage when it runs, so that a process (the flow's, a pool worker) loads
only the libraries of the stages it runs. A member's training is cached on (data hash, member
and train params, training code, where it lives), and the cache is trusted only while
`member_is_finished` says the output on disk still matches: a second run retrains nothing
unchanged (its train tasks end `Cached`), and a deleted output is rebuilt rather than assumed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from ensgan.config import Params, load_params
from ensgan.errors import is_user_error
from ensgan.gan.placement import check_runner
from ensgan.layout import Layout
from ensgan.orchestration import versioning
from ensgan.orchestration.logs import quiet_user_tracebacks
from ensgan.orchestration.results import PLAIN_JSON, guard_cached_record


def setup(params_path: str, root: str) -> tuple[Params, Layout]:
    """The params and layout a flow run starts from; a Ray runner without Ray stops it here."""
    params = load_params(Path(root) / params_path)
    check_runner(params.train)
    return params, Layout(Path(root))


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass next time (a dropped connection, a full disk), not a user error:
    bad params, unreadable data or a diverged member fail the same way every time."""
    exc = state.result(raise_on_failure=False)
    return not is_user_error(exc)


RETRY = {"retry_condition_fn": worth_retrying}
quiet_user_tracebacks()  # here, so that worker processes (which import the tasks) have it


@task(name="prepare", retries=1, retry_delay_seconds=2, **RETRY)
def prepare_task(params_path: str, root: str) -> dict:
    from ensgan.pipeline import prepare

    return prepare.run(*setup(params_path, root))


def member_cache_key(ctx: TaskRunContext, args: dict[str, Any]) -> str:
    """A member's training is the same work while data, member and train params are."""
    from ensgan.gan.member import fingerprint

    params, layout = setup(args["params_path"], args["root"])
    name = args["name"]
    fp = fingerprint(args["data_sha"], params.members[name], params.train)
    where = hashlib.sha256(str(layout.member(name).resolve()).encode()).hexdigest()[:12]
    key = f"ensgan-member-{name}-{fp[:24]}-{params.train.steps}-{where}"
    guard_cached_record(key)  # before Prefect reads it: plain JSON or nothing
    return key


@task(
    name="train-member",
    retries=1,
    retry_delay_seconds=5,
    cache_key_fn=member_cache_key,
    persist_result=True,
    result_serializer=PLAIN_JSON,  # and read back only as that (member_cache_key)
    task_run_name="train-{name}",
    **RETRY,
)
def train_task(name: str, params_path: str, root: str, data_sha: str, threads: int) -> dict:
    import torch

    from ensgan.pipeline import train

    torch.set_num_threads(threads)
    params, layout = setup(params_path, root)
    logger = get_run_logger()
    every = params.train.checkpoint_every

    def report(step: int) -> None:  # a line per checkpoint in the Prefect UI, not a bar
        if step % every == 0 or step == params.train.steps:
            logger.info("member %s: step %d/%d", name, step, params.train.steps)

    card = train.train_one(params, layout, name, progress=False, callback=report)
    if card["data_sha256"] != data_sha:
        raise RuntimeError(f"member {name} trained on {card['data_sha256']}, expected {data_sha}")
    return card


@task(name="train-shared", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE, **RETRY)
def shared_task(params_path: str, root: str, data_sha: str, threads: int) -> dict:
    """train.ensemble: shared: every member as a head of one run (ensgan/gan/shared.py), one
    task with every core; a finished run returns its cards at once (its own check, no cache)."""
    import torch

    from ensgan.pipeline import train

    torch.set_num_threads(threads)
    params, layout = setup(params_path, root)
    logger = get_run_logger()
    every = params.train.checkpoint_every

    def report(step: int) -> None:
        if step % every == 0 or step == params.train.steps:
            logger.info("shared run: step %d/%d", step, params.train.steps)

    cards = train.train_heads(params, layout, progress=False, callback=report)
    if any(c["data_sha256"] != data_sha for c in cards.values()):
        raise RuntimeError(f"the shared run trained on other data than {data_sha}")
    return cards


@task(
    name="train-member-ray",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,  # the member's copy in the store is its cache (remote.py)
    task_run_name="train-{name}",
    **RETRY,
)
def ray_train_task(
    name: str, params: dict, storage: dict, data_sha: str, threads: int, stop_token: str
) -> dict:
    """A member on whichever Ray node has room: data from the store, the member back to it;
    it stops, checkpointed, when its run writes `stop_token`'s stop (remote.py)."""
    from ensgan.orchestration import remote

    return remote.train_elsewhere(name, params, storage, data_sha, threads, stop_token)


@task(name="stack", retries=1, retry_delay_seconds=2, **RETRY)
def stack_task(params_path: str, root: str) -> dict:
    from ensgan.pipeline import stack

    return stack.run(*setup(params_path, root))


@task(name="evaluate", retries=1, retry_delay_seconds=2, **RETRY)
def evaluate_task(params_path: str, root: str) -> dict:
    from ensgan.pipeline import evaluate

    return evaluate.run(*setup(params_path, root))


@task(name="generate", retries=1, retry_delay_seconds=2, **RETRY)
def generate_task(params_path: str, root: str) -> dict:
    from ensgan.pipeline import generate

    return generate.run(*setup(params_path, root))


@task(name="publish", retries=3, retry_delay_seconds=[2, 10, 30], **RETRY)
def publish_task(
    params_path: str, root: str, run_id: str, took: dict[str, float] | None = None
) -> dict:
    from ensgan.pipeline import publish

    return publish.run(*setup(params_path, root), run_id, took=took)


@task(name="dvc-commit", retries=2, retry_delay_seconds=[5, 30])  # DVC's repo lock may be held
def dvc_commit_task(root: str, stages: tuple[str, ...]) -> dict:
    """Record what the flow made in dvc.lock, as `dvc repro` would have (see versioning.py).
    When dvc.lock already describes the project (a rerun that changed nothing), there is
    nothing to record, and `dvc commit` is not run."""
    if not (before := versioning.status(Path(root))):
        return before
    versioning.commit(Path(root), stages)
    return versioning.status(Path(root))


@task(name="dvc-push", retries=3, retry_delay_seconds=[2, 10, 30])
def dvc_push_task(root: str) -> str | None:
    return versioning.push(Path(root))
