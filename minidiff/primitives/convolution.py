"""2-D convolution as three primitives that are each other's derivatives: conv2d, conv2d_transpose,
conv2d_weight_grad.

``conv2d(x, w)`` is the cross-correlation of NCHW ``x`` with OIHW ``w`` (stride and zero padding as
parameters).  It is bilinear, and so are the two maps its VJP needs, the partial derivatives of the
trilinear form ``T(x, w, g) = ⟨g, conv2d(x, w)⟩``:

* ``conv2d_transpose(g, w) = ∂T/∂x`` — the input cotangent (a transposed convolution, col2im);
* ``conv2d_weight_grad(x, g) = ∂T/∂w`` — the weight cotangent (a correlation of ``x`` with ``g``).

Each of the three is bilinear, and the VJP of each is written with the other two (their transposes are
again partial derivatives of ``T``), so every order of every mode runs through the same array kernels:
one im2col copy (of a strided window view) into a reused buffer and one GEMM with the long
``N·Ho·Wo`` axis as the columns, ``(O, C·kh·kw) @ (C·kh·kw, N·Ho·Wo)``, the orientation measured
fastest with OpenBLAS on the 2-core CPU (timings: ``benchmarks/conv.py``).  The im2col columns are ordered
``(c, i, j)`` by ``(n, ho, wo)``; padding goes into a reused zero-bordered buffer; scratch buffers are
kept per thread and reused, so a step does not page-fault through hundreds of fresh megabytes (the
price: the largest im2col buffer seen stays allocated, about 100 MB for the paper's CNN at batch 64).
Columns of at most :data:`SMALL_K` rows (a 1-channel first layer) take one GEMM per image instead.
A stride-1 input cotangent is itself a convolution (of ``g`` with the flipped kernel); other strides
add the columns back (col2im).

>>> import minidiff as md
>>> x = md.ones((1, 1, 3, 3)); w = md.ones((1, 1, 2, 2))
>>> conv2d(x, w, stride=(1, 1), padding=(0, 0)).tolist()
[[[[4.0, 4.0], [4.0, 4.0]]]]
"""

from __future__ import annotations

import math
import threading

from .batching_rules import batch_by_loop
from .registry import General, bind, general
from .shape import moveaxis, reshape

__all__ = ["conv2d", "conv2d_transpose", "conv2d_weight_grad", "output_size"]


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2·padding − kernel) // stride + 1``.

    >>> output_size(28, 3, 1, 1), output_size(28, 3, 2, 0)
    (28, 13)
    """
    return (size + 2 * padding - kernel) // stride + 1


# ----------------------------------------------------------------------------- scratch buffers
#: Buffers larger than this many bytes are allocated per call instead of being kept.
KEEP_BYTES = 512 * 2**20
_scratch = threading.local()


def _buffer(xp, name: str, shape: tuple, dtype):
    """A scratch array of ``shape`` reused across calls (the kernels never return one): a fresh
    array of this size costs a page fault per 4 KiB on first touch, more than the copy into it."""
    size = math.prod(shape)
    dtype = xp.dtype(dtype)
    if size * dtype.itemsize > KEEP_BYTES:
        return xp.empty(shape, dtype)
    cache = _scratch.__dict__.setdefault("buffers", {})
    key = (name, xp.__name__, dtype.str)
    buf = cache.get(key)
    if buf is None or buf.size < size:
        buf = cache[key] = xp.empty(size, dtype)
    return buf[:size].reshape(shape)


# ----------------------------------------------------------------------------- array kernels
def _padded(xp, x, padding):
    """``x`` inside a reused buffer with a zero border of ``padding`` (``x`` itself without padding)."""
    ph, pw = padding
    if not (ph or pw):
        return x
    n, c, h, w = x.shape
    buf = _buffer(xp, "padded", (n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    buf[:, :, :ph] = 0
    buf[:, :, ph + h :] = 0
    buf[:, :, ph : ph + h, :pw] = 0
    buf[:, :, ph : ph + h, pw + w :] = 0
    buf[:, :, ph : ph + h, pw : pw + w] = x
    return buf


def _im2col(xp, x, kh, kw, stride, padding, out):
    """The ``(C·kh·kw, N·Ho·Wo)`` columns of NCHW ``x``, rows ordered ``(c, i, j)``, in a reused
    buffer: one copy of a strided window view (measured 3x faster than a copy per kernel offset)."""
    x = _padded(xp, x, padding)
    n, c = x.shape[:2]
    sn, sc, sh, sw = x.strides
    shape = (c, kh, kw, n) + tuple(out)
    windows = xp.lib.stride_tricks.as_strided(x, shape, (sc, sh, sw, sn, sh * stride[0], sw * stride[1]))
    cols = _buffer(xp, "cols", shape, x.dtype)
    cols[...] = windows
    return cols.reshape(c * kh * kw, -1)


def _col2im(xp, cols, shape, kh, kw, stride, padding, out):
    """The adjoint of :func:`_im2col`: add the ``(C·kh·kw, N·Ho·Wo)`` columns back into a fresh NCHW array."""
    n, c, h, w = shape
    (ph, pw), (ho, wo), (sh, sw) = padding, out, stride
    acc = _buffer(xp, "col2im", (c, n, h + 2 * ph, w + 2 * pw), cols.dtype)
    acc[...] = 0
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    for i in range(kh):
        for j in range(kw):
            acc[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += cols[:, i, j]
    return acc[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3).copy()


def _channels_first(xp, y, name):
    """``(N, K, ...) -> (K, N·...)`` copied into a reused buffer."""
    n, k = y.shape[:2]
    buf = _buffer(xp, name, (k, n) + tuple(y.shape[2:]), y.dtype)
    buf[...] = y.transpose((1, 0) + tuple(range(2, y.ndim)))
    return buf.reshape(k, -1)


def _common(xp, a, b):
    dtype = xp.result_type(a.dtype, b.dtype)
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)


#: Up to this many rows of im2col columns (C·kh·kw: the 1-channel first layer has 9), one GEMM per
#: image instead of one for the batch.  With OpenBLAS on the 2-core CPU one (9, N·Ho·Wo) GEMM ran
#: 10–100x slower than N small ones (its threads wait on each other over a tiny inner dimension), while
#: from C = 8 on the one large GEMM was 5–30x faster than per-image ones (timings of both layouts on
#: one busy machine, 2026-12-03; the effect on whole layers: docs/benchmarks.md, Convolution).
SMALL_K = 16


def _per_image(cols, n):
    """``(K, N·P)`` columns as a stack ``(N, K, P)`` of per-image matrices (a view)."""
    return cols.reshape(cols.shape[0], n, -1).transpose(1, 0, 2)


def _conv_impl(xp, x, w, stride, padding):
    x, w = _common(xp, x, w)
    n, o, (kh, kw) = x.shape[0], w.shape[0], w.shape[2:]
    out = tuple(output_size(s, k, st, p) for s, k, st, p in zip(x.shape[2:], (kh, kw), stride, padding))
    cols = _im2col(xp, x, kh, kw, stride, padding, out)
    if cols.shape[0] <= SMALL_K:  # one small GEMM per image, straight into NCHW
        return xp.matmul(w.reshape(o, -1), _per_image(cols, n)).reshape((n, o) + out)
    y = _buffer(xp, "gemm", (o, cols.shape[1]), x.dtype)
    xp.matmul(w.reshape(o, -1), cols, out=y)
    return y.reshape((o, n) + out).transpose(1, 0, 2, 3).copy()  # a fresh array, never the buffer


def _transpose_impl(xp, g, w, image, stride, padding):
    g, w = _common(xp, g, w)
    n, o = g.shape[:2]
    c, kh, kw = w.shape[1:]
    if stride == (1, 1) and padding[0] < kh and padding[1] < kw:
        # a stride-1 transposed convolution is a convolution of g with the flipped, transposed kernel
        # and the complementary padding: im2col and GEMM again (measured faster than col2im's adds)
        flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return _conv_impl(xp, g, flipped, (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]))
    g2 = _channels_first(xp, g, "cotangent")
    cols = _buffer(xp, "cols", (c * kh * kw, g2.shape[1]), g.dtype)
    xp.matmul(w.reshape(o, -1).T, g2, out=cols)
    return _col2im(xp, cols, (n, c) + tuple(image), kh, kw, stride, padding, g.shape[2:])


def _weight_grad_impl(xp, x, g, kernel, stride, padding):
    x, g = _common(xp, x, g)
    o, c = g.shape[1], x.shape[1]
    cols = _im2col(xp, x, kernel[0], kernel[1], stride, padding, g.shape[2:])
    if cols.shape[0] <= SMALL_K:
        per_image = xp.matmul(g.reshape(g.shape[0], o, -1), _per_image(cols, g.shape[0]).transpose(0, 2, 1))
        return per_image.sum(axis=0).reshape((o, c) + tuple(kernel))
    g2 = _channels_first(xp, g, "cotangent")
    # (C·kh·kw, P) @ (P, O), then transposed: with OpenBLAS the other orientation, (O, P) @ (P, C·kh·kw),
    # measured up to 10x slower for the 64-channel layers (a long inner dimension and a short m)
    return (cols @ g2.T).T.reshape((o, c) + tuple(kernel)).copy()


# ----------------------------------------------------------------------------- the primitives
def conv2d(x, w, *, stride: tuple[int, int], padding: tuple[int, int]):
    """Cross-correlation of NCHW ``x`` with OIHW ``w`` (shapes unchecked: see ``nn.functional.conv2d``)."""
    return bind(conv2d_p, x, w, stride=stride, padding=padding)


def conv2d_transpose(g, w, *, image: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
    """``∂⟨g, conv2d(x, w)⟩/∂x`` for an ``x`` of spatial size ``image``: NCHW from ``g`` (N, O, Ho, Wo)."""
    return bind(conv2d_transpose_p, g, w, image=image, stride=stride, padding=padding)


def conv2d_weight_grad(x, g, *, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
    """``∂⟨g, conv2d(x, w)⟩/∂w`` for a ``w`` of spatial ``kernel``: OIHW of shape (O, C, kh, kw)."""
    return bind(conv2d_weight_grad_p, x, g, kernel=kernel, stride=stride, padding=padding)


def _conv(x, w, stride, padding):
    return conv2d(x, w, stride=stride, padding=padding)


def _conv_t(g, w, x_like, stride, padding):
    return conv2d_transpose(g, w, image=tuple(x_like.shape[2:]), stride=stride, padding=padding)


def _conv_w(x, g, w_like, stride, padding):
    return conv2d_weight_grad(x, g, kernel=tuple(w_like.shape[2:]), stride=stride, padding=padding)


# ----------------------------------------------------------------------------- batching: fold the vmapped axis
def _fold(v, axis: int):
    """``(B, d0, d1, …)`` → the batch axis merged into axis ``axis`` of one example (``B·d_axis``)."""
    v = moveaxis(v, 0, axis)
    shape = tuple(v.shape)
    return reshape(v, shape[:axis] + (shape[axis] * shape[axis + 1],) + shape[axis + 2 :])


def _unfold(y, axis: int, size: int, rest: int):
    """The inverse of :func:`_fold`: split axis ``axis`` into ``(size, rest)`` and move ``size`` first."""
    shape = tuple(y.shape)
    y = reshape(y, shape[:axis] + (size, rest) + shape[axis + 1 :])
    return moveaxis(y, axis, 0)


def _folding_batch(prim, fold_axes):
    """A batch rule: the one batched input's vmapped axis merges into an axis of it (``fold_axes[i]``:
    input axis, output axis), e.g. into N for the image; both batched falls back to a loop."""
    loop = batch_by_loop(prim)

    def rule(vals, batched, size, **params):
        if all(batched):
            return loop(vals, batched, size, **params)
        i = batched.index(True)
        in_axis, out_axis = fold_axes[i]
        vals = list(vals)
        rest = vals[i].shape[in_axis + 1]  # the folded axis of one example: that output axis's length
        vals[i] = _fold(vals[i], in_axis)
        return _unfold(bind(prim, *vals, **params), out_axis, size, rest)

    return rule


conv2d_p: General = general(
    "conv2d",
    _conv_impl,
    (
        lambda t, ans, x, w, stride, padding: _conv(t, w, stride, padding),
        lambda t, ans, x, w, stride, padding: _conv(x, t, stride, padding),
    ),
    (
        lambda g, ans, x, w, stride, padding: _conv_t(g, w, x, stride, padding),
        lambda g, ans, x, w, stride, padding: _conv_w(x, g, w, stride, padding),
    ),
    None,
    reads=("w", "x"),
    n_inputs=2,
)
# x batched: into N (image axis 0 → output axis 0); w batched: into O (w axis 0 → output axis 1)
conv2d_p.batch = _folding_batch(conv2d_p, ((0, 0), (0, 1)))

conv2d_transpose_p: General = general(
    "conv2d_transpose",
    _transpose_impl,
    (
        lambda t, ans, g, w, image, stride, padding: conv2d_transpose(
            t, w, image=image, stride=stride, padding=padding
        ),
        lambda t, ans, g, w, image, stride, padding: conv2d_transpose(
            g, t, image=image, stride=stride, padding=padding
        ),
    ),
    (
        lambda c, ans, g, w, image, stride, padding: _conv(c, w, stride, padding),
        lambda c, ans, g, w, image, stride, padding: _conv_w(c, g, w, stride, padding),
    ),
    None,
    reads=("w", "g"),
    n_inputs=2,
)
# g batched: into N (→ output axis 0); w batched: into its C (w axis 1 → output channel axis 1)
conv2d_transpose_p.batch = _folding_batch(conv2d_transpose_p, ((0, 0), (1, 1)))

conv2d_weight_grad_p: General = general(
    "conv2d_weight_grad",
    _weight_grad_impl,
    (
        lambda t, ans, x, g, kernel, stride, padding: conv2d_weight_grad(
            t, g, kernel=kernel, stride=stride, padding=padding
        ),
        lambda t, ans, x, g, kernel, stride, padding: conv2d_weight_grad(
            x, t, kernel=kernel, stride=stride, padding=padding
        ),
    ),
    (
        lambda c, ans, x, g, kernel, stride, padding: _conv_t(g, c, x, stride, padding),
        lambda c, ans, x, g, kernel, stride, padding: _conv(x, c, stride, padding),
    ),
    None,
    reads=("g", "x"),
    n_inputs=2,
)
# x batched: into its C (→ output axis 1); g batched: into its O (g axis 1 → output axis 0)
conv2d_weight_grad_p.batch = _folding_batch(conv2d_weight_grad_p, ((1, 1), (1, 0)))
