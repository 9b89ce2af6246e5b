"""`%nbopt help`: generated from the declarations, fields and registries the code itself uses, so they cannot drift."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

from nbopt import RecipeError
from nbopt.commands import COMMANDS, NOTEBOOK, SHELL
from nbopt.helptext import help_html, help_text, registries, settings_model, topics
from nbopt.helptopics import PAGES, PRUNER_NOTES, SAMPLER_NOTES, SPACES, mapping_keys
from nbopt.recipe import KNOWN_KEYS, Recipe
from nbopt.yamltext import load_yaml

OPTIONS = [(command, option) for command in COMMANDS for option in command.options]


def torch_optimizer_names() -> set[str]:
    return {name.lower() for name, cls in vars(torch.optim).items()
            if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer}


def listed_names(text: str) -> set[str]:
    """The names at the start of each row of a help table (`  adam(lr=0.001, ...)  summary`)."""
    return {m.group(1) for m in re.finditer(r"^  ([a-z_0-9]+)[( ]", text, flags=re.MULTILINE)}


def recipe_fields():
    """(where, field) for every field of Recipe and of the mappings its keys take (prune, early_stopping, …)."""
    for key, info in Recipe.model_fields.items():
        yield key, info
        model = settings_model(info.annotation)
        for name, setting in (model.model_fields.items() if model else ()):
            yield f"{key}.{setting.alias or name}", setting


def test_help_optimizer_lists_every_torch_optimizer(ip, capsys):
    ip.run_line_magic("nbopt", "help optimizer")
    shown = capsys.readouterr().out
    expected = torch_optimizer_names()
    assert {"adam", "adamw", "sgd", "rmsprop"} <= expected
    assert listed_names(shown) == expected
    assert shown.startswith("optimizer: ")
    # with the arguments a user can set, read from torch's own signature
    assert "sgd(lr=0.001, momentum=0" in shown and "nesterov=False" in shown


def test_every_recipe_key_and_setting_is_described():
    """Help is generated from the fields: one without a description would be a hole in it."""
    undescribed = [where for where, info in recipe_fields() if not (info.description or "").strip()]
    assert not undescribed, f"recipe keys or settings without a description: {undescribed}"
    without_example = [key for key, info in Recipe.model_fields.items() if not info.examples]
    assert not without_example, f"recipe keys without an example: {without_example}"


def test_every_option_and_command_is_described():
    assert all(command.summary.strip() for command in COMMANDS)
    undescribed = [f"{command.name} {option.flag}" for command, option in OPTIONS if not option.help.strip()]
    assert not undescribed, f"options without help: {undescribed}"


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


def test_help_overview_lists_every_command_option_and_key(ip, capsys):
    ip.run_line_magic("nbopt", "help")
    shown = capsys.readouterr().out
    for command in COMMANDS:
        for usage in command.usages(NOTEBOOK) + command.usages(SHELL):
            assert re.search(rf"^{re.escape(usage)}$", shown, flags=re.MULTILINE), usage
    for command, option in OPTIONS:
        assert re.search(rf"^    {re.escape(option.synopsis())}\s+{re.escape(option.describe())}$", shown,
                         flags=re.MULTILINE), f"{command.name} {option.flag}"
    for key in KNOWN_KEYS:
        assert re.search(rf"^  {re.escape(key)}\s", shown, flags=re.MULTILINE), key
    for flag in ("--metric", "--direction", "--timeout", "--allow-space-change"):
        assert f"[{flag}" in shown


def test_help_for_plain_keys_explains_them():
    text = help_text("epochs")
    assert text.startswith("epochs: ") and "e.g. `epochs: 20`" in text and "(default: 10)" in text


def test_help_for_a_mapping_key_lists_its_settings(ip, capsys):
    ip.run_line_magic("nbopt", "help prune")
    shown = capsys.readouterr().out
    for where, info in recipe_fields():
        if where.startswith("prune."):
            setting = where.partition(".")[2]
            assert re.search(rf"^  {setting}\s+{re.escape(info.description)}", shown, flags=re.MULTILINE), setting
    assert "(default: l1_unstructured)" in shown and "accepted: l1_unstructured, random_unstructured, channels" in shown


def test_help_for_an_unknown_key_suggests():
    with pytest.raises(RecipeError, match=re.escape("unknown help topic 'optimiser' — did you mean 'optimizer'?")):
        help_text("optimiser")


def test_the_list_of_topics_names_each_once():
    """Keys that are also registries (model, data) were listed twice; every name is one topic."""
    with pytest.raises(RecipeError) as raised:
        help_text("zzqqxx")
    listed = str(raised.value).partition("choose from: ")[2].split(", ")
    assert len(listed) == len(set(listed)) and set(listed) == set(topics())
    assert {"search", "variants", "metrics", "sweep", "prune"} <= set(listed)
    commands = {command.name for command in COMMANDS}
    keyed_pages = set(KNOWN_KEYS) & set(PAGES)  # a page that is also its key's (metrics: the key and the table)
    assert all(help_text(key).startswith(f"{key}: {Recipe.model_fields[key].description}") for key in keyed_pages)
    assert not (set(KNOWN_KEYS) & commands or set(PAGES) & commands), \
        "a name is both a recipe key and another help topic"


def test_help_search_explains_every_space_the_sweep_parses():
    from nbopt import sweeps
    from nbopt.sweeps import space
    text = help_text("search")
    for name in space._DISTRIBUTIONS:
        assert re.search(rf"^  {name}\(", text, flags=re.MULTILINE), name
    for form, _ in SPACES:  # every form help shows is one the sweep accepts, with numbers put in
        written = re.sub(r"\blo\b", "1", form).replace("hi", "4").replace("step=s", "step=1").replace("a, b, c", "1, 2")
        assert space.parse_space({"epochs": load_yaml(f"value: {written}")[0]["value"]}, {}), form
    assert set(SAMPLER_NOTES) == set(sweeps.SAMPLERS) and set(PRUNER_NOTES) == set(sweeps.PRUNERS)
    assert set(mapping_keys()) == set(space._MAPPING_KEYS), "the keys whose settings a search reaches"
    for key in ("optimizer.lr", "model.hidden", "prune.amount", "batch_size"):
        assert f"  {key}: " in text


def test_help_variants_explains_merging_and_teachers():
    from nbopt.comparison import _MERGED_KEYS
    text = help_text("variants")
    assert set(mapping_keys()) == set(_MERGED_KEYS), "the keys whose settings a variant merges"
    assert ", ".join(mapping_keys()) in text
    assert "distill: NAME" in text and "earlier variant" in text and "--repeats N" in text


def test_help_metrics_lists_the_metric_table():
    from nbopt.metrics import METRICS
    text = help_text("metrics")
    for metric in METRICS.values():
        direction = "higher" if metric.higher_is_better else "lower"
        assert re.search(rf"^  {metric.name}\s+{metric.title}; {direction} is better$", text, flags=re.MULTILINE)


def test_help_for_a_command_lists_its_options():
    text = help_text("sweep")
    sweep = next(command for command in COMMANDS if command.name == "sweep")
    assert all(option.synopsis() in text for option in sweep.options)


def test_magic_docstring_is_the_help_without_internal_names(ip):
    doc = ip.find_line_magic("nbopt").__doc__
    assert "%%nbopt train [--name NAME] [--out VAR] [--dry-run]" in doc
    assert "%nbopt export NAME [--to FILE]" in doc
    for command in COMMANDS:
        for usage in command.usages(NOTEBOOK):
            assert usage in doc
        for option in command.options_for(NOTEBOOK):
            assert option.describe() in doc, f"{command.name} {option.flag}"
    assert not re.search(r"%_|_args\b", doc), doc


def test_declared_defaults_are_the_apis():
    """A door passes every option on, so a declared default must be the one the function itself has."""
    from nbopt.comparison import compare
    from nbopt.sweeps import sweep
    functions = {"compare": compare, "sweep": sweep}
    for command, option in OPTIONS:
        if option.keyword and option.default is not None:
            assert inspect.signature(functions[command.name]).parameters[option.dest].default == option.default


def test_every_option_is_in_its_doors_parsers():
    """The magics and the command line parse exactly what is declared for them, and hand it to a door."""
    import argparse

    from nbopt.cli import _DOORS
    from nbopt.cli import parser as shell_parser
    from nbopt.magics import NboptMagics
    from nbopt.magics import parser as magic_parser
    subparsers = next(a for a in shell_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(_DOORS) == {command.name for command in COMMANDS if command.shell}
    for command in COMMANDS:
        assert (command.magic is None) != hasattr(NboptMagics, "_" + command.name.replace("-", "_")), command.name
        doors = {NOTEBOOK: magic_parser(command) if command.magic else None,
                 SHELL: subparsers.get(command.shell) if command.shell else None}
        assert (command.shell is None) == (doors[SHELL] is None), command.name
        for door, parser in doors.items():
            if parser is None:
                continue
            parsed = {a.dest: a for a in parser._actions if a.dest != "help"}
            assert set(parsed) == {o.dest for o in command.options_for(door)}, (command.name, door)
            for option in command.options_for(door):
                assert parsed[option.dest].help.replace("%%", "%") == option.describe()
