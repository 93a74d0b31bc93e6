"""The nightly Prefect flow, run for real on a temporary Prefect server (tiny settings)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from prefect.client.schemas.objects import StateType

from ensgan.config import ConfigError
from ensgan.ensemble.combinations import METHODS
from ensgan.io.batches import list_batches, pull_batch
from ensgan.io.storage import LocalStore
from tests.helpers import TINY_FLOW, write_tiny_project

pytestmark = pytest.mark.e2e  # real services: Prefect, DVC, S3 servers


def test_flow_runs_every_stage_and_publishes(flow_project: dict, tmp_path: Path) -> None:
    root, s = flow_project["root"], flow_project["summary"]
    assert set(s["members"]) == {"a", "b"}
    assert s["published"]["status"] == "published"
    assert s["dvc"]["recorded"] is False and "not a DVC project" in s["dvc"]["why"]
    assert s["published"]["gate"]["decision"] == "promoted"  # the first batch: the champion
    champion = json.loads((root / "store" / "latest.json").read_text())
    assert champion["run_id"] == s["batch"]["run_id"] and champion["metrics"]["fd"] > 0
    assert not (root / "dvc.lock").exists()  # no DVC: nothing written in its name

    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"}
    assert set(metrics["ensemble"]) == set(METHODS)
    for row in [*metrics["members"].values(), *metrics["ensemble"].values()]:
        assert row["fd"] > 0 and 0 <= row["classes_covered"] <= 10
        assert 0.0 <= row["stacker_score"] <= 1.0
        assert all(0.0 <= row[k] <= 1.0 for k in ("precision", "recall", "coverage"))
        assert len(row["coverage_per_class"]) == 10
    for method, row in metrics["ensemble"].items():
        assert 0 < row["accept_rate"] <= 1 and row["ess"] > 0, method
        # MH scores evaluate.n_mh images, beside the mixture's FD at that count (FD falls
        # with the count); every other row scores n_samples.
        assert row["n_images"] == (60 if method == "mh" else 100), method
        assert ("mixture_fd_same_count" in row) == (method == "mh"), method
    assert all(m["n_images"] == 100 for m in metrics["members"].values())
    assert metrics["ensemble"]["mh"]["mixture_fd_same_count"] > 0
    stacker = metrics["stacker"]
    assert stacker["ece_calibrated"] >= 0 and stacker["calibration"] == "sigmoid"
    assert sum(stacker["member_weights"].values()) == pytest.approx(1.0)
    assert 0 < stacker["ratio_ess_fraction"] <= 1
    assert stacker["ratio_mean_shift_uniform"] >= 0 and stacker["ratio_mean_shift_reweighted"] >= 0
    # Held-out real images as candidates: no class is thinned to under half the average rate.
    assert min(r for r in stacker["real_acceptance_by_class"] if r is not None) > 0.5
    card = json.loads((root / "models" / "members" / "b" / "card.json").read_text())
    assert card["loss"] == "non_saturating+gman-softmax(λ=1)" and card["discriminators"] == 2
    assert s["batch"]["run_id"].startswith("mh-")
    assert metrics["data_sha256"] == s["data_sha256"]
    assert metrics["params_sha256"] == s["params_sha256"]
    # a grid per member and combination, tonight's card and the history chart
    assert (root / "reports" / "index.html").read_text().count("<img") == 2 + len(METHODS) + 2

    # The batch is in the store, listed, and pulls back with verified checksums.
    store = LocalStore(root / "store")
    (info,) = list_batches(store)
    assert info.run_id == s["batch"]["run_id"] and info.n_images == 40
    pulled = pull_batch(store, info.run_id, tmp_path)
    rows = [json.loads(x) for x in (pulled / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    meta = json.loads((pulled / "batch.json").read_text())
    assert meta["data_sha256"] == s["data_sha256"] and meta["params_sha256"] == s["params_sha256"]
    assert {r["member"] for r in rows} <= {"a", "b"}
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)


async def _task_states(flow_run_id) -> dict[str, list[str]]:
    async with get_client() as client:
        flow_filter = FlowRunFilter(id={"any_": [flow_run_id]})
        runs = await client.read_task_runs(flow_run_filter=flow_filter)
    states: dict[str, list[str]] = {}
    for r in runs:
        states.setdefault(r.name, []).append(r.state.name)
    return states


async def _flow_runs() -> list:
    async with get_client() as client:
        return await client.read_flow_runs()


def _stamps(*dirs: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file below `dirs`."""
    return {
        str(p): (p.stat().st_mtime_ns, p.stat().st_size)
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@contextmanager
def _child_processes() -> Iterator[set[str]]:
    """The names of the multiprocessing children (a pool's workers) seen while the block ran."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            seen.update(p.name for p in multiprocessing.active_children())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def test_second_run_rewrites_and_publishes_nothing(flow_project: dict) -> None:
    """A rerun on unchanged inputs: every stage says it is up to date, no file under models/,
    reports/, outputs/ or the store is rewritten, and the store gets no new object."""
    import anyio

    from ensgan.orchestration.flow import run

    root = flow_project["root"]
    outputs = [root / d for d in ("data", "models", "reports", "outputs", "store")]
    before = _stamps(*outputs)
    assert any("generator_ema.safetensors" in p for p in before)
    with _child_processes() as children:
        again = run(params_path="params.yaml", root=str(root))
    assert not children, f"a rerun with nothing to train started worker processes: {children}"
    assert _stamps(*outputs) == before, "a rerun rewrote files"
    assert again["up_to_date"] == ["prepare", "train", "stack", "evaluate", "generate", "publish"]
    assert again["batch"]["run_id"] == flow_project["summary"]["batch"]["run_id"]
    assert again["published"]["status"] == "already-published"
    assert again["published"]["gate"]["latest"] == again["batch"]["run_id"]
    from ensgan.orchestration.summary import night_summary

    assert "published: " + again["batch"]["run_id"] in night_summary(again)[0]
    assert night_summary(again)[0].endswith("; already published: an unchanged night)")
    unchanged = "unchanged: prepare, train, stack, evaluate, generate, publish (inputs unchanged)"
    assert unchanged in night_summary(again)
    assert (
        again["metrics"]["ensemble"].keys() == flow_project["summary"]["metrics"]["ensemble"].keys()
    )

    runs = anyio.run(_flow_runs)
    assert len(runs) >= 2
    assert all(r.state.type == StateType.COMPLETED for r in runs)
    latest = max(runs, key=lambda r: r.start_time)
    states = anyio.run(_task_states, latest.id)
    assert states["train-a"] == ["Cached"] and states["train-b"] == ["Cached"]


def test_the_night_summary_says_what_was_published_first(flow_project: dict) -> None:
    """`ensgan run`'s first lines, from the flow's own summary: the batch, its method and
    count, the gate's word, where it went, and each stage's time; then a table a terminal
    shows (the key figures only)."""
    from ensgan.eval.report import TERMINAL_COLUMNS, metrics_table
    from ensgan.orchestration.summary import night_summary

    s = flow_project["summary"]
    run_id, receipt = s["batch"]["run_id"], s["published"]
    lines = night_summary(s)
    assert lines[0] == (
        f"published: {run_id} ({TINY_FLOW['generate']['method']}, {s['batch']['n_images']} "
        "images; published)"
    )
    assert lines[1] == f"gate:      {run_id}: promoted; latest is {run_id}"
    assert lines[2] == f"where:     {receipt.get('url') or receipt['prefix']}"
    assert lines[3] == f"report:    {s['report']}"
    (took,) = [line for line in lines if line.startswith("time:")]
    stages = ("prepare", "train", "stack", "evaluate", "generate", "publish")
    assert list(s["stage_seconds"]) == list(stages) and all(f"{n} " in took for n in stages)
    assert all(v >= 0 for v in s["stage_seconds"].values())
    card = (flow_project["root"] / "reports" / "tonight.svg").read_text()  # the report's top
    assert lines[0] in card and "time:" in card and "generate" in card  # the flow's times
    assert lines[-1] == took  # not a DVC project: no line on committing a baseline for DVC
    table = metrics_table(s["metrics"], TERMINAL_COLUMNS).splitlines()
    assert max(map(len, table)) <= 100 and table[0].split()[:4] == ["model", "kind", "fd", "kid"]
    assert "density" not in table[0] and "density" in metrics_table(s["metrics"]).splitlines()[0]
    candidate = {**s, "published": {**receipt, "gate": {"decision": "candidate", "latest":
                 "night-1", "reasons": ["fd 12.0 is worse than the champion's 10.0"]}}}  # fmt: skip
    assert night_summary(candidate)[1] == (
        f"gate:      {run_id}: not promoted (fd 12.0 is worse than the champion's 10.0); "
        "latest stays night-1"
    )


def test_invalid_params_stop_the_flow_before_any_work(tmp_path: Path, prefect_server) -> None:
    from ensgan.orchestration.flow import run

    root = write_tiny_project(tmp_path / "bad")
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        run(params_path="params.yaml", root=str(root))
    assert not (root / "data").exists()


def test_a_user_error_in_the_flow_is_logged_without_a_traceback(
    tmp_path: Path, prefect_server
) -> None:
    """Prefect logs a failed run with its traceback; for an error the user causes, the
    message stays and the traceback goes (the CLI then prints its one line)."""
    import logging

    from ensgan.errors import DataError
    from ensgan.orchestration.flow import run

    root = write_tiny_project(tmp_path / "p", data={"source": "folder", "path": "no-such-dir"})
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with pytest.raises(DataError, match="no-such-dir"):
            run(params_path="params.yaml", root=str(root))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert any("no-such-dir" in r.getMessage() for r in errors)
    assert all(r.exc_info is None and r.exc_text is None for r in errors)


@task
def _noop(name: str) -> str:
    return name


@flow
def _map_in_order(names: list[str]) -> list[str]:
    return [f.result() for f in _noop.map(names)]


def test_the_pool_gets_the_members_in_the_planned_order(prefect_server, monkeypatch) -> None:
    """Prefect's process pool resolves and packs submissions on several threads, so they can
    overtake each other on the way to the processes; the flow's runner hands them over in
    submission order."""
    from concurrent.futures import ProcessPoolExecutor

    import prefect.task_runners as tr

    from ensgan.orchestration.runners import OrderedProcessPoolTaskRunner

    packed: dict[int, str] = {}  # id of each packed call -> the task's `name`
    handed: list[str] = []  # the order the calls reach the process pool
    pack, submit = tr.cloudpickle_wrapped_call, ProcessPoolExecutor.submit

    def packing(fn, *args, **kwargs):
        name = kwargs["parameters"]["name"]
        if name == "m1":
            time.sleep(0.5)  # one slow submission: with several threads, m2 would pass it
        call = pack(fn, *args, **kwargs)
        packed[id(call)] = name
        return call

    def submitting(self, fn, *args, **kwargs):
        handed.append(packed[id(fn)])
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(tr, "cloudpickle_wrapped_call", packing)
    monkeypatch.setattr(ProcessPoolExecutor, "submit", submitting)
    names = [f"m{i}" for i in range(12)]
    # Two processes: enough for two resolver threads (Prefect sizes that pool by max_workers),
    # which reorder m1 and m2 with Prefect's own runner; each process more is a spawn to wait for.
    runner = OrderedProcessPoolTaskRunner(max_workers=2)
    assert _map_in_order.with_options(task_runner=runner)(names) == names
    assert handed == names


def test_persisted_task_results_are_plain_json(flow_project: dict) -> None:
    """A cache hit reads the member's card back from result storage: it must be JSON that
    loads without importing anything or unpickling."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    files = [p for p in storage.rglob("ensgan-member-*") if p.is_file()]  # the train tasks'
    assert files, f"no train task result in {storage}"
    cards = []
    for path in files:
        record = json.loads(path.read_bytes())  # a pickle would not parse
        serializer = record.get("metadata", record).get("serializer", {})
        assert serializer.get("type") == "json", path
        assert serializer.get("object_decoder") is None, path
        cards.append(json.loads(record["result"]))
    assert {c["name"] for c in cards} >= {"a", "b"}


class _Canary:
    """Unpickling this creates a file: proof that a record was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@flow
def _train_member(name: str, params_path: str, root: str, data_sha: str) -> tuple[str, dict]:
    """The nightly flow's train task for one member, alone (its cache key and records): the
    name of the state it ended in, and the card it returned."""
    from ensgan.orchestration.tasks import train_task

    state = train_task(
        name=name, params_path=params_path, root=root, data_sha=data_sha, threads=1,
        return_state=True,
    )  # fmt: skip
    return state.name, state.result()


def test_a_planted_pickle_record_is_never_unpickled(flow_project: dict, tmp_path: Path) -> None:
    """A pickle record placed under a current cache key reads as missing: the task runs
    afresh (the finished member returns at once) and a plain-JSON record replaces it."""
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    from ensgan.orchestration.results import check_plain_json

    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    root = flow_project["root"].resolve()  # as the flow gives it to its tasks
    where = hashlib.sha256(str(root / "models/members/a").encode()).hexdigest()[:12]
    (record_path,) = [p for p in storage.rglob(f"ensgan-member-a-*-{where}") if p.is_file()]
    marker = tmp_path / "unpickled"
    planted = ResultRecord(
        metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=str(record_path)),
        result=_Canary(str(marker)),
    ).serialize()
    record_path.write_bytes(planted)
    data_sha = flow_project["summary"]["data_sha256"]
    ended, card = _train_member("a", "params.yaml", str(root), data_sha)
    assert not marker.exists(), "the planted pickle record was unpickled"
    assert ended == "Completed"  # it ran afresh: not "Cached" from the planted record
    assert card["fingerprint"][:12] == flow_project["summary"]["members"]["a"]
    check_plain_json(record_path.read_bytes(), str(record_path))  # replaced by a JSON record


def test_boosting_runs_as_a_chain_and_the_night_goes_on_without_a_failed_member(
    tmp_path: Path, prefect_server
) -> None:
    """AdaGAN rounds in the flow: each member's task starts after the one before finished,
    and the later members train on their round's data weights. With train.min_members: 2 of
    3, the flow goes on without the member that failed (the last round), and the metrics, the
    report and the batch name it. One flow for both: a full flow per driver path."""
    import anyio

    from ensgan.orchestration.flow import run

    members = {
        "a": {"arch": "dcgan", "seed": 1, "width": 8},
        "b": {"arch": "upsample", "seed": 2, "width": 4},
        "c": {"arch": "mlp", "seed": 3, "width": 8},
    }
    root = write_tiny_project(
        tmp_path / "p",
        members=members,
        train={"ensemble": "boosting", "boosting_epochs": 1, "min_members": 2},
        generate={"method": "weighted"},
    )
    (root / "models" / "members").mkdir(parents=True)
    (root / "models" / "members" / "c").write_text("a file where member c's folder goes")
    summary = run(params_path="params.yaml", root=str(root))
    assert set(summary["members"]) == {"a", "b"} and list(summary["left_out"]) == ["c"]
    assert summary["batch"]["run_id"].startswith("weighted-")
    assert (root / "models" / "members" / "b" / "boost_weights.npz").exists()
    assert summary["dvc"]["recorded"] is False and not (root / "dvc.lock").exists()
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"}
    assert "Error" in metrics["left_out"]["c"] and "models/members/c" in metrics["left_out"]["c"]
    assert "left out of this run" in (root / "reports" / "index.html").read_text()
    meta = json.loads((Path(summary["batch"]["path"]) / "batch.json").read_text())
    assert list(meta["left_out"]) == ["c"] and summary["published"]["status"] == "published"

    runs = anyio.run(_flow_runs)
    latest = max(runs, key=lambda r: r.start_time)

    async def _train_runs() -> list:
        async with get_client() as client:
            flow_filter = FlowRunFilter(id={"any_": [latest.id]})
            return await client.read_task_runs(flow_run_filter=flow_filter)

    by_name = {r.name: r for r in anyio.run(_train_runs)}
    a, b, c = by_name["train-a"], by_name["train-b"], by_name["train-c"]
    assert a.end_time <= b.start_time and b.end_time <= c.start_time  # a chain, not a pool


def test_a_shared_run_is_one_task_and_every_head_a_member(tmp_path: Path, prefect_server) -> None:
    """train.ensemble: shared in the flow: one training task for the MGAN heads, each head then
    stacked, evaluated and published from as a member; a rerun finds the run finished."""
    import anyio

    from ensgan.orchestration.flow import run

    members = {"a": {"arch": "dcgan", "seed": 1, "width": 8}, "b": {"arch": "dcgan", "seed": 2,
                                                                      "width": 8}}  # fmt: skip
    root = write_tiny_project(
        tmp_path / "p", members=members, train={"ensemble": "shared"},
        generate={"method": "drs"},
    )  # fmt: skip
    summary = run(params_path="params.yaml", root=str(root))
    assert set(summary["members"]) == {"a", "b"} and summary["left_out"] == {}
    assert summary["published"]["status"] == "published"
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"} and "error" not in metrics["ensemble"]["drs"]
    assert metrics["members"]["a"]["fd"] != metrics["members"]["b"]["fd"]  # two heads
    assert (root / "models" / "members" / ".shared" / "checkpoint" / "state.json").exists()

    async def _task_names(flow_run_id) -> list[str]:
        async with get_client() as client:
            flow_filter = FlowRunFilter(id={"any_": [flow_run_id]})
            return [r.name for r in await client.read_task_runs(flow_run_filter=flow_filter)]

    latest = max(anyio.run(_flow_runs), key=lambda r: r.start_time)
    names = anyio.run(_task_names, latest.id)
    trained = [n for n in names if n.startswith("train-")]
    assert len(trained) == 1 and trained[0].startswith("train-shared")
    again = run(params_path="params.yaml", root=str(root))
    assert "train" in again["up_to_date"] and again["members"] == summary["members"]


def test_clustered_members_are_tasks_on_their_clusters(tmp_path: Path, prefect_server) -> None:
    """train.ensemble: clustered in the flow: the clusters computed once, then one task per
    member as bagging has, each card naming its cluster and the mixture weighing by its size;
    a rerun finds every member finished."""
    import anyio

    from ensgan.orchestration.flow import run

    root = write_tiny_project(tmp_path / "p", train={"ensemble": "clustered"})
    summary = run(params_path="params.yaml", root=str(root))
    assert set(summary["members"]) == {"a", "b"} and summary["left_out"] == {}
    cards = {n: json.loads((root / f"models/members/{n}/card.json").read_text()) for n in "ab"}
    sizes = cards["a"]["cluster"]["sizes"]
    assert [cards[n]["cluster"]["index"] for n in "ab"] == [0, 1] and sum(sizes) == (
        cards["a"]["n_train"]
    )
    stacker = json.loads((root / "models" / "stacker" / "card.json").read_text())
    assert stacker["mixture_weights"] == pytest.approx({"a": sizes[0] / sum(sizes),
                                                        "b": sizes[1] / sum(sizes)})  # fmt: skip
    mixture = json.loads((root / "reports" / "metrics.json").read_text())["mixture"]
    assert mixture["clusters"]["b"] == {"index": 1, "size": sizes[1]}
    report = (root / "reports" / "index.html").read_text()
    assert f"cluster 1: {sizes[1]} images" in report  # the report says who saw what
    latest = max(anyio.run(_flow_runs), key=lambda r: r.start_time)

    async def _task_names() -> list[str]:
        async with get_client() as client:
            flow_filter = FlowRunFilter(id={"any_": [latest.id]})
            return [r.name for r in await client.read_task_runs(flow_run_filter=flow_filter)]

    assert {"train-a", "train-b"} <= set(anyio.run(_task_names))
    again = run(params_path="params.yaml", root=str(root))
    assert "train" in again["up_to_date"] and again["members"] == summary["members"]


def test_the_night_leaves_a_summary_a_metrics_table_and_links_in_prefect(
    flow_project: dict,
) -> None:
    """Prefect's own artifact kinds, on the real server: the summary as markdown (the lines
    `ensgan run` prints), the key figures as a table artifact, links to the batch and report."""
    import anyio
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from ensgan.orchestration.artifacts import KEYS
    from ensgan.orchestration.summary import night_summary

    s = flow_project["summary"]

    async def artifacts() -> dict:
        async with get_client() as client:
            only = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[s["flow_run_id"]]))
            return {a.key: a for a in await client.read_artifacts(artifact_filter=only)}

    found = anyio.run(artifacts)
    assert set(found) == set(KEYS.values())
    summary = found[KEYS["summary"]]
    assert summary.type == "markdown" and "```" not in summary.data
    assert f"- **gate**: {night_summary(s)[1].partition(':')[2].strip()}" in summary.data
    table = found[KEYS["metrics"]]
    assert table.type == "table"
    rows = json.loads(table.data)
    models = [*s["metrics"]["members"], *s["metrics"]["ensemble"], "real"]
    assert [r["model"] for r in rows] == models
    assert {"fd", "kid", "recall", "coverage", "n_images"} <= set(rows[0])
    assert "density" not in rows[0]  # the key figures: the rest are in the report
    batch, report = found[KEYS["batch"]], found[KEYS["report"]]
    batch_uri = Path(s["published"]["url"]).resolve().as_uri()  # a local store here
    assert batch.data == f"[batch {s['batch']['run_id']}]({batch_uri})"  # Prefect's link
    assert report.data == f"[report]({Path(s['report']).as_uri()})"


def test_a_batch_link_opens_where_the_batch_is() -> None:
    from ensgan.orchestration.artifacts import batch_link

    s3 = {"url": "s3://nightly/ens gan/batches/2026-12-06/r1/"}
    assert batch_link(s3, "http://127.0.0.1:8333/") == (
        "http://127.0.0.1:8333/nightly/ens%20gan/batches/2026-12-06/r1/"
    )
    assert batch_link(s3, None) == s3["url"]
    assert batch_link({"url": "/srv/store/batches/r1/"}, None) == "file:///srv/store/batches/r1"
