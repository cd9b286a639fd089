"""Mean step time of optimizers of ``minidiff bench optim`` on the paper's MLP, in one process.

Times ``--steps`` steps of each optimizer (``bench optim``'s own step functions and settings) on the
784-1024-1024-10 MLP, batch 64, float32, random inputs and labels, from the same initial parameters;
prints per optimizer the mean step (periodic work such as inverses amortized), the median and the
longest step, and the mean step ÷ the first optimizer's.  No data set is read, so it is quick to run
old and new trees alternately: ``PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/optim_step_time.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import minidiff as md
from minidiff.bench import optim_bench as ob
from minidiff.tensor import pytree


def step_times(names: list[str], steps: int, batch: int = 64, hidden: int = 1024) -> dict[str, list[float]]:
    """Seconds of every step of each optimizer in ``names`` (the same parameters and batches each)."""
    model = ob._model("mlp", hidden, None, None, hidden == 1024, "float32", None, 0)
    init = pytree.tree_map(lambda p: p.detach(), model.parameters())
    rng = np.random.default_rng(0)
    xs = [md.tensor(rng.standard_normal((batch, 784)).astype("float32")) for _ in range(steps)]
    ys = [md.tensor(rng.integers(0, 10, batch)) for _ in range(steps)]
    out = {}
    for name in names:
        factory, style, _ = ob.OPTIMIZERS[name]
        model.set_parameters(pytree.tree_map(lambda v: v.copy(), init))
        model.requires_grad_()
        leaves, treedef = pytree.flatten(model.parameters())
        step = ob._step_function(factory(model, leaves), style, model, treedef)
        times = []
        for x, y in zip(xs, ys):
            t0 = time.perf_counter()
            step(x, y)
            times.append(time.perf_counter() - t0)
        out[name] = times
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizers", default="sgd,kfac,shampoo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=1024, help="hidden width (1024: the paper's MLP)")
    args = p.parse_args(argv)
    times = step_times(args.optimizers.split(","), args.steps, args.batch, args.hidden)
    base = None
    print("| optimizer | mean step ms | median ms | longest ms | mean ÷ first |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        mean = sum(ts) / len(ts)
        base = base or mean
        print(
            f"| {name} | {1e3 * mean:.2f} | {1e3 * statistics.median(ts):.2f} | {1e3 * max(ts):.1f} | "
            f"{mean / base:.2f} |"
        )


if __name__ == "__main__":
    main()
