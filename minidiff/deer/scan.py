"""Parallel scans over affine maps: the linear solver inside every DEER Newton step.

A linear time-varying recurrence ``y_i = A_i y_{i-1} + b_i`` is a chain of affine maps
``y ↦ A_i y + b_i``.  Composing "first i, then j" gives ``(A_j A_i, A_j b_i + b_j)``, which is
associative, so every prefix (hence every ``y_i``) can be computed by a *scan*.  Three ways to
run that scan are offered, all written once on the backend's array namespace (:func:`minidiff.array_kernel`):

``"sequential"``
    a Python loop over time, each step one batched matrix-vector product: T steps, O(T·n²) work;
``"log"``
    the Hillis–Steele doubling scan: ⌈log₂T⌉ steps, each a batched product over all T maps,
    O(T·n³·log T) work and T·n² new values per level (memory-bound on a CPU);
``"blocked"``
    cut time into K blocks of L steps; (1) reduce every block to its total map, the K blocks
    side by side; (2) scan the K block totals (the same way, recursively); (3) run every block
    from its start state, again side by side.  O(T·n³) work in about 2L·log_L(T) vectorized
    steps and no T·n² temporaries beyond one copy of the input.  With L = √T and a sequential
    step (2) this is the classic three-phase scan in O(√T) steps; the recursive form with L = 32
    measured about 2x faster on the 2-core CPU (fewer, fuller steps).

``"auto"`` picks by measurement (2-core CPU, float32, T = 1k…100k, batch 1 and 16): the blocked
scan, 5-20x faster than the loop and 3-20x faster than the log-depth scan, except for dense maps
with batch·n³ > 32768 (e.g. batch 16 and n = 16), where the loop's n² per step beats the blocked
scan's n³; on a GPU the log-depth scan, whose extra work runs in parallel while its few steps are
what costs (not measured here: no GPU).  A diagonal ``A`` (given as its diagonal, shape ``(..., T, n)``) makes every product
elementwise.

These functions are also minidiff primitives: their JVP and VJP rules are written with
:func:`affine_scan` itself (a JVP is the same recurrence driven by ``Ȧ_i y_{i-1} + ḃ_i``; a VJP is
the transposed recurrence run backwards in time), so they can be differentiated to any order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..backend import small_products
from ..errors import DTypeError, ShapeError
from ..primitives.creation import zeros
from ..primitives.custom import primitive
from ..primitives.matrix import matmul
from ..primitives.shape import broadcast_to, concatenate, moveaxis, reshape
from ..tensor import pytree
from ..tensor.core import Tensor
from ..tensor.kernel import array_kernel
from ..tensor.pytree import PyTree

__all__ = ["affine_scan", "associative_scan", "SCAN_METHODS"]

#: The scan algorithms :func:`affine_scan` accepts (besides ``"auto"``).
SCAN_METHODS = ("sequential", "log", "blocked")


# ----------------------------------------------------------------------------- array kernels
def _mv(ns, A, y, diagonal):
    """Batched ``A @ y`` (or ``A * y`` for a diagonal ``A``)."""
    if diagonal:
        return A * y
    if A.shape[-1] <= 4:  # measured: einsum 1.5-4x faster than matmul on stacks of tiny matrices
        return ns.einsum("...ij,...j->...i", A, y)
    return ns.matmul(A, y[..., None])[..., 0]


def _mm(ns, A, B, diagonal):
    """Batched ``A @ B`` (or ``A * B`` for diagonal matrices)."""
    if diagonal:
        return A * B
    return ns.matmul(A, B)


def _sequential(ns, A, b, diagonal):
    """``y_i = A_i y_{i-1} + b_i`` with ``y_{-1} = 0``, one time step at a time."""
    T = b.shape[-2]
    y = ns.empty_like(b)
    y[..., 0, :] = b[..., 0, :]
    for i in range(1, T):
        y[..., i, :] = _mv(ns, A[..., i, :, :] if not diagonal else A[..., i, :], y[..., i - 1, :], diagonal)
        y[..., i, :] += b[..., i, :]
    return y


def _log_depth(ns, A, b, diagonal):
    """Hillis–Steele doubling: after the level with stride d, (A_i, b_i) is the map of steps
    i−2d+1..i; ⌈log₂T⌉ levels, each one batched product over every time step."""
    T = b.shape[-2]
    b = b.copy()
    A = A.copy()
    d = 1
    while d < T:
        if diagonal:
            upd = A[..., d:, :] * b[..., :-d, :]
        else:
            upd = ns.matmul(A[..., d:, :, :], b[..., :-d, :, None])[..., 0]
        if 2 * d < T:  # the maps are only needed by a further level
            if diagonal:
                A[..., d:, :] = A[..., d:, :] * A[..., :-d, :]
            else:
                A[..., d:, :, :] = ns.matmul(A[..., d:, :, :], A[..., :-d, :, :])
        b[..., d:, :] += upd
        d *= 2
    return b


#: block length of the blocked scan (measured: 16–64 are equally good on the 2-core CPU, 2x faster
#: than blocks of √T with a sequential scan of the block totals)
BLOCK = 32


def _blocked(ns, A, b, diagonal, block=BLOCK):
    """Reduce within blocks, scan the block totals, propagate back into the blocks.

    The block totals are scanned by this same function (recursively), so with blocks of L steps
    the work stays O(T·n³) in about 2L·log_L(T) vectorized steps.
    """
    T, n = b.shape[-2], b.shape[-1]
    L = block
    if T <= 2 * L:
        return _sequential(ns, A, b, diagonal)
    K = -(-T // L)
    pad = K * L - T
    batch = b.shape[:-2]
    nb = len(batch)
    mat = () if diagonal else (n,)
    if pad:  # identity maps with zero offsets at the end change nothing before them
        eye = ns.ones((n,), A.dtype) if diagonal else ns.eye(n, dtype=A.dtype)
        A = ns.concatenate([A, ns.broadcast_to(eye, batch + (pad, n) + mat)], axis=nb)
        b = ns.concatenate([b, ns.zeros(batch + (pad, n), b.dtype)], axis=nb)
    # the within-block time axis first and contiguous, (L, *batch, K, n[, n]): every step below
    # reads one contiguous slab (strided slices made the batched products up to 2x slower)
    A = ns.ascontiguousarray(ns.moveaxis(A.reshape(batch + (K, L, n) + mat), nb + 1, 0))
    b = ns.ascontiguousarray(ns.moveaxis(b.reshape(batch + (K, L, n)), nb + 1, 0))
    # (1) the total map of every block, the K blocks side by side
    P, c = A[0], b[0]
    for j in range(1, L):
        c = _mv(ns, A[j], c, diagonal) + b[j]
        P = _mm(ns, A[j], P, diagonal)
    # (2) the state leaving every block: a scan of the K block totals (recursively blocked)
    ends = _blocked(ns, P, c, diagonal, block)
    starts = ns.concatenate([ns.zeros(batch + (1, n), b.dtype), ends[..., :-1, :]], axis=-2)
    # (3) run every block from its start state, the K blocks side by side
    y = ns.empty((L,) + batch + (K, n), b.dtype)
    state = starts
    for j in range(L):
        state = _mv(ns, A[j], state, diagonal) + b[j]
        y[j] = state
    y = ns.moveaxis(y, 0, nb + 1).reshape(batch + (K * L, n))
    return y[..., :T, :] if pad else y


def _choose(method: str, device, shape, diagonal: bool) -> str:
    """The scan measured fastest for this size (2-core CPU, NumPy, float32; see docs/deer.md)."""
    if method != "auto":
        return method
    *batch, T, n = shape
    B = math.prod(batch)
    if device.name.startswith("cuda"):  # pragma: no cover - needs a GPU
        return "log"  # few steps matter most on a GPU; the extra work runs in parallel
    if diagonal:
        return "blocked"  # 3-10x faster than the log-depth scan from T = 10k on
    # the blocked scan does n³ work per step where the loop does n²: past this the loop wins
    return "blocked" if B * n**3 <= 32768 else "sequential"


@array_kernel
def _scan_arrays(ns, A, b, y0, *, diagonal, method):
    """The whole scan on arrays: broadcast the batch axes of the three operands to a common shape (a
    shared ``A`` is common), fold ``y0`` into the first offset, then run ``method``."""
    k = 2 if diagonal else 3
    bshape = _broadcast_shapes(A.shape[:-k], b.shape[:-2], y0.shape[:-1])
    A = ns.broadcast_to(A, bshape + A.shape[-k:])
    y0 = ns.broadcast_to(y0, bshape + y0.shape[-1:])
    b = ns.broadcast_to(b, bshape + b.shape[-2:]).copy()
    # stacks of tiny products: one BLAS thread (backend.small_product_threads states the rule)
    with small_products(b.shape[-1]):
        b[..., 0, :] += _mv(ns, A[..., 0, :] if diagonal else A[..., 0, :, :], y0, diagonal)
        if method == "sequential":
            return _sequential(ns, A, b, diagonal)
        if method == "log":
            return _log_depth(ns, A, b, diagonal)
        return _blocked(ns, A, b, diagonal)


# ----------------------------------------------------------------------------- the primitive
@primitive(name="affine_scan")
def _affine_scan_p(A, b, y0, diagonal=False, method="auto"):
    A, b, y0 = A.detach(), b.detach(), y0.detach()
    k = 2 if diagonal else 3
    bshape = _broadcast_shapes(A.shape[:-k], b.shape[:-2], y0.shape[:-1])
    method = _choose(method, b.device, bshape + b.shape[-2:], diagonal)
    return _scan_arrays(A, b, y0, diagonal=diagonal, method=method)


def _broadcast_shapes(*shapes) -> tuple:
    nd = max(len(s) for s in shapes)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    return tuple(max(dims) if min(dims) != 0 else 0 for dims in zip(*padded))


def _batch_rule(vals, batched, size, diagonal=False, method="auto"):
    """Under ``vmap`` (e.g. DEER's JVP in vector mode) the mapped axis is one more batch axis of the
    scan: align the three operands' batch axes and run one scan, instead of a loop per example."""

    cores = (2 if diagonal else 3, 2, 1)  # trailing axes of A, b, y0 that are not batch axes
    logical = [
        v.shape[1 : v.ndim - c] if is_b else v.shape[: v.ndim - c] for v, is_b, c in zip(vals, batched, cores)
    ]
    nb = max(len(s) for s in logical)
    batch = tuple(max(s[len(s) - nb + i] if len(s) - nb + i >= 0 else 1 for s in logical) for i in range(nb))
    out = []
    for v, is_b, c, s in zip(vals, batched, cores, logical):
        core = tuple(v.shape[v.ndim - c :])
        lead = (size,) if is_b else (1,)
        v = reshape(v, lead + (1,) * (nb - len(s)) + tuple(s) + core)
        out.append(broadcast_to(v, (size,) + batch + core))
    return _affine_scan_p(*out, diagonal=diagonal, method=method)


_affine_scan_p.defbatch(_batch_rule)


def _shift(y, y0):
    """``(y0, y_0, …, y_{T-2})``: the state each step starts from."""
    from ..primitives.shape import broadcast_to, concatenate, expand_dims

    first = broadcast_to(expand_dims(y0, -2), y.shape[:-2] + (1, y.shape[-1]))
    return concatenate([first, y[..., :-1, :]], axis=-2)


def _apply(A, v, diagonal):

    if diagonal:
        return A * v
    return matmul(A, v[..., None])[..., 0]


@_affine_scan_p.defjvp
def _affine_scan_jvp(primals, tangents, diagonal=False, method="auto"):
    (A, b, y0), (dA, db, dy0) = primals, tangents
    y = _affine_scan_p(A, b, y0, diagonal=diagonal, method=method)
    drive = _apply(dA, _shift(y, y0), diagonal) + db
    return _affine_scan_p(A, drive, dy0, diagonal=diagonal, method=method)


@_affine_scan_p.defvjp(reads="output A y0")  # not b: the cotangent of b is λ itself
def _affine_scan_vjp(cotangent, output, A, b, y0, diagonal=False, method="auto"):
    from ..primitives.shape import broadcast_to, sum_to, swapaxes

    lam = _transposed_scan(A, cotangent, diagonal, method)
    prev = _shift(output, y0)
    if diagonal:
        gA = lam * prev
        A0 = A[..., 0, :]
    else:
        gA = lam[..., :, None] * prev[..., None, :]
        A0 = A[..., 0, :, :]
    A0 = broadcast_to(A0, lam.shape[:-2] + A0.shape[-2 if not diagonal else -1 :])
    gy0 = _apply(A0 if diagonal else swapaxes(A0, -1, -2), lam[..., 0, :], diagonal)
    # the scan broadcast its inputs against each other: sum each cotangent back to its input's shape
    return (sum_to(gA, A.shape), sum_to(lam, b.shape), sum_to(gy0, y0.shape))


def _transposed_scan(A, cotangent, diagonal, method):
    """``λ_i = ȳ_i + A_{i+1}ᵀ λ_{i+1}`` (λ_{T-1} = ȳ_{T-1}): the adjoint recurrence, run as a
    forward scan over reversed time."""
    from ..primitives.shape import broadcast_to, concatenate, flip, swapaxes

    T = cotangent.shape[-2]
    At = A if diagonal else swapaxes(A, -1, -2)
    At = broadcast_to(At, cotangent.shape[:-2] + At.shape[-3 if not diagonal else -2 :])
    # reversed step j (j ≥ 1) uses A_{T-j}ᵀ; step 0 starts from zero, so its map is irrelevant
    t_axis = -2 if diagonal else -3
    Ar = flip(At, axis=t_axis)
    if T > 1:
        Ar = concatenate([_time_slice(Ar, -1, None, t_axis), _time_slice(Ar, None, -1, t_axis)], axis=t_axis)
    z = zeros(cotangent.shape[:-2] + cotangent.shape[-1:], dtype=cotangent.dtype, device=cotangent.device)
    mu = _affine_scan_p(Ar, flip(cotangent, axis=-2), z, diagonal=diagonal, method=method)
    return flip(mu, axis=-2)


def _time_slice(x, start, stop, axis):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


# ----------------------------------------------------------------------------- public functions
def affine_scan(
    A: Tensor, b: Tensor, y0: Tensor | None = None, *, diagonal: bool = False, method: str = "auto"
) -> Tensor:
    """Solve ``y_i = A_i y_{i-1} + b_i`` for ``i = 0..T-1`` with ``y_{-1} = y0`` by a parallel scan.

    Args:
        A: ``(*batch, T, n, n)`` transition matrices, or ``(*batch, T, n)`` diagonals when
            ``diagonal=True``; its batch axes may be missing or of size 1 (broadcast to ``b``'s).
        b: ``(*batch, T, n)`` offsets.
        y0: ``(*batch, n)`` initial state (broadcastable), zeros when ``None``.
        diagonal: ``A`` holds only the diagonals (every product is elementwise).
        method: ``"sequential"``, ``"log"`` (log-depth doubling), ``"blocked"`` (√T blocks) or
            ``"auto"`` (the fastest measured on the device, see the module docstring).

    Returns:
        ``(*batch, T, n)``, the states ``y_0 … y_{T-1}``.  Differentiable (JVP and VJP rules are
        scans themselves), to any order.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import affine_scan
        >>> A = md.full((4, 1), 2.0)          # y_i = 2 y_{i-1} + 1, diagonal form
        >>> b = md.ones((4, 1))
        >>> affine_scan(A, b, md.zeros(1), diagonal=True).numpy().ravel().tolist()
        [1.0, 3.0, 7.0, 15.0]
    """
    if method not in SCAN_METHODS + ("auto",):
        raise ValueError(
            f"affine_scan: unknown method {method!r}; expected one of {SCAN_METHODS + ('auto',)}"
        )
    for name, t in (("A", A), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"affine_scan: {name} must be a minidiff Tensor, got {type(t).__name__}")
    if b.ndim < 2:
        raise ShapeError(f"affine_scan: b must have shape (*batch, T, n), got {b.shape}")
    T, n = b.shape[-2], b.shape[-1]
    want = "(*batch, T, n)" if diagonal else "(*batch, T, n, n)"
    tail = (T, n) if diagonal else (T, n, n)
    if A.ndim < len(tail) or tuple(A.shape[-len(tail) :]) != tail:
        raise ShapeError(
            f"affine_scan: A must have shape {want} = {('...',) + tail} to match b of shape {b.shape}"
            f"{' (diagonal=True)' if diagonal else ''}, got {A.shape}"
        )
    _check_batch("A", A.shape[: -len(tail)], b.shape[:-2])
    if y0 is None:
        from ..primitives.creation import zeros

        y0 = zeros((n,), dtype=b.dtype, device=b.device)
    if not isinstance(y0, Tensor):
        raise TypeError(f"affine_scan: y0 must be a minidiff Tensor or None, got {type(y0).__name__}")
    if y0.ndim < 1 or y0.shape[-1] != n:
        raise ShapeError(
            f"affine_scan: y0 must have shape (*batch, {n}) to match b of shape {b.shape}, got {y0.shape}"
        )
    _check_batch("y0", y0.shape[:-1], b.shape[:-2])
    for name, t in (("A", A), ("y0", y0)):
        if t.dtype != b.dtype:
            raise DTypeError(f"affine_scan: {name} has dtype {t.dtype} but b has {b.dtype}; cast one of them")
    if b.dtype.kind != "f":
        raise DTypeError(f"affine_scan: expected floating-point arrays, got {b.dtype}")
    if T == 0:
        return b
    return _affine_scan_p(A, b, y0, diagonal=diagonal, method=method)


def _check_batch(name, shape, bshape):
    if len(shape) > len(bshape) or any(s not in (1, t) for s, t in zip(shape[::-1], bshape[::-1])):
        raise ShapeError(f"affine_scan: {name}'s batch axes {shape} do not broadcast to b's {bshape}")


def associative_scan(fn: Callable[..., Any], elems: PyTree, axis: int = 0) -> PyTree:
    """Inclusive scan of ``elems`` along ``axis`` with an associative ``fn(earlier, later)``.

    ``elems`` is a tensor or a pytree of tensors of equal length along ``axis``; ``fn`` combines
    two such pytrees slice-wise (it is called on many positions at once, so it must broadcast over
    the scanned axis).  Hillis–Steele doubling: ⌈log₂T⌉ calls of ``fn``, written with minidiff
    operations, hence differentiable.

    Example:
        >>> import minidiff as md
        >>> from minidiff.deer import associative_scan
        >>> associative_scan(lambda a, b: a + b, md.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [1.0, 3.0, 6.0, 10.0]
    """

    leaves, tdef = pytree.flatten(elems)
    if not leaves:
        raise ValueError("associative_scan: elems holds no tensors")
    for x in leaves:
        if not isinstance(x, Tensor):
            raise TypeError(f"associative_scan: elems leaves must be Tensors, got {type(x).__name__}")
        if not -x.ndim <= axis < x.ndim:
            raise ShapeError(f"associative_scan: axis {axis} out of range for a leaf of shape {x.shape}")
    lengths = {x.shape[axis] for x in leaves}
    if len(lengths) != 1:
        raise ShapeError(
            f"associative_scan: leaves have different lengths {sorted(lengths)} along axis {axis}: "
            f"{[x.shape for x in leaves]}"
        )
    (T,) = lengths
    cur = [moveaxis(x, axis, 0) for x in leaves]
    d = 1
    while d < T:
        early = pytree.unflatten(tdef, [x[:-d] for x in cur])
        late = pytree.unflatten(tdef, [x[d:] for x in cur])
        combined, cdef = pytree.flatten(fn(early, late))
        if cdef != tdef:
            raise ShapeError(f"associative_scan: fn returned structure {cdef}, expected {tdef}")
        cur = [concatenate([x[:d], c], axis=0) for x, c in zip(cur, combined)]
        d *= 2
    return pytree.unflatten(tdef, [moveaxis(x, 0, axis) for x in cur])
