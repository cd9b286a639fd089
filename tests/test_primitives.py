"""Property tests of every primitive: forward mode against reverse mode against finite differences.

Driven by the op-spec table of ``tests/opspecs.py`` (one spec per primitive, plus composites such as
``softmax``, ``conv2d`` or ``cross_entropy``).  For each spec Hypothesis draws shapes (broadcasting;
sides of at least 2, all different, so that a transposed or mixed-up axis changes the shape),
parameters (axes, indices, permutations that are not their own inverse, ...) and values inside the
op's smooth domain (and at the kinks whose convention equals the central difference), some of them as
non-contiguous views, and checks:

* first and second order against central finite differences in float64, with the adjoint identity
  ⟨Jᵀu, v⟩ = ⟨u, Jv⟩ holding the two modes together (``md.testing.check_grads(order=2)``, which runs
  forward-over-forward, reverse-over-forward, forward-over-reverse and reverse-over-reverse);
* Hessian-vector products of ``x ↦ ⟨u, f(x)⟩`` agreeing in the three ``md.hvp`` modes, and symmetric;
* linearity of the JVP in the tangent and of the VJP in the cotangent, zero giving exactly zero;
* float32: minidiff's float32 values, JVPs, VJPs and HVPs against the float64 computation on the
  same (rounded) inputs, with float32 outputs;
* that the drawn cases are meaningful (no all-empty or one-element inputs, shapes whose sides differ),
  and, in dedicated tests, that size-0 and size-1 inputs give the right shapes and finite derivatives;
* that Hypothesis draws the same examples from the same seed (``tests/conftest.py`` picks and prints it).

The conventions at non-differentiable points are in ``tests/test_conventions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opspecs import (
    DEGENERATE_SPECS,
    DIFF_SPECS,
    SPECS,
    degenerate_inputs,
    hyp_settings,
    library_primitives,
    tensors,
)

import minidiff as md


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
def test_every_library_primitive_has_a_spec():
    """A new primitive, registered or custom (``md.primitive``), fails here until the table of
    tests/opspecs.py gets a spec for it."""
    claimed = set().union(*(s.prims for s in SPECS))
    claimed_diff = set().union(*(s.prims for s in DIFF_SPECS))
    prims = library_primitives()
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


# ----------------------------------------------------------------------------- the drawn cases are meaningful
def draw_cases(spec, n: int) -> list:
    """The input shapes of the first ``n`` cases Hypothesis draws from ``spec`` (as the property
    tests draw them, same settings)."""
    drawn = []

    @hyp_settings(n)
    @given(data=st.data())
    def collect(data):
        drawn.append(data.draw(spec.case).shapes)
        data.draw(st.integers(0, 2**32))  # (as the values would: specs with few shapes still run n times)

    collect()
    return drawn


def _size(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def _not_cubic(shape) -> bool:
    return len(shape) < 2 or len(set(shape)) > 1


#: Specs allowed to draw many one-element or cube-shaped cases, and why.
DEGENERATE_BY_DESIGN = {
    **{
        name: "1x1 matrices in about a fifth of the cases: tests/opspecs_linalg.py's sizes start at 1"
        for name in ("linalg.slogdet", "linalg.slogdet_sign", "linalg.expm")
    },
    "linalg.qr": "square matrices among the drawn (m, k) (spec of tests/opspecs_linalg.py)",
}


def test_drawn_cases_are_meaningful():
    """Over every spec: no case with every input empty, nearly all with an input of more than one
    element (85% per spec, 98% over all), and multi-axis inputs with sides that differ (so a
    swapped axis shows: 25% per spec, 80% over all).  The property tests run N_EXAMPLES >= 20 of
    them per spec and property."""
    assert N_EXAMPLES >= 20
    report, empty, tiny, cubic = [], 0, 0, 0
    total = multi = 0
    for spec in SPECS:
        cases = draw_cases(spec, 12)
        assert len(cases) >= 12, f"{spec.name}: only {len(cases)} cases drawn"
        all_empty = sum(all(_size(s) == 0 for s in shapes) for shapes in cases)
        small = sum(all(_size(s) <= 1 for s in shapes) for shapes in cases)
        # (square matrices are square by nature: inv, det, eigh...; their specs are left out here)
        square_by_nature = all(any(len(s) >= 2 and s[-1] == s[-2] for s in shapes) for shapes in cases)
        with_nd = [] if square_by_nature else [shapes for shapes in cases if any(len(s) >= 2 for s in shapes)]
        square = sum(not any(_not_cubic(s) for s in shapes if len(s) >= 2) for shapes in with_nd)
        poor = small > 0.15 * len(cases) or square > 0.75 * max(len(with_nd), 1)
        if all_empty or (poor and spec.name not in DEGENERATE_BY_DESIGN):
            report.append(f"{spec.name}: {all_empty} all-empty, {small} one-element, {square} cubic")
        total, multi = total + len(cases), multi + len(with_nd)
        empty, tiny, cubic = empty + all_empty, tiny + small, cubic + square
    assert not report, "specs drawing degenerate cases:\n" + "\n".join(report)
    assert empty == 0 and tiny <= 0.02 * total and cubic <= 0.2 * multi, (empty, tiny, cubic, total, multi)


def test_the_same_seed_draws_the_same_examples():
    """Hypothesis is seeded by tests/conftest.py: the same seed replays the same examples, another
    seed draws others (so CI sees fresh cases, and a failure is reproducible from the printed seed)."""
    from hypothesis import core

    spec = next(s for s in SPECS if s.name == "transpose")
    before = core.global_force_seed
    try:
        runs = []
        for seed in (12345, 12345, 54321):
            core.global_force_seed = seed
            runs.append(draw_cases(spec, 10))
    finally:
        core.global_force_seed = before
    assert runs[0] == runs[1], "the same seed drew different examples"
    assert runs[0] != runs[2], "two seeds drew the same examples"
    assert before is not None, "conftest.py should have fixed a seed for the run"


# ----------------------------------------------------------------------------- size-0 and size-1 inputs
@pytest.mark.parametrize("spec", DEGENERATE_SPECS, ids=lambda s: s.name)
@hyp_settings(8)
@given(data=st.data())
def test_size_0_and_size_1_inputs_give_right_shapes_and_finite_derivatives(spec, data):
    """Empty and one-element inputs (0-d included): no error, outputs and derivatives of the right
    shapes and dtypes, finite; an empty output gives exactly zero cotangents; with no empty input,
    the derivatives match finite differences."""
    with degenerate_inputs():
        case, arrays = _draw(spec, data)
    assert any(a.size <= 1 for a in arrays), f"{spec.name} drew no degenerate input: {case.shapes}"
    args = tensors(arrays)
    rng = _rng(data)
    out = case.f(*args)
    t = tuple(_normal(rng, a.shape) for a in args)
    out_j, jv = md.jvp(case.f, args, t)
    assert jv.shape == out.shape and out_j.shape == out.shape and jv.dtype == out.dtype
    assert np.all(np.isfinite(_np(jv))), f"JVP not finite: {jv}"
    _, back = md.vjp(case.f, *args)
    grads = back(_normal(rng, out.shape))
    for i, (g, a) in enumerate(zip(grads, args)):
        assert g.shape == a.shape and g.dtype == a.dtype, f"cotangent {i}: {g.shape} {g.dtype}"
        assert np.all(np.isfinite(_np(g))), f"cotangent {i} not finite: {g}"
        if out.size == 0:
            assert np.all(_np(g) == 0), f"an empty output must give a zero cotangent (input {i})"
    if all(a.size for a in args):
        md.testing.check_grads(case.f, args, order=1, **{**FD64, **spec.fd})
