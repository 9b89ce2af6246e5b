"""Read recipe YAML the way a notebook user means it.

PyYAML follows YAML 1.1, where ``1e-3`` is a string; users mean a number. We also keep the line of
every key so that errors can point at it, and refuse keys given twice instead of keeping the last.
"""
from __future__ import annotations

import io
import re

import yaml

from nbopt.components import LARGEST_INTEGER, too_large
from nbopt.errors import RecipeError, shown


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` and ``3E5`` as floats, and dates and a bare ``=`` as text."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
# A recipe has no use for YAML 1.1 timestamps (`name: 2024-01-31` is a name) or the `=` value key,
# which SafeLoader cannot even construct; both stay text.
for _resolvers in _RecipeLoader.yaml_implicit_resolvers.values():
    _resolvers[:] = [(tag, regexp) for tag, regexp in _resolvers
                     if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {yaml.MappingNode: _TAG + "map", yaml.SequenceNode: _TAG + "seq"}
_NUMBER_TAGS = (_TAG + "int", _TAG + "float")
MAX_DEPTH = 32  # recipes nest three or four levels (variants → key → mapping → list)
MAX_VALUES = 10_000  # counted with aliases expanded: `*a` repeated inside itself cannot balloon
MAX_DIGITS = 100  # a longer number is refused before Python spends time converting it

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
        # The cheap tests first: trying the pattern at every letter of a long word would take quadratic time.
        match = (char.isascii() and (char.isalpha() or char == "_") and _starts_value(text, i)
                 and _CALL_START.match(text, i))
        if match:
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
    """Parse recipe text into a mapping and a ``{dotted.key: line}`` index (1-based lines).

    Whatever the text, the only error is a one-line RecipeError: the node tree is checked (tags,
    keys, depth, size, numbers) before any Python object is built from it.
    """
    text = quote_calls(text)
    try:
        loader = _RecipeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise RecipeError(f"the recipe contains the character {shown(chr(exc.character))}, which YAML does not "
                          "allow; delete it", key="recipe", line=line) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError("the recipe is empty; it needs at least `model:` and `data:`")
        if not isinstance(node, yaml.MappingNode):
            raise RecipeError("the recipe must be a YAML mapping of `key: value` lines, e.g. `model: mlp`",
                              key="recipe", line=node.start_mark.line + 1)
        lines: dict[str, int] = {}
        _NodeCheck(loader).visit(node, "", lines, 1)
        return loader.construct_document(node), lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"the recipe is not valid YAML: {problem}", key="recipe", line=line) from None
    except RecursionError:
        raise RecipeError(f"the recipe nests lists or mappings too deeply; keep it under {MAX_DEPTH} levels",
                          key="recipe") from None
    finally:
        loader.dispose()


class _NodeCheck:
    """Walks the composed YAML nodes once: indexes key lines and refuses what no recipe means (a key
    given twice, a list or mapping as a key, tags such as ``!!python/object``, absurd sizes), each as a
    RecipeError at its key and line, before the constructor could raise a library error instead."""

    def __init__(self, loader: _RecipeLoader):
        self.loader = loader
        self.values = 0

    def visit(self, node: yaml.Node, prefix: str, lines: dict[str, int], depth: int) -> None:
        where = {"key": prefix.rstrip(".") or "recipe", "line": node.start_mark.line + 1}
        self.values += 1
        if self.values > MAX_VALUES:
            raise RecipeError(f"the recipe expands to more than {MAX_VALUES:,} values (an alias `*name` "
                              "repeated many times?); write the values out", **where)
        if depth > MAX_DEPTH:
            raise RecipeError(f"lists or mappings nested more than {MAX_DEPTH} levels deep (an alias `*name` "
                              "inside its own anchor?); flatten them", **where)
        self._check_tag(node, where)
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                where["line"] = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    raise RecipeError("a key must be a plain name, not a list or mapping; write `name: value`",
                                      **where)
                self._check_tag(key_node, where)
                key = f"{prefix}{key_node.value}"
                if key in seen:
                    raise RecipeError("this key is given twice; keep one", key=key, line=where["line"])
                seen.add(key)
                lines[key] = where["line"]
                self.visit(value_node, key + ".", lines, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[f"{prefix}{i}"] = item.start_mark.line + 1
                self.visit(item, f"{prefix}{i}.", lines, depth + 1)

    def _check_tag(self, node: yaml.Node, where: dict) -> None:
        """Only plain values: a tag may restate what YAML reads anyway (`!!str 1`, `!!int 5`), nothing more."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag in (_TAG + "str", self.loader.resolve(yaml.ScalarNode, node.value, (True, False))):
                if node.tag in _NUMBER_TAGS:
                    self._check_number(node, where)
                return
        elif node.tag == _PLAIN_TAGS[type(node)]:
            return
        raise RecipeError(f"the YAML tag {shown(node.tag.replace(_TAG, '!!'))} is not allowed in a recipe; "
                          "write a plain value (a name, a number, text, a [list] or a {mapping})", **where)

    def _check_number(self, node: yaml.ScalarNode, where: dict) -> None:
        """A number Python can hold and YAML's constructor can read (`0x_` matches YAML's pattern, not int())."""
        if len(node.value) <= MAX_DIGITS:
            try:
                value = self.loader.construct_object(node)
            except ValueError:
                raise RecipeError(f"cannot read {shown(node.value)} as a number; write it like 100, 0.5 or 1e-3 "
                                  "(or quote it to make it text)", **where) from None
            if not isinstance(value, int) or abs(value) <= LARGEST_INTEGER:
                return
        raise RecipeError(too_large(node.value) + " (quote it to make it text)", **where)


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
