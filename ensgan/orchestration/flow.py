"""The nightly Prefect flow: the same stages as `dvc repro`, as tasks with retries.

Members train as mapped tasks, in parallel on the configured task runner (local processes by
default, each with its share of the cores; see benchmarks/parallel_members.py), submitted in
the order that finishes soonest (ensgan/gan/schedule.py). `flows/nightly.py`
re-exports the flow as the file entrypoint a `prefect deploy` names (`flows/nightly.py:nightly`).
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import torch
from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from ensgan import stopping
from ensgan.children import GRACE_SECONDS
from ensgan.config import Params, StorageConfig, load_params
from ensgan.errors import CardError, StopRequested
from ensgan.gan.member import fingerprint, member_is_finished
from ensgan.gan.placement import check_runner, here
from ensgan.gan.schedule import plan
from ensgan.gan.shared import head_fingerprints
from ensgan.io.files import project_lock, recover_outputs
from ensgan.io.storage import Store, open_store
from ensgan.layout import Layout
from ensgan.orchestration.artifacts import publish_artifacts
from ensgan.orchestration.remote import fetch_member, request_stop, stage_data, work_store
from ensgan.orchestration.runners import make_runner, shared_api
from ensgan.orchestration.tasks import (
    dvc_commit_task,
    dvc_push_task,
    evaluate_task,
    generate_task,
    prepare_task,
    publish_task,
    ray_train_task,
    setup,
    shared_task,
    stack_task,
    train_task,
)
from ensgan.orchestration.versioning import INPUT_STAGES, check_dvc_params, dvc_project
from ensgan.pipeline.clustered import assign_clusters, cluster_sampler
from ensgan.pipeline.common import params_sha256
from ensgan.pipeline.survivors import settle
from ensgan.pipeline.train import failure

SERVE_DEPLOYMENT = "serve"  # `ensgan serve`'s deployment, nightly/serve (prefect.yaml: nightly)
RAY_WAIT_SECONDS = 1.0  # how often the driver, waiting on its member tasks, looks for a stop


@flow(name="nightly", log_prints=True)
def nightly(params_path: str = "params.yaml", root: str = ".") -> dict:
    """prepare -> train (mapped over members) -> stack -> evaluate -> generate -> publish."""
    params, layout = setup(params_path, root)  # invalid params stop the run here
    with project_lock(layout.root):
        for line in recover_outputs(layout.root):  # a step a crash interrupted
            get_run_logger().warning(line)
        return _nightly(params, layout, params_path)


def _nightly(params: Params, layout: Layout, params_path: str) -> dict:
    root = str(layout.root.resolve())
    check_dvc_params(layout.root, params_path)
    took: dict[str, float] = {}  # seconds per stage, for the night's summary
    data = _timed(took, "prepare", prepare_task, params_path, root)
    members_done = all(_finished(params, layout, n, data["sha256"]) for n in params.members)
    t0 = time.perf_counter()
    cards, failures = _train_members(params, layout, params_path, root, data["sha256"])
    settle(params, layout, failures)
    took["train"] = round(time.perf_counter() - t0, 1)
    stack = _timed(took, "stack", stack_task, params_path, root)
    unversioned = dvc_project(layout.root, params_path)
    t_dvc = time.perf_counter()
    if unversioned is None:  # before generate: the batch's lineage names what dvc.lock holds
        dvc_commit_task(root, INPUT_STAGES)
    else:
        get_run_logger().info("not recorded in DVC: %s", unversioned)
    t_dvc = time.perf_counter() - t_dvc
    metrics = _timed(took, "evaluate", evaluate_task, params_path, root)
    batch = _timed(took, "generate", generate_task, params_path, root)
    receipt = _timed(took, "publish", publish_task, params_path, root, batch["run_id"], dict(took))
    dvc = _record(root, unversioned)
    dvc["seconds"] = round(t_dvc + dvc["seconds"], 2)  # recording and pushing, all told
    report = layout.reports.resolve() / "index.html"
    stages = {"prepare": data, "stack": stack, "evaluate": metrics, "generate": batch}
    stages["publish"] = receipt
    fresh = [name for name, result in stages.items() if result.get("up_to_date")]
    if members_done and not failures:
        fresh.insert(1, "train")
    for name in fresh:
        get_run_logger().info("%s: up to date (its inputs are unchanged); nothing rewritten", name)
    summary = {
        "up_to_date": fresh,
        "data_sha256": data["sha256"],
        "params_sha256": params_sha256(params),
        "members": {c["name"]: c["fingerprint"][:12] for c in cards},
        "left_out": failures,
        "trained_on": {c["name"]: c["trained_on"]["node"] for c in cards if "trained_on" in c},
        "stacker_cv_roc_auc": stack["cv_roc_auc"],
        "batch": batch,
        "method": params.generate.method,
        "published": receipt,
        "stage_seconds": took,
        "report": str(report),
        "metrics": metrics,
        "dvc": dvc,
        "flow_run_id": str(flow_run.get_id()),  # where its artifacts and logs are in Prefect
    }
    publish_artifacts(summary, _dvc_line(dvc), params.storage.endpoint_url)
    return summary


def _timed(took: dict[str, float], stage: str, fn, *args):  # noqa: ANN001, ANN202
    """fn(*args), its wall seconds recorded under `stage`."""
    t0 = time.perf_counter()
    result = fn(*args)
    took[stage] = round(time.perf_counter() - t0, 1)
    return result


def _train_members(
    params: Params, layout: Layout, params_path: str, root: str, data_sha: str
) -> tuple[list[dict], dict[str, str]]:
    """Every member as a task on the members' own runner (make_runner: a process pool with
    each process's share of the cores), whoever launched the flow (`ensgan run`, `serve`, a
    worker running the deployment): the flow's own runner runs the rest. Returns the cards of
    the members that finished and why the others did not."""
    if params.train.runner == "ray":
        return _train_on_ray(params, layout, data_sha)
    if params.train.ensemble == "shared":
        return _train_shared(params, layout, params_path, root, data_sha)
    if params.train.ensemble == "clustered":  # once, before the member processes read it
        assign_clusters(params, layout)
    placement = here(params.train, len(params.members))
    threads = placement.threads
    names, _ = plan(params, layout, placement.workers)
    finished = {n: _finished(params, layout, n, data_sha) for n in names}
    fixed = {"params_path": params_path, "root": root, "data_sha": data_sha}
    futures, submitted = [], []
    # Only finished members (their tasks end Cached, or read the card back at once): a thread
    # of this process runs them, and a rerun with nothing to train starts no worker process.
    idle = params.train.ensemble in ("bagging", "clustered") and all(finished.values())
    if idle:  # the tasks' set_num_threads must not change this process's own setting
        threads = torch.get_num_threads()
    members_runner = ThreadPoolTaskRunner(max_workers=1) if idle else make_runner(params, root)
    # An interrupt (SIGTERM, a dead server) leaving the block stops the members at their next
    # step (spreading), so that the runner's exit waits for their checkpoints only.
    with members_runner as runner, stopping.spreading():
        if params.train.ensemble == "boosting":
            # AdaGAN: a chain, each member after the ones before it. The cache key cannot see
            # the data weights a round gets from the members before it, so these tasks always
            # run (a finished member returns at once; its weights are cached beside it).
            boost = train_task.with_options(refresh_cache=True)
            for n in params.members:
                submitted.append(n)
                every_core = {**fixed, "name": n, "threads": os.cpu_count() or 1}
                futures.append(runner.submit(boost, every_core, wait_for=futures[-1:]))
        if params.train.ensemble == "clustered":  # the cache key cannot see the clusters
            submitted += names
            mapped = {k: unmapped(v) for k, v in {**fixed, "threads": threads}.items()}
            task = train_task.with_options(refresh_cache=True)
            futures += runner.map(task, {**mapped, "name": names})
        for trusted in (True, False) if params.train.ensemble == "bagging" else ():
            group = [n for n in names if finished[n] is trusted]  # untrusted: run, cache or not
            if group:
                submitted += group
                task = train_task.with_options(refresh_cache=not trusted)
                mapped = {k: unmapped(v) for k, v in {**fixed, "threads": threads}.items()}
                futures += runner.map(task, {**mapped, "name": group})
        return _outcomes(submitted, futures)


def _train_shared(
    params: Params, layout: Layout, params_path: str, root: str, data_sha: str
) -> tuple[list[dict], dict[str, str]]:
    """Shared: the heads are one run, so one task with every core on the members' runner
    (a thread of this process when every head is finished); its failure leaves every member
    out."""
    done = all(_finished(params, layout, n, data_sha) for n in params.members)
    threads = torch.get_num_threads() if done else os.cpu_count() or 1
    args = {"params_path": params_path, "root": root, "data_sha": data_sha, "threads": threads}
    runner = ThreadPoolTaskRunner(max_workers=1) if done else make_runner(params, root)
    with runner as r, stopping.spreading():
        cards, failures = _outcomes(["shared"], [r.submit(shared_task, args)])
    if failures:
        why = f"the shared run failed: {failures['shared']}"
        return [], dict.fromkeys(params.members, why)
    return list(cards[0].values()), {}


def _outcomes(names: list[str], futures: list) -> tuple[list[dict], dict[str, str]]:
    """The cards of the member tasks that finished, and why the others did not."""
    cards, failures = [], {}
    for name, future in zip(names, futures, strict=True):
        future.wait()
        outcome = future.state.result(raise_on_failure=False)
        if not future.state.is_completed() and (
            stopping.requested() or isinstance(outcome, StopRequested)
        ):  # the run stops (a member asked by SIGTERM): not the member's failure
            raise stopping.stopped("stopped")
        if future.state.is_completed():
            cards.append(outcome)
        else:  # recorded; settle() stops the run if fewer than min_members finished
            failures[name] = (
                (failure(outcome) if isinstance(outcome, BaseException) else None)
                or future.state.message
                or future.state.name
            )
    return cards, failures


def _train_on_ray(
    params: Params, layout: Layout, data_sha: str
) -> tuple[list[dict], dict[str, str]]:
    """Each unfinished member a Ray task with its own CPU (and GPU) request, on any node: the
    data goes through the work store and so do the members (remote.py); then they are fetched
    here. A member already finished here (its card matches its fingerprint) is reused as the
    local runner reuses it: not sent, not retrained, its files untouched; with none left to
    train, Ray is not started at all."""
    done = {n: _finished_card(params, layout, n, data_sha) for n in params.members}
    reused = [card for card in done.values() if card is not None]
    todo = [name for name, card in done.items() if card is None]
    if not todo:
        return reused, {}
    for card in reused:
        get_run_logger().info("member %s: finished here already, not sent to Ray", card["name"])
    work = work_store(params, layout)
    store = open_store(work)
    stage_data(store, layout, data_sha)
    cards, failures = _ray_tasks(params, layout, store, work, data_sha, todo)
    fetched = []
    for card in cards:
        try:
            fetch_member(store, layout, card["name"], card)
            fetched.append(card)
        except Exception as exc:  # recorded; settle() stops the run if too few remain
            failures[card["name"]] = failure(exc)
    order = list(params.members)  # params.yaml's order, as the other runners return them
    return sorted(reused + fetched, key=lambda c: order.index(c["name"])), failures


def _ray_tasks(
    params: Params,
    layout: Layout,
    store: Store,
    work: StorageConfig,
    data_sha: str,
    names: list[str],
) -> tuple[list[dict], dict[str, str]]:
    """The members `names` as Ray tasks, until each has ended. A stop of this run (SIGTERM,
    Ctrl-C, its server gone) reaches the tasks through the work store, and waits for their
    checkpoints before Ray is left (which would end them unsaved)."""
    from prefect_ray.context import remote_options

    fixed = {
        "params": params.model_dump(mode="json"),
        "storage": work.model_dump(mode="json"),
        "data_sha": data_sha,
        "threads": max(1, int(params.train.ray_cpus)),
        "stop_token": uuid.uuid4().hex,
    }
    with ExitStack() as stack:
        with stopping.handlers_kept():  # the runner starts Ray, which sets its own SIGTERM's
            runner = stack.enter_context(make_runner(params, str(layout.root.resolve())))
        cpus, gpus = params.train.ray_cpus, params.train.ray_gpus
        stack.enter_context(remote_options(num_cpus=cpus, num_gpus=gpus))
        futures = runner.map(ray_train_task, {**{k: unmapped(v) for k, v in fixed.items()},
                                              "name": names})  # fmt: skip
        try:
            _wait_on_ray(futures)
            return _outcomes(names, list(futures))
        except BaseException:  # a stop, or a fault: the members stop, checkpointed
            try:
                request_stop(store, fixed["stop_token"])
            except Exception as exc:  # the store is gone too: Ray ends the tasks unsaved
                get_run_logger().warning("could not ask the members to stop: %s", exc)
            deadline = time.monotonic() + GRACE_SECONDS
            for future in futures:
                future.wait(timeout=max(0.0, deadline - time.monotonic()))
            raise


def _wait_on_ray(futures: list) -> None:
    """Until every member task has ended; StopRequested once this run is asked to stop.
    Inside Ray's wait a stop signal's handler cannot raise (stopping.flag_only), so the wait
    is cut into slices and the flag looked at between them."""
    import ray

    pending = [f.wrapped_future for f in futures]
    with stopping.flag_only():
        while pending:
            if stopping.requested():
                raise stopping.stopped("stopped")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=RAY_WAIT_SECONDS)


def _finished(params: Params, layout: Layout, name: str, data_sha: str) -> bool:
    """Whether the member's output on disk is finished; one that cannot even be read is not,
    and its task runs (and fails there, to be left out, rather than failing the flow here)."""
    return _finished_card(params, layout, name, data_sha) is not None


def _finished_card(params: Params, layout: Layout, name: str, data_sha: str) -> dict | None:
    """The card of the member finished on disk at this fingerprint (as its task would return
    it), or None."""
    if params.train.ensemble == "shared":
        fp = head_fingerprints(params.members, params.train, data_sha)[name]
    elif params.train.ensemble == "clustered":
        seam = {"sampler": cluster_sampler(params, layout, name).identity}
        fp = fingerprint(data_sha, params.members[name], params.train, seam)
    else:
        fp = fingerprint(data_sha, params.members[name], params.train)
    try:
        card = member_is_finished(layout.member(name), fp, params.train.steps)
    except (OSError, CardError):
        return None
    return None if card is None else card.model_dump(mode="json")


def _record(root: str, unversioned: str | None) -> dict:
    """Record the rest of the run in dvc.lock and push the cache to the default remote."""
    if unversioned is not None:
        return {"recorded": False, "why": unversioned, "seconds": 0.0}
    t0 = time.perf_counter()
    changed = dvc_commit_task(root, ("evaluate", "generate", "publish"))
    if changed:  # e.g. code edited while the flow ran: dvc.lock cannot describe both
        get_run_logger().warning("dvc status is not clean after recording the run: %s", changed)
    remote = dvc_push_task(root)
    seconds = time.perf_counter() - t0
    return {"recorded": True, "status": changed, "pushed_to": remote, "seconds": seconds}


def _dvc_line(dvc: dict) -> str:
    if not dvc["recorded"]:
        return f"not recorded ({dvc['why']})"
    remote = dvc["pushed_to"]
    pushed = f"pushed to remote `{remote}`" if remote else "no remote to push to"
    clean = "`dvc status` clean" if not dvc["status"] else "`dvc status` NOT clean"
    return f"recorded in dvc.lock, {clean}, {pushed}"


def run(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Run the flow once, members in parallel processes when there is more than one worker."""
    params = load_params(Path(root) / params_path)  # invalid params stop here, before a
    check_runner(params.train)  # server starts: a Ray runner without Ray too
    check_dvc_params(Path(root), params_path)
    with shared_api():
        return nightly(params_path=params_path, root=root)


def serve(params_path: str = "params.yaml", root: str = ".") -> None:
    """Serve the flow on params.yaml's cron schedule (a real Prefect server must be running).

    The deployment names the flow by module path (`ensgan.orchestration.flow.nightly`), which
    imports wherever the package is installed; a file entrypoint would be a path relative to
    the directory `serve` happened to start in. `prefect deploy` names `flows/nightly.py:nightly`.
    Its name is `nightly/serve`, not prefect.yaml's `nightly/nightly`: a served deployment has
    no work pool and is paused when `serve` stops, so under one name either would replace the
    other, and a worker would get nothing after `serve` had run.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    params = load_params(Path(root) / params_path)
    check_runner(params.train)
    nightly.serve(
        name=SERVE_DEPLOYMENT,
        schedule=Cron(params.schedule.cron, timezone=params.schedule.timezone),
        parameters={"params_path": params_path, "root": str(Path(root).resolve())},
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
