"""How much does nbopt cost over a hand-written loop and over plain Lightning?

Trains the same model on the same data with the same optimizer (Adam, lr 1e-3), batch size and
number of epochs several ways, alternating, for several rounds, and prints median samples/second:

  (a)  a hand-written PyTorch loop over in-memory tensors (shuffled index batches), run the way
       people run it: in a process where nbopt never ran, so glibc's allocator is untuned
  (a*) the same loop in the process where nbopt runs (nbopt's process-wide allocator tuning on)
  (b)  plain Lightning as people write it: DataLoader(TensorDataset, shuffle=True), the default
       Trainer (progress bar, logger, checkpointing, model summary, sanity check) and self.log
       every step
  (c)  nbopt.train(recipe) with live output on (one line per epoch outside a notebook)
  (cn) nbopt.train(recipe) in a real IPython kernel, i.e. live output in notebook mode (status
       line and figure updated through display handles and sent over ZMQ to this script)
  (d)  nbopt.train(recipe, live=False)
  (dn) (d) in the kernel of (cn): (cn)/(dn) is what the notebook display itself costs, (dn)/(d) what
       running inside a kernel process costs
  (c1) (c) with `checkpoint_every: 1` instead of the default `auto` (only with --checkpoint-cost):
       what writing last.ckpt after every epoch costs

Workloads: W1, the digits MLP (64→128→64→10) on scikit-learn's digits; W2, the small CNN
(conv 16, conv 32, linear) on a synthetic 20,000-sample 1×28×28 10-class set.

Every variant gets the training split and validation split of ``nbopt.check(recipe)`` (same
seed, so the same rows, the same normalisation and the same initial weights) and validates once
per epoch, as nbopt does. Samples/second count training samples × epochs over the wall time of
the fit: from Trainer (or optimizer) construction to the end of the last epoch, so the epochs
with their validation and the framework's own work (Lightning's sanity check, logging and
checkpoints; nbopt's callbacks, run-folder writes and live output); not data loading, model
building or nbopt's final evaluation. A second figure, "epoch", uses the median time of one
epoch (epochs 2..N), i.e. the steady state without start-up costs.

Variants run in separate worker processes (so that the baselines see the allocator as people
have it), one measurement at a time, in a rotating order. The machine is sampled before and
during each measurement: before, the script waits (up to --quiet-wait seconds) until other
processes leave the CPUs alone; during, it records how many cores other processes used
("busy" column) and repeats a measurement that was disturbed (--retries).

    python benchmarks/overhead.py            # about 3-4 minutes on 2 CPU cores
    python benchmarks/overhead.py --quick    # about a minute
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # measuring, beside this script

from measuring import epoch_timer, plain_classifier, silenced  # noqa: E402

WORKLOADS = {
    "W1": {
        "title": "W1: digits, MLP 64→128→64→10",
        "recipe": "model: mlp(hidden=[128, 64])\ndata: digits\n",
        "warmup": "model: mlp(hidden=[128, 64])\ndata: digits\n",
    },
    "W2": {
        "title": "W2: synthetic 20,000 × 1×28×28, 10 classes, CNN conv16-conv32-linear",
        "recipe": "model: cnn(width=16)\ndata: synthetic(n=20000, shape=[1, 28, 28], classes=10)\n",
        "warmup": "model: cnn(width=16)\ndata: synthetic(n=1000, shape=[1, 28, 28], classes=10)\n",
    },
}

VARIANTS = {
    "a": "(a)  raw PyTorch loop",
    "a*": "(a*) raw loop, allocator tuned",
    "b": "(b)  plain Lightning",
    "c": "(c)  nbopt, live (terminal)",
    "cn": "(cn) nbopt, live (notebook)",
    "d": "(d)  nbopt, live=False",
    "dn": "(dn) nbopt, live=False, kernel",
    "c1": "(c1) nbopt, ckpt every epoch",
}
WORKER_OF = {"a": "fresh", "b": "fresh", "a*": "nbopt", "c": "nbopt", "d": "nbopt", "cn": "kernel", "dn": "kernel",
             "c1": "nbopt"}


def make_recipe(workload: str, epochs: int, seed: int, warmup: bool = False) -> str:
    body = WORKLOADS[workload]["warmup" if warmup else "recipe"]
    return body + f"epochs: {epochs}\nbatch_size: 64\noptimizer: adam(lr=1e-3)\nseed: {seed}\n"


# -- measuring the machine ------------------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float:
    """CPU seconds all processes have used so far (user, system, irq, steal), or nan off Linux."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except OSError:
        return math.nan
    return (sum(fields) - fields[3] - fields[4]) / _HZ


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall time of a block, and how many cores other processes used meanwhile."""

    def __enter__(self):
        self.busy0, self.own0, self.t0 = _busy_seconds(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        other = (_busy_seconds() - self.busy0) - (_own_cpu() - self.own0)
        self.busy = max(other, 0.0) / self.wall if self.wall > 0 and not math.isnan(other) else math.nan
        return False


def wait_for_quiet(limit_s: float, threshold: float = 0.15, window: float = 0.5) -> float:
    """Wait until the CPUs have been (nearly) idle for two windows; returns the seconds waited."""
    start = time.perf_counter()
    calm = 0
    while time.perf_counter() - start < limit_s and calm < 2:
        b0 = _busy_seconds()
        time.sleep(window)
        used = (_busy_seconds() - b0) / window
        calm = calm + 1 if not used > threshold else 0
    return time.perf_counter() - start


# -- the variants ---------------------------------------------------------------------------

def _plan(workload: str, epochs: int, seed: int, warmup: bool = False):
    import nbopt
    return nbopt.check(make_recipe(workload, epochs, seed, warmup))


def tensors(plan):
    """The training and validation tensors exactly as nbopt's model sees them, normalised.

    nbopt keeps in-memory splits as tensors and normalises them either up front or per batch
    (``plan.data.normalization.apply``); a hand-written loop normalises once, up front.
    """
    d = plan.data
    norm = d.normalization
    prep = norm.apply if hasattr(norm, "apply") else (lambda x: x)
    return prep(d.train.x), d.train.y, prep(d.val.x), d.val.y


def fingerprint(plan) -> str:
    """Checksum of the data splits and initial weights, to check that every variant trains the same."""
    import hashlib
    digest = hashlib.sha1()
    for tensor in (*tensors(plan), *plan.model.net.state_dict().values()):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def run_raw(workload: str, epochs: int, seed: int, warmup: bool = False) -> dict:
    """(a): the loop people write over tensors already in memory."""
    import torch
    from torch import nn
    plan = _plan(workload, epochs, seed, warmup)
    net = plan.model.net
    x, y, vx, vy = tensors(plan)
    batch = plan.recipe.batch_size
    checksum = fingerprint(plan)
    torch.manual_seed(seed)
    with Meter() as meter:
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        epoch_seconds = []
        for _ in range(epochs):
            started = time.perf_counter()
            net.train()
            order = torch.randperm(len(x))
            running = 0.0
            for start in range(0, len(x), batch):
                index = order[start:start + batch]
                optimizer.zero_grad()
                loss = loss_fn(net(x[index]), y[index])
                loss.backward()
                optimizer.step()
                running += loss.item()
            net.eval()
            correct = 0
            with torch.no_grad():
                for start in range(0, len(vx), batch):
                    out = net(vx[start:start + batch])
                    correct += int((out.argmax(1) == vy[start:start + batch]).sum())
            epoch_seconds.append(time.perf_counter() - started)
    return {"fit_s": meter.wall, "busy": meter.busy, "epoch_s": epoch_seconds, "samples": len(x),
            "val_acc": correct / len(vx), "fingerprint": checksum}


def run_lightning(workload: str, epochs: int, seed: int, root: str, warmup: bool = False) -> dict:
    """(b): Lightning the way its docs and most notebooks write it."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    plan = _plan(workload, epochs, seed, warmup)
    x, y, vx, vy = tensors(plan)
    batch = plan.recipe.batch_size
    checksum = fingerprint(plan)
    torch.manual_seed(seed)
    model = plain_classifier(pl, plan.model.net, lambda parameters: torch.optim.Adam(parameters, lr=1e-3))
    train_loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)
    val_loader = DataLoader(TensorDataset(vx, vy), batch_size=batch)
    timer = epoch_timer(pl)
    with Meter() as meter:  # nbopt's fit time includes its Trainer construction too
        trainer = pl.Trainer(max_epochs=epochs, default_root_dir=root, callbacks=[timer])
        trainer.fit(model, train_loader, val_loader)
    return {"fit_s": meter.wall, "busy": meter.busy, "epoch_s": timer.seconds, "samples": len(x),
            "val_acc": float(trainer.callback_metrics["val_acc"]), "fingerprint": checksum}


def run_nbopt(workload: str, epochs: int, seed: int, live: bool, warmup: bool = False, extra: str = "") -> dict:
    """(c), (c1), (d) and, inside a kernel, (cn) and (dn). Fit time is nbopt's own: the wall time of trainer.fit."""
    import nbopt
    recipe = make_recipe(workload, epochs, seed, warmup) + extra
    with Meter() as meter:
        run = nbopt.train(recipe, live=live)
    plan = nbopt.check(recipe)
    fit = run.metrics["seconds"]
    # the meter covers the whole call; the fit is most of it, so its busy figure stands for the fit
    return {"fit_s": fit, "busy": meter.busy, "call_s": meter.wall, "epoch_s": list(run.history["seconds"]),
            "samples": len(plan.data.train.x), "val_acc": float(run.history[plan.metric_key].iloc[-1]),
            "fingerprint": fingerprint(plan)}


def run_variant(variant: str, workload: str, epochs: int, seed: int, root: str, warmup: bool = False) -> dict:
    if variant in ("a", "a*"):
        return run_raw(workload, epochs, seed, warmup)
    if variant == "b":
        return run_lightning(workload, epochs, seed, root, warmup)
    extra = "checkpoint_every: 1\n" if variant == "c1" else ""
    return run_nbopt(workload, epochs, seed, live=variant in ("c", "cn", "c1"), warmup=warmup, extra=extra)


# -- worker processes -----------------------------------------------------------------------

def worker_main(kind: str, conn, runs_dir: str, threads: int | None = None) -> None:
    os.environ["NBOPT_RUNS_DIR"] = runs_dir
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        import nbopt  # noqa: F401  (imports only; nothing process-wide happens before a run)
        from nbopt import _perf
        if kind == "nbopt":
            _perf.tune_allocator()  # what the first nbopt.train() in a process does
        conn.send({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "tuned": _perf._tuned})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        return
    while True:
        message = conn.recv()
        if message is None:
            return
        try:
            with silenced():
                result = run_variant(*message)
            result["tuned"] = _perf._tuned
            conn.send(result)
        except BaseException:
            conn.send({"error": traceback.format_exc()})


class Worker:
    def __init__(self, kind: str, runs_dir: str, threads: int | None = None):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(kind, child, runs_dir, threads), daemon=True)
        self.process.start()
        self.info = None

    def ready(self) -> dict:
        self.info = self.conn.recv()
        if "error" in self.info:
            raise RuntimeError(self.info["error"])
        return self.info

    def run(self, *args) -> dict:
        self.conn.send(args)
        return self.conn.recv()

    def close(self):
        with contextlib.suppress(Exception):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()


class KernelWorker:
    """A real IPython kernel (ipykernel) with this script importable; nbopt sees a notebook."""

    def __init__(self, runs_dir: str, threads: int | None = None):
        self.threads = threads
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager
        self.spec_dir = tempfile.mkdtemp(prefix="nbopt-bench-kernels-")
        spec = Path(self.spec_dir) / "nbopt-bench"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nbopt benchmark", "language": "python"}))
        self.km = KernelManager(kernel_name="nbopt-bench",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[self.spec_dir]))
        import subprocess
        self.km.start_kernel(env={**os.environ, "NBOPT_RUNS_DIR": runs_dir},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        self.info = None
        self.displays = []

    def _execute(self, code: str, timeout: float = 900) -> tuple[str, int]:
        msg_id = self.kc.execute(code)
        out, updates, error = [], 0, None
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("display_data", "update_display_data"):
                updates += 1
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        if error:
            raise RuntimeError(error)
        return "".join(out), updates

    def ready(self) -> dict:
        code = textwrap.dedent(f"""
            import sys, json, warnings
            sys.path.insert(0, {str(HERE)!r})
            warnings.simplefilter("ignore")
            import torch, overhead as _bench
            if {self.threads or 0}:
                torch.set_num_threads({self.threads or 0})
            import nbopt
            from nbopt.environment import in_notebook
            print("@@" + json.dumps({{"ready": True, "threads": torch.get_num_threads(),
                                     "torch": torch.__version__, "notebook": in_notebook()}}))
        """)
        text, _ = self._execute(code)
        self.info = json.loads(text.split("@@", 1)[1])
        return self.info

    def run(self, variant, workload, epochs, seed, root, warmup=False) -> dict:
        code = (f"_r = _bench.run_nbopt({workload!r}, {epochs}, {seed}, live={variant == 'cn'}, warmup={warmup}); "
                f"_r['tuned'] = __import__('nbopt._perf')._perf._tuned; print('@@' + json.dumps(_r))")
        try:
            text, updates = self._execute(code)
        except RuntimeError as exc:
            return {"error": str(exc)}
        result = json.loads(text.split("@@", 1)[1])
        result["display_messages"] = updates
        return result

    def close(self):
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        shutil.rmtree(self.spec_dir, ignore_errors=True)


# -- orchestration and report ---------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summarise(results: list[dict], busy_limit: float) -> dict:
    """Medians over the undisturbed measurements when there are any, else over all of them."""
    clean = [r for r in results if not r["busy"] > busy_limit]
    n_clean = len(clean)
    results = clean or results
    fit = [r["samples"] * len(r["epoch_s"]) / r["fit_s"] for r in results]
    epoch = [r["samples"] / median(r["epoch_s"][1:] or r["epoch_s"]) for r in results]
    return {"fit": median(fit), "epoch": median(epoch), "busy": median([r["busy"] for r in results]),
            "busy_max": max((r["busy"] for r in results if not math.isnan(r["busy"])), default=math.nan),
            "val_acc": median([r["val_acc"] for r in results]),
            "call_s": median([r.get("call_s", math.nan) for r in results]),
            "fit_all": fit, "n": len(results), "clean": n_clean}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per workload (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one round, fewer W1 epochs: about a minute")
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated subset of W1,W2")
    parser.add_argument("--w1-epochs", type=int, default=None, help="epochs for W1 (default 20; 10 with --quick)")
    parser.add_argument("--w2-epochs", type=int, default=1, help="epochs for W2 (default 1)")
    parser.add_argument("--no-notebook", action="store_true", help="skip (cn) and (dn), the runs in an IPython kernel")
    parser.add_argument("--checkpoint-cost", action="store_true",
                        help="add (c1), nbopt writing last.ckpt after every epoch instead of checkpoint_every: auto")
    parser.add_argument("--no-tuned-raw", action="store_true", help="skip (a*), the raw loop with nbopt's allocator")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="seconds to wait for idle CPUs before each measurement (default 20; 0 with --quick)")
    parser.add_argument("--busy-limit", type=float, default=0.25,
                        help="a measurement during which other processes used more cores than this is repeated")
    parser.add_argument("--retries", type=int, default=None, help="repeats of a disturbed measurement (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads in every variant (default: torch's choice, one per core)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    w1_epochs = args.w1_epochs or (10 if args.quick else 20)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 20.0)
    retries = args.retries if args.retries is not None else (0 if args.quick else 1)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    epochs_of = {"W1": w1_epochs, "W2": args.w2_epochs}
    variants = [v for v in VARIANTS if not (v in ("cn", "dn") and args.no_notebook)
                and not (v == "a*" and args.no_tuned_raw) and not (v == "c1" and not args.checkpoint_cost)]

    tmp = tempfile.mkdtemp(prefix="nbopt-bench-")
    runs_dir, lightning_dir = os.path.join(tmp, "runs"), os.path.join(tmp, "lightning")
    began = time.perf_counter()
    workers: dict[str, object] = {}
    try:
        workers["fresh"] = Worker("fresh", runs_dir, args.threads)
        if any(WORKER_OF[v] == "nbopt" for v in variants):
            workers["nbopt"] = Worker("nbopt", runs_dir, args.threads)
        if "cn" in variants or "dn" in variants:
            try:
                workers["kernel"] = KernelWorker(runs_dir, args.threads)
            except Exception as exc:  # no ipykernel / jupyter_client: measure the rest
                print(f"note: no IPython kernel could be started ({exc}); skipping (cn) and (dn)")
                variants = [v for v in variants if v not in ("cn", "dn")]
        infos = {kind: w.ready() for kind, w in workers.items()}
        if "kernel" in infos and not infos["kernel"].get("notebook"):
            print("note: nbopt does not see a notebook inside the kernel; (cn) measures terminal mode")
        info = infos["fresh"]
        print(f"torch {info['torch']}, {info['threads']} intra-op threads, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
        print(f"rounds {rounds}; W1 {w1_epochs} epochs, W2 {args.w2_epochs} epoch(s); batch 64, Adam lr 1e-3")

        # warm-up: first calls pay for lazy imports and kernel selection; not measured
        for workload in workloads:
            for v in variants:
                r = workers[WORKER_OF[v]].run(v, workload, 1, 0, lightning_dir, True)
                if "error" in r:
                    raise RuntimeError(f"warm-up of {v} on {workload} failed:\n{r['error']}")

        raw: dict = {}
        for workload in workloads:
            raw[workload] = {v: [] for v in variants}
            for rnd in range(rounds):
                seed = rnd
                order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
                for v in order:
                    best = None
                    for attempt in range(retries + 1):
                        if quiet_wait > 0:
                            wait_for_quiet(quiet_wait)
                        r = workers[WORKER_OF[v]].run(v, workload, epochs_of[workload], seed, lightning_dir)
                        if "error" in r:
                            raise RuntimeError(f"{v} on {workload} failed:\n{r['error']}")
                        if best is None or r["busy"] < best["busy"]:
                            best = r
                        if not r["busy"] > args.busy_limit:
                            break
                    best["attempts"] = attempt + 1
                    raw[workload][v].append(best)
                    print(f"  {workload} round {rnd + 1}/{rounds} {v:>2}: "
                          f"{best['samples'] * len(best['epoch_s']) / best['fit_s']:9,.0f} samples/s "
                          f"(other processes {best['busy']:.2f} cores)", flush=True)
        print()
        report = {}
        for workload in workloads:
            fingerprints = {r["fingerprint"] for rs in raw[workload].values() for r in rs if r}
            per_seed = {}
            for rs in raw[workload].values():
                for i, r in enumerate(rs):
                    per_seed.setdefault(i, set()).add(r["fingerprint"])
            assert all(len(f) == 1 for f in per_seed.values()), f"variants trained on different data: {fingerprints}"
            stats = {v: summarise(rs, args.busy_limit) for v, rs in raw[workload].items()}
            report[workload] = stats
            print_table(workload, stats, raw[workload], epochs_of[workload], rounds)
        print(f"total time {time.perf_counter() - began:.0f} s")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"infos": infos, "rounds": rounds, "epochs": epochs_of, "raw": raw,
                                             "summary": {w: {v: {k: s for k, s in st.items()}
                                                             for v, st in sts.items()}
                                                         for w, sts in report.items()}}, indent=1, default=float))
        return 0
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(workload: str, stats: dict, raw: dict, epochs: int, rounds: int) -> None:
    any_r = next(iter(raw.values()))[0]
    print(f"{WORKLOADS[workload]['title']}: {any_r['samples']:,} training samples × {epochs} epoch(s), "
          f"medians of {rounds} round(s)")
    print(f"  {'variant':<31} {'fit samples/s':>14} {'epoch samples/s':>16} {'busy':>6} {'quiet':>6} {'val acc':>8}")
    for v, s in stats.items():
        print(f"  {VARIANTS[v]:<31} {s['fit']:>14,.0f} {s['epoch']:>16,.0f} {s['busy']:>6.2f} "
              f"{s['clean']:>3}/{len(raw[v]):<2} {s['val_acc']:>8.3f}")

    def ratio(x, y, key):
        return stats[x][key] / stats[y][key] if x in stats and y in stats else math.nan

    pairs = [("c", "a"), ("c", "b"), ("c", "d"), ("d", "a"), ("cn", "a"), ("cn", "d"), ("cn", "dn"), ("dn", "d"),
             ("a*", "a"), ("c", "a*"), ("c1", "c")]
    print("  ratios (fit / epoch):  " + "   ".join(
        f"{x}/{y} {ratio(x, y, 'fit'):.2f}/{ratio(x, y, 'epoch'):.2f}" for x, y in pairs if x in stats and y in stats))
    if any(s["clean"] < len(raw[v]) for v, s in stats.items()):
        print("  note: other processes used the CPUs during some measurements; a variant's medians use only its "
              "quiet measurements (column 'quiet') where it has any, else all of them (then its 'busy' is high)")
    print()


if __name__ == "__main__":
    sys.exit(main())
