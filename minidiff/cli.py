"""The ``minidiff`` command.

Each subcommand is one :class:`Command` in :data:`COMMANDS`: a name, a one-line summary, a function
that adds its options to an ``argparse`` parser, and a function that runs it and returns the exit
code.  A new subcommand (``bench``, ``train``, ``reproduce``…) is a new entry; ``main`` needs no change.

Exit codes: 0 success, 1 a check failed, 2 a usage error (one line on stderr, as ``argparse`` does):
a bad option value, a path a run could not write, or input data found wrong when a command starts
(:class:`minidiff.bench.arguments.UsageError`) — always before the work, never as a traceback.
``--help`` shows every option's default.  ``python -m minidiff`` runs the same command.

>>> sorted(COMMANDS)
['bench', 'demo', 'reproduce', 'train']
>>> build_parser().parse_args(["demo", "--seed", "3"]).seed
3
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import minidiff as md
from minidiff.bench import commands as _bench
from minidiff.bench.arguments import UsageError
from minidiff.bench.arguments import device as _device
from minidiff.bench.arguments import positive_int as _positive_int
from minidiff.bench.arguments import seed as _seed

__all__ = ["Command", "COMMANDS", "build_parser", "main"]


def show_default(value) -> str:
    """A default as it is typed on the command line: sequences comma-separated (``1,2,5``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; every option that has a default says it, as "(default X)".

    Left alone: flags (their default is "off"), options defaulting to None (their help says what None
    means), and help that already states its default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default is None or default is argparse.SUPPRESS or action.nargs == 0 or "default" in text:
            return text
        return f"{text} (default {show_default(default).replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: what is wrong, and where to get help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


# ----------------------------------------------------------------------------- minidiff demo
DEMO_DESCRIPTION = """\
Differentiate a small MLP (8 -> 16 -> 3, tanh, softmax cross-entropy, float64) both ways:
the loss and its gradient by reverse mode (a tape), a directional derivative by forward mode
(dual numbers), their agreement <grad f, v> = J v, a Hessian-vector product by the three
compositions (fwd-over-rev, rev-over-fwd, rev-over-rev), and md.testing.check_grads.
Exits with status 1 if any of the agreements fails."""


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed, default=0, help="seed of the weights, data and directions")
    p.add_argument("--batch", type=_positive_int, default=32, help="examples in the minibatch")
    p.add_argument("--device", type=_device, default="cpu", help="'cpu' (NumPy) or 'cuda' (CuPy)")


def _leaves(tree) -> list:
    return md.pytree.flatten(tree)[0]


def _dot(a, b) -> float:
    return sum(float((x * y).sum().item()) for x, y in zip(_leaves(a), _leaves(b)))


def _max_abs_diff(a, b) -> float:
    return max(float(md.abs(x - y).max().item()) for x, y in zip(_leaves(a), _leaves(b)))


def _norm(a) -> float:
    return math.sqrt(_dot(a, a))


DEMO_SIZES = (8, 16, 3)


def run_demo(args: argparse.Namespace) -> int:
    loss, params, v = _demo_problem(DEMO_SIZES, args.seed, args.batch, args.device)
    report = _Report()
    n_params = sum(t.size for t in params.values())
    arch = " -> ".join(map(str, DEMO_SIZES))
    report.out += [
        f"minidiff {md.__version__} demo: forward and reverse mode on one small network",
        f"  model       MLP {arch}, tanh, softmax cross-entropy",
        f"  data        batch {args.batch}, float64, seed {args.seed}, device {args.device}; {n_params} parameters",
        "",
    ]
    _demo_both_modes(report, loss, params, v)
    _demo_hvp(report, loss, params, v)
    _demo_check_grads(report, loss, params, args.seed)
    if report.failures:
        report.out.append(f"FAILED: {', '.join(report.failures)}")
    else:
        report.out.append("all checks passed: forward and reverse mode agree")
    print("\n".join(report.out))
    return 1 if report.failures else 0


class _Report:
    """The demo's lines, and the names of the agreements that failed."""

    def __init__(self):
        self.out, self.failures = [], []

    def check(self, name, diff, tol) -> str:
        ok = diff <= tol
        if not ok:
            self.failures.append(name)
        return f"{diff:.1e}  {'ok' if ok else 'FAILED'} (tolerance {tol:.1e})"


def _demo_problem(sizes, seed, n, device):
    """An MLP's softmax cross-entropy on a random minibatch: ``(loss, params, v)``, v ~ N(0, I)."""
    rng = md.random.Generator(seed, device=device)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = rng.normal((fan_out, fan_in), std=1 / math.sqrt(fan_in))
        params[f"b{i}"] = rng.normal((fan_out,), std=0.1)
    x = rng.normal((n, sizes[0]))
    labels = rng.randint(0, sizes[-1], shape=(n,))

    def loss(p):
        h = x
        for i in range(len(sizes) - 1):
            h = md.nn.functional.linear(h, p[f"w{i}"], p[f"b{i}"])
            if i < len(sizes) - 2:
                h = md.tanh(h)
        return md.nn.functional.cross_entropy(h, labels)

    v = {k: rng.normal(t.shape) for k, t in params.items()}
    return loss, params, v


def _demo_both_modes(report, loss, params, v) -> None:
    """The gradient by reverse mode and J v by forward mode, and their agreement."""
    value, g = md.value_and_grad(loss)(params)
    f0, jv = md.jvp(loss, (params,), (v,))
    gv = _dot(g, v)
    jv = float(jv.item())
    tol = 1e-9 * (1 + abs(gv))
    agree = report.check("forward vs reverse", abs(gv - jv), tol)
    tol = 1e-12 * (1 + abs(value.item()))
    same_loss = report.check("loss", abs(value.item() - f0.item()), tol)
    report.out += [
        f"  loss f(theta)                                {value.item():.12f}",
        f"  |grad f|     reverse mode, one tape walk     {_norm(g):.12f}",
        "  directional derivative along v ~ N(0, I):",
        f"    <grad f, v>  reverse mode (tape)           {gv:+.15f}",
        f"    J v          forward mode (dual numbers)   {jv:+.15f}",
        f"    difference                                 {agree}",
        f"    f(theta) from both passes, difference      {same_loss}",
        "",
    ]


def _demo_hvp(report, loss, params, v) -> None:
    """H v in the three compositions, and their agreement."""
    report.out.append("  Hessian-vector product H v, never forming H:")
    hvps = {}
    for mode in md.transforms.HVP_MODES:
        (hvps[mode],) = md.hvp(loss, (params,), (v,), mode=mode)
        report.out.append(
            f"    {mode:<13} |H v| = {_norm(hvps[mode]):.12f}   <v, H v> = {_dot(v, hvps[mode]):+.12f}"
        )
    modes = list(hvps)
    diff = max(_max_abs_diff(hvps[a], hvps[b]) for a in modes for b in modes if a < b)
    tol = 1e-9 * (1 + max(_norm(h) for h in hvps.values()))
    report.out += [
        f"    max difference between the three modes     {report.check('HVP modes', diff, tol)}",
        "",
    ]


def _demo_check_grads(report, loss, params, seed) -> None:
    try:
        md.testing.check_grads(loss, (params,), order=2, seed=seed)
        verdict = "ok"
    except AssertionError as exc:
        report.failures.append("check_grads")
        verdict = "FAILED: " + str(exc).splitlines()[0]
    report.out += [
        "  md.testing.check_grads(loss, (params,), order=2):",
        "    finite differences, adjoint identity, and one order up   " + verdict,
        "",
    ]


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in [
        Command(
            "demo",
            "differentiate a small MLP both ways and check that the modes agree",
            _demo_arguments,
            run_demo,
            DEMO_DESCRIPTION,
        ),
        Command(
            "reproduce",
            "reproduce a paper's measurements (forward-gradient: Rf/Rb, depth sweep, training)",
            lambda p: _bench.reproduce_arguments(p, _device),
            _bench.run_reproduce,
            "Run the forward-gradient paper's three models, the depth sweep and the training comparison;\n"
            "print the measured tables beside the paper's and write JSON, PNG figures and summary.md.",
        ),
        Command(
            "bench",
            "measure: Rf/Rb (bench rfrb, bench depth), curvature costs, optimizers, DEER (bench --help)",
            lambda p: _bench.bench_arguments(p, _device),
            _bench.run_bench,
        ),
        Command(
            "train",
            "train a model on the embedded digits (or MNIST: --data-dir) with forward gradients (fgd) or backprop (sgd)",
            lambda p: _bench.train_arguments(p, _device),
            _bench.run_train,
        ),
    ]
}


# ----------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="minidiff",
        description="minidiff: forward mode (dual numbers) and reverse mode (a tape), side by side.",
    )
    parser.add_argument("--version", action="version", version=f"minidiff {md.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for c in COMMANDS.values():
        p = sub.add_parser(
            c.name,
            help=c.summary,
            description=c.description or c.summary,
        )
        c.add_arguments(p)
        p.set_defaults(run=c.run, parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``minidiff`` command with ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    args, extra = build_parser().parse_known_args(argv)
    parser: argparse.ArgumentParser = args.parser  # the subcommand's own
    if extra:  # reported by the subcommand's parser, so the hint points at its own --help
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except UsageError as exc:  # a bad input found as the command starts, before its work
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
