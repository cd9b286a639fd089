"""Where the time goes: seconds per primitive, and per group of primitives, in each pass of a loss.

:func:`profile_loss` runs four passes of ``loss(params)`` while timing every primitive they execute
(through :func:`minidiff.primitives.registry.intercept_evaluations`):

* ``f`` — one evaluation of the loss;
* ``jvp`` — the forward-mode pass of a forward gradient, along a fixed direction (no sampling);
* ``vjp_forward`` — reverse mode's forward pass, which records the tape;
* ``vjp_backward`` — reverse mode's backward sweep over that tape.

Each primitive falls in one of :data:`GROUPS`; what a pass spends outside the primitives (tracing, tape
bookkeeping, Python) is its ``outside primitives`` share.  Each pass is the mean of ``repeats`` runs
after ``warmup`` untimed ones.  The recorder adds about a microsecond per primitive, so these totals
run a little above the uninstrumented timings of :func:`minidiff.bench.measure_loss`: read shares, not
absolute times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..primitives.creation import ones_like
from ..primitives.registry import intercept_evaluations
from ..tensor.pytree import PyTree
from ..transforms.core import jvp, vjp
from ..transforms.forward_gradient import sample_directions
from .flops import primitive_flops

#: Groups of primitives, in the order tables show them.
GROUPS = ("matmul", "elementwise", "reduction", "shape/indexing", "linalg", "other")
PHASES = ("f", "jvp", "vjp_forward", "vjp_backward")
_TITLES = {
    "f": "f",
    "jvp": "JVP pass",
    "vjp_forward": "backprop: forward",
    "vjp_backward": "backprop: backward",
}
_REDUCTIONS = frozenset(
    {"sum", "cumsum", "max", "min", "prod", "logsumexp", "argmax", "argmin", "any", "all"}
    | {"max_pool2d", "pool2d_sum"}  # reductions over windows
)
_LINALG = frozenset({"solve", "inv", "det", "cholesky", "solve_triangular", "eigh", "eigvalsh", "svd"})
_LINALG = _LINALG | {"svdvals", "svd_complete", "qr", "slogdet", "slogdet_sign", "solve_banded"}


def primitive_group(prim) -> str:
    """The group of :data:`GROUPS` a primitive belongs to.

    >>> from minidiff.primitives.registry import REGISTRY
    >>> [primitive_group(REGISTRY[n]) for n in ("matmul", "exp", "sum", "reshape", "solve")]
    ['matmul', 'elementwise', 'reduction', 'shape/indexing', 'linalg']
    """
    name = prim.name
    if name in ("matmul", "einsum", "conv2d", "conv2d_transpose", "conv2d_weight_grad"):
        return "matmul"
    if name in _REDUCTIONS:
        return "reduction"
    if name in _LINALG:
        return "linalg"
    if prim.kind in ("elementwise", "nondiff"):
        return "elementwise"
    if prim.kind == "linear":
        return "shape/indexing"
    return "other"


class _Recorder:
    """The wrapper given to ``intercept_evaluations``: seconds, calls and FLOPs per primitive name."""

    def __init__(self, device=None, clock=time.perf_counter):
        self.sync = device.synchronize if device is not None else (lambda: None)
        self.clock = clock
        self.rows: dict = {}

    def __call__(self, prim, args, params, run):
        t0 = self.clock()
        out = run()
        self.sync()
        seconds = self.clock() - t0
        row = self.rows.setdefault(prim.name, {"group": primitive_group(prim), "seconds": 0.0, "calls": 0})
        row["seconds"] += seconds
        row["calls"] += 1
        flops = primitive_flops(prim.name, [getattr(a, "shape", ()) for a in args], out.shape, params)
        row["flops"] = row.get("flops", 0) + flops
        return out


def profile_loss(
    loss: Callable[..., Any],
    params: PyTree,
    *,
    repeats: int = 3,
    warmup: int = 1,
    distribution: str = "normal",
    seed: int = 0,
    clock: Callable[[], float] | None = None,
) -> dict:
    """Seconds per primitive and per group in each pass of ``loss(params)`` (see the module doc).

    >>> import minidiff as md
    >>> x = md.ones((16, 8))
    >>> p = {"w": md.ones((8, 4))}
    >>> prof = profile_loss(lambda p: md.tanh(x @ p["w"]).sum(), p, repeats=1)
    >>> sorted(prof["phases"]), prof["phases"]["f"]["groups"]["matmul"]["calls"]
    (['f', 'jvp', 'vjp_backward', 'vjp_forward'], 1)
    >>> prof["phases"]["vjp_backward"]["primitives"]["matmul"]["flops"]   # xᵀ·g only: x needs none
    1024
    """
    device = _leaves(params)[0].device
    v = sample_directions(params, seed, distribution)
    clock = clock or time.perf_counter
    phases = {name: _Recorder(device, clock) for name in PHASES}
    totals = dict.fromkeys(PHASES, 0.0)
    for i in range(warmup + repeats):
        timed = i >= warmup

        def run(name, fn):
            totals[name] += _run(fn, phases[name] if timed else None, device, clock)

        run("f", lambda: loss(params))
        run("jvp", lambda: jvp(loss, (params,), (v,)))
        forward = []
        run("vjp_forward", lambda: forward.append(vjp(loss, params)))
        out, back = forward[0]
        cotangent = ones_like(out)
        run("vjp_backward", lambda: back(cotangent))
    return {
        "repeats": repeats,
        "warmup": warmup,
        "units": "seconds",
        "phases": {name: _summary(phases[name], totals[name], repeats) for name in PHASES},
    }


def _run(fn, recorder, device, clock) -> float:
    """Seconds of one call of ``fn`` with every primitive recorded (untimed, 0, without a recorder)."""
    if recorder is None:
        fn()
        return 0.0
    with intercept_evaluations(recorder):
        t0 = clock()
        fn()
        device.synchronize()
        return clock() - t0


def _summary(recorder: _Recorder, total: float, repeats: int) -> dict:
    prims = {
        name: {
            **row,
            "seconds": row["seconds"] / repeats,
            "calls": row["calls"] // repeats,
            "flops": row["flops"] // repeats,
        }
        for name, row in sorted(recorder.rows.items(), key=lambda kv: -kv[1]["seconds"])
    }
    groups = {}
    for g in GROUPS:
        mine = [r for r in prims.values() if r["group"] == g]
        if mine:
            groups[g] = {key: sum(r[key] for r in mine) for key in ("seconds", "calls", "flops")}
    seconds = total / repeats
    inside = sum(r["seconds"] for r in prims.values())
    return {
        "seconds": seconds,
        "outside_primitives": max(seconds - inside, 0.0),
        "groups": groups,
        "primitives": prims,
    }


def format_profile(profile: dict, top: int = 0) -> str:
    """The profile as a table: one row per group (then the ``top`` slowest primitives if ``top > 0``),
    one column per pass, milliseconds and the share of the pass."""
    phases = profile["phases"]
    head = f"  {'':<22}" + "".join(f"{_TITLES[name]:>22}" for name in PHASES)
    lines = [f"time per pass (ms and share), mean of {profile['repeats']} runs", head]

    def row(label, values):
        cells = ""
        for name, s in zip(PHASES, values):
            share = s / phases[name]["seconds"] if phases[name]["seconds"] else 0.0
            cells += f"{s * 1e3:>14.3f} ({share:>4.0%})"
        return f"  {label:<22}{cells}"

    for g in GROUPS:
        if any(g in phases[p]["groups"] for p in PHASES):
            lines.append(row(g, [phases[p]["groups"].get(g, {}).get("seconds", 0.0) for p in PHASES]))
    lines.append(row("outside primitives", [phases[p]["outside_primitives"] for p in PHASES]))
    lines.append(row("total", [phases[p]["seconds"] for p in PHASES]))
    if top:
        names = sorted(
            {n for p in PHASES for n in phases[p]["primitives"]},
            key=lambda n: -max(phases[p]["primitives"].get(n, {}).get("seconds", 0.0) for p in PHASES),
        )
        lines.append(f"  slowest {min(top, len(names))} primitives:")
        for n in names[:top]:
            lines.append(
                row(f"  {n}", [phases[p]["primitives"].get(n, {}).get("seconds", 0.0) for p in PHASES])
            )
    return "\n".join(lines)


def _leaves(tree):
    from ..tensor.pytree import flatten

    return flatten(tree)[0]
