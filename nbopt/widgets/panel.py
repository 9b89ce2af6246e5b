"""``%nbopt panel``: the recipe as ipywidgets controls, with Train, Compare, Sweep, Stop and As cell.

The panel holds no logic of its own: its controls make a recipe mapping, and its buttons hand that
to the same ``train``/``compare``/``sweep`` that the magics use, so the same validation and the
same one-line errors apply. Work runs in a background thread so that Stop stays clickable; live
output goes to the panel's own widgets, never into whatever cell happens to be active.
"""
from __future__ import annotations

import html
import math
import threading
import traceback

import ipywidgets as w
import torch
from torch import nn

import nbopt
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener
from nbopt.errors import RecipeError
from nbopt.lightning_package import is_datamodule
from nbopt.widgets.choices import (ACTIVATION_NAMES, AUGMENT_LABELS, BUILTIN_DATA, BUILTIN_MODELS, DEFAULT_LR,
                                   DEFAULT_SAMPLER, IMAGE_AUGMENT_LABELS, IMAGE_DATA, OPTIMIZER_NAMES,
                                   PRUNE_METHODS, SAMPLER_NAMES, SCHEDULES, as_text, from_text, recipe_default,
                                   with_option)
from nbopt.yamltext import dump_yaml, load_yaml


def _set_number(slider, value: float) -> None:
    """Set a slider, widening it so that a recipe's value outside its usual range is kept, not clamped."""
    if isinstance(slider, w.FloatLogSlider):
        exponent = math.log10(value)
        slider.min, slider.max = min(slider.min, math.floor(exponent)), max(slider.max, math.ceil(exponent))
    else:
        slider.min, slider.max = min(slider.min, value), max(slider.max, value)
    slider.value = value


def _choose(dropdown: w.Dropdown, value) -> None:
    """Select a value, adding it to the options when a recipe brings one the list lacks."""
    dropdown.options = with_option(list(dropdown.options), value)
    dropdown.value = value


class WidgetSink:
    """Live status and figure into two widgets (thread-safe: only widget values change)."""

    def __init__(self, status: w.HTML, figure: w.Image):
        self._status, self._figure = status, figure

    def status(self, text: str, html_text: str | None = None) -> None:
        self._status.value = html_text or f"<code>{html.escape(text)}</code>"

    def figure(self, png: bytes, label: str) -> None:
        self._figure.value = png
        self._figure.layout.display = ""


class _Progress(Listener):
    def __init__(self, sink: WidgetSink, label: str):
        self.sink, self.label = sink, label

    def on_epoch(self, recorder, trainer, row) -> None:
        self.sink.status(f"{self.label}: epoch {row['epoch']} · val_loss {row.get('val_loss', math.nan):.4g}")


class Panel:
    """Controls ↔ recipe. ``to_recipe()`` and ``from_recipe()`` round-trip every key the panel covers;
    keys it has no control for are kept as they were."""

    def __init__(self, namespace: dict | None = None, recipe=None):
        self.namespace = namespace if namespace is not None else {}
        self.guard: InterruptGuard | None = None
        self.thread: threading.Thread | None = None
        self.last_recipe: dict | None = None
        self.result = None
        self._extra: dict = {}
        self._augment_order: list[str] = []
        self._optimizer_kwargs: dict = {}
        style = {"description_width": "110px"}
        self.model = w.Dropdown(description="model", options=self._model_options(), style=style)
        self.data = w.Dropdown(description="data", options=self._data_options(), style=style)
        self.target = w.Text(description="target column", style=style, disabled=True)
        self.task = w.Dropdown(description="task", options=["auto", "classification", "regression"], style=style)
        self.epochs = w.IntSlider(description="epochs", value=recipe_default("epochs"), min=1, max=100, style=style)
        self.batch_size = w.Dropdown(description="batch size", options=[16, 32, 64, 128, 256],
                                     value=recipe_default("batch_size"), style=style)
        self.seed = w.IntText(description="seed", value=recipe_default("seed"), style=style)
        self.optimizer = w.Dropdown(description="optimizer", options=OPTIMIZER_NAMES,
                                    value=recipe_default("optimizer").name, style=style)
        self.lr = w.FloatLogSlider(description="learning rate", value=DEFAULT_LR, base=10, min=-5, max=0, step=0.1,
                                   readout_format=".1e", style=style)
        self.scheduler = w.Dropdown(description="scheduler", options=SCHEDULES, value="none", style=style)
        self.early_stopping = w.Checkbox(description="early stopping", value=False)
        self.patience = w.IntText(description="patience", value=recipe_default("early_stopping", "patience"),
                                  style=style)
        self.normalize = w.Dropdown(description="normalize", options=["auto", "none"], style=style)
        self.augment = {name: w.Checkbox(description=name, value=False, indent=False) for name in AUGMENT_LABELS}
        self.batchnorm = w.Checkbox(description="BatchNorm", value=False)
        self.dropout = w.FloatSlider(description="dropout", value=0.0, min=0.0, max=0.8, step=0.05, style=style)
        self.activation = w.Dropdown(description="activation", options=ACTIVATION_NAMES, value="keep", style=style)
        self.prune_method = w.Dropdown(description="prune", options=PRUNE_METHODS, value="none", style=style)
        self.prune_amount = w.FloatSlider(description="prune amount", value=recipe_default("prune", "amount"),
                                          min=0.05, max=0.95, step=0.05, style=style)
        self.teacher = w.Dropdown(description="distil from", options=self._teacher_options(), value="none",
                                  style=style)
        self.buttons = {name: w.Button(description=name) for name in ("Train", "Compare with last", "Sweep",
                                                                        "Stop", "As cell")}
        self.buttons["Stop"].disabled = True
        self.search = w.Textarea(value="optimizer.lr: loguniform(1e-4, 1e-1)\nbatch_size: [32, 64, 128]",
                                 description="search", layout=w.Layout(width="95%", height="70px"))
        self.trials = w.IntText(description="trials", value=8)
        self.sampler = w.Dropdown(description="sampler", options=SAMPLER_NAMES, value=DEFAULT_SAMPLER)
        self.run_sweep = w.Button(description="Run sweep")
        self.sweep_box = w.VBox([self.search, w.HBox([self.trials, self.sampler, self.run_sweep])],
                                layout=w.Layout(display="none"))
        self.error = w.HTML()
        self.status = w.HTML()
        self.figure = w.Image(format="png", layout=w.Layout(display="none", max_width="100%"))
        self.cell_text = w.Textarea(layout=w.Layout(display="none", width="95%", height="120px"))
        self.output = w.Output()
        self.sink = WidgetSink(self.status, self.figure)
        self._wire()
        self.widget = self._layout()
        if recipe is not None:
            self.from_recipe(recipe)
        self._update_enabled()

    # -- options from the notebook -------------------------------------------------------------
    def _variables(self, accept) -> list[str]:
        return sorted(n for n, v in self.namespace.items() if not n.startswith("_") and accept(v))

    def _model_options(self) -> list[str]:
        def is_model(v):
            return isinstance(v, nn.Module) or (isinstance(v, type) and issubclass(v, nn.Module))
        return self._variables(is_model) + BUILTIN_MODELS

    def _data_options(self) -> list[str]:
        def is_data(v):
            if is_datamodule(v) or type(v).__name__ == "DataFrame":
                return True
            return isinstance(v, tuple) and len(v) in (2, 3) and all(hasattr(p, "__len__") for p in v)
        return self._variables(is_data) + BUILTIN_DATA

    def _teacher_options(self) -> list[str]:
        from nbopt.run import Run, session_run_names
        return ["none"] + self._variables(lambda v: isinstance(v, (nn.Module, Run))) + session_run_names()

    def _is_image_data(self) -> bool | None:
        """True/False when the panel can tell cheaply, None when it cannot (then nothing is disabled)."""
        name = self.data.value
        if name in BUILTIN_DATA and name not in self.namespace:  # a notebook variable hides a built-in
            return name in IMAGE_DATA
        value = self.namespace.get(name)
        if type(value).__name__ == "DataFrame":
            return False
        if isinstance(value, tuple) and value:
            first = value[0]
            shape = getattr(first, "shape", None)
            if shape is not None:
                return len(shape) == 4
            try:
                return torch.as_tensor(first[0][0]).ndim == 3
            except Exception:  # a dataset that cannot be indexed this way: leave every control enabled
                return None
        return None

    # -- controls ↔ recipe ---------------------------------------------------------------------
    def to_recipe(self) -> dict:
        recipe = {"model": self.model.value, "data": self.data.value}
        if self.target.value and not self.target.disabled:
            recipe["target"] = self.target.value
        if self.task.value != "auto":
            recipe["task"] = self.task.value
        recipe.update(epochs=self.epochs.value, batch_size=self.batch_size.value)
        if self.seed.value:
            recipe["seed"] = self.seed.value
        kwargs = {"lr": float(f"{self.lr.value:.3g}"), **self._optimizer_kwargs}
        from nbopt.components import Component
        recipe["optimizer"] = Component(self.optimizer.value, (), kwargs).to_text()
        if self.scheduler.value != "none":
            recipe["scheduler"] = from_text(self.scheduler.value)
        if self.early_stopping.value:
            recipe["early_stopping"] = {"monitor": "val_loss", "patience": self.patience.value}
        if self.normalize.value != "auto":
            recipe["normalize"] = self.normalize.value
        checked = [name for name in self._augment_order if name in self.augment and self.augment[name].value]
        checked += [name for name, box in self.augment.items() if box.value and name not in checked]
        extra_augment = [a for a in self._augment_order if a not in self.augment]
        if checked or extra_augment:
            recipe["augment"] = [a for a in self._augment_order if a in extra_augment or a in checked] + \
                [a for a in checked if a not in self._augment_order]
        if self.batchnorm.value:
            recipe["batchnorm"] = True
        if self.dropout.value:
            recipe["dropout"] = round(self.dropout.value, 3)
        if self.activation.value != "keep":
            recipe["activation"] = self.activation.value
        if self.prune_method.value != "none":
            recipe["prune"] = {**self._extra.get("prune", {}), "method": self.prune_method.value,
                               "amount": round(self.prune_amount.value, 3)}
        if self.teacher.value != "none":
            recipe["distill"] = {**self._extra.get("distill", {}), "teacher": self.teacher.value}
        recipe.update({k: v for k, v in self._extra.items() if k not in ("prune", "distill")})
        return recipe

    def from_recipe(self, recipe) -> None:
        """Set the controls from a recipe (text, dict, Recipe or Run); unknown keys are kept as they are."""
        from nbopt.components import parse_component
        from nbopt.recipe import parse_recipe
        if hasattr(recipe, "recipe"):  # a Run
            recipe = recipe.recipe
        if hasattr(recipe, "raw"):  # a Recipe
            recipe = recipe.raw
        if isinstance(recipe, str):
            recipe = load_yaml(recipe)[0]
        parse_recipe(recipe)  # the same validation as everywhere: a broken recipe is not loaded
        raw = dict(recipe)
        _choose(self.model, as_text(raw.pop("model")))
        _choose(self.data, as_text(raw.pop("data")))
        self.target.value = raw.pop("target", "") or ""
        self.task.value = raw.pop("task", "auto") or "auto"
        _set_number(self.epochs, raw.pop("epochs", recipe_default("epochs")))
        _choose(self.batch_size, raw.pop("batch_size", recipe_default("batch_size")))
        self.seed.value = raw.pop("seed", recipe_default("seed"))
        optimizer = parse_component(raw.pop("optimizer", recipe_default("optimizer")))
        _choose(self.optimizer, optimizer.name)
        self._optimizer_kwargs = dict(optimizer.kwargs)
        _set_number(self.lr, float(self._optimizer_kwargs.pop("lr", optimizer.args[0] if optimizer.args
                                                              else DEFAULT_LR)))
        _choose(self.scheduler, as_text(raw.pop("scheduler", "none") or "none"))
        es = raw.pop("early_stopping", None)
        self.early_stopping.value = bool(es)
        if isinstance(es, dict):
            self.patience.value = es.get("patience", recipe_default("early_stopping", "patience"))
            if set(es) - {"monitor", "patience"} or es.get("monitor", "val_loss") != "val_loss":
                raw["early_stopping"] = es  # settings the panel has no control for stay as written
        normalize = raw.get("normalize", "auto")
        self.normalize.value = raw.pop("normalize", "auto") if isinstance(normalize, str) else "auto"
        self._augment_order = [as_text(a) for a in (raw.pop("augment", None) or [])]
        for name, box in self.augment.items():
            box.value = name in self._augment_order
        self.batchnorm.value = bool(raw.pop("batchnorm", False))
        _set_number(self.dropout, float(raw.pop("dropout", 0.0) or 0.0))
        _choose(self.activation, as_text(raw.pop("activation", "keep") or "keep"))
        self._prune_from(raw)
        distill = raw.pop("distill", None)
        teacher = distill.get("teacher") if isinstance(distill, dict) else distill
        _choose(self.teacher, as_text(teacher) if teacher else "none")
        if isinstance(distill, dict):
            raw["distill"] = {k: v for k, v in distill.items() if k != "teacher"}
        self._extra = raw
        self._update_enabled()

    def _prune_from(self, raw: dict) -> None:
        """The prune controls from a recipe's `prune:`; its other settings stay in `raw`, as written."""
        prune = raw.pop("prune", None)
        self.prune_method.value = prune.get("method", recipe_default("prune", "method")) if prune else "none"
        if prune:
            _set_number(self.prune_amount, prune.get("amount", recipe_default("prune", "amount")))
            raw["prune"] = {k: v for k, v in prune.items() if k not in ("method", "amount")}

    def cell(self) -> str:
        return "%%nbopt train\n" + dump_yaml(self.to_recipe())

    # -- behaviour -----------------------------------------------------------------------------
    def _wire(self) -> None:
        self.data.observe(lambda change: self._update_enabled(), names="value")
        self.early_stopping.observe(lambda change: self._update_enabled(), names="value")
        self.prune_method.observe(lambda change: self._update_enabled(), names="value")
        self.buttons["Train"].on_click(lambda b: self._start(self._train))
        self.buttons["Compare with last"].on_click(lambda b: self._start(self._compare))
        self.buttons["Sweep"].on_click(lambda b: self._toggle_sweep())
        self.run_sweep.on_click(lambda b: self._start(self._sweep))
        self.buttons["Stop"].on_click(lambda b: self.stop())
        self.buttons["As cell"].on_click(lambda b: self.as_cell())
        self.buttons["Compare with last"].disabled = True

    def _update_enabled(self) -> None:
        image = self._is_image_data()
        for name, box in self.augment.items():
            box.disabled = image is False and name in IMAGE_AUGMENT_LABELS
            if box.disabled:
                box.value = False
        value = self.namespace.get(self.data.value)
        self.target.disabled = type(value).__name__ != "DataFrame"
        self.patience.disabled = not self.early_stopping.value
        self.prune_amount.disabled = self.prune_method.value == "none"

    def _toggle_sweep(self) -> None:
        self.sweep_box.layout.display = "none" if self.sweep_box.layout.display != "none" else ""

    def _start(self, job) -> None:
        """Validate first, in this thread (a mistake shows at once); then work in the background."""
        if self.thread is not None and self.thread.is_alive():
            self.error.value = "<span style='color:#b00'>still running — press Stop first</span>"
            return
        self.error.value = ""
        recipe = self.to_recipe()
        try:
            from nbopt.recipe import parse_recipe
            parse_recipe(recipe)
        except RecipeError as exc:
            self._show_error(exc)
            return
        self.guard = InterruptGuard()
        self.buttons["Stop"].disabled = False
        self.thread = threading.Thread(target=self._guarded, args=(job, recipe), daemon=True)
        self.thread.start()

    def _guarded(self, job, recipe: dict) -> None:
        try:
            job(recipe)
        except RecipeError as exc:
            self._show_error(exc)
        except Exception:  # a real failure: show its traceback inside the panel, not in another cell
            self.output.append_stdout(traceback.format_exc())
        finally:
            self.buttons["Stop"].disabled = True

    def _show_error(self, exc: RecipeError) -> None:
        self.error.value = f"<span style='color:#b00'>RecipeError: {html.escape(str(exc))}</span>"

    def _train(self, recipe: dict) -> None:
        run = nbopt.train(recipe, self.namespace, stop=self.guard, sink=self.sink)
        self.result = self.namespace["run"] = run
        self.last_recipe = recipe
        self.buttons["Compare with last"].disabled = False
        self.teacher.options = with_option(list(self.teacher.options), run.name)

    def _compare(self, recipe: dict) -> None:
        from nbopt.display.plots import figure_png
        variants = {"last": self.last_recipe, "current": recipe}
        result = nbopt.compare({"variants": variants}, self.namespace, live=False, stop=self.guard,
                               listeners=[_Progress(self.sink, "comparing")])
        self.result = self.namespace["comparison"] = result
        self.sink.figure(figure_png(result.plot()), "comparison")
        self.sink.status(repr(result), result._repr_html_())

    def _sweep(self, recipe: dict) -> None:
        from nbopt.display.plots import figure_png
        search, _ = load_yaml(self.search.value)
        self.sink.status(f"sweeping: {self.trials.value} trials with {self.sampler.value}…")
        result = nbopt.sweep({**recipe, "search": search}, self.namespace, trials=self.trials.value,
                             sampler=self.sampler.value, live=False, stop=self.guard)
        self.result = self.namespace["sweep"] = result
        if result.best_trial is not None:
            self.sink.figure(figure_png(result.plot()), "sweep")
        self.sink.status(repr(result), result._repr_html_())

    def stop(self) -> None:
        """Ask the running job to stop after its current step; the kernel is not interrupted."""
        if self.guard is not None:
            self.guard.request_stop()
            self.status.value += "<div><i>stopping after the current step…</i></div>"

    def as_cell(self) -> None:
        """Write the equivalent %%nbopt cell below the panel (JupyterLab), and show its text here too."""
        text = self.cell()
        self.cell_text.value = text
        self.cell_text.layout.display = ""
        insert_cell_below(text)

    def _layout(self) -> w.Widget:
        augment = w.GridBox(list(self.augment.values()), layout=w.Layout(grid_template_columns="repeat(5, 130px)"))
        left = w.VBox([self.model, self.data, self.target, self.task, self.epochs, self.batch_size, self.seed,
                       self.normalize])
        middle = w.VBox([self.optimizer, self.lr, self.scheduler, w.HBox([self.early_stopping, self.patience]),
                         self.activation, self.batchnorm, self.dropout])
        right = w.VBox([self.prune_method, self.prune_amount, self.teacher])
        columns = w.HBox([left, middle, right], layout=w.Layout(flex_flow="row wrap"))
        return w.VBox([w.HTML("<b>nbopt panel</b>"), columns,
                       w.HTML("augment (training batches only):"), augment,
                       w.HBox(list(self.buttons.values())), self.sweep_box, self.error, self.status, self.figure,
                       self.cell_text, self.output])

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)


_frontend = None


def insert_cell_below(text: str) -> None:
    """A new cell with `text` below the active one: through JupyterLab's own commands (ipylab) when
    the panel runs in JupyterLab, else IPython's set_next_input (shown after the next execution)."""
    global _frontend
    try:
        from ipylab import JupyterFrontEnd
    except ImportError:
        JupyterFrontEnd = None
    if JupyterFrontEnd is not None:
        if _frontend is None:
            _frontend = JupyterFrontEnd()
        _frontend.commands.execute("notebook:insert-cell-below")
        _frontend.commands.execute("notebook:replace-selection", {"text": text})
        return
    from IPython import get_ipython
    shell = get_ipython()
    if shell is not None:
        shell.set_next_input(text, replace=False)
