"""`devices:`, `nodes:` and `strategy:` — data- and model-parallel training on Lightning's own strategies.

In a notebook, `strategy: ddp` runs Lightning's fork-based notebook strategy (the kernel itself
cannot be re-launched); from `nbopt run` it is regular DDP, which starts one process per device.
Strategies that cannot run inside a notebook (FSDP, DeepSpeed) are refused there with the exact
command that runs them from a shell. These checks run before training so that a launch never
hangs on a problem we can see coming.
"""
from __future__ import annotations

import os

import torch

from nbopt.errors import RecipeError

STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_notebook", "fsdp", "deepspeed")
_SHELL_ONLY = {"fsdp", "deepspeed"}
_FORKING = {"ddp", "ddp_notebook"}


def is_distributed_child() -> bool:
    """True in the extra processes of a DDP launch from a shell (ranks other than 0): those `nbopt run`
    starts itself, and those `srun` or `torchrun` start."""
    names = ["RANK", "LOCAL_RANK", "NODE_RANK"]
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        names.append("SLURM_PROCID")
    return any(os.environ.get(name, "0") != "0" for name in names)


def lightning_strategy(recipe, interactive: bool) -> str:
    if recipe.devices == 1 and recipe.nodes == 1 and recipe.strategy == "auto":
        return "auto"
    if interactive and recipe.strategy in ("ddp", "auto"):
        return "ddp_notebook"
    return "ddp" if recipe.strategy == "auto" else recipe.strategy


def shell_command(recipe, name: str) -> str:
    return (f"%nbopt export {name} --to {name}.yaml, then in a shell: {launch_command(recipe, name)}")


def launch_command(recipe, name: str) -> str:
    """How to start the run from a shell: nbopt run itself on one machine; srun or torchrun on several."""
    devices = recipe.devices
    if recipe.nodes == 1:
        return (f"nbopt run {name}.yaml (on a SLURM cluster: srun --ntasks-per-node={devices} "
                f"nbopt run {name}.yaml)")
    return (f"srun --nodes={recipe.nodes} --ntasks-per-node={devices} nbopt run {name}.yaml on a SLURM cluster, "
            f"or on each of the {recipe.nodes} machines: torchrun --nnodes={recipe.nodes} "
            f"--nproc-per-node={devices} --rdzv-backend=c10d --rdzv-endpoint=FIRST_MACHINE:29500 "
            f"$(which nbopt) run {name}.yaml")


def started_by_cluster_launcher() -> bool:
    """True when srun or torchrun started this process as one of many (they set the world's size)."""
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def preflight(recipe, interactive: bool) -> None:
    """Refuse, with what to do instead, every launch that would fail or hang."""
    line = recipe.line("strategy") or recipe.line("devices")
    if recipe.strategy not in STRATEGIES:
        from nbopt.errors import unknown_name_message
        raise RecipeError(unknown_name_message("strategy", recipe.strategy, STRATEGIES), key="strategy", line=line)
    if recipe.strategy == "ddp_spawn":
        raise RecipeError("ddp_spawn pickles the whole Trainer into new processes, and a run's live callbacks "
                          "cannot be pickled; use strategy: ddp, which forks a notebook's kernel and starts one "
                          "process per device from `nbopt run`", key="strategy", line=line)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if recipe.strategy == "fsdp" and not gpus:
        raise RecipeError("fsdp shards the model across GPUs and Lightning runs it on GPUs only; this machine has "
                          "none — use strategy: ddp on CPU", key="strategy", line=line)
    if recipe.strategy == "deepspeed" and not gpus:
        raise RecipeError("deepspeed needs GPUs; this machine has none — use strategy: ddp on CPU",
                          key="strategy", line=line)
    if recipe.nodes > 1:
        name = recipe.name or ("this-run" if interactive else "RECIPE")
        if interactive:
            raise RecipeError(f"nodes: {recipe.nodes} needs a process on every machine, which a notebook kernel "
                              f"cannot start; {shell_command(recipe, name)}", key="nodes", line=recipe.line("nodes"))
        if not started_by_cluster_launcher():
            raise RecipeError(f"nodes: {recipe.nodes} needs a launcher that starts nbopt on every machine: "
                              f"{launch_command(recipe, name)}", key="nodes", line=recipe.line("nodes"))
    if recipe.devices == 1 and recipe.nodes == 1 and recipe.strategy == "auto":
        return
    available = gpus or (os.cpu_count() or 1)
    kind = "GPUs" if gpus else "CPU cores (one process per device)"
    if isinstance(recipe.devices, int) and recipe.devices > available:
        raise RecipeError(f"devices: {recipe.devices} but this machine has {available} {kind}",
                          key="devices", line=recipe.line("devices"))
    if interactive and recipe.strategy in _SHELL_ONLY:
        name = recipe.name or "this-run"
        raise RecipeError(f"{recipe.strategy} cannot start from a notebook kernel; run it from a shell: "
                          f"{shell_command(recipe, name)}", key="strategy", line=line)
    if interactive and recipe.strategy in _FORKING | {"auto"} and gpus and torch.cuda.is_initialized():
        raise RecipeError("CUDA is already initialised in this kernel, and a notebook DDP launch forks it, "
                          "which CUDA does not survive: restart the kernel and run this cell before anything "
                          "touches the GPU, or run it from a shell with `nbopt run`", key="strategy", line=line)
