"""Op specs of ``md.linalg``'s decompositions, triangular solves, norms, powers and exponential.

Added to the table of ``tests/opspecs.py`` (``SPECS += LINALG_SPECS``), so the property tests of
``tests/test_primitives.py`` and the registry walk of ``tests/test_registry.py`` cover them.

Domains draw inputs where the ops are smooth and well conditioned: symmetric matrices with eigenvalues
at least 0.5 apart, matrices with singular values at least 0.5 apart and away from zero, triangular
factors with a dominant diagonal, bands whose diagonal row dominates, entries whose magnitudes are distinct powers of two (no ties in a max
of absolute sums).  Decompositions whose outputs have a sign freedom are differentiated through
functions that do not see the sign: ``v * v``, the projector ``v₀ v₀ᵀ``, ``v * v[0]`` (each column
times its own first entry), ``U diag(s) Vh``.  QR's signs are those of LAPACK's Householder steps,
not smooth (they jump where a column's subdiagonal is exactly zero), so Q and R are differentiated
with R's diagonal made positive.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opspecs import ANY, AWAY0, Spec, case, sides, spd, well_conditioned

import minidiff as md

LA = md.linalg


# ----------------------------------------------------------------------------- domains
def _orthonormal(draw, shape):
    """``(..., m, k)`` with orthonormal columns: Q of ``R + 3·[I; 0]`` for drawn ``R`` in [-1, 1]."""
    m, k = shape[-2:]
    r = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
    return np.linalg.qr(r + 3.0 * np.eye(m, k))[0]


def _separated(draw, lead, k, lo, hi):
    """``lead + (k,)`` values from {lo/2, ..., hi/2}, distinct within each row (gaps >= 0.5)."""
    rows = [
        draw(st.lists(st.integers(lo, hi), min_size=k, max_size=k, unique=True))
        for _ in range(math.prod(lead))
    ]
    return 0.5 * np.array(rows, dtype=np.float64).reshape(lead + (k,))


def separated_symmetric(draw, shape):
    """Symmetric ``V diag(w) Vᵀ`` with eigenvalues in [-3, 3] at least 0.5 apart."""
    n = shape[-1]
    v = _orthonormal(draw, shape)
    w = _separated(draw, shape[:-2], n, -6, 6)
    return (v * w[..., None, :]) @ np.swapaxes(v, -1, -2)


def separated_singular(draw, shape):
    """``U diag(s) Vᵀ`` with singular values in [0.5, 4] at least 0.5 apart."""
    m, n = shape[-2:]
    k = min(m, n)
    u = _orthonormal(draw, shape[:-2] + (m, k))
    v = _orthonormal(draw, shape[:-2] + (n, k))
    s = _separated(draw, shape[:-2], k, 1, 8)
    return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)


def full_rank(draw, shape):
    """``R + (k + 1)·[I 0]`` with ``k = min(m, n)`` and ``R`` in [-1, 1]: the leading k×k block is
    strictly diagonally dominant, so the columns (or rows) are independent."""
    m, n = shape[-2:]
    r = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
    return r + (min(m, n) + 1.0) * np.eye(m, n)


def signed_well_conditioned(draw, shape):
    """Well conditioned, with the first row negated half the time (determinants of both signs)."""
    a = well_conditioned(draw, shape)
    if draw(st.booleans()):
        a[..., 0, :] *= -1.0
    return a


def scaled_well_conditioned(draw, shape):
    """Well conditioned with a diagonal near 1 (powers stay of order 1)."""
    return well_conditioned(draw, shape) / (shape[-1] + 1)


def distinct_abs(draw, shape):
    """Signed values whose magnitudes are distinct multiples of 0.02 (no ties in a max of |x|)."""
    size = math.prod(shape)
    k = draw(hnp.arrays(np.int64, (size,), elements=st.integers(1, 100), unique=True))
    signs = draw(hnp.arrays(np.float64, (size,), elements=st.sampled_from([-1.0, 1.0])))
    return (signs * 0.02 * k).reshape(shape)


def binary(draw, shape):
    """Signed distinct powers of two in [2⁻¹³, 1]: every sum of a subset of |x| is unique."""
    size = math.prod(shape)
    k = draw(hnp.arrays(np.int64, (size,), elements=st.integers(0, 13), unique=True))
    signs = draw(hnp.arrays(np.float64, (size,), elements=st.sampled_from([-1.0, 1.0])))
    return (signs * 2.0 ** (-k.astype(np.float64))).reshape(shape)


# ----------------------------------------------------------------------------- shapes
LEAD = st.sampled_from([(), (2,)])
# Sizes start at 2: 1×1 and empty matrices have their own test (tests/test_linalg.py).


def square(lo=2, hi=4):
    return st.tuples(LEAD, st.integers(lo, hi)).map(lambda t: t[0] + (t[1], t[1]))


def rect(lo=2, hi=4):
    """Tall, square and wide matrices (and stacks of them)."""
    return st.tuples(LEAD, st.integers(lo, hi), st.integers(lo, hi)).map(lambda t: t[0] + (t[1], t[2]))


# ----------------------------------------------------------------------------- cases
def _mT(x):
    return md.swapaxes(x, -1, -2)


EIGH_VIEWS = {
    "values": lambda w, v: w,
    "v*v": lambda w, v: v * v,
    "v*v[0]": lambda w, v: v * v[..., :1, :],
    "projector": lambda w, v: v[..., :, :1] * _mT(v[..., :, :1]),
    "V f(w) Vt": lambda w, v: (v * md.tanh(w)[..., None, :]) @ _mT(v),
}


@st.composite
def eigh_case(draw):
    shape = draw(square())
    view = draw(st.sampled_from(sorted(EIGH_VIEWS)))
    uplo = draw(st.sampled_from(["L", "U"]))
    fn = EIGH_VIEWS[view]
    return case(lambda a: fn(*LA.eigh(a, UPLO=uplo)), [shape], [separated_symmetric], f"{view} UPLO={uplo}")


@st.composite
def eigvalsh_case(draw):
    shape = draw(square())
    uplo = draw(st.sampled_from(["L", "U"]))
    return case(lambda a: LA.eigvalsh(a, UPLO=uplo), [shape], [separated_symmetric], f"UPLO={uplo}")


SVD_VIEWS = {
    "s": lambda u, s, vh: s,
    "u*u": lambda u, s, vh: u * u,
    "vh*vh": lambda u, s, vh: vh * vh,
    "u*u[0]": lambda u, s, vh: u * u[..., :1, :],
    "vh*vh[:,0]": lambda u, s, vh: vh * vh[..., :, :1],
    "U diag(s^2) Vh": lambda u, s, vh: (u * (s * s)[..., None, :]) @ vh,
}


@st.composite
def svd_case(draw):
    shape = draw(rect())
    view = draw(st.sampled_from(sorted(SVD_VIEWS)))
    full = shape[-1] == shape[-2] and draw(st.booleans())  # square: full_matrices=True is the same
    fn = SVD_VIEWS[view]
    return case(
        lambda a: fn(*LA.svd(a, full_matrices=full)), [shape], [separated_singular], f"{view} full={full}"
    )


@st.composite
def svdvals_case(draw):
    shape = draw(rect())
    how = draw(st.sampled_from(["svdvals", "compute_uv=False"]))
    f = LA.svdvals if how == "svdvals" else (lambda a: LA.svd(a, compute_uv=False))
    return case(f, [shape], [separated_singular], how)


@st.composite
def svd_complete_case(draw):
    """Full U and V of a non-square matrix: values only (no derivative is defined)."""
    lead, m = draw(LEAD), draw(st.integers(2, 4))
    n = draw(st.integers(1, 4).filter(lambda k: k != m))
    view = draw(st.sampled_from(["u*u", "s", "vh*vh"]))
    fn = SVD_VIEWS[view]
    return case(lambda a: fn(*LA.svd(a)), [lead + (m, n)], [separated_singular], view)


def _positive_diagonal(q, r):
    """Q and R with R's diagonal made positive: the unique QR, smooth in the input.  (LAPACK's own
    signs jump where a column's subdiagonal is exactly zero, e.g. at ``3·I``.)"""
    d = md.sign(md.sum(r * md.eye(r.shape[-2], r.shape[-1], dtype=r.dtype), axis=-1))
    return q * d[..., None, :], r * d[..., :, None]


@st.composite
def qr_case(draw):
    lead, m = draw(LEAD), draw(st.integers(2, 4))
    n = draw(st.integers(2, m))  # tall or square: one primitive
    view = draw(st.sampled_from(["Q", "R", "mode=r", "QR"]))
    if view == "mode=r":
        return case(lambda a: LA.qr(a, mode="r") ** 2, [lead + (m, n)], [full_rank], view)
    if view == "QR":
        return case(lambda a: md.matmul(*LA.qr(a)), [lead + (m, n)], [full_rank], view)
    k = 0 if view == "Q" else 1
    return case(lambda a: _positive_diagonal(*LA.qr(a))[k], [lead + (m, n)], [full_rank], view)


@st.composite
def qr_wide_case(draw):
    lead, m = draw(LEAD), draw(st.integers(2, 3))
    n = draw(st.integers(m + 1, 5))
    k = draw(st.integers(0, 1))
    return case(lambda a: _positive_diagonal(*LA.qr(a))[k], [lead + (m, n)], [full_rank], "QR"[k])


@st.composite
def solve_triangular_case(draw):
    n = draw(st.integers(2, 4))
    k = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["vec", "mat", "batched", "broadcast_a", "broadcast_b", "batched_vec"]))
    a_shape, b_shape = {
        "vec": ((n, n), (n,)),
        "mat": ((n, n), (n, k)),
        "batched": ((2, n, n), (2, n, k)),
        "broadcast_a": ((n, n), (2, n, k)),
        "broadcast_b": ((2, n, n), (n, k)),
        "batched_vec": ((2, n, n), (n,)),
    }[kind]
    lower, unit = draw(st.booleans()), draw(st.booleans())
    trans = draw(st.sampled_from([0, 1, "N", "T", 2]))

    def f(a, b):
        return LA.solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit)

    return case(
        f, [a_shape, b_shape], [well_conditioned, ANY], f"{kind} lower={lower} trans={trans} unit={unit}"
    )


def dominant_band(upper):
    """Band storage ``(..., l + u + 1, n)`` of a strictly diagonally dominant banded matrix: entries in
    [-1, 1], plus ``±(l + u + 2)`` on the diagonal (row ``upper``), one sign drawn for all."""

    def domain(draw, shape):
        ab = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
        sign = -1.0 if draw(st.booleans()) else 1.0
        ab[..., upper, :] += sign * (shape[-2] + 1.0)
        return ab

    return domain


@st.composite
def solve_banded_case(draw):
    """``(l, u)`` from 0 to 2 each (so diagonal, bidiagonal, tridiagonal, wider bands, and bands wider
    than the matrix), n from 1 (0 or 1 when degenerate), one or several right-hand sides, stacks."""
    lower, upper = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    n, k = draw(sides(2, 1, 5))
    w = lower + upper + 1
    kind = draw(st.sampled_from(["vec", "mat", "batched", "broadcast_ab", "broadcast_b", "batched_vec"]))
    ab_shape, b_shape = {
        "vec": ((w, n), (n,)),
        "mat": ((w, n), (n, k)),
        "batched": ((2, w, n), (2, n, k)),
        "broadcast_ab": ((w, n), (2, n, k)),
        "broadcast_b": ((2, w, n), (n, k)),
        "batched_vec": ((2, w, n), (n,)),
    }[kind]

    def f(ab, b):
        return LA.solve_banded((lower, upper), ab, b)

    return case(f, [ab_shape, b_shape], [dominant_band(upper), ANY], f"{kind} l={lower} u={upper}")


@st.composite
def cho_solve_case(draw):
    n, k = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    lower = draw(st.booleans())
    b_shape = draw(st.sampled_from([(n,), (n, k)]))

    def f(a, b):
        return LA.cho_solve(LA.cho_factor(a, lower=lower), b)

    return case(f, [(n, n), b_shape], [spd, ANY], f"lower={lower}")


@st.composite
def vector_norm_case(draw):
    lead = draw(st.sampled_from([(), (3,), (2, 3)]))
    n = draw(st.integers(2, 4))
    shape = lead + (n,)
    ord_ = draw(st.sampled_from([None, 2, 1, math.inf, -math.inf, 3, 1.5]))
    axis = -1 if lead or draw(st.booleans()) else None
    keepdims = draw(st.booleans())
    dom = distinct_abs if ord_ in (math.inf, -math.inf) else AWAY0
    return case(
        lambda x: LA.norm(x, ord=ord_, axis=axis, keepdims=keepdims),
        [shape],
        [dom],
        f"ord={ord_} axis={axis} keepdims={keepdims}",
    )


@st.composite
def matrix_norm_case(draw):
    """'fro', ±1, ±inf (sums of |x|) on 2-D inputs or over two axes of a 3-D one."""
    ord_ = draw(st.sampled_from([None, "fro", 1, -1, math.inf, -math.inf]))
    if draw(st.booleans()):
        shape, axis = draw(rect(2, 3)), None
        shape = shape[-2:]
    else:
        shape = (2, 3, 2)
        axis = draw(st.sampled_from([(0, 2), (2, 0), (-1, 1), (1, 0)]))
    keepdims = draw(st.booleans())
    return case(
        lambda x: LA.norm(x, ord=ord_, axis=axis, keepdims=keepdims),
        [shape],
        [binary],
        f"ord={ord_} axis={axis} keepdims={keepdims}",
    )


@st.composite
def spectral_norm_case(draw):
    """'nuc', 2, -2 (singular values) and matrix_norm."""
    ord_ = draw(st.sampled_from(["nuc", 2, -2]))
    shape = draw(rect())
    if draw(st.booleans()):
        return case(
            lambda x: LA.matrix_norm(x, ord=ord_), [shape], [separated_singular], f"matrix_norm {ord_}"
        )
    moved = (shape[-2], shape[0] if len(shape) == 3 else 1, shape[-1])
    return case(
        lambda x: LA.norm(x, ord=ord_, axis=(0, 2), keepdims=True), [moved], [separated_moved], f"norm {ord_}"
    )


def separated_moved(draw, shape):
    """A stack along axis 1 of matrices over axes (0, 2) with separated singular values."""
    m, b, n = shape
    return np.moveaxis(separated_singular(draw, (b, m, n)), 0, 1)


@st.composite
def matrix_power_case(draw):
    shape = draw(square())
    k = draw(st.sampled_from([-2, -1, 0, 1, 2, 3, 5]))
    return case(lambda a: LA.matrix_power(a, k), [shape], [scaled_well_conditioned], f"n={k}")


@st.composite
def trace_case(draw):
    shape = draw(rect())
    offset = draw(st.integers(-1, 1))
    return case(lambda a: LA.trace(a, offset=offset), [shape], [ANY], f"offset={offset}")


@st.composite
def expm_case(draw):
    shape = draw(square())
    return case(LA.expm, [shape], [ANY], "")


@st.composite
def slogdet_case(draw):
    shape = draw(square())
    return case(lambda a: LA.slogdet(a)[1], [shape], [signed_well_conditioned], "")


@st.composite
def slogdet_sign_case(draw):
    shape = draw(square())
    return case(lambda a: LA.slogdet(a)[0], [shape], [signed_well_conditioned], "")


LINALG_SPECS: list[Spec] = [
    Spec("linalg.solve_triangular", ("solve_triangular",), solve_triangular_case()),
    Spec("linalg.cho_solve", ("cholesky", "solve_triangular"), cho_solve_case()),
    Spec("linalg.solve_banded", ("solve_banded",), solve_banded_case()),
    Spec("linalg.eigh", ("eigh",), eigh_case()),
    Spec("linalg.eigvalsh", ("eigvalsh",), eigvalsh_case()),
    Spec("linalg.svd", ("svd",), svd_case()),
    Spec("linalg.svdvals", ("svdvals",), svdvals_case()),
    Spec("linalg.qr", ("qr",), qr_case()),
    Spec("linalg.qr_wide", ("qr", "matmul", "concatenate"), qr_wide_case()),
    Spec("linalg.slogdet", ("slogdet",), slogdet_case()),
    Spec("linalg.vector_norm", ("sum",), vector_norm_case()),
    Spec("linalg.matrix_norm", ("sum",), matrix_norm_case()),
    Spec("linalg.spectral_norm", ("svdvals",), spectral_norm_case()),
    Spec("linalg.matrix_power", ("matmul",), matrix_power_case()),
    Spec("linalg.trace", ("multiply", "sum"), trace_case()),
    Spec("linalg.expm", ("matmul",), expm_case()),
    # values only: the sign of a determinant, the arbitrary completion of a full SVD
    Spec("linalg.slogdet_sign", ("slogdet_sign",), slogdet_sign_case(), diff=False),
    Spec("linalg.svd_complete", ("svd_complete",), svd_complete_case(), diff=False),
]

#: What the VJP rules of the new primitives keep on the tape (for ``SENSIBLE_SAVES`` of
#: tests/test_registry.py): the output for the decompositions whose rules read the factors; the input
#: for eigvalsh / svdvals (their rules recompute the vectors) and slogdet (its rules invert x).
LINALG_SAVES = {
    "solve_triangular": {0, "ans"},
    "solve_banded": {0, "ans"},
    "eigh": {"ans"},
    "eigvalsh": {0},
    "svd": {"ans"},
    "svdvals": {0},
    "qr": {"ans"},
    "slogdet": {0},
}
