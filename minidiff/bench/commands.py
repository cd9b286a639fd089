"""Subcommands of ``minidiff`` for measurement: ``bench rfrb``, ``bench depth``, ``train``, ``reproduce``.

Each is an ``(add_arguments, run)`` pair registered in :mod:`minidiff.cli`.
"""

from __future__ import annotations

import argparse

from .arguments import (
    UsageError,
    add_allocator_option,
    apply_allocator_option,
    choice_list,
    mnist_dir,
    nonnegative_float,
    output_dir,
    output_file,
    positive_float,
    seed,
    write_json,
)
from .arguments import dtype as _dtype
from .arguments import int_list as _layers
from .arguments import positive_int as _positive_int
from .progress import Progress

MODEL_NAMES = ("logreg", "mlp", "cnn")


def _add_common(p, device_type):
    p.add_argument("--dtype", type=_dtype, default="float32", help="float32 or float64 (default float32)")
    p.add_argument("--device", type=device_type, default="cpu", help="'cpu' or 'cuda' (default cpu)")
    add_allocator_option(p)


def _add_distribution(p, what):
    p.add_argument(
        "--distribution",
        choices=("normal", "rademacher"),
        default="normal",
        help=f"{what} (default normal)",
    )


# ----------------------------------------------------------------------------- bench
# Benchmarks of the layers above the engine: each module offers add_arguments(parser) and run(args).
EXTRA_BENCHES = {
    "curvature": ("curvature_bench", "cost of hvp in its three orders and of ggn_vp, in gradients"),
    "optim": ("optim_bench", "every optimizer on the MLP and CNN under one budget; GC overhead"),
    "deer": ("deer_bench", "DEER against sequential evaluation of RNN cells, by hidden size and length"),
    "deer-ode": ("deer_ode_bench", "DEER for ODEs against SciPy's solve_ivp (evaluation and training)"),
    "peers": (
        "peers",
        "the paper's models in minidiff beside PyTorch, JAX and autograd, each in its own process",
    ),
}


def _extra_bench(name):
    import importlib

    return importlib.import_module(f"minidiff.bench.{EXTRA_BENCHES[name][0]}")


def bench_arguments(p: argparse.ArgumentParser, device_type) -> None:
    names = ",".join(("rfrb", "depth", *EXTRA_BENCHES))
    sub = p.add_subparsers(dest="bench_command", metavar=f"{{{names}}}", required=True, parser_class=type(p))
    _rfrb_arguments(sub, device_type)
    _depth_arguments(sub, device_type)
    for name, (_, summary) in EXTRA_BENCHES.items():
        e = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        _extra_bench(name).add_arguments(e)
    for bench_parser in sub.choices.values():  # usage errors found at run start point at its own --help
        bench_parser.set_defaults(parser=bench_parser)


def _rfrb_arguments(sub, device_type) -> None:
    from .arguments import mnist_train_dir, nonnegative_int, output_file

    r = sub.add_parser(
        "rfrb",
        help="Rf, Rb and Rf/Rb of one model (forward gradient vs backprop)",
        description="Time runtime(f), one forward-gradient evaluation and one backprop "
        "evaluation of a model on one minibatch; print Rf, Rb, their spreads, the FLOP "
        "model and peak memory.",
    )
    r.add_argument(
        "--model", choices=MODEL_NAMES, default="mlp", help="which of the paper's models (default mlp)"
    )
    r.add_argument("--batch", type=_positive_int, default=64, help="minibatch size (default 64)")
    r.add_argument("--repeats", type=_positive_int, default=20, help="timed repeats (default 20)")
    r.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed calls first (default 3)")
    r.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the model and of v (default 0)")
    r.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="hidden width: both hidden layers of the MLP, the CNN's dense layer (default 1024)",
    )
    r.add_argument(
        "--data-dir",
        type=mnist_train_dir,
        default=None,
        metavar="DIR",
        help="take the minibatch from the MNIST IDX files in DIR (default: a fixed synthetic batch)",
    )
    _add_distribution(r, "distribution of the direction v")
    r.add_argument("--profile", action="store_true", help="also time each primitive group in each pass")
    r.add_argument("--json", type=output_file, metavar="PATH", help="write the full result as JSON")
    r.add_argument("--csv", type=output_file, metavar="PATH", help="write the table as CSV")
    _add_common(r, device_type)


def _depth_arguments(sub, device_type) -> None:
    from .arguments import output_file

    d = sub.add_parser(
        "depth",
        help="Rf, Rb and peak memory of MLPs of increasing depth",
        description="Depth sweep of the MLP: Rf, Rb, Rf/Rb and the peak memory of each mode.",
    )
    d.add_argument(
        "--layers",
        type=_layers,
        default=(1, 2, 5, 10, 20, 50, 100),
        help="comma-separated hidden-layer counts (default 1,2,5,10,20,50,100)",
    )
    d.add_argument("--width", type=_positive_int, default=1024, help="hidden width (default 1024)")
    d.add_argument("--batch", type=_positive_int, default=64, help="minibatch size (default 64)")
    d.add_argument("--repeats", type=_positive_int, default=5, help="timed repeats per depth (default 5)")
    d.add_argument("--json", type=output_file, metavar="PATH", help="write the result as JSON")
    d.add_argument("--csv", type=output_file, metavar="PATH", help="write the table as CSV")
    _add_common(d, device_type)


def run_bench(args) -> int:
    apply_allocator_option(args)
    if args.bench_command in EXTRA_BENCHES:
        return _extra_bench(args.bench_command).run(args)
    if args.bench_command == "rfrb":
        return _run_rfrb(args)
    return _run_depth(args)


def _run_rfrb(args) -> int:
    from .export import write_csv
    from .profile import format_profile
    from .rfrb import build_model, rfrb

    hidden = {"mlp": lambda w: (w, w), "cnn": lambda w: w}
    if args.width is not None and args.model not in hidden:
        raise UsageError(f"argument --width: applies to --model mlp or cnn, not {args.model}")
    kwargs = {} if args.width is None else {"hidden": hidden[args.model](args.width)}
    model, shape = build_model(args.model, dtype=args.dtype, device=args.device, seed=args.seed, **kwargs)
    data = None
    if args.data_dir is not None:
        try:
            data = _mnist_batch(args.data_dir, args.model, args.batch, args.dtype, args.device)
        except (OSError, ValueError) as exc:
            raise UsageError(f"argument --data-dir: {str(exc).splitlines()[0]}") from None
    r = rfrb(
        model,
        shape,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        distribution=args.distribution,
        seed=args.seed,
        data=data,
        name=args.model,
        profile=args.profile,
    )
    if data is not None:
        r["data"] = f"MNIST IDX files in {args.data_dir} (first {args.batch} training examples)"
    print(format_rfrb(args.model, r))
    if args.profile:
        print(format_profile(r["profile"], top=8))
    write_json(r, args.json)
    write_csv(r, args.csv)
    return 0


def _mnist_batch(folder, model: str, batch: int, dtype, device):
    """The first ``batch`` training examples of MNIST in ``folder``, shaped for ``model``."""
    from ..data import load_mnist

    x, y = load_mnist(folder, "train", dtype=dtype, device=device, flatten=model != "cnn")
    if x.shape[0] < batch:
        raise ValueError(f"{folder} holds {x.shape[0]} training examples, fewer than --batch {batch}")
    return x[:batch], y[:batch]


def _run_depth(args) -> int:
    from .export import write_csv
    from .reproduce import format_summary
    from .rfrb import depth_sweep

    with Progress(len(args.layers), "depth sweep") as bar:
        result = depth_sweep(
            args.layers,
            width=args.width,
            batch=args.batch,
            repeats=args.repeats,
            dtype=args.dtype,
            device=args.device,
            progress=lambda n: bar.update(1),
        )
    print(format_summary({"rfrb": {}, "depth": result, "training": {}}))
    write_json(result, args.json)
    write_csv(result, args.csv)
    return 0


def format_rfrb(name: str, r: dict) -> str:
    """The result of :func:`minidiff.bench.measure_loss` (or ``rfrb``) as a table."""

    def ms(m):
        return f"{m['median'] * 1e3:9.3f} ms  (IQR {m['iqr'] * 1e3:.3f})"

    def spread(key):
        q = r[key]
        return f"{q['value']:.3f}  [{q['low']:.3f}, {q['high']:.3f}]"

    batch = f"batch {r['batch']}, " if "batch" in r else ""
    lines = [
        f"{name}: {batch}{r['dtype']}, {r['device']}, v ~ {r['distribution']}, {r['parameters']:,} parameters, "
        f"{r['repeats']} repeats after {r['warmup']} warm-up, seed {r['seed']}",
        f"  runtime(f)                 {ms(r['runtime_f'])}",
        f"  sample v                   {ms(r['sample_v'])}",
        f"  JVP pass (f and ∇f·v)      {ms(r['jvp'])}",
        f"  forward pass + (∇f·v)v     {ms(r['forward_pass'])}",
        f"  forward gradient (total)   {ms(r['forward_gradient'])}",
        f"  backprop (f and ∇f)        {ms(r['backprop'])}",
        f"  Rf    = {spread('Rf')}   (without sampling {r['Rf_without_sampling']['value']:.3f})",
        f"  Rjvp  = {spread('Rjvp')}",
        *(
            [f"  floor = {spread('Rf_floor')}   (Rjvp + sampling: what Rf cannot go below)"]
            if "Rf_floor" in r
            else []
        ),
        f"  Rb    = {spread('Rb')}",
        f"  Rf/Rb = {spread('Rf_over_Rb')}",
    ]
    flop = r.get("flop_model")
    if flop is not None:
        lines.append(f"  FLOP model (executed matrix products): Rf = {flop['Rf']:.3f}, Rb = {flop['Rb']:.3f}")
    elif "flop_model_note" in r:
        lines.append(f"  FLOP model: not available ({r['flop_model_note']})")
    if "peak_memory_bytes" in r:
        m = r["peak_memory_bytes"]
        lines.append("  peak memory (MiB): " + ", ".join(f"{mode} {b / 2**20:.2f}" for mode, b in m.items()))
    lines.append(f"  allocator: {r['environment']['allocator']['mode']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- train
def train_arguments(p: argparse.ArgumentParser, device_type) -> None:
    p.add_argument("--model", choices=MODEL_NAMES, default="mlp", help="model")
    p.add_argument(
        "--method", choices=("fgd", "sgd"), default="fgd", help="fgd: forward gradient descent; sgd: backprop"
    )
    p.add_argument("--steps", type=_positive_int, default=500, help="training steps")
    p.add_argument("--lr", type=nonnegative_float, default=2e-4, help="initial learning rate η₀")
    p.add_argument("--decay", type=nonnegative_float, default=1e-4, help="k in η₀·exp(−k·i)")
    p.add_argument("--batch", type=_positive_int, default=64, help="minibatch size")
    _add_distribution(p, "FGD direction distribution")
    p.add_argument("--clip", type=positive_float, default=None, help="cap |∇f·v| (FGD only; default none)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the weights, split, batches and directions")
    p.add_argument(
        "--data-dir",
        type=mnist_dir,
        metavar="DIR",
        default=None,
        help="train and test on the MNIST IDX files in DIR (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-…, raw or .gz; never downloaded) (default: the embedded digits, 28×28, split 80/20)",
    )
    p.add_argument("--json", type=output_file, metavar="PATH", help="write the loss history as JSON")
    _add_common(p, device_type)


def _training_data(args) -> tuple[tuple, str]:
    """``((train, test), source)``: the MNIST files of ``--data-dir`` or the embedded digits, read (and
    checked) before any training, so a bad file is a usage error and not a lost run."""
    if args.data_dir is None:
        from .training import digits_data

        return digits_data(args.model, args.dtype, args.device, args.seed), "embedded digits (28×28)"
    from ..data import load_mnist_splits

    try:
        splits = load_mnist_splits(
            args.data_dir, flatten=args.model != "cnn", dtype=args.dtype, device=args.device
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"argument --data-dir: {exc}") from None
    return splits, f"MNIST IDX files in {args.data_dir}"


def run_train(args) -> int:
    apply_allocator_option(args)
    from .training import train

    splits, source = _training_data(args)
    (x_train, _), (x_test, _) = splits
    if args.batch > x_train.shape[0]:
        raise UsageError(
            f"argument --batch: {args.batch} is more than the {x_train.shape[0]} training examples"
        )
    with Progress(args.steps, f"{args.method} {args.model}") as bar:
        r = train(
            args.model,
            args.method,
            steps=args.steps,
            lr=args.lr,
            decay=args.decay,
            batch=args.batch,
            seed=args.seed,
            distribution=args.distribution,
            clip=args.clip,
            dtype=args.dtype,
            device=args.device,
            progress=bar.update,
            splits=splits,
        )
    r["data"] = {"source": source, "train_examples": x_train.shape[0], "test_examples": x_test.shape[0]}
    h = r["history"]
    print(
        f"{args.method} on {args.model} ({source}): {r['steps']} steps in {h['seconds'][-1]:.2f} s; loss "
        f"{h['loss'][0]:.4f} -> {h['loss'][-1]:.4f}; train accuracy {r['train_accuracy']:.3f}, "
        f"test accuracy {r['test_accuracy']:.3f}" + ("  (diverged)" if r["diverged"] else "")
    )
    write_json(r, args.json)
    return 0


# ----------------------------------------------------------------------------- reproduce
def reproduce_arguments(p: argparse.ArgumentParser, device_type) -> None:
    p.add_argument("paper", choices=("forward-gradient",), help="which paper to reproduce")
    p.add_argument("--full", action="store_true", help="paper-sized widths and long runs (hours on a CPU)")
    p.add_argument(
        "--out",
        type=output_dir,
        metavar="DIR",
        default="results/forward-gradient",
        help="output folder (created if missing)",
    )
    p.add_argument(
        "--models",
        type=choice_list(MODEL_NAMES),
        default=",".join(MODEL_NAMES),
        help=f"comma-separated subset of {','.join(MODEL_NAMES)}",
    )
    add_allocator_option(p, recorded="every result")


def run_reproduce(args) -> int:
    apply_allocator_option(args)
    from .reproduce import reproduce_forward_gradient

    reproduce_forward_gradient(
        args.out, full=args.full, progress=lambda total, label: Progress(total, label), models=args.models
    )
    print(f"results written to {args.out}/")
    return 0
