"""``%nbopt help`` and ``%nbopt help KEY``: generated from what the code itself reads, so it cannot drift.

Sub-commands and their options come from ``nbopt.commands``; recipe keys, their settings,
defaults, allowed values and examples from the fields of ``Recipe``; accepted names from the
registries that validation resolves against; the search, variants and metrics pages from the
tables the sweep, compare and metric code use (``nbopt.helptopics``). A page is plain data — a
title and sections of rows — drawn twice, as text and as HTML.
"""
from __future__ import annotations

import html
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from nbopt.commands import COMMANDS, NOTEBOOK, SHELL, Command
from nbopt.errors import RecipeError, unknown_name_message

_NAME_COLUMN = 38  # a longer name gets its description on the next line


@dataclass
class Section:
    """Usage lines (shown as code), a sentence, and (name, description) rows."""
    heading: list[str] = field(default_factory=list)
    text: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)
    indent: int = 2


@dataclass
class Page:
    title: str
    sections: list[Section] = field(default_factory=list)


def registries() -> dict:
    """Recipe key → the registry of names it accepts."""
    from nbopt.data.builtin import DATASETS
    from nbopt.loggers import LOGGERS
    from nbopt.models.builtin import MODELS
    from nbopt.techniques.activations import ACTIVATIONS
    from nbopt.techniques.augment import AUGMENTATIONS
    from nbopt.techniques.losses import LOSSES
    from nbopt.techniques.optimizers import OPTIMIZERS
    from nbopt.techniques.schedulers import SCHEDULERS
    return {"model": MODELS, "data": DATASETS, "loss": LOSSES, "optimizer": OPTIMIZERS,
            "scheduler": SCHEDULERS, "activation": ACTIVATIONS, "augment": AUGMENTATIONS, "logger": LOGGERS}


def named_values() -> dict[str, tuple[str, ...]]:
    """Recipe keys whose accepted words live in a table of the code rather than in the field's type."""
    from nbopt.parallel import STRATEGIES
    from nbopt.recipe import PRECISIONS
    return {"precision": PRECISIONS, "strategy": STRATEGIES}


def topics() -> dict[str, Callable[[], Page]]:
    """Every help topic: recipe keys in the order a user meets them, the extra pages, the sub-commands."""
    from nbopt.helptopics import PAGES
    from nbopt.recipe import Recipe
    found: dict[str, Callable[[], Page]] = {key: (lambda key=key: _key_page(key)) for key in Recipe.model_fields}
    found.update(PAGES)
    found.update({c.name: (lambda c=c: _command_page(c)) for c in COMMANDS})
    return found


def page(topic: str | None = None) -> Page:
    """The overview, or the page of one topic (a RecipeError naming the closest topic for a typo)."""
    if topic is None:
        return _overview()
    pages = topics()
    if topic not in pages:
        raise RecipeError(unknown_name_message("help topic", topic, pages))
    return pages[topic]()


# -- recipe keys ----------------------------------------------------------------------------------

def yaml_text(value) -> str:
    """A value as a recipe writes it: true, 0.001, [32, 64], adam(lr=0.1)."""
    if hasattr(value, "to_text"):  # a Component
        return value.to_text()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return str(value)


def settings_model(annotation):
    """The pydantic model of a key's mapping form (Prune for `prune:`), or None."""
    from pydantic import BaseModel
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def choices(annotation) -> tuple | None:
    """The allowed values of a field typed only by Literals (and None), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and all(typing.get_origin(a) is typing.Literal for a in args):
        return tuple(value for a in args for value in typing.get_args(a))
    return None


def describe_field(key: str, info, named: tuple = ()) -> str:
    """A field's description with its allowed values (from its type, else `named`), default and examples."""
    text = info.description
    allowed = choices(info.annotation) or named
    if allowed:
        text += "; accepted: " + ", ".join(yaml_text(v) for v in allowed)
    if info.is_required():
        text += " (required)"
    elif info.default is not None and info.default_factory is None:
        text += f" (default: {yaml_text(info.default)})"
    if info.examples:
        text += " — e.g. " + ", ".join(f"`{key}: {yaml_text(e)}`" for e in info.examples)
    return text


def _key_page(key: str) -> Page:
    from nbopt.recipe import Recipe
    info = Recipe.model_fields[key]
    title = f"{key}: {describe_field(key, info, named_values().get(key, ()))}"
    model, tables = settings_model(info.annotation), registries()
    if key in tables:
        return Page(title, [Section(text="accepted names:", rows=tables[key].help_rows())])
    if model is not None:
        rows = [(setting.alias or name, describe_field(setting.alias or name, setting))
                for name, setting in model.model_fields.items()]
        return Page(title, [Section(text=f"settings ({key}: {{setting: value, …}}):", rows=rows)])
    return Page(title)


# -- sub-commands ---------------------------------------------------------------------------------

def command_section(command: Command) -> Section:
    """A sub-command's usage in each door that has it, what it does, and every option it takes."""
    heading = command.usages(NOTEBOOK) + command.usages(SHELL)
    return Section(heading, command.summary, [(o.synopsis(), o.describe()) for o in command.options], indent=4)


def _command_page(command: Command) -> Page:
    return Page(f"{command.name}: {command.summary}", [command_section(command)])


def _overview() -> Page:
    from nbopt.helptopics import PAGES
    from nbopt.recipe import Recipe
    named = named_values()
    keys = [(key, describe_field(key, info, named.get(key, ()))) for key, info in Recipe.model_fields.items()]
    return Page("nbopt: sub-commands and recipe keys (`%nbopt help KEY` for one key; also "
                + ", ".join(f"`%nbopt help {topic}`" for topic in PAGES) + ")",
                [command_section(command) for command in COMMANDS]
                + [Section(text="Recipe keys (only model and data are required):", rows=keys)])


# -- drawing --------------------------------------------------------------------------------------

def _text_rows(rows: list[tuple[str, str]], indent: int) -> list[str]:
    width = min(max((len(name) for name, _ in rows), default=0), _NAME_COLUMN)
    lines = []
    for name, desc in rows:
        if len(name) > width:
            lines += [" " * indent + name, " " * (indent + width + 2) + desc]
        else:
            lines.append(" " * indent + f"{name.ljust(width)}  {desc}".rstrip())
    return lines


def help_text(topic: str | None = None) -> str:
    shown = page(topic)
    lines = [shown.title]
    for section in shown.sections:
        lines += ["", *section.heading]
        lines += [" " * (section.indent - 2) + section.text] * bool(section.text)
        lines += _text_rows(section.rows, section.indent)
    return "\n".join(lines)


def help_html(topic: str | None = None) -> str:
    shown = page(topic)
    parts = [f"<div><b>{html.escape(shown.title)}</b>"]
    for section in shown.sections:
        parts += [f"<div><code>{html.escape(line)}</code></div>" for line in section.heading]
        parts += [f"<div>{html.escape(section.text)}</div>"] * bool(section.text)
        if section.rows:
            parts.append("<table>" + "".join(
                f"<tr><td style='text-align:left'><code>{html.escape(name)}</code></td>"
                f"<td style='text-align:left'>{html.escape(desc)}</td></tr>" for name, desc in section.rows)
                + "</table>")
    return "".join(parts) + "</div>"


def magic_doc() -> str:
    """The ``%nbopt?`` docstring: every notebook usage with its options, nothing internal."""
    lines = ["nbopt: train, compare and sweep PyTorch models from a YAML recipe in the cell.",
             "`%nbopt help` lists the recipe keys too; `%nbopt help KEY` what one key accepts."]
    for command in COMMANDS:
        usages = command.usages(NOTEBOOK)
        if usages:
            lines += ["", *usages, "    " + command.summary]
            lines += _text_rows([(o.synopsis(), o.describe()) for o in command.options_for(NOTEBOOK)], 6)
    return "\n".join(lines)

