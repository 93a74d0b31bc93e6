"""The package's own import graph, read from the source (nothing is imported): which files of
`ensgan` a module can execute. The stage contract test compares it with dvc.yaml's deps."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "ensgan"


def module_path(root: Path, module: str) -> Path | None:
    """The file of `module` under `root` (the directory that holds the package), if any."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(root: Path, module: str, path: Path) -> set[str]:
    """Every ensgan module `path` imports, at the top or inside functions (lazy imports), and
    the modules of any registry it resolves a name from (`ARCHS.load(name)`)."""
    found: set[str] = set()
    regs = registries(root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
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
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in regs
        ):
            found.update(regs[node.func.value.id])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "import_module"
            and node.args
            and isinstance(node.args[0], ast.JoinedStr)
        ):  # import_module(f"ensgan.pipeline.{stage}"): every module of that package
            prefix = "".join(v.value for v in node.args[0].values if isinstance(v, ast.Constant))
            pkg_dir = module_path(root, prefix.rstrip("."))
            if pkg_dir is not None:
                found.update(
                    prefix + p.stem for p in pkg_dir.parent.glob("*.py") if p.stem != "__init__"
                )
    return {m for m in found if m.split(".")[0] == PACKAGE and module_path(root, m)}


def _parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(root: Path, module: str) -> set[Path]:
    """Files (relative to `root`) of every ensgan module `module` can reach through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        path = module_path(root, m)
        assert path is not None, m
        todo.extend(_imports(root, m, path) | set(_parents(m)))
    return {module_path(root, m).relative_to(root) for m in seen}


def registries(root: Path) -> dict[str, set[str]]:
    """Each registry in ensgan/registry.py (`NAME = Registry(kind, {name: "module:attr"})`),
    with the modules its entries live in."""
    tree = ast.parse((root / PACKAGE / "registry.py").read_text())
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", None) == "Registry"
        ):
            entries = node.value.args[1]
            assert isinstance(entries, ast.Dict), ast.dump(entries)
            modules = {v.value.partition(":")[0] for v in entries.values}  # type: ignore[union-attr]
            found[node.targets[0].id] = modules  # type: ignore[union-attr]
    return found
