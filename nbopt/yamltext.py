"""Read recipe YAML the way a notebook user means it.

PyYAML follows YAML 1.1, where ``1e-3`` is a string; users mean a number. We also keep the line of
every key so that errors can point at it, and refuse keys given twice instead of keeping the last.
"""
from __future__ import annotations

import re

import yaml

from nbopt.errors import RecipeError


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``3E5`` as floats."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> tuple[dict, dict[str, int]]:
    """Parse recipe text into a mapping and a ``{dotted.key: line}`` index (1-based lines)."""
    try:
        node = yaml.compose(text, Loader=_RecipeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"the recipe is not valid YAML: {problem}", key="recipe", line=line) from None
    if node is None:
        raise RecipeError("the recipe is empty; it needs at least `model:` and `data:`")
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(
            "the recipe must be a YAML mapping of `key: value` lines, e.g. `model: mlp`",
            key="recipe", line=node.start_mark.line + 1,
        )
    lines: dict[str, int] = {}
    _index_lines(node, "", lines)
    data = yaml.load(text, Loader=_RecipeLoader)
    return data, lines


def _index_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            if key in seen:
                raise RecipeError("this key is given twice; keep one", key=key, line=key_node.start_mark.line + 1)
            seen.add(key)
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key + ".", lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}{i}"] = item.start_mark.line + 1
            _index_lines(item, f"{prefix}{i}.", lines)


def dump_yaml(data: dict) -> str:
    """Recipe mapping back to YAML text, in the order the keys were given."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
