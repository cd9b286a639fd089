"""Parallel affine scans (``minidiff.deer.scan``) against a sequential NumPy loop, float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff.deer import SCAN_METHODS, affine_scan, associative_scan

EXACT = dict(rtol=1e-12, atol=1e-12)  # float64: only the order of the roundings differs
METHODS = SCAN_METHODS + ("auto",)


def loop(A, b, y0, diagonal):
    """The reference: y_i = A_i y_{i-1} + b_i, one step at a time, in NumPy."""
    batch = b.shape[:-2]
    A = np.broadcast_to(A, batch + A.shape[A.ndim - (2 if diagonal else 3) :])
    y = np.broadcast_to(y0, batch + b.shape[-1:]).copy()
    out = []
    for i in range(b.shape[-2]):
        Ai = A[..., i, :] if diagonal else A[..., i, :, :]
        y = (Ai * y if diagonal else np.einsum("...ij,...j->...i", Ai, y)) + b[..., i, :]
        out.append(y)
    return np.stack(out, axis=-2)


def draw(rng, batch, T, n, diagonal, scale=0.6):
    A = rng.normal(size=batch + (T, n) + (() if diagonal else (n,))) * scale / np.sqrt(n)
    return A, rng.normal(size=batch + (T, n)), rng.normal(size=batch + (n,))


def t64(a):
    return md.tensor(np.asarray(a, dtype=np.float64))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("T", [1, 2, 5, 33, 100])
def test_scan_matches_the_sequential_loop(rng, method, diagonal, T):
    A, b, y0 = draw(rng, (3,), T, 4, diagonal)
    y = affine_scan(t64(A), t64(b), t64(y0), diagonal=diagonal, method=method)
    assert y.shape == (3, T, 4) and y.dtype == md.float64
    np.testing.assert_allclose(y.numpy(), loop(A, b, y0, diagonal), **EXACT)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    T=st.integers(1, 70),
    n=st.integers(1, 5),
    diagonal=st.booleans(),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**31),
)
def test_scan_any_shape(batch, T, n, diagonal, method, seed):
    rng = np.random.default_rng(seed)
    A, b, y0 = draw(rng, batch, T, n, diagonal)
    y = affine_scan(t64(A), t64(b), t64(y0), diagonal=diagonal, method=method)
    np.testing.assert_allclose(y.numpy(), loop(A, b, y0, diagonal), **EXACT)


@pytest.mark.parametrize("method", METHODS)
def test_shared_A_and_y0_broadcast_over_the_batch_and_y0_defaults_to_zero(rng, method):
    A, b, _ = draw(rng, (), 9, 3, False)
    b = rng.normal(size=(2, 9, 3))
    y = affine_scan(t64(A), t64(b), method=method)  # A without batch axes, y0 = None
    np.testing.assert_allclose(y.numpy(), loop(A, b, np.zeros(3), False), **EXACT)


def test_float32_is_kept(rng):
    A, b, y0 = draw(rng, (2,), 40, 3, False)
    y = affine_scan(*(md.tensor(a.astype(np.float32)) for a in (A, b, y0)))
    assert y.dtype == md.float32
    np.testing.assert_allclose(y.numpy(), loop(A, b, y0, False), rtol=1e-4, atol=1e-5)


def test_a_contracting_recurrence_over_a_long_horizon(rng):
    """Blocked and log scans at T = 5000 (several blocks, padding) still agree with the loop."""
    A, b, y0 = draw(rng, (2,), 5000, 2, False, scale=0.9)
    ref = loop(A, b, y0, False)
    for method in SCAN_METHODS:
        y = affine_scan(t64(A), t64(b), t64(y0), method=method)
        np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("method", SCAN_METHODS)
def test_scan_derivatives_to_second_order(rng, diagonal, method):
    A, b, y0 = draw(rng, (2,), 6, 3, diagonal)
    f = lambda A, b, y0: affine_scan(A, b, y0, diagonal=diagonal, method=method)
    md.testing.check_grads(f, (t64(A), t64(b), t64(y0)), order=2, rtol=1e-6, atol=1e-8)


def test_scan_vjp_with_a_shared_A(rng):
    A, _, y0 = draw(rng, (), 5, 2, False)
    b = rng.normal(size=(3, 5, 2))
    md.testing.check_grads(lambda A, b, y0: affine_scan(A, b, y0), (t64(A), t64(b), t64(y0)), order=1)


def test_scan_error_paths(rng):
    A, b, y0 = draw(rng, (2,), 5, 3, False)
    with pytest.raises(md.ShapeError, match=r"affine_scan: A must have shape"):
        affine_scan(t64(A[..., :2]), t64(b))
    with pytest.raises(md.ShapeError, match=r"diagonal=True"):
        affine_scan(t64(A), t64(b), diagonal=True)
    with pytest.raises(md.ShapeError, match=r"b must have shape"):
        affine_scan(t64(A), t64(b[0, 0]))
    with pytest.raises(md.ShapeError, match=r"y0 must have shape"):
        affine_scan(t64(A), t64(b), t64(y0[:, :2]))
    with pytest.raises(md.ShapeError, match=r"batch axes \(4,\)"):
        affine_scan(t64(np.ones((4, 5, 3, 3))), t64(b))
    with pytest.raises(md.ShapeError, match=r"y0's batch axes"):
        affine_scan(t64(A), t64(b), t64(np.ones((5, 3))))
    with pytest.raises(md.DTypeError, match=r"y0 has dtype float32"):
        affine_scan(t64(A), t64(b), md.tensor(y0.astype(np.float32)))
    with pytest.raises(ValueError, match=r"unknown method 'fast'"):
        affine_scan(t64(A), t64(b), method="fast")
    with pytest.raises(TypeError, match=r"A must be a minidiff Tensor"):
        affine_scan(A, t64(b))


def test_associative_scan_cumulative_sum_and_pytrees(rng):
    x = rng.normal(size=(2, 13, 3))
    out = associative_scan(lambda a, b: a + b, t64(x), axis=1)
    np.testing.assert_allclose(out.numpy(), np.cumsum(x, axis=1), **EXACT)
    # affine maps as a pytree (a, b) of diagonals: the same recurrence as affine_scan
    a, b = rng.normal(size=(11, 2)) * 0.5, rng.normal(size=(11, 2))
    comp = lambda e, la: (la[0] * e[0], la[0] * e[1] + la[1])
    _, ys = associative_scan(comp, (t64(a), t64(b)))
    np.testing.assert_allclose(ys.numpy(), loop(a, b, np.zeros(2), True), **EXACT)


def test_associative_scan_errors():
    with pytest.raises(md.ShapeError, match="different lengths"):
        associative_scan(lambda a, b: a, (md.zeros(3), md.zeros(4)))
    with pytest.raises(md.ShapeError, match="axis 2 out of range"):
        associative_scan(lambda a, b: a, md.zeros(3), axis=2)
    with pytest.raises(ValueError, match="no tensors"):
        associative_scan(lambda a, b: a, ())
    with pytest.raises(md.ShapeError, match="fn returned structure"):
        associative_scan(lambda a, b: (a, b), md.zeros(3))


@pytest.mark.parametrize("diagonal", [False, True])
def test_vmap_over_the_scan_is_one_batched_scan(rng, diagonal):
    """The batching rule: mapping over b, over A, or over y0 equals one scan per example."""
    A, b, y0 = draw(rng, (3,), 6, 2, diagonal)
    bs = rng.normal(size=(4, 3, 6, 2))
    As = rng.normal(size=(4,) + A.shape) * 0.5
    y0s = rng.normal(size=(4, 2))
    f = lambda A, b, y0: affine_scan(A, b, y0, diagonal=diagonal)
    cases = [
        (md.vmap(lambda b: f(t64(A), b, t64(y0)))(t64(bs)), [loop(A, bk, y0, diagonal) for bk in bs]),
        (md.vmap(lambda A: f(A, t64(b), t64(y0)))(t64(As)), [loop(Ak, b, y0, diagonal) for Ak in As]),
        (md.vmap(lambda y: f(t64(A), t64(b), y))(t64(y0s)), [loop(A, b, yk, diagonal) for yk in y0s]),
    ]
    for got, want in cases:
        np.testing.assert_allclose(got.numpy(), np.stack(want), **EXACT)
