"""Matrix primitives: matmul, einsum, solve, inv, det, cholesky (decompositions: ``decompositions``).

Matrix rules are written with matmul and solve themselves, so they differentiate again.
"""

from __future__ import annotations

from typing import Any

from ..backend import numpy_module
from ..errors import LinAlgError, ShapeError, describe
from ..tensor.core import ArrayLike, Tensor, column_major
from .batching_rules import align
from .creation import arange, eye
from .elementwise import multiply, where
from .registry import General, bind, general
from .shape import _t, broadcast_to, expand_dims, reshape, squeeze, sum, transpose_p


def _mT(a):
    """Swap the last two axes (the matrix transpose of a stack)."""
    n = a.ndim
    return bind(transpose_p, a, axes=tuple(range(n - 2)) + (n - 1, n - 2))


def _col(v):
    return expand_dims(v, -1)


# ----------------------------------------------------------------------------- matmul
def _matmul_vjp_x(g, ans, x, y):
    if y.ndim == 1:
        return multiply(_col(g), y) if x.ndim > 1 else g * y
    if x.ndim == 1:
        return squeeze(matmul(y, _col(g)), -1)
    return matmul(g, _mT(y))


def _matmul_vjp_y(g, ans, x, y):
    if x.ndim == 1:
        return multiply(_col(x), expand_dims(g, -2)) if y.ndim > 1 else g * x
    if y.ndim == 1:
        return squeeze(matmul(_mT(x), _col(g)), -1)
    if column_major(y):  # y is W.T: compute (gᵀx)ᵀ so the gradient of W comes out row-major
        return _mT(matmul(_mT(g), x))
    return matmul(_mT(x), g)


def _batch_matmul(vals, batched, size, prim=None):
    """Batch a product of two operands that may be 1-D: make both 2-D, align ranks, squeeze back."""
    prim = prim or matmul_p
    (x, y), (bx, by) = vals, batched
    lx, ly = x.ndim - bx, y.ndim - by
    row, col = lx == 1, ly == 1 and prim is matmul_p
    if row:
        x = expand_dims(x, x.ndim - 1)
        lx = 2
    if col:
        y = expand_dims(y, y.ndim)
        ly = 2
    target = max(lx, ly)
    if bx:
        x = align(x, lx, target)
    if by:
        y = align(y, ly, target)
    out = bind(prim, x, y)
    if col:
        out = squeeze(out, -1)
    if row:
        out = squeeze(out, -1 if col else -2)
    return out


matmul_p: General = general(
    "matmul",
    lambda xp, x, y: xp.matmul(x, y),
    (lambda t, ans, x, y: matmul(t, y), lambda t, ans, x, y: matmul(x, t)),
    (_matmul_vjp_x, _matmul_vjp_y),
    _batch_matmul,
    reads=("y", "x"),  # and the other operand's shape and memory order, which the tape always keeps
    n_inputs=2,
)


def matmul(x: ArrayLike, y: ArrayLike) -> Tensor:
    """Matrix product with NumPy's rules (1-D operands, broadcast stacks of matrices)."""
    x, y = _t(x), _t(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ShapeError(f"matmul: operands must be at least 1-D, got shapes {x.shape} and {y.shape}")
    kx = x.shape[-1]
    ky = y.shape[-2] if y.ndim > 1 else y.shape[0]
    if kx != ky:
        raise ShapeError(f"matmul: inner dimensions differ: {x.shape} @ {y.shape} ({kx} != {ky})")
    return bind(matmul_p, x, y)


# ----------------------------------------------------------------------------- einsum
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _parse_einsum(spec: str, shapes):
    """``spec`` with explicit output and no ellipsis, checked against the operand shapes."""
    spec = spec.replace(" ", "")
    if "->" in spec:
        ins, out = spec.split("->")
    else:
        ins, out = spec, None
    terms = ins.split(",")
    if len(terms) != len(shapes):
        raise ShapeError(f"einsum: {spec!r} names {len(terms)} operands but {len(shapes)} were given")
    used = set(c for c in spec if c.isalpha())
    free = [c for c in _LETTERS if c not in used]
    n_ell = 0
    for t, s in zip(terms, shapes):
        if "..." in t:
            n_ell = max(n_ell, len(s) - (len(t) - 3))
    ell = "".join(free[:n_ell])
    new_terms = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            k = len(s) - (len(t) - 3)
            if k < 0:
                raise ShapeError(f"einsum: operand {t!r} has more letters than its {len(s)} dimensions")
            t = t.replace("...", ell[n_ell - k :])
        if len(t) != len(s) or not all(c.isalpha() for c in t):
            raise ShapeError(f"einsum: subscripts {t!r} do not fit an operand of shape {s}")
        new_terms.append(t)
    if out is None:
        counts: dict[str, int] = {}
        for t in new_terms:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    sizes: dict[str, int] = {}
    for t, s in zip(new_terms, shapes):
        for c, d in zip(t, s):
            if c in sizes and sizes[c] != d and 1 not in (sizes[c], d):
                raise ShapeError(
                    f"einsum: subscript {c!r} has sizes {sizes[c]} and {d} in {spec!r} for shapes {shapes}"
                )
            sizes[c] = d if c not in sizes or sizes[c] == 1 else sizes[c]
    if any(c not in sizes for c in out):
        raise ShapeError(f"einsum: output subscript in {spec!r} does not appear in the inputs")
    return ",".join(new_terms) + "->" + out


def _einsum_vjp(g, ans, *ops, spec, argnum):
    ins, out = spec.split("->")
    terms = ins.split(",")
    mine = terms[argnum]
    if len(set(mine)) != len(mine):
        raise NotImplementedError(
            f"einsum: no derivative for an operand with a repeated subscript ({mine!r})"
        )
    others = [t for k, t in enumerate(terms) if k != argnum]
    present = set(out) | set("".join(others))
    kept = "".join(c for c in mine if c in present)
    args = [g] + [o for k, o in enumerate(ops) if k != argnum]
    c = einsum(",".join([out] + others) + "->" + kept, *args)
    if kept != mine:  # letters summed away inside this operand alone: broadcast back along them
        shape = tuple(ops[argnum].shape[k] if ch in present else 1 for k, ch in enumerate(mine))
        c = broadcast_to(reshape(c, shape), ops[argnum].shape)
    return c


def _einsum_jvp(t, ans, *ops, spec, argnum):
    args = list(ops)
    args[argnum] = t
    return bind(einsum_p, *args, spec=spec)


def _batch_einsum(vals, batched, size, spec):
    ins, out = spec.split("->")
    b = next(c for c in _LETTERS if c not in spec)
    terms = [b + t if bi else t for t, bi in zip(ins.split(","), batched)]
    return bind(einsum_p, *vals, spec=",".join(terms) + "->" + b + out)


einsum_p: General = general(
    "einsum",
    lambda xp, *ops, spec: xp.einsum(spec, *ops, optimize=len(ops) > 2),
    _einsum_jvp,
    _einsum_vjp,
    _batch_einsum,
    reads="ops",
    variadic=True,
)


def einsum(spec: str, *operands: Any) -> Tensor:
    """Einstein summation, as ``numpy.einsum`` (implicit and explicit output, ellipsis)."""
    ops = [_t(o) for o in operands]
    return bind(einsum_p, *ops, spec=_parse_einsum(spec, [o.shape for o in ops]))


def dot(a: ArrayLike, b: ArrayLike) -> Tensor:
    """``numpy.dot``: matmul for 1-D and 2-D operands; over the last and second-to-last axes beyond."""
    a, b = _t(a), _t(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if a.ndim <= 2 and b.ndim <= 2:
        return matmul(a, b)
    la = _LETTERS[: a.ndim]
    lb = _LETTERS[a.ndim : a.ndim + b.ndim]
    lb = lb[:-2] + la[-1] + lb[-1] if b.ndim > 1 else la[-1]
    out = la[:-1] + "".join(c for c in lb if c != la[-1])
    return einsum(f"{la},{lb}->{out}", a, b)


def outer(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Outer product of the flattened inputs."""
    a, b = reshape(_t(a), (-1,)), reshape(_t(b), (-1,))
    return multiply(expand_dims(a, 1), expand_dims(b, 0))


# ----------------------------------------------------------------------------- linalg
def _solve_rhs(a, vec: bool, rhs):
    """``solve(a, rhs)`` where ``rhs`` is shaped like the solution: one vector per matrix of a stack
    ``a`` when the original ``b`` was 1-D (solve itself would read a 2-D ``rhs`` as a matrix)."""
    if vec and rhs.ndim > 1:
        return squeeze(solve(a, _col(rhs)), -1)
    return solve(a, rhs)


def _solve_jvp_a(t, ans, a, b):
    if b.ndim == 1:
        return -_solve_rhs(a, True, squeeze(matmul(t, _col(ans)), -1))
    return -solve(a, matmul(t, ans))


def _solve_vjp_a(g, ans, a, b):
    bbar = _solve_rhs(_mT(a), b.ndim == 1, g)
    if ans.ndim == 1 or (b.ndim == 1):
        return -multiply(_col(bbar), expand_dims(ans, -2))
    return -matmul(bbar, _mT(ans))


def _lapack(op: str, fn, xp, x, *rest):
    """``fn(x, *rest)``; LAPACK's complaint about ``x`` (singular, not positive definite) becomes a
    :class:`~minidiff.errors.LinAlgError` naming the operation and the shape."""
    try:
        return fn(x, *rest)
    except numpy_module.linalg.LinAlgError as exc:  # CuPy raises NumPy's class too
        raise LinAlgError(f"{op}: cannot take the matrix of shape {tuple(x.shape)}: {exc}") from exc


solve_p: General = general(
    "solve",
    lambda xp, a, b: _lapack("linalg.solve", xp.linalg.solve, xp, a, b),
    (_solve_jvp_a, lambda t, ans, a, b: solve(a, t)),
    (_solve_vjp_a, lambda g, ans, a, b: _solve_rhs(_mT(a), b.ndim == 1, g)),
    None,
    reads=("a ans", "a"),
    n_inputs=2,
)


def _batch_solve(vals, batched, size):
    (a, b), (ba, bb) = vals, batched
    la, lb = a.ndim - ba, b.ndim - bb
    col = lb == 1
    if col:
        b = expand_dims(b, b.ndim)
        lb = 2
    target = max(la, lb)
    a = align(a, la, target) if ba else a
    b = align(b, lb, target) if bb else b
    out = bind(solve_p, a, b)
    return squeeze(out, -1) if col else out


solve_p.batch = _batch_solve


def _tril(x, k=0):

    n, m = x.shape[-2], x.shape[-1]
    mask = expand_dims(arange(n, device=x.device), 1) >= expand_dims(arange(m, device=x.device), 0) - k
    return where(mask, x, 0.0)


def _phi(x):
    """Lower triangle with the diagonal halved (the Cholesky derivative's projection)."""
    return _tril(x) - 0.5 * _diag_part(x)


def _diag_part(x):

    return where(eye(x.shape[-1], dtype=bool, device=x.device), x, 0.0)


def _cholesky_jvp(t, ans, x):
    sym = _tril(t) + _mT(_tril(t, -1))  # NumPy reads only the lower triangle of x
    m = solve(ans, _mT(solve(ans, _mT(sym))))  # L^-1 sym L^-T
    return matmul(ans, _phi(m))


def _cholesky_vjp(g, ans, x):
    p = _phi(matmul(_mT(ans), g))
    y = solve(_mT(ans), p)  # L^-T P
    c = _mT(solve(_mT(ans), _mT(y)))  # L^-T P L^-1
    return _tril(c + _mT(c), -1) + _diag_part(c)


def _inverse_for(op: str, x):
    """``inv(x)`` inside the derivative of ``op``; a singular ``x`` raises an error naming ``op``."""
    try:
        return inv(x)
    except LinAlgError as exc:
        raise LinAlgError(
            f"{op}: the derivative at a singular matrix ({describe(x)}) needs its inverse ({exc})"
        ) from exc


inv_p: General = general(
    "inv",
    lambda xp, x: _lapack("linalg.inv", xp.linalg.inv, xp, x),
    lambda t, ans, x: -matmul(ans, matmul(t, ans)),
    lambda g, ans, x: -matmul(_mT(ans), matmul(g, _mT(ans))),
    lambda vals, b, n: bind(inv_p, vals[0]),
    reads="ans",
)
det_p: General = general(
    "det",
    lambda xp, x: xp.linalg.det(x),
    lambda t, ans, x: ans * sum(_mT(_inverse_for("linalg.det", x)) * t, axis=(-2, -1)),
    lambda g, ans, x: expand_dims(g * ans, (-2, -1)) * _mT(_inverse_for("linalg.det", x)),
    lambda vals, b, n: bind(det_p, vals[0]),
    reads="ans x",
)
cholesky_p: General = general(
    "cholesky",
    lambda xp, x: _lapack("linalg.cholesky", xp.linalg.cholesky, xp, x),
    _cholesky_jvp,
    _cholesky_vjp,
    lambda vals, b, n: bind(cholesky_p, vals[0]),
    reads="ans",
)


def _square(op: str, x: ArrayLike) -> Tensor:
    x = _t(x)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"{op}: expected a (stack of) square matrices, got shape {x.shape}")
    return x


def solve(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Solve ``a @ x = b`` (``b`` of shape ``(M,)`` or ``(..., M, K)``, as NumPy 2)."""
    a, b = _square("linalg.solve", a), _t(b)
    m = a.shape[-1]
    rows = b.shape[0] if b.ndim == 1 else (b.shape[-2] if b.ndim >= 2 else None)
    if rows != m:
        raise ShapeError(f"linalg.solve: a of shape {a.shape} does not fit b of shape {b.shape}")
    return bind(solve_p, a, b)


def inv(x: ArrayLike) -> Tensor:
    """Matrix inverse (of each matrix in a stack)."""
    return bind(inv_p, _square("linalg.inv", x))


def det(x: ArrayLike) -> Tensor:
    """Determinant (of each matrix in a stack)."""
    return bind(det_p, _square("linalg.det", x))


def cholesky(x: ArrayLike) -> Tensor:
    """Lower Cholesky factor L with x = L Lᵀ; reads the lower triangle of x, as NumPy."""
    return bind(cholesky_p, _square("linalg.cholesky", x))
