"""Cost per step of the dense methods and of Levenberg–Marquardt, beside an SGD step on the same problem.

Run: ``PYTHONPATH=. python benchmarks/dense_cost.py [--repeats N] [--iterations K] [--json PATH] [--quick]``
from the repository root.  Not a test (``tests/test_benchmark_scripts.py`` runs it with ``--quick`` and
checks the tables' structure, never a time); prints two Markdown tables.

* **Dense methods** (``md.optim.BFGS``, ``DFP``, ``SR1``, ``Newton``), ``md.optim.LBFGS`` (history 10)
  and ``md.optim.SGD`` (tape style: ``zero_grad``, ``backward``, ``step``), float64, on logistic
  regression (500 synthetic points, d = 10, 100, 1000, L2 0.01), Rosenbrock 10-D and a tanh MLP
  8→32→32→1 regression (1377 parameters, 256 points).  A *step* is one iteration: each round builds the
  optimizer afresh at the same start and times one ``step(closure)`` running ``K`` iterations
  (``max_iter=K``, the tolerances 0) — or ``K`` SGD steps — and divides by the iterations it ran.  The
  start's evaluation is thus amortized over ``K``; "evaluations per step" counts it the same way.
* **Levenberg–Marquardt** (``md.optim.LevenbergMarquardt``, damping 10⁻², at most 50 or 5 CG
  iterations) against an SGD step on ``½‖r‖²``: a sum of three exponentials fitted to 200 points
  (p = 6) and a tanh MLP 4→24→24→1 fitted to 1000 points (m = 1000 residuals, p = 745).  A round times
  ``K`` LM steps (each one ``step``); "Gauss-Newton products" are ``JᵀJv`` (one ``jvp`` + one ``vjp``):
  one per CG iteration and one for the gain ratio.

Rounds are interleaved (every method once per round, round after round, so a change of load falls on
all alike); each row reports the median over ``--repeats`` rounds and the quartiles.  ``--json`` writes
every number with the environment (CPU model, NumPy version, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

import minidiff as md
from minidiff.bench.environment import environment
from minidiff.bench.timing import summarize, timed

Loss = Callable[[list], md.Tensor]
DENSE = ("BFGS", "DFP", "SR1", "Newton")


# ----------------------------------------------------------------------------- problems
def _f64(a: np.ndarray) -> md.Tensor:
    return md.tensor(np.asarray(a, dtype=np.float64), dtype="float64")


def logistic(d: int, m: int = 500) -> tuple[Loss, list[np.ndarray]]:
    rng = np.random.default_rng(d)
    X = rng.standard_normal((m, d)) / np.sqrt(d)
    y = np.where(X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m) > 0, 1.0, -1.0)
    Xt, yt = _f64(X), _f64(y)

    def loss(ps: list) -> md.Tensor:
        w = ps[0]
        return md.log1p(md.exp(-(yt * (Xt @ w)))).mean() + 0.005 * (w * w).sum()

    return loss, [np.zeros(d)]


def rosenbrock(d: int = 10) -> tuple[Loss, list[np.ndarray]]:
    def loss(ps: list) -> md.Tensor:
        x = ps[0]
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return loss, [np.tile([-1.2, 1.0], d // 2)]


def _mlp_init(sizes: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), np.zeros(fan_out)]
    return params


def _mlp(ps: list, x: md.Tensor) -> md.Tensor:
    h = x
    for i in range(0, len(ps), 2):
        h = h @ ps[i] + ps[i + 1]
        if i + 2 < len(ps):
            h = md.tanh(h)
    return h[:, 0]


def mlp_data(sizes: tuple[int, ...], m: int, seed: int) -> tuple[md.Tensor, md.Tensor, list[np.ndarray]]:
    """Inputs, targets (a smooth function of the inputs plus noise) and initial weights."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, sizes[0]))
    y = np.sin(X @ rng.standard_normal(sizes[0])) + 0.1 * rng.standard_normal(m)
    return _f64(X), _f64(y), _mlp_init(sizes, rng)


def mlp_regression(sizes: tuple[int, ...] = (8, 32, 32, 1), m: int = 256) -> tuple[Loss, list[np.ndarray]]:
    X, y, p0 = mlp_data(sizes, m, seed=3)
    return (lambda ps: 0.5 * ((_mlp(ps, X) - y) ** 2).mean()), p0


def dense_problems(quick: bool) -> dict[str, tuple[Loss, list[np.ndarray]]]:
    if quick:
        return {"logistic, d = 10": logistic(10, 50), "Rosenbrock 10-D": rosenbrock(10)}
    out = {f"logistic, d = {d}": logistic(d) for d in (10, 100, 1000)}
    out["Rosenbrock 10-D"] = rosenbrock(10)
    out["MLP 8-32-32-1 (1377 params)"] = mlp_regression()
    return out


def exponentials(k: int = 3, m: int = 200) -> tuple[Callable[[list], md.Tensor], list[np.ndarray]]:
    """Residuals of ``Σ_j a_j exp(−b_j t) − y`` (p = 2k) on ``m`` points of [0, 4]."""
    t = np.linspace(0.0, 4.0, m)
    a, b = np.linspace(1.0, 2.0, k), np.geomspace(0.3, 3.0, k)
    y = (a[:, None] * np.exp(-b[:, None] * t)).sum(0) + 0.01 * np.random.default_rng(5).standard_normal(m)
    tt, yt = _f64(t), _f64(y)

    def residual(ps: list) -> md.Tensor:
        a_, b_ = ps[0][:k], ps[0][k:]
        return (a_.reshape(k, 1) * md.exp(-b_.reshape(k, 1) * tt)).sum(axis=0) - yt

    return residual, [np.concatenate([np.ones(k), np.geomspace(0.5, 2.0, k)])]


def mlp_residuals(sizes: tuple[int, ...] = (4, 24, 24, 1), m: int = 1000):
    X, y, p0 = mlp_data(sizes, m, seed=7)
    return (lambda ps: _mlp(ps, X) - y), p0


def lm_problems(quick: bool) -> dict[str, tuple[Callable[[list], md.Tensor], list[np.ndarray]]]:
    if quick:
        return {"3 exponentials, m = 40": exponentials(3, 40)}
    return {"3 exponentials, m = 200": exponentials(), "MLP 4-24-24-1, m = 1000": mlp_residuals()}


# ----------------------------------------------------------------------------- one round per method
def _leaves(x0: list[np.ndarray]) -> list[md.Tensor]:
    return [md.tensor(v.copy(), dtype="float64", requires_grad=True) for v in x0]


def sgd_round(loss: Loss, x0: list[np.ndarray], K: int) -> dict[str, float]:
    """``K`` SGD steps (lr 10⁻⁴, so no problem diverges; the cost does not depend on it)."""
    ps = _leaves(x0)
    opt = md.optim.SGD(ps, lr=1e-4)

    def run() -> None:
        for _ in range(K):
            opt.zero_grad()
            loss(ps).backward()
            opt.step()

    _, seconds = timed(run)
    return {"seconds": seconds, "steps": K, "evals": K, "hessians": 0, "products": 0}


def iterative_round(method: str, loss: Loss, x0: list[np.ndarray], K: int) -> dict[str, float]:
    """One ``step`` of ``md.optim.<method>`` running up to ``K`` iterations from ``x0``."""
    ps = _leaves(x0)
    settings: dict[str, Any] = {"max_iter": K, "tolerance_grad": 0.0, "tolerance_change": 0.0}
    if method == "LBFGS":
        settings.update(history_size=10, max_eval=25 * K)
    opt = getattr(md.optim, method)(ps, **settings)
    _, seconds = timed(lambda: opt.step(loss))
    steps = max(opt.info["iterations"], 1)
    hessians = steps if method == "Newton" else 0
    return {
        "seconds": seconds,
        "steps": steps,
        "evals": opt.info["func_evals"],
        "hessians": hessians,
        "products": 0,
    }


def lm_round(residual: Callable, x0: list[np.ndarray], K: int, max_cg: int) -> dict[str, float]:
    """``K`` Levenberg–Marquardt steps from ``x0``; counts the Gauss-Newton products."""
    ps = _leaves(x0)
    opt = md.optim.LevenbergMarquardt(ps, damping=1e-2, max_cg_iter=max_cg)
    cg = []

    def run() -> None:
        for _ in range(K):
            opt.step(residual)
            cg.append(opt.info["cg_iterations"])

    _, seconds = timed(run)
    return {
        "seconds": seconds,
        "steps": K,
        "evals": 2 * K,  # residual passes: one kept for Jᵀu, one at the trial point
        "hessians": 0,
        "products": sum(cg) + K,
        "cg": sum(cg),
    }


def sgd_on_squares(residual: Callable, x0: list[np.ndarray], K: int) -> dict[str, float]:
    """``K`` SGD steps on ``½‖r‖²``: the baseline of the Levenberg–Marquardt table."""
    return sgd_round(lambda ps: 0.5 * (residual(ps) ** 2).sum(), x0, K)


# ----------------------------------------------------------------------------- measuring
def interleaved(rounds: dict[str, Callable[[], dict]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Run every round function once per round (``warmup`` untimed rounds first); per method: the
    median and quartiles of seconds per step, in ms, and the mean counts per step."""
    for _ in range(warmup):
        for fn in rounds.values():
            fn()
    samples: dict[str, list[dict]] = {name: [] for name in rounds}
    for _ in range(repeats):
        for name, fn in rounds.items():
            samples[name].append(fn())
    out = {}
    for name, rs in samples.items():
        m = summarize([r["seconds"] / r["steps"] for r in rs])
        steps = sum(r["steps"] for r in rs)
        out[name] = {"median_ms": m.median * 1e3, "q1_ms": m.q1 * 1e3, "q3_ms": m.q3 * 1e3}
        for key in ("evals", "hessians", "products", "cg"):
            if key in rs[0]:
                out[name][f"{key}_per_step"] = sum(r[key] for r in rs) / steps
        out[name]["steps_per_round"] = steps / len(rs)
    return out


def dense_table(quick: bool, repeats: int, K: int) -> dict[str, dict]:
    result = {}
    for problem, (loss, x0) in dense_problems(quick).items():
        rounds: dict[str, Callable[[], dict]] = {"SGD": lambda: sgd_round(loss, x0, K)}
        for method in ("LBFGS", *DENSE):
            rounds[method] = lambda method=method: iterative_round(method, loss, x0, K)
        rows = interleaved(rounds, repeats)
        sgd = rows["SGD"]["median_ms"]
        for r in rows.values():
            r["vs_sgd"] = r["median_ms"] / sgd
        result[problem] = {"params": int(sum(v.size for v in x0)), "rows": rows}
    return result


LM_SETTINGS = {"LM, CG ≤ 50": 50, "LM, CG ≤ 5": 5}


def lm_table(quick: bool, repeats: int, K: int) -> dict[str, dict]:
    result = {}
    for problem, (residual, x0) in lm_problems(quick).items():
        rounds: dict[str, Callable[[], dict]] = {"SGD on ½‖r‖²": lambda: sgd_on_squares(residual, x0, K)}
        for name, max_cg in LM_SETTINGS.items():
            rounds[name] = lambda max_cg=max_cg: lm_round(residual, x0, K, max_cg)
        rows = interleaved(rounds, repeats)
        sgd = rows["SGD on ½‖r‖²"]["median_ms"]
        for r in rows.values():
            r["vs_sgd"] = r["median_ms"] / sgd
        m = int(residual([md.tensor(v) for v in x0]).size)
        result[problem] = {"residuals": m, "params": int(sum(v.size for v in x0)), "rows": rows}
    return result


# ----------------------------------------------------------------------------- printing
def _ms(r: dict) -> str:
    return f"{r['median_ms']:.3g} | {r['q1_ms']:.3g}–{r['q3_ms']:.3g}"


def format_dense(table: dict) -> list[str]:
    lines = [
        "| problem | n | method | ms per step | quartiles | ÷ SGD step | loss + gradient evaluations per step "
        "| Hessians per step |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for problem, entry in table.items():
        for name, r in entry["rows"].items():
            lines.append(
                f"| {problem} | {entry['params']} | {name} | {_ms(r)} | {r['vs_sgd']:.3g} | "
                f"{r['evals_per_step']:.2f} | {r['hessians_per_step']:.0f} |"
            )
    return lines


def format_lm(table: dict) -> list[str]:
    lines = [
        "| problem | m | p | method | ms per step | quartiles | ÷ SGD step | Gauss-Newton products per step "
        "| CG iterations per step |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for problem, entry in table.items():
        for name, r in entry["rows"].items():
            gn = f"{r['products_per_step']:.1f}" if "cg_per_step" in r else "—"
            cg = f"{r['cg_per_step']:.1f}" if "cg_per_step" in r else "—"
            lines.append(
                f"| {problem} | {entry['residuals']} | {entry['params']} | {name} | {_ms(r)} | "
                f"{r['vs_sgd']:.3g} | {gn} | {cg} |"
            )
    return lines


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    K = args.iterations if args.iterations is not None else (2 if args.quick else 5)
    env = environment()
    env["load_average_before"] = os.getloadavg()
    dense = dense_table(args.quick, repeats, K)
    lm = lm_table(args.quick, repeats, K)
    env["load_average_after"] = os.getloadavg()
    print(
        f"machine: {env['cpu']}, {env['logical_cores']} cores; numpy {env['numpy']}, "
        f"scipy {env.get('scipy')}; float64; {repeats} interleaved rounds of {K} steps; load average "
        f"{env['load_average_before'][0]:.2f} before, {env['load_average_after'][0]:.2f} after\n"
    )
    print("\n".join(format_dense(dense)))
    print()
    print("\n".join(format_lm(lm)))
    result = {
        "settings": {"repeats": repeats, "iterations": K, "quick": args.quick},
        "dense": dense,
        "lm": lm,
    }
    result["environment"] = env
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; 2 with --quick)")
    p.add_argument(
        "--iterations", type=int, default=None, help="steps per round, K (default 5; 2 with --quick)"
    )
    p.add_argument("--json", help="write the results and the environment to this JSON file")
    p.add_argument("--quick", action="store_true", help="small problems, few rounds: a smoke run")
    return p


if __name__ == "__main__":
    main()
