"""The help pages that are not one recipe key: ``search`` (a sweep's space), ``variants`` (compare's
mapping) and ``metrics`` (the metric table).

What can be read from the code is: the samplers and pruners from their tables, the metrics from
the metric table, the keys whose settings merge from the fields of ``Recipe``. What only a person
can say (what a distribution draws, why a sampler suits a space) is written here once, and
tests/test_help.py checks it against the code that parses spaces and variants.
"""
from __future__ import annotations

from nbopt.helptext import Page, Section, settings_model

# The forms that nbopt/sweeps/space.py parses, and what each draws.
SPACES = (
    ("loguniform(lo, hi)", "a number drawn evenly on a log scale, 0 < lo < hi: learning rates, weight decays"),
    ("uniform(lo, hi)", "a number drawn evenly between lo and hi"),
    ("uniform(lo, hi, step=s)", "only lo, lo + s, lo + 2s, … up to hi (a grid can list them)"),
    ("int(lo, hi)", "a whole number from lo to hi, both included"),
    ("int(lo, hi, step=s)", "only lo, lo + s, lo + 2s, … up to hi"),
    ("[a, b, c]", "one of these choices: numbers, names, components ([adam, sgd(momentum=0.9)]), lists "
                  "([[], [hflip]]) or mappings"),
)

SAMPLER_NOTES = {
    "grid": "every combination, once each; needs lists, int(…) or uniform(…, step=…); --trials defaults to "
            "the number of combinations",
    "random": "independent random draws",
    "tpe": "Tree-structured Parzen Estimator: draws more where earlier trials scored well",
    "gp": "Gaussian-process Bayesian optimisation: few trials, continuous spaces",
}
PRUNER_NOTES = {
    "median": "stop a trial whose score after an epoch is worse than the median of earlier trials there",
    "hyperband": "successive halving over several budgets of epochs",
    "none": "every trial trains all its epochs",
}


def mapping_keys() -> list[str]:
    """Recipe keys written as a mapping of settings (prune, early_stopping, …), in recipe order."""
    from nbopt.recipe import Recipe
    return [key for key, info in Recipe.model_fields.items() if settings_model(info.annotation) is not None]


def search_page() -> Page:
    from nbopt.models.builtin import MODELS
    from nbopt.recipe import Recipe
    from nbopt.sweeps import PRUNERS, SAMPLERS
    mappings = ", ".join(mapping_keys())
    optimizer = Recipe.model_fields["optimizer"].default.to_text()
    keys = [
        ("batch_size: [32, 64, 128]", "a plain recipe key: the value replaces the whole key"),
        ("optimizer.lr: loguniform(1e-4, 1e-1)",
         "a dotted key sets one argument of a component and keeps its others; without an `optimizer:` key it "
         f"sets the default {optimizer}'s"),
        ("model.hidden: [[64], [128, 64]]", f"an argument of a built-in model ({', '.join(MODELS.entries)})"),
        ("prune.amount: uniform(0.3, 0.9)", f"one setting of a mapping key ({mappings})"),
        ("optimizer: [adam, sgd(lr=0.1)]", "whole components as choices"),
    ]
    return Page("search: the space of `%%nbopt sweep` — a `search:` mapping of recipe keys to spaces; every "
                "value is checked before any trial runs", [
                    Section(text="spaces:", rows=list(SPACES)),
                    Section(text="keys:", rows=keys),
                    Section(text="--sampler:", rows=[(name, SAMPLER_NOTES.get(name, "")) for name in SAMPLERS]),
                    Section(text="--pruner (from the per-epoch score):",
                            rows=[(name, PRUNER_NOTES.get(name, "")) for name in PRUNERS]),
                    Section(text="The study is stored, so running the same cell again runs only the missing "
                                 "trials; --trials is how many finished trials the study should hold."),
                ])


def variants_page() -> Page:
    mappings = mapping_keys()
    rows = [
        ("NAME: {key: value, …}", "the cell's recipe with these keys replaced; `NAME: {}` is the recipe itself"),
        (", ".join(mappings), "a mapping merges setting by setting: `prune: {amount: 0.9}` keeps the recipe's "
                              "other prune settings; any other value replaces the whole key"),
        ("distill: NAME", "NAME an earlier variant: learn from its trained model (of the same seed with "
                          "--repeats); also `distill: {teacher: NAME, …}`"),
        ("--repeats N", "every variant with seeds seed, seed + 1, …; the table gives mean ± std and says whether "
                        "the lead exceeds the seed-to-seed spread"),
    ]
    return Page("variants: the variants of `%%nbopt compare` — a `variants:` mapping of name → recipe overrides", [
        Section(rows=rows),
        Section(text="Every variant is checked before any trains; all train on the same split, seed and starting "
                     "weights, and must report the same metric (one task)."),
    ])


def metrics_page() -> Page:
    """The `metrics:` key and the metric table in one page: what a recipe can add, and which way is better."""
    from nbopt.helptext import describe_field
    from nbopt.metrics import METRICS, SPLITS, TASK_METRIC
    from nbopt.recipe import Recipe
    from nbopt.techniques.scores import AVERAGES, SCORES
    rows = [(m.name, f"{m.title}; {'higher' if m.higher_is_better else 'lower'} is better") for m in METRICS.values()]
    extras = [(entry.signature_text(), f"{METRICS[name].task}: {entry.summary}"
               + (f"; average: {', '.join(AVERAGES[name])}" if name in AVERAGES else ""))
              for name, entry in SCORES.entries.items()]
    tasks = ", ".join(f"{metric} for {task}" for task, metric in TASK_METRIC.items())
    return Page(f"metrics: {describe_field('metrics', Recipe.model_fields['metrics'])}", [
        Section(text="the metric table: every score a run can record, and which way is better", rows=rows),
        Section(text="`metrics:` accepts (macro averages unless told otherwise):", rows=extras, indent=4),
        Section(text=f"A history column is a split ({', '.join(SPLITS)}), an underscore and a metric: val_acc, "
                     f"test_mae, train_loss. Every run reports loss and its task's metric ({tasks}); each of "
                     "`metrics:` adds val_NAME per epoch and val_NAME (test_NAME with a test split) to the final "
                     "scores. An average other than the default is part of the name (f1(average=weighted) is "
                     "val_f1_weighted), and top_k(k=5) is val_top5_acc. early_stopping's monitor, a plateau "
                     "scheduler's monitor, compare's and a sweep's --metric name such a column and take its "
                     "direction from this table; a score your own LightningModule logs counts as "
                     "higher-is-better when its name says so (acc, f1, auc, r2, …)."),
    ])


PAGES = {"search": search_page, "variants": variants_page, "metrics": metrics_page}
