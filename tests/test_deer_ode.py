"""DEER for ODEs (``minidiff.deer.ode``): accuracy against known solutions and SciPy's ``solve_ivp``,
derivatives against the tape through the sequential evaluation of the same scheme, convergence
reporting, and every error path.

Tolerances (float64 unless stated):
- the scheme is second order in the grid spacing Δ on nonlinear and time-varying problems
  (measured error ≈ 0.2·Δ² on the pendulum below, we assert ≤ 0.5·Δ² and an order between 1.8 and 2.2);
  on a constant linear system the exact exponential is exact (≤ 1e-12) and the 4th-order series has
  error ≈ 0.6·Δ⁴·‖A‖⁴ (asserted ≤ 2·Δ⁴·‖A‖⁴, order between 3.6 and 4.4);
- DEER converged to atol 1e-12 / rtol 1e-10 matches the sequential solve of the same scheme to 1e-10,
  and its derivatives (rules, one scan each) match the tape through the sequential solve to 1e-9
  relative; the adjoint identity holds to 1e-12 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import minidiff as md
from minidiff.deer.ode import _exp_phi, _expm, deer_odeint, sequential_odeint
from minidiff.deer.rnn import DeerConvergenceError, DeerConvergenceWarning, DeerStats

TIGHT = dict(atol=1e-12, rtol=1e-10)


def t64(a):
    return md.tensor(np.asarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- test problems
def pendulum(y, t, p):
    """Damped, driven pendulum: θ'' = −g sin θ − c θ' + a cos t."""
    return md.stack([y[1], -p["g"] * md.sin(y[0]) - p["c"] * y[1] + p["a"] * md.cos(t)])


PEND = {"g": 2.0, "c": 0.3, "a": 0.5}


def pendulum_np(t, y):
    return [y[1], -PEND["g"] * np.sin(y[0]) - PEND["c"] * y[1] + PEND["a"] * np.cos(t)]


def pend_params():
    return {k: t64(v) for k, v in PEND.items()}


def van_der_pol(y, t, mu):
    return md.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def reference(fun, t_end, y0, grid, method="DOP853", **kw):
    tol = dict(rtol=1e-10, atol=1e-12) if method == "DOP853" else {}
    sol = solve_ivp(fun, (grid[0], t_end), y0, method=method, t_eval=grid, **tol, **kw)
    assert sol.success
    return sol.y.T


# ----------------------------------------------------------------------------- accuracy
def test_constant_linear_system_against_its_matrix_exponential():
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    y0 = np.array([1.0, 0.5])
    norm = np.linalg.norm(A, 1)
    errors = []
    for N in (21, 41, 81):
        grid = np.linspace(0.0, 3.0, N)
        exact = np.stack([scipy.linalg.expm(A * t) @ y0 for t in grid])
        f = lambda y, t, a: a @ y
        ys_exact = deer_odeint(f, t64(y0), t64(grid), t64(A), expm="exact").numpy()
        ys_series = deer_odeint(f, t64(y0), t64(grid), t64(A), expm="series").numpy()
        dt = grid[1] - grid[0]
        assert np.abs(ys_exact - exact).max() < 1e-12  # the linearization of a linear ODE is exact
        err = np.abs(ys_series - exact).max()
        assert err <= 2 * (dt * norm) ** 4
        errors.append(err)
        # SciPy's RK45 at its default tolerances, for scale: DEER beats it from 41 points on
        rk45 = reference(lambda t, y: A @ y, 3.0, y0, grid, method="RK45")
        assert np.abs(rk45 - exact).max() < 1e-2
        assert np.abs(reference(lambda t, y: A @ y, 3.0, y0, grid) - exact).max() < 1e-8
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 3.6) & (orders < 4.4)), orders


def test_time_varying_linear_ode_is_second_order():
    """y' = cos(t) y, y = exp(sin t): G is averaged over each interval (the trapezoid rule of ∫G),
    so the scheme is second order (a G linear in t would be integrated exactly)."""
    errors = []
    for N in (21, 41, 81):
        grid = np.linspace(0.0, 4.0, N)
        ys = deer_odeint(lambda y, t, p: md.cos(t) * y, t64([1.0]), t64(grid), None, expm="exact")
        err = np.abs(ys.numpy()[:, 0] - np.exp(np.sin(grid))).max()
        assert err <= 0.5 * (grid[1] - grid[0]) ** 2
        errors.append(err)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), orders


@pytest.mark.parametrize("expm", ["series", "exact"])
def test_nonlinear_pendulum_against_solve_ivp(expm):
    errors = []
    for N in (41, 81, 161):
        grid = np.linspace(0.0, 5.0, N)
        ref = reference(pendulum_np, 5.0, [1.0, 0.0], grid)  # DOP853, rtol 1e-10
        ys, stats = deer_odeint(
            pendulum, t64([1.0, 0.0]), t64(grid), pend_params(), expm=expm, return_stats=True
        )
        assert stats.converged and stats.iterations <= 20
        err = np.abs(ys.numpy() - ref).max()
        assert err <= 0.5 * (grid[1] - grid[0]) ** 2
        errors.append(err)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), orders
    # RK45 at default tolerances lands within 1e-2 of the reference; DEER on 161 points within 5e-4
    rk45 = reference(pendulum_np, 5.0, [1.0, 0.0], grid, method="RK45")
    assert np.abs(rk45 - ref).max() < 1e-2 and errors[-1] < 5e-4


def test_van_der_pol_moderately_stiff():
    mu = 3.0
    grid = np.linspace(0.0, 4.0, 201)
    ref = reference(lambda t, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], 4.0, [2.0, 0.0], grid)
    ys, stats = deer_odeint(van_der_pol, t64([2.0, 0.0]), t64(grid), t64(mu), return_stats=True)
    assert stats.converged and stats.iterations <= 20
    dt = grid[1] - grid[0]
    # the solution's fast phase (|y'| up to ~4) makes the constant larger than the pendulum's:
    # measured 28·Δ² on 101, 201 and 401 points
    assert np.abs(ys.numpy() - ref).max() <= 40 * dt**2


def test_backward_in_time():
    grid = np.linspace(1.0, 0.0, 41)
    ys = deer_odeint(lambda y, t, p: -2.0 * t * y, t64([np.exp(-1.0)]), t64(grid), None)
    assert np.abs(ys.numpy()[:, 0] - np.exp(-(grid**2))).max() <= 0.5 * (1 / 40) ** 2


# ----------------------------------------------------------------------------- against the sequential solve
@settings(max_examples=8, deadline=None)
@given(
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    T=st.sampled_from([1, 2, 5, 13]),
    expm=st.sampled_from(["series", "exact"]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_sequential_solve_of_the_same_scheme(batch, T, expm, seed):
    rng = np.random.default_rng(seed)
    y0 = t64(rng.uniform(-1, 1, size=batch + (2,)))
    grid = np.cumsum(np.concatenate([[0.0], rng.uniform(0.05, 0.2, size=T)]))  # uneven steps
    ys, stats = deer_odeint(pendulum, y0, t64(grid), pend_params(), expm=expm, return_stats=True, **TIGHT)
    assert ys.shape == batch + (T + 1, 2)
    assert stats.converged
    ref = sequential_odeint(pendulum, y0, t64(grid), pend_params(), expm=expm)
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ys.numpy()[..., 0, :], y0.numpy(), rtol=0, atol=0)


def test_float32():
    grid = np.linspace(0.0, 2.0, 41)
    y0 = md.tensor(np.array([1.0, 0.0], dtype=np.float32))
    params = {k: md.tensor(np.float32(v)) for k, v in PEND.items()}
    ys, stats = deer_odeint(pendulum, y0, md.tensor(grid), params, return_stats=True)
    assert ys.dtype == md.float32 and stats.converged
    ref = deer_odeint(pendulum, t64([1.0, 0.0]), t64(grid), pend_params(), **TIGHT)
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), atol=1e-4)  # float32 tolerances (1e-4, 1e-3)


# ----------------------------------------------------------------------------- derivatives
def _problem(batch=(2,), T=8):
    rng = np.random.default_rng(7)
    y0 = t64(rng.uniform(-1, 1, size=batch + (2,)))
    grid = t64(np.linspace(0.0, 1.2, T + 1))
    w = t64(rng.normal(size=batch + (T + 1, 2)))
    return y0, grid, w


@pytest.mark.parametrize("expm", ["series", "exact"])
def test_gradients_match_the_tape_through_the_sequential_solve(expm):
    y0, grid, w = _problem()
    deer = lambda y0, p: md.sum(deer_odeint(pendulum, y0, grid, p, expm=expm, **TIGHT) * w)
    seq = lambda y0, p: md.sum(sequential_odeint(pendulum, y0, grid, p, expm=expm) * w)
    g_deer = md.grad(deer, argnums=(0, 1))(y0, pend_params())
    g_seq = md.grad(seq, argnums=(0, 1))(y0, pend_params())
    np.testing.assert_allclose(g_deer[0].numpy(), g_seq[0].numpy(), rtol=1e-9, atol=1e-11)
    for k in PEND:
        np.testing.assert_allclose(g_deer[1][k].numpy(), g_seq[1][k].numpy(), rtol=1e-9, atol=1e-11)
    assert np.abs(g_seq[0].numpy()).max() > 0.1 and abs(g_seq[1]["g"].item()) > 0.1  # not trivially 0


def test_jvp_matches_the_sequential_solve_and_the_adjoint_identity():
    y0, grid, w = _problem()
    rng = np.random.default_rng(3)
    tangents = (t64(rng.normal(size=y0.shape)), {k: t64(rng.normal()) for k in PEND})
    deer = lambda y0, p: deer_odeint(pendulum, y0, grid, p, **TIGHT)
    seq = lambda y0, p: sequential_odeint(pendulum, y0, grid, p)
    out, jv = md.jvp(deer, (y0, pend_params()), tangents)
    _, jv_seq = md.jvp(seq, (y0, pend_params()), tangents)
    np.testing.assert_allclose(jv.numpy(), jv_seq.numpy(), rtol=1e-9, atol=1e-11)
    # ⟨J v, u⟩ = ⟨v, Jᵀ u⟩ between the JVP rule and the VJP rule
    _, back = md.vjp(deer, y0, pend_params())
    ct_y0, ct_p = back(w)
    lhs = float(np.sum(jv.numpy() * w.numpy()))
    rhs = float(np.sum(ct_y0.numpy() * tangents[0].numpy())) + sum(
        ct_p[k].item() * tangents[1][k].item() for k in PEND
    )
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
    np.testing.assert_allclose(out.numpy(), deer(y0, pend_params()).numpy(), atol=1e-12)


def test_finite_differences():
    y0, grid, _ = _problem(batch=(), T=5)
    f = lambda y0, p: deer_odeint(pendulum, y0, grid, p, atol=1e-14, rtol=1e-13)
    md.testing.check_grads(f, (y0, pend_params()), order=1, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-fwd", "rev-over-rev"])
def test_hessian_vector_products_match_the_sequential_solve(mode):
    y0, grid, w = _problem(batch=(), T=4)
    v = (t64([0.5, -1.0]), {k: t64(0.3) for k in PEND})
    deer = lambda y0, p: md.sum(deer_odeint(pendulum, y0, grid, p, **TIGHT) * w)
    seq = lambda y0, p: md.sum(sequential_odeint(pendulum, y0, grid, p) * w)
    h_deer = md.hvp(deer, (y0, pend_params()), v, mode=mode)
    h_seq = md.hvp(seq, (y0, pend_params()), v, mode=mode)
    np.testing.assert_allclose(h_deer[0].numpy(), h_seq[0].numpy(), rtol=1e-8, atol=1e-10)
    for k in PEND:
        np.testing.assert_allclose(h_deer[1][k].numpy(), h_seq[1][k].numpy(), rtol=1e-8, atol=1e-10)


def test_params_may_be_a_single_tensor_or_absent():
    grid = t64(np.linspace(0.0, 1.0, 6))
    k = t64(1.5)
    g = md.grad(lambda k: deer_odeint(lambda y, t, k: -k * y, t64([2.0]), grid, k, expm="exact")[-1, 0])(k)
    g_seq = md.grad(
        lambda k: sequential_odeint(lambda y, t, k: -k * y, t64([2.0]), grid, k, expm="exact")[-1, 0]
    )(k)
    np.testing.assert_allclose(g.item(), g_seq.item(), rtol=1e-9)
    np.testing.assert_allclose(g.item(), -2.0 * np.exp(-1.5), rtol=1e-9)  # exact for linear ODEs
    gy = md.grad(lambda y0: md.sum(deer_odeint(lambda y, t, p: -y, y0, grid, expm="exact")))(t64([1.0]))
    np.testing.assert_allclose(gy.item(), np.exp(-grid.numpy()).sum(), rtol=1e-9)


# ----------------------------------------------------------------------------- matrix exponentials
@pytest.mark.parametrize("scale", [1e-3, 0.3, 4.0, 30.0])
def test_own_matrix_exponential_against_scipy(scale):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 3, 3)) * scale
    ours = _expm(t64(X)).numpy()
    np.testing.assert_allclose(ours, scipy.linalg.expm(X), rtol=1e-11, atol=1e-13 * np.abs(ours).max())


def test_series_and_exact_agree_for_small_intervals():
    rng = np.random.default_rng(2)
    M0 = rng.normal(size=(4, 3, 3))
    for h in (0.1, 0.01):
        M = t64(M0 * h)
        E_s, P_s = _exp_phi(M, "series")
        E_x, P_x = _exp_phi(M, "exact")
        assert np.allclose(E_x.numpy(), scipy.linalg.expm(-M.numpy()), rtol=1e-12, atol=1e-14)
        bound = np.linalg.norm(M0, 2, axis=(1, 2)).max() ** 5 * h**5  # first dropped term ~ M⁵/5!, M⁴/5!
        assert np.abs(E_s.numpy() - E_x.numpy()).max() <= bound
        assert np.abs(P_s.numpy() - P_x.numpy()).max() <= bound
    grid = t64(np.linspace(0.0, 1.0, 201))
    a = deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), expm="series", **TIGHT)
    b = deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), expm="exact", **TIGHT)
    assert np.abs(a.numpy() - b.numpy()).max() < 1e-8


# ----------------------------------------------------------------------------- convergence
def test_stats_and_warm_start():
    grid = t64(np.linspace(0.0, 3.0, 61))
    ys, stats = deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), return_stats=True)
    assert isinstance(stats, DeerStats) and stats.converged and 2 <= stats.iterations <= 20
    assert stats.residual <= 1e-6 + 1e-4 * np.abs(ys.numpy()).max()
    _, warm = deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), init=ys, return_stats=True)
    assert warm.converged and warm.iterations < stats.iterations and warm.iterations <= 2


def test_non_convergence_warns_or_raises():
    grid = t64(np.linspace(0.0, 3.0, 61))
    with pytest.warns(DeerConvergenceWarning, match=r"no convergence after 2 iterations"):
        ys, stats = deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), max_iter=2, return_stats=True)
    assert not stats.converged and stats.iterations == 2
    with pytest.raises(DeerConvergenceError, match="max_iter=2"):
        deer_odeint(pendulum, t64([1.0, 0.0]), grid, pend_params(), max_iter=2, on_failure="raise")


def test_long_oscillatory_horizon_from_a_flat_guess_is_reported():
    """Newton from y0 broadcast over time diverges on Van der Pol beyond about half a cycle (a known
    limit of DEER: grow the horizon with warm starts instead); it must say so, never return silently."""
    grid = t64(np.linspace(0.0, 10.0, 101))
    with pytest.warns(DeerConvergenceWarning, match="no convergence after 100 iterations"):
        ys, stats = deer_odeint(van_der_pol, t64([2.0, 0.0]), grid, t64(2.0), return_stats=True)
    assert not stats.converged and np.all(np.isfinite(ys.numpy()))


def test_divergent_iteration_is_reported_never_silent():
    """A far-off start on a stiff cubic: the guard keeps the iterates finite, the test reports failure."""
    grid = t64(np.linspace(0.0, 1.0, 21))
    init = md.full((21, 1), 1e5, dtype="float64")
    with pytest.raises(DeerConvergenceError):
        deer_odeint(
            lambda y, t, p: -(y**3), t64([1.0]), grid, None, init=init, on_failure="raise", max_iter=30
        )
    with pytest.warns(DeerConvergenceWarning):
        ys, stats = deer_odeint(
            lambda y, t, p: -(y**3), t64([1.0]), grid, None, init=init, return_stats=True, max_iter=30
        )
    assert not stats.converged and np.all(np.isfinite(ys.numpy()))
    assert np.abs(ys.numpy()).max() <= 1e8  # clipped by the guard


def test_nan_guard_recovers_from_an_invalid_iterate():
    """f is NaN outside |y| < 1; the first iterate from the init 2.0 is NaN, the guard resets it to 0."""
    f = lambda y, t, p: -y + 0.1 * md.sqrt(1.0 - y * y)
    grid = t64(np.linspace(0.0, 1.0, 11))
    init = md.full((11, 1), 2.0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ys, stats = deer_odeint(f, t64([0.5]), grid, None, init=init, return_stats=True, **TIGHT)
    assert stats.converged
    ref = sequential_odeint(f, t64([0.5]), grid, None)
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), atol=1e-10)


# ----------------------------------------------------------------------------- errors
GRID = np.linspace(0.0, 1.0, 5)


@pytest.mark.parametrize(
    "name, value",
    [
        ("y0", [np.nan, 0.0]),
        ("y0", [np.inf, 0.0]),
        ("param", np.nan),
        ("ts", [0.0, np.nan, 1.0]),
        ("init", None),
    ],
)
def test_nan_inputs_raise(name, value):
    y0, ts, params, init = t64([1.0, 0.0]), t64(GRID), pend_params(), None
    if name == "y0":
        y0 = t64(value)
    elif name == "param":
        params["g"] = t64(value)
    elif name == "ts":
        ts = t64(value)
    else:
        init = md.full((5, 2), float("nan"), dtype="float64")
    with pytest.raises(ValueError, match="NaN"):
        deer_odeint(pendulum, y0, ts, params, init=init)


@pytest.mark.parametrize(
    "ts, match",
    [
        ([0.0, 0.5, 0.4, 1.0], "strictly monotone"),
        ([0.0, 0.5, 0.5, 1.0], "strictly monotone"),
        ([[0.0, 1.0]], r"1-D grid.*\(1, 2\)"),
        ([0.0], r"at least 2 time points.*\(1,\)"),
    ],
)
def test_bad_time_grids(ts, match):
    with pytest.raises(ValueError, match=match):
        deer_odeint(pendulum, t64([1.0, 0.0]), t64(ts), pend_params())
    with pytest.raises(ValueError, match=match):
        sequential_odeint(pendulum, t64([1.0, 0.0]), t64(ts), pend_params())


def test_shape_and_dtype_errors():
    p = pend_params()
    with pytest.raises(md.ShapeError, match=r"state of shape \(3,\).*got \(2,\)"):
        deer_odeint(pendulum, t64([1.0, 0.0, 0.0]), t64(GRID), p)  # f returns 2 values for 3 states
    with pytest.raises(md.ShapeError, match=r"y0 must have shape \(\*batch, n\).*\(\)"):
        deer_odeint(pendulum, t64(1.0), t64(GRID), p)
    with pytest.raises(md.DTypeError, match="y0 must be floating"):
        deer_odeint(pendulum, md.tensor([1, 0]), t64(GRID), p)
    with pytest.raises(md.ShapeError, match=r"init must have shape.*\(5, 2\).*\(4, 2\)"):
        deer_odeint(pendulum, t64([1.0, 0.0]), t64(GRID), p, init=md.zeros((4, 2), dtype="float64"))
    with pytest.raises(md.DTypeError, match="float32"):
        deer_odeint(lambda y, t, p: (y * 2).astype("float32"), t64([1.0, 0.0]), t64(GRID), None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(expm="pade"), "unknown expm 'pade'"),
        (dict(on_failure="ignore"), "unknown on_failure 'ignore'"),
        (dict(max_iter=0), "max_iter must be an integer >= 1"),
        (dict(atol=-1.0), "atol must be"),
        (dict(rtol=float("nan")), "rtol must be"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        deer_odeint(pendulum, t64([1.0, 0.0]), t64(GRID), pend_params(), **kwargs)


def test_not_callable_and_untracked_tensors():
    with pytest.raises(TypeError, match="f must be callable"):
        deer_odeint("f", t64([1.0]), t64(GRID))
    with pytest.raises(TypeError, match="time grid ts"):
        md.grad(lambda ts: md.sum(deer_odeint(pendulum, t64([1.0, 0.0]), ts, pend_params())))(t64(GRID))

    def closes_over(k):  # k reaches f by closure, not through params: DEER refuses
        return md.sum(deer_odeint(lambda y, t, p: -k * y, t64([1.0]), t64(GRID)))

    with pytest.raises(TypeError, match="closes over a tensor being differentiated"):
        md.grad(closes_over)(t64(1.0))


def test_vmap_over_initial_states_and_parameters():
    """vmap runs DEER once per example (the primitive has no batching rule): same as the batch axis."""
    grid = t64(np.linspace(0.0, 1.0, 11))
    f = lambda y, t, k: -k * y + md.sin(t)
    Y0 = t64([[1.0], [2.0], [-0.5]])
    mapped = md.vmap(lambda y0: deer_odeint(f, y0, grid, t64(1.3), **TIGHT))(Y0)
    batched = deer_odeint(f, Y0, grid, t64(1.3), **TIGHT)
    np.testing.assert_allclose(mapped.numpy(), batched.numpy(), atol=1e-12)
    ks = t64([0.5, 2.0])
    per_k = md.vmap(md.grad(lambda k: deer_odeint(f, t64([1.0]), grid, k, **TIGHT)[-1, 0]))(ks)
    one = [
        md.grad(lambda k: sequential_odeint(f, t64([1.0]), grid, k)[-1, 0])(k) for k in (t64(0.5), t64(2.0))
    ]
    np.testing.assert_allclose(per_k.numpy(), [g.item() for g in one], rtol=1e-9)


def test_the_neural_ode_example_trains(capsys):
    """Smoke run of examples/neural_ode.py (a few steps): the loss goes down, DEER converges."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "neural_ode.py"
    spec = importlib.util.spec_from_file_location("neural_ode_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, target, fitted, losses, iterations = module.train(steps=6, log_every=100)
    assert fitted.shape == target.shape and losses[-1] < losses[0]
    assert "converged True" in capsys.readouterr().out
