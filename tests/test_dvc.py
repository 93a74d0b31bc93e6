"""`dvc repro` in a real git+DVC repository: stages run, cache, skip, and take experiments."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, STAGES, sh, write_tiny_project

pytestmark = pytest.mark.e2e  # real services: Prefect, DVC, S3 servers

# The DVC project trains by boosting, with a GMAN member, and publishes tempered DRS samples by
# a stacker on the discriminators' hidden layers (the flow's project bags, with another GMAN
# member, a logits stacker, and publishes MH samples): every method runs under both.
TINY_DVC = {
    "members": {
        "a": {"arch": "dcgan", "seed": 1, "width": 8},
        "b": {"arch": "upsample", "seed": 2, "width": 4, "discriminators": 2, "gman": "learned"},
    },
    "stack": {"features": "hidden", "model": "logistic_pca", "n_fake": 60},
    "train": {"ensemble": "boosting", "boosting_epochs": 1},
    "combine": {"drs_temperature": 0.5, "mh_chain": 8},
    "generate": {"method": "drs"},
}  # fmt: skip


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (dvc.yaml, the code its stages depend on) with tiny params."""
    repo = write_tiny_project(tmp_path_factory.mktemp("dvc") / "proj", **TINY_DVC)
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    shutil.copytree(REPO / "ensgan", repo / "ensgan", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro")
    return repo


def test_repro_runs_every_stage(dvc_repo: Path) -> None:
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    metrics = json.loads((dvc_repo / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"}
    assert metrics["ensemble"]["drs"]["accept_rate"] < 1
    stacker = json.loads((dvc_repo / "models/stacker/card.json").read_text())
    assert stacker["model"] == "logistic_pca" and stacker["settings"]["features"] == "hidden"
    assert stacker["n_fake"] == 60 and 0 <= stacker["cv_roc_auc"] <= 1
    b = json.loads((dvc_repo / "models/members/b/card.json").read_text())
    assert b["loss"] == "non_saturating+gman-learned" and b["discriminators"] == 2
    assert (dvc_repo / "models/members/b/boost_weights.npz").exists()  # its AdaGAN round
    batch = json.loads((dvc_repo / "outputs" / "generated.json").read_text())["run_id"]
    assert batch.startswith("drs-")
    published = json.loads((dvc_repo / "outputs" / "published.json").read_text())
    assert published["status"] == "published"
    assert (dvc_repo / "store" / published["prefix"] / "manifest.jsonl").exists()


def test_second_repro_does_nothing(dvc_repo: Path) -> None:
    out = sh(dvc_repo, "dvc", "repro")
    assert "Running stage" not in out
    assert "up to date" in sh(dvc_repo, "dvc", "status")


def _outputs(repo: Path) -> dict[str, str]:
    """Every file the stages wrote, by path, with its sha256."""
    import hashlib

    return {
        p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for top in ("data", "models", "reports", "outputs", "store")
        for p in sorted((repo / top).rglob("*"))
        if p.is_file()
    }


def test_a_refused_repro_leaves_every_output(dvc_repo: Path) -> None:
    """While another run holds the project lock, a forced `dvc repro` of any stage is refused
    by ensgan, and DVC has deleted nothing: every out is `persist: true`."""
    from ensgan.io.files import project_lock

    before = _outputs(dvc_repo)
    assert any(k.startswith("models/stacker/") for k in before)
    with project_lock(dvc_repo):
        for stage in STAGES:
            out = sh(dvc_repo, "dvc", "repro", "-f", "-s", stage, check=False)
            assert "another ensgan run" in out, out
            assert _outputs(dvc_repo) == before, f"dvc repro -f -s {stage} changed the outputs"
    assert "up to date" in sh(dvc_repo, "dvc", "status")


def _key_rows(metrics: dict) -> dict[str, dict]:
    """metrics.json's rows by their file under reports/key/, less the extension."""
    rows = {f"member/{n}": r for n, r in metrics["members"].items()}
    rows |= {f"ensemble/{n}": r for n, r in metrics["ensemble"].items() if "error" not in r}
    return rows | {"real": metrics["real"]}


def test_metrics_and_plots_show(dvc_repo: Path, tmp_path: Path) -> None:
    """DVC's metrics are the key figures, a file per model: `dvc metrics show` prints a row per
    model in a terminal's width (metrics.json, every figure, stays beside them)."""
    from ensgan.eval.report import TERMINAL_COLUMNS
    from ensgan.pipeline.evaluate import SIGNIFICANT

    rows = _key_rows(json.loads((dvc_repo / "reports" / "metrics.json").read_text()))
    key = dvc_repo / "reports" / "key"
    files = {
        p.relative_to(key).with_suffix("").as_posix(): json.loads(p.read_text())
        for p in key.rglob("*.json")
    }
    assert files.keys() == rows.keys()
    for name, row in rows.items():
        assert list(files[name]) == list(TERMINAL_COLUMNS), name
        assert files[name] == pytest.approx(
            {c: row[c] for c in TERMINAL_COLUMNS}, rel=10 ** (1 - SIGNIFICANT)
        )
    shown = json.loads(sh(dvc_repo, "dvc", "metrics", "show", "--json"))
    data = next(iter(shown.values()))["data"]
    assert set(data) == {f"reports/key/{k}.json" for k in rows}  # not metrics.json
    assert data["reports/key/member/a.json"]["data"]["fd"] > 0
    table = sh(dvc_repo, "dvc", "metrics", "show").splitlines()
    assert len(table) == 1 + len(rows) and table[0].split()[0] == "Path"
    assert max(map(len, table)) <= 120, "\n".join(table)  # a wide terminal's width
    sh(dvc_repo, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "g_loss" in html and "reports/plots/fd.csv" in html
    assert "kid_std" in html  # dvc.yaml's KID plot, with its standard deviation


def test_changing_the_published_method_reruns_only_generate_and_publish(dvc_repo: Path) -> None:
    """generate.method is read by generate alone: stack and evaluate stay as they are, and the
    gate judges the new batch by the evaluation already made of the same models."""
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["generate"]["method"] = "mixture"
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(sh(dvc_repo, "dvc", "status", "--json"))) == {"generate"}
    out = sh(dvc_repo, "dvc", "repro")
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"generate", "publish"}, out
    published = json.loads((dvc_repo / "outputs" / "published.json").read_text())
    assert published["run_id"].startswith("mixture-") and published["status"] == "published"
    verdict = json.loads((dvc_repo / "store" / "gate" / f"{published['run_id']}.json").read_text())
    assert verdict["metrics"] is not None and verdict["metrics"]["fd"] > 0  # judged, not skipped
    assert "up to date" in sh(dvc_repo, "dvc", "status")


def test_exp_run_with_a_param_override(dvc_repo: Path) -> None:
    """An experiment continues training; `dvc metrics diff` against the committed baseline
    lists the figures it changed, a line each."""
    sh(dvc_repo, "git", "add", "-A")
    sh(dvc_repo, "git", "commit", "-qm", "baseline")
    assert "reports/key/member/a.json" in sh(dvc_repo, "git", "ls-files", "reports/key")
    before = json.loads((dvc_repo / "models/members/a/card.json").read_text())
    out = sh(dvc_repo, "dvc", "exp", "run", "-S", "train.steps=40")
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    card = json.loads((dvc_repo / "models/members/a/card.json").read_text())
    assert card["steps"] == 40 and card["fingerprint"] == before["fingerprint"]
    rows = (dvc_repo / "models/members/a/losses.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(5, 45, 5))  # continued, not redone
    diff = sh(dvc_repo, "dvc", "params", "diff")
    assert "train.steps" in diff
    diff = sh(dvc_repo, "dvc", "metrics", "diff").splitlines()
    assert diff[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"]
    assert any(line.split()[:2] == ["reports/key/member/a.json", "fd"] for line in diff), diff
    assert max(map(len, diff)) <= 100


def test_removing_a_member_restacks_and_reevaluates(dvc_repo: Path) -> None:
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    del params["members"]["b"]
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(dvc_repo, "dvc", "repro")
    for stage in ("stack", "evaluate", "generate", "publish"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((dvc_repo / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a"}
    stacker = json.loads((dvc_repo / "models" / "stacker" / "card.json").read_text())
    assert stacker["members"] == ["a"]


def test_editing_the_sampling_code_makes_a_new_batch(dvc_repo: Path) -> None:
    """An edit to the code that samples images reruns the stages that import it (not
    training), and the batch it generates gets a new id instead of reusing the old one."""
    before = json.loads((dvc_repo / "outputs" / "generated.json").read_text())["run_id"]
    weights = (dvc_repo / "models/members/a/checkpoint/generator_ema.safetensors").stat()
    with open(dvc_repo / "ensgan" / "ensemble" / "combinations.py", "a") as f:
        f.write("\n# an edit to the sampling code\n")
    out = sh(dvc_repo, "dvc", "repro")
    for stage in ("stack", "evaluate", "generate", "publish"):
        assert f"Running stage '{stage}'" in out
    assert "Running stage 'prepare'" not in out
    # The train stage imports the sampling code (boosting samples the mixture), so it reruns,
    # but no member is retrained: their fingerprints do not hash the sampling code.
    again = (dvc_repo / "models/members/a/checkpoint/generator_ema.safetensors").stat()
    assert again.st_mtime_ns == weights.st_mtime_ns
    after = json.loads((dvc_repo / "outputs" / "generated.json").read_text())["run_id"]
    assert after != before
    assert (dvc_repo / "outputs" / "batches" / before).is_dir()  # the old batch is kept


def test_a_shared_run_under_dvc_repro(tmp_path: Path) -> None:
    """train.ensemble: shared as DVC's train stage: one run trains the MGAN heads, each head a
    member every later stage reads; a second repro finds everything up to date."""
    members = {"a": {"arch": "mlp", "seed": 1, "width": 4}, "b": {"arch": "mlp", "seed": 2,
                                                                   "width": 4}}  # fmt: skip
    repo = write_tiny_project(
        tmp_path / "proj", members=members, train={"ensemble": "shared", "steps": 10},
        evaluate={"n_samples": 60, "n_mh": 20, "classifier_steps": 10},
    )  # fmt: skip
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    shutil.copytree(REPO / "ensgan", repo / "ensgan", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    out = sh(repo, "dvc", "repro")
    assert out.count("Running stage 'train'") == 1 and "Running stage 'publish'" in out
    cards = {n: json.loads((repo / f"models/members/{n}/card.json").read_text()) for n in "ab"}
    assert (
        cards["a"]["bootstrap"] is False and cards["a"]["fingerprint"] != cards["b"]["fingerprint"]
    )
    assert (repo / "models/members/.shared/checkpoint/state.json").exists()
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"}
    assert "Running stage" not in sh(repo, "dvc", "repro")


def test_a_clustered_run_under_dvc_repro(tmp_path: Path) -> None:
    """train.ensemble: clustered as DVC's train stage: the clusters beside the members in the
    stage's output, each member on its own; a second repro finds everything up to date."""
    repo = write_tiny_project(
        tmp_path / "proj", train={"ensemble": "clustered", "steps": 10, "checkpoint_every": 5},
        evaluate={"n_samples": 60, "n_mh": 20, "classifier_steps": 10},
    )  # fmt: skip
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    shutil.copytree(REPO / "ensgan", repo / "ensgan", ignore=shutil.ignore_patterns("__pycache__"))
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    out = sh(repo, "dvc", "repro")
    assert out.count("Running stage 'train'") == 1 and "Running stage 'publish'" in out
    cards = {n: json.loads((repo / f"models/members/{n}/card.json").read_text()) for n in "ab"}
    assert {cards[n]["cluster"]["index"] for n in "ab"} == {0, 1}
    assert cards["a"]["n_unique_images"] == cards["a"]["cluster"]["size"]
    assert (repo / "models/members/.clusters/clusters.npz").exists()
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert set(metrics["members"]) == {"a", "b"}
    assert "Running stage" not in sh(repo, "dvc", "repro")
