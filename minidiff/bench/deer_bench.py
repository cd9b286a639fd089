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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import minidiff as md

from ..deer import cells as deer_cells
from ..deer import deer_rnn, sequential_rnn
from .arguments import int_list
from .environment import environment
from .timing import measure

__all__ = ["run_deer_bench", "format_deer_bench", "add_arguments", "run", "SMALL_GRID", "FULL_GRID"]

#: the default grid: finishes in a few minutes on a 2-core CPU
SMALL_GRID = {"sizes": (1, 4, 8), "lengths": (1000, 10000), "batches": (1,)}
#: the issue's grid (long: tens of minutes, the largest points are skipped for memory)
FULL_GRID = {"sizes": (1, 2, 4, 8, 16, 32, 64), "lengths": (1000, 10000, 100000), "batches": (1, 16)}

_GATES = {"gru": 3, "lstm": 4, "elman": 1}


# ----------------------------------------------------------------------------- plain array cells
def _sigmoid(xp, a):
    return 1.0 / (1.0 + xp.exp(-a))


def _array_step(cell, xp, p):
    """One step of ``cell`` on raw arrays (the sequential floor), weights pre-transposed."""
    Wi, Wh = xp.ascontiguousarray(p["W_ih"].T), xp.ascontiguousarray(p["W_hh"].T)
    bi, bh = p["b_ih"], p["b_hh"]
    if cell == "gru":

        def step(h, x):
            gi, gh = x @ Wi + bi, h @ Wh + bh
            n = h.shape[-1]
            r = _sigmoid(xp, gi[..., :n] + gh[..., :n])
            z = _sigmoid(xp, gi[..., n : 2 * n] + gh[..., n : 2 * n])
            c = xp.tanh(gi[..., 2 * n :] + r * gh[..., 2 * n :])
            return c + z * (h - c)

    elif cell == "lstm":

        def step(y, x):
            H = y.shape[-1] // 2
            g = x @ Wi + bi + y[..., :H] @ Wh + bh
            c = _sigmoid(xp, g[..., H : 2 * H]) * y[..., H:] + _sigmoid(xp, g[..., :H]) * xp.tanh(
                g[..., 2 * H : 3 * H]
            )
            return xp.concatenate([_sigmoid(xp, g[..., 3 * H :]) * xp.tanh(c), c], axis=-1)

    else:

        def step(h, x):
            return xp.tanh(x @ Wi + bi + h @ Wh + bh)

    return step


def _array_loop(step, xp, y0, xs):
    T = xs.shape[-2]
    out = xp.empty(xs.shape[:-1] + y0.shape[-1:], dtype=xs.dtype)
    y = y0
    for i in range(T):
        y = step(y, xs[..., i, :])
        out[..., i, :] = y
    return out


def _array_forward_grad(cell, xp, p, y0, xs):
    """Forward and backprop through time by hand on raw arrays, for the loss sum of all states:
    the floor of sequential training.  Returns the gradients of the four weight arrays."""
    Wi, Wt = p["W_ih"], xp.ascontiguousarray(p["W_hh"].T)
    GI = xs @ Wi.T + p["b_ih"]  # the input projections of all steps in one product
    bh = p["b_hh"]
    T = xs.shape[-2]
    H = Wt.shape[0]
    prev = xp.empty(xs.shape[:-1] + y0.shape[-1:], xs.dtype)  # the state entering each step
    saved = []
    y = y0
    for i in range(T):  # forward, saving what the backward pass reads
        prev[..., i, :] = y
        gi, h = GI[..., i, :], y[..., :H]
        gh = h @ Wt + bh
        if cell == "gru":
            r = _sigmoid(xp, gi[..., :H] + gh[..., :H])
            z = _sigmoid(xp, gi[..., H : 2 * H] + gh[..., H : 2 * H])
            c = xp.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
            saved.append((r, z, c, gh[..., 2 * H :]))
            y = c + z * (h - c)
        elif cell == "lstm":
            g = gi + gh
            ig, fg = _sigmoid(xp, g[..., :H]), _sigmoid(xp, g[..., H : 2 * H])
            cg, og = xp.tanh(g[..., 2 * H : 3 * H]), _sigmoid(xp, g[..., 3 * H :])
            c_new = fg * y[..., H:] + ig * cg
            tc = xp.tanh(c_new)
            saved.append((ig, fg, cg, og, tc))
            y = xp.concatenate([og * tc, c_new], axis=-1)
        else:
            y = xp.tanh(gi + gh)
            saved.append(y)
    dGI = xp.empty_like(GI)
    dGH = xp.empty_like(GI)
    carry = xp.zeros_like(y0)
    for i in range(T - 1, -1, -1):  # backward through time; dL/dy_i = 1 from the loss
        dy = carry + 1.0
        if cell == "gru":
            r, z, c, ghn = saved[i]
            h = prev[..., i, :]
            dn = dy * (1.0 - z) * (1.0 - c * c)
            dz = dy * (h - c) * z * (1.0 - z)
            dr = dn * ghn * r * (1.0 - r)
            dGI[..., i, :] = xp.concatenate([dr, dz, dn], axis=-1)
            dGH[..., i, :] = xp.concatenate([dr, dz, dn * r], axis=-1)
            carry = dy * z + dGH[..., i, :] @ Wt.T
        elif cell == "lstm":
            ig, fg, cg, og, tc = saved[i]
            dh, dc = dy[..., :H], dy[..., H:] + dy[..., :H] * og * (1.0 - tc * tc)
            dg = xp.concatenate(
                [
                    dc * cg * ig * (1.0 - ig),
                    dc * prev[..., i, H:] * fg * (1.0 - fg),
                    dc * ig * (1.0 - cg * cg),
                    dh * tc * og * (1.0 - og),
                ],
                axis=-1,
            )
            dGI[..., i, :] = dGH[..., i, :] = dg
            carry = xp.concatenate([dg @ Wt.T, dc * fg], axis=-1)
        else:
            out = saved[i]
            dGI[..., i, :] = dGH[..., i, :] = dy * (1.0 - out * out)
            carry = dGH[..., i, :] @ Wt.T
    flat = lambda a: a.reshape(-1, a.shape[-1])
    return {
        "W_ih": flat(dGI).T @ flat(xs),
        "W_hh": flat(dGH).T @ flat(prev[..., :H]),
        "b_ih": flat(dGI).sum(axis=0),
        "b_hh": flat(dGH).sum(axis=0),
    }


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
    rng = md.random.Generator(seed, device)
    xs = rng.normal((B, T, n), dtype=dtype)
    y0 = md.zeros((B, state_size(n)), dtype=dtype, device=device)
    dev = xs.device
    xp = dev.xp
    res: dict = {"n": n, "T": T, "batch": B}

    box = {}

    def deer_fwd():
        box["ys"], box["stats"] = deer_rnn(fn, y0, xs, params, return_stats=True, on_failure="warn")

    deer_loss = lambda p: md.sum(deer_rnn(fn, y0, xs, p))
    deer_vg = md.value_and_grad(deer_loss)
    res["deer_forward"] = measure(deer_fwd, repeats=repeats, warmup=1, device=dev).as_dict()
    res["deer_forward_grad"] = measure(
        lambda: deer_vg(params), repeats=repeats, warmup=1, device=dev
    ).as_dict()
    stats = box["stats"]
    res["iterations"], res["converged"], res["residual"] = stats.iterations, stats.converged, stats.residual

    # the minidiff loop on a prefix, scaled to T
    Tp = min(T, seq_steps)
    xs_p = xs[:, :Tp]
    seq_loss = lambda p: md.sum(sequential_rnn(fn, y0, xs_p, p))
    seq_vg = md.value_and_grad(seq_loss)
    scale = T / Tp
    seq_reps = max(1, min(repeats, 3))
    fwd = measure(lambda: sequential_rnn(fn, y0, xs_p, params), repeats=seq_reps, warmup=0, device=dev)
    fg = measure(lambda: seq_vg(params), repeats=seq_reps, warmup=0, device=dev)
    res["seq_forward"] = {"median": fwd.median * scale, "measured_steps": Tp, "extrapolated": Tp < T}
    res["seq_forward_grad"] = {"median": fg.median * scale, "measured_steps": Tp, "extrapolated": Tp < T}

    # the plain array loop over the whole horizon: the floor, and the reference trajectory
    raw = {k: v._data for k, v in params.items()}
    step = _array_step(cell, xp, raw)
    t0 = time.perf_counter()
    ref = _array_loop(step, xp, y0._data, xs._data)
    dev.synchronize()
    res["array_forward"] = {"median": time.perf_counter() - t0}
    y0_b = xp.broadcast_to(y0._data, xs.shape[:-2] + y0.shape[-1:])
    t0 = time.perf_counter()
    _array_forward_grad(cell, xp, raw, y0_b, xs._data)
    dev.synchronize()
    res["array_forward_grad"] = {"median": time.perf_counter() - t0}
    res["max_deviation"] = float(xp.max(xp.abs(box["ys"]._data - ref)))
    d, dg = res["deer_forward"]["median"], res["deer_forward_grad"]["median"]
    res["speedup_forward"] = res["seq_forward"]["median"] / d
    res["speedup_forward_grad"] = res["seq_forward_grad"]["median"] / dg
    res["speedup_vs_array"] = res["array_forward"]["median"] / d
    res["speedup_forward_grad_vs_array"] = res["array_forward_grad"]["median"] / dg
    return res


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
) -> dict:
    """Time DEER against sequential evaluation over a grid; return a JSON-ready dict.

    Example:
        >>> r = run_deer_bench((2,), (50,), (1,), repeats=1, seq_steps=20)
        >>> point = r["points"][0]
        >>> (point["n"], point["T"], point["batch"], point["converged"]), point["max_deviation"] < 1e-5
        ((2, 50, 1, True), True)
    """
    if cell not in deer_cells.CELLS:
        raise ValueError(f"deer bench: unknown cell {cell!r}; expected one of {sorted(deer_cells.CELLS)}")
    for name, vals in (("sizes", sizes), ("lengths", lengths), ("batches", batches)):
        if not vals or any(int(v) < 1 for v in vals):
            raise ValueError(f"deer bench: {name} must be positive integers, got {vals}")
    if repeats < 1 or seq_steps < 1:
        raise ValueError(f"deer bench: repeats and seq_steps must be >= 1, got {repeats}, {seq_steps}")
    itemsize = md.zeros(1, dtype=dtype).dtype.itemsize
    points, skipped = [], []
    for B in batches:
        for T in lengths:
            for n in sizes:
                need = _memory_estimate(cell, n, T, B, itemsize)
                if need > max_memory_gb * 2**30:
                    skipped.append(
                        {"n": n, "T": T, "batch": B, "reason": f"memory (~{need / 2**30:.1f} GiB)"}
                    )
                else:
                    points.append(
                        _point(
                            cell,
                            n,
                            T,
                            B,
                            dtype=dtype,
                            device=device,
                            repeats=repeats,
                            seq_steps=seq_steps,
                            seed=seed,
                        )
                    )
                if progress is not None:
                    progress(points[-1] if points else None)
    return {
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


def _targets(points) -> dict:
    """The issue's targets, checked per batch size on the measured points (skipped when none apply)."""
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
    stops = {}
    for p in result["points"]:
        if p["speedup_forward"] < 1.0:
            key = (p["batch"], p["T"])
            stops[key] = min(stops.get(key, p["n"]), p["n"])
    for (B, T), n in sorted(stops.items()):
        lines.append(f"DEER stops paying (slower than the minidiff loop) at B={B}, T={T} from n={n}")
    return "\n".join(lines)


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
    p.add_argument("--grid", choices=("small", "full"), default="small", help="preset grid (default small)")
    p.add_argument("--sizes", type=int_list, help="comma-separated hidden sizes n (overrides the grid)")
    p.add_argument("--lengths", type=int_list, help="comma-separated lengths T (overrides the grid)")
    p.add_argument("--batches", type=int_list, help="comma-separated batch sizes (overrides the grid)")
    p.add_argument("--cell", choices=sorted(deer_cells.CELLS), default="gru", help="the cell (default gru)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default cpu)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of DEER (default 3)")
    p.add_argument("--seq-steps", type=int, default=2000, help="prefix the minidiff loop is timed on")
    p.add_argument("--max-memory-gb", type=float, default=2.0, help="skip points needing more (default 2)")
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="set the C allocator to keep freed memory (glibc mallopt); recorded with the result",
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--png", metavar="PATH", help="write the speedup heat map (needs matplotlib)")


def run(args) -> int:
    """Run ``minidiff bench deer`` with parsed ``args``; print the table; 0 on success."""
    if getattr(args, "keep_freed_memory", False):
        from .allocator import keep_freed_memory

        keep_freed_memory()  # recorded by environment() in the result
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
    )
    print(file=sys.stderr)
    print(format_deer_bench(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
        print(f"wrote {args.json}")
    if args.png:
        print(
            f"wrote {args.png}" if heatmap(result, args.png) else "no heat map: matplotlib is not installed"
        )
    return 0
