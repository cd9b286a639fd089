"""Dense quasi-Newton and Newton (minidiff.optim.dense): updates against their formulas in NumPy,
convergence, iteration counts against scipy.optimize.minimize, errors, checkpoints.  float64 throughout;
tolerances stated per test."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff.optim.dense import DENSE_LIMIT, floored_newton_direction, trust_region_step

METHODS = [md.optim.BFGS, md.optim.DFP, md.optim.SR1, md.optim.Newton]

_spec = importlib.util.spec_from_file_location(
    "dense_optimizers_bench", Path(__file__).parent.parent / "benchmarks" / "dense_optimizers.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def rosen(p):
    return bench.rosenbrock(p[0])


def f64(values):
    return md.tensor(np.asarray(values, dtype=np.float64), dtype="float64", requires_grad=True)


# ---------------------------------------------------------------------------------------- updates
def _pair(rng, n):
    s = rng.standard_normal(n)
    M = rng.standard_normal((n, n))
    y = (M @ M.T + n * np.eye(n)) @ s  # sᵀy > 0
    return s, y


def test_bfgs_and_dfp_updates_match_their_formulas_and_the_secant_condition():
    rng = np.random.default_rng(0)
    n = 5
    M = rng.standard_normal((n, n))
    H = M @ M.T + np.eye(n)
    s, y = _pair(rng, n)
    rho = 1 / (s @ y)
    V = np.eye(n) - rho * np.outer(s, y)
    bfgs = V @ H @ V.T + rho * np.outer(s, s)
    dfp = H - np.outer(H @ y, H @ y) / (y @ H @ y) + np.outer(s, s) / (s @ y)
    x = f64([0.0])
    T = lambda a: md.tensor(a, dtype="float64")  # noqa: E731
    got_b = md.optim.BFGS([x])._update(T(H), T(s), T(y), float(s @ y)).numpy()
    got_d = md.optim.DFP([x])._update(T(H), T(s), T(y), float(s @ y)).numpy()
    np.testing.assert_allclose(got_b, bfgs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_d, dfp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_b @ y, s, rtol=1e-10)  # H₊y = s
    np.testing.assert_allclose(got_d @ y, s, rtol=1e-10)


def test_sr1_update_and_its_skipping_rule():
    rng = np.random.default_rng(1)
    n = 4
    B = np.eye(n)
    s, y = _pair(rng, n)
    T = lambda a: md.tensor(a, dtype="float64")  # noqa: E731
    opt = md.optim.SR1([f64([0.0])])
    got = opt._update(T(B), T(B @ s), T(s), T(y)).numpy()
    r = y - B @ s
    np.testing.assert_allclose(got, B + np.outer(r, r) / (r @ s), rtol=1e-12)
    np.testing.assert_allclose(got @ s, y, rtol=1e-10)  # B₊s = y
    # r orthogonal to s up to 1e-9·‖s‖‖r‖ (below r_skip = 1e-8): the update is skipped
    r_orth = np.array([1.0, -1.0, 0.0, 0.0]) + 1e-9 * np.array([1.0, 1.0, 0.0, 0.0]) / 2
    s2 = np.array([1.0, 1.0, 0.0, 0.0])
    assert abs(s2 @ r_orth) < 1e-8 * np.linalg.norm(s2) * np.linalg.norm(r_orth)
    skipped = opt._update(T(B), T(B @ s2), T(s2), T(B @ s2 + r_orth)).numpy()
    np.testing.assert_array_equal(skipped, B)


def test_floored_newton_direction_flips_negative_and_bounds_tiny_eigenvalues():
    rng = np.random.default_rng(2)
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lam = np.array([-3.0, 1e-14, 2.0, 5.0])
    H = (Q * lam) @ Q.T
    g = rng.standard_normal(4)
    floor = 1e-6
    size = np.maximum(np.abs(lam), floor * 5.0)
    expected = -(Q @ ((Q.T @ g) / size))
    got = floored_newton_direction(md.tensor(H), md.tensor(g), floor).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    assert got @ g < 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 5.0), st.booleans())
def test_trust_region_step_satisfies_the_optimality_conditions(seed, radius, definite):
    """Moré–Sorensen: p is optimal iff (B + σI)p = −g, B + σI ⪰ 0, σ ≥ 0, σ(radius − ‖p‖) = 0."""
    rng = np.random.default_rng(seed)
    n = 5
    M = rng.standard_normal((n, n))
    B = M @ M.T + 0.1 * np.eye(n) if definite else (M + M.T) / 2
    g = rng.standard_normal(n)
    p = trust_region_step(md.tensor(B), md.tensor(g), radius).numpy()
    norm = np.linalg.norm(p)
    assert norm <= radius * (1 + 1e-9)
    # σ from the stationarity condition (least squares), then the other three conditions
    sigma = float(-(p @ (B @ p + g)) / (p @ p))
    assert sigma >= -1e-8
    np.testing.assert_allclose(B @ p + sigma * p, -g, atol=1e-7 * (1 + np.abs(g).max()))
    assert np.linalg.eigvalsh(B + sigma * np.eye(n)).min() >= -1e-7
    assert sigma * (radius - norm) <= 1e-6


# ---------------------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_every_method_solves_rosenbrock_2d(cls):
    x = f64([-1.2, 1.0])
    opt = cls([x], max_iter=2000, tolerance_grad=1e-9, tolerance_change=0.0)
    opt.step(rosen)
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0], atol=1e-6)
    assert opt.info["reason"] == "gradient below tolerance_grad"


@pytest.mark.parametrize("cls", [md.optim.BFGS, md.optim.DFP, md.optim.SR1], ids=lambda c: c.__name__)
def test_quasi_newton_accepts_the_pytorch_closure_and_several_tensors(cls):
    a, b = f64([[3.0, -1.0]]), f64([2.0])

    def loss_of(a_, b_):
        return ((a_ - 1.0) ** 2).sum() + 4 * ((b_ + 2.0) ** 2).sum() + (a_[0, 0] * b_[0] - 1.0) ** 2

    def closure():
        for p in (a, b):
            p.zero_grad_()
        loss = loss_of(a, b)
        loss.backward()
        return loss

    opt = cls([a, b], max_iter=200, tolerance_grad=1e-10)
    opt.step(closure)
    ga, gb = md.grad(loss_of, argnums=(0, 1))(a.detach(), b.detach())  # at the final parameters
    assert max(np.abs(ga.numpy()).max(), np.abs(gb.numpy()).max()) < 1e-6  # converged (tol 1e-10 asked)


def test_newton_solves_a_quadratic_in_one_iteration():
    rng = np.random.default_rng(3)
    M = rng.standard_normal((6, 6))
    A, bvec = M @ M.T + np.eye(6), rng.standard_normal(6)
    At, bt = md.tensor(A), md.tensor(bvec)
    x = f64(np.zeros(6))
    opt = md.optim.Newton([x], tolerance_grad=1e-9)
    opt.step(lambda p: 0.5 * (p[0] @ At @ p[0]) - bt @ p[0])
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, bvec), rtol=1e-10)
    assert opt.info["iterations"] == 1


@pytest.mark.parametrize("cls", [md.optim.DFP, md.optim.SR1], ids=lambda c: c.__name__)
@pytest.mark.parametrize("problem", ["logistic regression (200×10, L2 0.01)", "quadratic, κ = 10⁴ (20-D)"])
def test_dfp_and_sr1_converge_on_the_benchmark_problems(cls, problem):
    out = bench.run_minidiff(cls.__name__, problem)
    assert out["gnorm"] <= bench.GTOL


# ---------------------------------------------------------------------------------------- SciPy
@pytest.mark.parametrize("problem", list(bench.PROBLEMS))
@pytest.mark.parametrize("method", ["BFGS", "Newton"])
def test_iterations_within_one_and_a_half_times_scipys(method, problem):
    mine = bench.run_minidiff(method, problem)
    theirs = bench.run_scipy(bench.METHODS[method], problem)
    assert mine["gnorm"] <= bench.GTOL
    assert mine["nit"] <= 1.5 * theirs["nit"], (mine, theirs)


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_non_scalar_closure_nan_loss_and_missing_closure_raise_and_change_nothing(cls):
    x = f64([0.5, -0.5])
    before = x.numpy().copy()
    opt = cls([x])
    with pytest.raises(md.ShapeError, match=f"{cls.__name__}.step: the closure must return a scalar loss"):
        opt.step(lambda p: p[0] * 2)
    with pytest.raises(FloatingPointError, match="not finite.*no parameter was changed"):
        opt.step(lambda p: (p[0] * float("nan")).sum())
    with pytest.raises(TypeError, match="pass step\\(closure\\)"):
        opt.step()
    np.testing.assert_array_equal(x.numpy(), before)
    assert opt.steps == 0


def test_non_scalar_pytorch_closure_names_the_optimizer():
    x = f64([0.5, -0.5])
    opt = md.optim.BFGS([x])

    def closure():
        return x * 2

    with pytest.raises(md.ShapeError, match="BFGS.step: the closure must return a scalar loss, got shape"):
        opt.step(closure)
    np.testing.assert_array_equal(x.numpy(), [0.5, -0.5])


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_an_error_during_the_iterations_puts_the_parameters_back(cls):
    x = f64([-1.2, 1.0])
    calls = []

    def failing(p):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("the data loader broke")
        return rosen(p)

    opt = cls([x], max_iter=50)
    with pytest.raises(RuntimeError, match="data loader broke"):
        opt.step(failing)
    np.testing.assert_array_equal(x.numpy(), [-1.2, 1.0])
    assert opt.steps == 0


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_too_many_parameters_suggests_lbfgs(cls):
    assert DENSE_LIMIT == 5000
    big = md.zeros(DENSE_LIMIT + 1, dtype="float64", requires_grad=True)
    with pytest.raises(ValueError, match="5001 parameters is above the limit max_params=5000.*LBFGS"):
        cls([big])
    small = f64([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="3 parameters is above the limit max_params=2"):
        cls([small], max_params=2)
    cls([md.zeros(DENSE_LIMIT, dtype="float64", requires_grad=True)])  # at the limit: fine


def test_newton_needs_the_functional_closure():
    x = f64([1.0])
    with pytest.raises(TypeError, match="functional closure"):
        md.optim.Newton([x]).step(lambda: (x * x).sum())


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (md.optim.BFGS, {"c1": 0.9, "c2": 0.1}, "0 < c1 < c2 < 1"),
        (md.optim.DFP, {"max_iter": 0}, "max_iter"),
        (md.optim.SR1, {"radius": 0.0}, "radius"),
        (md.optim.SR1, {"eta": 0.5}, "eta"),
        (md.optim.SR1, {"r_skip": 1.0}, "r_skip"),
        (md.optim.Newton, {"eigenvalue_floor": -1.0}, "eigenvalue_floor"),
    ],
)
def test_settings_out_of_range_are_refused(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([f64([1.0])], **kwargs)


# ---------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_state_dict_resumes_bitwise(cls):
    x = f64([-1.2, 1.0])
    opt = cls([x], max_iter=3, tolerance_grad=0.0, tolerance_change=0.0)
    for _ in range(2):
        opt.step(rosen)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    x_saved = x.numpy().copy()
    for _ in range(3):
        opt.step(rosen)
    expected = x.numpy().copy()

    y = f64(x_saved)
    fresh = cls([y], max_iter=3, tolerance_grad=0.0, tolerance_change=0.0)
    fresh.load_state_dict(saved)
    for _ in range(3):
        fresh.step(rosen)
    np.testing.assert_array_equal(y.numpy(), expected)
    assert fresh.state_dict() == opt.state_dict()
