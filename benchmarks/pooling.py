"""Pooling: max_pool2d and avg_pool2d, 2×2 windows, float32 — minidiff's sub-grid primitives against the
formulas they replaced, plain NumPy's best formula and (if importable) PyTorch.

Run: ``PYTHONPATH=. python benchmarks/pooling.py [--quick] [--repeats N] [--cnn] [--markdown]
[--json PATH]``.  Not a test (a smoke test in tests/test_pooling.py runs it with ``--quick``);
prints one table per shape.

For each input shape (batch 64, 16 and 1 of 64 channels at 28×28 and 14×14; ``--quick``: batch 1 only,
few rounds) and each pool, three jobs:

``f``         the pooled output;
``f+grad``    the gradient of ``sum(pool(x))`` with respect to ``x`` (one forward and one backward);
``jvp``       the output and its directional derivative along a fixed tangent (forward mode).

and four implementations, timed in interleaved rounds (one call of each per round, so a change of load
falls on all alike; median and quartiles):

``old``       the formulas before ``minidiff.primitives.pooling``, with minidiff ops: ``max`` over axes
              (3, 5) of the ``(N, C, H/2, 2, W/2, 2)`` reshaped view; ``mean`` over the stacked windows
              of ``F.unfold`` (which is what avg_pool2d ran);
``new``       ``md.nn.functional.max_pool2d`` / ``avg_pool2d``;
``numpy``     hand-written NumPy, the fastest formula found (elementwise maxima or sums of the four
              strided sub-grids; for the gradient, the winner masks per sub-grid and the cotangent
              divided by the tie count written back into each sub-grid): a floor, without autodiff;
``torch``     ``torch.nn.functional`` with autograd and ``torch.func.jvp``, when PyTorch is installed
              (otherwise skipped, and said so).

With ``--cnn``, also the paper's CNN (``md.nn.models.cnn``, batch 64) — f, f + grad and the JVP pass —
with the old max-pool formula swapped in for ``F.max_pool2d`` and with the new one.

Before timing, every implementation's output and derivative is checked against ``new`` (exactly
equal for ``old`` and ``numpy`` on these tie-free inputs).  The machine, its load averages before and
after, and the versions go with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import minidiff as md
from minidiff.bench.environment import environment
from minidiff.bench.timing import measure_interleaved

F = md.nn.functional
SHAPES = [(b, 64, s, s) for s in (28, 14) for b in (64, 16, 1)]
QUICK_SHAPES = [(1, 64, 28, 28), (1, 64, 14, 14)]
JOBS = ("f", "f+grad", "jvp")


# ----------------------------------------------------------------------------- the replaced formulas
def old_max_pool2d(x):
    n, c, h, w = x.shape
    return md.max(md.reshape(x, (n, c, h // 2, 2, w // 2, 2)), axis=(3, 5))


def old_avg_pool2d(x):
    return md.mean(F.unfold(x, 2, stride=2), axis=2)


def minidiff_jobs(pool, x, v):
    grad = md.grad(lambda x: md.sum(pool(x)))
    return {
        "f": lambda: pool(x).numpy(),
        "f+grad": lambda: grad(x).numpy(),
        "jvp": lambda: md.jvp(pool, (x,), (v,))[1].numpy(),
    }


# ----------------------------------------------------------------------------- plain NumPy
def _grids(a):
    return a[..., 0::2, 0::2], a[..., 0::2, 1::2], a[..., 1::2, 0::2], a[..., 1::2, 1::2]


def np_max(x):
    a, b, c, d = _grids(x)
    return np.maximum(np.maximum(a, b), np.maximum(c, d))


def np_max_grad(x):
    y = np_max(x)  # the forward pass
    hits = [g == y for g in _grids(x)]
    count = hits[0].astype(x.dtype)
    for h in hits[1:]:
        count += h
    share = np.ones_like(y) / count  # d sum(y) / dy = 1, divided among the tied maxima
    out = np.empty_like(x)
    for h, o in zip(hits, _grids(out)):
        np.multiply(h, share, out=o)
    return out


def np_max_jvp(x, v):
    y = np_max(x)  # the primal output, as every jvp job computes it
    hits = [g == y for g in _grids(x)]
    count = hits[0].astype(x.dtype)
    num = np.where(hits[0], _grids(v)[0], 0)
    for h, t in zip(hits[1:], _grids(v)[1:]):
        count += h
        num += np.where(h, t, 0)
    return num / count


def np_avg(x):
    a, b, c, d = _grids(x)
    return (a + b + c + d) * np.float32(0.25)


def np_avg_grad(x):
    g = np.ones_like(np_avg(x))  # the forward pass, and d sum(y) / dy
    q = g * np.float32(0.25)
    out = np.empty_like(x)
    for o in _grids(out):
        o[...] = q
    return out


def numpy_jobs(which, x, v):
    if which == "max_pool2d":
        return {"f": lambda: np_max(x), "f+grad": lambda: np_max_grad(x), "jvp": lambda: np_max_jvp(x, v)}
    return {
        "f": lambda: np_avg(x),
        "f+grad": lambda: np_avg_grad(x),
        "jvp": lambda: (np_avg(x), np_avg(v))[1],
    }


# ----------------------------------------------------------------------------- PyTorch, if there
def torch_jobs(which, x, v):
    try:
        import torch
    except ImportError:
        return None
    pool = getattr(torch.nn.functional, which)
    tx, tv = torch.from_numpy(x), torch.from_numpy(v)

    def f_grad():
        xr = tx.detach().requires_grad_()
        pool(xr, 2).sum().backward()
        return xr.grad.numpy()

    return {
        "f": lambda: pool(tx, 2).numpy(),
        "f+grad": f_grad,
        "jvp": lambda: torch.func.jvp(lambda a: pool(a, 2), (tx,), (tv,))[1].numpy(),
    }


# ----------------------------------------------------------------------------- the paper's CNN
def cnn_rows(batch, repeats, warmup):
    """The paper's CNN (``md.nn.models.cnn``: two 2×2 max-pools, at 24×24 and 8×8) at ``batch``,
    float32: f, f + grad and the JVP pass over the parameters, with the old max-pool formula swapped in
    for ``F.max_pool2d`` and with the new one, in interleaved rounds."""
    model = md.nn.models.cnn(dtype="float32", seed=0)
    params = model.parameters()
    x = md.random.normal((batch, 1, 28, 28), rng=0, dtype="float32")
    labels = md.tensor(np.arange(batch) % 10)
    tangent = md.pytree.tree_map(lambda p: md.random.normal(p.shape, rng=1, dtype="float32"), params)

    def loss(p):
        return F.cross_entropy(model.apply(p, x), labels)

    grad = md.grad(loss)
    jobs = {
        "f": lambda: loss(params).item(),
        "f+grad": lambda: grad(params),
        "jvp": lambda: md.jvp(loss, (params,), (tangent,))[1].item(),
    }
    new = F.max_pool2d

    def swapped(pool, fn):
        def run():
            F.max_pool2d = pool
            try:
                return fn()
            finally:
                F.max_pool2d = new

        return run

    def old(h, kernel_size=2, stride=None):
        return old_max_pool2d(h)

    out = {}
    for job, fn in jobs.items():
        times = measure_interleaved({"old": swapped(old, fn), "new": fn}, repeats, warmup)
        out[job] = {
            k: {"median_ms": m.median * 1e3, "q1_ms": m.q1 * 1e3, "q3_ms": m.q3 * 1e3}
            for k, m in times.items()
        }
    print(f"\npaper CNN, batch {batch}, float32, the old max-pool formula vs the new: median ms [q1, q3]")
    for job, t in out.items():
        cells = "".join(
            f"{t[n]['median_ms']:9.1f} [{t[n]['q1_ms']:.1f}, {t[n]['q3_ms']:.1f}]".rjust(24) for n in t
        )
        print(f"{job:8s}{cells}{t['new']['median_ms'] / t['old']['median_ms']:11.2f}")
    return out


# ----------------------------------------------------------------------------- the table
def implementations(which, x, v):
    new, old = (F.max_pool2d, old_max_pool2d) if which == "max_pool2d" else (F.avg_pool2d, old_avg_pool2d)
    out = {
        "old": minidiff_jobs(old, md.tensor(x), md.tensor(v)),
        "new": minidiff_jobs(new, md.tensor(x), md.tensor(v)),
        "numpy": numpy_jobs(which, x, v),
    }
    torch = torch_jobs(which, x, v)
    if torch is not None:
        out["torch"] = torch
    return out


def check(impls) -> dict:
    """Largest |difference| of each implementation from ``new``, per job (0 means bitwise equal)."""
    ref = {job: impls["new"][job]() for job in JOBS}
    return {
        name: {job: float(np.max(np.abs(np.asarray(jobs[job]()) - ref[job]), initial=0.0)) for job in JOBS}
        for name, jobs in impls.items()
        if name != "new"
    }


def run(shapes, repeats, warmup):
    rng = np.random.default_rng(0)
    results = []
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)  # continuous: no ties
        v = rng.standard_normal(shape).astype(np.float32)
        for which in ("max_pool2d", "avg_pool2d"):
            impls = implementations(which, x, v)
            row = {"pool": which, "shape": list(shape), "max_abs_diff_from_new": check(impls), "jobs": {}}
            for job in JOBS:
                times = measure_interleaved({k: jobs[job] for k, jobs in impls.items()}, repeats, warmup)
                row["jobs"][job] = {
                    k: {"median_ms": m.median * 1e3, "q1_ms": m.q1 * 1e3, "q3_ms": m.q3 * 1e3}
                    for k, m in times.items()
                }
            results.append(row)
            _print_row(row)
    return results


def _print_row(row):
    names = list(next(iter(row["jobs"].values())))
    print(f"\n{row['pool']} 2×2 on {tuple(row['shape'])} float32: median ms [q1, q3]")
    peers = [n for n in names if n != "new"]
    print(
        f"{'job':8s}" + "".join(f"{n:>22s}" for n in names) + "".join(f"{'new ÷ ' + n:>13s}" for n in peers)
    )
    for job, t in row["jobs"].items():
        cells = "".join(
            f"{t[n]['median_ms']:9.2f} [{t[n]['q1_ms']:.2f}, {t[n]['q3_ms']:.2f}]".rjust(22) for n in names
        )
        new = t["new"]["median_ms"]
        print(f"{job:8s}{cells}" + "".join(f"{new / t[n]['median_ms']:13.2f}" for n in peers))
    print("max |difference| from new:", row["max_abs_diff_from_new"])


def markdown(results, batches=None) -> str:
    """The rows of ``results`` (of the given batch sizes) as the table of docs/benchmarks.md."""
    names = [n for n in ("old", "new", "numpy", "torch") if n in results[0]["jobs"]["f"]]
    peers = [n for n in ("old", "numpy", "torch") if n in names]
    head = "| pool | input | job | " + " | ".join(f"{n} ms" for n in names) + " | "
    head += " | ".join(f"new ÷ {n}" for n in peers) + " |"
    lines = [head, "|" + "---|" * (3 + len(names) + len(peers))]
    for r in results:
        if batches is not None and r["shape"][0] not in batches:
            continue
        for job, t in r["jobs"].items():
            cells = [f"{t[n]['median_ms']:.2f} [{t[n]['q1_ms']:.2f}, {t[n]['q3_ms']:.2f}]" for n in names]
            ratios = [f"{t['new']['median_ms'] / t[n]['median_ms']:.2f}" for n in peers]
            shape = "×".join(str(d) for d in r["shape"])
            lines.append(f"| {r['pool']} | {shape} | {job} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 1 only, 3 rounds (a smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; --quick 3)")
    p.add_argument("--cnn", action="store_true", help="also the paper's CNN at batch 64 (--quick: batch 2)")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    p.add_argument("--json", help="write the results to this JSON file")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    env = environment()
    load_before = os.getloadavg()
    print(f"{env['cpu']}, {env['logical_cores']} logical cores; NumPy {env['numpy']}; load {load_before}")
    try:
        import torch

        env["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("torch: not installed, skipped")
    warmup = 1 if args.quick else 3
    results = run(QUICK_SHAPES if args.quick else SHAPES, repeats, warmup)
    cnn = cnn_rows(2 if args.quick else 64, min(repeats, 7), warmup) if args.cnn else None
    load_after = os.getloadavg()
    if args.markdown:
        print("\n" + markdown(results))
    print(f"\nload averages (1, 5, 15 min) before {load_before}, after {load_after}")
    if args.json:
        with open(args.json, "w") as fh:
            out = {"args": vars(args), "repeats": repeats, "results": results, "cnn": cnn, "environment": env}
            out["load_average"] = {"before": load_before, "after": load_after}
            json.dump(out, fh, indent=1)
    return results


if __name__ == "__main__":
    main()
