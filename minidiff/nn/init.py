"""Seeded parameter initializers.

Tensors are immutable values, so unlike PyTorch's ``init.uniform_`` these functions *return* a new
tensor of the requested shape.  Every function draws from ``rng``: a
:class:`minidiff.primitives.random.Generator`, a ``numpy.random.Generator`` (wrapped, so draws advance it), an
int (a new CPU generator seeded with it), or ``None`` for the default generator of ``device`` (see
``md.random.seed`` and :func:`minidiff.primitives.random.as_generator`, which does the conversion).
When ``rng`` lives on another device than ``device`` the values are drawn where ``rng`` is and then
moved, so a CPU generator gives the same initial values on every device.

Fans follow PyTorch: for a dense weight of shape (out, in) ``fan_in = in`` and ``fan_out = out``; for a
convolution weight (out, in, kh, kw) both are multiplied by the receptive field ``kh·kw``; a 1-D shape
(n,) has ``fan_in = fan_out = n``.

>>> import minidiff as md
>>> w = md.nn.init.kaiming_uniform((256, 128), rng=md.random.Generator(0))
>>> w.shape, str(w.dtype)
((256, 128), 'float32')
>>> bound = (6 / 128) ** 0.5  # gain √2 for ReLU, times √(3 / fan_in)
>>> bool(md.max(md.abs(w)).item() <= bound)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import backend
from ..errors import DTypeError, check_number
from ..primitives import random as _random
from ..primitives.creation import zeros as _zeros
from ..primitives.random import RngLike
from ..tensor.core import DeviceLike, DTypeLike, ShapeLike, Tensor

__all__ = [
    "calculate_gain",
    "compute_fans",
    "uniform",
    "normal",
    "zeros",
    "kaiming_uniform",
    "kaiming_normal",
    "xavier_uniform",
    "xavier_normal",
    "lecun_normal",
]


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``: (out, in) dense or (out, in, *kernel) convolution.

    >>> compute_fans((10, 784)), compute_fans((64, 1, 3, 3)), compute_fans((5,))
    ((784, 10), (9, 576), (5, 5))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("compute_fans: a 0-d tensor has no fan-in or fan-out")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str = "linear", param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity`` (as ``torch.nn.init.calculate_gain``).

    ``"linear"``, ``"conv2d"``, ``"sigmoid"`` → 1; ``"tanh"`` → 5/3; ``"relu"`` → √2;
    ``"leaky_relu"`` → √(2 / (1 + slope²)) with ``param`` the negative slope (default 0.01);
    ``"selu"`` → 3/4.
    """
    if nonlinearity in ("linear", "identity", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(
        f"calculate_gain: unknown nonlinearity {nonlinearity!r}; choose linear, sigmoid, tanh, relu, "
        "leaky_relu or selu"
    )


def _shape(shape: ShapeLike) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


def _float_dtype(op: str, dtype: DTypeLike) -> Any:
    try:
        dt = backend.numpy_module.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"{op}: unknown dtype {dtype!r}") from exc
    if dt.kind != "f":
        raise TypeError(f"{op}: initial values must be floating point, got dtype {dt}")
    return dt


def _place(t: Tensor, device: DeviceLike) -> Tensor:
    if device is None:
        return t
    dev = backend.get_device(device)
    return t if t.device is dev else t.to(dev)


def uniform(
    shape: ShapeLike,
    low: float = 0.0,
    high: float = 1.0,
    *,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """Samples uniform on ``[low, high)``."""
    dt = _float_dtype("uniform", dtype)
    if not high >= low:
        raise ValueError(f"uniform: need low <= high, got low={low}, high={high}")
    gen = _random.as_generator(rng, device if rng is None else None, op="uniform")
    return _place(gen.uniform(_shape(shape), float(low), float(high), dtype=dt), device)


def normal(
    shape: ShapeLike,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """Gaussian samples with the given ``mean`` and standard deviation ``std``."""
    dt = _float_dtype("normal", dtype)
    check_number("normal", "std", std, low=0)
    gen = _random.as_generator(rng, device if rng is None else None, op="normal")
    return _place(gen.normal(_shape(shape), float(mean), float(std), dtype=dt), device)


def zeros(
    shape: ShapeLike, *, rng: RngLike = None, dtype: DTypeLike = "float32", device: DeviceLike = None
) -> Tensor:
    """Zeros (``rng`` is checked, and not drawn from, so every initializer has the same signature)."""
    _random.as_generator(rng, op="zeros")
    return _zeros(_shape(shape), dtype=_float_dtype("zeros", dtype), device=device)


def _fan(shape: Sequence[int], mode: str) -> int:
    fan_in, fan_out = compute_fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def kaiming_uniform(
    shape: ShapeLike,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """He initialization, uniform: ``U(−b, b)`` with ``b = gain·√(3 / fan)``.

    ``a`` is the negative slope used when ``nonlinearity="leaky_relu"`` (PyTorch's default layer
    initialization is ``a=√5, nonlinearity="leaky_relu"``, which gives ``b = 1/√fan_in``).
    """
    rng = _random.as_generator(rng, device if rng is None else None, op="kaiming_uniform")
    shape = _shape(shape)
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype, device=device)


def kaiming_normal(
    shape: ShapeLike,
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """He initialization, Gaussian: ``N(0, std²)`` with ``std = gain / √fan``."""
    rng = _random.as_generator(rng, device if rng is None else None, op="kaiming_normal")
    shape = _shape(shape)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return normal(shape, 0.0, std, rng=rng, dtype=dtype, device=device)


def xavier_uniform(
    shape: ShapeLike,
    *,
    gain: float = 1.0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """Glorot initialization, uniform: ``U(−b, b)`` with ``b = gain·√(6 / (fan_in + fan_out))``."""
    rng = _random.as_generator(rng, device if rng is None else None, op="xavier_uniform")
    shape = _shape(shape)
    fan_in, fan_out = compute_fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype, device=device)


def xavier_normal(
    shape: ShapeLike,
    *,
    gain: float = 1.0,
    rng: RngLike = None,
    dtype: DTypeLike = "float32",
    device: DeviceLike = None,
) -> Tensor:
    """Glorot initialization, Gaussian: ``std = gain·√(2 / (fan_in + fan_out))``."""
    rng = _random.as_generator(rng, device if rng is None else None, op="xavier_normal")
    shape = _shape(shape)
    fan_in, fan_out = compute_fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal(shape, 0.0, std, rng=rng, dtype=dtype, device=device)


def lecun_normal(
    shape: ShapeLike, *, rng: RngLike = None, dtype: DTypeLike = "float32", device: DeviceLike = None
) -> Tensor:
    """LeCun initialization: ``N(0, 1 / fan_in)`` (untruncated)."""
    rng = _random.as_generator(rng, device if rng is None else None, op="lecun_normal")
    shape = _shape(shape)
    fan_in, _ = compute_fans(shape)
    return normal(shape, 0.0, 1.0 / math.sqrt(fan_in), rng=rng, dtype=dtype, device=device)
