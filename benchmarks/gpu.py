"""What does nbopt cost on a GPU, against a hand-written CUDA loop and plain Lightning?

Trains one ResNet on synthetic CIFAR-sized data (3×32×32 images, 10 classes; default 50,000
samples, of which nbopt's default 20 % validation split holds out 10,000) three ways, each without
and with batch augmentation (random horizontal flip, then pad-4-and-crop), and prints samples/second:

  (a) a hand-written CUDA loop, written for speed: the training and validation tensors on the GPU
      once, up front; a shuffled index batch (``randperm`` on the GPU) gathered from them each step;
      kornia.augmentation's RandomHorizontalFlip and RandomCrop(padding=4) on the batch; channels-last
      batches and weights; bf16 autocast; torch's fused AdamW; the loss summed on the GPU and read
      once per epoch
  (b) plain Lightning as its docs write it: a LightningModule with ``self.log`` every step, the same
      kornia transforms in ``on_after_batch_transfer`` (Lightning's recipe for GPU augmentation),
      ``DataLoader(TensorDataset(x, y), shuffle=True)`` over the CPU tensors and
      ``Trainer(accelerator="gpu", devices=1, precision="bf16-mixed")``, otherwise the default Trainer
      (progress bar, logger, checkpointing, model summary, sanity check); torch's default AdamW and
      memory layout (no fused kernels, no channels-last)
  (c) ``nbopt.train(recipe, namespace, live=False)`` with ``model: resnet(depth=20)``,
      ``data: images`` (the ``(X, y)`` CPU tensors, from the namespace), ``precision: bf16-mixed``,
      ``optimizer: adamw(...)`` and ``augment: [hflip, crop(4)]``: whatever nbopt makes of that
      (where it gathers the batches of in-memory data, and how they reach the GPU, is nbopt's choice
      and part of what is measured)

Same model, weights and data. The model is nbopt's ``resnet`` as ``nbopt.check(recipe)`` builds it
(``model.net``), deep-copied for (a) and (b), so all three start from the same weights; (a) and (b)
take the training and validation split of that plan, normalised once up front with nbopt's
training-split statistics (nbopt normalises each batch on the GPU, after augmentation; in (a) and (b)
the crop's padding therefore fills with the mean colour, not black, which costs nothing). Every
variant validates once per epoch, in nbopt's validation batches (4× the training batch up to 4 MB of
inputs, never fewer rows than a training batch), and prints its last
validation accuracy as a sanity check. The script checks that nbopt's own plan has the same
initial weights and split.

What is timed. "fit samples/s": training samples × epochs over the wall time from the optimizer's
(a) or the Trainer's (b) construction to the end of the last validation (c: nbopt's own fit time,
``run.metrics["seconds"]``); "epoch samples/s": the median epoch (from the second on; training and
validation, measured from Lightning's ``on_train_epoch_start`` to ``on_train_epoch_end`` in (b) and
(c), with a CUDA synchronise at the end of each epoch in (a)), i.e. the steady state.

Augmentation's share of a step: the augmentation alone (the kornia pipeline on a gathered
training batch, CUDA-synchronised, median of 30) over (a)'s training step with augmentation (an
epoch's training phase over its steps, median over epochs); and, as a cross-check for every
variant, 1 − (epoch samples/s with augmentation) / (without).

All variants run in this one process (the CUDA context, cuDNN's and kornia's caches are shared),
one at a time, after a warm-up round on a small subset that is not measured, in an order that
rotates every round; the tables give medians over the rounds. ``torch.backends.cudnn.benchmark``
stays at torch's default (off) for all three.

    python benchmarks/gpu.py              # one CUDA GPU; sized to take under 5 minutes
    python benchmarks/gpu.py --dry-run    # every variant on the CPU at tiny sizes, fp32: about 15 s

Without a CUDA GPU (and without --dry-run) it says so in one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # markdown_table, beside this script
sys.path.insert(1, str(HERE.parent))  # the nbopt of this checkout

from markdown_table import markdown_table  # noqa: E402
from measuring import epoch_timer, plain_classifier, silenced  # noqa: E402

VARIANTS = {"a": "(a) hand-written loop", "b": "(b) plain Lightning", "c": "(c) nbopt"}
AUGMENT = "[hflip, crop(4)]"
TARGET_RATIO = 0.9  # nbopt ≥ 0.9× the hand-written loop
TARGET_AUGMENT = 0.10  # augmentation < 10 % of a step
REFUSAL = ("gpu.py needs a CUDA GPU, and torch sees none; run python benchmarks/gpu.py --dry-run "
           "for every variant on the CPU at tiny sizes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="run every variant on the CPU at tiny sizes in fp32 (512 samples, resnet depth 8, "
                             "batch 64, 1 epoch, 1 round, no warm-up, one thread), to check that the script works")
    parser.add_argument("--samples", type=int, default=None, help="synthetic samples (default 50,000; 512 dry)")
    parser.add_argument("--depth", type=int, default=None, help="resnet depth, 6n+2 (default 20; 8 dry)")
    parser.add_argument("--width", type=int, default=16, help="resnet channels of the first stage (default 16)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default 512; 64 dry)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per measurement (default 4; 1 dry)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds; tables give medians (default 2; 1 dry)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (default 5e-4)")
    parser.add_argument("--variants", default="a,b,c", help="comma-separated subset of a,b,c (default all)")
    parser.add_argument("--augment", choices=("both", "off", "on"), default="both",
                        help="measure without augmentation, with it, or both (default)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up round")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.samples = args.samples or (512 if dry else 50_000)
    args.depth = args.depth or (8 if dry else 20)
    args.batch_size = args.batch_size or (64 if dry else 512)
    args.epochs = args.epochs or (1 if dry else 4)
    args.rounds = args.rounds or (1 if dry else 2)
    args.warmup = not (args.no_warmup or dry)
    args.precision = "32-true" if dry else "bf16-mixed"
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants takes a comma-separated subset of a,b,c, got {','.join(unknown) or 'nothing'}")
    args.augments = {"both": [False, True], "off": [False], "on": [True]}[args.augment]
    return args


# -- the data and the plan ------------------------------------------------------------------------

def synthetic_images(n: int, seed: int = 0):
    """CIFAR-sized float images in [0, 1]: a smooth random prototype per class plus pixel noise."""
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(torch.rand(10, 3, 8, 8, generator=gen), size=(32, 32), mode="bilinear",
                               align_corners=False)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = torch.empty(n, 3, 32, 32)
    for start in range(0, n, 10_000):  # in chunks: the noise of 50,000 images at once would double the memory
        part = slice(start, start + 10_000)
        x[part] = (prototypes[y[part]] + 0.35 * torch.randn(len(y[part]), 3, 32, 32, generator=gen)).clamp_(0, 1)
    return x, y


def recipe(args, seed: int, augment: bool) -> str:
    text = (f"model: resnet(depth={args.depth}, width={args.width})\n"
            "data: images\n"
            f"epochs: {args.epochs}\n"
            f"batch_size: {args.batch_size}\n"
            f"precision: {args.precision}\n"
            f"optimizer: adamw(lr={args.lr}, weight_decay={args.weight_decay})\n"
            f"seed: {seed}\n")
    return text + (f"augment: {AUGMENT}\n" if augment else "")


def split_tensors(plan):
    """The training and validation split of nbopt's plan, normalised once with its training statistics."""
    d = plan.data
    prep = d.normalization.apply if d.normalization is not None else (lambda x: x)
    return prep(d.train.x.float()), d.train.y, prep(d.val.x.float()), d.val.y


def fingerprint(plan) -> str:
    """Initial weights and the split (labels, and a sum of the inputs): what every variant must share."""
    digest = hashlib.sha1()
    for tensor in plan.model.net.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for split in (plan.data.train, plan.data.val):
        digest.update(split.y.numpy().tobytes())
        digest.update(f"{float(split.x.double().sum()):.6e}".encode())
    return digest.hexdigest()[:12]


def kornia_pipeline(size=(32, 32)):
    """(a)'s and (b)'s augmentation: the kornia modules nbopt's `hflip` and `crop(4)` build."""
    import kornia.augmentation as K
    from torch import nn
    return nn.Sequential(K.RandomHorizontalFlip(p=0.5), K.RandomCrop(size, padding=4))


# -- measuring ------------------------------------------------------------------------------------

def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_raw(plan, args, device, augment: bool, seed: int) -> dict:
    """(a): the loop someone writes for speed, with the data on the GPU from the start."""
    import torch
    import torch.nn.functional as F

    from nbopt.data.resolve import eval_batch_size
    x, y, vx, vy = (t.to(device) for t in split_tensors(plan))
    net = copy.deepcopy(plan.model.net).to(device, memory_format=torch.channels_last)
    augmenter = kornia_pipeline().to(device) if augment else None
    mixed = args.precision == "bf16-mixed"
    batch, n = args.batch_size, len(x)
    val_batch = eval_batch_size(batch, vx.shape[1:])  # nbopt's validation batches
    torch.manual_seed(seed)
    sync(device)
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)
    epoch_s, train_s = [], []
    for _ in range(args.epochs):
        epoch_start = time.perf_counter()
        net.train()
        order = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, batch):
            index = order[start:start + batch]
            xb, yb = x[index], y[index]
            if augmenter is not None:
                xb = augmenter(xb)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
                loss = F.cross_entropy(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        float(loss_sum)  # the epoch's loss, read once (this waits for the GPU)
        train_s.append(time.perf_counter() - epoch_start)
        net.eval()
        correct = torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
            for start in range(0, len(vx), val_batch):
                out = net(vx[start:start + val_batch].contiguous(memory_format=torch.channels_last))
                correct += (out.argmax(1) == vy[start:start + val_batch]).sum()
        accuracy = int(correct) / len(vx)
        epoch_s.append(time.perf_counter() - epoch_start)
    fit_s = time.perf_counter() - started
    steps = -(-n // batch)
    return {"fit_s": fit_s, "epoch_s": epoch_s, "step_ms": 1000 * median(train_s[1:] or train_s) / steps,
            "samples": n, "val_acc": accuracy}


def run_lightning(plan, args, device, augment: bool, seed: int, root: str) -> dict:
    """(b): Lightning the way its docs write it, kornia in ``on_after_batch_transfer``."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from nbopt.data.resolve import eval_batch_size
    x, y, vx, vy = split_tensors(plan)
    torch.manual_seed(seed)
    model = plain_classifier(pl, copy.deepcopy(plan.model.net), lambda parameters: torch.optim.AdamW(
        parameters, lr=args.lr, weight_decay=args.weight_decay), kornia_pipeline() if augment else None)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(vx, vy), batch_size=eval_batch_size(args.batch_size, vx.shape[1:]))
    timer = epoch_timer(pl)
    started = time.perf_counter()
    trainer = pl.Trainer(accelerator=device.type if device.type == "cpu" else "gpu", devices=1,
                         precision=args.precision, max_epochs=args.epochs, default_root_dir=root, callbacks=[timer])
    trainer.fit(model, train_loader, val_loader)
    sync(device)
    return {"fit_s": time.perf_counter() - started, "epoch_s": timer.seconds, "samples": len(x),
            "val_acc": float(trainer.callback_metrics["val_acc"])}


def run_nbopt(images, args, augment: bool, seed: int) -> dict:
    """(c): the recipe, with the data from the namespace; nbopt's own fit time."""
    import nbopt
    text = recipe(args, seed, augment)
    run = nbopt.train(text, {"images": images}, live=False)
    plan = nbopt.check(text, {"images": images})
    return {"fit_s": run.metrics["seconds"], "epoch_s": list(run.history["seconds"]),
            "samples": plan.data.sizes["train"], "val_acc": float(run.history[plan.metric_key].iloc[-1]),
            "fingerprint": fingerprint(plan)}


def time_augmentation(plan, device, batch: int, repeats: int = 30) -> float:
    """Milliseconds the kornia pipeline takes on one gathered training batch on the device (median)."""
    import torch
    x = split_tensors(plan)[0].to(device)
    augmenter = kornia_pipeline().to(device)
    times = []
    for i in range(repeats + 3):  # the first three warm up
        xb = x[torch.randperm(len(x), device=device)[:batch]]
        sync(device)
        start = time.perf_counter()
        augmenter(xb)
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * median(times)


def median(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def free(device) -> None:
    import torch
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- report ---------------------------------------------------------------------------------------

def summarise(results: list[dict]) -> dict:
    fit = [r["samples"] * len(r["epoch_s"]) / r["fit_s"] for r in results]
    epoch = [r["samples"] / median(r["epoch_s"][1:] or r["epoch_s"]) for r in results]
    return {"fit": median(fit), "epoch": median(epoch), "val_acc": median([r["val_acc"] for r in results]),
            "step_ms": median([r.get("step_ms", math.nan) for r in results]), "n": len(results)}


def ratio_text(stats, x, y, augment) -> str:
    if (x, augment) not in stats or (y, augment) not in stats:
        return "–"
    sx, sy = stats[(x, augment)], stats[(y, augment)]
    return f"{sx['fit'] / sy['fit']:.2f} / {sx['epoch'] / sy['epoch']:.2f}"


def report(stats: dict, args, augment_ms: float | None) -> float | None:
    """The tables, ratios and targets; returns augmentation's share of (a)'s step (None: not measured)."""
    label = {False: "none", True: AUGMENT}
    rows = [(VARIANTS[v], label[aug], f"{s['fit']:,.0f}", f"{s['epoch']:,.0f}", f"{s['val_acc']:.3f}")
            for (v, aug), s in stats.items()]
    print(markdown_table(("variant", "augment", "fit samples/s", "epoch samples/s", "val acc"), rows))
    print()
    pairs = [("c", "a"), ("c", "b"), ("b", "a")]
    rows = [(f"{VARIANTS[x].split()[0]}/{VARIANTS[y].split()[0]}",
             *(ratio_text(stats, x, y, aug) for aug in args.augments))
            for x, y in pairs if x in args.variants and y in args.variants]
    if rows:
        print(markdown_table(("ratio (fit / epoch)", *(f"augment: {label[a]}" for a in args.augments)), rows))
        print()

    targets = []
    for aug in args.augments:
        if ("c", aug) in stats and ("a", aug) in stats:
            fit = stats[("c", aug)]["fit"] / stats[("a", aug)]["fit"]
            epoch = stats[("c", aug)]["epoch"] / stats[("a", aug)]["epoch"]
            targets.append((f"(c) ≥ {TARGET_RATIO}× (a), augment: {label[aug]}", f"{fit:.2f}× / {epoch:.2f}×",
                            "met" if fit >= TARGET_RATIO else "not met"))
    share = None
    if augment_ms is not None:
        with_aug, without = (stats.get(("a", aug), {}).get("step_ms", math.nan) for aug in (True, False))
        line = f"augmentation alone: {augment_ms:.2f} ms per batch of {args.batch_size}"
        if not math.isnan(with_aug):
            share = augment_ms / with_aug
            line += f"; (a)'s training step {with_aug:.2f} ms with augmentation"
            line += f", {without:.2f} ms without" if not math.isnan(without) else ""
            targets.append((f"augmentation < {TARGET_AUGMENT:.0%} of (a)'s step", f"{share:.1%}",
                            "met" if share < TARGET_AUGMENT else "not met"))
        print(line)
        implied = [f"{VARIANTS[v].split()[0]} {1 - stats[(v, True)]['epoch'] / stats[(v, False)]['epoch']:.0%}"
                   for v in args.variants if (v, True) in stats and (v, False) in stats]
        if implied:
            print("share of an epoch's time that augmentation adds, 1 − (with / without) epoch samples/s: "
                  + ", ".join(implied))
        print()
    if targets:
        print(markdown_table(("target", "measured (fit / epoch)", "verdict"), targets))
        print("(the ratio verdicts use the fit figure)")
        print()
    return share


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a machine with a GPU
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print(REFUSAL, file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_bf16_supported():
        print("gpu.py measures bf16-mixed training, which this GPU does not support", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        torch.set_num_threads(1)  # tiny models; and a second thread only stalls on a busy machine

    import kornia
    import pytorch_lightning as pl
    import nbopt  # imported before the clock starts

    tmp = tempfile.mkdtemp(prefix="nbopt-gpu-bench-")
    os.environ["NBOPT_RUNS_DIR"] = os.path.join(tmp, "runs")
    root = os.path.join(tmp, "lightning")
    began = time.perf_counter()
    try:
        where = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), dry run")
        print(f"{where}; torch {torch.__version__}, Lightning {pl.__version__}, kornia {kornia.__version__}, "
              f"Python {platform.python_version()}")
        print(f"resnet(depth={args.depth}, width={args.width}) on {args.samples:,} synthetic 3×32×32 images, "
              f"10 classes; batch {args.batch_size}, {args.epochs} epoch(s), {args.precision}, "
              f"AdamW lr {args.lr:g} wd {args.weight_decay:g}; {args.rounds} round(s)")
        if args.dry_run:
            print("dry run: tiny sizes on the CPU, no warm-up; the numbers only show that every variant runs")
        images = synthetic_images(args.samples)
        configs = [(v, aug) for aug in args.augments for v in args.variants]

        def measure(v, aug, seed, plan, data, settings):
            with silenced():
                if v == "a":
                    result = run_raw(plan, settings, device, aug, seed)
                elif v == "b":
                    result = run_lightning(plan, settings, device, aug, seed, root)
                else:
                    result = run_nbopt(data, settings, aug, seed)
            free(device)
            return result

        if args.warmup:  # cuDNN's and kornia's first calls, Lightning's and nbopt's lazy imports: not measured
            small = synthetic_images(min(args.samples, 8 * args.batch_size))
            one_epoch = copy.copy(args)
            one_epoch.epochs = 1
            plan = nbopt.check(recipe(args, 0, False), {"images": small})
            for v, aug in configs:
                measure(v, aug, 0, plan, small, one_epoch)
            del plan, small

        raw: dict = {config: [] for config in configs}
        augment_times = []
        for rnd in range(args.rounds):
            seed = rnd
            plan = nbopt.check(recipe(args, seed, False), {"images": images})
            expected = fingerprint(plan)
            shift = rnd % len(configs)
            for v, aug in configs[shift:] + configs[:shift]:
                result = measure(v, aug, seed, plan, images, args)
                if result.get("fingerprint", expected) != expected:
                    raise RuntimeError(f"nbopt's plan differs from the baselines' ({result['fingerprint']} vs "
                                       f"{expected}): not the same initial weights or split")
                raw[(v, aug)].append(result)
                fit = result["samples"] * len(result["epoch_s"]) / result["fit_s"]
                print(f"  round {rnd + 1}/{args.rounds} {VARIANTS[v]:<23} augment {'on ' if aug else 'off'}: "
                      f"{fit:9,.0f} samples/s (fit), val acc {result['val_acc']:.3f}", flush=True)
            if True in args.augments:
                augment_times.append(time_augmentation(plan, device, args.batch_size))
            del plan
            free(device)
        augment_ms = median(augment_times) if augment_times else None
        print()
        stats = {config: summarise(results) for config, results in raw.items()}
        share = report(stats, args, augment_ms)
        total = time.perf_counter() - began
        print(f"total time {total:.0f} s" + ("" if args.dry_run else " (goal: under 5 minutes)"))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "device": where, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "raw": {f"{v}{'+augment' if aug else ''}": rs for (v, aug), rs in raw.items()},
                "summary": {f"{v}{'+augment' if aug else ''}": s for (v, aug), s in stats.items()},
                "augment_ms": augment_ms, "augment_share": share, "total_s": total}, indent=1, default=float))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
