"""``minidiff bench deer``: DEER against sequential evaluation of the same RNN cell.

For each hidden size n, length T and batch B (input size = n, as in the paper's GRU benchmark):

* DEER forward (:func:`minidiff.deer.deer_rnn`) and forward + gradient of a sum-of-states loss
  with respect to the cell's parameters (DEER's own VJP rule);
* the minidiff sequential loop (:func:`minidiff.deer.sequential_rnn`), forward and forward +
  gradient through the tape.  It costs the same per step at every T, so it is timed on a prefix of
  at most ``seq_steps`` steps and scaled to T (marked ``extrapolated`` in the result);
* a plain array loop of the same cell on the backend's arrays (NumPy on the CPU), forward and
  forward + hand-written backprop through time: the floor of sequential evaluation, run over the
  whole T; its output is the reference for DEER's maximum deviation.

Grid points whose Jacobian pass would not fit ``max_memory_gb`` are skipped (the paper's "out of
memory").  Timings are medians of ``repeats`` runs after one warm-up (``minidiff.bench.timing``).

With ``busy_core=True`` (``--busy-core``) every grid point is measured twice, one after the other: as
the machine is, then with another process spinning on one core (:func:`busy_core`), the load under
which threaded BLAS products wait for a descheduled thread (docs/deer.md, "BLAS threads").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import subprocess
import sys
from collections.abc import Iterator

import minidiff as md

from ..deer import cells as deer_cells
from ..deer import deer_rnn, sequential_rnn
from ..errors import check_number
from .arguments import (
    add_allocator_option,
    apply_allocator_option,
    device,
    int_list,
    output_file,
    positive_float,
    positive_int,
    write_json,
)
from .environment import environment
from .timing import measure, timed

__all__ = [
    "run_deer_bench",
    "format_deer_bench",
    "add_arguments",
    "run",
    "busy_core",
    "SMALL_GRID",
    "FULL_GRID",
]

#: the default grid: finishes in a few minutes on a 2-core CPU
SMALL_GRID = {"sizes": (1, 4, 8), "lengths": (1000, 10000), "batches": (1,)}
#: the paper-sized grid (long: tens of minutes, the largest points are skipped for memory)
FULL_GRID = {"sizes": (1, 2, 4, 8, 16, 32, 64), "lengths": (1000, 10000, 100000), "batches": (1, 16)}

_GATES = {"gru": 3, "lstm": 4, "elman": 1}


# ----------------------------------------------------------------------------- plain array cells
def _sigmoid(ns, a):
    return 1.0 / (1.0 + ns.exp(-a))


def _array_step(cell, ns, p):
    """One step of ``cell`` on raw arrays (the sequential floor), weights pre-transposed."""
    Wi, Wh = ns.ascontiguousarray(p["W_ih"].T), ns.ascontiguousarray(p["W_hh"].T)
    bi, bh = p["b_ih"], p["b_hh"]
    if cell == "gru":

        def step(h, x):
            gi, gh = x @ Wi + bi, h @ Wh + bh
            n = h.shape[-1]
            r = _sigmoid(ns, gi[..., :n] + gh[..., :n])
            z = _sigmoid(ns, gi[..., n : 2 * n] + gh[..., n : 2 * n])
            c = ns.tanh(gi[..., 2 * n :] + r * gh[..., 2 * n :])
            return c + z * (h - c)

    elif cell == "lstm":

        def step(y, x):
            H = y.shape[-1] // 2
            g = x @ Wi + bi + y[..., :H] @ Wh + bh
            c = _sigmoid(ns, g[..., H : 2 * H]) * y[..., H:] + _sigmoid(ns, g[..., :H]) * ns.tanh(
                g[..., 2 * H : 3 * H]
            )
            return ns.concatenate([_sigmoid(ns, g[..., 3 * H :]) * ns.tanh(c), c], axis=-1)

    else:

        def step(h, x):
            return ns.tanh(x @ Wi + bi + h @ Wh + bh)

    return step


def _array_loop(step, ns, y0, xs):
    T = xs.shape[-2]
    out = ns.empty(xs.shape[:-1] + y0.shape[-1:], dtype=xs.dtype)
    y = y0
    for i in range(T):
        y = step(y, xs[..., i, :])
        out[..., i, :] = y
    return out


def _array_forward_grad(cell, ns, p, y0, xs):
    """Forward and backprop through time by hand on raw arrays, for the loss sum of all states:
    the floor of sequential training.  Returns the gradients of the four weight arrays."""
    Wt = ns.ascontiguousarray(p["W_hh"].T)
    GI = xs @ p["W_ih"].T + p["b_ih"]  # the input projections of all steps in one product
    prev, saved = _bptt_forward(cell, ns, GI, Wt, p["b_hh"], y0)
    dGI, dGH = _bptt_backward(cell, ns, GI, Wt, y0, prev, saved)
    H = Wt.shape[0]
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    return {
        "W_ih": flat(dGI).T @ flat(xs),
        "W_hh": flat(dGH).T @ flat(prev[..., :H]),
        "b_ih": flat(dGI).sum(axis=0),
        "b_hh": flat(dGH).sum(axis=0),
    }


def _bptt_forward(cell, ns, GI, Wt, bh, y0):
    """The forward loop: the state entering each step, and what the backward pass reads per step."""
    T, H = GI.shape[-2], Wt.shape[0]
    prev = ns.empty(GI.shape[:-1] + y0.shape[-1:], GI.dtype)
    saved = []
    y = y0
    for i in range(T):
        prev[..., i, :] = y
        gi, h = GI[..., i, :], y[..., :H]
        gh = h @ Wt + bh
        if cell == "gru":
            r = _sigmoid(ns, gi[..., :H] + gh[..., :H])
            z = _sigmoid(ns, gi[..., H : 2 * H] + gh[..., H : 2 * H])
            c = ns.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
            saved.append((r, z, c, gh[..., 2 * H :]))
            y = c + z * (h - c)
        elif cell == "lstm":
            g = gi + gh
            ig, fg = _sigmoid(ns, g[..., :H]), _sigmoid(ns, g[..., H : 2 * H])
            cg, og = ns.tanh(g[..., 2 * H : 3 * H]), _sigmoid(ns, g[..., 3 * H :])
            c_new = fg * y[..., H:] + ig * cg
            tc = ns.tanh(c_new)
            saved.append((ig, fg, cg, og, tc))
            y = ns.concatenate([og * tc, c_new], axis=-1)
        else:
            y = ns.tanh(gi + gh)
            saved.append(y)
    return prev, saved


def _bptt_backward(cell, ns, GI, Wt, y0, prev, saved):
    """Backward through time (dL/dy_i = 1 from the loss): the cotangents of the input and hidden
    projections of every step."""
    H = Wt.shape[0]
    dGI, dGH = ns.empty_like(GI), ns.empty_like(GI)
    carry = ns.zeros_like(y0)
    for i in range(GI.shape[-2] - 1, -1, -1):
        dy = carry + 1.0
        if cell == "gru":
            r, z, c, ghn = saved[i]
            dn = dy * (1.0 - z) * (1.0 - c * c)
            dz = dy * (prev[..., i, :] - c) * z * (1.0 - z)
            dr = dn * ghn * r * (1.0 - r)
            dGI[..., i, :] = ns.concatenate([dr, dz, dn], axis=-1)
            dGH[..., i, :] = ns.concatenate([dr, dz, dn * r], axis=-1)
            carry = dy * z + dGH[..., i, :] @ Wt.T
        elif cell == "lstm":
            ig, fg, cg, og, tc = saved[i]
            dh, dc = dy[..., :H], dy[..., H:] + dy[..., :H] * og * (1.0 - tc * tc)
            dg = ns.concatenate(
                [
                    dc * cg * ig * (1.0 - ig),
                    dc * prev[..., i, H:] * fg * (1.0 - fg),
                    dc * ig * (1.0 - cg * cg),
                    dh * tc * og * (1.0 - og),
                ],
                axis=-1,
            )
            dGI[..., i, :] = dGH[..., i, :] = dg
            carry = ns.concatenate([dg @ Wt.T, dc * fg], axis=-1)
        else:
            out = saved[i]
            dGI[..., i, :] = dGH[..., i, :] = dy * (1.0 - out * out)
            carry = dGH[..., i, :] @ Wt.T
    return dGI, dGH


@md.array_kernel
def _time_array_floor(ns, params, y0, xs, *, cell, device):
    """Time the plain array loop (forward) and its hand-written backprop over the whole horizon, once
    each; returns the loop's trajectory (the reference for DEER) and the two times in seconds."""
    step = _array_step(cell, ns, params)
    ref, forward_seconds = timed(lambda: _array_loop(step, ns, y0, xs), device)
    y0_b = ns.broadcast_to(y0, xs.shape[:-2] + y0.shape[-1:])
    _, grad_seconds = timed(lambda: _array_forward_grad(cell, ns, params, y0_b, xs), device)
    return ref, forward_seconds, grad_seconds


# ----------------------------------------------------------------------------- one grid point
def _memory_estimate(cell, n, T, B, itemsize) -> float:
    """Bytes of DEER's largest temporaries: the vector-mode pass holds ~6 arrays of n directions
    times B·T·(gates·n) values, plus the Jacobians and their scan (B·T·n² each, ~4 of them)."""
    state = 2 * n if cell == "lstm" else n
    gates = _GATES[cell] * n
    return itemsize * B * T * state * (6 * gates + 4 * state)


def _point(cell, n, T, B, *, dtype, device, repeats, seq_steps, seed):
    fn, init, state_size = deer_cells.CELLS[cell]
    params = init(n, n, seed=seed, dtype=dtype, device=device)
    xs = md.random.Generator(seed, device).normal((B, T, n), dtype=dtype)
    y0 = md.zeros((B, state_size(n)), dtype=dtype, device=device)
    res: dict = {"n": n, "T": T, "batch": B}
    ys = _time_deer(res, fn, y0, xs, params, repeats)
    _time_sequential(res, fn, y0, xs, params, repeats, seq_steps)
    ref, t_forward, t_forward_grad = _time_array_floor(params, y0, xs, cell=cell, device=xs.device)
    res["array_forward"] = {"median": t_forward}
    res["array_forward_grad"] = {"median": t_forward_grad}
    res["max_deviation"] = float(md.max(md.abs(ys - ref)))
    d, dg = res["deer_forward"]["median"], res["deer_forward_grad"]["median"]
    res["speedup_forward"] = res["seq_forward"]["median"] / d
    res["speedup_forward_grad"] = res["seq_forward_grad"]["median"] / dg
    res["speedup_vs_array"] = res["array_forward"]["median"] / d
    res["speedup_forward_grad_vs_array"] = res["array_forward_grad"]["median"] / dg
    return res


def _time_deer(res, fn, y0, xs, params, repeats):
    """DEER forward, and forward + gradient of the sum of the states; returns the trajectory."""
    box = {}

    def deer_fwd():
        box["ys"], box["stats"] = deer_rnn(fn, y0, xs, params, return_stats=True, on_failure="warn")

    deer_vg = md.value_and_grad(lambda p: md.sum(deer_rnn(fn, y0, xs, p)))
    res["deer_forward"] = measure(deer_fwd, repeats=repeats, warmup=1, device=xs.device).as_dict()
    res["deer_forward_grad"] = measure(
        lambda: deer_vg(params), repeats=repeats, warmup=1, device=xs.device
    ).as_dict()
    stats = box["stats"]
    res["iterations"], res["converged"], res["residual"] = stats.iterations, stats.converged, stats.residual
    return box["ys"]


def _time_sequential(res, fn, y0, xs, params, repeats, seq_steps):
    """The minidiff loop, timed on a prefix of at most ``seq_steps`` steps and scaled to T."""
    T = xs.shape[1]
    Tp = min(T, seq_steps)
    xs_p = xs[:, :Tp]
    seq_vg = md.value_and_grad(lambda p: md.sum(sequential_rnn(fn, y0, xs_p, p)))
    scale = T / Tp
    reps = max(1, min(repeats, 3))
    fwd = measure(lambda: sequential_rnn(fn, y0, xs_p, params), repeats=reps, warmup=0, device=xs.device)
    fg = measure(lambda: seq_vg(params), repeats=reps, warmup=0, device=xs.device)
    res["seq_forward"] = {"median": fwd.median * scale, "measured_steps": Tp, "extrapolated": Tp < T}
    res["seq_forward_grad"] = {"median": fg.median * scale, "measured_steps": Tp, "extrapolated": Tp < T}


# ----------------------------------------------------------------------------- the load
#: what the load process runs: a pure-Python spin loop, no imports, no memory traffic
_SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_core() -> Iterator[subprocess.Popen]:
    """Keep one core busy for the duration of the block: a child Python process spinning in a loop.

    The process is stopped on leaving, also when the block raises or is interrupted (terminate, then
    kill if it has not ended within 5 s, and reaped either way: no process is left behind).

    Example:
        >>> with busy_core() as spinner:
        ...     spinner.poll() is None          # running inside the block
        True
        >>> spinner.poll() is not None          # stopped and reaped after it
        True
    """
    spinner = subprocess.Popen(
        [sys.executable, "-c", _SPIN],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield spinner
    finally:
        spinner.terminate()
        try:
            spinner.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - terminate is enough for a spin loop
            spinner.kill()
            spinner.wait()


# ----------------------------------------------------------------------------- the grid
def run_deer_bench(
    sizes=SMALL_GRID["sizes"],
    lengths=SMALL_GRID["lengths"],
    batches=SMALL_GRID["batches"],
    *,
    cell: str = "gru",
    dtype: str = "float32",
    device=None,
    repeats: int = 3,
    seq_steps: int = 2000,
    max_memory_gb: float = 2.0,
    seed: int = 0,
    progress=None,
    busy: bool = False,
) -> dict:
    """Time DEER against sequential evaluation over a grid; return a JSON-ready dict.

    With ``busy=True`` each point is also measured with one core kept busy (:func:`busy_core`), right
    after its measurement as the machine is; those points and targets go under ``result["busy_core"]``.

    Example:
        >>> r = run_deer_bench((2,), (50,), (1,), repeats=1, seq_steps=20)
        >>> point = r["points"][0]
        >>> (point["n"], point["T"], point["batch"], point["converged"]), point["max_deviation"] < 1e-5
        ((2, 50, 1, True), True)
    """
    _check_settings(cell, sizes, lengths, batches, repeats, seq_steps)
    itemsize = md.zeros(1, dtype=dtype).dtype.itemsize
    settings = {"dtype": dtype, "device": device, "repeats": repeats, "seq_steps": seq_steps, "seed": seed}
    points, busy_points, skipped = [], [], []
    for B, T, n in itertools.product(batches, lengths, sizes):
        need = _memory_estimate(cell, n, T, B, itemsize)
        if need > max_memory_gb * 2**30:
            skipped.append({"n": n, "T": T, "batch": B, "reason": f"memory (~{need / 2**30:.1f} GiB)"})
        else:
            points.append(_point(cell, n, T, B, **settings))
            if busy:
                with busy_core():
                    busy_points.append(_point(cell, n, T, B, **settings))
        if progress is not None:
            progress(points[-1] if points else None)
    result = {
        "benchmark": "deer",
        "cell": cell,
        "dtype": dtype,
        "repeats": repeats,
        "seq_steps": seq_steps,
        "points": points,
        "skipped": skipped,
        "targets": _targets(points),
        "environment": environment(device),
        "note": "the minidiff loop is timed on a prefix of the sequence and scaled to T",
    }
    if busy:
        result["busy_core"] = {
            "load": "one child Python process spinning on a core during each point's second measurement",
            "points": busy_points,
            "targets": _targets(busy_points),
        }
    return result


def _check_settings(cell, sizes, lengths, batches, repeats, seq_steps) -> None:
    if cell not in deer_cells.CELLS:
        raise ValueError(f"deer bench: unknown cell {cell!r}; expected one of {sorted(deer_cells.CELLS)}")
    for name, vals in (("sizes", sizes), ("lengths", lengths), ("batches", batches)):
        if not vals:
            raise ValueError(f"deer bench: {name} must be positive integers, got {vals}")
        for v in vals:
            check_number("deer bench", name, v, low=1, integer=True)
    check_number("deer bench", "repeats", repeats, low=1, integer=True)
    check_number("deer bench", "seq_steps", seq_steps, low=1, integer=True)


def _targets(points) -> dict:
    """The speedup targets, checked per batch size on the measured points (skipped when none apply):
    at n ≤ 8 and T ≥ 10k, DEER at least 10× faster than the minidiff loop, forward and forward +
    gradient; at n ≤ 4 and T ≥ 10k, DEER's forward at least 3× faster than the plain array loop."""
    goals = [
        ("forward vs minidiff loop, n<=8, T>=10k", 8, "speedup_forward", 10),
        ("forward+gradient vs minidiff loop, n<=8, T>=10k", 8, "speedup_forward_grad", 10),
        ("forward vs array loop, n<=4, T>=10k", 4, "speedup_vs_array", 3),
    ]
    out = {}
    for B in sorted({p["batch"] for p in points}):
        for name, n_max, key, goal in goals:
            vals = [p[key] for p in points if p["batch"] == B and p["n"] <= n_max and p["T"] >= 10000]
            if vals:
                out[f"{name}, B={B}"] = {"goal": goal, "min": min(vals), "met": min(vals) >= goal}
    return out


def format_deer_bench(result: dict) -> str:
    """The grid as a text table, the targets, and where DEER stops paying.

    Example:
        >>> r = {"cell": "gru", "dtype": "float32", "points": [], "skipped": [], "targets": {}}
        >>> format_deer_bench(r).splitlines()[0]
        'DEER vs sequential evaluation, gru cell, float32 (input size = hidden size n)'
    """
    lines = [
        f"DEER vs sequential evaluation, {result['cell']} cell, {result['dtype']} (input size = hidden size n)",
        f"{'B':>3} {'n':>3} {'T':>7} {'iters':>5} {'DEER fwd':>10} {'x loop':>7} {'x array':>7} "
        f"{'DEER f+g':>10} {'x loop':>7} {'x array':>7} {'max dev':>9}",
    ]
    for p in result["points"]:
        lines.append(
            f"{p['batch']:>3} {p['n']:>3} {p['T']:>7} {p['iterations']:>5} "
            f"{p['deer_forward']['median'] * 1e3:>8.1f}ms {p['speedup_forward']:>6.1f}x "
            f"{p['speedup_vs_array']:>6.2f}x {p['deer_forward_grad']['median'] * 1e3:>8.1f}ms "
            f"{p['speedup_forward_grad']:>6.1f}x {p['speedup_forward_grad_vs_array']:>6.2f}x "
            f"{p['max_deviation']:>9.2e}" + ("" if p["converged"] else "  NOT CONVERGED")
        )
    for s in result["skipped"]:
        lines.append(f"{s['batch']:>3} {s['n']:>3} {s['T']:>7}  skipped: {s['reason']}")
    lines.append(
        "x loop: speedup over the minidiff loop (timed on a prefix, scaled to T); x array: over a plain"
    )
    lines.append(
        "array loop of the same cell (backprop through time by hand for f+g): the floor of sequential"
    )
    lines.append("evaluation.  f+g: forward and gradient of the sum of all states w.r.t. the cell's weights.")
    for name, t in result.get("targets", {}).items():
        lines.append(
            f"target {name}: >= {t['goal']}x {'met' if t['met'] else 'NOT met'} (lowest {t['min']:.1f}x)"
        )
    lines += _where_deer_stops_paying(result["points"])
    busy = result.get("busy_core")
    if busy is not None:
        lines.append("")
        lines.append("The same grid with one core kept busy (a spin loop in another process):")
        lines += format_deer_bench(
            {**result, "points": busy["points"], "skipped": [], "targets": busy["targets"], "busy_core": None}
        ).splitlines()[1:]
    return "\n".join(lines)


def _where_deer_stops_paying(points) -> list[str]:
    """Per batch and length, the smallest n at which DEER's forward is slower than the minidiff loop."""
    stops: dict[tuple[int, int], int] = {}
    for p in points:
        if p["speedup_forward"] < 1.0:
            key = (p["batch"], p["T"])
            stops[key] = min(stops.get(key, p["n"]), p["n"])
    return [
        f"DEER stops paying (slower than the minidiff loop) at B={B}, T={T} from n={n}"
        for (B, T), n in sorted(stops.items())
    ]


def heatmap(result: dict, path: str) -> bool:
    """Write the speedup heat map (n × T, one panel per batch and mode); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = result["points"]
    batches = sorted({p["batch"] for p in pts})
    modes = [("speedup_forward", "forward"), ("speedup_forward_grad", "forward + gradient")]
    fig, axes = plt.subplots(
        len(batches), 2, figsize=(9, 3.2 * len(batches)), squeeze=False, constrained_layout=True
    )
    for r, B in enumerate(batches):
        sizes = sorted({p["n"] for p in pts if p["batch"] == B})
        lengths = sorted({p["T"] for p in pts if p["batch"] == B})
        for c, (key, title) in enumerate(modes):
            grid = [[math.nan] * len(lengths) for _ in sizes]
            for p in pts:
                if p["batch"] == B:
                    grid[sizes.index(p["n"])][lengths.index(p["T"])] = math.log10(p[key])
            ax = axes[r][c]
            im = ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=3, origin="lower", aspect="auto")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        ax.text(j, i, f"{10**v:.1f}x", ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(lengths)), [str(t) for t in lengths])
            ax.set_yticks(range(len(sizes)), [str(s) for s in sizes])
            ax.set_xlabel("T")
            ax.set_ylabel("n")
            ax.set_title(f"DEER {title} speedup, B={B}")
    fig.colorbar(im, ax=axes, label="log10 speedup over the minidiff loop")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``minidiff bench deer``."""
    p.add_argument("--grid", choices=("small", "full"), default="small", help="preset grid")
    p.add_argument("--sizes", type=int_list, help="comma-separated hidden sizes n (overrides the grid)")
    p.add_argument("--lengths", type=int_list, help="comma-separated lengths T (overrides the grid)")
    p.add_argument("--batches", type=int_list, help="comma-separated batch sizes (overrides the grid)")
    p.add_argument("--cell", choices=sorted(deer_cells.CELLS), default="gru", help="the cell")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="float32 or float64")
    p.add_argument("--device", type=device, default="cpu", help="'cpu' or 'cuda'")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats of DEER")
    p.add_argument(
        "--seq-steps", type=positive_int, default=2000, help="prefix the minidiff loop is timed on"
    )
    p.add_argument("--max-memory-gb", type=positive_float, default=2.0, help="skip points needing more")
    p.add_argument(
        "--busy-core",
        action="store_true",
        help="also measure every point with one core kept busy by a spin loop in another process",
    )
    add_allocator_option(p)
    p.add_argument("--json", type=output_file, metavar="PATH", help="write the result as JSON")
    p.add_argument(
        "--png", type=output_file, metavar="PATH", help="write the speedup heat map (needs matplotlib)"
    )


def run(args) -> int:
    """Run ``minidiff bench deer`` with parsed ``args``; print the table; 0 on success."""
    apply_allocator_option(args)  # recorded by environment() in the result
    grid = FULL_GRID if args.grid == "full" else SMALL_GRID
    sizes = args.sizes or grid["sizes"]
    lengths = args.lengths or grid["lengths"]
    batches = args.batches or grid["batches"]
    total = len(sizes) * len(lengths) * len(batches)
    done = [0]

    def progress(_):
        done[0] += 1
        print(f"\r  deer bench: {done[0]}/{total} grid points", end="", file=sys.stderr, flush=True)

    result = run_deer_bench(
        sizes,
        lengths,
        batches,
        cell=args.cell,
        dtype=args.dtype,
        device=args.device,
        repeats=args.repeats,
        seq_steps=args.seq_steps,
        max_memory_gb=args.max_memory_gb,
        progress=progress,
        busy=args.busy_core,
    )
    print(file=sys.stderr)
    print(format_deer_bench(result))
    write_json(result, args.json)
    if args.png:
        print(
            f"wrote {args.png}" if heatmap(result, args.png) else "no heat map: matplotlib is not installed"
        )
    return 0
