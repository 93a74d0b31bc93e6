"""Which code an output depends on: the package's import graph, read from the source.

`closure(module)` is every file of ensgan that `module` can run through its imports: at the
top, inside functions (lazy imports), through `import_module(f"ensgan.pkg.{name}")`, and
through registry look-ups (`ARCHS.load(name)` reaches every module the registry names). dvc.yaml
lists each stage's closure as its code deps (tests/test_stage_contract.py checks it), and
`code_version` hashes a closure for a member's fingerprint and a batch's id, so an edit to
code an output depends on makes a new output instead of reusing the old one. Nothing is
imported: files are parsed, so this costs milliseconds and no torch. Not seen: a registry
reached under another name (`from ensgan.registry import ARCHS as A`); dynamic imports it
cannot resolve are an error rather than a silent gap.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from importlib.util import find_spec
from pathlib import Path

PACKAGE = "ensgan"


def package_root() -> Path:
    """The directory holding the `ensgan` package in use (an installed one, or a checkout)."""
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(PACKAGE)
    return Path(next(iter(spec.submodule_search_locations))).parent


def module_path(root: Path, module: str) -> Path | None:
    """The file of `module` under `root`, if there is one."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _registries(root: Path) -> dict[str, frozenset[str]]:
    """Each `NAME = Registry(kind, {name: "module:attr"})` in ensgan/registry.py, with the
    modules its entries live in."""
    tree = ast.parse((root / PACKAGE / "registry.py").read_text())
    found: dict[str, frozenset[str]] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "Registry"
            and isinstance(node.targets[0], ast.Name)
        ):
            call = node.value
            entries = call.args[1] if len(call.args) > 1 else None
            entries = entries or next((k.value for k in call.keywords if k.arg == "entries"), None)
            if not isinstance(entries, ast.Dict):
                raise ValueError(f"registry {node.targets[0].id}: entries must be a dict literal")
            values = entries.values
            modules = {v.value.partition(":")[0] for v in values if isinstance(v, ast.Constant)}
            found[node.targets[0].id] = frozenset(modules)
    return found


def imports(root: Path, module: str) -> set[str]:
    """The ensgan modules `module` can import directly (see the module docstring)."""
    path = module_path(root, module)
    if path is None:
        raise ModuleNotFoundError(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    registries = _registries(root)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the current package upwards
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "load"
                and isinstance(func.value, ast.Name)
                and func.value.id in registries
            ):
                found.update(registries[func.value.id])
            elif _name(func) in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):  # f"ensgan.pipeline.{stage}": any of them
                    head = arg.values[0] if arg.values else None
                    prefix = head.value if isinstance(head, ast.Constant) else ""
                    pkg = module_path(root, str(prefix).rstrip("."))
                    if not prefix or pkg is None or pkg.name != "__init__.py":
                        raise ValueError(f"{path}:{node.lineno}: cannot tell what this imports")
                    found.update(f"{prefix}{p.stem}" for p in pkg.parent.glob("*.py"))
    return {m.removesuffix(".__init__") for m in found if _ours(root, m)}


def _name(func: ast.expr) -> str | None:
    """`f` for f(...) and for x.f(...)."""
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def runs_code(path: Path) -> bool:
    """False for a package __init__ that imports nothing (a docstring, constants): editing it
    changes no behaviour, so it is neither a dvc dep nor part of a code version."""
    if path.name != "__init__.py":
        return True
    return any(
        isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(ast.parse(path.read_text()))
    )


def _ours(root: Path, module: str) -> bool:
    return module.split(".")[0] == PACKAGE and module_path(root, module) is not None


def closure(module: str, root: Path | None = None) -> set[str]:
    """Every ensgan module `module` can reach through imports, itself and parent packages
    (importing a.b.c runs a/__init__.py and a/b/__init__.py first) included."""
    root = root or package_root()
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += imports(root, m)
    return seen


def closure_files(module: str, root: Path | None = None) -> set[Path]:
    """closure(module) as files relative to the package root, e.g. ensgan/gan/loop.py."""
    root = root or package_root()
    return {module_path(root, m).relative_to(root) for m in closure(module, root)}  # type: ignore[union-attr]


def code_version(module: str, exclude: frozenset[str] = frozenset()) -> str:
    """sha256 (16 hex) of the source of every module in closure(module) but `exclude`."""
    root = package_root()
    h = hashlib.sha256()
    for m in sorted(closure(module, root) - exclude):
        path = module_path(root, m)
        if path is not None and runs_code(path):
            h.update(m.encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()[:16]
