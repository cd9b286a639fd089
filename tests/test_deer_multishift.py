"""DEER for multi-shift recurrences against the sequential loop, the explicit P = 1 rewrite on the
stacked state, finite differences, and deer_rnn itself at P = 1; failure modes and errors."""

from __future__ import annotations

import numpy as np
import pytest

import minidiff as md
from minidiff.deer import (
    DeerConvergenceError,
    DeerConvergenceWarning,
    deer_rnn,
    deer_rnn_multishift,
    sequential_rnn_multishift,
)

TIGHT = dict(atol=1e-12, rtol=0.0)  # solver tolerances for derivative checks (float64)
OUT_TOL = dict(rtol=1e-7, atol=1e-8)  # default solver tolerances, float64 (quadratic convergence)
GRAD_TOL = dict(rtol=1e-8, atol=1e-10)  # DEER at TIGHT against the tape through the loop


def cell(ys, x, p):
    """A P-shift tanh cell: y_i = tanh(Σ_k y_{i-1-k} W_k + x U + b)."""
    acc = x @ p["U"] + p["b"]
    for k, y in enumerate(ys):
        acc = acc + y @ p["W"][k]
    return md.tanh(acc)


def setup(P, batch=(2,), T=9, m=3, n=2, seed=0):
    rng = np.random.default_rng(seed)
    p = {
        "W": md.tensor(0.6 / P * rng.normal(size=(P, n, n))),
        "U": md.tensor(0.5 * rng.normal(size=(m, n))),
        "b": md.tensor(0.1 * rng.normal(size=(n,))),
    }
    xs = md.tensor(rng.normal(size=batch + (T, m)))
    y_init = md.tensor(0.3 * rng.normal(size=batch + (P, n)))
    return p, xs, y_init


def oscillator(ys, x, p):
    """A damped nonlinear oscillator, y_i = 2y_{i-1} − y_{i-2} + h²·g(y_{i-1}, x_i) (n = 1)."""
    h2, k, c = 0.01, p[0], p[1]
    return 2 * ys[0] - ys[1] + h2 * (-k * md.sin(ys[0]) - c * (ys[0] - ys[1]) / 0.1 + x)


@pytest.mark.parametrize("P", [1, 2, 3, 5])
@pytest.mark.parametrize("T", [1, 4, 30])
def test_outputs_match_the_sequential_loop(P, T):
    p, xs, y_init = setup(P, T=T)
    ys, stats = deer_rnn_multishift(cell, y_init, xs, p, shifts=P, return_stats=True)
    assert stats.converged and 1 <= stats.iterations <= 30
    ref = sequential_rnn_multishift(cell, y_init, xs, p, shifts=P)
    assert ys.shape == ref.shape == xs.shape[:-1] + (2,) and ys.dtype == ref.dtype == md.float64
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), **OUT_TOL)


def test_second_order_oscillator_matches_the_loop_and_a_hand_loop():
    T = 60
    xs = md.tensor(np.sin(np.linspace(0.0, 6.0, T)).reshape(T, 1))
    p, y_init = md.tensor([4.0, 0.5]), md.tensor([[1.0], [1.02]])
    ys = deer_rnn_multishift(oscillator, y_init, xs, p, shifts=2, **TIGHT)
    y2, y1, hand = 1.0, 1.02, []  # plain floats: y_{i-2}, y_{i-1}
    for i in range(T):
        x = float(xs.numpy()[i, 0])
        y = 2 * y1 - y2 + 0.01 * (-4.0 * np.sin(y1) - 0.5 * (y1 - y2) / 0.1 + x)
        hand.append(y)
        y2, y1 = y1, y
    np.testing.assert_allclose(ys.numpy()[:, 0], hand, rtol=1e-10, atol=1e-12)


def explicit_stacked(ys_cell, P, n):
    """The P = 1 rewrite written out by hand (not through stacked_cell): z = (y_i, …, y_{i-P+1})."""

    def F(z, x, p):
        parts = [z[..., k * n : (k + 1) * n] for k in range(P)]
        return md.concatenate([ys_cell(tuple(parts), x, p)] + parts[:-1], axis=-1)

    return F


@pytest.mark.parametrize("P", [2, 3])
def test_matches_deer_rnn_on_the_explicit_stacked_rewrite(P):
    p, xs, y_init = setup(P, T=12)
    z0 = md.concatenate([y_init[..., P - 1 - k, :] for k in range(P)], axis=-1)
    zs = deer_rnn(explicit_stacked(cell, P, 2), z0, xs, p, **TIGHT)
    ys = deer_rnn_multishift(cell, y_init, xs, p, shifts=P, **TIGHT)
    np.testing.assert_allclose(ys.numpy(), zs.numpy()[..., :2], rtol=1e-12, atol=1e-13)
    # and the rewrite's shifted copies are the earlier states
    np.testing.assert_allclose(zs.numpy()[..., 1:, 2:4], ys.numpy()[..., :-1, :], rtol=1e-12, atol=1e-13)
    # gradients of the two agree too
    loss_ms = lambda p: md.sum(md.sin(deer_rnn_multishift(cell, y_init, xs, p, shifts=P, **TIGHT)))
    loss_z = lambda p: md.sum(md.sin(deer_rnn(explicit_stacked(cell, P, 2), z0, xs, p, **TIGHT)[..., :2]))
    for a, b in zip(md.pytree.flatten(md.grad(loss_ms)(p))[0], md.pytree.flatten(md.grad(loss_z)(p))[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def test_one_shift_equals_deer_rnn():
    p, xs, y_init = setup(1, T=15)
    one = lambda y, x, p: cell((y,), x, p)
    ys, stats = deer_rnn_multishift(cell, y_init, xs, p, shifts=1, return_stats=True)
    ref, ref_stats = deer_rnn(one, y_init[..., 0, :], xs, p, return_stats=True)
    np.testing.assert_array_equal(ys.numpy(), ref.numpy())
    assert stats.iterations == ref_stats.iterations
    g = md.grad(lambda p, y: md.sum(deer_rnn_multishift(cell, y, xs, p, shifts=1) ** 2), argnums=(0, 1))(
        p, y_init
    )
    h = md.grad(lambda p, y: md.sum(deer_rnn(one, y[..., 0, :], xs, p) ** 2), argnums=(0, 1))(p, y_init)
    for a, b in zip(md.pytree.flatten(g)[0], md.pytree.flatten(h)[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("P", [2, 3])
def test_gradients_match_the_tape_through_the_loop(P):
    p, xs, y_init = setup(P, T=10)
    loss = lambda ys: md.sum(md.sin(ys) * md.arange(ys.shape[-2], dtype="float64").reshape(-1, 1))
    args = (p, xs, y_init)
    got = md.grad(
        lambda p, xs, y: loss(deer_rnn_multishift(cell, y, xs, p, shifts=P, **TIGHT)), argnums=(0, 1, 2)
    )(*args)
    want = md.grad(
        lambda p, xs, y: loss(sequential_rnn_multishift(cell, y, xs, p, shifts=P)), argnums=(0, 1, 2)
    )(*args)
    for a, b in zip(md.pytree.flatten(got)[0], md.pytree.flatten(want)[0]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), **GRAD_TOL)


@pytest.mark.parametrize("P", [2, 3])
def test_check_grads_first_order(P):
    """Finite differences and <Jᵀu, v> = <u, Jv> in forward and reverse mode."""
    p, xs, y_init = setup(P, batch=(), T=6)
    md.testing.check_grads(
        lambda p, xs, y: deer_rnn_multishift(cell, y, xs, p, shifts=P, **TIGHT),
        (p, xs, y_init),
        order=1,
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("mode", ["fwd-over-rev", "rev-over-rev"])
def test_hvp_matches_the_loop(mode):
    """Second order comes for free too: deer_rnn's rules are differentiable."""
    p, xs, y_init = setup(2, batch=(), T=7)
    v = {k: md.tensor(np.random.default_rng(3).normal(size=t.shape)) for k, t in p.items()}
    run = lambda solve: lambda p: md.sum(md.sin(solve(cell, y_init, xs, p, shifts=2)))
    (got,) = md.hvp(run(lambda *a, **k: deer_rnn_multishift(*a, **k, **TIGHT)), (p,), (v,), mode=mode)
    (want,) = md.hvp(run(sequential_rnn_multishift), (p,), (v,), mode="fwd-over-rev")
    for a, b in zip(md.pytree.flatten(got)[0], md.pytree.flatten(want)[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7, atol=1e-9)


def test_float32_matches_the_loop():
    p, xs, y_init = setup(3, T=20)
    p32 = {k: t.astype("float32") for k, t in p.items()}
    xs32, y32 = xs.astype("float32"), y_init.astype("float32")
    ys = deer_rnn_multishift(cell, y32, xs32, p32, shifts=3)
    ref = sequential_rnn_multishift(cell, y32, xs32, p32, shifts=3)
    assert ys.dtype == md.float32
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_oscillator_gradient_matches_the_loop():
    T = 40
    xs = md.tensor(np.cos(np.linspace(0.0, 4.0, T)).reshape(T, 1))
    p, y_init = md.tensor([3.0, 0.4]), md.tensor([[0.5], [0.55]])
    got = md.grad(lambda p: md.sum(deer_rnn_multishift(oscillator, y_init, xs, p, shifts=2, **TIGHT) ** 2))(p)
    want = md.grad(lambda p: md.sum(sequential_rnn_multishift(oscillator, y_init, xs, p, shifts=2) ** 2))(p)
    np.testing.assert_allclose(got.numpy(), want.numpy(), **GRAD_TOL)


def test_broadcast_y_init_and_warm_start():
    p, xs, y_init = setup(2, batch=(3,), T=8)
    shared = y_init[0]  # (P, n): broadcast over the batch
    ys = deer_rnn_multishift(cell, shared, xs, p, shifts=2)
    ref = sequential_rnn_multishift(cell, shared, xs, p, shifts=2)
    np.testing.assert_allclose(ys.numpy(), ref.numpy(), **OUT_TOL)
    warm, stats = deer_rnn_multishift(cell, shared, xs, p, shifts=2, init=ref, return_stats=True)
    assert stats.converged and stats.iterations == 0  # the exact solution is accepted without a step
    np.testing.assert_allclose(warm.numpy(), ref.numpy(), **OUT_TOL)


def test_non_convergence_warns_or_raises():
    p, xs, y_init = setup(3, T=30)
    with pytest.warns(DeerConvergenceWarning, match="did not converge"):
        _, stats = deer_rnn_multishift(cell, y_init, xs, p, shifts=3, max_iter=1, return_stats=True)
    assert not stats.converged
    with pytest.raises(DeerConvergenceError, match="did not converge"):
        deer_rnn_multishift(cell, y_init, xs, p, shifts=3, max_iter=1, on_failure="raise")


@pytest.mark.parametrize("fn", [deer_rnn_multishift, sequential_rnn_multishift])
def test_errors(fn):
    p, xs, y_init = setup(2, T=5)
    with pytest.raises(md.ShapeError, match=r"y_init must have shape \(\*batch, shifts, n\)"):
        fn(cell, y_init, xs, p, shifts=3)  # P rows expected, 2 given
    with pytest.raises(md.ShapeError, match="y_init must have shape"):
        fn(cell, y_init[..., 0, :][0], xs, p, shifts=1)  # a plain (n,) state
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=f"{fn.__name__}: shifts must be"):
            fn(cell, y_init, xs, p, shifts=bad)
    with pytest.raises(TypeError, match="y_init must be a minidiff Tensor"):
        fn(cell, y_init.numpy(), xs, p, shifts=2)
    with pytest.raises(md.ShapeError, match="does not match the batch axes"):
        fn(cell, md.zeros((4, 2, 2), dtype="float64"), xs, p, shifts=2)
    with pytest.raises(md.DTypeError, match=f"{fn.__name__}: y_init has dtype float32 but xs has float64"):
        fn(cell, y_init.astype("float32"), xs, p, shifts=2)


def test_errors_of_the_cell_and_init():
    p, xs, y_init = setup(2, T=5)
    with pytest.raises(md.ShapeError, match="deer_rnn_multishift: the cell returned"):
        deer_rnn_multishift(lambda ys, x, p: md.concatenate(ys, axis=-1), y_init, xs, p, shifts=2)
    with pytest.raises(md.ShapeError, match="init must have the trajectory's shape"):
        deer_rnn_multishift(cell, y_init, xs, p, shifts=2, init=md.zeros((2, 4, 2), dtype="float64"))
