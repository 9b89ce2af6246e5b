"""`%nbopt help`: generated from the same registries the code validates against, so they cannot drift."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

from nbopt import RecipeError
from nbopt.helptext import KEYS, SUBCOMMANDS, help_html, help_text, registries
from nbopt.recipe import KNOWN_KEYS


def torch_optimizer_names() -> set[str]:
    return {name.lower() for name, cls in vars(torch.optim).items()
            if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer}


def listed_names(text: str) -> set[str]:
    """The names at the start of each row of a help table (`  adam(lr=0.001, ...)  summary`)."""
    return {m.group(1) for m in re.finditer(r"^  ([a-z_0-9]+)[( ]", text, flags=re.MULTILINE)}


def test_help_optimizer_lists_every_torch_optimizer(ip, capsys):
    ip.run_line_magic("nbopt", "help optimizer")
    shown = capsys.readouterr().out
    expected = torch_optimizer_names()
    assert {"adam", "adamw", "sgd", "rmsprop"} <= expected
    assert listed_names(shown) == expected
    assert shown.startswith("optimizer: ")
    # with the arguments a user can set, read from torch's own signature
    assert "sgd(lr=0.001, momentum=0" in shown and "nesterov=False" in shown


def test_every_known_key_is_documented():
    missing = [key for key in KNOWN_KEYS if key not in KEYS]
    assert not missing, f"recipe keys without help: {missing}"
    documented_but_unknown = [key for key in KEYS if key not in KNOWN_KEYS]
    assert not documented_but_unknown, f"help describes keys the recipe refuses: {documented_but_unknown}"


@pytest.mark.parametrize("key", sorted(registries()))
def test_help_for_a_key_lists_its_registry(key):
    registry = registries()[key]
    text = help_text(key)
    assert listed_names(text) == set(registry.names())
    page = help_html(key)
    for name in registry.names():
        assert f"<code>{name}" in page


@pytest.mark.parametrize("key", sorted(set(registries()) & set(KNOWN_KEYS) - {"model", "data"}))
def test_registry_names_are_accepted_where_help_says(key):
    """What help lists for a component key is what the recipe accepts for that key (model and data names are
    resolved against the data: see test_models and test_data)."""
    from nbopt.recipe import parse_recipe
    for name in registries()[key].names():
        value = f"[{name}]" if key in ("scheduler", "augment") else name
        try:
            parse_recipe(f"model: mlp\ndata: digits\nepochs: 50\n{key}: {value}\n")
        except RecipeError as exc:  # a name with a required argument may be refused for that reason only
            assert "unknown" not in str(exc), exc


def test_help_overview_lists_subcommands_and_every_key(ip, capsys):
    ip.run_line_magic("nbopt", "help")
    shown = capsys.readouterr().out
    for usage in SUBCOMMANDS:
        assert usage in shown
    for key in KEYS:
        assert re.search(rf"^  {re.escape(key)}\s", shown, flags=re.MULTILINE), key


def test_help_for_plain_keys_explains_them():
    text = help_text("epochs")
    assert text.startswith("epochs: ") and "e.g. `epochs: 20`" in text


def test_help_for_an_unknown_key_suggests():
    with pytest.raises(RecipeError, match=re.escape("unknown recipe key 'optimiser' — did you mean 'optimizer'?")):
        help_text("optimiser")


def test_magic_docstring_is_the_help(ip):
    doc = ip.find_line_magic("nbopt").__doc__
    assert "%%nbopt train [--name NAME] [--out VAR] [--dry-run]" in doc
    assert "%nbopt export NAME [--to FILE]" in doc
