"""deer_bvp: y'' = f(y, y', r; θ) by central differences + Newton with banded solves, derivatives by the
implicit function theorem.  References: scipy.integrate.solve_bvp (collocation, tight tolerance) and
central finite differences of the whole solve.  Everything in float64."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.integrate import solve_bvp

import minidiff as md
from minidiff.deer import DeerConvergenceError, DeerConvergenceWarning, deer_bvp
from minidiff.testing import check_grads

D0 = ("dirichlet", 0.0)


def bratu(y, dy, r, lam):
    return -lam * md.exp(y)


def bratu_scipy(lam, x):
    """The lower branch of Bratu by solve_bvp, evaluated at ``x`` (tolerance 1e-10: far below h²)."""
    mesh = np.linspace(0.0, 1.0, 101)
    sol = solve_bvp(
        lambda t, Y: np.vstack([Y[1], -lam * np.exp(Y[0])]),
        lambda ya, yb: np.array([ya[0], yb[0]]),
        mesh,
        np.zeros((2, mesh.size)),
        tol=1e-10,
        max_nodes=100000,
    )
    assert sol.success
    return sol.sol(x)[0]


def solve_bratu(lam, n):
    return deer_bvp(bratu, lam, (0.0, 1.0, n), left=D0, right=D0)


def test_bratu_matches_solve_bvp_to_the_discretization_error():
    y, stats = deer_bvp(bratu, md.tensor(1.0), (0.0, 1.0, 200), left=D0, right=D0, return_stats=True)
    assert stats.converged and stats.iterations <= 6  # quadratic convergence from zero
    ref = bratu_scipy(1.0, np.linspace(0.0, 1.0, 200))
    err = np.abs(y.numpy() - ref).max()
    assert err < 1e-6  # measured 3.6e-7: h² ≈ 2.5e-5 times |y''''|/12 ≈ 0.014
    assert y.dtype == md.float64


def test_bratu_error_falls_as_h_squared():
    errs = []
    for n in (26, 51, 101, 201):
        y = solve_bratu(md.tensor(1.0), n)
        errs.append(np.abs(y.numpy() - bratu_scipy(1.0, np.linspace(0.0, 1.0, n))).max())
    ratios = [a / b for a, b in zip(errs, errs[1:])]
    assert all(3.7 < q < 4.3 for q in ratios), (errs, ratios)  # halving h divides the error by 4


@pytest.mark.parametrize("ends", ["neumann-dirichlet", "dirichlet-neumann"])
def test_reaction_diffusion_with_a_neumann_end_matches_solve_bvp(ends):
    """y'' = k·y³ − 1 + c·y' (reaction, source, drift) with a flux condition at one end."""
    k, c = 2.0, 0.5
    if ends == "neumann-dirichlet":
        left, right = ("neumann", 0.0), ("dirichlet", 1.0)
        bc = lambda ya, yb: np.array([ya[1], yb[0] - 1.0])  # noqa: E731
    else:
        left, right = ("dirichlet", 0.5), ("neumann", 0.3)
        bc = lambda ya, yb: np.array([ya[0] - 0.5, yb[1] - 0.3])  # noqa: E731

    def f(y, dy, r, p):
        return p["k"] * y**3 - 1.0 + p["c"] * dy

    params = {"k": md.tensor(k), "c": md.tensor(c)}
    n = 201
    y, stats = deer_bvp(f, params, (0.0, 1.0, n), left=left, right=right, return_stats=True)
    assert stats.converged
    mesh = np.linspace(0.0, 1.0, 101)
    sol = solve_bvp(
        lambda t, Y: np.vstack([Y[1], k * Y[0] ** 3 - 1 + c * Y[1]]), bc, mesh, np.ones((2, 101)), tol=1e-10
    )
    assert sol.success
    err = np.abs(y.numpy() - sol.sol(np.linspace(0.0, 1.0, n))[0]).max()
    assert err < 5e-6  # O(h²) at h = 5e-3: measured 6.4e-7 and 2.4e-6
    # the Neumann end is met by the solution's own one-sided slope to O(h)
    yy = y.numpy()
    h = 1.0 / (n - 1)
    slope = (yy[1] - yy[0]) / h if left[0] == "neumann" else (yy[-1] - yy[-2]) / h
    assert abs(slope - (left if left[0] == "neumann" else right)[1]) < 5 * h


def test_a_grid_tensor_gives_the_same_solution_as_a_b_n():
    r = md.linspace(0.0, 1.0, 51)
    a = deer_bvp(bratu, md.tensor(1.0), r, left=D0, right=D0)
    b = deer_bvp(bratu, md.tensor(1.0), (0.0, 1.0, 51), left=D0, right=D0)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-14)


def test_f_sees_the_grid_points():
    """y'' = r on [0, 1] with y(0) = y(1) = 0: y = (r³ − r)/6; central differences are exact on cubics."""
    y = deer_bvp(lambda y, dy, r, p: r + 0.0 * y, {}, (0.0, 1.0, 11), left=D0, right=D0)
    r = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(y.numpy(), (r**3 - r) / 6, rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------- derivatives
def test_grad_in_lambda_matches_central_differences():
    g = md.grad(lambda lam: (solve_bratu(lam, 101) ** 2).sum())(md.tensor(1.0))
    e = 1e-5
    fd = (
        (solve_bratu(md.tensor(1.0 + e), 101) ** 2).sum() - (solve_bratu(md.tensor(1.0 - e), 101) ** 2).sum()
    ) / (2 * e)
    assert abs(g.item() - fd.item()) <= 1e-7 * abs(fd.item())  # central-difference error O(e²)·y'''


def test_check_grads_in_params_and_boundary_values():
    def f(y, dy, r, p):
        return p["k"] * md.sin(y) - p["s"] * r + 0.3 * dy

    def solve(p, left_value, right_slope):
        return deer_bvp(f, p, (0.0, 2.0, 41), left=("dirichlet", left_value), right=("neumann", right_slope))

    params = {"k": md.tensor([0.7]), "s": md.tensor(1.5)}
    check_grads(solve, (params, md.tensor(0.2), md.tensor(-0.4)), order=1, modes=("fwd", "rev"))


def test_jvp_and_vjp_agree():
    p = md.tensor(0.8)
    _, t = md.jvp(lambda lam: solve_bratu(lam, 31), (p,), (md.tensor(1.0),))
    _, back = md.vjp(lambda lam: solve_bratu(lam, 31), p)
    w = md.linspace(-1.0, 1.0, 31)
    (g,) = back(w)
    assert abs((t * w).sum().item() - g.item()) <= 1e-12 * max(1.0, abs(g.item()))


def test_the_backward_pass_is_one_solve_not_the_iterations(monkeypatch):
    """The VJP calls the banded solve exactly once (the transposed system), whatever Newton did."""
    from minidiff.deer import bvp

    calls = []
    real = bvp._solve
    y = md.tensor(1.0)
    _, back = md.vjp(lambda lam: solve_bratu(lam, 51), y)
    monkeypatch.setattr(bvp, "_solve", lambda ab, rhs: calls.append(1) or real(ab, rhs))
    back(md.ones(51))
    assert len(calls) == 1


def _drift(y, dy, r, p):
    return p["k"] * md.sin(y) - p["s"] * r + 0.3 * dy


def _solve_drift(p, left_value, right_slope, n=41):
    return deer_bvp(_drift, p, (0.0, 2.0, n), left=("dirichlet", left_value), right=("neumann", right_slope))


def test_second_derivatives_in_params_and_boundary_values_match_differences_of_the_first():
    """grad of grad, jvp of grad, vjp of jvp... in every leaf and both boundary values: check_grads'
    second order holds each against central differences of the first derivatives (float64, eps 1e-6,
    rtol 1e-5, atol 1e-6 relative to the largest entry)."""
    params = {"k": md.tensor([0.7]), "s": md.tensor(1.5)}
    check_grads(
        _solve_drift, (params, md.tensor(0.2), md.tensor(-0.4)), order=2, modes=("fwd", "rev"), seed=3
    )


def test_grad_of_grad_in_lambda_matches_central_differences_of_the_grad():
    s = lambda lam: (solve_bratu(lam, 101) ** 2).sum()  # noqa: E731
    g2 = md.grad(md.grad(s))(md.tensor(1.0)).item()
    e = 1e-4
    fd = (md.grad(s)(md.tensor(1.0 + e)).item() - md.grad(s)(md.tensor(1.0 - e)).item()) / (2 * e)
    assert abs(g2 - fd) <= 1e-7 * abs(fd)  # central differences of the gradient: O(e²) error


def test_hessian_and_every_hvp_mode_agree_and_are_symmetric():
    """md.hessian (forward over reverse, vector-mode tangents) in two parameters and a boundary value,
    against the three HVP compositions; the Hessian is symmetric."""

    def loss(k, s, left):
        y = _solve_drift({"k": k, "s": s}, left, md.tensor(-0.4), n=31)
        return (y**2).sum() + y[5]

    args = (md.tensor(0.7), md.tensor(1.5), md.tensor(0.2))
    H = md.hessian(loss, argnums=(0, 1, 2))(*args)
    H = np.array([[H[i][j].item() for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-12)
    v = (md.tensor(1.0), md.tensor(-0.5), md.tensor(2.0))
    for mode in md.transforms.HVP_MODES:
        hv = md.hvp(loss, args, v, mode=mode)
        np.testing.assert_allclose([t.item() for t in hv], H @ [1.0, -0.5, 2.0], rtol=1e-9, atol=1e-10)


def test_vmap_of_grad_and_of_jvp_equal_a_loop():
    s = lambda lam: (solve_bratu(lam, 21) ** 2).sum()  # noqa: E731
    lams = [0.5, 1.0, 1.5]
    got = md.vmap(md.grad(s))(md.tensor(lams))
    want = [md.grad(s)(md.tensor(lam)).item() for lam in lams]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)
    tangents = md.vmap(lambda lam: md.jvp(lambda x: solve_bratu(x, 21), (lam,), (md.tensor(1.0),))[1])(
        md.tensor(lams)
    )
    for k, lam in enumerate(lams):
        _, t = md.jvp(lambda x: solve_bratu(x, 21), (md.tensor(lam),), (md.tensor(1.0),))
        np.testing.assert_allclose(tangents[k].numpy(), t.numpy(), rtol=1e-12, atol=1e-15)


def test_vmap_of_the_solve_runs_per_example():
    ys = md.vmap(lambda lam: solve_bratu(lam, 21))(md.tensor([0.5, 1.0]))
    for k, lam in enumerate((0.5, 1.0)):
        np.testing.assert_allclose(ys[k].numpy(), solve_bratu(md.tensor(lam), 21).numpy(), rtol=0, atol=1e-14)


def test_three_points_is_the_smallest_grid():
    """n = 3: one unknown, (0 − 2y + 0)/h² + e^y = 0 with h = 1/2, i.e. 8y = e^y (lower root)."""
    y = solve_bratu(md.tensor(1.0), 3).numpy()
    assert y[0] == y[2] == 0.0 and abs(8 * y[1] - math.exp(y[1])) < 1e-12


# ----------------------------------------------------------------------------- failures
def test_no_solution_warns_or_raises():
    """Bratu has no solution for λ above ≈ 3.51: Newton cannot converge, and says so."""
    with pytest.warns(DeerConvergenceWarning, match=r"deer_bvp: .*did not converge.*max_iter=20"):
        y, stats = deer_bvp(
            bratu, md.tensor(4.0), (0.0, 1.0, 51), left=D0, right=D0, max_iter=20, return_stats=True
        )
    assert not stats.converged and stats.iterations == 20
    with pytest.raises(DeerConvergenceError, match="did not converge"):
        deer_bvp(bratu, md.tensor(4.0), (0.0, 1.0, 51), left=D0, right=D0, max_iter=20, on_failure="raise")


def test_too_few_iterations_warns_and_converged_run_is_silent():
    with pytest.warns(DeerConvergenceWarning):
        deer_bvp(bratu, md.tensor(1.0), (0.0, 1.0, 51), left=D0, right=D0, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deer_bvp(bratu, md.tensor(1.0), (0.0, 1.0, 51), left=D0, right=D0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_f_that_is_not_pointwise_is_refused(dtype):
    """f coupling distant points (here through a flip) breaks the tridiagonal structure: refused."""
    with pytest.raises(ValueError, match="f must act pointwise"):
        deer_bvp(
            lambda y, dy, r, p: -p * md.exp(md.flip(y, 0)),
            md.tensor(1.0, dtype=dtype),
            (0.0, 1.0, 11),
            left=D0,
            right=D0,
        )


def test_float32_solves_and_differentiates_in_float32():
    """The pointwise check allows float32 rounding (relative 1e-4 of the band): no false refusal."""
    y32, stats = deer_bvp(
        bratu, md.tensor(1.0, dtype="float32"), (0.0, 1.0, 101), left=D0, right=D0, return_stats=True
    )
    y64 = solve_bratu(md.tensor(1.0), 101)
    assert y32.dtype == md.float32 and stats.converged
    np.testing.assert_allclose(y32.numpy(), y64.numpy(), rtol=0, atol=1e-5)
    g32 = md.grad(lambda lam: solve_bratu(lam, 101).sum())(md.tensor(1.0, dtype="float32"))
    g64 = md.grad(lambda lam: solve_bratu(lam, 101).sum())(md.tensor(1.0))
    assert g32.dtype == md.float32 and abs(g32.item() - g64.item()) <= 1e-4 * abs(g64.item())


def test_singular_newton_matrix_raises_even_with_warn():
    """y'' = 0 with y' = 0 at both ends: the constants solve it, the Newton matrix is singular."""
    with pytest.raises(DeerConvergenceError, match="singular"):
        deer_bvp(
            lambda y, dy, r, p: 0.0 * y, {}, (0.0, 1.0, 11), left=("neumann", 0.0), right=("neumann", 0.0)
        )


def test_an_init_near_the_upper_branch_finds_it():
    """Newton finds the solution nearest its start: the upper Bratu branch (max ≈ 4.0 at λ = 1)."""
    r = md.linspace(0.0, 1.0, 201)
    init = 16.0 * r * (1.0 - r)
    y = deer_bvp(bratu, md.tensor(1.0), r, left=D0, right=D0, init=init)
    assert 3.9 < y.max().item() < 4.2  # lower branch max is 0.14


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"left": ("robin", 0.0)}, ValueError, r"left must be a pair \(kind, value\)"),
        ({"right": "dirichlet"}, ValueError, "right must be a pair"),
        ({"left": ("dirichlet", math.nan)}, ValueError, "left boundary value must be a finite number"),
        ({"left": ("dirichlet", md.ones(2))}, md.ShapeError, "must be a scalar"),
        ({"grid": (0.0, 1.0, 2)}, ValueError, "n"),
        ({"grid": (1.0, 0.0, 10)}, ValueError, "a < b"),
        ({"grid": md.tensor([0.0, 0.1, 0.5, 1.0])}, ValueError, "uniform"),
        ({"grid": md.tensor([0.0, 1.0])}, md.ShapeError, "at least 3 points"),
        ({"grid": [0.0, 1.0]}, TypeError, r"\(a, b, n\)"),
        ({"init": md.zeros(5)}, md.ShapeError, r"init must have the grid's shape \(11,\)"),
        ({"on_failure": "ignore"}, ValueError, "on_failure"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"params": md.tensor(math.inf)}, ValueError, "NaN or infinite"),
        ({"params": md.tensor([1, 2])}, md.DTypeError, "floating-point"),
    ],
)
def test_bad_arguments_are_refused(kwargs, err, match):
    args = {"params": md.tensor(1.0), "grid": (0.0, 1.0, 11), "left": D0, "right": D0}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        deer_bvp(bratu, args.pop("params"), args.pop("grid"), **args)


def test_the_2d_poisson_example_runs_and_its_adjoint_gradient_matches(capsys):
    """Smoke run of examples/nonlinear_poisson_2d.py on a 15x15 grid: adjoint vs central differences."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "nonlinear_poisson_2d.py"
    spec = importlib.util.spec_from_file_location("nonlinear_poisson_2d_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grad, fd = module.main(["--m", "15"])
    assert abs(grad - fd) <= 1e-6 * abs(fd)  # central differences with e = 1e-5: O(e²) error
    assert "Newton converged" in capsys.readouterr().out
