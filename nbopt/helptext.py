"""``%nbopt help`` and ``%nbopt help KEY``: generated from the registries the code itself uses."""
from __future__ import annotations

import html

from nbopt.errors import RecipeError, unknown_name_message

# Recipe keys in the order a user meets them, with what each means and an example value.
KEYS = {
    "model": ("a notebook nn.Module/LightningModule (copied), a class or factory, `pkg.module:name`, or a built-in",
              "mlp(hidden=[128, 64])"),
    "data": ("a LightningDataModule, (train, val) Datasets/DataLoaders, (X, y) arrays, a DataFrame, or a built-in",
             "digits"),
    "name": ("the run's name and folder under nbopt-runs/", "baseline"),
    "target": ("the column to predict when `data` is a DataFrame", "price"),
    "task": ("classification or regression; detected from the targets when left out", "regression"),
    "val_split": ("fraction held out for validation when the data has no validation set (default 0.2)", "0.2"),
    "test_split": ("fraction held out for a final test score, never used for choices (default 0)", "0.1"),
    "batch_size": ("samples per step (default 64)", "64"),
    "epochs": ("passes over the training data (default 10)", "20"),
    "seed": ("seed for the split, the initial weights and the batch order (default 0)", "0"),
    "normalize": ("auto (mean/std of the training split, the default), none, or {mean: [...], std: [...]}", "auto"),
    "loss": ("training loss (default: cross_entropy for classification, mse for regression)",
             "cross_entropy(label_smoothing=0.1)"),
    "optimizer": ("any torch.optim optimizer by lower-case name, with its arguments (default adam)",
                  "sgd(lr=0.1, momentum=0.9, nesterov=true)"),
    "scheduler": ("an LR schedule, or a list run in sequence", "[warmup(epochs=2), cosine]"),
    "early_stopping": ("stop when `monitor` stops improving; the best weights are restored",
                       "{monitor: val_loss, patience: 5}"),
    "augment": ("random transforms of training batches only (image transforms need image data)",
                "[hflip, rotate(15), crop(pad=2), mixup(0.2)]"),
    "batchnorm": ("insert BatchNorm after every Linear/Conv but the output layer, before its activation", "true"),
    "dropout": ("insert Dropout with this rate after every hidden activation", "0.2"),
    "activation": ("replace every activation module of the model", "gelu"),
    "lr_find": ("run an LR range test first, plot it, and train with the suggested LR", "true"),
    "prune": ("prune after (once) or during (gradual) training, then fine-tune; channels really removes them",
              "{method: l1_unstructured, amount: 0.8, schedule: gradual, finetune: 3}"),
    "distill": ("train as the student of a frozen teacher (a notebook model, a Run, or a run name)",
                "{teacher: big_net, temperature: 4, alpha: 0.7}"),
    "quantize": ("post-training int8 dynamic quantization of Linear layers (CPU), validated again", "dynamic"),
    "devices": ("how many devices (processes on CPU, GPUs on a GPU machine) train together (default 1)", "2"),
    "nodes": ("how many machines train together, each with `devices` of its own; started from a shell by SLURM's "
              "srun or torchrun (default 1)", "4"),
    "strategy": ("how they share the work: ddp (data parallel), fsdp (sharded, from a shell on GPUs)", "ddp"),
    "grad_clip": ("clip the gradient norm to this value", "1.0"),
    "accumulate": ("accumulate gradients over this many batches per optimizer step", "4"),
    "precision": ("numeric precision, as Lightning names it (32-true, bf16-mixed, 16-mixed, ...)", "bf16-mixed"),
}

SUBCOMMANDS = {
    "%%nbopt train [--name NAME] [--out VAR] [--dry-run]": "train once from the recipe in the cell",
    "%%nbopt compare [--repeats N] [--out VAR]": "train the recipe's `variants:` side by side",
    "%%nbopt sweep [--trials N] [--sampler grid|random|tpe|gp] [--pruner median|hyperband|none] [--jobs N] "
    "[--storage URL] [--study NAME] [--out VAR]": "search the recipe's `search:` space with Optuna; resumable",
    "%%nbopt show-augment (or %nbopt show-augment RUN)": "a grid of augmented training samples",
    "%nbopt panel [RUN]": "the recipe as controls: Train, Compare with last, Sweep, Stop, As cell",
    "%nbopt runs": "table of the runs recorded in nbopt-runs/",
    "%nbopt export NAME [--to FILE]": "write a run's recipe to a YAML file for `nbopt run`",
    "%nbopt help [KEY]": "this help, or what KEY accepts",
}


def registries() -> dict:
    from nbopt.data.builtin import DATASETS
    from nbopt.models.builtin import MODELS
    from nbopt.techniques.activations import ACTIVATIONS
    from nbopt.techniques.augment import AUGMENTATIONS
    from nbopt.techniques.losses import LOSSES
    from nbopt.techniques.optimizers import OPTIMIZERS
    from nbopt.techniques.schedulers import SCHEDULERS
    return {"model": MODELS, "data": DATASETS, "loss": LOSSES, "optimizer": OPTIMIZERS,
            "scheduler": SCHEDULERS, "activation": ACTIVATIONS,
            "augment": AUGMENTATIONS}


def help_table(key: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """A title and (name, description) rows: the overview, or what one key accepts."""
    if key is None:
        rows = list(SUBCOMMANDS.items()) + [(k, f"{meaning} — e.g. {example}") for k, (meaning, example) in
                                           KEYS.items()]
        return "nbopt: sub-commands and recipe keys (`%nbopt help KEY` for details)", rows
    tables = registries()
    if key not in KEYS and key not in tables:
        raise RecipeError(unknown_name_message("recipe key", key, list(KEYS) + list(tables)))
    meaning, example = KEYS.get(key, ("", ""))
    title = f"{key}: {meaning}" + (f" — e.g. `{key}: {example}`" if example else "")
    if key not in tables:
        return title, []
    return title + " — accepted names:", tables[key].help_rows()


def help_text(key: str | None = None) -> str:
    title, rows = help_table(key)
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join([title] + [f"  {name.ljust(width)}  {desc}" for name, desc in rows])


def help_html(key: str | None = None) -> str:
    title, rows = help_table(key)
    body = "".join(f"<tr><td style='text-align:left'><code>{html.escape(n)}</code></td>"
                   f"<td style='text-align:left'>{html.escape(d)}</td></tr>" for n, d in rows)
    return f"<div><b>{html.escape(title)}</b><table>{body}</table></div>"
