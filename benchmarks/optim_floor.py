"""FLOP floors of a K-FAC and a Shampoo step beside an SGD step on an MLP (``docs/optimizers.md``).

Counts the matrix-product FLOPs (2 per multiply-add) each step must do with the optimizers' defaults,
per step, amortized over the statistics and inverse periods; elementwise work is not counted (in the
SGD step either).  The floor of an optimizer is its FLOPs over SGD's: the step-time ratio it would have
if every product ran at the rate of SGD's own.  The inverses and roots run in float64 (about half the
float32 rate on a CPU); they are counted as plain FLOPs and shown on their own line.

* SGD: forward ``2·B·Σ in·out``; backward the weight gradients (the same) and the input cotangents of
  every layer but the first.
* K-FAC (factored Tikhonov path, ``minidiff/optim/kfac.py``): per layer with ``d = in + 1`` (bias
  column) and R = B rows, preconditioning ``2R(o² + d² + o·d)`` where that is cheaper, else
  ``2·o·d·(o + d)``; every ``stat_period`` steps one more backward pass (sampled labels), the factors'
  Gram matrices ``2R(d² + o²)`` and the factored-gradient check ``2·o·R·d``; every ``inverse_period``
  steps the Cholesky inverses (``potrf`` + ``potri``: n³ each).
* Shampoo (``minidiff/optim/shampoo.py``): per parameter cut in blocks (zero-padded), per preconditioned
  axis of length b one Gram product for the statistic and one product for the direction, each
  ``2·b`` FLOPs per (padded) entry; every ``inverse_period`` steps one ``eigh`` (≈ 9n³) and the root's
  product ``q·diag·qᵀ`` (2n³) per statistic.

Run: ``PYTHONPATH=. python benchmarks/optim_floor.py [--batch 64] [--widths 784,1024,1024,10]``.
"""

from __future__ import annotations

import argparse
import math


def sgd_flops(widths: list[int], batch: int) -> float:
    """Forward + backward matrix-product FLOPs of one SGD step on the MLP ``widths``."""
    pairs = list(zip(widths[:-1], widths[1:]))
    dense = [2 * batch * i * o for i, o in pairs]
    return 2 * sum(dense) + sum(dense[1:])


def kfac_flops(
    widths: list[int], batch: int, stat_period: int = 10, inverse_period: int = 100
) -> dict[str, float]:
    """K-FAC's FLOPs per step by part (see the module docstring), amortized over its periods."""
    r = batch
    precondition = stats = inverses = 0.0
    for i, o in zip(widths[:-1], widths[1:]):
        d = i + 1
        factored = r * (o * o + d * d + o * d) < o * d * (o + d)
        precondition += 2 * r * (o * o + d * d + o * d) if factored else 2 * o * d * (o + d)
        stats += 2 * r * (d * d + o * o) + (2 * o * r * d if factored else 0)
        inverses += d**3 + o**3
    stats += sgd_flops(widths, batch) - 2 * batch * widths[0] * widths[1]  # the sampled-label backward
    return {
        "precondition": precondition,
        "statistics": stats / stat_period,
        "inverses (float64)": inverses / inverse_period,
    }


def _blocks(n: int, block: int) -> tuple[int, int]:
    return (math.ceil(n / block), block) if n > block else (1, n)


def shampoo_flops(widths: list[int], block: int = 128, inverse_period: int = 100) -> dict[str, float]:
    """Shampoo's FLOPs per step by part (see the module docstring), for the MLP's weights and biases."""
    products = roots = 0.0
    shapes = [s for i, o in zip(widths[:-1], widths[1:]) for s in ((o, i), (o,))]
    for shape in shapes:
        cut = [_blocks(n, block) for n in shape if n > 1]
        count = math.prod(c for c, _ in cut)
        entries = count * math.prod(b for _, b in cut)
        products += sum(2 * 2 * entries * b for _, b in cut)  # statistic + direction per axis
        roots += count * sum(11 * b**3 for _, b in cut)
    return {"statistics + direction": products, "roots (float64)": roots / inverse_period}


def floors(widths: list[int], batch: int) -> list[tuple[str, float, dict[str, float]]]:
    """``(optimizer, FLOPs per step ÷ SGD's, parts in MFLOP)`` for SGD, K-FAC and Shampoo."""
    base = sgd_flops(widths, batch)
    rows = [("sgd", 1.0, {"forward + backward": base / 1e6})]
    for name, parts in (("kfac", kfac_flops(widths, batch)), ("shampoo", shampoo_flops(widths))):
        rows.append((name, (base + sum(parts.values())) / base, {k: v / 1e6 for k, v in parts.items()}))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--widths", default="784,1024,1024,10")
    args = p.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    print(f"MLP {'-'.join(map(str, widths))}, batch {args.batch}, the optimizers' defaults")
    print("| optimizer | FLOP floor ÷ SGD step | MFLOP per step by part |")
    print("|---|---|---|")
    for name, ratio, parts in floors(widths, args.batch):
        detail = "; ".join(f"{k} {v:.0f}" for k, v in parts.items())
        print(f"| {name} | {ratio:.2f} | {detail} |")


if __name__ == "__main__":
    main()
