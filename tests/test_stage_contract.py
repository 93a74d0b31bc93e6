"""The stage contract: one module per stage, dvc.yaml lists every file of ensgan each stage can
run, data flows one way through the package, and the CLI starts without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ensgan.pipeline import STAGES
from ensgan.provenance import closure, closure_files, imports, module_path, runs_code
from tests.helpers import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _stage(name: str) -> dict:
    stage = DVC[name]
    return stage.get("do", stage)  # `foreach` stages keep theirs under `do`


def test_every_stage_is_one_module_and_one_dvc_stage() -> None:
    modules = {p.stem for p in (REPO / "ensgan" / "pipeline").glob("*.py")}
    assert set(STAGES) <= modules
    assert set(DVC) == set(STAGES)
    for name in STAGES:
        assert _stage(name)["cmd"].split()[:2] == ["ensgan", name]
        tree = ast.parse((REPO / "ensgan" / "pipeline" / f"{name}.py").read_text())
        assert "run" in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name


@pytest.mark.parametrize("name", STAGES)
def test_dvc_lists_every_code_dep_of_the_stage(name: str) -> None:
    """A stage whose code changed must rerun: the command that runs it (ensgan/cli.py) and
    every ensgan file its module can reach through imports (lazy ones and registry look-ups
    included) are deps, and no other file is."""
    files = closure_files(f"ensgan.pipeline.{name}", REPO)
    needed = {p.as_posix() for p in files if runs_code(REPO / p)} | {"ensgan/cli.py"}
    listed = {d for d in _stage(name)["deps"] if d.startswith("ensgan/")}
    assert not needed - listed, f"dvc.yaml stage {name} is missing code deps"
    assert not listed - needed, f"dvc.yaml stage {name} lists code it does not import"


@pytest.mark.parametrize("name", STAGES)
def test_dvc_lists_exactly_the_params_the_stage_reads(name: str) -> None:
    """Changing a knob reruns only the stages that read it: dvc.yaml's params of each stage
    are the stage's keys in STAGE_PARAMS, which the stage's freshness check hashes too."""
    from ensgan.pipeline.common import STAGE_PARAMS

    assert list(_stage(name).get("params", [])) == list(STAGE_PARAMS[name])


def test_the_walker_sees_lazy_and_registry_imports() -> None:
    """The walker must not miss what a stage imports inside a function or resolves by name."""
    assert "ensgan.io.s3" in closure("ensgan.pipeline.publish", REPO)  # inside open_store
    combinations = closure("ensgan.ensemble.combinations", REPO)
    assert "ensgan.ensemble.combinations" in combinations  # COMBINATIONS.load(method)
    cli = closure("ensgan.cli", REPO)  # import_module(f"ensgan.pipeline.{stage}")
    assert {f"ensgan.pipeline.{s}" for s in STAGES} <= cli
    assert module_path(REPO, "ensgan.no_such_module") is None


def test_the_walker_resolves_every_way_of_importing(tmp_path: Path) -> None:
    """On a scratch package: relative imports, aliases, lazy and dynamic imports, registries
    written with keywords; and an import it cannot resolve is an error, not a silent gap."""
    pkg = tmp_path / "ensgan"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": '"""docstring only"""',
        "registry.py": "R = Registry('kind', entries={'x': 'ensgan.sub.impl:X'})",
        "sub/__init__.py": "",
        "sub/impl.py": "X = 1",
        "sub/rel.py": "from . import impl\nfrom ..registry import R\n",
        "sub/lazy.py": "def f():\n    import ensgan.sub.impl as i\n    return R.load('x')",
        "sub/const.py": "import importlib\nimportlib.import_module('ensgan.sub.impl')",
        "sub/bad.py": "from importlib import import_module\nimport_module(f'{x}.y')",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    assert closure("ensgan.sub.rel", tmp_path) >= {"ensgan.sub.impl", "ensgan.registry"}
    assert "ensgan.sub.impl" in closure("ensgan.sub.lazy", tmp_path)
    assert "ensgan.sub.impl" in closure("ensgan.sub.const", tmp_path)
    with pytest.raises(ValueError, match="cannot tell what this imports"):
        closure("ensgan.sub.bad", tmp_path)
    assert not runs_code(pkg / "__init__.py") and runs_code(pkg / "sub" / "impl.py")


def _files(module: str) -> set[str]:
    return {p.as_posix() for p in closure_files(module, REPO)}


def test_data_flows_one_way() -> None:
    """Concepts never import the drivers, and sampling never imports training."""
    drivers = ("ensgan/pipeline/", "ensgan/orchestration/", "ensgan/cli.py")
    for sub in ("data", "gan", "ensemble", "eval", "io"):
        for path in (REPO / "ensgan" / sub).glob("*.py"):
            module = f"ensgan.{sub}.{path.stem}".removesuffix(".__init__")
            bad = [f for f in _files(module) if f.startswith(drivers)]
            assert not bad, f"{module} imports drivers: {bad}"
    training = {"ensgan/gan/member.py", "ensgan/gan/loop.py", "ensgan/gan/losses.py"}
    for module in ("ensgan.ensemble.combinations", "ensgan.gan.loaded", "ensgan.pipeline.generate"):
        assert not _files(module) & training, module


def test_no_module_imports_itself_back() -> None:
    """No import cycle anywhere in the package, lazy imports inside functions included: a
    cycle means two modules that are one (the bench's rows and methods were), or a helper in
    the wrong place (the storage key checks, once in the module that imports S3's store)."""
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO / "ensgan").rglob("*.py")
    }
    graph = {m: imports(REPO, m) - {m} for m in modules}
    for start in modules:  # every module's reach, one depth-first walk each
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                raise AssertionError(f"{start} imports itself back (an import cycle)")
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())


def test_cli_imports_no_heavy_library() -> None:
    code = (
        "import sys, ensgan.cli; "
        "print(sorted(m for m in ('torch', 'sklearn', 'prefect', 'boto3', 'numpy') "
        "if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_flows_is_an_entrypoint_not_an_installed_package(tmp_path: Path) -> None:
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(f"{REPO / 'flows' / 'nightly.py'}:nightly")
    assert flow.name == "nightly"
    code = "import importlib.util; print(importlib.util.find_spec('flows'))"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == "None"


def test_code_versions_leave_out_only_modules_that_exist() -> None:
    """A member's fingerprint and a batch's id hash their code's whole import closure except a
    named few; a name there that is not in the closure is a typo that would hash too much."""
    from ensgan.gan.member import NOT_WEIGHTS_CODE
    from ensgan.pipeline.generate import NOT_IMAGES_CODE

    training = closure("ensgan.gan.member", REPO)
    assert training > NOT_WEIGHTS_CODE
    hashed = training - NOT_WEIGHTS_CODE
    assert {"ensgan.gan.loop", "ensgan.gan.losses", "ensgan.gan.models"} <= hashed
    assert {"ensgan.gan.samplers", "ensgan.gan.checkpoint"} <= hashed
    sampling = closure("ensgan.pipeline.generate", REPO)
    assert sampling > NOT_IMAGES_CODE
    hashed = sampling - NOT_IMAGES_CODE
    assert {"ensgan.ensemble.combinations", "ensgan.io.batches", "ensgan.config"} <= hashed
    assert {"ensgan.pipeline.common", "ensgan.gan.loaded", "ensgan.registry"} <= hashed


def test_no_function_of_the_package_is_over_80_lines() -> None:
    """Functions that fit on a screen: a longer one is split into named steps."""
    long = []
    for path in sorted((REPO / "ensgan").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, long
