"""DEER's general form: multi-shift recurrences against their loop, and ``deer_bvp`` against SciPy.

Run: ``PYTHONPATH=. python benchmarks/deer_general.py [--repeats N] [--json PATH] [--quick]`` from the
repository root.  Not a test (``tests/test_benchmark_scripts.py`` runs it with ``--quick`` and checks
the tables' structure, never a time); prints two Markdown tables.

* **Multi-shift** (``docs/deer.md`` §6): ``deer_rnn_multishift`` against ``sequential_rnn_multishift``
  (the minidiff loop) on ``y_i = tanh(Σ_k y_{i−k} W_k + x_i U + b)``, k = 1…P, for P = 1, 2, 3, state
  size n = 2, 4, T = 1k and 10k, batch 1 and 16, float32 (``--dtype``): forward, and forward + gradient
  of the sum of the states w.r.t. (W, U, b); Newton iterations; the largest difference to the loop over
  the whole sequence.  The loop is timed on a prefix of at most ``--seq-steps`` steps and scaled to T
  (as ``minidiff bench deer`` does).
* **Boundary-value problems** (§8): ``deer_bvp`` on Bratu (``y'' + λ e^y = 0``, ``y(0) = y(1) = 0``,
  λ = 1, lower branch, exact solution ``y = −2 ln(cosh((r − ½)θ/2) / cosh(θ/4))`` with
  ``θ = √(2λ) cosh(θ/4)``) and a reaction–diffusion problem in a catalyst slab (``y'' = φ² y / (1 + K y)``,
  ``y'(0) = 0``, ``y(1) = 1``, φ² = 4, K = 1) at n = 100, 1000, 10000 points, float64: solve time, Newton
  iterations, max error against the exact solution (Bratu) and against ``scipy.integrate.solve_bvp`` at
  tol 10⁻¹⁰ (both at the grid points), the time of ``solve_bvp`` at matched accuracy (the loosest
  tolerance among 10⁻¹ … 10⁻¹⁰ whose error against the same reference is at most DEER's, from an 11-node
  mesh, analytic Jacobians given), and ``value_and_grad`` of ``h·Σ y`` w.r.t. θ (the solve plus one
  adjoint, a transposed banded solve) relative to the solve alone.

Times are :func:`minidiff.bench.timing.measure_interleaved` (every call once per round; medians and
quartiles).  ``--json`` writes every number with the environment and the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from typing import Any

import numpy as np
import scipy.integrate
import scipy.optimize

import minidiff as md
from minidiff.bench.environment import environment
from minidiff.bench.timing import measure_interleaved
from minidiff.deer import DeerConvergenceWarning, deer_bvp, deer_rnn_multishift, sequential_rnn_multishift


# ----------------------------------------------------------------------------- multi-shift
def shift_cell(ys: tuple, x: md.Tensor, p: dict) -> md.Tensor:
    """``tanh(Σ_k y_{i−k} W_k + x U + b)``: P = len(ys) past states."""
    z = x @ p["U"] + p["b"]
    for k, y in enumerate(ys):
        z = z + y @ p["W"][k]
    return md.tanh(z)


def shift_params(P: int, n: int, dtype: str, seed: int = 0) -> dict:
    """Weights with ``Σ_k ‖W_k‖ ≈ 0.6``: a contracting recurrence, as DEER's tables use."""
    rng = np.random.default_rng(seed)
    W = np.stack([np.linalg.qr(rng.standard_normal((n, n)))[0] * (0.6 / P) for _ in range(P)])
    return {
        "W": md.tensor(W, dtype=dtype),
        "U": md.tensor(rng.standard_normal((n, n)) / math.sqrt(n), dtype=dtype),
        "b": md.tensor(0.1 * rng.standard_normal(n), dtype=dtype),
    }


def multishift_point(P: int, n: int, T: int, B: int, *, dtype: str, repeats: int, seq_steps: int) -> dict:
    p = shift_params(P, n, dtype)
    g = md.random.Generator(1)
    xs = g.normal((B, T, n), dtype=dtype)
    y_init = 0.5 * g.normal((B, P, n), dtype=dtype)
    Tp = min(T, seq_steps)
    xs_p = xs[:, :Tp]
    box: dict = {}

    def deer() -> None:
        box["ys"], box["stats"] = deer_rnn_multishift(shift_cell, y_init, xs, p, shifts=P, return_stats=True)

    deer_vg = md.value_and_grad(lambda q: md.sum(deer_rnn_multishift(shift_cell, y_init, xs, q, shifts=P)))
    loop_vg = md.value_and_grad(
        lambda q: md.sum(sequential_rnn_multishift(shift_cell, y_init, xs_p, q, shifts=P))
    )
    t = measure_interleaved(
        {
            "deer": deer,
            "deer_grad": lambda: deer_vg(p),
            "loop": lambda: sequential_rnn_multishift(shift_cell, y_init, xs_p, p, shifts=P),
            "loop_grad": lambda: loop_vg(p),
        },
        repeats=repeats,
        warmup=1,
    )
    loop = sequential_rnn_multishift(shift_cell, y_init, xs, p, shifts=P)
    scale = T / Tp
    out: dict[str, Any] = {"P": P, "n": n, "T": T, "batch": B, "loop_measured_steps": Tp}
    for key in ("deer", "deer_grad"):
        out[key] = {"median_ms": t[key].median * 1e3, "q1_ms": t[key].q1 * 1e3, "q3_ms": t[key].q3 * 1e3}
    for key in ("loop", "loop_grad"):
        out[key] = {"median_ms": t[key].median * 1e3 * scale, "extrapolated": Tp < T}
    out["speedup"] = out["loop"]["median_ms"] / out["deer"]["median_ms"]
    out["speedup_grad"] = out["loop_grad"]["median_ms"] / out["deer_grad"]["median_ms"]
    out["iterations"], out["converged"] = box["stats"].iterations, bool(box["stats"].converged)
    out["max_difference"] = float(md.max(md.abs(box["ys"] - loop)))
    return out


def multishift_table(quick: bool, repeats: int, seq_steps: int, dtype: str, batches: tuple) -> list[dict]:
    grid = [(P, n, T) for T in (1000, 10000) for n in (2, 4) for P in (1, 2, 3)]
    if quick:
        grid, batches = [(P, 2, 100) for P in (1, 2)], (1,)
    return [
        multishift_point(P, n, T, B, dtype=dtype, repeats=repeats, seq_steps=seq_steps)
        for B in batches
        for P, n, T in grid
    ]


# ----------------------------------------------------------------------------- boundary-value problems
def bratu_theta(lam: float = 1.0) -> float:
    """The lower-branch root of ``θ = √(2λ) cosh(θ/4)``."""
    return scipy.optimize.brentq(lambda t: t - math.sqrt(2 * lam) * math.cosh(t / 4), 0.0, 4.0)


def bratu_exact(r: np.ndarray, lam: float = 1.0) -> np.ndarray:
    th = bratu_theta(lam)
    return -2.0 * np.log(np.cosh((r - 0.5) * th / 2) / np.cosh(th / 4))


class Problem:
    """One boundary-value problem: DEER's ``f`` and boundary conditions, SciPy's first-order system."""

    def __init__(self, name, f, theta, left, right, fun, fun_jac, bc, bc_jac, exact=None):
        self.name, self.f, self.theta, self.left, self.right = name, f, theta, left, right
        self.fun, self.fun_jac, self.bc, self.bc_jac, self.exact = fun, fun_jac, bc, bc_jac, exact


def bratu(lam: float = 1.0) -> Problem:
    def fun(r, y):
        return np.vstack([y[1], -lam * np.exp(y[0])])

    def fun_jac(r, y):
        J = np.zeros((2, 2, r.size))
        J[0, 1], J[1, 0] = 1.0, -lam * np.exp(y[0])
        return J

    return Problem(
        "Bratu, λ = 1",
        lambda y, dy, r, th: -th * md.exp(y),
        md.tensor(lam, dtype="float64"),
        ("dirichlet", 0.0),
        ("dirichlet", 0.0),
        fun,
        fun_jac,
        lambda ya, yb: np.array([ya[0], yb[0]]),
        lambda ya, yb: (np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]])),
        exact=lambda r: bratu_exact(r, lam),
    )


def slab(phi2: float = 4.0, K: float = 1.0) -> Problem:
    def fun(r, y):
        return np.vstack([y[1], phi2 * y[0] / (1 + K * y[0])])

    def fun_jac(r, y):
        J = np.zeros((2, 2, r.size))
        J[0, 1], J[1, 0] = 1.0, phi2 / (1 + K * y[0]) ** 2
        return J

    return Problem(
        "reaction–diffusion slab",
        lambda y, dy, r, th: th[0] * y / (1 + th[1] * y),
        md.tensor([phi2, K], dtype="float64"),
        ("neumann", 0.0),
        ("dirichlet", 1.0),
        fun,
        fun_jac,
        lambda ya, yb: np.array([ya[1], yb[0] - 1.0]),
        lambda ya, yb: (np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]])),
    )


def solve_scipy(prob: Problem, tol: float) -> Any:
    mesh = np.linspace(0.0, 1.0, 11)
    return scipy.integrate.solve_bvp(
        prob.fun,
        prob.bc,
        mesh,
        np.zeros((2, mesh.size)),
        fun_jac=prob.fun_jac,
        bc_jac=prob.bc_jac,
        tol=tol,
        max_nodes=10**6,
    )


TOLERANCES = [10.0**-k for k in range(1, 11)]


def matched_tolerance(prob: Problem, r: np.ndarray, ref: np.ndarray, target: float) -> tuple[float, float]:
    """The loosest ``solve_bvp`` tolerance whose error against ``ref`` at ``r`` is at most ``target``
    (the tightest tried if none is), and that error."""
    err = math.inf
    for tol in TOLERANCES:
        sol = solve_scipy(prob, tol)
        err = float(np.abs(sol.sol(r)[0] - ref).max()) if sol.success else math.inf
        if err <= target:
            return tol, err
    return TOLERANCES[-1], err


def bvp_point(prob: Problem, n: int, repeats: int) -> dict:
    grid = (0.0, 1.0, n)
    h = 1.0 / (n - 1)
    solve = lambda th: deer_bvp(prob.f, th, grid, left=prob.left, right=prob.right)  # noqa: E731
    y, stats = deer_bvp(prob.f, prob.theta, grid, left=prob.left, right=prob.right, return_stats=True)
    r = np.linspace(0.0, 1.0, n)
    ys = y.numpy()
    tight = solve_scipy(prob, 1e-10)
    ref = tight.sol(r)[0]
    out: dict[str, Any] = {"problem": prob.name, "n": n, "iterations": stats.iterations}
    out["converged"] = bool(stats.converged)
    out["error_vs_solve_bvp"] = float(np.abs(ys - ref).max())
    truth = prob.exact(r) if prob.exact is not None else ref
    if prob.exact is not None:
        out["error_vs_exact"] = float(np.abs(ys - truth).max())
        out["solve_bvp_tight_error_vs_exact"] = float(np.abs(ref - truth).max())
    deer_err = out.get("error_vs_exact", out["error_vs_solve_bvp"])
    tol, err = matched_tolerance(prob, r, truth, deer_err)
    out["solve_bvp_matched"] = {
        "tol": tol,
        "error": err,
        "matched": err <= deer_err,
        "nodes": int(solve_scipy(prob, tol).x.size),
    }
    vg = md.value_and_grad(lambda th: h * md.sum(solve(th)))
    t = measure_interleaved(
        {
            "deer": lambda: solve(prob.theta),
            "deer_value_and_grad": lambda: vg(prob.theta),
            "solve_bvp": lambda: solve_scipy(prob, tol),
        },
        repeats=repeats,
        warmup=1,
    )
    for key, m in t.items():
        out[key] = {"median_ms": m.median * 1e3, "q1_ms": m.q1 * 1e3, "q3_ms": m.q3 * 1e3}
    out["grad_over_solve"] = out["deer_value_and_grad"]["median_ms"] / out["deer"]["median_ms"]
    out["solve_bvp_over_deer"] = out["solve_bvp"]["median_ms"] / out["deer"]["median_ms"]
    return out


def bvp_table(quick: bool, repeats: int) -> list[dict]:
    sizes = (50,) if quick else (100, 1000, 10000)
    return [bvp_point(prob, n, repeats) for prob in (bratu(), slab()) for n in sizes]


# ----------------------------------------------------------------------------- printing
def _q(r: dict) -> str:
    return f"{r['median_ms']:.3g} ms ({r['q1_ms']:.3g}–{r['q3_ms']:.3g})"


def format_multishift(points: list[dict]) -> list[str]:
    lines = [
        "| batch | P | n | T | DEER forward | loop forward | × loop | DEER forward + gradient "
        "| loop forward + gradient | × loop | Newton iterations | max difference to the loop |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        star = "*" if p["loop"]["extrapolated"] else ""
        lines.append(
            f"| {p['batch']} | {p['P']} | {p['n']} | {p['T']} | {_q(p['deer'])} | "
            f"{p['loop']['median_ms']:.4g} ms{star} | {p['speedup']:.3g} | {_q(p['deer_grad'])} | "
            f"{p['loop_grad']['median_ms']:.4g} ms{star} | {p['speedup_grad']:.3g} | {p['iterations']} | "
            f"{p['max_difference']:.1e} |"
        )
    return lines


def format_bvp(points: list[dict]) -> list[str]:
    lines = [
        "| problem | n | DEER solve | Newton iterations | error vs exact | error vs solve_bvp (tol 1e-10) "
        "| solve_bvp at matched accuracy | its tol, nodes | ÷ DEER | DEER solve + gradient | ÷ solve |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        exact = f"{p['error_vs_exact']:.1e}" if "error_vs_exact" in p else "—"
        m = p["solve_bvp_matched"]
        miss = "" if m["matched"] else f" (not matched: error {m['error']:.1e})"
        lines.append(
            f"| {p['problem']} | {p['n']} | {_q(p['deer'])} | {p['iterations']} | {exact} | "
            f"{p['error_vs_solve_bvp']:.1e} | {_q(p['solve_bvp'])} | {m['tol']:.0e}, {m['nodes']}{miss} | "
            f"{p['solve_bvp_over_deer']:.3g} | {_q(p['deer_value_and_grad'])} | {p['grad_over_solve']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    env = environment()
    env["load_average_before"] = os.getloadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeerConvergenceWarning)  # a table never hides a failure
        ms = multishift_table(args.quick, repeats, args.seq_steps, args.dtype, tuple(args.batches))
        bvp = bvp_table(args.quick, repeats)
    env["load_average_after"] = os.getloadavg()
    print(
        f"machine: {env['cpu']}, {env['logical_cores']} cores; numpy {env['numpy']}, scipy {env.get('scipy')}; "
        f"{repeats} interleaved rounds; load average {env['load_average_before'][0]:.2f} before, "
        f"{env['load_average_after'][0]:.2f} after\n"
    )
    print(f"multi-shift, {args.dtype} (* = loop timed on the first {args.seq_steps} steps, scaled to T):\n")
    print("\n".join(format_multishift(ms)))
    print("\ndeer_bvp, float64:\n")
    print("\n".join(format_bvp(bvp)))
    settings = {"repeats": repeats, "quick": args.quick, "seq_steps": args.seq_steps, "dtype": args.dtype}
    result = {"settings": settings, "multishift": ms, "bvp": bvp, "environment": env}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def _batches(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 1 with --quick)")
    p.add_argument("--seq-steps", type=int, default=2000, help="loop timed on this prefix (default 2000)")
    p.add_argument("--batches", type=_batches, default=[1, 16], help="multi-shift batch sizes (default 1,16)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="multi-shift dtype")
    p.add_argument("--json", help="write the results and the environment to this JSON file")
    p.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    return p


if __name__ == "__main__":
    main()
