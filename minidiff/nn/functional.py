"""Stateless layers and losses, composed of primitives (so both modes differentiate them).

>>> import minidiff as md
>>> F = md.nn.functional
>>> x = md.ones((2, 3)); w = md.ones((4, 3)); b = md.zeros(4)
>>> F.linear(x, w, b).shape
(2, 4)
"""

from __future__ import annotations

from typing import Any

from ..errors import ShapeError
from ..primitives import convolution as _conv
from ..primitives import ops, pooling
from ..primitives.creation import arange, asarray
from ..tensor.core import Tensor

__all__ = [
    "linear",
    "conv2d",
    "unfold",
    "max_pool2d",
    "avg_pool2d",
    "cross_entropy",
    "mse_loss",
    "relu",
    "softmax",
    "log_softmax",
]

relu = ops.relu
softmax = ops.softmax
log_softmax = ops.log_softmax


def linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """``x @ w.T + b`` with ``w`` of shape (out, in), as PyTorch."""
    y = ops.matmul(x, ops.transpose(w))
    return y + b if b is not None else y


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if not isinstance(v, (tuple, list)) else (int(v[0]), int(v[1]))


def _patches(x: Tensor, kh: int, kw: int, stride: Any, padding: Any, op: str) -> tuple[Tensor, int, int]:
    """Unfold NCHW input into (N, C, kh·kw, Ho, Wo) windows, by strided slicing (differentiable)."""
    if x.ndim != 4:
        raise ShapeError(f"{op}: expected NCHW input of 4 dimensions, got shape {x.shape}")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if ph or pw:
        x = ops.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ShapeError(f"{op}: kernel {(kh, kw)} larger than the padded input {(h, w)}")
    windows = [
        x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return ops.stack(windows, axis=2), ho, wo


def unfold(
    x: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """The sliding windows of NCHW ``x`` as ``(N, C, kh·kw, Ho, Wo)``: what ``conv2d`` multiplies by
    its weights (im2col), and what K-FAC's convolution factor averages.  Differentiable.

    >>> import minidiff as md
    >>> x = md.arange(16.0).reshape(1, 1, 4, 4)
    >>> cols = md.nn.functional.unfold(x, 2, stride=2)
    >>> cols.shape, cols[0, 0, :, 0, 0].tolist()       # the top-left 2×2 window, row by row
    ((1, 1, 4, 2, 2), [0.0, 1.0, 4.0, 5.0])
    """
    x = asarray(x)
    kh, kw = _pair(kernel_size)
    return _patches(x, kh, kw, stride, padding, "unfold")[0]


def conv2d(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    stride: int | tuple[int, int] | None = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """2-D convolution (cross-correlation) of NCHW ``x`` with OIHW ``w``, plus ``b`` per output channel.

    One primitive (:mod:`minidiff.primitives.convolution`: im2col into a reused buffer and one GEMM),
    whose JVP and VJP rules are convolutions of the same kind, so every mode and order takes that path.

    >>> import minidiff as md
    >>> x = md.ones((1, 1, 4, 4)); w = md.ones((2, 1, 3, 3))
    >>> md.nn.functional.conv2d(x, w, padding=1)[0, 0].tolist()
    [[4.0, 6.0, 6.0, 4.0], [6.0, 9.0, 9.0, 6.0], [6.0, 9.0, 9.0, 6.0], [4.0, 6.0, 6.0, 4.0]]
    """
    x, w = asarray(x), asarray(w)
    if x.ndim != 4:
        raise ShapeError(f"conv2d: expected NCHW input of 4 dimensions, got shape {x.shape}")
    if w.ndim != 4:
        raise ShapeError(f"conv2d: expected OIHW weights of 4 dimensions, got shape {w.shape}")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"conv2d: input has {x.shape[1]} channels but weights {w.shape} expect {w.shape[1]}")
    o, _, kh, kw = w.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ShapeError(
            f"conv2d: stride must be >= 1 and padding >= 0, got stride {(sh, sw)}, padding {(ph, pw)}"
        )
    h, wd = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    if h < kh or wd < kw:
        raise ShapeError(f"conv2d: kernel {(kh, kw)} larger than the padded input {(h, wd)}")
    y = _conv.conv2d(x, w, stride=(sh, sw), padding=(ph, pw))
    if b is not None:
        y = y + ops.reshape(b, (1, o, 1, 1))
    return y


def _pool_geometry(
    x: Tensor, kernel_size: Any, stride: Any, op: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(kernel, stride)`` of a pooling layer on NCHW ``x``, checked (stride defaults to the kernel)."""
    kernel = _pair(kernel_size)
    steps = _pair(stride if stride is not None else kernel)
    if x.ndim != 4:
        raise ShapeError(f"{op}: expected NCHW input of 4 dimensions, got shape {x.shape}")
    if min(kernel + steps) < 1:
        raise ShapeError(f"{op}: kernel_size {kernel} and stride {steps} must be positive")
    if kernel[0] > x.shape[2] or kernel[1] > x.shape[3]:
        raise ShapeError(f"{op}: kernel {kernel} larger than the input {x.shape[2:]} (input shape {x.shape})")
    return kernel, steps


def max_pool2d(
    x: Tensor, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
) -> Tensor:
    """Max over ``kernel_size`` windows of NCHW ``x`` (stride defaults to the kernel size; rows and
    columns past the last whole window are dropped).  Ties share the derivative evenly among the tied
    elements, in both modes.  One primitive: the elementwise maximum of the window's strided sub-grids.

    >>> import minidiff as md
    >>> x = md.tensor([[[[1.0, 2.0, 0.0], [4.0, 4.0, 0.0], [0.0, 0.0, 0.0]]]])
    >>> md.nn.functional.max_pool2d(x, 2).tolist()
    [[[[4.0]]]]
    >>> md.grad(lambda x: md.nn.functional.max_pool2d(x, 2).sum())(x)[0, 0].tolist()  # a tie: ½ each
    [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    x = asarray(x)
    kernel, steps = _pool_geometry(x, kernel_size, stride, "max_pool2d")
    return pooling.max_pool(x, kernel, steps)


def avg_pool2d(
    x: Tensor, kernel_size: int | tuple[int, int] = 2, stride: int | tuple[int, int] | None = None
) -> Tensor:
    """Mean over ``kernel_size`` windows of NCHW ``x`` (stride defaults to the kernel size; rows and
    columns past the last whole window are dropped): the sum of the window's strided sub-grids ÷ kh·kw.

    >>> import minidiff as md
    >>> x = md.arange(16.0).reshape(1, 1, 4, 4)
    >>> md.nn.functional.avg_pool2d(x, 2).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    x = asarray(x)
    kernel, steps = _pool_geometry(x, kernel_size, stride, "avg_pool2d")
    return pooling.window_sum(x, kernel, steps) * (1.0 / (kernel[0] * kernel[1]))


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean softmax cross-entropy of ``logits`` (N, K) against integer class ``labels`` (N,)."""
    logits, labels = asarray(logits), asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ShapeError(
            f"cross_entropy: expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise ShapeError(f"cross_entropy: labels must be integers, got {labels.dtype}")

    picked = logits[arange(logits.shape[0], device=logits.device), labels]
    return ops.mean(ops.logsumexp(logits, axis=1) - picked)


def mse_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    d = asarray(prediction) - target
    return ops.mean(d * d)
