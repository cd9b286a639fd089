"""Dense quasi-Newton and Newton against ``scipy.optimize.minimize``: iterations and final gradient norm.

Run: ``python benchmarks/dense_optimizers.py``.  Not a test (``tests/test_dense_optimizers.py`` imports
:data:`PROBLEMS` and :func:`run_minidiff` / :func:`run_scipy` and checks the iteration ratios); prints a
Markdown table.  Every problem is written once, in minidiff; SciPy gets its loss, gradient and Hessian
from minidiff (float64), so the comparison is of the algorithms only.  Both stop at
``‖g‖∞ ≤ 1e-6`` (SciPy's trust-exact measures ``‖g‖₂``).  Pairs: BFGS ↔ SciPy BFGS, Newton ↔ SciPy
trust-exact; DFP and SR1 have no SciPy counterpart and are reported beside them.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize

import minidiff as md

GTOL = 1e-6
MAX_ITER = 5000


def rosenbrock(x: md.Tensor) -> md.Tensor:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _logistic() -> tuple[Callable[[md.Tensor], md.Tensor], np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10))
    w_true = rng.standard_normal(10)
    y = np.where(X @ w_true + 0.5 * rng.standard_normal(200) > 0, 1.0, -1.0)
    Xt, yt = md.tensor(X), md.tensor(y)

    def loss(w: md.Tensor) -> md.Tensor:
        margins = yt * (Xt @ w)
        return md.log1p(md.exp(-margins)).mean() + 0.005 * (w * w).sum()

    return loss, np.zeros(10)


def _quadratic() -> tuple[Callable[[md.Tensor], md.Tensor], np.ndarray]:
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    A = md.tensor((Q * np.logspace(0, 4, 20)) @ Q.T)
    b = md.tensor(rng.standard_normal(20))

    def loss(x: md.Tensor) -> md.Tensor:
        return 0.5 * (x @ A @ x) - b @ x

    return loss, np.zeros(20)


PROBLEMS: dict[str, tuple[Callable[[md.Tensor], md.Tensor], np.ndarray]] = {
    "Rosenbrock 2-D": (rosenbrock, np.array([-1.2, 1.0])),
    "Rosenbrock 10-D": (rosenbrock, np.tile([-1.2, 1.0], 5)),
    "logistic regression (200×10, L2 0.01)": _logistic(),
    "quadratic, κ = 10⁴ (20-D)": _quadratic(),
}
METHODS = {"BFGS": "BFGS", "Newton": "trust-exact", "DFP": None, "SR1": None}


def run_minidiff(method: str, problem: str) -> dict[str, Any]:
    """``{"nit", "gnorm", "nfev"}`` of ``md.optim.<method>`` from the problem's start."""
    f, x0 = PROBLEMS[problem]
    x = md.tensor(x0.copy(), dtype="float64", requires_grad=True)
    opt = getattr(md.optim, method)([x], max_iter=MAX_ITER, tolerance_grad=GTOL, tolerance_change=0.0)
    opt.step(lambda p: f(p[0]))
    g = md.grad(f)(x.detach()).numpy()
    return {"nit": opt.info["iterations"], "gnorm": float(np.abs(g).max()), "nfev": opt.info["func_evals"]}


def run_scipy(method: str, problem: str) -> dict[str, Any]:
    """``{"nit", "gnorm", "nfev"}`` of ``scipy.optimize.minimize(method=...)`` on the same functions."""
    f, x0 = PROBLEMS[problem]
    res = scipy.optimize.minimize(
        lambda v: float(f(md.tensor(v))),
        x0,
        jac=lambda v: md.grad(f)(md.tensor(v)).numpy(),
        hess=(lambda v: md.hessian(f)(md.tensor(v)).numpy()) if method != "BFGS" else None,
        method=method,
        options={"gtol": GTOL, "maxiter": MAX_ITER},
    )
    g = md.grad(f)(md.tensor(res.x)).numpy()
    return {"nit": int(res.nit), "gnorm": float(np.abs(g).max()), "nfev": int(res.nfev)}


def main() -> None:
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; numpy {np.__version__}, "
        f"scipy {scipy.__version__}; float64, stop at ‖g‖∞ ≤ {GTOL:g}\n"
    )
    print(
        "| problem | method | iterations | ‖g‖∞ at the end | evaluations | SciPy method | SciPy iterations "
        "| SciPy ‖g‖∞ | ratio |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for problem in PROBLEMS:
        for method, ref in METHODS.items():
            mine = run_minidiff(method, problem)
            row = f"| {problem} | {method} | {mine['nit']} | {mine['gnorm']:.1e} | {mine['nfev']} |"
            if ref is None:
                print(row + " — | — | — | — |")
                continue
            theirs = run_scipy(ref, problem)
            ratio = mine["nit"] / theirs["nit"]
            print(row + f" {ref} | {theirs['nit']} | {theirs['gnorm']:.1e} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
