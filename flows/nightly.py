"""The nightly Prefect flow: the same stage functions as `dvc repro`, as tasks with retries.

Members train as mapped tasks, in parallel on the configured task runner (local processes by
default, each with its share of the cores; see benchmarks/parallel_members.py). A member's
training is cached on (data hash, member and train params, training code), and is only trusted
while the member's card on disk still matches: a second run retrains nothing unchanged (its
train tasks end `Cached`), and a deleted output is rebuilt rather than assumed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from ensgan.config import Params, load_params
from ensgan.files import project_lock
from ensgan.layout import Layout
from ensgan.report import metrics_table
from ensgan.stages import (
    USER_ERRORS,
    evaluate_stage,
    generate_stage,
    params_sha256,
    prepare_stage,
    publish_stage,
    stack_stage,
    train_stage,
)
from ensgan.training import fingerprint


def _setup(params_path: str, root: str) -> tuple[Params, Layout]:
    return load_params(Path(root) / params_path), Layout(Path(root))


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry what may pass next time (a dropped connection, a full disk), not a user error:
    bad params, unreadable data or a diverged member fail the same way every time."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, USER_ERRORS)


RETRY = {"retry_condition_fn": _worth_retrying}


@task(name="prepare", retries=1, retry_delay_seconds=2, **RETRY)
def prepare_task(params_path: str, root: str) -> dict:
    return prepare_stage(*_setup(params_path, root))


def _member_cache_key(ctx: TaskRunContext, args: dict[str, Any]) -> str:
    """A member's training is the same work while data, member and train params are."""
    params, layout = _setup(args["params_path"], args["root"])
    name = args["name"]
    fp = fingerprint(args["data_sha"], params.members[name], params.train)
    where = hashlib.sha256(str(layout.member(name).resolve()).encode()).hexdigest()[:12]
    return f"ensgan-member-{name}-{fp[:24]}-{params.train.steps}-{where}"


def _member_on_disk(layout: Layout, params: Params, name: str, data_sha: str) -> bool:
    """Whether the member's finished output is still there and matches its params: the cache
    is only trusted then (a deleted or foreign output is rebuilt, not assumed)."""
    card = layout.member(name) / "card.json"
    if not card.exists():
        return False
    c = json.loads(card.read_text())
    fp = fingerprint(data_sha, params.members[name], params.train)
    return c.get("fingerprint") == fp and c.get("steps") == params.train.steps


@task(
    name="train-member",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_worth_retrying,
    cache_key_fn=_member_cache_key,
    persist_result=True,
    task_run_name="train-{name}",
)
def train_task(name: str, params_path: str, root: str, data_sha: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    params, layout = _setup(params_path, root)
    logger = get_run_logger()
    every = params.train.checkpoint_every

    def report(step: int) -> None:  # a line per checkpoint in the Prefect UI, not a bar
        if step % every == 0 or step == params.train.steps:
            logger.info("member %s: step %d/%d", name, step, params.train.steps)

    card = train_stage(params, layout, name, progress=False, callback=report)
    if card["data_sha256"] != data_sha:
        raise RuntimeError(f"member {name} trained on {card['data_sha256']}, expected {data_sha}")
    return card


@task(name="stack", retries=1, retry_delay_seconds=2, **RETRY)
def stack_task(params_path: str, root: str) -> dict:
    return stack_stage(*_setup(params_path, root))


@task(name="evaluate", retries=1, retry_delay_seconds=2, **RETRY)
def evaluate_task(params_path: str, root: str) -> dict:
    return evaluate_stage(*_setup(params_path, root))


@task(name="generate", retries=1, retry_delay_seconds=2, **RETRY)
def generate_task(params_path: str, root: str) -> dict:
    return generate_stage(*_setup(params_path, root))


@task(name="publish", retries=3, retry_delay_seconds=[2, 10, 30], **RETRY)
def publish_task(params_path: str, root: str, run_id: str) -> dict:
    return publish_stage(*_setup(params_path, root), run_id)


def worker_count(params: Params) -> int:
    n = params.train.workers or (os.cpu_count() or 1)
    return max(1, min(n, len(params.members)))


@flow(name="nightly", log_prints=True)
def nightly(params_path: str = "params.yaml", root: str = ".") -> dict:
    """prepare -> train (mapped over members) -> stack -> evaluate -> generate -> publish."""
    params, layout = _setup(params_path, root)  # invalid params stop the run here
    with project_lock(layout.root):
        return _nightly(params, layout, params_path)


def _nightly(params: Params, layout: Layout, params_path: str) -> dict:
    root = str(layout.root.resolve())
    data = prepare_task(params_path, root)
    workers = worker_count(params)
    threads = max(1, (os.cpu_count() or 1) // workers)
    names = list(params.members)
    on_disk = {n: _member_on_disk(layout, params, n, data["sha256"]) for n in names}
    futures = []
    for trusted in (True, False):  # untrusted: run even if a cache record exists
        group = [n for n in names if on_disk[n] is trusted]
        if group:
            futures += train_task.with_options(refresh_cache=not trusted).map(
                group,
                unmapped(params_path),
                unmapped(root),
                unmapped(data["sha256"]),
                unmapped(threads),
            )
    cards = [f.result() for f in futures]
    stack = stack_task(params_path, root)
    metrics = evaluate_task(params_path, root)
    batch = generate_task(params_path, root)
    receipt = publish_task(params_path, root, batch["run_id"])
    report = layout.reports.resolve() / "index.html"
    summary = {
        "data_sha256": data["sha256"],
        "params_sha256": params_sha256(params),
        "members": {c["name"]: c["fingerprint"][:12] for c in cards},
        "stacker_cv_roc_auc": stack["cv_roc_auc"],
        "batch": batch,
        "published": receipt,
        "report": str(report),
        "metrics": metrics,
    }
    create_markdown_artifact(
        key="ensgan-nightly",
        markdown=(
            f"# ensgan nightly\n\nbatch `{batch['run_id']}` ({batch['n_images']} images), "
            f"published: {receipt['status']} at `{receipt.get('url', receipt.get('prefix'))}`\n\n"
            f"data `{data['sha256'][:12]}`, params `{summary['params_sha256'][:12]}`, "
            f"stacker CV ROC AUC {stack['cv_roc_auc']:.3f}\n\n"
            f"```\n{metrics_table(metrics)}\n```\n\nreport: `{report}`\n"
        ),
        description="members and combinations side by side",
    )
    return summary


def _runner(params: Params) -> ProcessPoolTaskRunner | ThreadPoolTaskRunner:
    n = worker_count(params)
    return ProcessPoolTaskRunner(max_workers=n) if n > 1 else ThreadPoolTaskRunner(max_workers=1)


@contextmanager
def _shared_api() -> Iterator[str]:
    """One Prefect API for the flow and its worker processes.

    With no PREFECT_API_URL configured, Prefect starts a temporary server per process; worker
    processes would each start their own on the same SQLite file. Start one here and hand its
    URL to the workers through the environment they inherit.
    """
    url, server = PREFECT_API_URL.value(), None
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here
        server = SubprocessASGIServer()
        server.start(timeout=120)
        url = server.api_url
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        if server is not None:
            APILogWorker.drain_all(timeout=10)  # send the last logs while the server is up
            server.stop()


def run(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Run the flow once, members in parallel processes when there is more than one worker."""
    params = load_params(Path(root) / params_path)
    with _shared_api():
        return nightly.with_options(task_runner=_runner(params))(params_path=params_path, root=root)


def serve(params_path: str = "params.yaml", root: str = ".") -> None:
    """Serve the flow on params.yaml's cron schedule (a real Prefect server must be running)."""
    from prefect.schedules import Cron

    params = load_params(Path(root) / params_path)
    nightly.with_options(task_runner=_runner(params)).serve(
        name="nightly",
        schedule=Cron(params.schedule.cron, timezone=params.schedule.timezone),
        parameters={"params_path": params_path, "root": str(Path(root).resolve())},
    )
