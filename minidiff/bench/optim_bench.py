"""``minidiff bench optim``: every optimizer on the MLP and the CNN, on the embedded digits, one budget.

Each (model, optimizer) run starts from the same initial parameters, sees the same minibatches in the
same order, and stops after ``steps`` minibatch steps or ``seconds`` of training time, whichever comes
first (the *budget*).  Recorded per run: the minibatch loss against steps and against the wall-clock time
of the steps alone; the steps and seconds until the smoothed loss (EMA, as in
:mod:`minidiff.bench.training`) first reaches ``target_loss``; final train and test accuracy; the mean
step time and its ratio to the SGD run's.  Methods that evaluate the loss several times per step
(L-BFGS, Newton-CG, the curvature methods) are charged for all of it.

The second-order methods of ``minidiff.optim.{kfac,shampoo,adahessian,sophia}`` are imported by name at
run time and skipped (with the reason recorded) where absent.

Separately, the cost of Gradient Centralization on one CNN training step: the time of the centralization
of every weight gradient against the time of the whole step (target: under 1%), and the end-to-end step
time with and without it.

>>> r = run_optim_bench(models=("mlp",), optimizers=("sgd", "adam"), steps=2, width=8, gc_repeats=0,
...                     train_limit=128)
>>> sorted(r["runs"]["mlp"]), r["runs"]["mlp"]["adam"]["steps"]
(['adam', 'sgd'], 2)
"""

from __future__ import annotations

import argparse
import importlib
import os

from ..errors import check_number
from ..nn import functional as F
from ..primitives.random import Generator
from ..tensor import pytree
from .arguments import (
    UsageError,
    add_allocator_option,
    choice_list,
    device,
    nonnegative_int,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    seed,
    write_json,
)
from .environment import environment
from .timing import measure, timed
from .training import accuracy, digits_data, run_steps, smooth

SCHEMA = "minidiff.optim_bench/1"


# ----------------------------------------------------------------------------- the optimizers
def _mine(cls_name, **kwargs):
    def make(model, params):
        from .. import optim

        return getattr(optim, cls_name)(params, **kwargs)

    return make


def _external(module, cls_name, takes_model=False, **kwargs):
    """A factory for an optimizer that may not exist yet: imported by name when the bench runs."""

    def make(model, params):
        mod = importlib.import_module(f"minidiff.optim.{module}")
        cls = getattr(mod, cls_name)
        return cls(model, **kwargs) if takes_model else cls(params, **kwargs)

    return make


#: name -> (factory(model, params), closure style, description).  Closure styles: "tape" (zero_grad,
#: backward, step()), "functional" (step(f) with f(params) -> loss), "tape_logits" (step(closure) with
#: closure() -> (loss, logits)), "functional_logits" (f(params) -> (loss, logits)), "model_loss"
#: (step((model_fn, loss_fn)) with model_fn(params) -> logits, loss_fn(logits) -> loss).
OPTIMIZERS = {
    "sgd": (_mine("SGD", lr=0.05, momentum=0.9), "tape", "SGD lr 0.05, momentum 0.9"),
    "sgd-gc": (
        _mine("SGD", lr=0.05, momentum=0.9, centralize="grad"),
        "tape",
        "SGD lr 0.05, momentum 0.9, GC on gradients",
    ),
    "adam": (_mine("Adam", lr=1e-3), "tape", "Adam lr 1e-3"),
    "adam-gc": (_mine("Adam", lr=1e-3, centralize="update"), "tape", "Adam lr 1e-3, GC on the update"),
    "adamw": (_mine("AdamW", lr=1e-3, weight_decay=1e-2), "tape", "AdamW lr 1e-3, decay 0.01"),
    "adagrad": (_mine("Adagrad", lr=1e-2), "tape", "Adagrad lr 1e-2"),
    "rmsprop": (_mine("RMSprop", lr=1e-3), "tape", "RMSprop lr 1e-3, alpha 0.99"),
    "lbfgs": (
        _mine("LBFGS", lr=1.0, max_iter=1, history_size=10),
        "functional",
        "L-BFGS, 1 iteration (strong-Wolfe search) per minibatch, history 10",
    ),
    "newton-cg": (
        _mine("NewtonCG", damping=1e-2, max_cg_iter=5),
        "functional",
        "Newton-CG, damping 1e-2, at most 5 CG iterations, Armijo backtracking",
    ),
    "fgd": (_mine("FGD"), "functional", "FGD, the paper's η₀ 2e-4, k 1e-4"),
    "kfac": (_external("kfac", "KFAC", takes_model=True), "tape_logits", "K-FAC, its defaults"),
    # Tuned on the default MLP by steps to the target loss (150 steps): Adam's lr over
    # {3e-4, 1e-3, 3e-3, 1e-2}; K-FAC's lr over {0.01, 0.03, 0.1, 0.3}, κ over {1e-3, 1e-2},
    # T_inv over {10, 20, 100} and damping over {1e-3, 1e-2} (with T_stat 5).
    "adam-tuned": (_mine("Adam", lr=3e-3), "tape", "Adam lr 3e-3 (tuned)"),
    "kfac-tuned": (
        _external("kfac", "KFAC", takes_model=True, lr=0.3, kl_clip=1e-2, stat_period=5, inverse_period=20),
        "tape_logits",
        "K-FAC lr 0.3, κ 1e-2, T_stat 5, T_inv 20 (tuned)",
    ),
    "shampoo": (_external("shampoo", "Shampoo"), "tape", "Shampoo, its defaults"),
    "adahessian": (_external("adahessian", "AdaHessian"), "functional", "AdaHessian, its defaults"),
    "sophia": (_external("sophia", "Sophia", lr=1e-3), "functional_logits", "Sophia-G, lr 1e-3"),
    "natural-gradient": (
        _mine("NaturalGradient", lr=0.3, damping=0.1, max_cg_iter=5, adapt_damping=True),
        "model_loss",
        "natural gradient (analytic Fisher), lr 0.3, damping 0.1 adapted, at most 5 CG iterations",
    ),
    "hessian-free": (
        _mine("HessianFree", max_cg_iter=5),
        "model_loss",
        "Hessian-free, damping 1 adapted, at most 5 CG iterations, warm start 0.95",
    ),
}

BASELINE = "sgd"
#: The models the bench trains (``--models``).
MODELS = ("mlp", "cnn")


# ----------------------------------------------------------------------------- models
def _model(name, width, channels, cnn_hidden, paper_size, dtype, device, seed):
    from ..nn import models

    rng = Generator(seed, device)
    if name == "mlp":
        hidden = (1024, 1024) if paper_size else (width, width)
        return models.mlp(hidden=hidden, rng=rng, dtype=dtype, device=device)
    if name == "cnn":
        if paper_size:
            return models.cnn(rng=rng, dtype=dtype, device=device)
        return models.cnn(channels=channels, hidden=cnn_hidden, rng=rng, dtype=dtype, device=device)
    raise ValueError(f"optim bench: unknown model {name!r}; choose mlp or cnn")


def _train_one(name, factory, style, model, init_values, splits, steps, seconds, batch, seed, target):
    """One budgeted run; returns its record (or the reason it could not run)."""
    from .. import data
    from ..primitives.creation import asarray

    (x_tr, y_tr), (x_te, y_te) = splits
    # copies: assign_ updates the parameters in place, and a run must not move the next run's start
    model.set_parameters(pytree.tree_map(lambda v: v.copy(), init_values))
    model.requires_grad_()
    leaves, treedef = pytree.flatten(model.parameters())
    try:
        opt = factory(model, leaves)
    except (ImportError, AttributeError) as exc:
        return {"skipped": f"not available: {type(exc).__name__}: {exc}"}
    step = _step_function(opt, style, model, treedef)

    def batches(epoch):  # converted before the clock starts
        return ((asarray(xb), asarray(yb)) for xb, yb in data.batches(x_tr, y_tr, batch, seed=seed + epoch))

    history, diverged = run_steps(step, batches, steps, seconds)
    params = model.parameters()
    curve = smooth(history["loss"])
    reached = next((i for i, v in enumerate(curve) if v <= target), None)
    done, elapsed = len(history["step"]), (history["seconds"][-1] if history["seconds"] else 0.0)
    return {
        "steps": done,
        "seconds": elapsed,
        "diverged": diverged,
        "mean_step_seconds": elapsed / max(done, 1),
        "target_loss": target,
        "steps_to_target": None if reached is None else history["step"][reached],
        "seconds_to_target": None if reached is None else history["seconds"][reached],
        "final_smoothed_loss": curve[-1] if curve else float("nan"),
        "train_accuracy": accuracy(model, params, x_tr, y_tr),
        "test_accuracy": accuracy(model, params, x_te, y_te),
        "history": history,
    }


def _step_function(opt, style, model, treedef):
    """``step(xb, yb) -> loss value``: one optimizer step on a minibatch in ``opt``'s closure style."""

    def loss_of(xb, yb):
        return lambda p: F.cross_entropy(model.apply(pytree.unflatten(treedef, p), xb), yb)

    def step(xb, yb):
        if style == "tape":
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        elif style == "tape_logits":

            def closure():
                logits = model(xb)
                return F.cross_entropy(logits, yb), logits

            loss = opt.step(closure)
        elif style == "functional":
            loss = opt.step(loss_of(xb, yb))
        elif style == "model_loss":
            model_fn = lambda p: model.apply(pytree.unflatten(treedef, p), xb)  # noqa: E731
            loss = opt.step((model_fn, lambda z: F.cross_entropy(z, yb)))
        else:

            def functional_closure(p):
                logits = model.apply(pytree.unflatten(treedef, p), xb)
                return F.cross_entropy(logits, yb), logits

            loss = opt.step(functional_closure)
        return float(loss[0] if isinstance(loss, tuple) else loss)

    return step


# ----------------------------------------------------------------------------- GC overhead
def gc_overhead(
    batch=64, channels=16, cnn_hidden=128, paper_size=False, repeats=10, dtype="float32", device=None, seed=0
):
    """Cost of Gradient Centralization on one CNN training step (SGD with momentum).

    ``centralize_seconds`` times the centralization of every weight gradient alone; ``step_seconds`` a
    whole plain step (forward, backward, update); ``fraction`` is their ratio (the target is < 1%).
    ``step_with_gc_seconds`` times the whole step with GC on, for the end-to-end difference (noisier).

    >>> r = gc_overhead(batch=2, channels=2, cnn_hidden=4, repeats=1)
    >>> r["weights_centralized"], r["fraction"] > 0
    (6, True)
    """
    model = _model("cnn", None, channels, cnn_hidden, paper_size, dtype, device, seed)
    model.requires_grad_()
    x = Generator(seed + 1, device).normal((batch, 1, 28, 28), dtype=dtype)
    y = Generator(seed + 2, device).randint(0, 10, (batch,))
    leaves = pytree.flatten(model.parameters())[0]
    t_gc, t_plain, t_with = _gc_timings(model, leaves, x, y, repeats)
    return {
        "centralize_seconds": t_gc.median,
        "step_seconds": t_plain.median,
        "step_with_gc_seconds": t_with.median,
        "fraction": t_gc.median / t_plain.median,
        "end_to_end_fraction": t_with.median / t_plain.median - 1,
        "weights_centralized": sum(1 for p in leaves if p.ndim > 1),
        "parameters": sum(p.size for p in leaves),
        "repeats": repeats,
    }


def _gc_timings(model, leaves, x, y, repeats):
    """The centralization of every weight gradient alone, a plain SGD step, and a step with GC on."""
    from ..optim import SGD, centralize

    plain = SGD(leaves, lr=1e-3, momentum=0.9)
    with_gc = SGD(leaves, lr=1e-3, momentum=0.9, centralize="grad")

    def step(opt):
        def run():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return run

    step(plain)()
    grads = [p.grad for p in leaves]
    dev = leaves[0].device

    def centralize_all():
        for g in grads:
            centralize(g)

    t_gc = measure(centralize_all, repeats=max(repeats * 5, 5), warmup=2, device=dev)
    t_plain = measure(step(plain), repeats=repeats, warmup=1, device=dev)
    t_with = measure(step(with_gc), repeats=repeats, warmup=1, device=dev)
    return t_gc, t_plain, t_with


# ----------------------------------------------------------------------------- the benchmark
def run_optim_bench(
    models=("mlp", "cnn"),
    optimizers=None,
    steps: int = 150,
    seconds: float = 8.0,
    batch: int = 64,
    target_loss: float = 0.5,
    width: int = 256,
    channels: int = 16,
    cnn_hidden: int = 128,
    paper_size: bool = False,
    gc_repeats: int = 10,
    dtype="float32",
    device=None,
    seed: int = 0,
    train_limit: int | None = None,
    progress=None,
) -> dict:
    """Run the benchmark (see the module docstring); returns a JSON-ready dict.

    ``optimizers``: names from :data:`OPTIMIZERS` (all by default).  ``width`` is the MLP's hidden width,
    ``channels``/``cnn_hidden`` the CNN's; ``paper_size=True`` uses the paper's 1024-wide MLP and 64-channel
    CNN instead (far slower on a CPU).  ``train_limit`` keeps only the first examples of the training split
    (for smoke runs).  ``gc_repeats=0`` skips the GC overhead measurement.
    """
    names = _checked_names(optimizers, steps, seconds, batch)
    settings = {
        "models": list(models),
        "optimizers": {n: OPTIMIZERS[n][2] for n in names},
        "steps": steps,
        "seconds": seconds,
        "batch": batch,
        "target_loss": target_loss,
        "width": width,
        "channels": channels,
        "cnn_hidden": cnn_hidden,
        "paper_size": paper_size,
        "dtype": str(dtype),
        "seed": seed,
        "train_limit": train_limit,
    }

    def everything():
        runs = {name: _model_runs(name, names, settings, dtype, device, progress) for name in models}
        result = {"schema": SCHEMA, "settings": settings, "runs": runs, "gc_overhead": None}
        result["environment"] = environment(device)
        if gc_repeats:
            result["gc_overhead"] = gc_overhead(
                batch, channels, cnn_hidden, paper_size, gc_repeats, dtype=dtype, device=device, seed=seed
            )
        return result

    result, total = timed(everything)
    result["total_seconds"] = total
    return result


def _checked_names(optimizers, steps, seconds, batch) -> list[str]:
    """The optimizers to run (all by default), after checking the names and the budget."""
    names = list(OPTIMIZERS) if optimizers is None else list(optimizers)
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"optim bench: unknown optimizer(s) {unknown}; choose from {sorted(OPTIMIZERS)}")
    check_number("optim bench", "steps", steps, low=1, integer=True)
    check_number("optim bench", "seconds", seconds, low=0, low_open=True)
    check_number("optim bench", "batch", batch, low=1, integer=True)
    return names


def _model_runs(model_name, names, settings, dtype, device, progress) -> dict:
    """The budgeted run of each optimizer in ``names`` on one model, from the same initial parameters."""
    s = settings
    model = _model(
        model_name, s["width"], s["channels"], s["cnn_hidden"], s["paper_size"], dtype, device, s["seed"]
    )
    init_values = pytree.tree_map(lambda p: p.detach(), model.parameters())
    splits = digits_data(model_name, dtype, device, s["seed"])
    if s["train_limit"] is not None:
        (x_tr, y_tr), test = splits
        splits = ((x_tr[: s["train_limit"]], y_tr[: s["train_limit"]]), test)
    runs = {}
    for name in names:
        factory, style, _ = OPTIMIZERS[name]
        budget = (s["steps"], s["seconds"], s["batch"], s["seed"], s["target_loss"])
        try:
            runs[name] = _train_one(name, factory, style, model, init_values, splits, *budget)
        except Exception as exc:  # noqa: BLE001 - one failing optimizer must not end the benchmark
            runs[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
        if progress is not None:
            progress(1)
    base = runs.get(BASELINE, {}).get("mean_step_seconds")
    for record in runs.values():
        if "mean_step_seconds" in record:
            record["step_time_vs_sgd"] = record["mean_step_seconds"] / base if base else None
    return runs


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def format_optim_bench(result: dict) -> str:
    """The tables of a :func:`run_optim_bench` result, as text (Markdown tables).

    >>> r = run_optim_bench(models=("mlp",), optimizers=("sgd",), steps=1, width=4, gc_repeats=0,
    ...                     train_limit=64)
    >>> print(format_optim_bench(r).splitlines()[4])
    | optimizer | steps | s | steps to target | s to target | final loss (EMA) | train acc | test acc | step time / SGD |
    """
    s = result["settings"]
    lines = [
        f"Optimizers on the digits (budget: {s['steps']} steps or {s['seconds']:g} s per run, batch "
        f"{s['batch']}, {s['dtype']}); target: smoothed training loss ≤ {s['target_loss']:g}",
    ]
    for model_name, runs in result["runs"].items():
        lines += _run_table(model_name, runs)
    gc = result.get("gc_overhead")
    if gc:
        lines += [
            "",
            f"GC on a CNN step ({gc['parameters']:,} parameters, {gc['weights_centralized']} weight tensors): "
            f"centralization {gc['centralize_seconds'] * 1e3:.3f} ms of a {gc['step_seconds'] * 1e3:.1f} ms "
            f"step = {100 * gc['fraction']:.2f}% (target < 1%); whole step with GC "
            f"{gc['step_with_gc_seconds'] * 1e3:.1f} ms ({100 * gc['end_to_end_fraction']:+.1f}%, noisier)",
        ]
    env = result.get("environment", {})
    lines.append("")
    lines.append(
        f"Total {result.get('total_seconds', 0):.0f} s on {env.get('cpu', '?')}, "
        f"{env.get('logical_cores', '?')} logical cores (one run per optimizer: step-time ratios of "
        "fast steps carry timer noise; run nothing else while measuring)."
    )
    return "\n".join(lines)


def _run_table(model_name, runs) -> list[str]:
    lines = [
        "",
        f"{model_name}:",
        "",
        "| optimizer | steps | s | steps to target | s to target | final loss (EMA) | train acc | "
        "test acc | step time / SGD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        if "skipped" in r:
            lines.append(f"| {name} | {r['skipped']} |||||||")
            continue
        lines.append(
            f"| {name} | {r['steps']} | {r['seconds']:.1f} | {_fmt(r['steps_to_target'], 'd')} | "
            f"{_fmt(r['seconds_to_target'], '.1f')} | {r['final_smoothed_loss']:.3f}"
            f"{' (diverged)' if r['diverged'] else ''} | {r['train_accuracy']:.3f} | "
            f"{r['test_accuracy']:.3f} | {_fmt(r.get('step_time_vs_sgd'), '.2f')} |"
        )
    return lines


def figures(result: dict, out_dir: str) -> list[str]:
    """Loss-vs-step and loss-vs-time PNGs per model (needs matplotlib; returns [] without it).

    >>> figures({"runs": {}, "settings": {"target_loss": 0.5}}, "/tmp/minidiff-optim-figures")
    []
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for model_name, runs in result["runs"].items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for name, r in runs.items():
            if "history" not in r:
                continue
            h = r["history"]
            axes[0].plot(h["step"], smooth(h["loss"]), label=name)
            axes[1].plot(h["seconds"], smooth(h["loss"]), label=name)
        target = result["settings"]["target_loss"]
        for ax, xlabel in zip(axes, ("step", "training seconds")):
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.set(xlabel=xlabel, ylabel="training loss (EMA)", yscale="log")
        axes[0].set_title(f"{model_name}: loss vs step")
        axes[1].set_title(f"{model_name}: loss vs time")
        axes[1].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = os.path.join(out_dir, f"optim_{model_name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``minidiff bench optim``.

    >>> p = argparse.ArgumentParser()
    >>> add_arguments(p)
    >>> p.parse_args(["--models", "mlp", "--optimizers", "sgd,lbfgs"]).optimizers
    ('sgd', 'lbfgs')
    """
    p.add_argument("--models", type=choice_list(MODELS), default=MODELS, help="comma-separated subset")
    p.add_argument(
        "--optimizers",
        type=choice_list(OPTIMIZERS),
        default=None,
        help=f"comma-separated subset of {','.join(OPTIMIZERS)} (default all)",
    )
    p.add_argument("--steps", type=positive_int, default=150, help="step budget per run")
    p.add_argument("--seconds", type=positive_float, default=8.0, help="time budget per run, seconds")
    p.add_argument("--batch", type=positive_int, default=64, help="minibatch size")
    p.add_argument("--target-loss", type=positive_float, default=0.5, help="target smoothed training loss")
    p.add_argument("--width", type=positive_int, default=256, help="MLP hidden width")
    p.add_argument("--channels", type=positive_int, default=16, help="CNN channels")
    p.add_argument("--cnn-hidden", type=positive_int, default=128, help="CNN dense width")
    p.add_argument("--paper-size", action="store_true", help="the paper's 1024-wide MLP and 64-channel CNN")
    p.add_argument(
        "--gc-repeats", type=nonnegative_int, default=10, help="timed repeats for the GC overhead (0: skip)"
    )
    p.add_argument(
        "--train-limit", type=positive_int, default=None, help="use only this many training examples"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the weights, batches and directions")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="float32 or float64")
    p.add_argument("--device", type=device, default="cpu", help="'cpu' or 'cuda'")
    add_allocator_option(p)
    p.add_argument("--json", type=output_file, metavar="PATH", help="write the result as JSON")
    p.add_argument(
        "--figures",
        type=output_dir,
        metavar="DIR",
        default=None,
        help="write loss-vs-step/time PNGs into DIR",
    )


def run(args) -> int:
    """Run ``minidiff bench optim`` with parsed ``args``; prints the tables, writes JSON and figures."""
    from .progress import Progress

    if args.train_limit is not None and args.batch > args.train_limit:
        raise UsageError(
            f"argument --batch: {args.batch} is more than the --train-limit of {args.train_limit}"
        )
    names = args.optimizers or tuple(OPTIMIZERS)
    with Progress(len(names) * len(args.models), "optim bench") as bar:
        result = run_optim_bench(
            models=args.models,
            optimizers=names,
            steps=args.steps,
            seconds=args.seconds,
            batch=args.batch,
            target_loss=args.target_loss,
            width=args.width,
            channels=args.channels,
            cnn_hidden=args.cnn_hidden,
            paper_size=args.paper_size,
            gc_repeats=args.gc_repeats,
            dtype=args.dtype,
            device=args.device,
            seed=args.seed,
            train_limit=args.train_limit,
            progress=bar.update,
        )
    if args.figures:
        result["figures"] = figures(result, args.figures)
    print(format_optim_bench(result))
    write_json(result, args.json)
    return 0
