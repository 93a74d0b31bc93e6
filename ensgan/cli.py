"""The `ensgan` command: one sub-command per stage (what dvc.yaml calls), the flow, and batches.

Every command validates params.yaml before any work, and turns the errors a user can cause
(bad params, unreadable data, storage problems) into one clear line and exit status 2.
torch, scikit-learn and Prefect are imported only inside the commands that need them, so
`ensgan --help`, `ensgan validate` and `ensgan batches ls` start at once.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ensgan.errors import ConfigError, StopRequested, is_user_error, user_message
from ensgan.layout import Layout
from ensgan.terminal import printable

if TYPE_CHECKING:
    from ensgan.config import Params
    from ensgan.io.records import BatchRecord
    from ensgan.io.storage import Store

app = typer.Typer(no_args_is_help=True, help=__doc__.splitlines()[0], add_completion=False)
batches_app = typer.Typer(no_args_is_help=True, help="List and download published batches.")
app.add_typer(batches_app, name="batches")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to use")]
_VERBOSE = {"on": False}  # ensgan -v: the libraries' INFO logs too


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also the libraries' INFO logs (botocore...)")
    ] = False,
) -> None:
    """Train, combine, evaluate and publish an ensemble of GANs."""
    _VERBOSE["on"] = verbose


def _load(params: Path) -> tuple[Params, Layout]:
    from ensgan.config import load_params

    return load_params(params), Layout(Path("."))


def _run(fn, *args, **kwargs):
    """Call a stage; a user-caused error becomes one line on stderr and exit status 2, and
    a stop (SIGTERM or SIGINT: ensgan/stopping.py) one line and status 143 or 130, as the
    signal gives."""
    from ensgan import stopping

    # ensgan's own INFO lines; the libraries' (botocore's "Found credentials ...") with -v only
    level = logging.INFO if _VERBOSE["on"] else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ensgan").setLevel(logging.INFO)
    try:
        with stopping.on_stop_signals():
            return fn(*args, **kwargs)
    except StopRequested as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(stopping.exit_status()) from None
    except KeyboardInterrupt:  # Ctrl-C before the handler was set, or from a library's own
        typer.echo("error: interrupted (SIGINT)", err=True)
        raise typer.Exit(128 + signal.SIGINT) from None
    except Exception as exc:
        if not is_user_error(exc):
            raise
        message = user_message(exc)  # may quote a store: escaped, but for the line breaks
        lines = message.split("\n") if isinstance(exc, ConfigError) else [message]  # of ours
        typer.echo("error: " + "\n".join(printable(line) for line in lines), err=True)
        raise typer.Exit(2) from None
    except BaseException as exc:  # in a flow, Prefect's SIGTERM handler raises its own
        if (name := stopping.carried_signal(exc)) is None:
            raise
        stopping.request(name)
        typer.echo(f"error: {stopping.stopped('stopped')}", err=True)
        raise typer.Exit(stopping.exit_status()) from None


JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON, for machines")]


def _echo(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _report(stage: str, result: dict, as_json: bool) -> None:
    """A stage's outcome: a line or two (ensgan/outcome.py), or with --json the whole result."""
    from ensgan.outcome import outcome

    if as_json:
        _echo(result)
    else:
        typer.echo("\n".join(printable(line) for line in outcome(stage, result).splitlines()))


def _stage(stage: str, params: Path, *args):
    """Validate params, hold the project lock, run one stage (ensgan/pipeline/STAGE.py)."""

    def call():
        from importlib import import_module

        from ensgan.io.files import project_lock, recover_outputs

        p, layout = _load(params)
        module = import_module(f"ensgan.pipeline.{stage}")
        with project_lock(layout.root):
            for line in recover_outputs(layout.root):  # a step a crash interrupted
                logging.getLogger("ensgan").warning(line)
            return module.run(p, layout, *args)

    return _run(call)


@app.command()
def validate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check params.yaml (and that prefect.yaml beside it runs on its schedule), print the
    resolved configuration, and say where the members would train on this machine."""
    from ensgan.gan.placement import check_runner, explain
    from ensgan.orchestration.deployment import check_prefect_yaml
    from ensgan.orchestration.versioning import check_dvc_params

    p, layout = _run(_load, params)
    _run(check_runner, p.train)
    _run(check_prefect_yaml, params.parent / "prefect.yaml", p.schedule)
    _run(check_dvc_params, Path("."), str(params))
    placement = _run(explain, p, layout)
    typer.echo(p.model_dump_json(indent=2))
    typer.echo("\n".join(placement), err=True)  # stdout stays the JSON


@app.command("prepare")
def prepare_cmd(params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """Read the configured dataset into data/prepared/."""
    _report("prepare", _stage("prepare", params), as_json)


@app.command("train")
def train_cmd(
    member: Annotated[str | None, typer.Argument(help="one member; all when left out")] = None,
    params: ParamsOpt = Path("params.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Train (or resume) the members into models/members/ (bagging: several at once;
    boosting: in order). With MEMBER, that one (boosting: and the members before it)."""
    _report("train", _stage("train", params, member), as_json)


@app.command("stack")
def stack_cmd(params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """Fit the stacking meta-learner over the members' discriminators."""
    _report("stack", _stage("stack", params), as_json)


@app.command("evaluate")
def evaluate_cmd(params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """Evaluate members and combinations: reports/metrics.json, grids, report."""
    from ensgan.eval.report import TERMINAL_COLUMNS, metrics_table

    metrics = _stage("evaluate", params)
    if as_json:
        return _echo(metrics)
    typer.echo(metrics_table(metrics, TERMINAL_COLUMNS))
    report = Layout(Path(".")).reports / "index.html"
    typer.echo(f"(the key figures; every figure: {report}, or reports/metrics.json)")


@app.command("generate")
def generate_cmd(params: ParamsOpt = Path("params.yaml"), as_json: JsonOpt = False) -> None:
    """Generate a batch (shards + manifest) into outputs/batches/RUN_ID/."""
    _report("generate", _stage("generate", params), as_json)


@app.command("publish")
def publish_cmd(
    params: ParamsOpt = Path("params.yaml"),
    run_id: Annotated[str | None, typer.Option(help="batch to publish; default: current")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a generated batch to the store (manifest last)."""
    _report("publish", _stage("publish", params, run_id), as_json)


@app.command("run")
def run_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Run the nightly Prefect flow once, now, and print where the results are."""
    from ensgan.eval.report import TERMINAL_COLUMNS, metrics_table
    from ensgan.orchestration.flow import run
    from ensgan.orchestration.summary import night_summary

    s = _run(lambda: run(params_path=str(params)))
    typer.echo("\n" + "\n".join(night_summary(s)))
    typer.echo(f"batch:     {s['batch']['path']}")
    typer.echo(f"stacker:   CV ROC AUC {s['stacker_cv_roc_auc']:.3f}\n")
    typer.echo(metrics_table(s["metrics"], TERMINAL_COLUMNS))
    typer.echo("(the key figures; every figure: the report, or reports/metrics.json)")


@app.command("serve")
def serve_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Serve the nightly flow on the cron schedule in params.yaml (needs a Prefect server)."""
    from ensgan.orchestration.flow import serve

    _run(lambda: serve(params_path=str(params)))


@app.command("regenerate")
def regenerate_cmd(
    run_id: str,
    image_id: Annotated[int, typer.Argument(help="the image's `id` in the manifest")],
    out: Annotated[Path | None, typer.Option(help="PNG to write; default RUN_ID-ID.png")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Make image ID of batch RUN_ID again from its member and seed, and say whether it is
    byte-identical to the published one (exit status 1 if not)."""

    def call():
        from ensgan.pipeline import regenerate

        p, layout = _load(params)
        return regenerate.run(p, layout, run_id, image_id, out or Path(f"{run_id}-{image_id}.png"))

    r = _run(call)
    same = "byte-identical to" if r["identical"] else f"{r['pixels_differing']} pixels differ from"
    typer.echo(
        f"regenerated {r['run_id']} image {r['id']} (member {r['member']}, seed {r['seed']}) "
        f"-> {r['path']}: {same} the image in the batch"
    )
    if not r["identical"]:
        raise typer.Exit(1)


# Help texts are Rich markup: a literal "[" is written "\\[" (tests/test_cli.py walks every --help).
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="directory or s3://bucket\\[/prefix]; default: params"),
]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint")]


def _store(params: Path, store: str | None, endpoint_url: str | None) -> Store:
    from pydantic import ValidationError

    from ensgan.config import StorageConfig, load_params
    from ensgan.io.storage import open_store

    if store is None:
        cfg = load_params(params).storage
        if endpoint_url:
            cfg = cfg.model_copy(update={"endpoint_url": endpoint_url})
    else:
        try:
            cfg = StorageConfig(url=store, endpoint_url=endpoint_url)
        except ValidationError as err:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"invalid --store/--endpoint-url: {msgs}") from None
    return open_store(cfg, Path("."))


@batches_app.command("ls")
def batches_ls(
    store: StoreOpt = None,
    endpoint_url: EndpointOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """List complete batches in the store (half-uploaded ones are invisible), and for each
    whether it is `latest` (what consumers get) or why the promotion gate held it back."""
    from ensgan.io.batches import list_batches
    from ensgan.io.promotion import read_champion, statuses

    def listing() -> tuple[list, dict[str, str], str | None]:
        opened = _store(params, store, endpoint_url)
        return list_batches(opened), statuses(opened), read_champion(opened)[1]

    rows, status, problem = _run(listing)
    if problem:  # every line below is printed as what the store holds, escaped
        typer.echo(f"warning: no batch is latest: {printable(problem)}", err=True)
    if not rows:
        typer.echo("no batches")
    for b in rows:
        if b.error:
            typer.echo(printable(f"{b.date}  {b.run_id}  {b.error}"), err=True)
        else:
            why = status.get(b.run_id, "")
            line = f"{b.date}  {b.run_id}  {b.n_images} images  {b.prefix}  {why}".rstrip()
            typer.echo(printable(line))


@batches_app.command("promote")
def batches_promote(
    run_id: str,
    store: StoreOpt = None,
    endpoint_url: EndpointOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Make batch RUN_ID `latest` by hand, whatever the promotion gate said of it."""
    from ensgan.io.promotion import promote

    record = _run(lambda: promote(_store(params, store, endpoint_url), run_id))
    typer.echo(f"{record['run_id']} is now latest (promoted by hand; nothing was deleted)")


@batches_app.command("show")
def batches_show(
    run_id: str,
    store: StoreOpt = None,
    endpoint_url: EndpointOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Print where batch RUN_ID (or `latest`) came from (data, params, members, git commit,
    dvc.lock) and the commands that make it again."""
    from ensgan.io.batches import batch_meta
    from ensgan.io.promotion import resolve
    from ensgan.lineage import reproduce_commands

    def show() -> tuple[str, str, BatchRecord]:
        opened = _store(params, store, endpoint_url)
        rid = resolve(opened, run_id)
        return (rid, *batch_meta(opened, rid))

    run_id, prefix, meta = _run(show)
    rec = meta.lineage
    lines = [
        f"batch       {run_id} ({meta.n_images} images, {meta.method}), "
        f"format {meta.format}, created {meta.created}",
        f"key         {prefix}",
        f"data        {meta.data_sha256}",
        f"params      {meta.params_sha256}",
    ]
    if rec is None:
        lines.append("lineage     not recorded (a batch from before ensgan recorded it)")
    else:
        dirty = " (uncommitted changes in the work tree)" if rec.git_dirty else ""
        lines.append(f"git commit  {rec.git_commit or 'not recorded'}{dirty}")
        lines.append(f"dvc.lock    {rec.dvc_lock_sha256 or 'not recorded'}")
        lines += [f"dvc input   {path}  {md5}" for path, md5 in (rec.dvc_inputs or {}).items()]
        lines += [f"member      {n}  weights {w}" for n, w in rec.member_weights_sha256.items()]
    lines += ["", "to make it again, in a clone of the project:"]
    lines += [f"  {c}" for c in reproduce_commands(run_id, rec)]
    typer.echo("\n".join(printable(line) for line in lines))  # store text, escaped


@batches_app.command("pull")
def batches_pull(
    run_id: str,
    dest: Path,
    store: StoreOpt = None,
    endpoint_url: EndpointOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    repair: Annotated[bool, typer.Option("--repair", help="fix an earlier pull in place")] = False,
) -> None:
    """Download batch RUN_ID (`latest`: the champion) into DEST/RUN_ID/ and verify every
    checksum, and the manifest against the sha256 the gate's records pin (--repair: download
    again only what an earlier pull left missing or damaged)."""
    from ensgan.io.batches import pull_batch, repair_batch
    from ensgan.io.promotion import pinned, resolve

    def pull() -> tuple[str, Path | list[str]]:
        opened = _store(params, store, endpoint_url)
        rid = resolve(opened, run_id)
        pin = pinned(opened, rid)  # the manifest the gate judged: a replaced batch is refused
        return rid, (repair_batch if repair else pull_batch)(opened, rid, dest, pinned=pin)

    run_id, done = _run(pull)
    if repair:
        what = ", ".join(done) if done else "nothing (it was intact)"
        typer.echo(f"repaired {dest / run_id}: downloaded {what}; checksums verified")
        return
    typer.echo(f"pulled {run_id} into {done} (checksums verified)")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (not part of the pipeline).")
app.add_typer(bench_app, name="bench")


@bench_app.command("modes")
def bench_modes(
    dataset: Annotated[
        str, typer.Option(help="ring, grid, stacked-digits, stacked-mnist or all")
    ] = "all",
    trials: Annotated[int, typer.Option(help="trials per dataset (at least 1)")] = 5,
    full: Annotated[bool, typer.Option("--full", help="the paper's training length")] = False,
    out: Annotated[Path, typer.Option(help="output folder DIR")] = Path("bench-out/modes"),
    force: Annotated[
        bool, typer.Option("--force", help="replace DIR when it holds an earlier bench run")
    ] = False,
    members: Annotated[int, typer.Option(help="ensemble size K")] = 5,
    method: Annotated[
        list[str] | None, typer.Option(help="a row to run (repeat it); default: every row")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="generator updates per row and trial (overrides --full)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds every trial's data and networks")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")] = "auto",
    params: Annotated[
        Path | None,
        typer.Option(
            help="a params.yaml whose train, stack and combine sections the rows run under"
        ),
    ] = None,
    batched: Annotated[
        bool | None,
        typer.Option(
            "--batched/--no-batched",
            help="train the 2-D datasets' GANs of every trial as one stacked model"
            " (default: on CUDA)",
        ),
    ] = None,
) -> None:
    """Mode collapse of a GAN and of GAN ensembles under PacGAN's protocol (Table 1).

    Every row (method) of every dataset is trained for the same number of generator updates
    per trial, scored (modes covered, % high quality, reverse KL) and aggregated to mean ±
    standard error beside PacGAN's published rows. Writes DIR/table.md, DIR/results.csv,
    DIR/bench.json and DIR/DATASET/METHOD/trial-K.npy. A non-empty DIR is refused unless
    --force is given and DIR holds an earlier run (its bench.json), which is then replaced
    whole once the new run has finished. --method picks rows; --full takes the paper's length
    (meant for a GPU; docs/results.md has the measured run times). The ensemble rows run the
    pipeline's own combinations, stacker and boosting, under the pipeline's default params or
    the train, stack and combine sections of --params (e.g. params.yaml: the DRS it ships).
    """

    def call():
        import torch

        from ensgan.bench import modes
        from ensgan.gan.device import resolve_device

        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda, but no CUDA device is available")
        dev = resolve_device(device)
        settings = modes.resolve(
            dataset, trials, full=full, steps=steps, k=members, methods=method, seed=seed,
            device=str(dev), params_file=params, batched=batched,
        )  # fmt: skip
        modes.check_out(out, force)
        if dev.type == "cpu":
            torch.set_num_threads(1)  # these small nets gain nothing from more (docs/results.md)
        return modes.run(settings, out, force=force, log=lambda m: typer.echo(m, err=True))

    _run(call)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/table.md, results.csv and the samples")
