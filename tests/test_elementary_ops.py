"""tan, arcsin, arccos, arctan, arctan2, sinh, cosh, erf and std beyond the property battery (which
holds their rules against finite differences and each other in tests/test_primitives.py): values
against NumPy/SciPy, dtypes, the NumPy/SciPy spellings, std's NumPy parameters and its zero-variance
convention at every order, and the domain edges where the derivative is infinite or undefined."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special

import minidiff as md

X = np.array([-0.9, -0.3, 0.0, 0.4, 0.8])
UNARY = {
    "tan": (md.tan, np.tan, lambda x: 1 / np.cos(x) ** 2),
    "arcsin": (md.arcsin, np.arcsin, lambda x: 1 / np.sqrt(1 - x * x)),
    "arccos": (md.arccos, np.arccos, lambda x: -1 / np.sqrt(1 - x * x)),
    "arctan": (md.arctan, np.arctan, lambda x: 1 / (1 + x * x)),
    "sinh": (md.sinh, np.sinh, np.cosh),
    "cosh": (md.cosh, np.cosh, np.sinh),
    "erf": (md.erf, scipy.special.erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_values_derivatives_and_dtypes(name):
    ours, ref, deriv = UNARY[name]
    np.testing.assert_allclose(ours(md.tensor(X)).numpy(), ref(X), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(md.grad(lambda t: ours(t).sum())(md.tensor(X)).numpy(), deriv(X), rtol=1e-13)
    x32 = md.tensor(X, dtype="float32")
    assert ours(x32).dtype == np.float32
    assert md.grad(lambda t: ours(t).sum())(x32).dtype == np.float32
    assert ours.__name__ == name and ">>>" in ours.__doc__


def test_arctan2_values_quadrants_and_derivatives():
    y = np.array([1.0, 1.0, -1.0, -1.0, 0.5])
    x = np.array([1.0, -1.0, -1.0, 1.0, 2.0])
    np.testing.assert_allclose(md.arctan2(md.tensor(y), md.tensor(x)).numpy(), np.arctan2(y, x), rtol=1e-15)
    gy, gx = md.grad(lambda a, b: md.arctan2(a, b).sum(), argnums=(0, 1))(md.tensor(y), md.tensor(x))
    np.testing.assert_allclose(gy.numpy(), x / (x * x + y * y), rtol=1e-14)
    np.testing.assert_allclose(gx.numpy(), -y / (x * x + y * y), rtol=1e-14)
    # numbers on one side, broadcasting on the other
    assert md.arctan2(md.tensor([[1.0], [2.0]]), md.tensor([1.0, 2.0, 3.0])).shape == (2, 3)
    np.testing.assert_allclose(md.arctan2(1.0, md.tensor(1.0)).item(), np.pi / 4)


def test_numpy_and_scipy_spellings_differentiate():
    x = md.tensor(X * 0.5)
    for np_fn, md_fn in [(np.tan, md.tan), (np.arcsin, md.arcsin), (np.arccos, md.arccos),
                         (np.arctan, md.arctan), (np.sinh, md.sinh), (np.cosh, md.cosh),
                         (scipy.special.erf, md.erf)]:  # fmt: skip
        got = md.grad(lambda t, f=np_fn: np.sum(f(t)))(x)
        want = md.grad(lambda t, f=md_fn: md.sum(f(t)))(x)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=0)
    g = md.grad(lambda t: np.sum(np.arctan2(t, 2.0)))(x)
    np.testing.assert_allclose(g.numpy(), 2.0 / (4.0 + X * X * 0.25), rtol=1e-14)
    np.testing.assert_allclose(np.std(md.tensor(X), ddof=1).item(), np.std(X, ddof=1), rtol=1e-15)


# ----------------------------------------------------------------------------- std
A = np.random.default_rng(3).normal(size=(3, 4, 5))


@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-1, -3), ()])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("ddof", [0, 1, 2])
def test_std_matches_numpy(axis, keepdims, ddof):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.std(A, axis=axis, keepdims=keepdims, ddof=ddof)
        got = md.std(md.tensor(A), axis=axis, keepdims=keepdims, ddof=ddof)
        method = md.tensor(A).std(axis=axis, keepdims=keepdims, ddof=ddof)
    assert got.shape == want.shape and method.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13)  # (nan and inf where NumPy has them)
    np.testing.assert_allclose(method.numpy(), want, rtol=1e-13)


def test_std_gradient_closed_form():
    x = A[0, 0]
    n, ddof = x.size, 1
    s = np.std(x, ddof=ddof)
    g = md.grad(lambda t: md.std(t, ddof=ddof))(md.tensor(x))
    np.testing.assert_allclose(g.numpy(), (x - x.mean()) / ((n - ddof) * s), rtol=1e-13)


def test_std_at_zero_variance_has_derivative_zero_at_every_order_without_warnings():
    """The convention: 0, the minimum-norm subgradient, in both modes and at second order; no NaN,
    no divide-by-zero warning from the untaken sqrt branch (the double where)."""
    x = md.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 3.0, 1.0, 3.0]])
    v = md.tensor(np.random.default_rng(0).normal(size=(2, 4)))

    def f(t):
        return md.std(t, axis=1).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = md.grad(f)(x).numpy()
        tangent = md.jvp(lambda t: md.std(t, axis=1), (x,), (v,))[1].numpy()
        hv = [h.numpy() for mode in md.transforms.HVP_MODES for h in md.hvp(f, (x,), (v,), mode=mode)]
    np.testing.assert_array_equal(g[0], 0.0)
    np.testing.assert_allclose(g[1], [-0.25, 0.25, -0.25, 0.25], rtol=1e-15)  # (x - mean) / (n std)
    assert tangent[0] == 0.0
    for h in hv:
        np.testing.assert_array_equal(h[0], 0.0)
        assert np.all(np.isfinite(h))


def test_var_with_ddof_above_the_count_is_inf_as_numpy():
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert md.var(md.tensor([1.0, 2.0]), ddof=3).item() == np.var([1.0, 2.0], ddof=3) == np.inf


# ----------------------------------------------------------------------------- domain edges
def test_infinite_and_undefined_derivatives_are_reported_not_invented():
    with np.errstate(divide="ignore", invalid="ignore"):
        assert md.grad(md.arcsin)(md.tensor(1.0)).item() == np.inf
        assert md.grad(md.arccos)(md.tensor(-1.0)).item() == -np.inf
        assert np.isnan(md.grad(md.arcsin)(md.tensor(1.5)).item())
        gy, gx = md.grad(md.arctan2, argnums=(0, 1))(md.tensor(0.0), md.tensor(0.0))
    assert np.isnan(gy.item()) and np.isnan(gx.item())
