"""Read recipe YAML the way a notebook user means it.

PyYAML follows YAML 1.1, where ``1e-3`` is a string; users mean a number. We also keep the line of
every key so that errors can point at it, and refuse keys given twice instead of keeping the last.
"""
from __future__ import annotations

import io
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


_CALL_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\(")


def quote_calls(text: str) -> str:
    """Quote call forms like ``sgd(lr=0.1, momentum=0.9)`` so that YAML reads each as one string.

    Inside a flow collection (``[warmup(epochs=2), cosine]``, ``{optimizer: sgd(lr=0.1, momentum=0.9)}``)
    YAML would otherwise split the call at its commas. Quoted text and comments are left alone, and
    no line breaks are added, so line numbers stay true.
    """
    out, i, quote = [], 0, None
    while i < len(text):
        char = text[i]
        if quote:
            out.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = None
            i += 1
            continue
        if char in "'\"" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n"):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out.append(text[i:end])
            i = end
            continue
        match = _CALL_START.match(text, i)
        if match and _starts_value(text, i):
            end = _closing_paren(text, match.end() - 1)
            if end is not None:
                call = text[i:end + 1]
                out.append("'" + call.replace("'", "''") + "'")
                i = end + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _starts_value(text: str, i: int) -> bool:
    """Whether position i begins a YAML value: after `key:`, `-`, `[`, `{`, `,` or at a line start."""
    j = i - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or text[j] in ":-[{,\n"


def _closing_paren(text: str, start: int) -> int | None:
    """Index of the parenthesis closing the one at `start`, on the same line; None if there is none."""
    depth, quote = 0, None
    for j in range(start, len(text)):
        char = text[j]
        if char == "\n":
            return None
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return j
    return None


def load_yaml(text: str) -> tuple[dict, dict[str, int]]:
    """Parse recipe text into a mapping and a ``{dotted.key: line}`` index (1-based lines)."""
    text = quote_calls(text)
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
    """Recipe mapping back to YAML text, in the order the keys were given: one key per line, nested
    values in flow style (`early_stopping: {monitor: val_loss, patience: 5}`), as people write recipes."""
    stream = io.StringIO()
    dumper = yaml.SafeDumper(stream, default_flow_style=None, sort_keys=False, allow_unicode=True)
    dumper.open()
    node = dumper.represent_data(data)
    node.flow_style = False
    dumper.serialize(node)
    dumper.close()
    dumper.dispose()
    return stream.getvalue()
