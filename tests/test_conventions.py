"""The documented derivatives at points where the math leaves them undefined (kinks, ties, bounds, 0).

The conventions (listed in ``minidiff/primitives/elementwise.py``): relu'(0) = 0, abs'(0) = 0,
maximum/minimum ties ½ each, max/min reduction ties shared evenly, clip' = 1 on the closed interval,
d/dx x**y = 0 where y = 0, d/dy x**y = 0 where x <= 0, sqrt'(0) = +inf.  Each is checked

* at first order in every way a user can ask: ``jvp``, ``vjp``, ``grad``, ``jacfwd``/``jacrev`` and
  the tape style (``backward()``);
* at second order in every nesting: ``hvp`` fwd-over-rev, rev-over-fwd and rev-over-rev, grad of
  grad, and forward over forward;
* on hand-picked points (the exact values) and on drawn tie-heavy inputs (the drawn property tests
  of ``tests/opspecs.py`` also draw such points where the convention equals the central difference).

The expected derivatives are exact small rationals: only rounding is allowed (``EXACT``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opspecs import TIES, hyp_settings, tensors

import minidiff as md
from minidiff.testing import strategies as mst

#: at the kinks the derivatives are exact small rationals (0, ½, 1/k, 2): only rounding allowed
EXACT = {np.dtype("float64"): dict(rtol=1e-12, atol=1e-12), np.dtype("float32"): dict(rtol=1e-6, atol=1e-6)}

dtypes = pytest.mark.parametrize("dtype", ["float64", "float32"])


def _np(x):
    return np.asarray(x.numpy() if isinstance(x, md.Tensor) else x, dtype=np.float64)


def assert_exact(got, want, dtype, what):
    g, w = _np(got), np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
    assert np.allclose(g, w, **EXACT[np.dtype(dtype)]), f"{what}: got {g.tolist()}, want {w.tolist()}"


# ----------------------------------------------------------------------------- every mode, both orders
def first_derivatives(f, x):
    """The gradient of ``s(x) = sum f(x)`` (for an elementwise ``f``: its derivative) in every
    first-order way: forward mode (``jacfwd``), reverse mode, and the tape style."""

    def s(z):
        return md.sum(f(z))

    out = {
        "jacfwd": md.jacfwd(s)(x),
        "jacrev": md.jacrev(s)(x),
        "vjp": md.vjp(f, x)[1](md.ones_like(f(x)))[0],
        "grad": md.grad(s)(x),
    }
    leaf = md.tensor(x.numpy(), requires_grad=True)
    s(leaf).backward()
    out["tape"] = leaf.grad
    return out


def second_derivatives(f, x):
    """``H·1`` for ``s(x) = sum f(x)`` (for an elementwise ``f``: its second derivative) in every
    nesting of the two modes."""
    ones = md.ones_like(x)

    def s(z):
        return md.sum(f(z))

    out = {mode: md.hvp(s, (x,), (ones,), mode=mode)[0] for mode in md.transforms.HVP_MODES}
    out["grad of grad"] = md.grad(lambda z: md.sum(md.grad(s)(z)))(x)
    out["jacfwd of grad"] = md.sum(md.jacfwd(md.grad(s))(x), axis=tuple(range(x.ndim, 2 * x.ndim)))
    return out


def check_all_modes(f, x, d1, d2, dtype, what):
    """``f' = d1`` and ``f'' = d2`` at ``x`` in every mode and nesting (and no NaN anywhere); for a
    reduction ``f``, ``d1`` and ``d2`` are the gradient and ``H·1`` of ``sum f``."""
    for how, got in first_derivatives(f, x).items():
        assert_exact(got, d1, dtype, f"{what}: first derivative by {how}")
    ones = md.ones_like(x)
    _, along = md.jvp(lambda z: md.sum(f(z)), (x,), (ones,))  # forward mode along 1: the sum of d1
    assert_exact(along, np.sum(d1), dtype, f"{what}: jvp along ones")
    for how, got in second_derivatives(f, x).items():
        assert_exact(got, d2, dtype, f"{what}: second derivative by {how}")
    _, curv = md.jvp(lambda z: md.jvp(lambda w: md.sum(f(w)), (z,), (ones,))[1], (x,), (ones,))
    assert_exact(curv, np.sum(d2), dtype, f"{what}: forward over forward (1ᵀ H 1)")


# ----------------------------------------------------------------------------- relu, abs, clip
@dtypes
def test_relu_at_zero_is_zero_in_every_mode_and_order(dtype):
    x = md.tensor([-1.0, 0.0, 2.0], dtype=dtype)
    check_all_modes(md.relu, x, [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], dtype, "relu")


@dtypes
def test_abs_at_zero_is_zero_in_every_mode_and_order(dtype):
    x = md.tensor([-1.0, 0.0, 2.0], dtype=dtype)
    check_all_modes(md.abs, x, [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0], dtype, "abs")


@dtypes
def test_clip_derivative_is_one_on_the_closed_interval(dtype):
    x = md.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=dtype)
    zero = [0.0] * 5
    check_all_modes(lambda z: md.clip(z, -1.0, 1.0), x, [0, 1, 1, 1, 0], zero, dtype, "clip [-1, 1]")
    check_all_modes(lambda z: md.clip(z, None, 0.0), x, [1, 1, 1, 0, 0], zero, dtype, "clip [, 0]")
    check_all_modes(lambda z: md.clip(z, 0.0, None), x, [0, 0, 1, 1, 1], zero, dtype, "clip [0, ]")
    # tensor bounds go through maximum/minimum: their tie halves make ½ at the bounds
    lo, hi = md.tensor(-1.0, dtype=dtype), md.tensor(1.0, dtype=dtype)
    check_all_modes(lambda z: md.clip(z, lo, hi), x, [0, 0.5, 1, 0.5, 0], zero, dtype, "clip tensor bounds")


# ----------------------------------------------------------------------------- ties
@dtypes
def test_maximum_minimum_ties_split_evenly_in_every_mode_and_order(dtype):
    x = md.tensor([1.0, 2.0, 3.0], dtype=dtype)
    y = md.tensor([1.0, 5.0, 0.0], dtype=dtype)
    zero = [0.0] * 3
    check_all_modes(lambda z: md.maximum(z, y), x, [0.5, 0, 1], zero, dtype, "maximum, first operand")
    check_all_modes(lambda z: md.maximum(x, z), y, [0.5, 1, 0], zero, dtype, "maximum, second operand")
    check_all_modes(lambda z: md.minimum(z, y), x, [0.5, 1, 0], zero, dtype, "minimum, first operand")
    check_all_modes(lambda z: md.minimum(x, z), y, [0.5, 0, 1], zero, dtype, "minimum, second operand")
    # maximum(x, x) = x: the halves add up to the full derivative
    check_all_modes(lambda z: md.maximum(z, z), x, [1, 1, 1], zero, dtype, "maximum(x, x)")


@dtypes
def test_a_broadcast_operand_tying_with_several_elements_gets_the_sum_of_its_halves(dtype):
    xs = md.tensor([2.0, 2.0, 1.0], dtype=dtype)
    s = md.tensor(2.0, dtype=dtype)
    # ½ + ½ from the two ties, 1 where it wins outright
    check_all_modes(lambda t: md.maximum(xs, t), s, 2.0, 0.0, dtype, "maximum with a broadcast scalar")


def _shares(x, sign=1.0):
    """Tie-sharing derivative of max (sign=1) or min (sign=-1) along the last axis: 1/k to k ties."""
    top = sign * np.max(sign * x, axis=-1, keepdims=True)
    return (x == top) / np.sum(x == top, axis=-1, keepdims=True)


@dtypes
@pytest.mark.parametrize("fn, sign", [(md.max, 1.0), (md.min, -1.0)], ids=["max", "min"])
def test_max_min_reduction_ties_share_evenly_in_every_mode_and_order(dtype, fn, sign):
    x = md.tensor([[1.0, 3.0, 3.0, 2.0], [4.0, 4.0, 4.0, 4.0]], dtype=dtype) * sign
    want = _shares(_np(x), sign)
    np.testing.assert_allclose(want[0], [0, 0.5, 0.5, 0])
    check_all_modes(lambda z: fn(z, axis=1), x, want, np.zeros((2, 4)), dtype, f"{fn.__name__}(axis=1)")
    whole = np.zeros((2, 4))
    whole[1] = 0.25  # the four tied extremes of the second row
    assert_exact(md.grad(fn)(x), whole, dtype, f"grad of {fn.__name__} over everything")
    assert_exact(md.jacfwd(fn)(x), whole, dtype, f"jacfwd of {fn.__name__} over everything")


# ----------------------------------------------------------------------------- power at 0
BASES = [0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
EXPONENTS = [0.0, 1.0, 2.0, 3.0, 2.5, 0.0]
#: d/dx x**y and d²/dx² at (x, y) above: 0 for y = 0 (also at x = 0), 1·0**0 = 1, 2x = 0 and 2, ...
DX = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
DXX = [0.0, 0.0, 2.0, 0.0, 0.0, 0.0]
#: d/dy x**y = x**y·log x: 0 at x = 0; 2**0·log 2 at the last point; d²/dy² = x**y·log² x
DY = [0.0, 0.0, 0.0, 0.0, 0.0, np.log(2.0)]
DYY = [0.0, 0.0, 0.0, 0.0, 0.0, np.log(2.0) ** 2]


@dtypes
def test_power_in_the_base_at_zero_in_every_mode_and_order(dtype):
    x, y = md.tensor(BASES, dtype=dtype), md.tensor(EXPONENTS, dtype=dtype)
    check_all_modes(lambda z: z**y, x, DX, DXX, dtype, "d/dx x**y")


@dtypes
def test_power_in_the_exponent_at_zero_base_in_every_mode_and_order(dtype):
    x, y = md.tensor(BASES, dtype=dtype), md.tensor(EXPONENTS, dtype=dtype)
    want_yy = np.array(DYY, dtype=np.float32 if dtype == "float32" else np.float64)
    check_all_modes(lambda z: x**z, y, DY, want_yy, dtype, "d/dy x**y")


@dtypes
def test_python_number_exponents_and_bases_follow_the_same_conventions(dtype):
    x = md.tensor([0.0, 0.0], dtype=dtype)
    check_all_modes(lambda z: z**0.0, x, [0, 0], [0, 0], dtype, "x**0.0")
    check_all_modes(lambda z: z**3.0, x, [0, 0], [0, 0], dtype, "x**3.0")
    y = md.tensor([1.0, 2.0], dtype=dtype)
    check_all_modes(lambda z: 0.0**z, y, [0, 0], [0, 0], dtype, "0.0**y")


@dtypes
def test_power_mixed_second_derivatives_agree_across_modes_away_from_the_singular_point(dtype):
    """∂²/∂x∂y of x**y: at (2, 0) it is 1/2 (= x**(y-1)); at x = 0 with y = 0, 2, 3 it is 0.  The
    point (0, 1), where it does not exist, is left out (see the module docstring of elementwise)."""
    x = md.tensor([0.0, 0.0, 0.0, 2.0], dtype=dtype)
    y = md.tensor([0.0, 2.0, 3.0, 0.0], dtype=dtype)

    def s(a, b):
        return md.sum(a**b)

    ones, zeros = md.ones_like(x), md.zeros_like(x)
    for mode in md.transforms.HVP_MODES:
        hx, hy = md.hvp(s, (x, y), (zeros, ones), mode=mode)  # (∂²/∂x∂y, ∂²/∂y²)
        assert_exact(hx, [0.0, 0.0, 0.0, 0.5], dtype, f"∂²/∂x∂y by {mode}")
        hx, hy = md.hvp(s, (x, y), (ones, zeros), mode=mode)  # (∂²/∂x², ∂²/∂y∂x)
        assert_exact(hy, [0.0, 0.0, 0.0, 0.5], dtype, f"∂²/∂y∂x by {mode}")
        assert_exact(hx, [0.0, 2.0, 0.0, 0.0], dtype, f"∂²/∂x² by {mode}")


@pytest.mark.parametrize("mode", md.transforms.HVP_MODES)
def test_no_nan_leaks_through_where_around_power(mode):
    """The classic where-NaN trap: the untaken branch is differentiated with a zero cotangent, so an
    infinite derivative there would give 0·inf = NaN.  The power rules never produce one at the
    conventions' points: ``where(x > 0, x**y, 0)`` has finite derivatives at x = 0 for y = 0, 1, 2."""
    x = md.tensor([0.0, 0.0, 0.0, 1.5])
    y = md.tensor([0.0, 1.0, 2.0, 2.0])

    def s(a, b):
        return md.sum(md.where(a > 0, a**b, 0.0) + md.where(b > 0, a**b, 0.0))

    g = md.grad(s, argnums=(0, 1))(x, y)
    h = md.hvp(s, (x, y), (md.ones_like(x), md.ones_like(y)), mode=mode)
    for what, t in [("grad x", g[0]), ("grad y", g[1]), ("H·v x", h[0]), ("H·v y", h[1])]:
        assert np.all(np.isfinite(_np(t))), f"{what} ({mode}): {t.tolist()}"


# ----------------------------------------------------------------------------- sqrt at 0
@dtypes
def test_sqrt_derivative_at_zero_is_plus_infinity_in_both_modes(dtype):
    """sqrt'(0) = +inf, as NumPy's limit and JAX; the double-where idiom keeps a guarded sqrt finite."""
    x = md.tensor([0.0, 4.0], dtype=dtype)
    ones = md.ones_like(x)
    leaf = md.tensor(x.numpy(), requires_grad=True)
    with np.errstate(divide="ignore"):
        md.sum(md.sqrt(leaf)).backward()
        ways = {
            "jvp": md.jvp(md.sqrt, (x,), (ones,))[1],  # (a basis tangent would give 0·inf = NaN)
            "vjp": md.vjp(md.sqrt, x)[1](ones)[0],
            "grad": md.grad(lambda z: md.sum(md.sqrt(z)))(x),
            "tape": leaf.grad,
        }
    for how, got in ways.items():
        assert _np(got)[0] == np.inf and np.isclose(_np(got)[1], 0.25), (how, got)

    def guarded(z):  # sqrt(x) for x > 0, else 0: the untaken branch sees a safe argument
        return md.where(z > 0, md.sqrt(md.where(z > 0, z, 1.0)), 0.0)

    check_all_modes(guarded, x, [0.0, 0.25], [0.0, -1 / 32], dtype, "double-where sqrt")


# ----------------------------------------------------------------------------- drawn tie-heavy inputs
def _diag(d):
    n = d.size
    return (np.eye(n) * d.reshape(-1)).reshape(d.shape + d.shape)


def _share(x, y):
    return np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))


def _max_jacobian(x, sign=1.0):
    """The tie-sharing Jacobian of max (sign=1) or min (sign=-1) along axis 1 of a 2-D array."""
    share = _shares(x, sign)
    jac = np.zeros((x.shape[0],) + x.shape)
    for i in range(x.shape[0]):
        jac[i, i] = share[i]
    return jac


KINK_OPS = {
    # name: (f, expected Jacobian from the convention, number of inputs)
    "relu": (md.relu, lambda x: _diag((x > 0).astype(float)), 1),
    "abs": (md.abs, lambda x: _diag(np.sign(x)), 1),
    "clip": (lambda x: md.clip(x, -0.5, 0.5), lambda x: _diag(((x >= -0.5) & (x <= 0.5)).astype(float)), 1),
    "maximum_x": (md.maximum, lambda x, y: _diag(_share(x, y)), 2),
    "maximum_y": (lambda x, y: md.maximum(y, x), lambda x, y: _diag(_share(x, y)), 2),
    "minimum_x": (md.minimum, lambda x, y: _diag(_share(y, x)), 2),
    "max_axis": (lambda x: md.max(x, axis=1), lambda x: _max_jacobian(x), 1),
    "min_axis": (lambda x: md.min(x, axis=1), lambda x: _max_jacobian(x, -1.0), 1),
    "power_x0": (lambda x, y: md.square(x) ** y, lambda x, y: _diag(2 * x * y * x ** (2 * y - 2)), 2),
}


@pytest.mark.parametrize("name", sorted(KINK_OPS))
@hyp_settings(20)
@given(
    data=st.data(),
    shape=mst.shapes(min_dims=2, max_dims=2, max_side=4),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_conventions_at_kinks_hold_in_both_modes_on_drawn_inputs(name, data, shape, dtype):
    """On tie-heavy inputs (values from {-1, 0, ½, 1}, ±½ the clip bounds) forward and reverse
    Jacobians both equal the documented convention."""
    f, expected, n = KINK_OPS[name]
    arrays = [TIES(data.draw, shape) for _ in range(n)]
    if name == "power_x0":  # exponents 1 and 2 (0 and ½ would make a base of 0 singular or trivial)
        arrays[1] = np.where(arrays[1] > 0.5, 2.0, 1.0)
    args = tensors(arrays, dtype)
    want = expected(*[_np(a) for a in args])
    assert_exact(md.jacfwd(f)(*args), want, dtype, f"{name}: forward mode")
    assert_exact(md.jacrev(f)(*args), want, dtype, f"{name}: reverse mode")


@hyp_settings(20)
@given(
    x=hnp.arrays(
        np.float64, mst.shapes(min_dims=1, max_dims=2, max_side=4), elements=st.sampled_from([0.0, 1.0])
    )
)
def test_relu_kink_same_through_vmap_and_tape(x):
    """The tape style (backward) and the vmapped forward mode give relu'(0) = 0 too."""
    xt = md.tensor(x, requires_grad=True)
    md.relu(xt).sum().backward()
    want = (x > 0).astype(float)
    assert np.array_equal(xt.grad.numpy(), want)
    _, dv = md.jvp(md.relu, (md.tensor(x),), (md.ones((3,) + x.shape),), vectorized=True)
    assert np.array_equal(dv.numpy(), np.broadcast_to(want, (3,) + x.shape))
