"""``md.linalg``: linear algebra differentiable in both modes, to any order, batched over leading axes.

NumPy's names and signatures (SciPy's for ``solve_triangular``, ``solve_banded``, ``cho_factor``,
``cho_solve`` and ``expm``), so code written for ``np.linalg`` reads the same:

* solves and inverses — ``solve``, ``inv``, ``solve_triangular``, ``solve_banded``, ``cho_factor``,
  ``cho_solve``;
* determinants — ``det``, ``slogdet`` (the sign carries no derivative);
* decompositions — ``cholesky``, ``eigh``, ``eigvalsh``, ``svd``, ``svdvals``, ``qr``;
* norms — ``norm`` (vector ``ord`` 1, 2, ±inf, 0, any p; matrix ``'fro'``, ``'nuc'``, ±1, ±2, ±inf),
  ``vector_norm``, ``matrix_norm``;
* ``matrix_power``, ``trace``, ``expm``.

Decompositions, ``solve_triangular``, ``solve_banded`` and ``slogdet`` are primitives with their JVP and VJP rules side by
side (``minidiff/primitives/decompositions.py``); the rest are compositions of primitives.  Conventions
where a derivative does not exist are stated in ``docs/linalg.md``: repeated eigenvalues or singular
values give zero terms and a ``RuntimeWarning`` naming the gap; a singular matrix where an inverse is
needed raises :class:`~minidiff.errors.LinAlgError` naming the operation and the shape; a norm at zero
has derivative zero (as ``abs`` at 0).

>>> import minidiff as md
>>> a = md.tensor([[2.0, 1.0], [1.0, 2.0]])
>>> w, v = md.linalg.eigh(a)
>>> w.tolist()
[1.0, 3.0]
>>> md.grad(lambda a: md.linalg.eigvalsh(a)[1])(a).numpy().round(6).tolist()  # v vᵀ, on the lower triangle
[[0.5, 0.0], [1.0, 0.5]]
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

from ..errors import DTypeError, LinAlgError, ShapeError
from ..tensor.core import ArrayLike, Axis, DTypeLike, Tensor, Tracer
from . import ops as _ops
from .creation import asarray, eye
from .decompositions import (
    eigh_p,
    eigvalsh_p,
    logabsdet_p,
    qr_p,
    slogdet_sign_p,
    solve_banded_p,
    solve_triangular_p,
    svd_complete_p,
    svd_p,
    svdvals_p,
    unpack_eigh,
    unpack_qr,
    unpack_svd,
)
from .elementwise import abs as _abs
from .elementwise import astype, sqrt, where
from .matrix import cholesky, det, inv, matmul, solve
from .reductions import max as _amax
from .reductions import min as _amin
from .registry import bind
from .shape import broadcast_to, concatenate, expand_dims, moveaxis, reshape, squeeze, swapaxes
from .shape import sum as _sum

__all__ = [
    "solve",
    "inv",
    "det",
    "cholesky",
    "eigh",
    "eigvalsh",
    "svd",
    "svdvals",
    "qr",
    "slogdet",
    "norm",
    "vector_norm",
    "matrix_norm",
    "solve_triangular",
    "solve_banded",
    "cho_factor",
    "cho_solve",
    "matrix_power",
    "trace",
    "expm",
    "EighResult",
    "SVDResult",
    "QRResult",
    "SlogdetResult",
]


class EighResult(NamedTuple):
    eigenvalues: Tensor
    eigenvectors: Tensor


class SVDResult(NamedTuple):
    U: Tensor
    S: Tensor
    Vh: Tensor


class QRResult(NamedTuple):
    Q: Tensor
    R: Tensor


class SlogdetResult(NamedTuple):
    sign: Tensor
    logabsdet: Tensor


# ----------------------------------------------------------------------------- checks
def _matrices(op: str, x, square: bool = False) -> Tensor:
    """``x`` as a floating (stack of) matrices, else an error naming ``op``, the shape and dtype."""
    x = asarray(x)
    if x.ndim < 2:
        raise ShapeError(
            f"{op}: expected a (stack of) matrices with at least 2 dimensions, got shape {x.shape}"
        )
    if square and x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"{op}: expected a (stack of) square matrices, got shape {x.shape}")
    _floating(op, x)
    return x


def _floating(op: str, x: Tensor) -> None:
    if x.dtype.kind != "f":
        raise DTypeError(f"{op}: expected floating-point values, got {x.dtype}; cast with .astype('float64')")


def _carries_derivative(x) -> bool:
    """Whether ``x`` is traced by a differentiating transform or recorded on a tape (not just vmapped)."""
    while isinstance(x, Tracer):
        trace = x._trace
        if trace.kind == "forward" or (trace.kind in ("reverse", "tape") and trace.recording):
            return True
        x = x.primal
    return False


def _broadcast_lead(op: str, a: Tensor, b: Tensor) -> None:
    sa, sb = a.shape[:-2], b.shape[:-2] if b.ndim > 2 else ()
    for p, q in zip(reversed(sa), reversed(sb)):
        if p != q and 1 not in (p, q):
            raise ShapeError(f"{op}: the stacks of a {a.shape} and b {b.shape} do not broadcast")


# ----------------------------------------------------------------------------- triangular solves
_TRANS = {0: 0, "N": 0, 1: 1, "T": 1, 2: 1, "C": 1}


def solve_triangular(
    a: ArrayLike,
    b: ArrayLike,
    trans: int | str = 0,
    lower: bool = False,
    unit_diagonal: bool = False,
    overwrite_b: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Solve ``op(a) x = b`` for triangular ``a`` (``op`` is the identity, or the transpose if
    ``trans`` is 1/'T'/'C'), reading only the ``lower`` (else upper) triangle, as SciPy.

    ``b`` of shape ``(M,)`` is one vector; ``(..., M, K)`` a stack of right-hand sides (broadcast against
    the stack of ``a``).  ``overwrite_b`` and ``check_finite`` are accepted and ignored.  A zero on the
    diagonal raises :class:`~minidiff.errors.LinAlgError`.

    >>> import minidiff as md
    >>> L = md.tensor([[2.0, 0.0], [1.0, 1.0]])
    >>> md.linalg.solve_triangular(L, md.tensor([2.0, 3.0]), lower=True).tolist()
    [1.0, 2.0]
    """
    op = "linalg.solve_triangular"
    a, b = _matrices(op, a, square=True), asarray(b)
    _floating(op, b)
    if trans not in _TRANS:
        raise ValueError(f"{op}: trans must be 0, 1, 2, 'N', 'T' or 'C', got {trans!r}")
    vec = b.ndim == 1
    if b.ndim == 0 or (b.shape[0] if vec else b.shape[-2]) != a.shape[-1]:
        raise ShapeError(f"{op}: a of shape {a.shape} does not fit b of shape {b.shape}")
    _broadcast_lead(op, a, b)
    rhs = expand_dims(b, -1) if vec else b
    out = bind(
        solve_triangular_p, a, rhs, lower=bool(lower), trans=_TRANS[trans], unit_diagonal=bool(unit_diagonal)
    )
    return squeeze(out, -1) if vec else out


def solve_banded(
    l_and_u: tuple[int, int],
    ab: ArrayLike,
    b: ArrayLike,
    overwrite_ab: bool = False,
    overwrite_b: bool = False,
    check_finite: bool = True,
) -> Tensor:
    """Solve ``A x = b`` for a banded ``A`` with ``l`` sub- and ``u`` superdiagonals, as SciPy.

    ``ab`` holds the band in LAPACK storage, ``ab[u + i - j, j] == A[i, j]``, shape ``(l + u + 1, n)``
    (or a stack ``(..., l + u + 1, n)``); its corners outside the matrix are not read, and their
    cotangent is zero.  ``b`` of shape ``(n,)`` is one vector; ``(..., n, k)`` a stack of right-hand
    sides, broadcast against the stack of ``ab``.  ``overwrite_*`` and ``check_finite`` are accepted
    and ignored.  A singular matrix raises :class:`~minidiff.errors.LinAlgError`.  The derivatives are
    banded solves again (with the transposed band for the VJP), so they differentiate to any order.

    >>> import minidiff as md
    >>> ab = md.tensor([[0.0, 1.0, 1.0], [4.0, 4.0, 4.0], [1.0, 1.0, 0.0]])  # tridiagonal (1, 4, 1)
    >>> md.linalg.solve_banded((1, 1), ab, md.tensor([5.0, 6.0, 5.0])).tolist()
    [1.0, 1.0, 1.0]
    >>> g = md.grad(lambda ab: md.linalg.solve_banded((1, 1), ab, md.tensor([5.0, 6.0, 5.0])).sum())(ab)
    >>> (g.numpy() + 0.0).round(4).tolist()  # −(A⁻ᵀ1) xᵀ on the band; the unread corners get 0
    [[0.0, -0.2143, -0.1429], [-0.2143, -0.1429, -0.2143], [-0.1429, -0.2143, 0.0]]
    """
    op = "linalg.solve_banded"
    lower, upper = _band_widths(op, l_and_u)
    ab, b = asarray(ab), asarray(b)
    _floating(op, ab)
    _floating(op, b)
    if ab.ndim < 2 or ab.shape[-2] != lower + upper + 1:
        raise ShapeError(
            f"{op}: ab must have shape (..., l + u + 1, n) = (..., {lower + upper + 1}, n) for "
            f"(l, u) = ({lower}, {upper}), got shape {ab.shape}"
        )
    vec = b.ndim == 1
    if b.ndim == 0 or (b.shape[0] if vec else b.shape[-2]) != ab.shape[-1]:
        raise ShapeError(
            f"{op}: ab of shape {ab.shape} (n = {ab.shape[-1]}) does not fit b of shape {b.shape}"
        )
    _broadcast_lead(op, ab, b)
    out = bind(solve_banded_p, ab, expand_dims(b, -1) if vec else b, lower=lower, upper=upper)
    return squeeze(out, -1) if vec else out


def _band_widths(op: str, l_and_u: Any) -> tuple[int, int]:
    ok = isinstance(l_and_u, (tuple, list)) and len(l_and_u) == 2
    if not ok or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in l_and_u):
        raise ValueError(
            f"{op}: (l, u) must be a pair of non-negative integers (the numbers of sub- and "
            f"superdiagonals), got {l_and_u!r}"
        )
    return int(l_and_u[0]), int(l_and_u[1])


def cho_factor(
    a: ArrayLike, lower: bool = False, overwrite_a: bool = False, check_finite: bool = True
) -> tuple[Tensor, bool]:
    """``(c, lower)`` for :func:`cho_solve`: the Cholesky factor of ``a`` (``c`` upper unless ``lower``).

    Unlike SciPy's, the other triangle of ``c`` holds zeros.
    """
    low = cholesky(_matrices("linalg.cho_factor", a, square=True))
    return (low if lower else _mT(low)), bool(lower)


def cho_solve(
    c_and_lower: tuple[Tensor, bool], b: ArrayLike, overwrite_b: bool = False, check_finite: bool = True
) -> Tensor:
    """Solve ``a x = b`` given ``(c, lower)`` from :func:`cho_factor` (two triangular solves).

    >>> import minidiff as md
    >>> a = md.tensor([[4.0, 2.0], [2.0, 3.0]])
    >>> md.linalg.cho_solve(md.linalg.cho_factor(a, lower=True), md.tensor([6.0, 5.0])).numpy().round(6).tolist()
    [1.0, 1.0]
    """
    c, lower = c_and_lower
    if lower:
        return solve_triangular(c, solve_triangular(c, b, lower=True), trans=1, lower=True)
    return solve_triangular(c, solve_triangular(c, b, trans=1, lower=False), lower=False)


# ----------------------------------------------------------------------------- decompositions
def _uplo(op: str, UPLO: str) -> str:
    if str(UPLO).upper() not in ("L", "U"):
        raise ValueError(f"{op}: UPLO must be 'L' or 'U', got {UPLO!r}")
    return str(UPLO).upper()


def eigh(a: ArrayLike, UPLO: str = "L") -> EighResult:
    """Eigenvalues (ascending) and eigenvectors (columns) of symmetric matrices, from the ``UPLO``
    triangle.

    Eigenvectors are defined up to sign, and not at all within a repeated eigenvalue: there their
    derivative is set to zero with a ``RuntimeWarning``.  For functions of the eigenvalues alone use
    :func:`eigvalsh`, whose derivative exists at repeated eigenvalues too.

    >>> import minidiff as md
    >>> w, v = md.linalg.eigh(md.tensor([[2.0, 0.0], [0.0, 1.0]]))
    >>> w.tolist(), abs(v).tolist()
    ([1.0, 2.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    a = _matrices("linalg.eigh", a, square=True)
    return EighResult(*unpack_eigh(bind(eigh_p, a, UPLO=_uplo("linalg.eigh", UPLO))))


def eigvalsh(a: ArrayLike, UPLO: str = "L") -> Tensor:
    """Eigenvalues (ascending) of symmetric matrices; derivative ``diag(Vᵀ dA V)``, finite at repeats."""
    a = _matrices("linalg.eigvalsh", a, square=True)
    return bind(eigvalsh_p, a, UPLO=_uplo("linalg.eigvalsh", UPLO))


def svd(a: ArrayLike, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False) -> Any:
    """Singular value decomposition ``a = U diag(S) Vh``, as ``numpy.linalg.svd`` (``hermitian`` ignored).

    Differentiable when ``full_matrices=False``, or when the matrices are square.  The extra columns of a
    full ``U`` or ``V`` of a non-square matrix are any orthonormal completion, so they have no
    derivative: differentiating through them raises :class:`~minidiff.errors.LinAlgError`.
    ``compute_uv=False`` returns ``S`` only (as :func:`svdvals`).

    >>> import minidiff as md
    >>> u, s, vh = md.linalg.svd(md.tensor([[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]]), full_matrices=False)
    >>> s.tolist(), u.shape, vh.shape
    ([3.0, 2.0], (3, 2), (2, 2))
    """
    op = "linalg.svd"
    a = _matrices(op, a)
    if not compute_uv:
        return bind(svdvals_p, a)
    m, n = a.shape[-2:]
    if full_matrices and m != n:
        if _carries_derivative(a):
            raise LinAlgError(
                f"{op}: no derivative of full_matrices=True for a non-square matrix ({a.shape}): the "
                f"extra columns of U or V are an arbitrary orthonormal completion; use full_matrices=False"
            )
        p = bind(svd_complete_p, a)
        return SVDResult(p[..., :m, :m], p[..., m, : min(m, n)], _mT(p[..., m + 1 :, :n]))
    u, s, v = unpack_svd(bind(svd_p, a), m)
    return SVDResult(u, s, _mT(v))


def svdvals(x: ArrayLike) -> Tensor:
    """Singular values (descending); derivative ``diag(Uᵀ dA V)``, finite at repeated values."""
    return bind(svdvals_p, _matrices("linalg.svdvals", x))


def qr(a: ArrayLike, mode: str = "reduced") -> Any:
    """QR decomposition, as ``numpy.linalg.qr`` in modes ``'reduced'``, ``'r'`` and ``'complete'``.

    Differentiable in every mode except ``'complete'`` of a tall matrix (its extra columns of Q are
    arbitrary; refused).  A wide matrix ``[A1 A2]`` is decomposed as ``A1 = Q R1``, ``R2 = Qᵀ A2``.
    A rank-deficient ``a`` has no QR derivative (``R`` singular): it raises.

    >>> import minidiff as md
    >>> q, r = md.linalg.qr(md.tensor([[3.0, 1.0], [4.0, 2.0]]))
    >>> round(abs(r[0, 0]).item(), 6)
    5.0
    """
    op = "linalg.qr"
    a = _matrices(op, a)
    if mode not in ("reduced", "r", "complete"):
        raise ValueError(f"{op}: mode must be 'reduced', 'r' or 'complete', got {mode!r}")
    m, n = a.shape[-2:]
    if mode == "complete" and m > n:
        raise LinAlgError(
            f"{op}: mode='complete' of a tall matrix ({a.shape}) is not supported; use 'reduced'"
        )
    if m >= n:
        q, r = unpack_qr(bind(qr_p, a), m)
    else:
        q, r1 = qr(a[..., :, :m])
        r = concatenate([r1, matmul(_mT(q), a[..., :, m:])], axis=-1)
    return r if mode == "r" else QRResult(q, r)


def slogdet(a: ArrayLike) -> SlogdetResult:
    """``(sign, log|det a|)``; the sign has no derivative.  A singular matrix gives ``(0, -inf)``, and
    its derivative raises :class:`~minidiff.errors.LinAlgError`.

    >>> import minidiff as md
    >>> sign, logdet = md.linalg.slogdet(md.tensor([[0.0, 2.0], [3.0, 0.0]]))
    >>> sign.item(), round(logdet.item(), 6)
    (-1.0, 1.791759)
    """
    a = _matrices("linalg.slogdet", a, square=True)
    return SlogdetResult(bind(slogdet_sign_p, a), bind(logabsdet_p, a))


# ----------------------------------------------------------------------------- norms
def _safe_sqrt(s):
    """``sqrt(s)`` with derivative 0 where ``s = 0`` (the norm at zero, as ``abs`` at 0)."""
    pos = s > 0
    return where(pos, sqrt(where(pos, s, 1.0)), 0.0)


def _safe_root(s, p):
    pos = s > 0
    return where(pos, where(pos, s, 1.0) ** (1.0 / p), 0.0)


def _vector_norm(x, ord, axis):  # noqa: A002 - NumPy's name
    if ord is None or ord == 2:
        return _safe_sqrt(_sum(x * x, axis=axis))
    if ord == math.inf:
        return _amax(_abs(x), axis=axis)
    if ord == -math.inf:
        return _amin(_abs(x), axis=axis)
    if ord == 1:
        return _sum(_abs(x), axis=axis)
    if ord == 0:
        return _sum(astype(x != 0, x.dtype), axis=axis)
    if isinstance(ord, str):
        raise ValueError(f"linalg.norm: invalid norm order {ord!r} for vectors")
    return _safe_root(_sum(_abs(x) ** float(ord), axis=axis), float(ord))


def _matrix_norm(x, ord, row, col):  # noqa: A002 - NumPy's name
    if ord in (None, "fro", "f"):
        return _safe_sqrt(_sum(x * x, axis=(row, col)))
    if ord in ("nuc", 2, -2):
        s = svdvals(moveaxis(x, (row, col), (-2, -1)))
        return _sum(s, axis=-1) if ord == "nuc" else _amax(s, axis=-1) if ord == 2 else _amin(s, axis=-1)
    if ord in (1, -1, math.inf, -math.inf):
        summed, other = (row, col) if ord in (1, -1) else (col, row)  # column sums for 1, row sums for inf
        sums = _sum(_abs(x), axis=summed)
        other = other - 1 if other > summed else other
        return _amax(sums, axis=other) if ord in (1, math.inf) else _amin(sums, axis=other)
    raise ValueError(f"linalg.norm: invalid norm order {ord!r} for matrices")


def _norm_axes(x, axis):
    nd = x.ndim
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        a = operator.index(a)
        if not -nd <= a < nd:
            raise ShapeError(f"linalg.norm: axis {a} is out of range for shape {x.shape}")
        out.append(a % nd)
    if len(set(out)) != len(out):
        raise ShapeError(f"linalg.norm: duplicate axes {axis} for shape {x.shape}")
    return tuple(out)


def norm(x: ArrayLike, ord: Any = None, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A002 - NumPy's name
    """Vector or matrix norm, as ``numpy.linalg.norm``.

    With ``axis=None`` a 1-D input takes a vector norm, a 2-D input a matrix norm, and ``ord=None``
    the 2-norm of all entries.  Vector ``ord``: 2 (default), 1, ``inf``, ``-inf``, 0 (count of
    non-zeros, no derivative) and any other number p.  Matrix ``ord``: ``'fro'`` (default), ``'nuc'``
    (sum of singular values), 2 / -2 (largest / smallest singular value), 1 / -1 (max / min column
    sum of ``|x|``), ``inf`` / ``-inf`` (max / min row sum).

    Conventions at kinks: the derivative of a norm at zero is zero (as ``abs`` at 0); ties in a max or
    min share the derivative evenly (as ``md.max``).

    >>> import minidiff as md
    >>> md.linalg.norm(md.tensor([3.0, 4.0])).item()
    5.0
    >>> md.grad(md.linalg.norm)(md.zeros(2)).tolist()
    [0.0, 0.0]
    """
    x = asarray(x)
    _floating("linalg.norm", x)
    if axis is None:
        if ord is None or (ord in ("fro", "f") and x.ndim == 2):
            out = _safe_sqrt(_sum(x * x))
            return reshape(out, (1,) * x.ndim) if keepdims else out
        if x.ndim not in (1, 2):
            raise ShapeError(f"linalg.norm: ord={ord!r} needs a 1-D or 2-D input or an axis, got {x.shape}")
        axis = tuple(range(x.ndim))
    axes = _norm_axes(x, axis)
    if len(axes) == 1:
        out = _vector_norm(x, ord, axes[0])
    elif len(axes) == 2:
        out = _matrix_norm(x, ord, *axes)
    else:
        raise ShapeError(f"linalg.norm: axis must name 1 or 2 axes, got {axis}")
    return expand_dims(out, tuple(sorted(axes))) if keepdims else out


def vector_norm(x: ArrayLike, axis: Axis = None, keepdims: bool = False, ord: Any = 2) -> Tensor:  # noqa: A002
    """``numpy.linalg.vector_norm``: a vector norm over ``axis`` (all axes, flattened, if None)."""
    x = asarray(x)
    if axis is None:
        out = norm(reshape(x, (-1,)), ord=ord)
        return reshape(out, (1,) * x.ndim) if keepdims else out
    return norm(x, ord=ord, axis=axis, keepdims=keepdims)


def matrix_norm(x: ArrayLike, keepdims: bool = False, ord: Any = "fro") -> Tensor:  # noqa: A002
    """``numpy.linalg.matrix_norm``: a matrix norm of the last two axes."""
    return norm(_matrices("linalg.matrix_norm", x), ord=ord, axis=(-2, -1), keepdims=keepdims)


# ----------------------------------------------------------------------------- powers, trace, expm
def matrix_power(a: ArrayLike, n: int) -> Tensor:
    """``a`` multiplied by itself ``n`` times (by squaring); ``n = 0`` the identity, ``n < 0`` powers of
    ``inv(a)``.

    >>> import minidiff as md
    >>> md.linalg.matrix_power(md.tensor([[1.0, 1.0], [0.0, 1.0]]), 3).tolist()
    [[1.0, 3.0], [0.0, 1.0]]
    """
    a = _matrices("linalg.matrix_power", a, square=True)
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"linalg.matrix_power: the exponent must be an integer, got {n!r}") from None
    if n == 0:
        return broadcast_to(eye(a.shape[-1], dtype=a.dtype, device=a.device), a.shape)
    base, n = (inv(a), -n) if n < 0 else (a, n)
    out = None
    while n:
        if n & 1:
            out = base if out is None else matmul(out, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    assert out is not None  # n >= 1 here, so some bit of n was set
    return out


def trace(x: ArrayLike, offset: int = 0, dtype: DTypeLike = None) -> Tensor:
    """Sum of diagonal ``offset`` of the last two axes (``numpy.linalg.trace``)."""
    out = _ops.trace(_matrices("linalg.trace", x), offset)
    return out if dtype is None else astype(out, dtype)


def _one_norm(x) -> float:
    """The largest 1-norm among the matrices of ``x`` (any vmapped batch too), as a Python float."""
    while isinstance(x, Tracer):
        x = x.primal
    return float(_amax(_sum(_abs(x), axis=-2)).item()) if x.size else 0.0


def _mT(a) -> Tensor:
    """The matrix transpose of a stack (the last two axes swapped)."""
    return swapaxes(a, -1, -2)


def expm(a: ArrayLike, terms: int = 14) -> Tensor:
    """The matrix exponential ``e^a`` (of each matrix in a stack): scaling and squaring around a
    Taylor polynomial, with matrix products only, so every derivative of it is automatic.

    ``a`` is scaled by ``2^-s`` to a 1-norm of at most 1/2, where the Taylor remainder after ``terms``
    terms is below ``0.5^(terms+1)/(terms+1)! ≈ 2e-17`` (14 terms), then squared ``s`` times.  The
    derivative is that of this polynomial: the Fréchet derivative to the same accuracy.

    >>> import minidiff as md
    >>> round(md.linalg.expm(md.tensor([[0.0, 1.0], [0.0, 0.0]]))[0, 1].item(), 12)
    1.0
    """
    a = _matrices("linalg.expm", a, square=True)
    norm1 = _one_norm(a)
    s = 0 if norm1 <= 0.5 or not math.isfinite(norm1) else int(math.ceil(math.log2(norm1 / 0.5)))
    x = a * (0.5**s)
    ident = eye(a.shape[-1], dtype=a.dtype, device=a.device)
    r = ident + x / terms
    for k in range(terms - 1, 0, -1):  # Horner: I + X/k (I + X/(k+1) (…))
        r = ident + matmul(x, r) / k
    for _ in range(s):
        r = matmul(r, r)
    return r
