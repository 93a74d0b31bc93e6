"""YAML for config files: safe, bounded, and strict about duplicate keys.

PyYAML's safe loader shares an aliased node rather than copying it, so a few lines of nested
aliases (a "billion laughs") read fast but expand to billions of values once validated or
printed; the expanded size is counted here and refused past MAX_NODES. A key written twice
is refused with both lines, as DVC refuses it (PyYAML would silently keep the last one).
Floats such as `2e-4` read as YAML 1.2 (and DVC's ruamel) reads them, not as strings.
"""

from __future__ import annotations

import re

import yaml

from ensgan.errors import short

MAX_NODES = 100_000  # values after expanding every alias; a params.yaml has a few hundred
_MERGE = "tag:yaml.org,2002:merge"


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs, self-referencing aliases and duplicate keys."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicates(node)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *base` then overriding a key is allowed
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the constructor's own error says so
                continue
            if line != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {short(key)} (first on line {line}): keep one of them",
                    key_node.start_mark,
                )


BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _expanded_size(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """Values under `node` with every alias expanded (each node counted once per use)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in open_:
        raise yaml.composer.ComposerError(
            None, None, "an alias refers to a node that contains it", node.start_mark
        )
    open_.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, memo, open_)
        if total > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"expands to more than {MAX_NODES} values (aliases of aliases?)",
                node.start_mark,
            )
    open_.discard(id(node))
    memo[id(node)] = total
    return total


def load_yaml(text: str) -> object:
    """The document in `text`; yaml.YAMLError (see `describe`) when it is refused."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def describe(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.problem}{where}"
    return short(str(exc), 200)
