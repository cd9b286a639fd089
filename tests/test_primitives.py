"""Property tests of every primitive: forward mode against reverse mode against finite differences.

Driven by the op-spec table of ``tests/opspecs.py`` (one spec per primitive, plus composites such as
``softmax``, ``conv2d`` or ``cross_entropy``).  For each spec Hypothesis draws shapes (broadcasting,
size-1 and size-0 axes), parameters (axes, indices, ...) and values inside the op's smooth domain,
some of them as non-contiguous views, and checks:

* first and second order against central finite differences in float64, with the adjoint identity
  ⟨Jᵀu, v⟩ = ⟨u, Jv⟩ holding the two modes together (``md.testing.check_grads(order=2)``, which runs
  forward-over-forward, reverse-over-forward, forward-over-reverse and reverse-over-reverse);
* Hessian-vector products of ``x ↦ ⟨u, f(x)⟩`` agreeing in the three ``md.hvp`` modes, and symmetric;
* linearity of the JVP in the tangent and of the VJP in the cotangent, zero giving exactly zero;
* float32: minidiff's float32 values, JVPs, VJPs and HVPs against the float64 computation on the
  same (rounded) inputs, with float32 outputs;
* the conventions at non-differentiable points, identical in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opspecs import DIFF_SPECS, SPECS, TIES, builtin_primitives, hyp_settings, tensors

import minidiff as md
from minidiff.testing import strategies as mst


# ----------------------------------------------------------------------------- tolerances, per dtype
@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float  # relative to the largest magnitude of the reference (at least 1)


#: check_grads in float64: central differences with step eps (error O(eps²) + rounding/eps ≈ 1e-10)
FD64 = {"eps": 1e-6, "rtol": 1e-5, "atol": 1e-6}
#: two AD computations of one quantity in float64 (HVP modes, linearity): only rounding differs
AGREE64 = Tol(rtol=1e-9, atol=1e-10)
#: float32 results against the float64 computation on the same float32-rounded inputs
F32 = Tol(rtol=2e-4, atol=2e-5)
#: float32 second order (one more chain of rounding)
F32_HVP = Tol(rtol=1e-3, atol=1e-4)
#: at the kinks the derivatives are exact small rationals (0, ½, 1/k): only rounding allowed
EXACT = {np.dtype("float64"): Tol(1e-12, 1e-12), np.dtype("float32"): Tol(1e-6, 1e-6)}

N_EXAMPLES = 20


def _np(x):
    return np.asarray(x.numpy() if isinstance(x, md.Tensor) else x, dtype=np.float64)


def assert_close(got, want, tol: Tol, what: str):
    g, w = _np(got), _np(want)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != reference {w.shape}"
    scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
    if not np.allclose(g, w, rtol=tol.rtol, atol=tol.atol * scale):
        err = float(np.max(np.abs(g - w)))
        raise AssertionError(
            f"{what}: max abs error {err:.3g} (rtol={tol.rtol}, atol={tol.atol}·{scale:.3g})"
        )


def _inner(a, b) -> float:
    return float(np.vdot(_np(a), _np(b)))


def _draw(spec, data, contiguous=False):
    case = data.draw(spec.case, label="case")
    arrays = case.draw_values(data.draw, contiguous=contiguous)
    return case, arrays


def _rng(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def _normal(rng, shape, dtype="float64", noncontiguous=False):
    a = rng.standard_normal(shape)
    if noncontiguous and a.ndim:
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]  # a reversed (negative-stride) view
    return md.asarray(a.astype(dtype, copy=False))


spec_params = pytest.mark.parametrize("spec", DIFF_SPECS, ids=lambda s: s.name)


# ----------------------------------------------------------------------------- coverage of the table
def test_every_registered_primitive_has_a_spec():
    """A new primitive fails here until the table of tests/opspecs.py gets a spec for it."""
    claimed = set().union(*(s.prims for s in SPECS))
    claimed_diff = set().union(*(s.prims for s in DIFF_SPECS))
    prims = builtin_primitives()
    missing = sorted(set(prims) - claimed)
    assert not missing, f"primitives without an op spec in tests/opspecs.py: {missing}"
    missing_diff = sorted(n for n, p in prims.items() if p.kind != "nondiff" and n not in claimed_diff)
    assert not missing_diff, f"differentiable primitives without a differentiable op spec: {missing_diff}"
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names)), "op spec names must be unique"


# ----------------------------------------------------------------------------- float64 vs finite differences
@spec_params
@hyp_settings(N_EXAMPLES)
@given(data=st.data())
def test_first_and_second_order_against_finite_differences(spec, data):
    case, arrays = _draw(spec, data)
    args = tensors(arrays)
    seed = data.draw(st.integers(0, 2**16), label="check seed")
    md.testing.check_grads(
        case.f, args, order=spec.order, modes=("fwd", "rev"), seed=seed, **{**FD64, **spec.fd}
    )


@spec_params
@hyp_settings(N_EXAMPLES)
@given(data=st.data())
def test_hvp_modes_agree_and_are_symmetric(spec, data):
    """fwd-over-rev = rev-over-fwd = rev-over-rev for s(x) = ⟨u, f(x)⟩, and ⟨w, H·v⟩ = ⟨v, H·w⟩."""
    case, arrays = _draw(spec, data)
    args = tensors(arrays)
    rng = _rng(data)
    u = _normal(rng, case.f(*args).shape)

    def s(*xs):
        return md.sum(u * case.f(*xs))

    v = tuple(_normal(rng, a.shape, noncontiguous=True) for a in args)
    w = tuple(_normal(rng, a.shape) for a in args)
    hv = {mode: md.hvp(s, args, v, mode=mode) for mode in md.transforms.HVP_MODES}
    ref = hv["fwd-over-rev"]
    assert len(ref) == len(args)
    for mode, got in hv.items():
        for i, (g, r) in enumerate(zip(got, ref)):
            assert g.shape == args[i].shape and g.dtype == args[i].dtype, f"{mode}: input {i}"
            assert_close(g, r, AGREE64, f"H·v of input {i}: {mode} vs fwd-over-rev")
    hw = md.hvp(s, args, w, mode="rev-over-rev")
    lhs = sum(_inner(a, b) for a, b in zip(w, ref))
    rhs = sum(_inner(a, b) for a, b in zip(v, hw))
    scale = max(1.0, sum(np.sum(np.abs(_np(x))) for x in (*ref, *hw)))
    assert abs(lhs - rhs) <= 1e-9 * scale, f"<w, Hv> = {lhs} but <v, Hw> = {rhs}"


# ----------------------------------------------------------------------------- linearity
@spec_params
@hyp_settings(N_EXAMPLES)
@given(data=st.data(), a=st.sampled_from([-1.5, 0.5, 2.0]), b=st.sampled_from([-0.25, 1.0, 3.0]))
def test_jvp_and_vjp_are_linear_and_zero_gives_zero(spec, data, a, b):
    case, arrays = _draw(spec, data)
    args = tensors(arrays)
    rng = _rng(data)
    value = case.f(*args)
    tol = Tol(**{**AGREE64.__dict__, **spec.agree})

    t1 = tuple(_normal(rng, x.shape, noncontiguous=True) for x in args)
    t2 = tuple(_normal(rng, x.shape) for x in args)
    mix = tuple(a * x + b * y for x, y in zip(t1, t2))
    out, j1 = md.jvp(case.f, args, t1)
    assert_close(out, value, tol, "primal output of jvp")
    _, j2 = md.jvp(case.f, args, t2)
    _, jm = md.jvp(case.f, args, mix)
    assert jm.shape == value.shape and jm.dtype == value.dtype
    assert_close(jm, a * _np(j1) + b * _np(j2), tol, "J(a·t1 + b·t2) vs a·J t1 + b·J t2")
    zeros = tuple(md.zeros_like(x) for x in args)
    _, j0 = md.jvp(case.f, args, zeros)
    assert np.all(_np(j0) == 0), "a zero tangent must give exactly zero"

    out, back = md.vjp(case.f, *args)
    assert_close(out, value, tol, "primal output of vjp")
    u1 = _normal(rng, value.shape, noncontiguous=True)
    u2 = _normal(rng, value.shape)
    g1, g2, gm = back(u1), back(u2), back(a * u1 + b * u2)
    for i, (x, y, z) in enumerate(zip(g1, g2, gm)):
        assert z.shape == args[i].shape and z.dtype == args[i].dtype
        assert_close(z, a * _np(x) + b * _np(y), tol, f"Jᵀ(a·u1 + b·u2) of input {i}")
    for i, z in enumerate(back(md.zeros_like(value))):
        assert np.all(_np(z) == 0), f"a zero cotangent must give exactly zero (input {i})"


# ----------------------------------------------------------------------------- float32
@spec_params
@hyp_settings(N_EXAMPLES)
@given(data=st.data())
def test_float32_matches_float64(spec, data):
    """float32 values, JVPs, VJPs and HVPs stay float32 and match the float64 computation."""
    case, arrays = _draw(spec, data)
    x32 = tensors(arrays, "float32")
    x64 = tuple(md.asarray(x.numpy().astype(np.float64)) for x in x32)  # the same rounded inputs
    rng = _rng(data)
    t32 = tuple(_normal(rng, x.shape, "float32") for x in x32)
    t64 = tuple(t.astype("float64") for t in t32)
    tol = Tol(**{**F32.__dict__, **spec.f32})

    out32, jv32 = md.jvp(case.f, x32, t32)
    out64, jv64 = md.jvp(case.f, x64, t64)
    assert out32.dtype == np.float32 and jv32.dtype == np.float32, (out32.dtype, jv32.dtype)
    assert_close(out32, out64, tol, "float32 value")
    assert_close(jv32, jv64, tol, "float32 JVP")

    u32 = _normal(rng, out32.shape, "float32")
    _, back32 = md.vjp(case.f, *x32)
    _, back64 = md.vjp(case.f, *x64)
    for i, (g32, g64) in enumerate(zip(back32(u32), back64(u32.astype("float64")))):
        assert g32.dtype == np.float32, f"cotangent of input {i} is {g32.dtype}"
        assert_close(g32, g64, tol, f"float32 VJP of input {i}")

    def s(*xs):
        return md.sum(md.astype(u32, xs[0].dtype) * case.f(*xs))

    hv32 = md.hvp(s, x32, t32)
    hv64 = md.hvp(s, x64, t64)
    for i, (h32, h64) in enumerate(zip(hv32, hv64)):
        assert h32.dtype == np.float32, f"H·v of input {i} is {h32.dtype}"
        assert_close(
            h32, h64, Tol(max(tol.rtol, F32_HVP.rtol), max(tol.atol, F32_HVP.atol)), f"float32 H·v {i}"
        )


# ----------------------------------------------------------------------------- conventions at kinks
def _share(x, y):
    return np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))


def _both_jacobians(f, x, argnums=0):
    return md.jacfwd(f, argnums)(*x), md.jacrev(f, argnums)(*x)


def _check_convention(f, args, expected, dtype, argnums=0):
    tol = EXACT[np.dtype(dtype)]
    jf, jr = _both_jacobians(f, args, argnums)
    assert_close(jf, expected, tol, "forward mode at the kink")
    assert_close(jr, expected, tol, "reverse mode at the kink")


def _diag(d):
    n = d.size
    return (np.eye(n) * d.reshape(-1)).reshape(d.shape + d.shape)


dtypes = pytest.mark.parametrize("dtype", ["float64", "float32"])


@dtypes
def test_relu_and_abs_derivative_at_zero_is_zero(dtype):
    x = md.tensor([-1.0, 0.0, 2.0], dtype=dtype)
    _check_convention(md.relu, (x,), np.diag([0.0, 0.0, 1.0]), dtype)
    _check_convention(md.abs, (x,), np.diag([-1.0, 0.0, 1.0]), dtype)
    # tape style and grad agree too
    assert md.grad(lambda z: md.relu(z).sum())(x).tolist() == [0.0, 0.0, 1.0]
    assert md.grad(lambda z: md.abs(z).sum())(x).tolist() == [-1.0, 0.0, 1.0]
    # the second derivative at the kink is zero in every HVP mode
    for mode in md.transforms.HVP_MODES:
        for fn in (md.relu, md.abs):
            (hv,) = md.hvp(lambda z, fn=fn: fn(z).sum(), (x,), (md.ones_like(x),), mode=mode)
            assert hv.tolist() == [0.0, 0.0, 0.0], (fn, mode)


@dtypes
def test_maximum_minimum_ties_split_evenly(dtype):
    x = md.tensor([1.0, 2.0, 3.0], dtype=dtype)
    y = md.tensor([1.0, 5.0, 0.0], dtype=dtype)
    _check_convention(md.maximum, (x, y), np.diag([0.5, 0.0, 1.0]), dtype, 0)
    _check_convention(md.maximum, (x, y), np.diag([0.5, 1.0, 0.0]), dtype, 1)
    _check_convention(md.minimum, (x, y), np.diag([0.5, 1.0, 0.0]), dtype, 0)
    _check_convention(md.minimum, (x, y), np.diag([0.5, 0.0, 1.0]), dtype, 1)
    # maximum(x, x) = x: the halves add up to the full derivative
    _check_convention(lambda z: md.maximum(z, z), (x,), np.eye(3), dtype)
    # a broadcast operand tying with several elements gets the sum of its halves
    s = md.tensor(2.0, dtype=dtype)
    _check_convention(
        md.maximum, (md.tensor([2.0, 2.0, 1.0], dtype=dtype), s), np.array([0.5, 0.5, 1.0]), dtype, 1
    )


@dtypes
def test_max_min_reduction_ties_share_evenly(dtype):
    x = md.tensor([[1.0, 3.0, 3.0, 2.0], [4.0, 4.0, 4.0, 4.0]], dtype=dtype)
    want = np.zeros((2, 2, 4))
    want[0, 0] = [0, 0.5, 0.5, 0]
    want[1, 1] = [0.25] * 4
    _check_convention(lambda z: md.max(z, axis=1), (x,), want, dtype)
    _check_convention(lambda z: md.min(-z, axis=1), (x,), -want, dtype)
    whole = np.zeros((2, 4))
    whole[1] = 0.25
    _check_convention(md.max, (x,), whole, dtype)


@dtypes
def test_clip_derivative_is_one_on_the_closed_interval(dtype):
    x = md.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=dtype)
    _check_convention(lambda z: md.clip(z, -1.0, 1.0), (x,), np.diag([0.0, 1.0, 1.0, 1.0, 0.0]), dtype)
    _check_convention(lambda z: md.clip(z, None, 0.0), (x,), np.diag([1.0, 1.0, 1.0, 0.0, 0.0]), dtype)
    _check_convention(lambda z: md.clip(z, 0.0, None), (x,), np.diag([0.0, 0.0, 1.0, 1.0, 1.0]), dtype)


def _max_jacobian(x, sign=1.0):
    """The tie-sharing Jacobian of max (sign=1) or min (sign=-1) along axis 1 of a 2-D array."""
    top = sign * np.max(sign * x, axis=1, keepdims=True)
    share = (x == top) / np.sum(x == top, axis=1, keepdims=True)
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
}


@pytest.mark.parametrize("name", sorted(KINK_OPS))
@hyp_settings(25)
@given(
    data=st.data(),
    shape=mst.shapes(min_dims=2, max_dims=2, min_side=1, max_side=4),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_conventions_at_kinks_hold_in_both_modes(name, data, shape, dtype):
    """On tie-heavy inputs (values from {-1, 0, ½, 1}, ±½ the clip bounds) forward and reverse
    Jacobians both equal the documented convention."""
    f, expected, n = KINK_OPS[name]
    arrays = [TIES(data.draw, shape) for _ in range(n)]
    args = tensors(arrays, dtype)
    _check_convention(f, args, expected(*[_np(a) for a in args]), dtype)


@hyp_settings(25)
@given(
    x=hnp.arrays(
        np.float64, mst.shapes(min_dims=1, max_dims=2, min_side=1), elements=st.sampled_from([0.0, 1.0])
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
