"""Matrix decompositions, triangular and banded solves: eigh, eigvalsh, svd, svdvals, qr, slogdet,
solve_triangular, solve_banded.

A primitive returns one array, a decomposition several.  Each decomposition primitive therefore
returns its factors *packed* into one array (``eigh``: the eigenvalues as row 0 above the
eigenvectors; ``svd``: ``[U; s; V]``; ``qr``: ``[Q; R]``), and the public functions of
``minidiff.primitives.linalg`` slice them apart.  Slicing is ``getitem``, a linear primitive, so the cotangent of
a factor the caller does not use arrives as zeros.  The rules are the standard ones (Giles 2008,
Townsend 2016, Walter et al. 2012), written with minidiff's own operations so they differentiate again.

Where a derivative divides by a gap between eigenvalues (or squared singular values), pairs closer than
a tolerance get a zero term and a ``RuntimeWarning`` naming the operation and the gap: the derivative of
the eigenvectors is not defined there.  Functions of the eigenvalues alone have their own primitives
(``eigvalsh``, ``svdvals``) whose first derivative needs no gaps and stays finite.
"""

from __future__ import annotations

import itertools
import warnings

from ..backend import numpy_module, scipy_linalg
from ..backend import solve_banded as _backend_solve_banded
from ..errors import LinAlgError
from ..tensor.core import Tracer
from .batching_rules import align
from .creation import eye
from .elementwise import where
from .matrix import _diag_part, _inverse_for, _mT, _tril, matmul
from .registry import General, bind, general, nondifferentiable
from .shape import concatenate, expand_dims, pad, stack, sum

# ----------------------------------------------------------------------------- helpers


def _concrete(x):
    """The backend array under any tracers (with vmap's batch axis, if any)."""
    while isinstance(x, Tracer):
        x = x.primal
    return x._data


def _scale(x) -> float:
    """The largest magnitude in ``x`` (at least 1), as a Python float: the scale of a tolerance."""
    a = _concrete(x)
    return max(1.0, float(abs(a).max())) if a.size else 1.0


def _eps(x) -> float:
    return 1.2e-7 if x.dtype.itemsize <= 4 else 2.3e-16


def _diagonal(x):
    """``(..., k, k) -> (..., k)``: the diagonal of each matrix."""
    return sum(_diag_part(x), axis=-1)


def _diag_embed(d):
    """``(..., k) -> (..., k, k)``: diagonal matrices with ``d`` on the diagonal."""

    return expand_dims(d, -1) * eye(d.shape[-1], dtype=d.dtype, device=d.device)


def _triu(x, k=0):
    return _mT(_tril(_mT(x), -k))


def _inverse_gaps(op: str, lam, what: str, warn: bool = True):
    """``F[i, j] = 1 / (lam[j] - lam[i])`` off the diagonal; zero on it and where the gap is below
    ``100·eps·max|lam|`` (a repeated value: the derivative is not defined), with a warning then."""
    tol = 100 * _eps(lam) * _scale(lam)
    diff = expand_dims(lam, -2) - expand_dims(lam, -1)
    small = abs(diff) <= tol
    if warn:
        _warn_gaps(op, _concrete(lam), tol, what)
    return where(small, 0.0, 1.0 / where(small, 1.0, diff))


def _warn_gaps(op: str, lam, tol: float, what: str) -> None:
    k = lam.shape[-1]
    if k < 2:
        return
    srt = lam.copy()
    srt.sort(axis=-1)
    gap = float((srt[..., 1:] - srt[..., :-1]).min())
    if gap <= tol:
        warnings.warn(
            f"{op}: two {what} are {gap:.3g} apart (tolerance {tol:.3g}): the derivative of the "
            f"corresponding vectors is not defined; their terms are set to zero",
            RuntimeWarning,
            stacklevel=4,
        )


def _nonzero(x) -> bool:
    return bool(_concrete(x).any())


# ----------------------------------------------------------------------------- solve_triangular
def _solve_triangular_impl(xp, a, b, lower, trans, unit_diagonal):
    solve = scipy_linalg(xp).solve_triangular
    lead = tuple(xp.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    a = xp.broadcast_to(a, lead + a.shape[-2:])
    b = xp.broadcast_to(b, lead + b.shape[-2:])
    dtype = xp.result_type(a.dtype, b.dtype, xp.float32)
    out = xp.empty(lead + b.shape[-2:], dtype=dtype)
    for idx in itertools.product(*(range(d) for d in lead)):
        try:
            out[idx] = solve(
                a[idx], b[idx], trans=trans, lower=lower, unit_diagonal=unit_diagonal, check_finite=False
            )
        except numpy_module.linalg.LinAlgError as exc:  # SciPy's and CuPy's are NumPy's class
            raise LinAlgError(
                f"linalg.solve_triangular: the triangular matrix of shape {tuple(a.shape[-2:])} is "
                f"singular ({exc}); a zero on the diagonal has no solution"
            ) from exc
    return out


def _triangle(t, lower, unit_diagonal):
    """The part of ``t`` that solve_triangular reads: one triangle, without the diagonal if unit."""
    k = 1 if unit_diagonal else 0
    return _tril(t, -k) if lower else _triu(t, k)


def _op(a, trans):
    return _mT(a) if trans else a


def _st(a, b, lower, trans, unit_diagonal):
    return bind(solve_triangular_p, a, b, lower=lower, trans=trans, unit_diagonal=unit_diagonal)


def _st_jvp_a(t, ans, a, b, lower, trans, unit_diagonal):
    """x = op(a)⁻¹ b  ⇒  dx = −op(a)⁻¹ op(da) x, with da the part of the tangent on the triangle read."""
    tri = _triangle(t, lower, unit_diagonal)
    return -_st(a, matmul(_op(tri, trans), ans), lower, trans, unit_diagonal)


def _st_vjp_a(g, ans, a, b, lower, trans, unit_diagonal):
    """ā = −(b̄ xᵀ) (or −(x b̄ᵀ) for the transposed solve) on the triangle read, b̄ = op(a)⁻ᵀ g."""
    bbar = _st(a, g, lower, 1 - trans, unit_diagonal)
    outer = matmul(ans, _mT(bbar)) if trans else matmul(bbar, _mT(ans))
    return -_triangle(outer, lower, unit_diagonal)


def _stacks_aligned(prim: General):
    """The batch rule of a solve of a stack of matrices by a stack of right-hand sides: the mapped
    axes are moved in front of both stacks, aligned to the same rank, and broadcast by ``prim``."""

    def rule(vals, batched, size, **params):
        (a, b), (ba, bb) = vals, batched
        la, lb = a.ndim - ba, b.ndim - bb
        target = max(la, lb)
        a = align(a, la, target) if ba else a
        b = align(b, lb, target) if bb else b
        return bind(prim, a, b, **params)

    return rule


solve_triangular_p: General = general(
    "solve_triangular",
    _solve_triangular_impl,
    (_st_jvp_a, lambda t, ans, a, b, lower, trans, unit_diagonal: _st(a, t, lower, trans, unit_diagonal)),
    (
        _st_vjp_a,
        lambda g, ans, a, b, lower, trans, unit_diagonal: _st(a, g, lower, 1 - trans, unit_diagonal),
    ),
    None,
    reads=("a ans", "a"),
    n_inputs=2,
)
solve_triangular_p.batch = _stacks_aligned(solve_triangular_p)


# ----------------------------------------------------------------------------- solve_banded
# A banded A of n columns is stored as SciPy's (and LAPACK's) ab: ab[..., upper + i - j, j] = A[i, j];
# row r of ab holds the diagonal of offset upper - r, and its entries outside the matrix are not read.
def _solve_banded_impl(xp, ab, b, lower, upper):
    try:
        return _backend_solve_banded(xp, lower, upper, ab, b)
    except numpy_module.linalg.LinAlgError as exc:  # SciPy's and CuPy's are NumPy's class
        raise LinAlgError(
            f"linalg.solve_banded: the banded matrix of shape {(ab.shape[-1], ab.shape[-1])} "
            f"(l={lower}, u={upper}, ab of shape {tuple(ab.shape)}) is singular ({exc})"
        ) from exc


def _shift(v, s: int, axis: int):
    """``w`` with ``w[i] = v[i + s]`` along ``axis`` (a negative axis), zero where ``i + s`` is outside."""
    n = v.shape[axis]
    k = min(abs(s), n)
    if k == 0:
        return v
    tail = (slice(None),) * (-axis - 1)
    part = v[(Ellipsis, slice(k, None) if s > 0 else slice(None, n - k)) + tail]
    width = [(0, 0)] * v.ndim
    width[v.ndim + axis] = (0, k) if s > 0 else (k, 0)
    return pad(part, width)


def _band_matvec(ab, x, lower, upper):
    """``A x`` for the banded ``A`` stored in ``ab`` and ``x`` of shape ``(..., n, k)``."""
    terms = [_shift(expand_dims(ab[..., r, :], -1) * x, upper - r, -2) for r in range(lower + upper + 1)]
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def _band_outer(lam, x, lower, upper):
    """``λ xᵀ`` (summed over the right-hand sides) restricted to the band, in band storage:
    ``out[..., r, j] = Σ_k λ[j + r − upper, k] x[j, k]``, zero at the corners outside the matrix."""
    rows = [sum(_shift(lam, r - upper, -2) * x, axis=-1) for r in range(lower + upper + 1)]
    return stack(rows, axis=-2)


def _band_transpose(ab, lower, upper):
    """The band storage of ``Aᵀ`` (``upper`` sub- and ``lower`` superdiagonals) from that of ``A``."""
    rows = [_shift(ab[..., lower + upper - r, :], r - lower, -1) for r in range(lower + upper + 1)]
    return stack(rows, axis=-2)


def _sb(ab, b, lower, upper):
    return bind(solve_banded_p, ab, b, lower=lower, upper=upper)


def _sb_transposed(ab, g, lower, upper):
    """``A⁻ᵀ g``: a banded solve with the transposed band."""
    return _sb(_band_transpose(ab, lower, upper), g, upper, lower)


def _sb_jvp_ab(t, ans, ab, b, lower, upper):
    """x = A⁻¹ b  ⇒  dx = −A⁻¹ (dA x), dA read from the band of the tangent."""
    return -_sb(ab, _band_matvec(t, ans, lower, upper), lower, upper)


def _sb_vjp_ab(g, ans, ab, b, lower, upper):
    """ā = −(λ xᵀ) on the band (in band storage), λ = A⁻ᵀ g."""
    return -_band_outer(_sb_transposed(ab, g, lower, upper), ans, lower, upper)


solve_banded_p: General = general(
    "solve_banded",
    _solve_banded_impl,
    (_sb_jvp_ab, lambda t, ans, ab, b, lower, upper: _sb(ab, t, lower, upper)),
    (_sb_vjp_ab, lambda g, ans, ab, b, lower, upper: _sb_transposed(ab, g, lower, upper)),
    None,
    reads=("ab ans", "ab"),
    n_inputs=2,
)
solve_banded_p.batch = _stacks_aligned(solve_banded_p)


# ----------------------------------------------------------------------------- eigh, eigvalsh
def _eigh_impl(xp, x, UPLO):
    w, v = xp.linalg.eigh(x, UPLO=UPLO)
    return xp.concatenate([w[..., None, :], v], axis=-2)


def unpack_eigh(p):
    """``(w, v)`` from eigh's packed output."""
    return p[..., 0, :], p[..., 1:, :]


def _sym(t, UPLO):
    """The symmetric matrix eigh reads from ``t``: its lower (``"L"``) or upper triangle."""
    s = t if UPLO == "L" else _mT(t)
    return _tril(s) + _mT(_tril(s, -1))


def _unsym(c, UPLO):
    """The transpose of :func:`_sym`: a cotangent of the symmetric matrix, onto the triangle read."""
    low = _tril(c + _mT(c), -1) + _diag_part(c)
    return low if UPLO == "L" else _mT(low)


def _eigh_jvp(t, ans, x, UPLO):
    w, v = unpack_eigh(ans)
    p = matmul(_mT(v), matmul(_sym(t, UPLO), v))
    dv = matmul(v, _inverse_gaps("linalg.eigh", w, "eigenvalues") * p)
    return concatenate([expand_dims(_diagonal(p), -2), dv], axis=-2)


def _eigh_vjp(g, ans, x, UPLO):
    w, v = unpack_eigh(ans)
    gw, gv = unpack_eigh(g)
    f = _inverse_gaps("linalg.eigh", w, "eigenvalues", warn=_nonzero(gv))
    inner = _diag_embed(gw) + f * matmul(_mT(v), gv)
    return _unsym(matmul(v, matmul(inner, _mT(v))), UPLO)


eigh_p: General = general(
    "eigh",
    _eigh_impl,
    _eigh_jvp,
    _eigh_vjp,
    lambda vals, b, n, UPLO: bind(eigh_p, vals[0], UPLO=UPLO),
    reads="ans",
)


def _eigvalsh_jvp(t, ans, x, UPLO):
    v = unpack_eigh(bind(eigh_p, x, UPLO=UPLO))[1]
    return sum(v * matmul(_sym(t, UPLO), v), axis=-2)


def _eigvalsh_vjp(g, ans, x, UPLO):
    v = unpack_eigh(bind(eigh_p, x, UPLO=UPLO))[1]
    return _unsym(matmul(v * expand_dims(g, -2), _mT(v)), UPLO)


eigvalsh_p: General = general(
    "eigvalsh",
    lambda xp, x, UPLO: xp.linalg.eigvalsh(x, UPLO=UPLO),
    _eigvalsh_jvp,
    _eigvalsh_vjp,
    lambda vals, b, n, UPLO: bind(eigvalsh_p, vals[0], UPLO=UPLO),
    reads="x",  # only the eigenvalues are output: the rule needs the eigenvectors again
)


# ----------------------------------------------------------------------------- svd, svdvals
def _svd_impl(xp, x):
    u, s, vh = xp.linalg.svd(x, full_matrices=False)
    return xp.concatenate([u, s[..., None, :], xp.swapaxes(vh, -1, -2)], axis=-2)


def unpack_svd(p, m):
    """``(U, s, V)`` from svd's packed output (``V`` is ``Vhᵀ``); ``m`` is the number of rows of x."""
    return p[..., :m, :], p[..., m, :], p[..., m + 1 :, :]


def _inverse_values(op, s, warn: bool = True):
    """``1/s`` where ``s`` is clear of zero, else 0 (with a warning): the terms of the SVD derivative
    that leave the column span of a non-square matrix."""
    tol = 100 * _eps(s) * _scale(s)
    if warn and s.shape[-1] and float(_concrete(s).min()) <= tol:
        warnings.warn(
            f"{op}: a singular value is {float(_concrete(s).min()):.3g} (tolerance {tol:.3g}) in a "
            "non-square matrix: the derivative of its singular vectors is not defined; the terms "
            "are set to zero",
            RuntimeWarning,
            stacklevel=3,
        )
    small = s <= tol
    return where(small, 0.0, 1.0 / where(small, 1.0, s))


def _svd_jvp(t, ans, x):
    m, n = x.shape[-2:]
    k = min(m, n)
    u, s, v = unpack_svd(ans, m)
    p = matmul(_mT(u), matmul(t, v))
    f = _inverse_gaps("linalg.svd", s * s, "squared singular values")
    row, col = expand_dims(s, -2), expand_dims(s, -1)
    du = matmul(u, f * (p * row + col * _mT(p)))
    dv = matmul(v, f * (col * p + _mT(p) * row))
    if m > k:  # (I - U Uᵀ) T V S⁻¹
        du = du + (matmul(t, v) - matmul(u, p)) * expand_dims(_inverse_values("linalg.svd", s), -2)
    if n > k:  # (I - V Vᵀ) Tᵀ U S⁻¹
        dv = dv + (matmul(_mT(t), u) - matmul(v, _mT(p))) * expand_dims(_inverse_values("linalg.svd", s), -2)
    return concatenate([du, expand_dims(_diagonal(p), -2), dv], axis=-2)


def _svd_vjp(g, ans, x):
    m, n = x.shape[-2:]
    k = min(m, n)
    u, s, v = unpack_svd(ans, m)
    gu, gs, gv = unpack_svd(g, m)
    uses_vectors = _nonzero(gu) or _nonzero(gv)
    f = _inverse_gaps("linalg.svd", s * s, "squared singular values", warn=uses_vectors)
    row, col = expand_dims(s, -2), expand_dims(s, -1)
    j = f * (matmul(_mT(u), gu) - matmul(_mT(gu), u))
    h = f * (matmul(_mT(v), gv) - matmul(_mT(gv), v))
    out = matmul(u, matmul(j * row + _diag_embed(gs) + col * h, _mT(v)))
    if m > k:  # (I - U Uᵀ) Ū S⁻¹ Vᵀ
        sinv = expand_dims(_inverse_values("linalg.svd", s, uses_vectors), -2)
        out = out + matmul((gu - matmul(u, matmul(_mT(u), gu))) * sinv, _mT(v))
    if n > k:  # U S⁻¹ V̄ᵀ (I - V Vᵀ)
        sinv = expand_dims(_inverse_values("linalg.svd", s, uses_vectors), -2)
        out = out + matmul(u * sinv, _mT(gv - matmul(v, matmul(_mT(v), gv))))
    return out


svd_p: General = general(
    "svd", _svd_impl, _svd_jvp, _svd_vjp, lambda vals, b, n: bind(svd_p, vals[0]), reads="ans"
)


def _svdvals_jvp(t, ans, x):
    u, _, v = unpack_svd(bind(svd_p, x), x.shape[-2])
    return sum(u * matmul(t, v), axis=-2)


def _svdvals_vjp(g, ans, x):
    u, _, v = unpack_svd(bind(svd_p, x), x.shape[-2])
    return matmul(u * expand_dims(g, -2), _mT(v))


svdvals_p: General = general(
    "svdvals",
    lambda xp, x: xp.linalg.svd(x, compute_uv=False),
    _svdvals_jvp,
    _svdvals_vjp,
    lambda vals, b, n: bind(svdvals_p, vals[0]),
    reads="x",
)


def _svd_complete_impl(xp, x):
    """Full ``U (m, m)``, ``s``, ``V (n, n)`` of a non-square matrix, packed with zero padding."""
    u, s, vh = xp.linalg.svd(x, full_matrices=True)
    m, n = x.shape[-2:]
    width = max(m, n)
    out = xp.zeros(x.shape[:-2] + (m + 1 + n, width), dtype=u.dtype)
    out[..., :m, :m] = u
    out[..., m, : s.shape[-1]] = s
    out[..., m + 1 :, :n] = xp.swapaxes(vh, -1, -2)
    return out


#: values only: the public svd refuses to run it on a value that carries derivatives
svd_complete_p = nondifferentiable("svd_complete", _svd_complete_impl)


# ----------------------------------------------------------------------------- qr (m >= n)
def _qr_impl(xp, x):
    q, r = xp.linalg.qr(x, mode="reduced")
    return xp.concatenate([q, r], axis=-2)


def unpack_qr(p, m):
    return p[..., :m, :], p[..., m:, :]


def _solve_r(r, rhs, trans, shape):
    """``R⁻¹ rhs`` (``R⁻ᵀ rhs`` if ``trans``); a zero on R's diagonal raises an error naming qr."""
    try:
        return _st(r, rhs, False, trans, False)
    except LinAlgError as exc:
        raise LinAlgError(
            f"linalg.qr: no derivative at a rank-deficient matrix of shape {tuple(shape)}: R is singular"
        ) from exc


def _qr_jvp(t, ans, x):
    q, r = unpack_qr(ans, x.shape[-2])
    dx_rinv = _mT(_solve_r(r, _mT(t), 1, x.shape))  # t R⁻¹
    qt = matmul(_mT(q), dx_rinv)
    low = _tril(qt, -1)
    omega = low - _mT(low)  # skew-symmetric: Qᵀ dQ
    dq = matmul(q, omega - qt) + dx_rinv
    dr = matmul(qt - omega, r)
    return concatenate([dq, dr], axis=-2)


def _qr_vjp(g, ans, x):
    q, r = unpack_qr(ans, x.shape[-2])
    gq, gr = unpack_qr(g, x.shape[-2])
    m = matmul(r, _mT(gr)) - matmul(_mT(gq), q)
    low = _tril(m, -1)
    copyltu = low + _mT(low) + _diag_part(m)
    b = gq + matmul(q, copyltu)
    return _mT(_solve_r(r, _mT(b), 0, x.shape))  # b R⁻ᵀ


qr_p: General = general("qr", _qr_impl, _qr_jvp, _qr_vjp, lambda vals, b, n: bind(qr_p, vals[0]), reads="ans")


# ----------------------------------------------------------------------------- slogdet
def _logabsdet_jvp(t, ans, x):
    return sum(_mT(_inverse_for("linalg.slogdet", x)) * t, axis=(-2, -1))


def _logabsdet_vjp(g, ans, x):
    return expand_dims(g, (-2, -1)) * _mT(_inverse_for("linalg.slogdet", x))


logabsdet_p: General = general(
    "slogdet",
    lambda xp, x: xp.linalg.slogdet(x)[1],
    _logabsdet_jvp,
    _logabsdet_vjp,
    lambda vals, b, n: bind(logabsdet_p, vals[0]),
    reads="x",  # the rules invert the input; the output (log|det|) is not read
)
#: the sign is piecewise constant: no derivative
slogdet_sign_p = nondifferentiable("slogdet_sign", lambda xp, x: xp.linalg.slogdet(x)[0])

__all__ = [
    "solve_triangular_p",
    "solve_banded_p",
    "eigh_p",
    "eigvalsh_p",
    "svd_p",
    "svdvals_p",
    "svd_complete_p",
    "qr_p",
    "logabsdet_p",
    "slogdet_sign_p",
    "unpack_eigh",
    "unpack_svd",
    "unpack_qr",
]
