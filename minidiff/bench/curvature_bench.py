"""Micro-benchmark of the curvature products relative to one gradient (``minidiff bench curvature``).

On one minibatch of the forward-gradient paper's MLP or CNN with softmax cross-entropy, time one
gradient (f and ∇f by reverse mode), the Hessian-vector product in its three orders, the Gauss-Newton
product (once with its model tape recorded in the call, once reusing a kept tape, as CG or Lanczos do)
and the analytic Fisher product; report each as a median with quartiles and as a multiple of the
gradient's time, both as a ratio of medians (with a band from the quartiles) and as the median of the
per-round ratios ("paired"), beside a FLOP model (:func:`flop_model`).  The calls are interleaved (one
of each per round, :func:`~minidiff.bench.timing.measure_interleaved`), so load from other processes on
a shared machine falls on all of them alike.  Targets: the forward-over-reverse HVP costs at most 2.5
gradients, and is faster than reverse-over-reverse.  The environment (CPU, BLAS, threads, allocator) is recorded with the numbers.

>>> from minidiff.bench.curvature_bench import curvature_costs
>>> r = curvature_costs("mlp", batch=4, repeats=1, warmup=0, model_kwargs={"hidden": (8,)})
>>> sorted(r["relative_to_gradient"])[:2], r["parameters"]
(['fisher_vp', 'ggn_vp'], 6370)
"""

from __future__ import annotations

import argparse
import statistics

from ..curvature import fisher_vp, gauss_newton, ggn_vp, hvp
from ..errors import check_number
from ..nn import functional as F
from ..primitives.creation import asarray
from ..primitives.random import Generator
from ..tensor import pytree
from ..transforms.core import value_and_grad
from ..transforms.forward_gradient import sample_directions
from .arguments import (
    add_allocator_option,
    apply_allocator_option,
    device,
    nonnegative_int,
    output_file,
    positive_int,
    write_json,
)
from .environment import environment
from .flops import layer_flops
from .rfrb import build_model, synthetic_batch
from .timing import measure_interleaved, ratio

SCHEMA = "minidiff.curvature/1"
MODEL_NAMES = ("mlp", "cnn")

#: what is timed: name -> description (the gradient is the unit)
PRODUCTS = {
    "gradient": "f and ∇f by reverse mode (the unit)",
    "hvp_fwd_over_rev": "H·v, forward over reverse (JVP of the gradient)",
    "hvp_rev_over_fwd": "H·v, reverse over forward (gradient of ∇f·v)",
    "hvp_rev_over_rev": "H·v, reverse over reverse (VJP of the gradient)",
    "ggn_vp": "Jᵀ H_ℓ J v, one call (records the model's tape)",
    "ggn_vp_kept_tape": "Jᵀ H_ℓ J v with the model's tape kept (per product in CG/Lanczos)",
    "fisher_vp": "analytic Fisher of softmax CE times v, one call",
}

TARGET_FWD_OVER_REV = 2.5

#: Matrix-product FLOPs of each call per layer with parameters, in units of that layer's forward
#: product: (first layer, which sees the data and so has no input tangent or input cotangent; any later
#: layer).  A gradient is forward + ∂W (+ ∂input after the first layer).  Forward-over-reverse doubles
#: every bilinear product's work into three (primal + one product per tangent-carrying factor) in both
#: passes; reverse-over-reverse records forward and backward and transposes both; reverse-over-forward
#: walks back only the paths that reach the parameters.  The GGN product records the forward pass (1),
#: pushes one JVP (2 or 3) and walks back (1 or 2); with the tape kept, the recording is not repeated.
FLOP_MULTIPLIERS = {
    "gradient": (2, 3),
    "hvp_fwd_over_rev": (4, 9),
    "hvp_rev_over_fwd": (3, 8),
    "hvp_rev_over_rev": (4, 9),
    "ggn_vp": (4, 6),
    "ggn_vp_kept_tape": (3, 5),
    "fisher_vp": (4, 6),
}


def flop_model(layer_flops) -> dict:
    """Each product's FLOP-model cost relative to a gradient, from the forward FLOPs of the layers with
    parameters in order (matrix and convolution products only; elementwise work is not counted).

    Example:
        >>> from minidiff.bench.curvature_bench import flop_model
        >>> round(flop_model([100, 100])["hvp_fwd_over_rev"], 3)     # (4 + 9) / (2 + 3)
        2.6
    """
    flops = list(layer_flops)
    if not flops:
        raise ValueError("flop_model: no layers with parameters")

    def cost(name):
        first, rest = FLOP_MULTIPLIERS[name]
        return first * flops[0] + rest * sum(flops[1:])

    unit = cost("gradient")
    return {name: cost(name) / unit for name in FLOP_MULTIPLIERS if name != "gradient"}


def curvature_costs(
    model: str = "mlp",
    batch: int = 64,
    repeats: int = 10,
    dtype="float32",
    device=None,
    *,
    warmup: int = 2,
    seed: int = 0,
    model_kwargs: dict | None = None,
    clock=None,
) -> dict:
    """Time one gradient and each curvature product on ``model`` (``"mlp"`` or ``"cnn"``); return a dict
    with the timings (seconds), each product's time relative to the gradient, the targets and the
    environment.  ``model_kwargs`` go to the model builder (e.g. ``{"hidden": (64,)}`` for a small MLP)."""
    if model not in MODEL_NAMES:
        raise ValueError(f"curvature_costs: unknown model {model!r}; choose one of {MODEL_NAMES}")
    check_number("curvature_costs", "batch", batch, low=1, integer=True)
    net, shape = build_model(model, dtype=dtype, device=device, seed=seed, **(model_kwargs or {}))
    params = net.parameters()
    leaves = pytree.flatten(params)[0]
    dev, dt = leaves[0].device, leaves[0].dtype
    timing = {"device": dev} if clock is None else {"device": dev, "clock": clock}
    times = measure_interleaved(_product_calls(net, shape, batch, seed), repeats, warmup, **timing)
    relative = _relative_to_gradient(times)
    fwd, rev = relative["hvp_fwd_over_rev"]["value"], relative["hvp_rev_over_rev"]["value"]
    weight_flops = [fl for _, mod, fl in layer_flops(net, (batch,) + tuple(shape)) if mod.parameters()]
    return {
        "schema": SCHEMA,
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "batch": batch,
        "dtype": str(dt),
        "device": dev.name,
        "repeats": repeats,
        "warmup": warmup,
        "parameters": sum(p.size for p in leaves),
        "seconds": {name: m.as_dict() for name, m in times.items()},
        "relative_to_gradient": relative,
        "flop_model": flop_model(weight_flops),
        "targets": {
            f"hvp_fwd_over_rev <= {TARGET_FWD_OVER_REV} gradients": fwd <= TARGET_FWD_OVER_REV,
            "hvp_fwd_over_rev faster than hvp_rev_over_rev": fwd < rev,
        },
        "environment": environment(dev),
    }


def _product_calls(net, shape, batch: int, seed: int) -> dict:
    """name → a call of each of :data:`PRODUCTS` on one synthetic minibatch, along one random v."""
    params = net.parameters()
    leaf = pytree.flatten(params)[0][0]
    x, y = synthetic_batch(shape, batch, dtype=leaf.dtype, device=leaf.device)
    x, y = asarray(x, device=leaf.device), asarray(y, device=leaf.device)

    def model_fn(p):
        return net.apply(p, x)

    def loss_fn(z):
        return F.cross_entropy(z, y)

    def f(p):
        return loss_fn(model_fn(p))

    v = sample_directions(params, Generator(seed + 1, leaf.device), "normal")
    grad_fn = value_and_grad(f)
    kept = gauss_newton(model_fn, loss_fn, params)
    return {
        "gradient": lambda: grad_fn(params),
        "hvp_fwd_over_rev": lambda: hvp(f, params, v, "fwd-over-rev"),
        "hvp_rev_over_fwd": lambda: hvp(f, params, v, "rev-over-fwd"),
        "hvp_rev_over_rev": lambda: hvp(f, params, v, "rev-over-rev"),
        "ggn_vp": lambda: ggn_vp(model_fn, loss_fn, params, v),
        "ggn_vp_kept_tape": lambda: kept(v),
        "fisher_vp": lambda: fisher_vp(model_fn, params, v),
    }


def _relative_to_gradient(times: dict) -> dict:
    """Each product's time over the gradient's: the ratio of medians with its band, and the median of
    the per-round ratios (``paired_median``, robust to load that drifts)."""
    unit = times["gradient"]
    relative = {name: ratio(m, unit) for name, m in times.items() if name != "gradient"}
    for name, q in relative.items():
        q["paired_median"] = statistics.median(
            a / b for a, b in zip(times[name].samples, unit.samples) if b > 0
        )
    return relative


def format_curvature_costs(result: dict) -> str:
    """A plain-text table of :func:`curvature_costs`' result.

    Example:
        >>> from minidiff.bench.curvature_bench import curvature_costs, format_curvature_costs
        >>> r = curvature_costs("mlp", batch=2, repeats=1, warmup=0, model_kwargs={"hidden": (4,)})
        >>> print(format_curvature_costs(r))  # doctest: +ELLIPSIS
        mlp: batch 2, float32, cpu, 3,190 parameters, 1 repeats
          product              median ms   IQR ms   × gradient  [band]         paired  FLOP model
          gradient ...
    """
    r = result
    lines = [
        f"{r['model']}: batch {r['batch']}, {r['dtype']}, {r['device']}, {r['parameters']:,} parameters, "
        f"{r['repeats']} repeats",
        f"  {'product':<20} {'median ms':>9} {'IQR ms':>8}   × gradient  [band]         paired  FLOP model",
    ]
    for name in PRODUCTS:
        m = r["seconds"][name]
        if name == "gradient":
            rel = f"{1.0:10.2f}"
        else:
            q = r["relative_to_gradient"][name]
            band = f"[{q['low']:.2f}, {q['high']:.2f}]"
            rel = f"{q['value']:10.2f}  {band:<14} {q['paired_median']:6.2f}  {r['flop_model'][name]:10.2f}"
        lines.append(f"  {name:<20} {m['median'] * 1e3:9.3f} {m['iqr'] * 1e3:8.3f}   {rel}")
    for target, met in r["targets"].items():
        lines.append(f"  target: {target}: {'met' if met else 'NOT met'}")
    env = r["environment"]
    lines.append(
        f"  environment: {env['cpu']}, {env['logical_cores']} cores, numpy {env['numpy']}, "
        f"OPENBLAS_CORETYPE={env['env'].get('OPENBLAS_CORETYPE')}, allocator {env['allocator']['mode']}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``minidiff bench curvature``."""
    parser.add_argument("--model", choices=MODEL_NAMES, default="mlp", help="which model")
    parser.add_argument("--batch", type=positive_int, default=64, help="minibatch size")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed repeats")
    parser.add_argument("--warmup", type=nonnegative_int, default=2, help="untimed warm-up calls")
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="float32 or float64"
    )
    parser.add_argument("--device", type=device, default="cpu", help="'cpu' or 'cuda'")
    add_allocator_option(parser)
    parser.add_argument("--json", type=output_file, metavar="PATH", help="write the full result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``minidiff bench curvature``: print the table, optionally write JSON; returns the exit status."""
    apply_allocator_option(args)
    result = curvature_costs(
        args.model,
        batch=args.batch,
        repeats=args.repeats,
        dtype=args.dtype,
        device=args.device,
        warmup=args.warmup,
    )
    print(format_curvature_costs(result))
    write_json(result, args.json)
    return 0
